"""Conventions every layer shares: errors, console, pixels, precision, labels, private-API door."""
