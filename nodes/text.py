"""Text encode: a prompt (and an optional negative prompt) -> ``SEMANTICGEN_CONDITIONING``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from semanticgen_core.errors import SemanticGenError
from semanticgen_core.shots import split_shots
from . import comfy
from .model_cache import LoadedModel


@dataclass
class TextConditioning:
    """What flows on a SEMANTICGEN_CONDITIONING wire: both embeddings of classifier-free guidance."""

    cond: torch.Tensor      # [1, L, D] float32 on the CPU; [1, S, L, D] for a prompt of S timed shots
    uncond: torch.Tensor    # the same shape (the negative prompt, "" by default, for every shot)
    prompt: str
    negative_prompt: str
    encoder: str            # the text encoder's name, for messages

    @property
    def dim(self) -> int:
        return self.cond.shape[-1]

    def check(self, model_dim: int, what: str) -> None:
        """Raise a clear error when these embeddings do not fit a model's text width."""
        if self.dim != model_dim:
            hint = {384: "the embedded text encoder (all-MiniLM-L6-v2)", 4096: "umT5-XXL (umt5_xxl_fp16.safetensors)"}
            raise SemanticGenError(
                f"{what} expects {model_dim}-d text embeddings ({hint.get(model_dim, 'another text encoder')}), but "
                f"the prompt was encoded by {self.encoder} ({self.dim}-d): load the text encoder the model was "
                "trained with in SemanticGen Load Text Encoder.")

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cond, self.uncond


class SemanticGenTextEncode:
    CATEGORY = "SemanticGen/conditioning"
    FUNCTION = "encode"
    RETURN_TYPES = ("SEMANTICGEN_CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("The prompt's embeddings (and the negative prompt's), for both stages.",)
    DESCRIPTION = "Encodes a prompt for SemanticGen's stage 1 and stage 2 (they read the same text embeddings)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("SEMANTICGEN_TEXT_ENCODER", {"tooltip": "From SemanticGen Load Text Encoder."}),
            "prompt": ("STRING", {"multiline": True, "default": "a red circle moving from left to right on a blue background",
                                  "tooltip": "What the video shows. For several shots, give each its time range: "
                                             "'0-8 s: a red circle bouncing; 8-20 s: a blue star growing'. The embedded "
                                             "default was trained on captions of its procedural world: coloured shapes "
                                             "(circle, square, triangle, star), textures, backgrounds and motions."}),
            "negative_prompt": ("STRING", {"multiline": False, "default": "",
                                           "tooltip": "What to steer away from (classifier-free guidance's "
                                                      "unconditional prompt); empty is the usual choice."}),
        }}

    def encode(self, text_encoder: LoadedModel, prompt: str, negative_prompt: str = ""):
        comfy.check_interrupt()
        encoder = text_encoder.ready()["text_encoder"]
        shots = split_shots(prompt)  # "0-8 s: ...; 8-20 s: ...": one embedding per shot
        if shots is None:
            cond, _ = encoder.encode([prompt])
            uncond, _ = encoder.encode([negative_prompt])
        else:
            cond = encoder.encode([text for _, _, text in shots])[0][None]
            uncond = encoder.encode([negative_prompt] * len(shots))[0][None]
        return (TextConditioning(cond.float().cpu(), uncond.float().cpu(), prompt, negative_prompt, encoder.name),)
