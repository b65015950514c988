"""``VideoVAE``: Wan2.1's causal video VAE (``diffusers.AutoencoderKLWan``) between frames and latents.

Frames are ComfyUI IMAGE layout ``[T, H, W, 3]`` floats in 0..1 (one video); latents are ComfyUI's Wan
LATENT layout ``[1, 16, T', H/8, W/8]``, normalised per channel as Wan does: ``(z - mean) / std``.

The VAE is causal in time and keeps a cache of the last frames of every causal conv, so it can run chunk
by chunk: the first frame alone, then 4 frames per latent frame. ``encode``/``decode_iter`` walk the
video in such chunks, so memory stays bounded by the chunk size and a long video streams out of
``decode_iter`` without ever being held whole. Chunking gives the same result as one pass.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from .checkpoints import init_empty_weights, load_into, load_state_dict
from .errors import CheckpointError, Interrupted, SemanticGenError, ShapeError
from .formats import MODEL_FILE_FORMAT

Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]

TIME_STRIDE, SPACE_STRIDE = 4, 8

# Wan2.1's published per-channel latent statistics (Wan2.1 wan/modules/vae.py, diffusers' defaults).
WAN21_LATENTS_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                      0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
WAN21_LATENTS_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                     3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160]

_NOT_FOUND_HINT = ("Put the Wan2.1 VAE (e.g. wan_2.1_vae.safetensors) in ComfyUI's models/vae folder, or pass "
                   "a diffusers folder holding config.json (or vae/config.json) and its weights.")


def wan21_vae_config() -> dict:
    """The real Wan2.1 VAE (also used by Wan2.2-14B): 96 base channels, 16 latent channels."""
    return dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                temperal_downsample=[False, True, True],
                latents_mean=list(WAN21_LATENTS_MEAN), latents_std=list(WAN21_LATENTS_STD))


def tiny_vae_config() -> dict:
    """The embedded default's VAE: Wan2.1's layout and 4x8x8 / 16-channel latents, shrunk to train on CPU.

    Measured on one CPU thread (AdamW step, batch 4 of 9x64x64 frames): base 8 with channels
    8-16-32-48 takes ~1.2 s for 1.2M parameters (4.7 MB in fp32); base 12 took 1.9 s and base 16 twice
    that again. Full-resolution convs dominate, so only the cheap 8x8 level is widened (48, not 32).
    Three downsamples are needed for 8x spatial, hence four ``dim_mult`` levels. The latent statistics
    are placeholders until training measures them.
    """
    return dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 6], num_res_blocks=1, attn_scales=[],
                temperal_downsample=[False, True, True], latents_mean=[0.0] * 16, latents_std=[1.0] * 16)


def valid_frame_counts(n: int) -> tuple[int, int]:
    """The 4k+1 frame counts just below (or at) and just above ``n``."""
    lower = max(n - 1, 0) // TIME_STRIDE * TIME_STRIDE + 1
    return lower, lower + TIME_STRIDE


def frames_for(seconds: float, fps: float) -> int:
    """The 4k+1 frame count closest to ``seconds`` of video at ``fps``."""
    return TIME_STRIDE * max(0, round(seconds * fps / TIME_STRIDE)) + 1


DECODE_BUDGET = 1 << 30  # bytes of decoder working memory (as decode_memory estimates it) per decode step


def decode_memory(height: int, width: int, chunk: int, dtype: torch.dtype, tile: int | None = None) -> int:
    """Working memory of a decode step on the GPU, as ComfyUI's core estimates it for the Wan2.1 VAE (per latent
    frame and latent pixel), for frames of ``height`` x ``width`` pixels decoded whole or in ``tile``-pixel tiles
    (then a tile's)."""
    height, width = min(height, tile or height), min(width, tile or width)
    return 7000 * (height // 8) * (width // 8) * 64 * torch.finfo(dtype).bits // 8 * max(1, chunk)


def decode_chunk(latent_frames: int, height: int, width: int, dtype: torch.dtype, tile: int | None = None) -> int:
    """Latent frames per decode step for ``latent_frames`` latent frames of ``height`` x ``width`` pixels (in
    ``tile``-pixel tiles, if given): a short clip's frames after the first in one step (each step pays the
    decoder's per-call overhead, most of a small clip's decode time on a CPU), else as many as fit
    ``DECODE_BUDGET``, at least 1. Chunking is exact up to float rounding (the causal cache carries the past
    between steps)."""
    fit = DECODE_BUDGET // max(1, decode_memory(height, width, 1, dtype, tile))
    return int(max(1, min(latent_frames - 1, fit)))


def decode_steps(latent_frames: int, chunk: int) -> int:
    """Decode steps of ``latent_frames`` latent frames ``chunk`` at a time: the first frame, then the rest."""
    return len(_chunks(latent_frames, chunk))


def _valid_sizes(n: int) -> str:
    lower, upper = max(SPACE_STRIDE, n // SPACE_STRIDE * SPACE_STRIDE), -(-n // SPACE_STRIDE) * SPACE_STRIDE
    return f"{lower}" if lower == upper else f"{lower} or {upper}"


def _count_causal_convs(module: torch.nn.Module) -> int:
    """Size of the feature cache: one slot per causal conv."""
    return sum(isinstance(m, WanCausalConv3d) for m in module.modules())


def _chunks(length: int, step: int) -> list[tuple[int, int]]:
    """Time slices the causal VAE runs on: the first frame alone (it has no past), then ``step`` at a time."""
    return [(0, 1)] + [(start, min(start + step, length)) for start in range(1, length, step)]


def _tiles(size: int, tile: int | None, overlap: int) -> list[tuple[int, int]]:
    """Latent ``(start, end)`` spans of tiles ``tile`` pixels wide covering ``size`` latents, neighbours
    overlapping by ``overlap`` pixels at least; spread evenly, all of one size. One span without tiling."""
    if tile is None or tile <= 0 or size * SPACE_STRIDE <= tile:
        return [(0, size)]
    length = max(1, tile // SPACE_STRIDE)
    shared = min(max(0, overlap // SPACE_STRIDE), length - 1)
    count = -(-(size - shared) // (length - shared))
    if count <= 1:
        return [(0, size)]
    starts = [round(i * (size - length) / (count - 1)) for i in range(count)]
    return [(s, s + length) for s in starts]


def _blend_weights(spans: list[tuple[int, int]], size: int, like: torch.Tensor) -> list[torch.Tensor]:
    """Per-pixel weights along one axis, one per span: 1 inside, a linear ramp across each overlap with a
    neighbour, normalised to sum to 1 at every pixel, so the blended frame is a weighted mean of the tiles."""
    weights = []
    for i, (start, end) in enumerate(spans):
        w = torch.ones((end - start) * SPACE_STRIDE, dtype=torch.float32)
        if i > 0:
            shared = (spans[i - 1][1] - start) * SPACE_STRIDE
            if shared > 0:
                w[:shared] = (torch.arange(shared, dtype=torch.float32) + 0.5) / shared
        if i + 1 < len(spans):
            shared = (end - spans[i + 1][0]) * SPACE_STRIDE
            if shared > 0:
                w[-shared:] = 1 - (torch.arange(shared, dtype=torch.float32) + 0.5) / shared
        weights.append(w)
    # Where more than two tiles meet (short tiles, large overlaps), normalise so the weights still sum to 1.
    total = torch.zeros(size * SPACE_STRIDE)
    for (start, end), w in zip(spans, weights):
        total[start * SPACE_STRIDE:end * SPACE_STRIDE] += w
    return [(w / total[start * SPACE_STRIDE:end * SPACE_STRIDE]).to(like.device)
            for (start, end), w in zip(spans, weights)]


def _move_cache(cache: list, device: torch.device | str) -> None:
    """Move a decoder feature cache (tensors, or the marker strings diffusers stores) to ``device``."""
    for i, entry in enumerate(cache):
        if isinstance(entry, torch.Tensor) and entry.device != torch.device(device):
            cache[i] = entry.to(device)


def _set_conv_layout(module: torch.nn.Module, device: torch.device) -> None:
    """Conv weights channels-last on the CPU, contiguous elsewhere. On the CPU oneDNN then runs every conv
    channels-last, and Wan's RMS norm, which reduces over channels, reads them contiguously: the embedded
    VAE decodes a 4 s clip 1.6x faster, to the same values within 1e-6 (``bench/first_video.py``). GPUs
    keep diffusers' layout: unmeasured there."""
    for conv in module.modules():
        if isinstance(conv, (torch.nn.Conv2d, torch.nn.Conv3d)):
            w = conv.weight
            layout = (torch.channels_last if w.ndim == 4 else torch.channels_last_3d) if device.type == "cpu" \
                else torch.contiguous_format
            if not w.is_contiguous(memory_format=layout):
                # in the weights' own mode: plain weights stay plain under ComfyUI's inference mode, and weights
                # loaded under it (inference tensors) can only be replaced there
                with torch.inference_mode(w.is_inference()), torch.no_grad():
                    w.data = w.data.contiguous(memory_format=layout)


def _interruptible(chunks: Iterator[torch.Tensor], should_stop: ShouldStop | None,
                   what: str) -> Iterator[torch.Tensor]:
    """Pass chunks through, checking ``should_stop`` before each one is computed."""
    while True:
        if should_stop is not None and should_stop():
            raise Interrupted(f"{what} interrupted")
        try:
            yield next(chunks)
        except StopIteration:
            return


class VideoVAE(torch.nn.Module):
    """Wraps an ``AutoencoderKLWan`` (as ``.wan``) with ComfyUI layouts, normalisation and streaming."""

    def __init__(self, wan: AutoencoderKLWan):
        super().__init__()
        if wan.config.get("patch_size") not in (None, 1) or wan.config.get("is_residual"):
            raise CheckpointError("only Wan2.1-style VAEs are supported (not Wan2.2's patchified residual VAE)")
        self.wan = wan

    @classmethod
    def from_config(cls, config: Mapping) -> VideoVAE:
        return cls(AutoencoderKLWan(**{k: v for k, v in config.items() if not k.startswith("_")}))

    @property
    def config(self):
        return self.wan.config

    @property
    def z_dim(self) -> int:
        return self.wan.config.z_dim

    # -- normalisation ---------------------------------------------------------------------------
    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(self.config.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latents)
        return latents * std + mean

    def set_latent_stats(self, mean: list[float], std: list[float]) -> None:
        """Store measured per-channel latent statistics in the config (they are saved with it)."""
        if len(mean) != self.z_dim or len(std) != self.z_dim:
            raise ShapeError(f"latent statistics need {self.z_dim} values each, got {len(mean)} and {len(std)}")
        self.wan.register_to_config(latents_mean=[float(v) for v in mean], latents_std=[float(v) for v in std])

    # -- raw chunked passes (differentiable, unclamped; training uses these) ----------------------
    def iter_moments(self, x: torch.Tensor, chunk: int = 1) -> Iterator[torch.Tensor]:
        """Posterior moments ``[B, 2*16, t', h, w]`` of ``x`` (``[B, 3, 4k+1, H, W]`` in -1..1), chunk by chunk:
        the first frame, then ``4*chunk`` frames (``chunk`` latent frames) at a time. Each chunk moves to
        the VAE's device and dtype only when its turn comes."""
        param = next(self.wan.parameters())
        _set_conv_layout(self.wan, param.device)
        cache: list = [None] * _count_causal_convs(self.wan.encoder)
        for start, end in _chunks(x.shape[2], TIME_STRIDE * chunk):
            out = self.wan.encoder(x[:, :, start:end].to(param.device, param.dtype), feat_cache=cache, feat_idx=[0])
            yield self.wan.quant_conv(out)  # a 1x1x1 conv: per frame, so chunking it is exact

    def iter_pixels(self, z: torch.Tensor, chunk: int = 1, tile: int | None = None, overlap: int = 64,
                    cache_device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
        """Unclamped frames ``[B, 3, t, H, W]`` (about -1..1) of raw latents ``z``: the first latent frame
        (one video frame), then ``chunk`` latent frames (``4*chunk`` video frames) at a time.

        With ``tile`` (pixels), a frame larger than that is decoded in overlapping ``tile``-sized squares
        (``overlap`` pixels shared by neighbours, blended linearly across the overlap), each with its own
        feature cache, so streaming in time stays exact per tile and the working memory is a tile's. The
        decoder's middle block attends over the whole (tile) frame, so tiles differ from one pass near
        their borders, as diffusers' ``tiled_decode`` does (which decodes each tile's whole video at once).
        ``cache_device`` (e.g. "cpu") keeps the tiles' caches there between their turns.
        """
        _set_conv_layout(self.wan, z.device)
        rows = _tiles(z.shape[3], tile, overlap)
        cols = _tiles(z.shape[4], tile, overlap)
        if len(rows) == 1 and len(cols) == 1:
            cache: list = [None] * _count_causal_convs(self.wan.decoder)
            for start, end in _chunks(z.shape[2], chunk):
                x = self.wan.post_quant_conv(z[:, :, start:end])
                yield self.wan.decoder(x, feat_cache=cache, feat_idx=[0])
            return
        n = _count_causal_convs(self.wan.decoder)
        caches = {(r, c): [None] * n for r in rows for c in cols}
        wy, wx = _blend_weights(rows, z.shape[3], z), _blend_weights(cols, z.shape[4], z)
        for start, end in _chunks(z.shape[2], chunk):
            out = None
            for (r0, r1), ry in zip(rows, wy):
                for (c0, c1), cx in zip(cols, wx):
                    cache = caches[(r0, r1), (c0, c1)]
                    _move_cache(cache, z.device)
                    x = self.wan.post_quant_conv(z[:, :, start:end, r0:r1, c0:c1])
                    pixels = self.wan.decoder(x, feat_cache=cache, feat_idx=[0])
                    if cache_device is not None:
                        _move_cache(cache, cache_device)
                    if out is None:  # blended in float32: a bf16 sum would add rounding at the seams
                        out = pixels.new_zeros(*pixels.shape[:3], z.shape[3] * SPACE_STRIDE, z.shape[4] * SPACE_STRIDE,
                                               dtype=torch.float32)
                    weight = ry.to(out)[:, None] * cx.to(out)[None, :]
                    out[..., r0 * SPACE_STRIDE:r1 * SPACE_STRIDE, c0 * SPACE_STRIDE:c1 * SPACE_STRIDE] += pixels * weight
                    del pixels, x
            yield out.to(z.dtype)

    def moments(self, x: torch.Tensor) -> torch.Tensor:
        """All posterior moments in two encoder calls (whole chunks are cheaper on CPU)."""
        return torch.cat(list(self.iter_moments(x, chunk=max(1, x.shape[2] // TIME_STRIDE))), dim=2)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """All unclamped frames of raw latents in two decoder calls."""
        return torch.cat(list(self.iter_pixels(z, chunk=max(1, z.shape[2]))), dim=2)

    # -- ComfyUI-facing API ----------------------------------------------------------------------
    def _check_frames(self, frames: torch.Tensor, pad: bool) -> int:
        """Validate frames and return the frame count to encode (``T``, or the next 4k+1 with ``pad``)."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ShapeError(f"expected frames [T, H, W, 3] (ComfyUI IMAGE, one video), got {list(frames.shape)}")
        if not frames.is_floating_point():
            raise SemanticGenError(f"expected float frames in 0..1, got {frames.dtype}")
        n, h, w = frames.shape[:3]
        if h % SPACE_STRIDE or w % SPACE_STRIDE:
            raise ShapeError(f"frame size {h}x{w} (HxW) is not a multiple of {SPACE_STRIDE}: use height "
                             f"{_valid_sizes(h)} and width {_valid_sizes(w)} (resize or crop the video)")
        if n == 0:
            raise ShapeError("got 0 frames; the VAE needs at least 1")
        lower, upper = valid_frame_counts(n)
        if lower != n and not pad:
            raise ShapeError(f"got {n} frames, but Wan's VAE takes 4k+1 frames (nearest: {lower} or {upper}); "
                             f"pass pad=True to repeat the last frame up to {upper} (decode then trims back to {n})")
        return n if lower == n else upper

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, pad: bool = False, sample: bool = False,
               generator: torch.Generator | None = None, chunk: int = 1, progress: Progress | None = None,
               should_stop: ShouldStop | None = None) -> tuple[torch.Tensor, int]:
        """Frames ``[T, H, W, 3]`` in 0..1 -> (normalised latents ``[1, 16, T', H/8, W/8]`` on the CPU, T).

        Uses the posterior mean unless ``sample``. ``T`` must be 4k+1 unless ``pad``, which repeats the
        last frame up to the next 4k+1; the returned T is the real count, for ``decode(num_frames=T)``.
        Frames go to the VAE's device ``4*chunk`` at a time.
        """
        padded = self._check_frames(frames, pad)
        n = frames.shape[0]
        if padded > n:
            frames = torch.cat([frames, frames[-1:].expand(padded - n, -1, -1, -1)])
        x = frames.permute(3, 0, 1, 2).unsqueeze(0) * 2 - 1  # [1, 3, T, H, W] in -1..1
        total, outs = len(_chunks(padded, TIME_STRIDE * chunk)), []
        for i, moments in enumerate(_interruptible(self.iter_moments(x, chunk), should_stop, "VAE encode")):
            mean, logvar = moments.float().chunk(2, dim=1)
            if sample:
                noise = torch.randn(mean.shape, generator=generator, device=mean.device)
                mean = mean + noise * torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            outs.append(self.normalize(mean).cpu())
            if progress is not None:
                progress(i + 1, total)
        return torch.cat(outs, dim=2), n

    def _check_latents(self, latents: torch.Tensor, num_frames: int | None) -> int:
        """Validate latents and return how many frames to decode."""
        if latents.ndim != 5 or latents.shape[0] != 1 or latents.shape[1] != self.z_dim:
            raise ShapeError(f"expected latents [1, {self.z_dim}, T', H/8, W/8] (one video), "
                             f"got {list(latents.shape)}")
        full = (latents.shape[2] - 1) * TIME_STRIDE + 1
        if num_frames is not None and not 1 <= num_frames <= full:
            raise ShapeError(f"num_frames={num_frames} but {latents.shape[2]} latent frames decode to {full} frames")
        return full if num_frames is None else num_frames

    @torch.no_grad()
    def decode_iter(self, latents: torch.Tensor, num_frames: int | None = None, chunk: int = 0,
                    progress: Progress | None = None, should_stop: ShouldStop | None = None,
                    tile: int | None = None, overlap: int = 64,
                    cache_device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
        """Yield frames ``[t, H, W, 3]`` (CPU float, 0..1) as they are decoded: the first frame, then
        ``4*chunk`` frames at a time (``chunk`` 0: ``decode_chunk``'s for the frame or tile), stopping after
        ``num_frames`` (to trim a padded video).

        ``tile`` (pixels) decodes frames larger than that in overlapping tiles (see ``iter_pixels``)."""
        wanted = self._check_latents(latents, num_frames)
        param = next(self.wan.parameters())
        z = self.denormalize(latents.to(param.device, param.dtype))
        if chunk < 1:
            chunk = decode_chunk(z.shape[2], z.shape[3] * SPACE_STRIDE, z.shape[4] * SPACE_STRIDE, param.dtype, tile)
        total, done = decode_steps(z.shape[2], chunk), 0
        pixel_chunks = self.iter_pixels(z, chunk, tile=tile, overlap=overlap, cache_device=cache_device)
        for i, pixels in enumerate(_interruptible(pixel_chunks, should_stop, "VAE decode")):
            frames = ((pixels[0].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).cpu()[: wanted - done]
            done += frames.shape[0]
            if progress is not None:
                progress(i + 1, total)
            yield frames
            if done == wanted:
                return

    def decode(self, latents: torch.Tensor, num_frames: int | None = None, chunk: int = 0,
               progress: Progress | None = None, should_stop: ShouldStop | None = None,
               tile: int | None = None, overlap: int = 64,
               cache_device: str | torch.device | None = None) -> torch.Tensor:
        """Normalised latents ``[1, 16, T', H/8, W/8]`` -> frames ``[T, H, W, 3]`` in 0..1 on the CPU
        (``decode_iter``'s frames, together)."""
        return torch.cat(list(self.decode_iter(latents, num_frames, chunk, progress, should_stop, tile, overlap,
                                               cache_device)))

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, info: dict | None = None, dtype: torch.dtype = torch.float32) -> None:
        """Write the embedded default's VAE file: weights in ``dtype``, config (with latent stats) in the
        metadata. Loading casts back to the dtype asked for."""
        from .model_files import save_model  # imports this module: import it late
        from .presets import EMBEDDED

        save_model(path, "vae", {"vae": self}, EMBEDDED, info, dtype=dtype)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, config: Mapping | None = None,
                        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> VideoVAE:
        """Load a VAE from

        - a SemanticGen VAE file (written by ``save``; its config is in the metadata),
        - a single ``.safetensors`` file in the original Wan layout (ComfyUI's ``models/vae``, e.g.
          ``wan_2.1_vae.safetensors``) or in diffusers' layout, loaded into ``config`` (default: Wan2.1's),
        - a diffusers folder holding ``config.json`` or ``vae/config.json`` with its weights.

        Every weight must match: a missing, extra or misshapen key raises ``CheckpointError``.
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"VAE not found: {path} does not exist. {_NOT_FOUND_HINT}")
        if path.is_dir():
            folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
            if not (folder / "config.json").is_file():
                raise CheckpointError(f"{path} is a folder without config.json or vae/config.json. {_NOT_FOUND_HINT}")
            config = json.loads((folder / "config.json").read_text())
            return cls._load(config, load_state_dict(folder), f"Wan VAE from {folder}", dtype, device)
        from .model_files import load_model, read_metadata  # they import this module: import them late

        if read_metadata(path).get("format") == MODEL_FILE_FORMAT:
            return load_model(path, "vae", dtype, device).modules["vae"]
        state = load_state_dict(path)
        if "encoder.conv1.weight" in state:  # the original Wan layout, as ComfyUI keeps it
            if "conv2.weight" in state and state["conv2.weight"].shape[0] != 16:
                raise CheckpointError(f"{path} has {state['conv2.weight'].shape[0]} latent channels: it is not "
                                      "the Wan2.1 VAE (16 channels; Wan2.2-5B's 48-channel VAE is not supported)")
            state = convert_wan_vae_to_diffusers(state)
        return cls._load(config or wan21_vae_config(), state, f"Wan2.1 VAE from {path}", dtype, device)

    @classmethod
    def _load(cls, config: Mapping, state: dict[str, torch.Tensor], what: str, dtype: torch.dtype,
              device: str | torch.device) -> VideoVAE:
        with init_empty_weights():  # no second copy of the weights in memory
            vae = cls.from_config(config)
        load_into(vae.wan, {k: v.to(dtype) for k, v in state.items()}, what)
        return vae.to(device).eval()

