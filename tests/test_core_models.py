"""Compressor, stage 1, sampling, training objectives and presets."""

import pytest
import torch

from semanticgen_core.compressor import SemanticCompressor
from semanticgen_core.errors import Interrupted, SemanticGenError, ShapeError
from semanticgen_core.presets import TINY, WAN
from semanticgen_core.sampling import SamplingOptions, denoise, initial_noise
from semanticgen_core.semantic_dit import SemanticDiT
from semanticgen_core.training import SampleNoise, flow_matching_loss, stage1_loss, stage2_loss


def test_kl_is_zero_for_standard_normal_and_positive_otherwise():
    zeros = torch.zeros(3, 4, 8)
    assert SemanticCompressor.kl(zeros, zeros).item() == 0.0
    # KL(N(1, 1) || N(0, 1)) = 1/2 per channel -> 4 for 8 channels.
    assert SemanticCompressor.kl(torch.ones(3, 4, 8), zeros).item() == pytest.approx(4.0)
    assert SemanticCompressor.kl(zeros, torch.full((3, 4, 8), -1.0)).item() > 0


def test_compressor_shapes_sampling_and_bad_input():
    comp = SemanticCompressor(in_dim=32, out_dim=8, hidden_dim=16)
    mean, logvar = comp(torch.randn(2, 3, 4, 4, 32))
    assert mean.shape == logvar.shape == (2, 3, 4, 4, 8)
    g = torch.Generator().manual_seed(0)
    z = comp.sample(mean, torch.full_like(logvar, -60.0).clamp(-30), g)
    torch.testing.assert_close(z, mean, atol=1e-5, rtol=0)  # std ~ 3e-7: the sample is the mean
    with pytest.raises(ShapeError, match="expects features with 32 channels"):
        comp(torch.randn(2, 3, 16))


def exact_velocity(x0):
    """The true flow velocity toward a single point ``x0``: (x_t - x0) / t."""
    return lambda x, t, text: (x - x0) / (t.view(-1, *[1] * (x.ndim - 1)) / 1000)


@pytest.mark.parametrize("sampler", ["euler", "unipc"])
def test_samplers_integrate_the_flow_to_the_target(sampler):
    x0 = torch.tensor([[2.0, -1.0, 0.5]])
    opts = SamplingOptions(steps=12, sampler=sampler, guidance=1.0)
    out = denoise(exact_velocity(x0), initial_noise((1, 3), 7), torch.zeros(1, 1, 1), None, opts)
    torch.testing.assert_close(out, x0, atol=2e-3, rtol=0)


def test_guidance_extrapolates_conditional_from_unconditional():
    # Velocity pulls toward +1 with text 1 and toward -1 with text 0: guidance 2 lands at 2*1 - (-1) = 3.
    def velocity(x, t, text):
        target = 2 * text.view(-1, 1) - 1
        return (x - target) / (t.view(-1, 1) / 1000)
    opts = SamplingOptions(steps=20, guidance=2.0)
    out = denoise(velocity, initial_noise((1, 1), 0), torch.ones(1, 1, 1), torch.zeros(1, 1, 1), opts)
    assert out.item() == pytest.approx(3.0, abs=1e-2)


def test_seeded_noise_is_reproducible_and_seeds_differ():
    assert torch.equal(initial_noise((2, 5), 3), initial_noise((2, 5), 3))
    assert not torch.equal(initial_noise((2, 5), 3), initial_noise((2, 5), 4))


def test_progress_and_interrupt_between_steps():
    seen = []
    opts = SamplingOptions(steps=5, guidance=1.0)
    x0 = torch.zeros(1, 2)
    denoise(exact_velocity(x0), initial_noise((1, 2), 0), torch.zeros(1, 1, 1), None, opts,
            progress=lambda i, n, x: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]
    calls = []
    with pytest.raises(Interrupted, match="step 2 of 5"):
        denoise(exact_velocity(x0), initial_noise((1, 2), 0), torch.zeros(1, 1, 1), None, opts,
                should_stop=lambda: calls.append(1) or len(calls) > 2)
    with pytest.raises(SemanticGenError, match="unknown sampler 'ddim'"):
        SamplingOptions(sampler="ddim")


def test_flow_matching_loss_is_zero_for_the_exact_velocity():
    x0 = torch.randn(4, 3)
    g = SampleNoise.seeded(0, 4)

    # With x_t = (1-t) x0 + t eps, the velocity eps - x0 = (x_t - x0) / t.
    def predict(x_t, timestep):
        return (x_t - x0) / (timestep.view(-1, 1) / 1000)
    assert flow_matching_loss(predict, x0, g).item() < 1e-8
    assert flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, g).item() > 0.5


def test_training_steps_reduce_both_losses_on_a_fixed_batch():
    torch.manual_seed(0)
    models = TINY.build()
    comp, s1, s2 = models["compressor"], models["stage1"], models["stage2"]
    latents, features = torch.randn(2, 16, 2, 4, 4), torch.randn(2, 1, 2, 2, 64)
    text, empty = torch.randn(2, 5, TINY.stage1["text_dim"]), torch.zeros(1, 5, TINY.stage1["text_dim"])
    opt = torch.optim.AdamW([*comp.parameters(), *s2.parameters(), *s1.parameters()], lr=3e-3)

    def losses():
        g = SampleNoise.seeded(123, 2)  # the same noise every time: a fixed objective
        a = stage2_loss(comp, s2, latents, features, text, empty, g, text_drop=0.0)
        z = comp.sample(*comp(features), torch.Generator().manual_seed(1)).detach()
        b = stage1_loss(s1, z, text, empty, g, text_drop=0.0)
        return a, b
    a0, b0 = losses()
    for _ in range(30):
        a, b = losses()
        opt.zero_grad()
        (a["loss"] + b["loss"]).backward()
        opt.step()
    a1, b1 = losses()
    assert a1["flow"] < 0.7 * a0["flow"] and b1["flow"] < 0.7 * b0["flow"]
    assert s2.semantic_gate.abs().sum() > 0  # the gate opened: stage 2 learned to use the plan


def test_stage1_velocity_checks_the_plan_layout():
    s1 = SemanticDiT(**TINY.stage1)
    v = s1.velocity(torch.randn(1, 2, 3, 3, 8), torch.tensor([10.0]), torch.randn(1, 4, TINY.stage1["text_dim"]))
    assert v.shape == (1, 2, 3, 3, 8)
    with pytest.raises(ShapeError, match=r"\[B, T_s, h, w, 8\]"):
        s1.velocity(torch.randn(1, 8, 2, 3, 3), torch.tensor([10.0]), torch.randn(1, 4, TINY.stage1["text_dim"]))


def test_real_scale_preset_matches_published_sizes():
    models = WAN.build("meta")
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    print({k: f"{v / 1e6:.1f}M" for k, v in counts.items()})
    new_layers = 8 * 1536 + 1536 + 30 * 12   # semantic projection + gate
    # Wan2.1-T2V-1.3B: 1.419B parameters (the "1.3B" model).
    assert counts["stage2"] - new_layers == pytest.approx(1.419e9, rel=0.005)
    assert counts["stage1"] == pytest.approx(1.419e9, rel=0.005)
    assert counts["compressor"] < 3e6   # "a small MLP"
    assert counts["encoder"] == pytest.approx(669e6, rel=0.01)  # Qwen2.5-VL-3B's vision tower


@torch.no_grad()
def test_stage1_with_one_prompt_is_wans_forward():
    from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
    torch.manual_seed(0)
    s1 = SemanticDiT(**TINY.stage1).eval()
    base = WanTransformer3DModel(**{k: v for k, v in s1.config.items() if not k.startswith("_")}).eval()
    base.load_state_dict(s1.state_dict())
    x, t, text = torch.randn(2, 8, 3, 4, 4), torch.tensor([900.0, 20.0]), torch.randn(2, 6, TINY.stage1["text_dim"])
    assert torch.equal(s1(x, t, text).sample, base(x, t, text).sample)


@torch.no_grad()
def test_per_shot_prompts_reach_only_their_own_span():
    torch.manual_seed(0)
    s1 = SemanticDiT(**{**TINY.stage1, "num_layers": 1}).eval()  # one layer: no mixing after cross-attention
    dim = TINY.stage1["text_dim"]
    x, t = torch.randn(1, 6, 4, 4, 8), torch.tensor([500.0])
    shots = torch.randn(1, 2, 5, dim)
    v = s1.velocity(x, t, shots, shot_starts=[0, 4])
    changed = shots.clone()
    changed[:, 1] = torch.randn(1, 5, dim)
    v2 = s1.velocity(x, t, changed, shot_starts=[0, 4])
    assert torch.equal(v[:, :4], v2[:, :4])                 # shot 1 (steps 0-3) keeps its prediction
    assert (v[:, 4:] - v2[:, 4:]).abs().max() > 1e-4         # shot 2 (steps 4-5) follows its prompt
    # Two shots with the same prompt are the single-prompt model.
    same = shots[:, :1].expand(1, 2, 5, dim)
    torch.testing.assert_close(s1.velocity(x, t, same, shot_starts=[0, 4]), s1.velocity(x, t, shots[:, 0]))
    with pytest.raises(ShapeError, match="give shot_starts with 2 start times"):
        s1.velocity(x, t, shots)


def test_sample_noise_depends_on_the_sample_and_the_draw_not_on_the_batch():
    keys = [(7, 3, i) for i in range(4)]
    whole = SampleNoise(keys)
    halves = [SampleNoise(keys[:2]), SampleNoise(keys[2:])]
    torch.testing.assert_close(whole.normal("eps", (3, 2)), torch.cat([h.normal("eps", (3, 2)) for h in halves]),
                               rtol=0, atol=0)
    assert not torch.equal(whole.normal("eps", (5,)), whole.normal("flow_t", (5,)))  # draws are independent
    assert not torch.equal(whole.normal("eps")[0], whole.normal("eps")[1])            # and so are samples
    assert whole.grouped(2).keys == [(7, 3, 0, 2), (7, 3, 2, 2)]
