"""Curation: sources, fingerprints, duplicates, labels, quality filters, folds and the manifest."""
