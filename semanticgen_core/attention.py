"""Attention over ``[video tokens ; semantic tokens]``: rotary positions, time windows, the semantic gate.

Stage 2 puts the plan's semantic tokens in the same sequence as the video tokens (the paper's in-context
conditioning). Two things are added on top of Wan's self-attention:

* **Windows in time** (the paper's Swin-style attention for long videos). Every token has a time
  coordinate in latent frames; a window of ``T_w`` latent frames holds the video tokens of those frames
  *and* the semantic tokens that fall inside them, so each window carries its own part of the plan.
  Odd layers shift the window grid by ``T_w / 2`` so information crosses window borders. Windows do not
  wrap around: a long video is not periodic. One window covering everything is full attention. The
  whole grid can also be offset: training draws the offset at random and sampling moves it each step,
  so borders never sit at the same frames for long enough to leave a seam.
* **A gate on the video <- semantic path.** Each query attends to the video keys and, through a separate
  softmax, to the semantic keys of its window; the second result is scaled by a per-layer, per-head gate
  initialised at zero (IP-Adapter style decoupling). With the gate at zero the model is exactly the
  pretrained Wan DiT, so fine-tuning starts from the base model's output instead of a perturbed one;
  the gate opens as training finds the plan useful.
  A stage 2 trained from scratch (the embedded default) has no base model to start from exactly, and may
  instead attend jointly: one softmax over the window's video and semantic keys (no gate), as the
  paper's in-context conditioning reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin: [1, N, 1, head_dim], Wan's layout


def rope_at(rope: WanRotaryPosEmbed, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> Rope:
    """Wan's 3-axis rotary embedding at arbitrary (also fractional) token positions ``[N]`` each.

    Equal to ``WanRotaryPosEmbed`` at integer grid positions, but with no table to run past, and able
    to place semantic tokens between video tokens (a semantic cell spans several latent pixels).
    diffusers stores the three axes' widths on the module only from 0.36 (``t_dim``, ``h_dim``, ``w_dim``);
    before, they are derived from ``attention_head_dim`` exactly as its ``__init__`` does.
    """
    if hasattr(rope, "t_dim"):
        dims = (rope.t_dim, rope.h_dim, rope.w_dim)
    else:  # diffusers < 0.36: WanRotaryPosEmbed.__init__ splits the head the same way but keeps only the table
        h_dim = w_dim = 2 * (rope.attention_head_dim // 6)
        dims = (rope.attention_head_dim - h_dim - w_dim, h_dim, w_dim)
    cos, sin = [], []
    for pos, dim in zip((t, h, w), dims):
        c, s = get_1d_rotary_pos_embed(dim, pos.double(), use_real=True, repeat_interleave_real=True,
                                       freqs_dtype=torch.float64)
        cos.append(c)
        sin.append(s)
    return torch.cat(cos, -1)[None, :, None], torch.cat(sin, -1)[None, :, None]


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate ``x`` ``[B, N, heads, head_dim]`` in interleaved pairs, exactly as Wan's processor does."""
    cos, sin = rope
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2].to(x.device), sin[..., 1::2].to(x.device)
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def rope_to(rope: Rope | None, device: torch.device) -> Rope | None:
    """The rotary tables on ``device`` (same dtype). Built on the CPU; moved once per forward, not once
    per layer (``apply_rope`` would otherwise copy them to the GPU in every layer, for q and for k)."""
    if rope is None:
        return None
    return tuple(r.to(device, non_blocking=True) for r in rope)


@dataclass(frozen=True)
class Window:
    """Contiguous index ranges of the video and semantic tokens that attend to each other."""

    video: slice
    semantic: slice


def time_windows(video_times: torch.Tensor, semantic_times: torch.Tensor | None, window: float | None,
                 shifted: bool, offset: float = 0.0) -> list[Window]:
    """Split tokens into attention windows by their time coordinate (latent frames).

    Both token sets are sorted by time (Wan flattens video as t, h, w; plans likewise), so every window
    is one slice of each. ``window=None`` gives a single window: full attention. Window ``k`` covers
    ``[k W - s, (k + 1) W - s)`` with ``s = offset`` (+ ``W / 2`` when shifted): training draws the offset
    at random and sampling moves it every step, so no frame is always at a border.
    """
    n_sem = 0 if semantic_times is None else len(semantic_times)
    if window is None:
        return [Window(slice(0, len(video_times)), slice(0, n_sem))]
    start = window_start(window, shifted, offset)
    last = float(video_times.max())

    def ids(times: torch.Tensor) -> torch.Tensor:
        return torch.floor((times.clamp(0, last) + start) / window).long()

    vid = ids(video_times)
    sid = ids(semantic_times) if n_sem else vid.new_zeros(0)
    windows = []
    for w in torch.unique(torch.cat([vid, sid])).tolist():
        v = (vid == w).nonzero().flatten()
        s = (sid == w).nonzero().flatten()
        windows.append(Window(_as_slice(v), _as_slice(s)))
    return windows


def window_start(window: float, shifted: bool, offset: float) -> float:
    """How far before time 0 the window grid starts (``time_windows``)."""
    return (offset + (window / 2 if shifted else 0.0)) % window


def _as_slice(idx: torch.Tensor) -> slice:
    if len(idx) == 0:
        return slice(0, 0)
    start, stop = int(idx[0]), int(idx[-1]) + 1
    if stop - start != len(idx):
        raise ValueError("tokens must be sorted by time for windowed attention")
    return slice(start, stop)


def window_groups(windows: list[Window]) -> list[list[Window]]:
    """Windows grouped by size (video and semantic token counts), in order of first appearance.

    Windows of one group run as one attention call with the windows stacked on the batch dimension: a
    long video has a few window sizes (the interior ones and the ends), so a layer makes a few calls
    instead of one per window, and each call is big enough to keep a GPU's attention kernels busy.
    """
    groups: dict[tuple[int, int], list[Window]] = {}
    for win in windows:
        size = (win.video.stop - win.video.start, win.semantic.stop - win.semantic.start)
        groups.setdefault(size, []).append(win)
    return list(groups.values())


def _stacked(x: torch.Tensor, spans: list[slice]) -> torch.Tensor:
    """``x`` ``[B, heads, N, d]`` -> the equal-length ``spans`` of its tokens stacked on the batch
    dimension, window-major: ``[len(spans) * B, heads, n, d]`` (a view when there is one span)."""
    if len(spans) == 1:
        return x[:, :, spans[0]]
    return torch.cat([x[:, :, s] for s in spans], 0)


def _scatter(out: torch.Tensor, spans: list[slice], y: torch.Tensor) -> None:
    """Inverse of ``_stacked``: write ``y`` ``[len(spans) * B, heads, n, d]`` into ``out``'s spans."""
    for s, part in zip(spans, y.chunk(len(spans), 0)):
        out[:, :, s] = part


def windowed_self_attention(attn, xv: torch.Tensor, xs: torch.Tensor | None, rope_v: Rope, rope_s: Rope | None,
                            windows: list[Window], gate: torch.Tensor | None):
    """Self-attention of a Wan ``attn1`` over video tokens ``xv`` and semantic tokens ``xs``.

    Per window, the video queries and the window's semantic queries attend to the window's video keys
    (softmax 1) plus ``gate`` times their attention to the window's semantic keys (softmax 2). Windows of
    equal size run together (``window_groups``), each group as one ``scaled_dot_product_attention`` call
    per softmax, with no mask, so on a GPU in bf16/fp16 it takes the flash / memory-efficient kernels.
    Full attention (one window over everything) uses the tensors as they are, without copies.

    Returns the attention outputs for both (the semantic side as given when it has no tokens).
    ``gate`` is ``[heads]``: the weight of the semantic softmax branch; None attends jointly (one softmax
    over the video and semantic keys).
    """

    def qkv(x, rope):
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (y.unflatten(2, (attn.heads, -1)) for y in (q, k, v))
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        return (y.transpose(1, 2) for y in (q, k, v))  # [B, heads, N, d]

    qv, kv, vv = qkv(xv, rope_v)
    has_sem = xs is not None and xs.shape[1] > 0
    if has_sem:
        qs, ks, vs = qkv(xs, rope_s)
        g = gate.to(qv.dtype).view(1, -1, 1, 1) if gate is not None else None
    n_video, n_sem = qv.shape[2], (qs.shape[2] if has_sem else 0)

    def attend(q, k_v, v_v, k_s, v_s):
        if k_s is None:
            return F.scaled_dot_product_attention(q, k_v, v_v)
        if g is None:
            return F.scaled_dot_product_attention(q, torch.cat([k_v, k_s], 2), torch.cat([v_v, v_s], 2))
        return F.scaled_dot_product_attention(q, k_v, v_v) + g * F.scaled_dot_product_attention(q, k_s, v_s)

    if len(windows) == 1 and windows[0].video == slice(0, n_video) and \
            (windows[0].semantic.stop - windows[0].semantic.start) == n_sem:  # full attention: no copies
        q = torch.cat([qv, qs], 2) if has_sem else qv
        out = attend(q, kv, vv, *((ks, vs) if has_sem else (None, None)))
        ov, os_ = (out[:, :, :n_video], out[:, :, n_video:]) if has_sem else (out, None)
    else:
        ov, os_ = torch.empty_like(qv), (torch.empty_like(qs) if has_sem else None)
        for group in window_groups(windows):
            vid, sem = [w.video for w in group], [w.semantic for w in group]
            n_v, n_s = vid[0].stop - vid[0].start, (sem[0].stop - sem[0].start) if has_sem else 0
            q = _stacked(qv, vid)
            if n_s:
                q = torch.cat([q, _stacked(qs, sem)], 2)
            out = attend(q, _stacked(kv, vid), _stacked(vv, vid),
                         *((_stacked(ks, sem), _stacked(vs, sem)) if n_s else (None, None)))
            if n_v:
                _scatter(ov, vid, out[:, :, :n_v])
            if n_s:
                _scatter(os_, sem, out[:, :, n_v:])

    def project(o):
        return attn.to_out[1](attn.to_out[0](o.transpose(1, 2).flatten(2)))

    return project(ov), (project(os_) if has_sem else xs)  # xs: None, or no tokens in this part of a video
