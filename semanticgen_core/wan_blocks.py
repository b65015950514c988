"""Wan's transformer blocks run over SemanticGen's token layouts; shared by stage 1 and stage 2.

``WanTransformer3DModel.forward`` runs one token group with one prompt and full attention. Both stages
need more, with the same weights (so real Wan checkpoints load unchanged):

* two token groups with their own timestep modulation (video tokens at ``t``, plan tokens clean),
* self-attention in time windows with a gated plan branch (``attention.py``),
* **per-shot prompts**: the text is one prompt ``[B, L, D]`` or one per shot ``[B, S, L, D]`` with the
  time each shot starts; a token cross-attends to the prompt of the shot its time falls in.

With one group, one prompt and one window this is exactly Wan's forward (tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.transformers.transformer_wan import WanTransformerBlock

from .attention import Rope, Window, rope_at, rope_to, windowed_self_attention
from .errors import ShapeError

# Cross-attention routing: (shot index, indices of the tokens in that shot), or None for one prompt.
Shots = list[tuple[int, torch.Tensor]] | None


def cell_centres(n_cells: int, n_units: int) -> torch.Tensor:
    """Centres of ``n_cells`` equal cells spanning ``n_units`` grid units, in that grid's coordinates."""
    return (torch.arange(n_cells, dtype=torch.float64) + 0.5) * (n_units / n_cells) - 0.5


def shot_routing(token_times: torch.Tensor, shot_starts: Sequence[float] | None, num_shots: int) -> Shots:
    """Which tokens cross-attend to which shot's prompt: shot ``k`` covers ``[starts[k], starts[k+1])``."""
    if num_shots == 1:
        return None
    if shot_starts is None or len(shot_starts) != num_shots:
        raise ShapeError(f"the text has {num_shots} shots: give shot_starts with {num_shots} start times")
    starts = torch.as_tensor(list(shot_starts), dtype=torch.float64)
    if (starts[1:] <= starts[:-1]).any():
        raise ShapeError(f"shot_starts must increase, got {list(shot_starts)}")
    shot = (torch.searchsorted(starts, token_times, right=True) - 1).clamp(min=0)
    return [(k, (shot == k).nonzero().flatten()) for k in range(num_shots) if (shot == k).any()]


class WanRunner:
    """Mixin for ``WanTransformer3DModel`` subclasses: embed, run the blocks, unpatchify."""

    def use_semanticgen_blocks(self) -> None:
        """Give Wan's blocks SemanticGen's forward (same weights and names), once, after ``__init__``."""
        for block in self.blocks:
            block.__class__ = SemanticGenBlock

    def time_modulation(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Wan's timestep path: ``temb [B, D]`` for the output head and ``[B, 6, D]`` for the blocks."""
        ce = self.condition_embedder
        t = ce.timesteps_proj(timestep).to(next(ce.time_embedder.parameters()).dtype)
        temb = ce.time_embedder(t).to(dtype)
        return temb, ce.time_proj(ce.act_fn(temb)).unflatten(1, (6, -1))

    def grid_rope(self, t: int, h: int, w: int, units: tuple[int, int, int], steps: slice = slice(None)) -> Rope:
        """Rotary embedding of a ``t x h x w`` token grid laid over ``units`` of the patch grid
        (only the time ``steps`` given, for a part of a long video)."""
        tt, hh, ww = torch.meshgrid(cell_centres(t, units[0])[steps], cell_centres(h, units[1]),
                                    cell_centres(w, units[2]), indexing="ij")
        return rope_at(self.rope, tt.flatten(), hh.flatten(), ww.flatten())

    def patchify(self, hidden_states: torch.Tensor):
        """``[B, C, T, H, W]`` -> tokens ``[B, N, D]``, their rope, their times (patch frames), the grid."""
        _, _, t, h, w = hidden_states.shape
        pt, ph, pw = self.config.patch_size
        if t % pt or h % ph or w % pw:
            raise ShapeError(f"input {tuple(hidden_states.shape)} is not divisible by the patch size {(pt, ph, pw)}")
        grid = (t // pt, h // ph, w // pw)
        x = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
        times = torch.arange(grid[0]).repeat_interleave(grid[1] * grid[2]).double()
        return x, self.grid_rope(*grid, grid), times, grid

    def text_context(self, text: torch.Tensor) -> torch.Tensor:
        """Project ``[B, L, D]`` or per-shot ``[B, S, L, D]`` text to the model width."""
        if text.ndim not in (3, 4) or text.shape[-1] != self.config.text_dim:
            raise ShapeError(f"text must be [B, L, {self.config.text_dim}] or per shot [B, S, L, "
                             f"{self.config.text_dim}], got {tuple(text.shape)}")
        return self.condition_embedder.text_embedder(text)

    def run_blocks(self, xv, xs, context, shots: Shots, mod_v, mod_s, rope_v, rope_s,
                   layouts: Sequence[list[Window]], gates: torch.Tensor | None):
        """All blocks; layer ``i`` uses ``layouts[i % len(layouts)]`` (odd layers: shifted windows)."""
        rope_v, rope_s = rope_to(rope_v, xv.device), rope_to(rope_s, xv.device)  # once, not per layer
        for i, block in enumerate(self.blocks):
            args = (xv, xs, context, shots, mod_v, mod_s, rope_v, rope_s, layouts[i % len(layouts)],
                    layer_gate(gates, i))
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                xv, xs = self._gradient_checkpointing_func(block, *args)
            else:
                xv, xs = block(*args)
        return xv, xs

    def head(self, x: torch.Tensor, temb: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """Wan's output norm, projection and unpatchify: tokens -> ``[B, C, T, H, W]``."""
        shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        x = self.proj_out((self.norm_out(x.float()) * (1 + scale) + shift).type_as(x))
        pt, ph, pw = self.config.patch_size
        x = x.reshape(x.shape[0], *grid, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def layer_gate(gates: torch.Tensor | None, i: int) -> torch.Tensor | None:
    """Layer ``i``'s row of the plan gates. Under no_grad a view of a parameter claims to need a gradient
    yet has no graph, which module hooks that follow autograd (FlopCounterMode's, FSDP's) reject: detach it."""
    if gates is None:
        return None
    return gates[i] if torch.is_grad_enabled() else gates[i].detach()


class SemanticGenBlock(WanTransformerBlock):
    """A Wan block (same parameters) whose forward takes SemanticGen's token layout: video tokens ``xv``
    and optional plan tokens ``xs``. Called as a module, ``block(...)``, so FSDP's per-block sharding,
    activation checkpointing and offload hooks see it.

    Self-attention is windowed and gated; cross-attention and the feed-forward act per token, so the
    groups are concatenated for them (each token with its own shot's prompt).
    """

    def forward(self, xv, xs, context, shots: Shots, mod_v, mod_s, rope_v, rope_s, windows: list[Window], gate):
        sv = (self.scale_shift_table + mod_v.float()).chunk(6, dim=1)
        ss = (self.scale_shift_table + mod_s.float()).chunk(6, dim=1) if xs is not None else None

        def modulate(norm, x, m, shift, scale):
            return (norm(x.float()) * (1 + m[scale]) + m[shift]).type_as(x)

        av, as_ = windowed_self_attention(self.attn1, modulate(self.norm1, xv, sv, 0, 1),
                                          None if xs is None else modulate(self.norm1, xs, ss, 0, 1),
                                          rope_v, rope_s, windows, gate)
        xv = (xv.float() + av * sv[2]).type_as(xv)
        if xs is not None:
            xs = (xs.float() + as_ * ss[2]).type_as(xs)

        n_v = xv.shape[1]
        x = xv if xs is None else torch.cat([xv, xs], 1)
        normed = self.norm2(x.float()).type_as(x)
        if shots is None:
            x = x + self.attn2(normed, context, None, None)
        else:
            out = torch.empty_like(x)
            for k, idx in shots:
                out[:, idx] = self.attn2(normed[:, idx], context[:, k], None, None)
            x = x + out
        xv, xs = (x, None) if xs is None else (x[:, :n_v], x[:, n_v:])

        xv = (xv.float() + self.ffn(modulate(self.norm3, xv, sv, 3, 4)).float() * sv[5]).type_as(xv)
        if xs is not None:
            xs = (xs.float() + self.ffn(modulate(self.norm3, xs, ss, 3, 4)).float() * ss[5]).type_as(xs)
        return xv, xs
