"""Batched windowed attention (windows of equal size in one SDPA call) equals the per-window loop."""

import pytest
import torch
import torch.nn.functional as F

from semanticgen_core import attention, wan_blocks
from semanticgen_core.attention import apply_rope, time_windows, window_groups, windowed_self_attention
from semanticgen_core.latent_dit import LatentDiT
from semanticgen_core.wan_blocks import cell_centres

CFG = dict(patch_size=(1, 2, 2), num_attention_heads=3, attention_head_dim=8, in_channels=4, out_channels=4,
           text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2, semantic_dim=3)


def reference_windowed_self_attention(attn, xv, xs, rope_v, rope_s, windows, gate):
    """The implementation before windows were batched: one pair of SDPA calls per window, in a loop (one call
    over the window's video and plan keys together when ``gate`` is None: joint attention)."""

    def qkv(x, rope):
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (y.unflatten(2, (attn.heads, -1)) for y in (q, k, v))
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        return (y.transpose(1, 2) for y in (q, k, v))

    qv, kv, vv = qkv(xv, rope_v)
    has_sem = xs is not None and xs.shape[1] > 0
    if has_sem:
        qs, ks, vs = qkv(xs, rope_s)
    ov, os_ = torch.empty_like(qv), (torch.empty_like(qs) if has_sem else None)
    for win in windows:
        v, s = win.video, win.semantic
        q = torch.cat([qv[:, :, v], qs[:, :, s]], 2) if has_sem else qv[:, :, v]
        if has_sem and gate is None:
            out = F.scaled_dot_product_attention(q, torch.cat([kv[:, :, v], ks[:, :, s]], 2),
                                                 torch.cat([vv[:, :, v], vs[:, :, s]], 2))
        else:
            out = F.scaled_dot_product_attention(q, kv[:, :, v], vv[:, :, v])
        if has_sem and gate is not None and s.stop > s.start:
            g = gate.to(qv.dtype).view(1, -1, 1, 1)
            out = out + g * F.scaled_dot_product_attention(q, ks[:, :, s], vs[:, :, s])
        n_v = v.stop - v.start
        ov[:, :, v] = out[:, :, :n_v]
        if has_sem:
            os_[:, :, s] = out[:, :, n_v:]

    def project(o):
        return attn.to_out[1](attn.to_out[0](o.transpose(1, 2).flatten(2)))

    return project(ov), (project(os_) if has_sem else xs)


def layout(frames=11, per_frame=4, steps=4, per_step=2, dtype=torch.float64, seed=0):
    """A model's first attention and tokens of a ``frames``-frame video with a ``steps``-step plan."""
    torch.manual_seed(seed)
    model = LatentDiT(**CFG).eval().to(dtype)
    d = CFG["num_attention_heads"] * CFG["attention_head_dim"]
    g = torch.Generator().manual_seed(seed)
    xv = torch.randn(2, frames * per_frame, d, generator=g, dtype=dtype)
    xs = torch.randn(2, steps * per_step, d, generator=g, dtype=dtype) if steps else None
    tv = torch.arange(frames, dtype=torch.float64).repeat_interleave(per_frame)
    ts = cell_centres(steps, frames).clamp(0, frames - 1).repeat_interleave(per_step) if steps else None
    rope_v = model.grid_rope(frames, 2, per_frame // 2, (frames, 2, per_frame // 2))
    rope_s = model.grid_rope(steps, 1, per_step, (frames, 2, per_frame // 2)) if steps else None
    gate = torch.randn(CFG["num_attention_heads"], generator=g, dtype=dtype)  # an open gate: both branches count
    return model.blocks[0].attn1, xv, xs, tv, ts, rope_v, rope_s, gate


CASES = [  # (window, shifted, offset, plan steps)
    (4, False, 0.0, 4),    # 11 frames in windows of 4: sizes 4, 4, 3
    (4, True, 0.0, 4),     # shifted: 2, 4, 4, 1 frames
    (4, True, 1.0, 4),     # moved grid
    (3, False, 2.0, 4),    # uneven with an offset
    (2, False, 0.0, 3),    # more windows than plan steps: some windows have no plan tokens
    (2, True, 0.5, 2),
    (None, False, 0.0, 4),  # full attention (one window, the fast path)
    (4, False, 0.0, 0),    # no plan
    (None, False, 0.0, 0),  # plain Wan
    (100, True, 0.0, 4),   # one window covering everything but laid out by the grid
]


@pytest.mark.parametrize("window, shifted, offset, steps", CASES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("joint", [False, True])
@torch.no_grad()
def test_batched_windows_equal_the_loop(window, shifted, offset, steps, dtype, tol, joint):
    attn, xv, xs, tv, ts, rope_v, rope_s, gate = layout(steps=steps, dtype=dtype)
    gate = None if joint else gate
    windows = time_windows(tv, ts, window, shifted, offset)
    if window == 2 and steps == 3:
        assert any(w.semantic.stop == w.semantic.start for w in windows)  # the case is what it claims
    got = windowed_self_attention(attn, xv, xs, rope_v, rope_s, windows, gate)
    want = reference_windowed_self_attention(attn, xv, xs, rope_v, rope_s, windows, gate)
    torch.testing.assert_close(got[0], want[0], rtol=tol, atol=tol)
    if xs is None:
        assert got[1] is None
    else:
        torch.testing.assert_close(got[1], want[1], rtol=tol, atol=tol)


@torch.no_grad()
def test_plan_part_without_tokens_is_returned_as_given():
    """A streamed span can hold no plan tokens: ``xs`` of length 0 passes through."""
    attn, xv, _, tv, _, rope_v, _, gate = layout(steps=0)
    empty = xv.new_zeros(2, 0, xv.shape[-1])
    windows = time_windows(tv, None, 4, True)
    got = windowed_self_attention(attn, xv, empty, rope_v, None, windows, gate)
    want = reference_windowed_self_attention(attn, xv, empty, rope_v, None, windows, gate)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    assert got[1] is empty


def test_windows_of_a_long_video_run_in_a_few_calls(monkeypatch):
    """40 frames in shifted windows of 4 (2 frames at each end, 9 whole windows between) make 2 size
    groups, so 2 x 2 SDPA calls, not 2 per window; each call holds its windows stacked on the batch."""
    attn, xv, xs, tv, ts, rope_v, rope_s, gate = layout(frames=40, steps=20, dtype=torch.float32)
    windows = time_windows(tv, ts, 4, shifted=True)
    assert len(windows) == 11 and len(window_groups(windows)) == 2
    calls = []
    sdpa = F.scaled_dot_product_attention

    def counting(q, k, v, *args, **kwargs):
        calls.append(q.shape[0])
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    with torch.no_grad():
        windowed_self_attention(attn, xv, xs, rope_v, rope_s, windows, gate)
    assert len(calls) == 4
    assert sorted(calls) == [2 * 2, 2 * 2, 9 * 2, 9 * 2]  # windows x batch 2


@pytest.mark.parametrize("stream", [None, 3])
@torch.no_grad()
def test_stage2_with_batched_windows_equals_the_loop(monkeypatch, stream):
    """The whole stage-2 forward (one pass and streamed), with shots, a moved grid and an open gate."""
    torch.manual_seed(0)
    model = LatentDiT(**CFG, window_frames=2).eval().double()
    with torch.no_grad():
        model.semantic_gate.normal_()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 9, 8, 8, generator=g, dtype=torch.float64)
    t, text = torch.tensor([500.0, 100.0]), torch.randn(2, 3, 7, 16, generator=g, dtype=torch.float64)
    sem = torch.randn(2, 5, 2, 2, 3, generator=g, dtype=torch.float64)
    args = dict(semantic_tokens=sem, shot_starts=[0, 3.5, 6], window_offset=1.0, stream_frames=stream)
    got = model(x, t, text, **args).sample
    monkeypatch.setattr(wan_blocks, "windowed_self_attention", reference_windowed_self_attention)
    want = model(x, t, text, **args).sample
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_rope_moves_once_per_forward_not_per_layer(monkeypatch):
    """The rotary tables reach the blocks on the tokens' device (a no-op here; on a GPU it saves copying
    them to the device in every layer)."""
    seen = []
    original = attention.apply_rope

    def spy(x, rope):
        seen.append(rope[0].device == x.device)
        return original(x, rope)

    monkeypatch.setattr(attention, "apply_rope", spy)
    torch.manual_seed(0)
    model = LatentDiT(**CFG, window_frames=2).eval()
    with torch.no_grad():
        model(torch.randn(1, 4, 5, 8, 8), torch.tensor([500.0]), torch.randn(1, 7, 16),
              semantic_tokens=torch.randn(1, 3, 2, 2, 3))
    assert seen and all(seen)
