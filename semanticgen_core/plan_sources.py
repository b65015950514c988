"""What a plan is compressed from in training, and how wide it is: the options the paper's ablations vary.

The paper's plan compresses the semantic encoder's features; its convergence figure (Fig. 9) compares
plans compressed from the VAE latents instead. Patchified 2x2 in space, the cached latents
``[B, 16, T, 8, 8]`` become ``[B, T, 4, 4, 64]``: the plan grid and width of the encoder's features, so
the same compressor takes either. Only training differs; at generation time stage 1 makes the plan and
stage 2 renders it whatever the plan was compressed from.
"""

from __future__ import annotations

import dataclasses

import torch

from .errors import SemanticGenError
from .presets import Preset

SOURCES = ("encoder", "vae")
PATCH = 2  # latent cells per plan cell a side: 8x8 latents -> the encoder's 4x4 grid


def latents_as_features(latents: torch.Tensor) -> torch.Tensor:
    """VAE latents ``[B, C, T, H, W]`` -> ``[B, T, H/2, W/2, C*4]``, each plan cell's 2x2 latent patch."""
    b, c, t, h, w = latents.shape
    x = latents.reshape(b, c, t, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 2, 3, 5, 1, 4, 6).flatten(4)


def plan_features(batch: dict[str, torch.Tensor], source: str) -> torch.Tensor:
    """The compressor's input for a cached batch (``ClipCache.batch``)."""
    if source == "encoder":
        return batch["features"]
    if source == "vae":
        return latents_as_features(batch["latents"])
    raise SemanticGenError(f"unknown plan source {source!r}: one of {', '.join(SOURCES)}")


def plan_preset(preset: Preset, dim: int) -> Preset:
    """``preset`` with plans of ``dim`` channels: the compressor's output, stage 1's in/out and stage 2's
    plan input (the preset's own width leaves it as it is)."""
    return dataclasses.replace(preset, compressor={**preset.compressor, "out_dim": dim},
                               stage1={**preset.stage1, "in_channels": dim, "out_channels": dim},
                               stage2={**preset.stage2, "semantic_dim": dim})
