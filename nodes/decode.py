"""VAE decode: LATENT -> IMAGE frames, or straight to an mp4, decoded chunk by chunk and streamed to the CPU."""

from __future__ import annotations

import logging
import os
from typing import Iterator

import torch

from semanticgen_core.errors import SemanticGenError, ShapeError

from . import comfy, latent_format
from .loaders import ready
from .model_cache import LoadedModel
from .plans import next_path
from .video import SAVE_INPUTS, VideoFileWriter, video_ui

log = logging.getLogger("SemanticGen")

CHUNK_INPUT = ("INT", {"default": 0, "min": 0, "max": 64,
                       "tooltip": "Latent frames decoded per step (each is 4 video frames). 0: as many as fit a "
                                  "1 GiB working-memory budget (a short clip in one step after its first frame: "
                                  "each step pays the decoder's per-call overhead, most of a small clip's "
                                  "decode time on a CPU); 1 uses the least memory."})


# Spatial tiling: frames larger than TILE_ABOVE pixels (480p and up) decode in TILE_SIZE squares sharing
# TILE_OVERLAP pixels (diffusers' AutoencoderKLWan tiling sizes), so the decoder's working memory and, on a
# GPU, its feature caches (kept on the offload device between their tiles' turns) are a tile's, not a
# frame's. Tiles are blended across their overlap: close to, not exactly, one pass. SEMANTICGEN_VAE_TILE
# overrides the tile size in pixels (0: never tile; N: tile every frame larger than N a side),
# SEMANTICGEN_VAE_TILE_OVERLAP the overlap.
TILE_SIZE, TILE_OVERLAP, TILE_ABOVE = 256, 64, 512 * 512


def _env_pixels(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        pixels = int(value)
    except ValueError:
        raise SemanticGenError(f"{name}={value!r} is not a whole number of pixels: unset it, or set e.g. "
                               f"{name}={default}") from None
    if pixels < 0:
        raise SemanticGenError(f"{name}={pixels}: give 0 or more pixels")
    return pixels


def tiling(height: int, width: int) -> tuple[int | None, int]:
    """(tile size in pixels or None for one pass, overlap) for frames of this size."""
    overlap = _env_pixels("SEMANTICGEN_VAE_TILE_OVERLAP", TILE_OVERLAP)
    if "SEMANTICGEN_VAE_TILE" in os.environ:
        size = _env_pixels("SEMANTICGEN_VAE_TILE", TILE_SIZE)
        tile = size if size > 0 and max(height, width) > size else None
    else:
        tile = TILE_SIZE if height * width > TILE_ABOVE else None
    return tile, (min(overlap, tile // 2) if tile else overlap)  # a tile must keep a part of its own


def decode_streams(vae: LoadedModel, latent: dict, chunk: int, node: str) -> Iterator[Iterator[torch.Tensor]]:
    """One lazy stream of frame chunks ``[t, H, W, 3]`` per video of the batch, on one progress bar; ``chunk``
    latent frames a step (0: ``decode_chunk``'s)."""
    from semanticgen_core.vae import decode_chunk, decode_memory, decode_steps  # diffusers: not at the pack's import

    samples = latent["samples"]
    if samples.ndim != 5:
        raise ShapeError(f"{node} takes video latents [B, 16, T', H/8, W/8], got {list(samples.shape)}: "
                         "an image latent? Use core VAE Decode for images.")
    height, width = samples.shape[3] * 8, samples.shape[4] * 8
    tile, overlap = tiling(height, width)
    chunk = chunk or decode_chunk(samples.shape[2], height, width, vae.dtype, tile)
    if vae.patcher is not None:  # inside ComfyUI: keep the decode's working memory free, as core does
        vae.ready(memory_required=decode_memory(height, width, chunk, vae.dtype, tile))
    else:
        ready(vae)
    model = vae["vae"]
    offload = comfy.offload_device()
    cache_device = offload if tile and vae.device != offload else None
    num_frames = latent.get("semanticgen_num_frames")
    steps_per_video = decode_steps(samples.shape[2], chunk)
    progress = comfy.Progress("VAE decode", steps_per_video * samples.shape[0])
    for b in range(samples.shape[0]):
        done = b * steps_per_video
        yield model.decode_iter(latent_format.from_comfy(samples[b:b + 1]), num_frames=num_frames, chunk=chunk,
                                progress=lambda i, total, done=done: progress(done + i, progress.total),
                                should_stop=comfy.should_stop, tile=tile, overlap=overlap,
                                cache_device=cache_device)


class SemanticGenVAEDecode:
    CATEGORY = "SemanticGen/latent"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video as a batch of frames [T, H, W, 3] in 0..1.",)
    DESCRIPTION = ("Decodes video latents a few frames at a time with the causal VAE's feature cache (exactly the "
                   "same frames as one pass), so memory stays flat however long the video is. Frames larger than "
                   "512x512 pixels (480p and up) decode in overlapping 256-pixel tiles, blended, so memory is "
                   "a tile's (SEMANTICGEN_VAE_TILE=0 turns tiling off, =N sets the tile size).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SEMANTICGEN_VAE", {"tooltip": "From SemanticGen Load VAE (the VAE stage 2 was trained with)."}),
            "latent": ("LATENT", {"tooltip": "Wan2.1-layout video latents [B, 16, T', H/8, W/8], raw as in core "
                                             "ComfyUI (from SemanticGen Stage 2, or core Wan nodes)."}),
            "chunk": CHUNK_INPUT,
        }}

    def decode(self, vae: LoadedModel, latent: dict, chunk: int = 0):
        videos = [torch.cat(list(stream)) for stream in decode_streams(vae, latent, chunk, "SemanticGen VAE Decode")]
        return (torch.cat(videos).float(),)


class SemanticGenDecodeToVideo:
    CATEGORY = "SemanticGen/latent"
    FUNCTION = "decode"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    DESCRIPTION = ("Decodes video latents chunk by chunk and writes each chunk straight into an .mp4 in ComfyUI's "
                   "output folder, shown on the node: memory holds a few frames, never the whole video. Use it "
                   "instead of VAE Decode + Save Video for long videos, whose frames would not fit in RAM; use "
                   "those two when something else needs the frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SEMANTICGEN_VAE", {"tooltip": "From SemanticGen Load VAE (the VAE stage 2 was trained with)."}),
            "latent": ("LATENT", {"tooltip": "Wan2.1-layout video latents [B, 16, T', H/8, W/8], raw as in core "
                                             "ComfyUI. Several videos in the batch write one file each."}),
            **SAVE_INPUTS,
            "chunk": CHUNK_INPUT,
        }}

    def decode(self, vae: LoadedModel, latent: dict, fps: float = 8.0, filename_prefix: str = "SemanticGen/video",
               codec: str = "vp9", chunk: int = 0):
        videos = []
        for stream in decode_streams(vae, latent, chunk, "SemanticGen VAE Decode to Video"):
            path, subfolder = next_path(comfy.output_dir(), filename_prefix, ".mp4")
            with VideoFileWriter(path, fps, codec) as writer:
                for frames in stream:
                    writer.write(frames)
            log.info("SemanticGen: wrote %s (%d frames at %g fps)", path, writer.frames, fps)
            videos.append((path, subfolder, writer.frames))
        return {"ui": video_ui(videos)}
