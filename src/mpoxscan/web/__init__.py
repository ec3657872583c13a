"""`mpoxscan serve`: the phone page (screening on the device) and its server-side fallback."""
