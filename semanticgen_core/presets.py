"""Model sizes, as named presets: ``tiny`` (tests) and ``wan2.1-1.3b`` (real weights on a GPU).

A preset fixes every architecture and the plan geometry that ties them together: the semantic encoder
samples ``sample_fps`` frames a second and merges 2 in time, so the plan has ``sample_fps / 2`` steps a
second, and one plan cell covers ``token_px`` x ``token_px`` pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .compressor import SemanticCompressor
from .latent_dit import LatentDiT
from .semantic_dit import SemanticDiT

WAN21_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                  out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                  qk_norm="rms_norm_across_heads", eps=1e-6)


@dataclass(frozen=True)
class Preset:
    name: str
    encoder: dict            # Qwen2_5_VLVisionConfig fields
    sample_fps: float        # frames a second the semantic encoder sees
    token_px: int            # pixels per plan cell side (patch_size * spatial_merge_size)
    compressor: dict
    stage1: dict
    stage2: dict
    vae: dict                # AutoencoderKLWan config
    text_encoder: str        # "minilm" or "umt5-xxl"
    defaults: dict = field(default_factory=dict)  # sampling defaults: fps, size, steps, guidance, window

    @property
    def plan_fps(self) -> float:
        return self.sample_fps / self.encoder.get("temporal_patch_size", 2)

    def build(self, device: str | torch.device = "cpu") -> dict[str, torch.nn.Module]:
        """Fresh (untrained) compressor and both DiTs; ``device="meta"`` allocates nothing."""
        with torch.device(device):
            return {"compressor": SemanticCompressor(**self.compressor), "stage1": SemanticDiT(**self.stage1),
                    "stage2": LatentDiT(**self.stage2)}


_TINY_TEXT = 32
TINY = Preset(
    name="tiny",
    encoder=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=8,
                 spatial_merge_size=2, temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1]),
    sample_fps=2.0, token_px=16,
    compressor=dict(in_dim=32, out_dim=8, hidden_dim=32, depth=2),
    stage1=dict(num_attention_heads=2, attention_head_dim=12, in_channels=8, out_channels=8, text_dim=_TINY_TEXT,
                freq_dim=32, ffn_dim=48, num_layers=2),
    stage2=dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16,
                out_channels=16, text_dim=_TINY_TEXT, freq_dim=32, ffn_dim=48, num_layers=2, semantic_dim=8),
    vae=dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
             temperal_downsample=[False, True, True]),
    text_encoder="tiny",
    defaults=dict(fps=8.0, height=64, width=64, steps=4, guidance=1.0, window_frames=None),
)

WAN = Preset(
    name="wan2.1-1.3b",
    # Qwen2.5-VL-3B's vision tower; its patch merger outputs 2048-d tokens.
    encoder=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                 patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                 fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
    sample_fps=1.6, token_px=28,
    compressor=dict(in_dim=2048, out_dim=8, hidden_dim=1024, depth=2),
    stage1={**WAN21_1_3B, "patch_size": (1, 1, 1), "in_channels": 8, "out_channels": 8},
    stage2={**WAN21_1_3B, "semantic_dim": 8},
    vae=dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
             temperal_downsample=[False, True, True]),
    text_encoder="umt5-xxl",
    defaults=dict(fps=16.0, height=480, width=832, steps=50, guidance=5.0, window_frames=8),
)

PRESETS = {p.name: p for p in (TINY, WAN)}
