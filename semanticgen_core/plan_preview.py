"""The plan-preview decoder: a small network that draws a semantic plan as low-resolution frames.

A plan's tokens ``[T_s, h, w, c]`` say what is where and how it moves, not what it looks like; projecting
them to colours by PCA (``plan_ops.pca_rgb``) shows that *something* changes, but not that the red circle
moves right. ``PlanPreviewDecoder`` is trained (``python -m semanticgen_core.trainer preview``) to draw,
for each plan step, the video frame at the middle of that step (``thumbnails``) at ``scale`` pixels per
token on each side: 16x16 for the embedded default's 4x4 grid, 68x120 for Wan's 17x30. It sees only the
plan (sampled from a frozen compressor, as stage 1 is trained), so it draws what the plan carries (objects,
colours, positions, motion) and a blur where the plan carries nothing (texture).

    decoder = load_preview(path)                # or embedded_preview()
    frames = preview_frames(decoder, plan.tokens)   # [T_s, scale h, scale w, 3] in 0..1

It is a handful of convolutions (about 50k parameters), so a minute-long plan previews in milliseconds.
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .errors import SemanticGenError, ShapeError

# -- the target: one thumbnail per plan step ------------------------------------------------------------


def step_frames(num_frames: int, fps: float, encoder) -> list[int]:
    """For each plan step, the source frame at the middle of the frames its temporal patch merges.

    The semantic encoder resamples the video to ``sample_fps`` and merges ``temporal_patch_size``
    consecutive samples into one step (padding the last patch with the last sample)."""
    kept = encoder.sample_indices(num_frames, fps)
    patch = int(getattr(encoder, "temporal_patch_size", 1))
    kept = kept + [kept[-1]] * (-len(kept) % patch)
    return [round(sum(kept[i:i + patch]) / patch) for i in range(0, len(kept), patch)]


def thumbnails(frames: torch.Tensor, fps: float, encoder, scale: int = 4) -> torch.Tensor:
    """Video ``[T, H, W, 3]`` in 0..1 -> uint8 ``[T_s, scale h, scale w, 3]``: each plan step's middle frame,
    resized (area-averaged) to ``scale`` pixels per plan token."""
    steps, h, w = encoder.grid_shape(frames.shape[0], frames.shape[1], frames.shape[2], fps)
    picked = frames[step_frames(frames.shape[0], fps, encoder)].float().cpu().permute(0, 3, 1, 2)
    if len(picked) != steps:
        raise ShapeError(f"thumbnails: {len(picked)} middle frames for a plan of {steps} steps")
    small = F.interpolate(picked, size=(scale * h, scale * w), mode="bilinear", antialias=True, align_corners=False)
    return (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# -- the decoder ---------------------------------------------------------------------------------------


class PlanPreviewDecoder(ModelMixin, ConfigMixin):
    """Plan tokens ``[B, T_s, h, w, in_dim]`` -> frames ``[B, T_s, scale h, scale w, 3]`` in 0..1.

    A 3x3x3 convolution over (time, y, x) (neighbouring steps: where an object was and is going), a
    3x3 one per step, then ``log2(scale)`` nearest-upsampling stages, each a 3x3 convolution, and a 1x1
    projection to RGB through a sigmoid."""

    @register_to_config
    def __init__(self, in_dim: int = 8, width: int = 48, scale: int = 4):
        super().__init__()
        if scale < 1 or scale & (scale - 1):
            raise SemanticGenError(f"the preview decoder's scale must be a power of 2, got {scale}")
        self.stem = nn.Conv3d(in_dim, width, 3, padding=1, padding_mode="replicate")
        self.mix = nn.Conv2d(width, width, 3, padding=1)
        ups, channels = [], width
        for _ in range(scale.bit_length() - 1):
            out = max(16, channels * 2 // 3)
            ups.append(nn.Conv2d(channels, out, 3, padding=1))
            channels = out
        self.ups = nn.ModuleList(ups)
        self.to_rgb = nn.Conv2d(channels, 3, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 5 or tokens.shape[-1] != self.config.in_dim:
            raise ShapeError(f"the preview decoder takes plan tokens [B, T_s, h, w, {self.config.in_dim}], got "
                             f"{list(tokens.shape)}: is this plan from another compressor?")
        b, t, h, w, _ = tokens.shape
        x = F.gelu(self.stem(tokens.permute(0, 4, 1, 2, 3)))          # [B, C, T, h, w]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * t, -1, h, w)
        x = F.gelu(self.mix(x))
        for conv in self.ups:
            x = F.gelu(conv(F.interpolate(x, scale_factor=2, mode="nearest")))
        rgb = torch.sigmoid(self.to_rgb(x))
        return rgb.reshape(b, t, 3, *rgb.shape[-2:]).permute(0, 1, 3, 4, 2)


@torch.no_grad()
def preview_frames(decoder: PlanPreviewDecoder, tokens: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """A plan's tokens ``[T_s, h, w, c]`` -> float32 frames ``[T_s, scale h, scale w, 3]`` in 0..1 on the CPU.

    Long plans go in overlapping chunks of ``chunk`` steps (one step of context each side), so memory stays
    bounded and the result equals one pass."""
    param = next(decoder.parameters())
    steps, out = tokens.shape[0], []
    for start in range(0, steps, chunk):
        lo, hi = max(0, start - 1), min(steps, start + chunk + 1)
        frames = decoder(tokens[lo:hi][None].to(param.device, param.dtype))[0]
        out.append(frames[start - lo:start - lo + min(chunk, steps - start)].float().cpu())
    return torch.cat(out)


# -- finding one ---------------------------------------------------------------------------------------


def load_preview(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """A preview-decoder file -> its ``ModelFile`` (``.modules["preview"]``, ``.preset``, ``.info``)."""
    from .model_files import load_model

    return load_model(path, "preview", device=device)


@functools.lru_cache(maxsize=1)
def _embedded(path: str, mtime_ns: int):
    return load_preview(path)


def embedded_preview():
    """The embedded default's preview decoder (shipped as ``weights/preview.safetensors``), loaded once."""
    from .embedded import weights_path

    path = weights_path("preview")
    return _embedded(str(path), path.stat().st_mtime_ns)


def matches(model_file, plan) -> bool:
    """Whether a preview decoder was trained for this plan's compressor: the preset (model family) the
    plan names and the number of channels agree."""
    return (model_file.preset.name == plan.compressor
            and model_file.modules["preview"].config.in_dim == plan.tokens.shape[-1])
