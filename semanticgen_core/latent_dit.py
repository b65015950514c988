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
  (``attention.py``), so before training the output equals the base Wan model's output.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from .attention import Rope, Window, rope_at, time_windows, windowed_self_attention
from .checkpoints import init_empty_weights, load_into, load_state_dict
from .errors import CheckpointError, ShapeError


def cell_centres(n_cells: int, n_units: int) -> torch.Tensor:
    """Centres of ``n_cells`` equal cells spanning ``n_units`` grid units, in that grid's coordinates."""
    return (torch.arange(n_cells, dtype=torch.float64) + 0.5) * (n_units / n_cells) - 0.5


class LatentDiT(WanTransformer3DModel):
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
    ) -> None:
        super().__init__(patch_size, num_attention_heads, attention_head_dim, in_channels, out_channels, text_dim,
                         freq_dim, ffn_dim, num_layers, cross_attn_norm, qk_norm, eps, image_dim, added_kv_proj_dim,
                         rope_max_seq_len, pos_embed_seq_len)
        inner_dim = num_attention_heads * attention_head_dim
        self.semantic_proj = nn.Linear(semantic_dim, inner_dim)
        self.semantic_gate = nn.Parameter(torch.zeros(num_layers, num_attention_heads))

    # -- conditioning -------------------------------------------------------------------------------
    def time_modulation(self, timestep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Wan's timestep path: ``temb [B, D]`` for the output head and ``[B, 6, D]`` for the blocks."""
        ce = self.condition_embedder
        t = ce.timesteps_proj(timestep).to(next(ce.time_embedder.parameters()).dtype)
        temb = ce.time_embedder(t).to(dtype)
        return temb, ce.time_proj(ce.act_fn(temb)).unflatten(1, (6, -1))

    def _positions(self, t: int, h: int, w: int, t_units: int, h_units: int, w_units: int) -> Rope:
        """Rotary embedding of a ``t x h x w`` token grid laid over ``t_units x h_units x w_units`` of
        the video token grid (identity for the video tokens themselves)."""
        tt, hh, ww = torch.meshgrid(cell_centres(t, t_units), cell_centres(h, h_units), cell_centres(w, w_units),
                                    indexing="ij")
        return rope_at(self.rope, tt.flatten(), hh.flatten(), ww.flatten())

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        semantic_tokens: torch.Tensor | None = None,
        semantic_timestep: torch.Tensor | None = None,
        window_frames: int | None = -1,
        return_dict: bool = True,
    ):
        """Predict the flow velocity of the latents.

        hidden_states: ``[B, C, T, H, W]`` noisy latents; timestep: ``[B]`` in 0..1000;
        encoder_hidden_states: ``[B, L, text_dim]`` text embeddings;
        semantic_tokens: ``[B, T_s, h_s, w_s, semantic_dim]`` the plan (covers the same time span and
        frame as the latents); semantic_timestep: ``[B]``, 0 (default) for a clean plan;
        window_frames: attention window in latent frames; ``None`` for full attention, ``-1`` (default)
        for the value in the config.
        """
        b, _, t, h, w = hidden_states.shape
        pt, ph, pw = self.config.patch_size
        if t % pt or h % ph or w % pw:
            raise ShapeError(f"latents {tuple(hidden_states.shape)} are not divisible by the patch size {(pt, ph, pw)}")
        tp, hp, wp = t // pt, h // ph, w // pw
        window = self.config.window_frames if window_frames == -1 else window_frames
        dtype = hidden_states.dtype

        xv = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
        rope_v = self._positions(tp, hp, wp, tp, hp, wp)
        video_times = torch.arange(tp).repeat_interleave(hp * wp).double()
        temb, mod_v = self.time_modulation(timestep, dtype)
        context = self.condition_embedder.text_embedder(encoder_hidden_states)

        xs = rope_s = mod_s = semantic_times = None
        if semantic_tokens is not None:
            if semantic_tokens.ndim != 5 or semantic_tokens.shape[0] != b or \
                    semantic_tokens.shape[-1] != self.config.semantic_dim:
                raise ShapeError(
                    f"semantic_tokens must be [B={b}, T_s, h, w, {self.config.semantic_dim}], got "
                    f"{tuple(semantic_tokens.shape)}")
            ts, hs, ws = semantic_tokens.shape[1:4]
            xs = self.semantic_proj(semantic_tokens.to(dtype).flatten(1, 3))
            rope_s = self._positions(ts, hs, ws, tp, hp, wp)
            semantic_times = cell_centres(ts, tp).repeat_interleave(hs * ws)
            if semantic_timestep is None:
                semantic_timestep = torch.zeros_like(timestep)
            mod_s = self.time_modulation(semantic_timestep, dtype)[1]

        layouts = [time_windows(video_times, semantic_times, window, shifted=False),
                   time_windows(video_times, semantic_times, window, shifted=True)]
        for i, block in enumerate(self.blocks):
            args = (block, xv, xs, context, mod_v, mod_s, rope_v, rope_s, layouts[i % 2], self.semantic_gate[i])
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                xv, xs = self._gradient_checkpointing_func(_block_forward, *args)
            else:
                xv, xs = _block_forward(*args)

        shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        xv = (self.norm_out(xv.float()) * (1 + scale) + shift).type_as(xv)
        xv = self.proj_out(xv)
        xv = xv.reshape(b, tp, hp, wp, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        out = xv.flatten(6, 7).flatten(4, 5).flatten(2, 3)
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
        for key in ("semantic_dim", "window_frames"):
            config.pop(key, None)
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
        nn.init.zeros_(self.semantic_gate)


def _block_forward(block, xv, xs, context, mod_v, mod_s, rope_v, rope_s, windows: list[Window], gate):
    """``WanTransformerBlock.forward`` over two token groups with their own modulation.

    Self-attention is windowed and gated (``attention.py``); cross-attention and the feed-forward act
    per token, so the groups are concatenated for them.
    """
    sv = (block.scale_shift_table + mod_v.float()).chunk(6, dim=1)
    ss = (block.scale_shift_table + mod_s.float()).chunk(6, dim=1) if xs is not None else None

    def modulate(norm, x, m, shift, scale):
        return (norm(x.float()) * (1 + m[scale]) + m[shift]).type_as(x)

    av, as_ = windowed_self_attention(block.attn1, modulate(block.norm1, xv, sv, 0, 1),
                                      None if xs is None else modulate(block.norm1, xs, ss, 0, 1),
                                      rope_v, rope_s, windows, gate)
    xv = (xv.float() + av * sv[2]).type_as(xv)
    if xs is not None:
        xs = (xs.float() + as_ * ss[2]).type_as(xs)

    n_v = xv.shape[1]
    x = xv if xs is None else torch.cat([xv, xs], 1)
    x = x + block.attn2(block.norm2(x.float()).type_as(x), context, None, None)
    xv, xs = (x, None) if xs is None else (x[:, :n_v], x[:, n_v:])

    xv = (xv.float() + block.ffn(modulate(block.norm3, xv, sv, 3, 4)).float() * sv[5]).type_as(xv)
    if xs is not None:
        xs = (xs.float() + block.ffn(modulate(block.norm3, xs, ss, 3, 4)).float() * ss[5]).type_as(xs)
    return xv, xs


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
