"""Stage 2, ``LatentDiT``: a Wan DiT that generates VAE latents conditioned in-context on a semantic plan.

The sequence is ``[z_t ; z_sem]``: video tokens (Wan's patch embedding) followed by the plan's tokens
(a Linear from the compressor's channels to the model width). Choices the paper leaves open, made here:

* **Positions.** Semantic tokens get Wan's 3-axis rotary embedding at the centre of the video region
  they summarise (fractional latent-frame / patch coordinates), so "where and when" lines up with the
  video tokens and time windows can hold both.
* **Timestep.** Semantic tokens take their own timestep through a second modulation: 0 for a clean
  plan, ``1000 * a`` for a plan noised to level ``a`` (training-time augmentation, as in RAE), so the
  model knows how far to trust it.
* **Exact start from Wan.** The video <- semantic attention branch has a zero-initialised gate
  (``attention.py``), so before training the output equals the base Wan model's output. A stage 2
  trained from scratch, with no base model to match, may attend jointly instead (``plan_attention="joint"``:
  one softmax over video and plan keys, no gate).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from .attention import time_windows
from .checkpoints import init_empty_weights, load_into, load_state_dict
from .errors import CheckpointError, ShapeError
from .wan_blocks import WanRunner, cell_centres, shot_routing
from .window_stream import stream_forward


def noised_plan(tokens: torch.Tensor, level: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The plan as stage 2 reads it at noise level ``level`` ``[B]`` (RAE-style: trained on plans noised so,
    and rendered so): ``(1 - level) * tokens + level * eps`` per sample, and the ``semantic_timestep`` that
    tells the model the level (on the latents' 0..1000 scale)."""
    a = level.view(-1, *[1] * (tokens.ndim - 1))
    return (1 - a) * tokens + a * eps, 1000 * level


class LatentDiT(WanRunner, WanTransformer3DModel):
    """Wan2.1 text-to-video DiT with in-context semantic tokens and optional shifted-window attention."""

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        semantic_dim: int = 8,
        window_frames: int | None = None,
        plan_attention: str = "gated",
    ) -> None:
        super().__init__(patch_size, num_attention_heads, attention_head_dim, in_channels, out_channels, text_dim,
                         freq_dim, ffn_dim, num_layers, cross_attn_norm, qk_norm, eps, image_dim, added_kv_proj_dim,
                         rope_max_seq_len, pos_embed_seq_len)
        self.use_semanticgen_blocks()
        inner_dim = num_attention_heads * attention_head_dim
        self.semantic_proj = nn.Linear(semantic_dim, inner_dim)
        if plan_attention not in ("gated", "joint"):
            raise ValueError(f"plan_attention must be 'gated' or 'joint', got {plan_attention!r}")
        # joint attention has no gate: the plan's keys share the video's softmax
        self.semantic_gate = nn.Parameter(torch.zeros(num_layers, num_attention_heads)) \
            if plan_attention == "gated" else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        semantic_tokens: torch.Tensor | None = None,
        semantic_timestep: torch.Tensor | None = None,
        window_frames: int | None = -1,
        shot_starts: Sequence[float] | None = None,
        stream_frames: int | None = None,
        window_offset: float = 0.0,
        return_dict: bool = True,
    ):
        """Predict the flow velocity of the latents.

        hidden_states: ``[B, C, T, H, W]`` noisy latents; timestep: ``[B]`` in 0..1000;
        encoder_hidden_states: text ``[B, L, text_dim]``, or one prompt per shot ``[B, S, L, text_dim]``
        with ``shot_starts`` (S start times in latent frames, the first 0);
        semantic_tokens: ``[B, T_s, h_s, w_s, semantic_dim]`` the plan (covers the same time span and
        frame as the latents); semantic_timestep: ``[B]``, 0 (default) for a clean plan;
        window_frames: attention window in latent frames; ``None`` for full attention, ``-1`` (default)
        for the value in the config; stream_frames: with windows, run the blocks as a pipeline over time
        taking this many latent frames at a time (``window_stream.py``: the same output in memory bounded
        by the window), None for one pass; window_offset: where the window grid starts
        (``attention.time_windows``).
        """
        b = hidden_states.shape[0]
        window = self.config.window_frames if window_frames == -1 else window_frames
        dtype = hidden_states.dtype
        temb, mod_v = self.time_modulation(timestep, dtype)
        context = self.text_context(encoder_hidden_states)
        mod_s = None
        if semantic_tokens is not None:
            if semantic_tokens.ndim != 5 or semantic_tokens.shape[0] != b or \
                    semantic_tokens.shape[-1] != self.config.semantic_dim:
                raise ShapeError(
                    f"semantic_tokens must be [B={b}, T_s, h, w, {self.config.semantic_dim}], got "
                    f"{tuple(semantic_tokens.shape)}")
            if semantic_timestep is None:
                semantic_timestep = torch.zeros_like(timestep)
            mod_s = self.time_modulation(semantic_timestep, dtype)[1]
        if stream_frames is not None and window is not None:
            out = stream_forward(self, hidden_states, semantic_tokens, context, temb, mod_v, mod_s, window,
                                 stream_frames, shot_starts, window_offset)
            return Transformer2DModelOutput(sample=out) if return_dict else (out,)

        xv, rope_v, video_times, grid = self.patchify(hidden_states)
        xs = rope_s = semantic_times = None
        times = video_times
        if semantic_tokens is not None:
            ts, hs, ws = semantic_tokens.shape[1:4]
            xs = self.semantic_proj(semantic_tokens.to(dtype).flatten(1, 3))
            rope_s = self.grid_rope(ts, hs, ws, grid)
            # a plan cell belongs to the window and shot of the video it overlaps, also at the ends
            semantic_times = cell_centres(ts, grid[0]).clamp(0, grid[0] - 1).repeat_interleave(hs * ws)
            times = torch.cat([video_times, semantic_times])

        shots = shot_routing(times, shot_starts, 1 if context.ndim == 3 else context.shape[1])
        layouts = [time_windows(video_times, semantic_times, window, shifted, window_offset)
                   for shifted in (False, True)]
        xv, _ = self.run_blocks(xv, xs, context, shots, mod_v, mod_s, rope_v, rope_s, layouts, self.semantic_gate)
        out = self.head(xv, temb, grid)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    # -- loading -----------------------------------------------------------------------------------
    @classmethod
    def from_wan(cls, path: str | Path, dtype: torch.dtype = torch.float32, **semantic_config) -> "LatentDiT":
        """Initialise from Wan2.1 text-to-video DiT weights; the semantic layers start fresh (gate 0).

        ``path``: a diffusers folder (``transformer/`` of a Wan2.1 diffusers repo, or the repo root) or
        a single ``.safetensors`` file in the original layout, as ComfyUI keeps in
        ``models/diffusion_models`` (e.g. ``wan2.1_t2v_1.3B_fp16.safetensors``).
        """
        path = Path(path)
        if path.is_dir() and (path / "transformer").is_dir():
            path = path / "transformer"
        if path.is_dir() and (path / "config.json").is_file():
            config = {k: v for k, v in json.loads((path / "config.json").read_text()).items()
                      if not k.startswith("_")}
            state = load_state_dict(path)
        else:
            state = wan_original_to_diffusers(load_state_dict(path))
            config = infer_wan_config(state)
        for key in ("semantic_dim", "window_frames", "plan_attention"):
            config.pop(key, None)
        if semantic_config.get("plan_attention", "gated") != "gated":
            raise ValueError("a stage 2 from Wan keeps the gated plan attention: its closed gate is what makes "
                             "the start exactly Wan's")
        with init_empty_weights():
            model = cls(**config, **semantic_config)
        fresh = {k: v for k, v in model.state_dict().items() if k.startswith(("semantic_proj.", "semantic_gate"))}
        load_into(model, {**state, **{k: torch.empty(v.shape) for k, v in fresh.items()}}, f"Wan DiT from {path}")
        model.init_semantic_layers()
        return model.to(dtype)

    def init_semantic_layers(self) -> None:
        """Fresh in-context layers: a scaled Linear for the plan tokens and a closed gate."""
        nn.init.normal_(self.semantic_proj.weight, std=self.config.semantic_dim ** -0.5)
        nn.init.zeros_(self.semantic_proj.bias)
        if self.semantic_gate is not None:
            nn.init.zeros_(self.semantic_gate)



def wan_original_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original Wan2.1 key names (as in ComfyUI's ``diffusion_models``) -> diffusers names."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    state = {re.sub(r"^(model\.diffusion_model\.|diffusion_model\.)", "", k): v for k, v in state.items()}
    if "patch_embedding.weight" not in state:
        raise CheckpointError("this file has no 'patch_embedding.weight': it is not a Wan2.1 DiT checkpoint")
    if "condition_embedder.text_embedder.linear_1.weight" in state:
        return state  # already in diffusers layout
    return convert_wan_transformer_to_diffusers(dict(state))


def infer_wan_config(state: dict[str, torch.Tensor]) -> dict:
    """Architecture of a Wan2.1 DiT read off its (diffusers-named) tensors; Wan's head dim is always 128."""
    try:
        inner, in_ch = state["patch_embedding.weight"].shape[:2]
        patch = tuple(state["patch_embedding.weight"].shape[2:])
        layers = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        head_dim = 128 if inner % 128 == 0 else 64
        return dict(
            patch_size=patch, num_attention_heads=inner // head_dim, attention_head_dim=head_dim,
            in_channels=in_ch, out_channels=state["proj_out.weight"].shape[0] // (patch[0] * patch[1] * patch[2]),
            text_dim=state["condition_embedder.text_embedder.linear_1.weight"].shape[1],
            freq_dim=state["condition_embedder.time_embedder.linear_1.weight"].shape[1],
            ffn_dim=state["blocks.0.ffn.net.0.proj.weight"].shape[0], num_layers=layers,
            cross_attn_norm="blocks.0.norm2.weight" in state)
    except KeyError as e:
        raise CheckpointError(f"cannot read the Wan2.1 architecture: tensor {e} is missing from the checkpoint") from None
