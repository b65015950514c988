"""Semantic plans: take one from a video, save it, load it.

A plan (``semanticgen_core.plan.SemanticPlan``) is the paper's intermediate representation: compressed
semantic tokens of the whole video plus its time base and prompts. Plans are ``.safetensors`` files
with a checksum, written under ComfyUI's output folder.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from semanticgen_core.errors import PlanFormatError, SemanticGenError
from . import comfy
from .loaders import ready
from .model_cache import LoadedModel

PLAN_EXT = ".safetensors"


class SemanticGenSemanticEncode:
    CATEGORY = "SemanticGen/plan"
    FUNCTION = "encode"
    RETURN_TYPES = ("SEMANTIC_PLAN",)
    RETURN_NAMES = ("plan",)
    OUTPUT_TOOLTIPS = ("The video's semantic plan: render it under a new prompt with stage 2 to keep its layout and "
                       "motion and change its look.",)
    DESCRIPTION = ("Takes a semantic plan from a video: the frozen semantic encoder's features, compressed by stage 2's "
                   "compressor (its mean, so the same video always gives the same plan).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "semantic_encoder": ("SEMANTICGEN_ENCODER", {"tooltip": "From SemanticGen Load Semantic Encoder."}),
            "stage2": ("SEMANTICGEN_STAGE2", {"tooltip": "From SemanticGen Load Stage 2: its compressor maps features "
                                                         "into the plan space that this stage 2 renders."}),
            "images": ("IMAGE", {"tooltip": "The video as a batch of frames (e.g. from SemanticGen Load Video). Its size "
                                            "becomes the plan's; use a multiple of 16 (64x64 for the embedded default)."}),
            "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 120.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Frame rate of the frames (Load Video outputs it: link it)."}),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "Optional caption stored in the plan (its segment prompt); stage 2 uses "
                                             "the prompt of its own conditioning input."}),
        }}

    def encode(self, semantic_encoder: LoadedModel, stage2: LoadedModel, images, fps: float, prompt: str = ""):
        from semanticgen_core.pipeline import SemanticGenPipeline

        from .sampling import size_problem

        if images.ndim != 4:
            raise SemanticGenError(f"SemanticGen Plan from Video: input 'images' must be frames [T, H, W, 3], got "
                                   f"{list(images.shape)}")
        # The plan takes the video's size, which stage 2 renders: refuse here what stage 2 could not render.
        for name, value in (("images' width", images.shape[2]), ("images' height", images.shape[1])):
            problem = size_problem("SemanticGen Plan from Video", name, int(value))
            if problem:
                raise SemanticGenError(f"{problem} Resize the frames first (SemanticGen Load Video's width and height).")
        encoder = plan_encoder(semantic_encoder, stage2, "SemanticGen Plan from Video")
        comfy.check_interrupt()
        ready(semantic_encoder, stage2)
        name = stage2.preset.name if stage2.preset is not None else stage2.name
        pipe = SemanticGenPipeline(preset=stage2.preset, text_encoder=None, stage1=None,
                                   compressor=stage2["compressor"], stage2=None, vae=None, semantic_encoder=encoder,
                                   name=name)
        progress = comfy.Progress("semantic encode", 1)
        plan = pipe.encode_video(images.float(), fps, prompt)
        progress(1, 1)
        return (plan,)


def plan_encoder(semantic_encoder: LoadedModel, stage2: LoadedModel, node: str):
    """The semantic encoder's module, set to read videos into stage 2's plan space (its compressor's features,
    sampled at the rate the compressor was trained at); a clear error naming ``node`` if it cannot."""
    compressor = stage2["compressor"]
    if compressor is None:
        raise SemanticGenError(
            f"{node}: input 'stage2' ({stage2.name}) has no trained compressor (it is "
            f"{stage2.info.get('warning', 'not a SemanticGen stage-2 file')}); taking a plan from a video needs a "
            "SemanticGen stage-2 file (or 'embedded').")
    encoder = semantic_encoder["encoder"]
    if encoder.feature_dim != compressor.config.in_dim:
        raise SemanticGenError(
            f"{node}: the semantic encoder ({semantic_encoder.name}) gives {encoder.feature_dim}-d features but the "
            f"compressor of {stage2.name} takes {compressor.config.in_dim}-d ones: use the encoder this stage 2 was "
            "trained with.")
    sample_fps = stage2.preset.sample_fps if stage2.preset is not None else encoder.sample_fps
    if encoder.sample_fps != sample_fps:
        if not semantic_encoder.info.get("checkpoint"):
            raise SemanticGenError(
                f"{node}: the semantic encoder ({semantic_encoder.name}) samples {encoder.sample_fps:g} frames a "
                f"second but the compressor of {stage2.name} was trained on features sampled at {sample_fps:g}: use "
                "the encoder this stage 2 was trained with.")
        # a Qwen2.5-VL checkpoint samples at the rate stage 2's compressor was trained at (a shallow copy: the
        # cached encoder, shared with other workflows, keeps its own)
        logging.getLogger(__name__).info("%s: %s samples %g frames a second, the rate %s was trained at", node,
                                         semantic_encoder.name, sample_fps, stage2.name)
        encoder = copy.copy(encoder)
        encoder.sample_fps = float(sample_fps)
    return encoder


def _resolve_plan(plan_path: str) -> Path:
    """A plan path: relative to the output folder (where Save Plan writes) or the input folder, or absolute."""
    if not plan_path.strip():
        raise PlanFormatError("no plan file given: type the path Save Plan printed (relative to ComfyUI's output "
                              "folder), or link Save Plan's plan_path output here.")
    path = Path(plan_path)
    if path.is_absolute():
        if not comfy.allow_absolute_paths() and not _inside(path, (comfy.output_dir(), comfy.input_dir())):
            raise PlanFormatError(f"{path} is outside ComfyUI's output and input folders; copy the plan into one.")
        candidates = [path]
    else:
        candidates = [comfy.output_dir() / path, comfy.input_dir() / path]
        if not path.suffix:
            candidates += [c.with_suffix(PLAN_EXT) for c in candidates]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise PlanFormatError(f"plan file {plan_path!r} not found (looked in {', '.join(str(c.parent) for c in candidates[:2])}). "
                          "Plans are written by SemanticGen Save Plan into ComfyUI's output folder.")


def _inside(path: Path, roots) -> bool:
    path = path.resolve()
    return any(path.is_relative_to(Path(root).resolve()) for root in roots)


def next_path(folder: Path, prefix: str, ext: str) -> tuple[Path, str]:
    """``folder/<prefix>_00001<ext>`` with the next free counter; the prefix may hold sub-folders.

    Returns (path, subfolder relative to ``folder``). Refuses to leave ``folder``.
    """
    prefix = prefix.strip() or "SemanticGen"
    target = (folder / prefix).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise SemanticGenError(f"filename_prefix {prefix!r} points outside the output folder {folder}.")
    directory, stem = target.parent, target.name
    directory.mkdir(parents=True, exist_ok=True)
    used = []
    for existing in directory.glob(f"{stem}_*{ext}"):
        digits = existing.name[len(stem) + 1:-len(ext)]
        if digits.isdigit():
            used.append(int(digits))
    path = directory / f"{stem}_{max(used, default=0) + 1:05d}{ext}"
    return path, directory.relative_to(folder.resolve()).as_posix() if directory != folder.resolve() else ""


class SemanticGenSavePlan:
    CATEGORY = "SemanticGen/plan"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("plan_path",)
    OUTPUT_TOOLTIPS = ("Where the plan was written, relative to ComfyUI's output folder (link it to Load Plan).",)
    DESCRIPTION = "Writes a semantic plan to ComfyUI's output folder (a checksummed .safetensors file)."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "plan": ("SEMANTIC_PLAN", {"tooltip": "The plan to save."}),
            "filename_prefix": ("STRING", {"default": "SemanticGen/plan",
                                           "tooltip": "File name prefix inside the output folder; may contain "
                                                      "sub-folders. A counter is appended (plan_00001.safetensors)."}),
        }}

    def save(self, plan, filename_prefix: str = "SemanticGen/plan"):
        out = comfy.output_dir()
        path, subfolder = next_path(out, filename_prefix, PLAN_EXT)
        plan.save(path)
        relative = path.resolve().relative_to(out.resolve()).as_posix()
        return {"ui": {"text": [relative], "plans": [{"filename": path.name, "subfolder": subfolder, "type": "output"}]},
                "result": (relative,)}


class SemanticGenLoadPlan:
    CATEGORY = "SemanticGen/plan"
    FUNCTION = "load"
    RETURN_TYPES = ("SEMANTIC_PLAN",)
    RETURN_NAMES = ("plan",)
    OUTPUT_TOOLTIPS = ("The plan, checked (format, version, checksum) on load.",)
    DESCRIPTION = "Loads a semantic plan written by SemanticGen Save Plan."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "plan_path": ("STRING", {"default": "SemanticGen/plan_00001.safetensors",
                                     "tooltip": "A plan file, relative to ComfyUI's output folder (as Save Plan "
                                                "reports it) or its input folder. Link Save Plan's plan_path here to "
                                                "save and render in one run."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, plan_path=None):
        if plan_path is None:  # linked: the file is written earlier in the same run
            return True
        try:
            _resolve_plan(plan_path)
        except SemanticGenError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, plan_path=None):
        if plan_path is None:  # linked: changes whenever the upstream node runs
            return float("nan")
        try:
            stat = _resolve_plan(plan_path).stat()
            return f"{stat.st_mtime_ns}:{stat.st_size}"
        except (SemanticGenError, OSError):
            return ""

    def load(self, plan_path: str):
        from semanticgen_core.plan import SemanticPlan

        return (SemanticPlan.load(_resolve_plan(plan_path)),)
