"""Training objectives for the two stages, as functions a trainer calls once per batch.

(a) compressor + stage 2: encoder features -> compressor -> ``z_sem`` (sampled, KL-regularised), noised
    for robustness to imperfect stage-1 plans (RAE-style augmentation), then the rectified-flow loss of
    the VAE latents given the plan and the text.
(b) stage 1: the rectified-flow loss of the frozen compressor's plans given the text.
(c) the single-stage baseline the claims are measured against: the same DiT as stage 2, trained on the
    same latents from the text alone, with full attention.
(d) the aligner of alignment guidance (``plan_alignment.py``): contrastive, prompts against the frozen
    compressor's plans and their time reversals.
The DiTs' objectives drop the text at a small rate so classifier-free guidance has an unconditional model to use.

Every random draw comes from ``SampleNoise``: each sample has its own key (the trainer uses run seed, step
and the sample's place in the global batch), so a sample is noised the same whichever rank or micro-batch
it lands in (a run on N processes gives a 1-process run's weights) and a resumed run draws exactly what
an uninterrupted one would have.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .compressor import SemanticCompressor
from .latent_dit import LatentDiT, noised_plan
from .plan_alignment import PlanTextAligner
from .semantic_dit import SemanticDiT


class SampleNoise:
    """Per-sample random draws: ``normal(what, shape)`` is ``[B, *shape]``, sample ``i`` drawn from a generator
    seeded by ``keys[i]`` and the name of the draw (so draws are independent of their order)."""

    def __init__(self, keys: Sequence[Sequence[int]], device: torch.device | str = "cpu"):
        self.keys, self.device = [tuple(int(k) for k in key) for key in keys], torch.device(device)

    @classmethod
    def seeded(cls, seed: int, n: int, device: torch.device | str = "cpu") -> "SampleNoise":
        """``n`` samples keyed by one seed (tests, one-off batches)."""
        return cls([(seed, i) for i in range(n)], device)

    def _generators(self, what: str) -> list[torch.Generator]:
        salt = zlib.crc32(what.encode())
        return [torch.Generator().manual_seed(int(np.random.SeedSequence([*key, salt]).generate_state(1, np.uint64)[0] >> 1))
                for key in self.keys]

    def normal(self, what: str, shape: Sequence[int] = ()) -> torch.Tensor:
        return torch.stack([torch.randn(tuple(shape), generator=g) for g in self._generators(what)]).to(self.device)

    def uniform(self, what: str, shape: Sequence[int] = ()) -> torch.Tensor:
        return torch.stack([torch.rand(tuple(shape), generator=g) for g in self._generators(what)]).to(self.device)

    def grouped(self, k: int) -> "SampleNoise":
        """One key per group of ``k`` consecutive samples (stage 1 strings ``k`` clips into one plan)."""
        return SampleNoise([(*self.keys[i], k) for i in range(0, len(self.keys) // k * k, k)], self.device)


def flow_matching_loss(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                       noise: SampleNoise, token_weight: torch.Tensor | None = None, shift: float = 1.0) -> torch.Tensor:
    """``|v(x_t, 1000 t) - (eps - x0)|^2`` with ``x_t = (1 - t) x0 + t eps`` (the paper's objective); ``t``
    from a logit-normal, which favours the middle of the path (SD3), moved toward noise by ``shift`` as
    sampling's schedule is (``shift t / (1 + (shift - 1) t)``: what decides where things are and how they move
    is made at high noise, where sampling with shift 3 spends most of its steps). ``token_weight`` (``x0``'s shape without
    the channels): each sample's error a weighted mean over its tokens instead of the plain one (per sample, so
    that the loss is the same however the batch is split over processes)."""
    t = torch.sigmoid(noise.normal("flow_t")).to(x0)
    t = shift * t / (1 + (shift - 1) * t)
    eps = noise.normal("flow_eps", x0.shape[1:]).to(x0)
    tt = t.view(-1, *([1] * (x0.ndim - 1)))
    x_t = (1 - tt) * x0 + tt * eps
    error = (predict(x_t, 1000 * t).float() - (eps - x0).float()).pow(2)
    if token_weight is None:
        return error.mean()
    return ((error.mean(1) * token_weight).flatten(1).sum(1) / token_weight.flatten(1).sum(1)).mean()


def drop_text(text: torch.Tensor, empty: torch.Tensor, p: float, noise: SampleNoise) -> torch.Tensor:
    """Replace each prompt (each sample's, or each shot's for ``[B, S, L, D]``) by the empty prompt with
    probability ``p``."""
    drop = (noise.uniform("text_drop", text.shape[1:-2]) < p)[..., None, None]
    return torch.where(drop, empty.to(text).expand_as(text), text)


def stage2_loss(compressor: SemanticCompressor, stage2: LatentDiT, latents: torch.Tensor, features: torch.Tensor,
                text: torch.Tensor, empty_text: torch.Tensor, noise: SampleNoise, *, kl_weight: float = 1e-4,
                plan_noise: float = 0.3, text_drop: float = 0.1, window_offset: float = 0.0,
                coverage: torch.Tensor | None = None, object_weight: float = 1.0,
                flow_shift: float = 1.0) -> dict[str, torch.Tensor]:
    """Objective (a). latents ``[B, 16, T, H, W]``; features ``[B, T_s, h, w, d]`` from the frozen encoder;
    ``window_offset``: where stage 2's window grid starts (the trainer draws it once a step, so that borders
    fall anywhere, as sampling moves them: ``attention.time_windows``). ``coverage`` ``[B, T, H, W]``: each
    latent token's share of object pixels, whose error weighs up to ``object_weight`` times a background
    token's (objects are a few percent of the tokens and most of what the plan says; the VAE's objects
    appeared only once its loss weighed their pixels up)."""
    mean, logvar = compressor(features)
    z_sem = compressor.sample(mean, logvar, eps=noise.normal("plan_sample", mean.shape[1:]).to(mean))
    a = plan_noise * noise.uniform("plan_noise_level").to(z_sem)
    z_aug, z_t = noised_plan(z_sem, a, noise.normal("plan_noise", z_sem.shape[1:]).to(z_sem))
    text = drop_text(text, empty_text, text_drop, noise)
    flow = flow_matching_loss(
        lambda x, t: stage2(x, t, text, semantic_tokens=z_aug, semantic_timestep=z_t,
                            window_offset=window_offset).sample,
        latents, noise, None if object_weight == 1 else 1 + (object_weight - 1) * coverage, shift=flow_shift)
    kl = compressor.kl(mean, logvar)
    return {"loss": flow + kl_weight * kl, "flow": flow.detach(), "kl": kl.detach()}


def stage1_loss(stage1: SemanticDiT, plan_tokens: torch.Tensor, text: torch.Tensor, empty_text: torch.Tensor,
                noise: SampleNoise, *, shot_starts: list[float] | None = None,
                text_drop: float = 0.1, flow_shift: float = 1.0) -> dict[str, torch.Tensor]:
    """Objective (b). plan_tokens ``[B, T_s, h, w, c]`` from the frozen compressor; text ``[B, L, D]``, or
    per shot ``[B, S, L, D]`` with ``shot_starts`` (as ``SemanticDiT.velocity`` takes them)."""
    text = drop_text(text, empty_text, text_drop, noise)
    flow = flow_matching_loss(lambda x, t: stage1.velocity(x, t, text, shot_starts), plan_tokens, noise,
                              shift=flow_shift)
    return {"loss": flow, "flow": flow.detach()}


def baseline_loss(model: LatentDiT, latents: torch.Tensor, text: torch.Tensor, empty_text: torch.Tensor,
                  noise: SampleNoise, *, text_drop: float = 0.1, flow_shift: float = 1.0) -> dict[str, torch.Tensor]:
    """Objective (c). latents ``[B, 16, T, H, W]``; no plan, one window over the whole clip."""
    text = drop_text(text, empty_text, text_drop, noise)
    flow = flow_matching_loss(lambda x, t: model(x, t, text, window_frames=None).sample, latents, noise,
                              shift=flow_shift)
    return {"loss": flow, "flow": flow.detach()}


def alignment_loss(aligner: PlanTextAligner, plans: torch.Tensor, text: torch.Tensor, group: int) -> dict[str, torch.Tensor]:
    """Objective (d), symmetric InfoNCE within each group of ``group`` consecutive samples (the trainer keeps a
    group on one process, so the loss is the same on any number of them). plans ``[B, T, h, w, c]``, text
    ``[B, L, D]``. A prompt is told its plan apart from the group's other plans and from every plan of the
    group played backwards: time reversal keeps what is in the plan and reverses how it moves, which is the
    part of a prompt that flow matching leaves stage 1 slow to learn."""
    b = plans.shape[0] // group * group
    plans, text = plans[:b].unflatten(0, (-1, group)), text[:b].unflatten(0, (-1, group))
    t = aligner.text_embedding(text.flatten(0, 1)).unflatten(0, (-1, group))
    p = aligner.plan_embedding(torch.cat([plans, plans.flip(2)], 1).flatten(0, 1)).unflatten(0, (-1, 2 * group))
    logits = t @ p.transpose(1, 2) / aligner.config.temperature  # [G, group, 2 group]: own plans, then reversed
    target = torch.arange(group, device=logits.device).expand(len(logits), -1)
    text_to_plan = F.cross_entropy(logits.flatten(0, 1), target.flatten())
    plan_to_text = F.cross_entropy(logits[:, :, :group].transpose(1, 2).flatten(0, 1), target.flatten())
    loss = (text_to_plan + plan_to_text) / 2
    with torch.no_grad():
        own = logits.diagonal(dim1=1, dim2=2)
        reversed_ = logits[:, :, group:].diagonal(dim1=1, dim2=2)
        order = (own > reversed_).float().mean()
    return {"loss": loss, "order": order}
