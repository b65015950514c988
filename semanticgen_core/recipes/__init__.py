"""Training recipes for the embedded default's parts (each a ``python -m semanticgen_core.recipes.<name>``)."""
