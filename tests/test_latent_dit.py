"""Stage 2: exact start from Wan, windowed attention, checkpoint layouts."""

import re

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformer3DModel
from safetensors.torch import save_file

from semanticgen_core.attention import rope_at, time_windows
from semanticgen_core.errors import CheckpointError, ShapeError
from semanticgen_core.latent_dit import LatentDiT

CFG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
           text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2)


def inputs(t=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, t, 8, 8, generator=g)
    return x, torch.tensor([500.0, 100.0]), torch.randn(2, 7, 16, generator=g), torch.randn(2, 3, 2, 2, 3, generator=g)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LatentDiT(**CFG, semantic_dim=3).eval()


@torch.no_grad()
def test_fresh_in_context_layers_return_base_wan_output(model):
    base = WanTransformer3DModel(**CFG).eval()
    missing, unexpected = base.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and sorted(unexpected) == ["semantic_gate", "semantic_proj.bias", "semantic_proj.weight"]
    x, t, text, sem = inputs()
    expected = base(x, t, text).sample
    assert torch.equal(model(x, t, text, semantic_tokens=sem).sample, expected)
    assert torch.equal(model(x, t, text).sample, expected)
    # Once the gate opens, the plan changes the output: the in-context path is live.
    model.semantic_gate.data.fill_(0.5)
    assert (model(x, t, text, semantic_tokens=sem).sample - expected).abs().max() > 1e-3


def test_rope_at_integer_positions_equals_wan_table():
    rope = WanRotaryPosEmbed(24, (1, 2, 2), 64)
    cos, sin = rope(torch.zeros(1, 4, 3, 8, 6))
    tt, hh, ww = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), torch.arange(3.0), indexing="ij")
    c, s = rope_at(rope, tt.flatten(), hh.flatten(), ww.flatten())
    torch.testing.assert_close(c.float(), cos.float())
    torch.testing.assert_close(s.float(), sin.float())


def test_windows_group_video_and_semantic_tokens_by_time():
    video = torch.arange(8.0).repeat_interleave(4)   # 8 latent frames x 4 tokens
    sem = torch.tensor([0.5, 2.5, 4.5, 6.5]).repeat_interleave(2)
    plain = time_windows(video, sem, 4, shifted=False)
    assert [(w.video.start, w.video.stop, w.semantic.start, w.semantic.stop) for w in plain] == \
        [(0, 16, 0, 4), (16, 32, 4, 8)]
    shifted = time_windows(video, sem, 4, shifted=True)   # windows start at -2: [-2,2) [2,6) [6,10)
    assert [(w.video.start, w.video.stop, w.semantic.start, w.semantic.stop) for w in shifted] == \
        [(0, 8, 0, 2), (8, 24, 2, 6), (24, 32, 6, 8)]
    moved = time_windows(video, sem, 4, shifted=False, offset=1)   # [-1,3) [3,7) [7,11)
    assert [(w.video.start, w.video.stop, w.semantic.start, w.semantic.stop) for w in moved] == \
        [(0, 12, 0, 4), (12, 28, 4, 8), (28, 32, 0, 0)]  # the last window has no plan step
    assert [(w.video.start, w.video.stop) for w in time_windows(video, sem, 4, True, offset=2)] == \
        [(w.video.start, w.video.stop) for w in plain]  # half a window more is the unshifted grid
    assert len(time_windows(video, sem, None, shifted=True)) == 1


@torch.no_grad()
def test_one_window_covering_everything_equals_full_attention(model):
    model.semantic_gate.data.fill_(0.7)
    x, t, text, sem = inputs(t=6)
    full = model(x, t, text, semantic_tokens=sem, window_frames=None).sample
    torch.testing.assert_close(model(x, t, text, semantic_tokens=sem, window_frames=64).sample, full)
    assert (model(x, t, text, semantic_tokens=sem, window_frames=2).sample - full).abs().max() > 1e-4


@torch.no_grad()
def test_small_windows_isolate_tokens_within_an_unshifted_layer():
    torch.manual_seed(1)
    model = LatentDiT(**{**CFG, "num_layers": 1}, semantic_dim=3).eval()  # one layer: layer 0 is unshifted
    model.semantic_gate.data.fill_(1.0)
    x, t, text, sem = inputs(t=8)
    out = model(x, t, text, semantic_tokens=sem, window_frames=4).sample
    # Change frames 4..7 and the last semantic step (centre 6.17 in latent frames): window 1 only.
    x2, sem2 = x.clone(), sem.clone()
    x2[:, :, 4:] += torch.randn_like(x2[:, :, 4:])
    sem2[:, 2] += 1.0
    out2 = model(x2, t, text, semantic_tokens=sem2, window_frames=4).sample
    assert torch.equal(out[:, :, :4], out2[:, :, :4])
    assert (out[:, :, 4:] - out2[:, :, 4:]).abs().max() > 1e-3
    # ...and the plan's first step only reaches the first window.
    sem3 = sem.clone()
    sem3[:, 0] += 1.0
    out3 = model(x, t, text, semantic_tokens=sem3, window_frames=4).sample
    assert torch.equal(out[:, :, 4:], out3[:, :, 4:])
    assert (out[:, :, :4] - out3[:, :, :4]).abs().max() > 1e-4


def test_wrong_plan_shape_is_named(model):
    x, t, text, sem = inputs()
    with pytest.raises(ShapeError, match=r"semantic_tokens must be \[B=2, T_s, h, w, 3\]"):
        model(x, t, text, semantic_tokens=sem[..., :2])


def to_original_wan_keys(state):
    """diffusers names -> the original Wan2.1 names ComfyUI users keep in models/diffusion_models."""
    rules = [(r"condition_embedder\.time_embedder\.linear_1", "time_embedding.0"),
             (r"condition_embedder\.time_embedder\.linear_2", "time_embedding.2"),
             (r"condition_embedder\.text_embedder\.linear_1", "text_embedding.0"),
             (r"condition_embedder\.text_embedder\.linear_2", "text_embedding.2"),
             (r"condition_embedder\.time_proj", "time_projection.1"),
             (r"\.attn1\.", ".self_attn."), (r"\.attn2\.", ".cross_attn."),
             (r"\.to_out\.0\.", ".o."), (r"\.to_q\.", ".q."), (r"\.to_k\.", ".k."), (r"\.to_v\.", ".v."),
             (r"\.norm2\.", ".norm3."), (r"\.ffn\.net\.0\.proj\.", ".ffn.0."), (r"\.ffn\.net\.2\.", ".ffn.2."),
             (r"^proj_out", "head.head"), (r"^scale_shift_table", "head.modulation"),
             (r"\.scale_shift_table$", ".modulation")]
    out = {}
    for k, v in state.items():
        for a, b in rules:
            k = re.sub(a, b, k)
        out["model.diffusion_model." + k] = v
    return out


@torch.no_grad()
def test_loads_wan_single_file_and_diffusers_folder_with_no_missing_keys(tmp_path):
    torch.manual_seed(2)
    base = WanTransformer3DModel(**{**CFG, "attention_head_dim": 128, "num_attention_heads": 1}).eval()
    state = base.state_dict()
    original = to_original_wan_keys(state)
    assert "model.diffusion_model.blocks.0.self_attn.q.weight" in original
    assert "model.diffusion_model.head.modulation" in original
    save_file({k: v.contiguous() for k, v in original.items()}, tmp_path / "wan.safetensors")
    base.save_pretrained(tmp_path / "repo" / "transformer")
    x = torch.randn(1, 4, 3, 8, 8)
    t, text = torch.tensor([300.0]), torch.randn(1, 5, 16)
    expected = base(x, t, text).sample
    for path in (tmp_path / "wan.safetensors", tmp_path / "repo"):
        model = LatentDiT.from_wan(path, semantic_dim=3).eval()
        assert model.config.num_layers == 2 and model.config.ffn_dim == 32
        out = model(x, t, text, semantic_tokens=torch.randn(1, 2, 2, 2, 3)).sample
        torch.testing.assert_close(out, expected)
        assert torch.equal(model.semantic_gate, torch.zeros_like(model.semantic_gate))
    with pytest.raises(ValueError, match="a stage 2 from Wan keeps the gated plan attention"):
        LatentDiT.from_wan(tmp_path / "wan.safetensors", semantic_dim=3, plan_attention="joint")

    del original["model.diffusion_model.blocks.1.cross_attn.k.weight"]
    save_file({k: v.contiguous() for k, v in original.items()}, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn2\.to_k\.weight"):
        LatentDiT.from_wan(tmp_path / "broken.safetensors")
    save_file({"something.weight": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="not a Wan2.1 DiT checkpoint"):
        LatentDiT.from_wan(tmp_path / "other.safetensors")


@torch.no_grad()
def test_stage2_per_shot_prompts_route_by_latent_time():
    torch.manual_seed(3)
    model = LatentDiT(**{**CFG, "num_layers": 1}, semantic_dim=3).eval()
    model.semantic_gate.data.fill_(1.0)
    x, t, _, sem = inputs(t=6)
    shots = torch.randn(2, 2, 7, 16)
    out = model(x, t, shots, semantic_tokens=sem, shot_starts=[0, 3]).sample
    changed = shots.clone()
    changed[:, 1] += 1.0
    out2 = model(x, t, changed, semantic_tokens=sem, shot_starts=[0, 3]).sample
    assert torch.equal(out[:, :, :3], out2[:, :, :3])
    assert (out[:, :, 3:] - out2[:, :, 3:]).abs().max() > 1e-4


@pytest.mark.parametrize("window, chunk, offset, attention", [(4, 4, 0, "gated"), (4, 3, 1, "gated"),
                                                               (2, 5, 0, "gated"), (3, 1, 2, "gated"),
                                                               (4, 100, 3, "gated"), (4, 3, 1, "joint")])
@torch.no_grad()
def test_streamed_windows_equal_one_pass(window, chunk, offset, attention):
    """Running the blocks as a pipeline over time (bounded memory) gives the one-pass output: every
    layer's windows, shifted or not, see exactly the tokens they see in one pass."""
    torch.manual_seed(4)
    model = LatentDiT(**{**CFG, "num_layers": 4}, semantic_dim=3, plan_attention=attention).eval()
    if attention == "gated":
        model.semantic_gate.data.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(5)
    x, t = torch.randn(2, 4, 13, 8, 8, generator=g), torch.tensor([500.0, 100.0])
    sem, shots = torch.randn(2, 7, 2, 2, 3, generator=g), torch.randn(2, 3, 7, 16, generator=g)
    args = dict(semantic_tokens=sem, window_frames=window, shot_starts=[0, 4.5, 9], window_offset=offset)
    one_pass = model(x, t, shots, **args).sample
    torch.testing.assert_close(model(x, t, shots, stream_frames=chunk, **args).sample, one_pass,
                               rtol=1e-5, atol=1e-5)
    # Without a plan, too; and a wrong window in the stream would show (the test can fail).
    plain = model(x, t, shots, window_frames=window, shot_starts=[0, 4.5, 9], window_offset=offset).sample
    torch.testing.assert_close(model(x, t, shots, window_frames=window, shot_starts=[0, 4.5, 9], window_offset=offset,
                                     stream_frames=chunk).sample, plain, rtol=1e-5, atol=1e-5)
    assert (model(x, t, shots, stream_frames=chunk, **{**args, "window_frames": window + 1}).sample
            - one_pass).abs().max() > 1e-4


@torch.no_grad()
def test_streamed_stage2_memory_does_not_grow_with_length():
    """Peak tensor memory of one stage-2 call beyond its output (which sampling must hold anyway): flat
    from 2x to 4x the length when streamed; the one-pass forward grows with the video (the check can fail)."""
    from semanticgen_core.memory import PeakTensorMemory

    torch.manual_seed(6)
    model = LatentDiT(**{**CFG, "num_layers": 4}, semantic_dim=3, window_frames=2).eval()

    def working_memory(frames: int, stream: int | None) -> int:
        x, t, text = torch.randn(2, 4, frames, 8, 8), torch.tensor([500.0, 100.0]), torch.randn(2, 7, 16)
        with PeakTensorMemory() as mem:
            out = model(x, t, text, semantic_tokens=torch.randn(2, frames, 2, 2, 3), stream_frames=stream).sample
        return mem.peak - out.nbytes

    streamed = [working_memory(n, stream=4) for n in (16, 32, 64)]
    one_pass = [working_memory(n, stream=None) for n in (16, 32, 64)]
    print("working bytes at 16/32/64 latent frames: streamed", streamed, "one pass", one_pass)
    assert max(streamed) <= 1.05 * min(streamed)
    assert one_pass[2] > 1.8 * one_pass[1] > 3.2 * one_pass[0]
