"""mpoxscan: preliminary mpox screening from smartphone photos, after Campana et al. (2024)."""

__version__ = "0.1.0"
