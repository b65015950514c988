"""``SemanticCompressor``: the small learned MLP that turns encoder features into the compact plan space.

Each semantic token (``d`` = 2048 for the Qwen2.5-VL-3B tower) is mapped to the mean and log-variance of a
Gaussian with ``out_dim`` channels (8 is the paper's best); ``z_sem`` is a sample from it and a KL term
pulls it toward N(0, I), so stage 1 gets a small, well-scaled space to diffuse in. Trained jointly with
stage 2, then frozen for stage 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .errors import ShapeError


class SemanticCompressor(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, in_dim: int = 2048, out_dim: int = 8, hidden_dim: int = 1024, depth: int = 2):
        super().__init__()
        # The encoder's features are unnormalised (their scale differs per encoder); LayerNorm first.
        layers: list[nn.Module] = [nn.LayerNorm(in_dim, elementwise_affine=False)]
        width = in_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(width, hidden_dim), nn.GELU()]
            width = hidden_dim
        layers.append(nn.Linear(width, 2 * out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[..., in_dim]`` encoder features -> (mean, log-variance), each ``[..., out_dim]``."""
        if features.shape[-1] != self.config.in_dim:
            raise ShapeError(f"the compressor expects features with {self.config.in_dim} channels (last axis), "
                             f"got shape {tuple(features.shape)}: is this plan from a different semantic encoder?")
        mean, logvar = self.net(features).chunk(2, dim=-1)
        return mean, logvar.clamp(-30.0, 20.0)

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
               eps: torch.Tensor | None = None) -> torch.Tensor:
        """Reparameterised sample ``mean + std * eps`` (differentiable in mean and logvar); ``eps`` drawn
        from ``generator`` unless given."""
        if eps is None:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * eps

    @staticmethod
    def kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mean, exp(logvar)) || N(0, I)), summed over channels, averaged over tokens."""
        return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1).mean()
