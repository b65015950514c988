"""Numerics at real scale: a float32 sampling state under a bf16 model, and diffusers' rotary API across versions."""

import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

from semanticgen_core.attention import rope_at
from semanticgen_core.sampling import SamplingOptions, denoise, initial_noise, make_scheduler


class Bf16Model:
    """A velocity model running in bfloat16: records the dtype of what it is handed, answers in bfloat16.

    Its answer is the straight path's velocity ``eps - x0`` (rounded to bf16), constant along the path, so
    any schedule integrates it exactly to ``eps - v``: what is left is the sampler's own rounding.
    """

    def __init__(self, eps: torch.Tensor, x0: torch.Tensor):
        self.v = (eps - x0).to(torch.bfloat16)
        self.seen: list[torch.dtype] = []

    def __call__(self, x, t, text):
        self.seen.append(x.dtype)
        return self.v.expand(x.shape[0], -1) + 0 * x.to(torch.bfloat16)


@pytest.mark.parametrize("sampler", ["euler", "unipc"])
def test_bf16_model_samples_in_float32(sampler):
    torch.manual_seed(0)
    x0 = torch.randn(1, 4096) * 0.5 + 3.0  # latents of magnitude ~3: a bf16 ulp there is 1/64
    eps = initial_noise((1, 4096), 0)
    model = Bf16Model(eps, x0)
    opts = SamplingOptions(steps=50, sampler=sampler, guidance=1.0, shift=5.0)
    states = []
    out = denoise(model, eps, torch.zeros(1, 1, 1, dtype=torch.bfloat16), None, opts,
                  progress=lambda i, n, x: states.append(x.dtype))
    assert set(model.seen) == {torch.bfloat16} and len(model.seen) == 50  # the model runs in its dtype
    assert set(states) == {torch.float32} and out.dtype == torch.float32  # the state does not
    # The float32 reference with the model's own bf16 velocity: eps - (sigma_first - sigma_last) v, up to
    # float32 rounding (UniPC's flow schedule starts a hair below 1, by how much depends on diffusers).
    scheduler = make_scheduler(opts)
    span = float(scheduler.sigmas[0]) - float(scheduler.sigmas[-1])
    reference = eps - span * model.v.float()
    torch.testing.assert_close(out, reference, atol=5e-5, rtol=0)
    # And the true target within the bf16 rounding of the velocity (|v| < 8: half an ulp <= 1/64), plus
    # the schedule's shortfall.
    assert (out - x0).abs().max() <= 2 ** -6 + (1 - span) * 8 + 1e-4
    # A bf16 state (the old behaviour) drifts: late steps move x by less than half a bf16 ulp and vanish.
    # Kept here as the measure of what the test guards against.
    x = eps.to(torch.bfloat16)
    for t in scheduler.timesteps:
        x = scheduler.step(model.v.float(), t, x.float(), return_dict=False)[0].to(torch.bfloat16)
    assert (x.float() - reference).abs().max() > 20 * (out - reference).abs().max() + 1e-2


def test_a_bf16_noise_start_is_still_sampled_in_float32():
    # A caller that still hands bf16 noise (a model-dtype start) gets a float32 state and result.
    eps, x0 = initial_noise((1, 256), 1), torch.full((1, 256), 2.0)
    model = Bf16Model(eps, x0)
    out = denoise(model, eps.to(torch.bfloat16), torch.zeros(1, 1, 1, dtype=torch.bfloat16), None,
                  SamplingOptions(steps=30, guidance=1.0))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, eps.to(torch.bfloat16).float() - model.v.float(), atol=5e-5, rtol=0)


def test_guidance_mixes_bf16_velocities_in_float32():
    # Guidance 5 amplifies cond - uncond; mixed in bf16, each of its operations rounds to 8 bits.
    g = torch.Generator().manual_seed(0)
    v_uncond = (3 * torch.randn(1, 64, generator=g)).to(torch.bfloat16)
    v_cond = (v_uncond.float() + 0.3 * torch.randn(1, 64, generator=g)).to(torch.bfloat16)
    seen = []

    def velocity(x, t, text):
        seen.append((x.dtype, text.dtype))
        return torch.where(text.view(-1, 1) > 0, v_cond, v_uncond) + 0 * x

    eps = initial_noise((1, 64), 2)
    opts = SamplingOptions(steps=10, guidance=5.0)
    text = torch.ones(1, 1, 1, dtype=torch.bfloat16)
    out = denoise(velocity, eps, text, torch.zeros_like(text), opts)
    assert set(seen) == {(torch.bfloat16, torch.bfloat16)} and out.dtype == torch.float32
    mixed = v_uncond.float() + 5.0 * (v_cond.float() - v_uncond.float())
    torch.testing.assert_close(out, eps - mixed, atol=2e-5, rtol=0)
    bf16_mix = (v_uncond + 5.0 * (v_cond - v_uncond)).float()
    assert (bf16_mix - mixed).abs().max() > 1e-3  # what a bf16 mix would have been off by


def test_hold_sees_and_keeps_a_float32_state():
    eps = initial_noise((1, 8), 3)
    model = Bf16Model(eps, torch.zeros(1, 8))
    held = []

    def hold(x, sigma):
        held.append(x.dtype)
        return x.to(torch.bfloat16)  # even a hold that answers in bf16 does not lower the state

    states = []
    out = denoise(model, eps, torch.zeros(1, 1, 1, dtype=torch.bfloat16), None, SamplingOptions(steps=4, guidance=1.0),
                  progress=lambda i, n, x: states.append(x.dtype), hold=hold)
    assert set(held) == set(states) == {torch.float32} and out.dtype == torch.float32


def test_model_dtype_can_be_named_apart_from_the_text():
    eps = initial_noise((1, 8), 4)
    model = Bf16Model(eps, torch.zeros(1, 8))
    denoise(model, eps, torch.zeros(1, 1, 1), None, SamplingOptions(steps=2, guidance=1.0), model_dtype=torch.bfloat16)
    assert set(model.seen) == {torch.bfloat16}


# --- rope_at across diffusers versions ------------------------------------------------------------------


class OldWanRope(torch.nn.Module):
    """diffusers < 0.36's WanRotaryPosEmbed as ``rope_at`` sees it: ``attention_head_dim``, no ``t_dim``."""

    def __init__(self, attention_head_dim: int):
        super().__init__()
        self.attention_head_dim = attention_head_dim


@pytest.mark.parametrize("head_dim", [12, 24, 64, 128])
def test_rope_at_without_axis_widths_matches_the_new_api(head_dim):
    new = WanRotaryPosEmbed(head_dim, (1, 2, 2), 64)
    old = OldWanRope(head_dim)
    assert not hasattr(old, "t_dim")
    t, h, w = torch.tensor([0.0, 1.0, 2.5, 7.0]), torch.tensor([0.0, 3.0, 1.5, 2.0]), torch.tensor([5.0, 0.0, 0.25, 1.0])
    for a, b in zip(rope_at(old, t, h, w), rope_at(new, t, h, w)):
        assert a.shape == (1, 4, 1, head_dim)
        assert torch.equal(a, b)
    if hasattr(new, "t_dim"):  # the derivation is the one diffusers >= 0.36 stores
        h_dim = 2 * (head_dim // 6)
        assert (new.t_dim, new.h_dim, new.w_dim) == (head_dim - 2 * h_dim, h_dim, h_dim)
