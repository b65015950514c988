"""Training objectives for the two stages, as functions a trainer calls once per batch.

(a) compressor + stage 2: encoder features -> compressor -> ``z_sem`` (sampled, KL-regularised), noised
    for robustness to imperfect stage-1 plans (RAE-style augmentation), then the rectified-flow loss of
    the VAE latents given the plan and the text.
(b) stage 1: the rectified-flow loss of the frozen compressor's plans given the text.
(c) the single-stage baseline the claims are measured against: the same DiT as stage 2, trained on the
    same latents from the text alone, with full attention.
All drop the text at a small rate so classifier-free guidance has an unconditional model to use.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .compressor import SemanticCompressor
from .latent_dit import LatentDiT
from .semantic_dit import SemanticDiT


def flow_times(n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Noise levels in (0, 1) from a logit-normal, which favours the middle of the path (SD3)."""
    return torch.sigmoid(torch.randn(n, generator=generator)).to(device)


def flow_matching_loss(predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``|v(x_t, 1000 t) - (eps - x0)|^2`` with ``x_t = (1 - t) x0 + t eps`` (the paper's objective)."""
    t = flow_times(x0.shape[0], generator, x0.device)
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    tt = t.view(-1, *([1] * (x0.ndim - 1)))
    x_t = (1 - tt) * x0 + tt * eps
    return F.mse_loss(predict(x_t, 1000 * t).float(), (eps - x0).float())


def drop_text(text: torch.Tensor, empty: torch.Tensor, p: float, generator: torch.Generator | None = None):
    """Replace each prompt (each sample's, or each shot's for ``[B, S, L, D]``) by the empty prompt with
    probability ``p``."""
    drop = (torch.rand(text.shape[:-2], generator=generator) < p).to(text.device)[..., None, None]
    return torch.where(drop, empty.expand_as(text), text)


def stage2_loss(compressor: SemanticCompressor, stage2: LatentDiT, latents: torch.Tensor, features: torch.Tensor,
                text: torch.Tensor, empty_text: torch.Tensor, *, kl_weight: float = 1e-4, plan_noise: float = 0.3,
                text_drop: float = 0.1, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Objective (a). latents ``[B, 16, T, H, W]``; features ``[B, T_s, h, w, d]`` from the frozen encoder."""
    mean, logvar = compressor(features)
    z_sem = compressor.sample(mean, logvar, generator)
    a = plan_noise * torch.rand(z_sem.shape[0], generator=generator).to(z_sem.device)
    aa = a.view(-1, 1, 1, 1, 1)
    z_aug = (1 - aa) * z_sem + aa * torch.randn(z_sem.shape, generator=generator).to(z_sem)
    text = drop_text(text, empty_text, text_drop, generator)
    window = stage2.config.window_frames  # borders anywhere, as sampling moves them (attention.time_windows)
    offset = float(torch.randint(int(window), (1,), generator=generator)) if window else 0.0
    flow = flow_matching_loss(
        lambda x, t: stage2(x, t, text, semantic_tokens=z_aug, semantic_timestep=1000 * a,
                            window_offset=offset).sample,
        latents, generator)
    kl = compressor.kl(mean, logvar)
    return {"loss": flow + kl_weight * kl, "flow": flow.detach(), "kl": kl.detach()}


def stage1_loss(stage1: SemanticDiT, plan_tokens: torch.Tensor, text: torch.Tensor, empty_text: torch.Tensor, *,
                shot_starts: list[float] | None = None, text_drop: float = 0.1,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Objective (b). plan_tokens ``[B, T_s, h, w, c]`` from the frozen compressor; text ``[B, L, D]``, or
    per shot ``[B, S, L, D]`` with ``shot_starts`` (as ``SemanticDiT.velocity`` takes them)."""
    text = drop_text(text, empty_text, text_drop, generator)
    flow = flow_matching_loss(lambda x, t: stage1.velocity(x, t, text, shot_starts), plan_tokens, generator)
    return {"loss": flow, "flow": flow.detach()}


def baseline_loss(model: LatentDiT, latents: torch.Tensor, text: torch.Tensor, empty_text: torch.Tensor, *,
                  text_drop: float = 0.1, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Objective (c). latents ``[B, 16, T, H, W]``; no plan, one window over the whole clip."""
    text = drop_text(text, empty_text, text_drop, generator)
    flow = flow_matching_loss(lambda x, t: model(x, t, text, window_frames=None).sample, latents, generator)
    return {"loss": flow, "flow": flow.detach()}
