"""The frozen video-understanding encoder that defines the semantic space (paper: Qwen2.5-VL's vision tower).

A ``SemanticEncoder`` maps a video ``[T, H, W, 3]`` (ComfyUI IMAGE layout, 0..1) at some fps to a feature
grid ``[T_s, h, w, d]``. Frames are first subsampled to the encoder's low ``sample_fps`` (paper: 1.6 fps,
while the VAE sees 24 fps), so a plan is short and cheap. Other encoders (V-JEPA 2, VideoMAE 2) plug in
as further subclasses.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig

from .checkpoints import init_empty_weights, list_keys, load_into, load_state_dict
from .errors import CheckpointError, SemanticGenError, ShapeError

if TYPE_CHECKING:  # the modeling module (a quarter second) is imported when a tower is built
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

# OPENAI_CLIP_MEAN / OPENAI_CLIP_STD, the normalisation Qwen's processors apply.
QWEN_MEAN = (0.48145466, 0.4578275, 0.40821073)
QWEN_STD = (0.26862954, 0.26130258, 0.27577711)
# Where the tower sits in a full Qwen2.5-VL checkpoint: older files say "visual.", newer transformers
# layouts "model.visual."; "" is a tower saved on its own.
TOWER_PREFIXES = ("visual.", "model.visual.", "")


def sample_indices(num_frames: int, fps: float, sample_fps: float) -> list[int]:
    """Source frames kept when resampling ``num_frames`` frames at ``fps`` down to ``sample_fps``.

    Sample times are ``k / sample_fps`` for every ``k`` with a time inside the clip
    ``[0, (num_frames - 1) / fps]``; each takes the nearest source frame. A clip at or below
    ``sample_fps`` keeps all its frames (frames are never duplicated to raise the rate).
    """
    if num_frames < 1:
        raise ShapeError(f"Video has {num_frames} frames; the semantic encoder needs at least 1.")
    if not fps > 0:
        raise SemanticGenError(f"Video fps must be positive, got {fps}; pass the frame rate of the frames.")
    if fps <= sample_fps:
        return list(range(num_frames))
    step = fps / sample_fps  # source frames per sample
    count = math.floor((num_frames - 1) / step + 1e-9) + 1
    return [min(num_frames - 1, math.floor(k * step + 0.5)) for k in range(count)]


def qwen_target_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """Nearest multiple of ``factor`` (patch size x merge size, at least one) for each side, as Qwen does."""
    return max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)


def qwen_grid_shape(num_frames: int, height: int, width: int, fps: float, sample_fps: float, patch_size: int,
                    merge_size: int, temporal_patch_size: int) -> tuple[int, int, int]:
    """``(T_s, h, w)`` of a Qwen-style tower's merged tokens for such a video: the plan's grid."""
    num_sampled = len(sample_indices(num_frames, fps, sample_fps))
    factor = patch_size * merge_size
    h, w = qwen_target_size(height, width, factor)
    return math.ceil(num_sampled / temporal_patch_size), h // factor, w // factor


class SemanticEncoder(torch.nn.Module, ABC):
    """Frozen video encoder: ``encode(frames, fps) -> [T_s, h, w, feature_dim]``.

    Subclasses set ``name`` (recorded in plans, so features of different encoders are never mixed),
    ``sample_fps`` and ``feature_dim``, and implement ``encode`` and ``grid_shape``.
    """

    name: str
    sample_fps: float
    feature_dim: int

    def sample_indices(self, num_frames: int, fps: float) -> list[int]:
        """Source frames kept when resampling to ``sample_fps`` (see ``sample_indices``)."""
        return sample_indices(num_frames, fps, self.sample_fps)

    @abstractmethod
    def encode(self, frames: torch.Tensor, fps: float) -> torch.Tensor:
        """Features ``[T_s, h, w, feature_dim]`` (float32) of a video ``[T, H, W, 3]`` in 0..1 at ``fps``."""

    @abstractmethod
    def grid_shape(self, num_frames: int, height: int, width: int, fps: float) -> tuple[int, int, int]:
        """``(T_s, h, w)`` that ``encode`` returns for such a video, computed without running the model."""


def qwen_patchify(
    video: torch.Tensor, patch_size: int, temporal_patch_size: int, merge_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten a normalised video ``[T, C, H, W]`` into Qwen's ``(pixel_values, grid_thw)``.

    ``T`` must be a multiple of ``temporal_patch_size`` and ``H, W`` of ``patch_size * merge_size``.
    Rows are ordered (t, h-block, w-block, row-in-block, col-in-block), so every ``merge_size**2`` group the
    patch merger fuses is contiguous; each row is (C, t, y, x), the layout of the tower's Conv3d kernel.
    """
    t, c, h, w = video.shape
    gt, gh, gw = t // temporal_patch_size, h // patch_size, w // patch_size
    m, p, tp = merge_size, patch_size, temporal_patch_size
    patches = video.reshape(gt, tp, c, gh // m, m, p, gw // m, m, p)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)  # gt, gh/m, gw/m, m, m, C, tp, p, p
    pixel_values = patches.reshape(gt * gh * gw, c * tp * p * p)
    return pixel_values, torch.tensor([[gt, gh, gw]], dtype=torch.long)


def qwen25vl_3b_vision_config() -> Qwen2_5_VLVisionConfig:
    """The vision tower of Qwen2.5-VL-3B-Instruct (as in its config.json)."""
    return Qwen2_5_VLVisionConfig(
        depth=32,
        hidden_size=1280,
        hidden_act="silu",
        intermediate_size=3420,
        num_heads=16,
        in_channels=3,
        out_hidden_size=2048,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
    )


def tiny_vision_config() -> Qwen2_5_VLVisionConfig:
    """A tiny tower with the real layout, for tests and the CPU default: 64x64 frames -> 4x4 tokens."""
    return Qwen2_5_VLVisionConfig(
        depth=4,
        hidden_size=64,
        hidden_act="silu",
        intermediate_size=128,
        num_heads=4,
        in_channels=3,
        out_hidden_size=64,
        patch_size=8,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=32,  # 2x2 merged tokens per attention window
        fullatt_block_indexes=[3],
        tokens_per_second=2,
    )


def _vision_config(config: dict[str, Any] | Qwen2_5_VLVisionConfig) -> Qwen2_5_VLVisionConfig:
    """Accept a vision config, its dict, or a full Qwen2.5-VL config dict (``vision_config`` inside)."""
    if isinstance(config, Qwen2_5_VLVisionConfig):
        return config
    config = dict(config.get("vision_config", config))
    config.pop("model_type", None)  # the full model's type, not the tower's
    return Qwen2_5_VLVisionConfig(**config)


class QwenVisionEncoder(SemanticEncoder):
    """Qwen2.5-VL's vision tower; features are the patch-merger tokens (one per 2x2 patches, 2 frames).

    ``encode`` resamples to ``sample_fps``, resizes to a multiple of ``patch_size * spatial_merge_size``,
    pads the frame count to a multiple of ``temporal_patch_size`` with the last frame, normalises, and
    patchifies by hand (no Qwen processor or torchvision at runtime).
    """

    def __init__(
        self, model: Qwen2_5_VisionTransformerPretrainedModel, sample_fps: float = 1.6, name: str = "qwen2.5-vl-vision"
    ) -> None:
        super().__init__()
        if not sample_fps > 0:
            raise SemanticGenError(f"sample_fps must be positive, got {sample_fps} (the paper uses 1.6).")
        self.model = model.eval().requires_grad_(False)
        self.sample_fps = float(sample_fps)
        self.name = name
        cfg = model.config
        self.feature_dim = cfg.out_hidden_size
        self.patch_size = cfg.patch_size
        self.merge_size = cfg.spatial_merge_size
        self.temporal_patch_size = cfg.temporal_patch_size
        self.register_buffer("mean", torch.tensor(QWEN_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(QWEN_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> QwenVisionEncoder:
        """Stay in eval mode: the encoder is frozen, whatever its parent does."""
        return super().train(False)

    @classmethod
    def from_config(
        cls, config: dict[str, Any] | Qwen2_5_VLVisionConfig, sample_fps: float = 1.6, name: str = "qwen2.5-vl-vision"
    ) -> QwenVisionEncoder:
        """A randomly initialised tower (tests, or training a small semantic space from scratch)."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        return cls(Qwen2_5_VisionTransformerPretrainedModel(_vision_config(config)), sample_fps, name)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        config: dict[str, Any] | Qwen2_5_VLVisionConfig | None = None,
        sample_fps: float = 1.6,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        name: str | None = None,
    ) -> QwenVisionEncoder:
        """Load the tower from a full Qwen2.5-VL checkpoint (file, folder, or sharded folder).

        Only the ``visual.*`` / ``model.visual.*`` tensors are read; every tower key must match. Without
        ``config``, ``vision_config`` is read from ``config.json`` in the checkpoint's folder. The model
        is built with meta parameters and the weights assigned, so a 3B tower is never allocated twice.
        """
        path = Path(path)
        if config is None:
            config_file = (path if path.is_dir() else path.parent) / "config.json"
            if not config_file.is_file():
                raise CheckpointError(
                    f"No config for the Qwen2.5-VL vision tower in {path}: {config_file} is missing. Put the "
                    "model's config.json there, or pass config= (e.g. qwen25vl_3b_vision_config())."
                )
            try:
                config = json.loads(config_file.read_text())
            except (OSError, ValueError) as e:
                raise CheckpointError(f"Cannot read {config_file} ({e}); it must be the model's JSON config.") from e
        config = _vision_config(config)

        keys = list_keys(path)
        prefix = next((p for p in TOWER_PREFIXES if f"{p}patch_embed.proj.weight" in keys), None)
        if prefix is None:
            tried = ", ".join(f"'{p}patch_embed.proj.weight'" for p in TOWER_PREFIXES)
            raise CheckpointError(
                f"No Qwen2.5-VL vision tower in {path}: looked for {tried} but found none (first keys: "
                f"{keys[:5]}). Use a full Qwen2.5-VL checkpoint such as Qwen2.5-VL-3B-Instruct."
            )
        state = {k: v.to(device=device, dtype=dtype) for k, v in load_state_dict(path, prefix=prefix).items()}
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        with init_empty_weights():
            model = Qwen2_5_VisionTransformerPretrainedModel(config)
        load_into(model, state, f"Qwen2.5-VL vision tower ({prefix or 'no prefix'}*) from {path}")
        model.to(device)  # the computed buffers (rotary frequencies); parameters are already there
        stem = path.name if path.is_dir() else path.stem
        return cls(model, sample_fps, name or f"qwen2.5-vl-vision:{stem}").to(device)

    def grid_shape(self, num_frames: int, height: int, width: int, fps: float) -> tuple[int, int, int]:
        """``(T_s, h, w)``: temporal patches of the resampled frames and merged tokens per side."""
        return qwen_grid_shape(num_frames, height, width, fps, self.sample_fps, self.patch_size, self.merge_size,
                               self.temporal_patch_size)

    def preprocess(self, frames: torch.Tensor, fps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames ``[T, H, W, 3]`` in 0..1 at ``fps`` -> the tower's ``(pixel_values, grid_thw)``."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ShapeError(
                f"Semantic encoder got frames of shape {list(frames.shape)}; expected [T, H, W, 3] floats in 0..1 "
                "(ComfyUI IMAGE layout: a video is a batch of RGB frames)."
            )
        frames = frames[self.sample_indices(frames.shape[0], fps)]
        video = frames.to(device=self.mean.device, dtype=torch.float32).permute(0, 3, 1, 2)
        size = qwen_target_size(*video.shape[-2:], self.patch_size * self.merge_size)
        if size != tuple(video.shape[-2:]):
            # Antialiased bicubic, like the PIL resize of Qwen's processor; bicubic overshoots, so clamp.
            video = F.interpolate(video, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        if pad := -video.shape[0] % self.temporal_patch_size:
            video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)])
        video = (video - self.mean) / self.std
        return qwen_patchify(video, self.patch_size, self.temporal_patch_size, self.merge_size)

    def features(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        """Differentiable merged tokens of one or more videos patchified alike: ``[N, T_s, h, w, d]``.

        ``pixel_values`` are the rows of the ``N`` videos one after another and ``grid_thw`` ``[N, 3]``
        their (equal) grids, as ``preprocess`` returns them for one video (``torch.cat`` them for a batch).
        ``encode`` calls this under ``no_grad``; training a tower from scratch calls it directly, after
        ``self.model.requires_grad_(True)``.
        """
        if grid_thw.ndim != 2 or grid_thw.shape[1] != 3 or not bool((grid_thw == grid_thw[:1]).all()):
            raise ShapeError(f"features() needs grid_thw [N, 3] with one grid for every video, got "
                             f"{grid_thw.tolist()}; encode videos of different sizes separately.")
        out = self.model(pixel_values, grid_thw=grid_thw.to(pixel_values.device))
        # transformers 5 returns an output object holding the merged tokens; 4.x returns them directly.
        tokens = out.pooler_output if hasattr(out, "pooler_output") else out
        gt, gh, gw = grid_thw[0].tolist()
        # Merged tokens follow the (t, h-block, w-block) order of qwen_patchify's merge groups.
        return tokens.float().reshape(grid_thw.shape[0], gt, gh // self.merge_size, gw // self.merge_size,
                                      self.feature_dim)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, fps: float) -> torch.Tensor:
        """Merged tokens of the video as a float32 grid ``[T_s, h, w, out_hidden_size]``."""
        pixel_values, grid_thw = self.preprocess(frames, fps)
        return self.features(pixel_values, grid_thw)[0]
