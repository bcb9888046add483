"""Data in: sources (synthetic, CBIS-DDSM, published tensors) → one prepared dataset format."""
