"""Where the embedded default's weights live: ``semanticgen_core/weights``, shipped with the pack.

One file per part, each written by its training recipe (``semanticgen_core/recipes``) with
``model_files.save_model``. Nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PARTS = ("semantic_encoder", "vae", "stage2", "stage1")
NAME = "embedded"  # how loaders list it next to files from the model folders


def weights_path(part: str) -> Path:
    """Path of one part of the embedded default, with a clear error if it is not there."""
    if part not in PARTS:
        raise CheckpointError(f"unknown part {part!r} of the embedded default: one of {', '.join(PARTS)}")
    path = WEIGHTS_DIR / f"{part}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"the embedded default's {part} weights are missing: expected {path}. They ship with the pack; "
            f"reinstall it, or train them with `python -m semanticgen_core.recipes.train_{part}`")
    return path
