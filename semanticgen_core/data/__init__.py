"""Procedural video world used to train and evaluate the embedded default models."""
