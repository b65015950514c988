"""Stage 2 over a long video in memory bounded by the window, not by the video (exactly the same output).

With time windows, a layer's output for one window depends only on that layer's input inside the window
(self-attention stays in the window; cross-attention and the feed-forward act per token). So the blocks
can run as a pipeline over time: the video enters ``chunk`` latent frames at a time, and layer ``i``
processes every window of its own grid (shifted on odd layers) whose tokens have all arrived, passes the
result to layer ``i + 1`` and keeps only the unfinished tail. Each token goes through each layer once,
as in the one-pass forward; what is held at any time is about ``layers x (chunk + window)`` frames of
activations, whatever the video's length. The output latents, which sampling must hold anyway, are the
only thing that grows with the video.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .attention import Rope, rope_to, time_windows, window_start
from .wan_blocks import cell_centres, layer_gate, shot_routing


@dataclass
class Span:
    """A time-sorted run of tokens (video and plan) with what travels with them through the layers."""

    xv: torch.Tensor        # [B, Nv, D] video tokens
    rope_v: Rope
    tv: torch.Tensor        # [Nv] times in latent (patch) frames
    xs: torch.Tensor | None  # [B, Ns, D] plan tokens
    rope_s: Rope | None
    ts: torch.Tensor | None  # [Ns] times, clamped into the video

    def split(self, bound: float) -> tuple[Span, Span]:
        """The tokens before time ``bound`` and the rest."""
        nv = int((self.tv < bound).sum())
        ns = 0 if self.ts is None else int((self.ts < bound).sum())
        cut = lambda x, a, b, dim=1: None if x is None else x.narrow(dim, a, b - a)  # noqa: E731
        rope = lambda r, a, b: None if r is None else tuple(cut(c, a, b) for c in r)  # noqa: E731
        size_v, size_s = len(self.tv), 0 if self.ts is None else len(self.ts)
        return tuple(Span(cut(self.xv, a, b), rope(self.rope_v, a, b), cut(self.tv, a, b, 0),
                          cut(self.xs, c, d), rope(self.rope_s, c, d), cut(self.ts, c, d, 0))
                     for a, b, c, d in ((0, nv, 0, ns), (nv, size_v, ns, size_s)))

    @property
    def empty(self) -> bool:
        return len(self.tv) == 0 and (self.ts is None or len(self.ts) == 0)

    @staticmethod
    def cat(a: Span | None, b: Span) -> Span:
        if a is None:
            return b
        cat = lambda x, y, dim=1: None if x is None else torch.cat([x, y], dim)  # noqa: E731
        rope = lambda r, q: None if r is None else tuple(cat(c, d) for c, d in zip(r, q))  # noqa: E731
        return Span(cat(a.xv, b.xv), rope(a.rope_v, b.rope_v), cat(a.tv, b.tv, 0),
                    cat(a.xs, b.xs), rope(a.rope_s, b.rope_s), cat(a.ts, b.ts, 0))


def stream_forward(model, hidden_states: torch.Tensor, semantic_tokens: torch.Tensor | None, context: torch.Tensor,
                   temb: torch.Tensor, mod_v: torch.Tensor, mod_s: torch.Tensor | None, window: float,
                   chunk: int, shot_starts: Sequence[float] | None, offset: float = 0.0) -> torch.Tensor:
    """``LatentDiT``'s windowed forward, run as a pipeline over time; returns ``[B, C_out, T, H, W]``."""
    b, _, t, h, w = hidden_states.shape
    pt, ph, pw = model.config.patch_size
    grid = (t // pt, h // ph, w // pw)
    num_shots = 1 if context.ndim == 3 else context.shape[1]
    if semantic_tokens is not None:
        steps, hs, ws = semantic_tokens.shape[1:4]
        step_times = cell_centres(steps, grid[0]).clamp(0, grid[0] - 1)  # the clamp windows use
    out = hidden_states.new_empty(b, model.config.out_channels, t, h, w)
    pending: list[Span | None] = [None] * len(model.blocks)

    for start in range(0, grid[0], chunk):
        stop = min(start + chunk, grid[0])
        final = stop == grid[0]
        frames = torch.arange(start, stop, dtype=torch.float64)
        xv = model.patch_embedding(hidden_states[:, :, start * pt:stop * pt]).flatten(2).transpose(1, 2)
        rope_v = rope_to(model.grid_rope(*grid, grid, slice(start, stop)), xv.device)  # on the tokens' device
        new = Span(xv, rope_v, frames.repeat_interleave(grid[1] * grid[2]), None, None, None)
        if semantic_tokens is not None:  # the plan steps whose (clamped) time falls in this chunk
            first = int((step_times < start).sum())
            last = steps if final else int((step_times < stop).sum())
            new.xs = model.semantic_proj(semantic_tokens[:, first:last].to(xv.dtype).flatten(1, 3))
            new.rope_s = rope_to(model.grid_rope(steps, hs, ws, grid, slice(first, last)), xv.device)
            new.ts = step_times[first:last].repeat_interleave(hs * ws)

        frontier = math.inf if final else float(stop)  # every token before it has reached this layer
        for i, block in enumerate(model.blocks):
            span = Span.cat(pending[i], new)
            shift = window_start(window, bool(i % 2), offset)
            frontier = math.floor((frontier + shift) / window) * window - shift if not final else frontier
            new, pending[i] = span.split(frontier)
            if new.empty:
                break
            times = new.tv if new.ts is None else torch.cat([new.tv, new.ts])
            windows = time_windows(new.tv, new.ts, window, shifted=bool(i % 2), offset=offset)
            new.xv, new.xs = block(new.xv, new.xs, context, shot_routing(times, shot_starts, num_shots),
                                   mod_v, mod_s, new.rope_v, new.rope_s, windows, layer_gate(model.semantic_gate, i))
        else:
            if len(new.tv):
                f0, f1 = int(new.tv[0]), int(new.tv[-1]) + 1
                out[:, :, f0 * pt:f1 * pt] = model.head(new.xv, temb, (f1 - f0, grid[1], grid[2]))
    return out
