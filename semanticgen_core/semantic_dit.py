"""Stage 1, ``SemanticDiT``: a text-conditioned flow-matching Wan DiT over the compressed semantic grid.

The plan is tiny (about 1/16 of the VAE tokens), so stage 1 uses full attention over the whole video:
this is where global layout and motion are decided. Built on diffusers' Wan transformer with a 1x1x1
patch (each plan token is one sequence element); each shot of a multi-shot video can have its own prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from .attention import time_windows
from .errors import ShapeError
from .wan_blocks import WanRunner, shot_routing


class SemanticDiT(WanRunner, WanTransformer3DModel):
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
        self.use_semanticgen_blocks()

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                shot_starts: Sequence[float] | None = None, return_dict: bool = True):
        """Velocity of the plan ``[B, C, T_s, h, w]`` at ``timestep`` ``[B]``; text ``[B, L, D]`` or one
        prompt per shot ``[B, S, L, D]`` with ``shot_starts`` (S start times in plan steps, the first 0)."""
        x, rope, times, grid = self.patchify(hidden_states)
        temb, mod = self.time_modulation(timestep, hidden_states.dtype)
        context = self.text_context(encoder_hidden_states)
        shots = shot_routing(times, shot_starts, 1 if context.ndim == 3 else context.shape[1])
        full_attention = [time_windows(times, None, None, shifted=False)]
        x, _ = self.run_blocks(x, None, context, shots, mod, None, rope, None, full_attention, None)
        out = self.head(x, temb, grid)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    def velocity(self, tokens: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor,
                 shot_starts: Sequence[float] | None = None) -> torch.Tensor:
        """Flow velocity for plan tokens ``[B, T_s, h, w, c]`` (the ``SemanticPlan`` layout)."""
        if tokens.ndim != 5 or tokens.shape[-1] != self.config.in_channels:
            raise ShapeError(f"plan tokens must be [B, T_s, h, w, {self.config.in_channels}], "
                             f"got {tuple(tokens.shape)}")
        out = self(tokens.permute(0, 4, 1, 2, 3), timestep, text, shot_starts, return_dict=False)[0]
        return out.permute(0, 2, 3, 4, 1)
