"""The two diffusion stages: stage 1 (text -> ``SEMANTIC_PLAN``) and stage 2 (plan + text -> LATENT)."""

from __future__ import annotations

from semanticgen_core.errors import SemanticGenError
from semanticgen_core.formats import SAMPLERS
from . import comfy, latent_format
from .loaders import ready
from .model_cache import LoadedModel
from .text import TextConditioning

MAX_SEED = 0xFFFFFFFFFFFFFFFF


def sampling_inputs(steps: int) -> dict:
    """Widgets shared by both stages (defaults: the embedded default's)."""
    return {
        "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                         "tooltip": "Seed of the starting noise (drawn on the CPU: the same seed gives the same "
                                    "result on any device)."}),
        "steps": ("INT", {"default": steps, "min": 1, "max": 1000,
                          "tooltip": "Denoising steps. The embedded default uses 20; Wan-sized models 30-50."}),
        "guidance": ("FLOAT", {"default": 2.5, "min": 1.0, "max": 30.0, "step": 0.1, "round": 0.01,
                               "tooltip": "Classifier-free guidance scale; 1 turns guidance off (one model call "
                                          "a step instead of two). The embedded default uses 2.5; Wan-sized "
                                          "models 5."}),
        "shift": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                            "tooltip": "Flow-matching schedule shift (Wan's flow_shift): higher spends more steps "
                                       "at high noise, which helps large frames. 3 for small videos, 5-8 for 480p+."}),
        "sampler": (list(SAMPLERS), {"default": "euler",
                               "tooltip": "euler: the paper's sampler. unipc: a multistep solver, good with fewer steps."}),
    }


def _options(seed, steps, guidance, shift, sampler):
    from semanticgen_core.sampling import SamplingOptions

    return SamplingOptions(steps=steps, sampler=sampler, shift=shift, guidance=guidance, seed=seed)


def _pipeline(preset, name, **parts):
    from semanticgen_core.pipeline import SemanticGenPipeline

    kwargs = dict(text_encoder=None, stage1=None, compressor=None, stage2=None, vae=None)
    kwargs.update(parts)
    return SemanticGenPipeline(preset=preset, name=name, **kwargs)


def _preset_name(model: LoadedModel) -> str:
    return model.preset.name if model.preset is not None else model.name


class SemanticGenStage1Sample:
    CATEGORY = "SemanticGen/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("SEMANTIC_PLAN",)
    RETURN_NAMES = ("plan",)
    OUTPUT_TOOLTIPS = ("The semantic plan of the whole video: layout, objects and motion, without texture.",)
    DESCRIPTION = ("Stage 1: diffuses a compact semantic plan of the whole video from text, with full attention over "
                   "all of it (global planning). Save it, edit it, or render it with stage 2.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "stage1": ("SEMANTICGEN_STAGE1", {"tooltip": "From SemanticGen Load Stage 1."}),
            "conditioning": ("SEMANTICGEN_CONDITIONING", {"tooltip": "From SemanticGen Text Encode."}),
            "width": ("INT", {"default": 64, "min": 16, "max": 4096, "step": 16,
                              "tooltip": "Video width in pixels (a multiple of 16). The embedded default was trained "
                                         "at 64x64; Wan2.1-1.3B at 832x480."}),
            "height": ("INT", {"default": 64, "min": 16, "max": 4096, "step": 16,
                               "tooltip": "Video height in pixels (a multiple of 16)."}),
            "length": ("INT", {"default": 33, "min": 1, "max": 100000, "step": 4,
                               "tooltip": "Frames. Wan's VAE takes 4k+1 frames (33 = 4 s at 8 fps); other counts "
                                          "are rendered padded and trimmed."}),
            "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 120.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Frame rate of the video. The plan samples it at the semantic encoder's "
                                         "low rate (4 fps for the embedded default, 1.6 fps for Qwen2.5-VL)."}),
            **sampling_inputs(20),
        }}

    def sample(self, stage1: LoadedModel, conditioning: TextConditioning, width: int, height: int, length: int,
               fps: float, seed: int, steps: int, guidance: float, shift: float, sampler: str):
        ready(stage1)
        dit = stage1["stage1"]
        conditioning.check(dit.config.text_dim, f"stage 1 ({stage1.name})")
        pipe = _pipeline(stage1.preset, _preset_name(stage1), stage1=dit)
        plan = pipe.generate_plan(conditioning.prompt, length, fps, height, width,
                                  _options(seed, steps, guidance, shift, sampler),
                                  progress=comfy.Progress("stage 1", steps), should_stop=comfy.should_stop,
                                  text_embeddings=conditioning.embeddings())
        return (plan,)


class SemanticGenStage2Sample:
    CATEGORY = "SemanticGen/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Wan2.1 VAE latents [1, 16, T', H/8, W/8], raw as in core ComfyUI (decode with SemanticGen "
                       "VAE Decode, or core VAE Decode with the Wan2.1 VAE).",)
    DESCRIPTION = ("Stage 2: renders VAE latents conditioned in-context on the plan, adding texture and detail under "
                   "the prompt. The same plan under a new prompt keeps layout and motion and changes the look.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "stage2": ("SEMANTICGEN_STAGE2", {"tooltip": "From SemanticGen Load Stage 2."}),
            "plan": ("SEMANTIC_PLAN", {"tooltip": "From stage 1, SemanticGen Plan from Video, or SemanticGen Load "
                                                  "Plan. The video's size, length and fps come from the plan."}),
            "conditioning": ("SEMANTICGEN_CONDITIONING", {"tooltip": "From SemanticGen Text Encode: the prompt "
                                                                     "that decides colour and texture."}),
            **sampling_inputs(20),
            "window_frames": ("INT", {"default": -1, "min": -1, "max": 4096,
                                      "tooltip": "Attention window in latent frames (shifted by half on odd layers, "
                                                 "so cost grows linearly with length). -1: the model's own setting; "
                                                 "0: full attention over the whole video."}),
        }}

    def sample(self, stage2: LoadedModel, plan, conditioning: TextConditioning, seed: int, steps: int,
               guidance: float, shift: float, sampler: str, window_frames: int):
        ready(stage2)
        dit = stage2["stage2"]
        conditioning.check(dit.config.text_dim, f"stage 2 ({stage2.name})")
        if plan.tokens.shape[-1] != dit.config.semantic_dim:
            raise SemanticGenError(
                f"this plan has {plan.tokens.shape[-1]}-channel tokens (made by {plan.encoder}, compressor "
                f"{plan.compressor!r}) but stage 2 ({stage2.name}) renders {dit.config.semantic_dim}-channel plans: "
                "use the stage 1 / stage 2 / compressor of one model family.")
        pipe = _pipeline(stage2.preset, _preset_name(stage2), stage2=dit, compressor=stage2["compressor"])
        window = -1 if window_frames < 0 else (None if window_frames == 0 else window_frames)
        latents = pipe.render_latents(plan, _options(seed, steps, guidance, shift, sampler), prompt=conditioning.prompt,
                                      window_frames=window, progress=comfy.Progress("stage 2", steps),
                                      should_stop=comfy.should_stop, text_embeddings=conditioning.embeddings())
        # Keep the real frame count and rate with the latents: the VAE decodes 4k+1 frames and trims to it.
        return ({"samples": latent_format.to_comfy(latents), "semanticgen_num_frames": plan.num_frames,
                 "semanticgen_fps": plan.video_fps},)
