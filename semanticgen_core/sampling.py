"""Rectified-flow sampling shared by both stages: Euler or UniPC through diffusers' schedulers.

The models predict the velocity ``v = eps - x0`` of ``x_t = (1 - t) x0 + t eps``; sampling integrates
from pure noise at t = 1 to data at t = 0. ``shift`` moves the schedule toward high noise (Wan's
``flow_shift``), classifier-free guidance mixes conditional and unconditional velocities, and the seed
fixes the starting noise (drawn on the CPU so a seed gives the same video on any device).
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

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise SemanticGenError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise SemanticGenError(f"steps must be at least 1, got {self.steps}")


def make_scheduler(opts: SamplingOptions):
    if opts.sampler == "euler":
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=opts.shift)
    else:
        scheduler = UniPCMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction",
                                            use_flow_sigmas=True, flow_shift=opts.shift)
    scheduler.set_timesteps(opts.steps)
    return scheduler


def initial_noise(shape: tuple[int, ...], seed: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Seeded standard normal noise, drawn on the CPU for device-independent reproducibility."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def denoise(velocity: Velocity, noise: torch.Tensor, text: torch.Tensor, uncond_text: torch.Tensor | None,
            opts: SamplingOptions, progress: Callable[[int, int, torch.Tensor], None] | None = None,
            should_stop: Callable[[], bool] | None = None,
            hold: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> torch.Tensor:
    """Integrate the flow from ``noise`` to a sample.

    ``text`` / ``uncond_text``: ``[B, L, D]`` conditional and unconditional (empty-prompt) embeddings;
    guidance is skipped when ``uncond_text`` is None or ``opts.guidance == 1``.
    ``progress(step, total, x)`` is called after each step; ``should_stop()`` before each, raising
    ``Interrupted`` if it returns True. ``hold(x, sigma)`` may overwrite parts of ``x`` after each step
    (e.g. known plan regions re-noised to the current level) and returns the new ``x``.
    """
    scheduler = make_scheduler(opts)
    guided = uncond_text is not None and opts.guidance != 1.0
    x = noise
    total = len(scheduler.timesteps)
    for i, t in enumerate(scheduler.timesteps):
        if should_stop is not None and should_stop():
            raise Interrupted(f"sampling interrupted at step {i} of {total}")
        tb = t.expand(x.shape[0]).to(x.device)
        if guided:
            v_cond, v_uncond = velocity(torch.cat([x, x]), torch.cat([tb, tb]),
                                        torch.cat([text, uncond_text])).chunk(2)
            v = v_uncond + opts.guidance * (v_cond - v_uncond)
        else:
            v = velocity(x, tb, text)
        x = scheduler.step(v.to(torch.float32), t, x.to(torch.float32), return_dict=False)[0].to(noise.dtype)
        if hold is not None:
            x = hold(x, float(scheduler.sigmas[i + 1]))
        if progress is not None:
            progress(i + 1, total, x)
    return x
