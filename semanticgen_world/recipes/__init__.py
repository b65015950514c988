"""Training recipes for the parts of the embedded default that only the procedural world has: its VAE and semantic encoder."""
