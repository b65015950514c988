"""VAE decode: LATENT -> IMAGE frames, decoded chunk by chunk and streamed to the CPU."""

from __future__ import annotations

import torch

from ..semanticgen_core.errors import ShapeError
from . import comfy, latent_format
from .loaders import ready
from .model_cache import LoadedModel


class SemanticGenVAEDecode:
    CATEGORY = "SemanticGen/latent"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The video as a batch of frames [T, H, W, 3] in 0..1.",)
    DESCRIPTION = ("Decodes video latents a few frames at a time with the causal VAE's feature cache (exactly the "
                   "same frames as one pass), so memory stays flat however long the video is.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("SEMANTICGEN_VAE", {"tooltip": "From SemanticGen Load VAE (the VAE stage 2 was trained with)."}),
            "latent": ("LATENT", {"tooltip": "Wan2.1-layout video latents [B, 16, T', H/8, W/8], raw as in core "
                                             "ComfyUI (from SemanticGen Stage 2, or core Wan nodes)."}),
            "chunk": ("INT", {"default": 1, "min": 1, "max": 64,
                              "tooltip": "Latent frames decoded per step (each is 4 video frames). 1 uses the least "
                                         "memory; larger is a little faster on a CPU."}),
        }}

    def decode(self, vae: LoadedModel, latent: dict, chunk: int = 1):
        samples = latent["samples"]
        if samples.ndim != 5:
            raise ShapeError(f"SemanticGen VAE Decode takes video latents [B, 16, T', H/8, W/8], got "
                             f"{list(samples.shape)}: an image latent? Use core VAE Decode for images.")
        ready(vae)
        model = vae["vae"]
        num_frames = latent.get("semanticgen_num_frames")
        steps_per_video = 1 + -(-(samples.shape[2] - 1) // chunk)
        progress = comfy.Progress("VAE decode", steps_per_video * samples.shape[0])
        videos = []
        for b in range(samples.shape[0]):
            done = b * steps_per_video
            frames = model.decode(latent_format.from_comfy(samples[b:b + 1]), num_frames=num_frames, chunk=chunk,
                                  progress=lambda i, total: progress(done + i, progress.total),
                                  should_stop=comfy.should_stop)
            videos.append(frames)
        return (torch.cat(videos).float(),)
