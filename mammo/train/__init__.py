"""Training: one run (fit, kept checkpoint, threshold), the series of variants, cross-validation."""
