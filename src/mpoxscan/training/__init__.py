"""Training: augmentation views, cached features, heads, calibration, cross-validation."""
