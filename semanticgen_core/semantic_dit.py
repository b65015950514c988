"""Stage 1, ``SemanticDiT``: a text-conditioned flow-matching Wan DiT over the compressed semantic grid.

The plan is tiny (about 1/16 of the VAE tokens), so stage 1 uses full attention over the whole video:
this is where global layout and motion are decided. Built directly on diffusers' Wan transformer with a
1x1x1 patch: each plan token is one sequence element.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from .errors import ShapeError


class SemanticDiT(WanTransformer3DModel):
    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 1, 1),
        num_attention_heads: int = 12,
        attention_head_dim: int = 128,
        in_channels: int = 8,
        out_channels: int = 8,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 8960,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
    ) -> None:
        super().__init__(patch_size, num_attention_heads, attention_head_dim, in_channels, out_channels, text_dim,
                         freq_dim, ffn_dim, num_layers, cross_attn_norm, qk_norm, eps, image_dim, added_kv_proj_dim,
                         rope_max_seq_len, pos_embed_seq_len)

    def velocity(self, tokens: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Flow velocity for plan tokens ``[B, T_s, h, w, c]`` (the ``SemanticPlan`` layout)."""
        if tokens.ndim != 5 or tokens.shape[-1] != self.config.in_channels:
            raise ShapeError(f"plan tokens must be [B, T_s, h, w, {self.config.in_channels}], "
                             f"got {tuple(tokens.shape)}")
        out = self(tokens.permute(0, 4, 1, 2, 3), timestep, text, return_dict=False)[0]
        return out.permute(0, 2, 3, 4, 1)
