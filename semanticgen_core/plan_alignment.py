"""Alignment guidance: a contrastive text-plan model that steers stage 1 toward plans that match their prompt.

Stage 1 learns by flow matching alone what is loud in the text encoder's states and can ignore what is
faint there: at the embedded scale, the direction of motion ("from left to right" and "from right to left"
differ little in MiniLM's token states, so stage 1's plans go the caption's way about as often as chance).
``PlanTextAligner`` is a small CLIP-style pair of encoders, one over the prompt's token states and one over
a plan, trained on the same cache of (plan, caption) pairs as stage 1 with each plan's time reversal as a
hard negative (``training.alignment_loss``), so its score of a plan given a prompt tells which way the plan
moves. While stage 1 samples, the gradient of that score at the predicted clean plan is added to the
velocity (``alignment_steer``): classifier guidance with a contrastive model, as GLIDE's CLIP guidance. It acts
only while the noise level is high (down to ``stop``), a guidance interval (Kynkäänniemi et al., 2024): which
way things move is settled in stage 1's first steps, and steering the later ones bends the plan's colours and
shapes toward what the aligner scores without moving anything.

Not in the paper: an addition on top of stage 1 that needs no retraining of it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .errors import ShapeError
from .wan_blocks import shot_routing


class PlanTextAligner(ModelMixin, ConfigMixin):
    """``score(text, plan)``: the cosine of the two embeddings over a temperature (an InfoNCE logit).

    The text side pools a prompt's token states ``[B, L, text_dim]`` (zero past the prompt, as the text
    encoders pad) with one learned query; the plan side resamples a plan ``[B, T, h, w, plan_dim]`` to
    ``steps`` plan steps and a ``grid`` of cells, so one model scores shots of any length and plans of any size.
    """

    @register_to_config
    def __init__(self, text_dim: int = 384, plan_dim: int = 8, embed_dim: int = 128, hidden_dim: int = 256,
                 num_heads: int = 4, steps: int = 8, grid: Sequence[int] = (4, 4), temperature: float = 0.1) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, text_dim) * 0.02)
        self.pool = nn.MultiheadAttention(text_dim, num_heads, batch_first=True)
        self.text_head = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, hidden_dim), nn.GELU(),
                                       nn.Linear(hidden_dim, embed_dim))
        self.plan_head = nn.Sequential(nn.Linear(steps * grid[0] * grid[1] * plan_dim, hidden_dim), nn.GELU(),
                                       nn.Linear(hidden_dim, embed_dim))

    def text_embedding(self, text: torch.Tensor) -> torch.Tensor:
        """Unit embeddings ``[B, embed_dim]`` of prompts ``[B, L, text_dim]``."""
        if text.ndim != 3 or text.shape[-1] != self.config.text_dim:
            raise ShapeError(f"the aligner reads text [B, L, {self.config.text_dim}], got {tuple(text.shape)}")
        padding = text.abs().sum(-1) == 0
        padding[:, 0] = False  # an all-zero prompt still pools to something
        pooled, _ = self.pool(self.query.expand(len(text), -1, -1).to(text), text, text, key_padding_mask=padding,
                              need_weights=False)
        return F.normalize(self.text_head(pooled[:, 0]), dim=-1)

    def plan_embedding(self, plan: torch.Tensor) -> torch.Tensor:
        """Unit embeddings ``[B, embed_dim]`` of plans ``[B, T, h, w, plan_dim]`` (the ``SemanticPlan`` layout)."""
        if plan.ndim != 5 or plan.shape[-1] != self.config.plan_dim:
            raise ShapeError(f"the aligner reads plans [B, T, h, w, {self.config.plan_dim}], got {tuple(plan.shape)}")
        x = plan.permute(0, 4, 1, 2, 3)  # [B, c, T, h, w]
        x = F.adaptive_avg_pool3d(x, (x.shape[2], *self.config.grid))
        x = F.interpolate(x, size=(self.config.steps, *self.config.grid), mode="trilinear", align_corners=True)
        return F.normalize(self.plan_head(x.flatten(1)), dim=-1)

    def score(self, text: torch.Tensor, plan: torch.Tensor) -> torch.Tensor:
        """``[B]``: how well each plan matches its prompt (cosine / temperature)."""
        return (self.text_embedding(text) * self.plan_embedding(plan)).sum(-1) / self.config.temperature


def shot_spans(num_steps: int, shot_starts: Sequence[float] | None, num_shots: int) -> list[tuple[int, slice]]:
    """``(shot, its plan steps)`` for each shot that has steps, routed as the DiTs route their cross-attention
    (``wan_blocks.shot_routing``; ``shot_starts`` as ``SemanticDiT.velocity`` takes them)."""
    routing = shot_routing(torch.arange(num_steps, dtype=torch.float64), shot_starts, num_shots)
    if routing is None:
        return [(0, slice(0, num_steps))]
    return [(k, slice(int(steps[0]), int(steps[-1]) + 1)) for k, steps in routing]


def plan_score(aligner: PlanTextAligner, text: torch.Tensor, plan: torch.Tensor,
               shot_starts: Sequence[float] | None = None) -> torch.Tensor:
    """``[B]``: how well plans ``[B, T, h, w, c]`` match their prompt, ``text`` ``[B, L, D]`` or one per shot
    ``[B, S, L, D]``: each shot's span of the plan scored against its own text, summed over the shots."""
    per_shot = text if text.ndim == 4 else text[:, None]
    return sum(aligner.score(per_shot[:, k], plan[:, span])
               for k, span in shot_spans(plan.shape[1], shot_starts, per_shot.shape[1]))


def alignment_steer(aligner: PlanTextAligner | None, text: torch.Tensor, weight: float,
                    shot_starts: Sequence[float] | None = None, stop: float = 0.0):
    """The velocity correction ``steer(x0, sigma) = -weight * d score / d x0`` of ``denoise`` at noise levels
    ``sigma >= stop`` (None below it): ``x0`` is the predicted clean plan ``[B, T, h, w, c]``, ``text`` the
    conditional prompt ``[B, L, D]`` or one per shot ``[B, S, L, D]``; each shot's span of the plan is scored
    against its own prompt. None (no steer) without an aligner or at weight 0."""
    if aligner is None or not weight > 0:
        return None
    dtype = next(aligner.parameters()).dtype
    # ComfyUI runs nodes under inference mode: autograd is off there, and weights loaded there are inference
    # tensors, which no graph may save for backward. So the score's gradient is taken outside it, through
    # ordinary copies (the aligner is small).
    with torch.inference_mode(False):
        if any(p.is_inference() for p in aligner.parameters()):
            aligner = copy.deepcopy(aligner)
        per_shot = (text if text.ndim == 4 else text[:, None]).to(dtype).clone()

    def steer(x0: torch.Tensor, sigma: float) -> torch.Tensor | None:
        if sigma < stop:
            return None
        with torch.inference_mode(False), torch.enable_grad():
            x0 = x0.detach().to(dtype).clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(plan_score(aligner, per_shot, x0, shot_starts).sum(), x0)
        return -weight * grad.float()

    return steer
