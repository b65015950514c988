"""The two diffusion stages: stage 1 (text -> ``SEMANTIC_PLAN``) and stage 2 (plan + text -> LATENT)."""

from __future__ import annotations

import logging

import torch

from semanticgen_core.errors import SemanticGenError
from semanticgen_core.formats import SAMPLERS

from . import comfy, latent_format
from .loaders import ready
from .model_cache import LoadedModel
from .text import TextConditioning

log = logging.getLogger("SemanticGen")

MAX_SEED = 0xFFFFFFFFFFFFFFFF
# Video sides are multiples of 16: the VAE's 8x spatial stride times stage 2's 2x2 patches (every Wan2.1 model).
SIZE_MULTIPLE = 16
MAX_SIZE = 4096
STAGE1_NODE = "SemanticGen Stage 1: Plan from Text"
STAGE2_NODE = "SemanticGen Stage 2: Render Plan"


def size_problem(node: str, name: str, value: int, minimum: int = SIZE_MULTIPLE, maximum: int = MAX_SIZE,
                 zero_ok: bool = False) -> str | None:
    """What is wrong with a video side ``value`` given to input ``name`` of ``node``, or None.

    The message names the node, the input and the nearest valid values, so a bad size stops at the first node
    that takes it instead of a tensor error inside stage 2.
    """
    if zero_ok and value == 0:
        return None
    if value < minimum:
        return f"{node}: {name} {value} is below the minimum {minimum}" + (" (0 keeps the video's own)." if zero_ok else ".")
    if value > maximum:
        return f"{node}: {name} {value} is above the maximum {maximum}."
    if value % SIZE_MULTIPLE:
        below = value // SIZE_MULTIPLE * SIZE_MULTIPLE
        nearest = [v for v in (below, below + SIZE_MULTIPLE) if max(minimum, SIZE_MULTIPLE) <= v <= maximum]
        return (f"{node}: {name} {value} is not a multiple of {SIZE_MULTIPLE} (the VAE's 8x stride times stage 2's "
                f"2x2 patches): use {' or '.join(map(str, nearest))}.")
    return None


def check_size(node: str, **sides: int) -> None:
    """Raise a SemanticGenError naming the node and input of the first bad side (see ``size_problem``)."""
    for name, value in sides.items():
        problem = size_problem(node, name, int(value))
        if problem:
            raise SemanticGenError(problem)


def sampling_inputs(steps: int) -> dict:
    """Widgets shared by both stages (defaults: the embedded default's)."""
    return {
        "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                         "tooltip": "Seed of the starting noise (drawn on the CPU: the same seed gives the same "
                                    "result on any device)."}),
        "steps": ("INT", {"default": steps, "min": 1, "max": 1000,
                          "tooltip": "Denoising steps. The embedded default uses 10; Wan-sized models 30-50."}),
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


def dit_memory(num_frames: int, height: int, width: int, dtype: torch.dtype, batch: int = 2) -> int:
    """Working memory of a stage-2 step beside its weights, as core estimates it for its Wan models
    (``BaseModel.memory_required``: 1% of a MiB per latent element of the batch, factor 1), with the
    conditional and unconditional passes of guidance as a batch of 2."""
    from semanticgen_core.pipeline import latent_frames

    elements = batch * latent_frames(num_frames) * (height // 8) * (width // 8)
    return int(elements * torch.finfo(dtype).bits // 8 * 0.01 * 2 ** 20)


def _options(seed, steps, guidance, shift, sampler, alignment=None, alignment_stop=None):
    from semanticgen_core.sampling import SamplingOptions

    return SamplingOptions(steps=steps, sampler=sampler, shift=shift, guidance=guidance, seed=seed, alignment=alignment,
                           alignment_stop=alignment_stop)


def _pipeline(preset, name, **parts):
    from semanticgen_core.pipeline import SemanticGenPipeline

    kwargs = dict(text_encoder=None, stage1=None, compressor=None, stage2=None, vae=None)
    kwargs.update(parts)
    return SemanticGenPipeline(preset=preset, name=name, **kwargs)


def _preset_name(model: LoadedModel) -> str:
    return model.preset.name if model.preset is not None else model.name


def aligner_misfit(aligner: LoadedModel, stage1: LoadedModel) -> str | None:
    """Why the aligner cannot score this stage 1's plans, or None if it can."""
    align, dit = aligner["aligner"], stage1["stage1"]
    if _preset_name(aligner) == _preset_name(stage1) and (align.config.text_dim, align.config.plan_dim) == (
            dit.config.text_dim, dit.config.in_channels):
        return None
    return (f"the aligner {aligner.name} ({_preset_name(aligner)} plans, {align.config.text_dim}-d text) does not fit "
            f"stage 1 {stage1.name} ({_preset_name(stage1)} plans, {dit.config.text_dim}-d text)")


def usable_aligner(aligner: LoadedModel | None, stage1: LoadedModel):
    """The aligner's module if it scores this stage 1's plans, else None, with a warning saying why: the example
    workflows connect the embedded aligner, and with another stage 1 they still run, unguided."""
    if aligner is None:
        return None
    misfit = aligner_misfit(aligner, stage1)
    if misfit is None:
        return aligner["aligner"]
    log.warning("SemanticGen: %s: %s: sampled without alignment guidance. Connect the aligner trained for this stage 1 "
                "(python -m semanticgen_core.trainer aligner), or none.", STAGE1_NODE, misfit)
    return None


def candidate_parts(node: str, stage1: LoadedModel, stage2: LoadedModel, semantic_encoder: LoadedModel,
                    aligner: LoadedModel):
    """(semantic encoder, aligner) modules that read finished videos back and score them against the prompt, for
    best of N (``SemanticGenPipeline.best_of``); a clear error naming ``node`` if these models cannot."""
    from .plans import plan_encoder

    misfit = aligner_misfit(aligner, stage1)
    if misfit:
        raise SemanticGenError(f"{node}: {misfit}: best of N scores each video with the aligner trained for this "
                               "stage 1 (python -m semanticgen_core.trainer aligner).")
    return plan_encoder(semantic_encoder, stage2, node), aligner["aligner"]


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
            **sampling_inputs(10),
        }, "optional": {
            "aligner": ("SEMANTICGEN_ALIGNER", {"tooltip": "From SemanticGen Load Aligner: steers the plan toward the "
                                                           "prompt (above all, which way things move)."}),
            "alignment": ("FLOAT", {"default": 100.0, "min": 0.0, "max": 10000.0, "step": 1.0, "round": 0.1,
                                    "tooltip": "Weight of alignment guidance with the connected aligner (the embedded "
                                               "default's: 100); 0 turns it off. Without an aligner it does nothing."}),
            "alignment_stop": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 1.0, "step": 0.05, "round": 0.01,
                                         "tooltip": "Noise level (1: pure noise) below which alignment guidance "
                                                    "stops: it steers the first steps, where stage 1 settles which "
                                                    "way things move. -1: the model's own (0.75 for the embedded "
                                                    "default); 0: every step."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        # Naming width and height here makes ComfyUI skip its own range check of them: size_problem does it.
        problems = [size_problem(STAGE1_NODE, name, value) for name, value in (("width", width), ("height", height))
                    if value is not None]
        problems = [p for p in problems if p]
        return "; ".join(problems) if problems else True

    def sample(self, stage1: LoadedModel, conditioning: TextConditioning, width: int, height: int, length: int,
               fps: float, seed: int, steps: int, guidance: float, shift: float, sampler: str,
               aligner: LoadedModel | None = None, alignment: float = 100.0, alignment_stop: float = -1.0):
        check_size(STAGE1_NODE, width=width, height=height)  # linked values skip VALIDATE_INPUTS
        ready(stage1, aligner)
        dit = stage1["stage1"]
        conditioning.check(dit.config.text_dim, f"stage 1 ({stage1.name})")
        align = usable_aligner(aligner, stage1)
        pipe = _pipeline(stage1.preset, _preset_name(stage1), stage1=dit, aligner=align)
        plan = pipe.generate_plan(conditioning.prompt, length, fps, height, width,
                                  _options(seed, steps, guidance, shift, sampler, alignment,
                                           None if alignment_stop < 0 else alignment_stop),
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
            **sampling_inputs(10),
            "window_frames": ("INT", {"default": -1, "min": -1, "max": 4096,
                                      "tooltip": "Attention window in latent frames (shifted by half on odd layers, "
                                                 "so cost grows linearly with length). -1: the model's own setting; "
                                                 "0: full attention over the whole video. A plain Wan2.1 DiT "
                                                 "renders with full attention only (-1 or 0)."}),
        }}

    def sample(self, stage2: LoadedModel, plan, conditioning: TextConditioning, seed: int, steps: int,
               guidance: float, shift: float, sampler: str, window_frames: int):
        if conditioning is None:  # an Edit Plan node without a conditioning input passes none on
            raise SemanticGenError(f"{STAGE2_NODE}: no conditioning arrived: connect SemanticGen Text Encode to this "
                                   "node, or to the conditioning input of the SemanticGen Edit Plan node it comes from.")
        ready(stage2, memory_required=dit_memory(plan.num_frames, plan.height, plan.width, stage2.dtype))
        dit = stage2["stage2"]
        conditioning.check(dit.config.text_dim, f"stage 2 ({stage2.name})")
        plain = bool(stage2.info.get("plain_wan"))  # a Wan2.1 DiT: the plan's tokens are not used
        if not plain and plan.tokens.shape[-1] != dit.config.semantic_dim:
            raise SemanticGenError(
                f"this plan has {plan.tokens.shape[-1]}-channel tokens (made by {plan.encoder}, compressor "
                f"{plan.compressor!r}) but stage 2 ({stage2.name}) renders {dit.config.semantic_dim}-channel plans: "
                "use the stage 1 / stage 2 / compressor of one model family.")
        if plan.height % SIZE_MULTIPLE or plan.width % SIZE_MULTIPLE:
            check_size(STAGE2_NODE, **{"plan's width": plan.width, "plan's height": plan.height})
        pipe = _pipeline(stage2.preset, _preset_name(stage2), stage2=dit, compressor=stage2["compressor"],
                         plain_wan=plain)
        if plain and window_frames > 0:
            raise SemanticGenError(
                f"{STAGE2_NODE}: window_frames {window_frames} needs a SemanticGen stage-2 file, but {stage2.name} is a "
                "plain Wan2.1 DiT, which was trained with full attention only: set window_frames to -1 or 0.")
        if plain:
            log.warning("SemanticGen: %s", PLAIN_WAN_NOTE.format(name=stage2.name))
        window = -1 if window_frames < 0 else (None if window_frames == 0 else window_frames)
        latents = pipe.render_latents(plan, _options(seed, steps, guidance, shift, sampler),
                                      prompt=conditioning.prompt, window_frames=window,
                                      progress=comfy.Progress("stage 2", steps), should_stop=comfy.should_stop,
                                      text_embeddings=conditioning.embeddings())
        # Keep the real frame count and rate with the latents: the VAE decodes 4k+1 frames and trims to it.
        out = ({"samples": latent_format.to_comfy(latents), "semanticgen_num_frames": plan.num_frames,
                "semanticgen_fps": plan.video_fps},)
        if plain:  # shown on the node in ComfyUI, and in the runner's result
            return {"ui": {"text": [PLAIN_WAN_NOTE.format(name=stage2.name)]}, "result": out}
        return out


PLAIN_WAN_NOTE = ("{name} is a plain Wan2.1 DiT: rendered as Wan2.1 text-to-video with full attention and no plan "
                  "(its plan layers were never trained); the plan gave only the size, length and frame rate.")


BEST_OF_NODE = "SemanticGen Best of N Videos"


class SemanticGenBestOfN:
    CATEGORY = "SemanticGen/sampling"
    FUNCTION = "generate"
    RETURN_TYPES = ("IMAGE", "SEMANTIC_PLAN", "INT")
    RETURN_NAMES = ("images", "plan", "seed")
    OUTPUT_TOOLTIPS = ("The kept video as a batch of frames [T, H, W, 3] in 0..1.",
                       "Stage 1's plan of the kept video: save it, edit it, or render it again.",
                       "The kept video's seed: stage 1 and stage 2 at this seed make it again.")
    DESCRIPTION = ("Text to video, best of N: makes the video at N seeds (seed, seed + 1000, ...), each through stage 1, "
                   "stage 2 and the VAE, reads each back with the semantic encoder and keeps the one the aligner scores "
                   "as following the prompt best, above all in which way things move. N times the time of one video.")

    @classmethod
    def INPUT_TYPES(cls):
        stage1 = SemanticGenStage1Sample.INPUT_TYPES()
        required = dict(stage1["required"])
        shape = {k: required.pop(k) for k in ("width", "height", "length", "fps")}
        return {"required": {
            "stage1": required.pop("stage1"),
            "stage2": ("SEMANTICGEN_STAGE2", {"tooltip": "From SemanticGen Load Stage 2."}),
            "vae": ("SEMANTICGEN_VAE", {"tooltip": "From SemanticGen Load VAE."}),
            "semantic_encoder": ("SEMANTICGEN_ENCODER", {"tooltip": "From SemanticGen Load Semantic Encoder (the one "
                                                                    "stage 2 was trained with): reads each video back."}),
            "aligner": ("SEMANTICGEN_ALIGNER", {"tooltip": "From SemanticGen Load Aligner (the one trained for this "
                                                           "stage 1): scores each video read back against the prompt, "
                                                           "and steers stage 1."}),
            "conditioning": required.pop("conditioning"),
            **shape, **required,
            "candidates": ("INT", {"default": 4, "min": 1, "max": 64,
                                   "tooltip": "Videos to make and choose from (N times the time of one). At the "
                                              "embedded scale, 4 gets the direction of 54% of held-out objects right "
                                              "instead of 46%; more than 4 gains nothing."}),
        }, "optional": {k: v for k, v in stage1["optional"].items() if k != "aligner"}}

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None):
        return SemanticGenStage1Sample.VALIDATE_INPUTS(width=width, height=height)

    def generate(self, stage1: LoadedModel, stage2: LoadedModel, vae: LoadedModel, semantic_encoder: LoadedModel,
                 aligner: LoadedModel, conditioning: TextConditioning, width: int, height: int, length: int,
                 fps: float, seed: int, steps: int, guidance: float, shift: float, sampler: str, candidates: int,
                 alignment: float = 100.0, alignment_stop: float = -1.0):
        from .decode import decode_streams

        check_size(BEST_OF_NODE, width=width, height=height)  # linked values skip VALIDATE_INPUTS
        for model, key in ((stage1, "stage1"), (stage2, "stage2")):
            conditioning.check(model[key].config.text_dim, f"{key} ({model.name})")
        encoder, align = candidate_parts(BEST_OF_NODE, stage1, stage2, semantic_encoder, aligner)
        pipe = _pipeline(stage1.preset, _preset_name(stage1), stage1=stage1["stage1"], stage2=stage2["stage2"],
                         compressor=stage2["compressor"], semantic_encoder=encoder, aligner=align)
        opts = _options(seed, steps, guidance, shift, sampler, alignment, None if alignment_stop < 0 else alignment_stop)

        def prepare(phase: str) -> None:
            if phase == "generate":
                ready(stage1, stage2, aligner, memory_required=dit_memory(length, height, width, stage2.dtype))
            else:  # after the VAE's turn
                ready(semantic_encoder, stage2, aligner)

        def decode(latents: torch.Tensor) -> torch.Tensor:
            latent = {"samples": latent_format.to_comfy(latents), "semanticgen_num_frames": length}
            return torch.cat(list(next(decode_streams(vae, latent, 0, BEST_OF_NODE))))

        best, scores = pipe.best_of(conditioning.prompt, length, fps, height, width, opts, candidates, decode=decode,
                                    prepare=prepare, progress=comfy.Progress, should_stop=comfy.should_stop,
                                    text_embeddings=conditioning.embeddings())
        text = ("aligner's score of each video read back: "
                + ", ".join(f"seed {s}: {score:.2f}" for s, score in scores) + f"; kept seed {best.seed}")
        log.info("SemanticGen: %s: %s", BEST_OF_NODE, text)
        return {"ui": {"text": [text]}, "result": (best.frames.float(), best.plan, best.seed)}
