"""LATENT at the node boundary: core's convention, converted from and to the library's.

Core ComfyUI's LATENT holds RAW VAE latents: ``VAEEncode`` returns the VAE's output as is, ``VAEDecode``
decodes it as is, and the sampler normalises on the way in and out with the model's latent format
(``comfy/latent_formats.py`` ``Wan21.process_in``: ``(z - mean) / std``; ``process_out``: ``z * std +
mean``, applied in ``comfy/samplers.py`` around sampling). Our library works in the normalised space
(``VideoVAE.encode``/``decode`` and stage 2 speak ``(z - mean) / std``). So our nodes output and accept
raw latents with Wan2.1's published statistics (the same numbers as core's ``Wan21`` format), which
makes a SemanticGen LATENT a core Wan LATENT: core's ``VAEDecode`` with the Wan2.1 VAE decodes what our
stage 2 renders, and our VAE Decode decodes what core's ``VAEEncode`` or ``KSampler`` (Wan2.1) produce.
For the embedded VAE (not Wan's) the same fixed map is used in both directions, so its round trip is exact.
"""

from __future__ import annotations

import torch


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from semanticgen_core.vae import WAN21_LATENTS_MEAN, WAN21_LATENTS_STD  # imported late: pack import stays light

    shape = (1, len(WAN21_LATENTS_MEAN), 1, 1, 1)
    mean = torch.tensor(WAN21_LATENTS_MEAN, dtype=torch.float32, device=like.device).view(shape)
    std = torch.tensor(WAN21_LATENTS_STD, dtype=torch.float32, device=like.device).view(shape)
    return mean, std


def to_comfy(normalised: torch.Tensor) -> torch.Tensor:
    """Library latents ``(z - mean) / std`` -> core's raw LATENT samples (float32, CPU)."""
    mean, std = _stats(normalised)
    return (normalised.float() * std + mean).cpu()


def from_comfy(samples: torch.Tensor) -> torch.Tensor:
    """Core's raw LATENT samples -> library latents (float32)."""
    mean, std = _stats(samples)
    return (samples.float() - mean) / std
