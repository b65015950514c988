"""Rectified-flow sampling shared by both stages: Euler or UniPC through diffusers' schedulers.

The models predict the velocity ``v = eps - x0`` of ``x_t = (1 - t) x0 + t eps``; sampling integrates
from pure noise at t = 1 to data at t = 0. ``shift`` moves the schedule toward high noise (Wan's
``flow_shift``), classifier-free guidance mixes conditional and unconditional velocities, an optional
``steer`` adds a correction computed from the predicted clean sample and the noise level (stage 1's alignment
guidance, ``plan_alignment.py``), and the seed fixes the starting noise (drawn on the CPU so a seed gives the same
video on any device).

The sampling state is float32 whatever the model's dtype (as in diffusers' Wan pipeline, which keeps the
latents in float32 while the transformer runs in bf16): the noise, every scheduler step and the guidance
mix are float32, and only the model's input is cast to its dtype. A bf16 state would round the state to
8 bits of mantissa after each of the ~50 steps; late steps move it by less than half a bf16 ulp, so they
would be lost altogether.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from .errors import Interrupted, SemanticGenError
from .formats import SAMPLERS

Velocity = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, timestep [B], text) -> v


@dataclass
class SamplingOptions:
    steps: int = 20
    sampler: str = "euler"
    shift: float = 3.0
    guidance: float = 5.0
    seed: int = 0
    alignment: float | None = None  # stage 1's alignment guidance where an aligner is loaded; None: the model's
    alignment_stop: float | None = None  # the noise level below which it stops (0: every step); None: the model's

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise SemanticGenError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise SemanticGenError(f"steps must be at least 1, got {self.steps}")
        if self.alignment is not None and self.alignment < 0:
            raise SemanticGenError(f"alignment guidance must be at least 0 (0: off), got {self.alignment:g}")
        if self.alignment_stop is not None and not 0 <= self.alignment_stop <= 1:
            raise SemanticGenError("the noise level where alignment guidance stops must be in 0..1 (0: it acts on "
                                   f"every step), got {self.alignment_stop:g}")


def make_scheduler(opts: SamplingOptions):
    if opts.sampler == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=opts.shift)
    else:
        scheduler = UniPCMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction",
                                            use_flow_sigmas=True, flow_shift=opts.shift)
    scheduler.set_timesteps(opts.steps)
    return scheduler


def initial_noise(shape: tuple[int, ...], seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Seeded standard normal noise, drawn on the CPU for device-independent reproducibility.

    Keep the default float32 for a sampling state (``denoise`` works in float32 anyway)."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def denoise(velocity: Velocity, noise: torch.Tensor, text: torch.Tensor, uncond_text: torch.Tensor | None,
            opts: SamplingOptions, progress: Callable[[int, int, torch.Tensor], None] | None = None,
            should_stop: Callable[[], bool] | None = None,
            hold: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
            model_dtype: torch.dtype | None = None,
            steer: Callable[[torch.Tensor, float], torch.Tensor | None] | None = None) -> torch.Tensor:
    """Integrate the flow from ``noise`` to a float32 sample.

    ``text`` / ``uncond_text``: ``[B, L, D]`` conditional and unconditional (empty-prompt) embeddings;
    guidance is skipped when ``uncond_text`` is None or ``opts.guidance == 1``.
    ``model_dtype``: the dtype ``velocity`` is called with (``x`` only; the timestep stays float32);
    default ``text``'s dtype, which callers already cast to the model's. The state between steps, the
    scheduler's step and the guidance mix are float32 whatever it is.
    ``progress(step, total, x)`` is called after each step; ``should_stop()`` before each, raising
    ``Interrupted`` if it returns True. ``hold(x, sigma)`` may overwrite parts of ``x`` after each step
    (e.g. known plan regions re-noised to the current level) and returns the new ``x`` (kept float32).
    ``steer(x0, sigma)`` is added to the (guided) velocity each step, given the clean sample it predicts,
    ``x0 = x - sigma v``, and the step's noise level; None adds nothing.
    """
    scheduler = make_scheduler(opts)
    guided = uncond_text is not None and opts.guidance != 1.0
    model_dtype = model_dtype or text.dtype
    x = noise.to(torch.float32)
    total = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            raise Interrupted(f"sampling interrupted at step {i} of {total}")
        tb = t.expand(x.shape[0]).to(x.device)
        xm = x.to(model_dtype)
        if guided:
            v_cond, v_uncond = velocity(torch.cat([xm, xm]), torch.cat([tb, tb]),
                                        torch.cat([text, uncond_text])).float().chunk(2)
            v = v_uncond + opts.guidance * (v_cond - v_uncond)
        else:
            v = velocity(xm, tb, text).float()
        if steer is not None:
            sigma = float(scheduler.sigmas[i])
            correction = steer(x - sigma * v, sigma)
            if correction is not None:
                v = v + correction
        x = scheduler.step(v, t, x, return_dict=False)[0].to(torch.float32)
        if hold is not None:
            x = hold(x, float(scheduler.sigmas[i + 1])).to(torch.float32)
        if progress is not None:
            progress(i + 1, total, x)
    return x
