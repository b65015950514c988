"""Where the embedded default's weights live: ``semanticgen_core/weights``, shipped with the pack.

One file per part, written by ``scripts/train_embedded.sh`` (the trainer for the stages, the world's
recipes for its VAE and semantic encoder). Nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

from .errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# preview: the plan-preview decoder; aligner: stage 1's alignment guidance
PARTS = ("semantic_encoder", "vae", "stage2", "stage1", "preview", "aligner")
NAME = "embedded"  # how loaders list it next to files from the model folders


def weights_path(part: str) -> Path:
    """Path of one part of the embedded default, with a clear error if it is not there."""
    if part not in PARTS:
        raise CheckpointError(f"unknown part {part!r} of the embedded default: one of {', '.join(PARTS)}")
    path = WEIGHTS_DIR / f"{part}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"the embedded default's {part} weights are missing: expected {path}. They ship with the pack; "
            "reinstall it, or train them with `bash scripts/train_embedded.sh`")
    return path
