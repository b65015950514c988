"""SemanticGen's own model files: one safetensors file per part, with its architecture in the metadata.

A part is what one loader node loads: ``stage1`` (SemanticDiT), ``stage2`` (compressor + LatentDiT,
trained together), ``semantic_encoder`` and ``vae``; and ``baseline``, the single-stage model (stage 2's
DiT from text alone, full attention) that long-video and convergence figures compare against. The metadata also carries the preset (plan
geometry, text encoder, sampling defaults), so a file is self-describing: no config file beside it to
lose or mismatch. ``preview`` is the plan-preview decoder (``plan_preview.py``): it draws a plan of one
compressor as low-resolution frames, for the Plan Preview node and the editor's timeline; ``aligner`` scores
plans of one compressor against prompts, for stage 1's alignment guidance (``plan_alignment.py``).
Files are written atomically; loading checks the kind, the format version and every key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError, safe_open

from .checkpoints import init_empty_weights, load_into, load_state_dict, save_file_atomic
from .compressor import SemanticCompressor
from .errors import CheckpointError
from .formats import MODEL_FILE_FORMAT, MODEL_FILE_VERSION
from .latent_dit import LatentDiT
from .plan_alignment import PlanTextAligner
from .plan_preview import PlanPreviewDecoder
from .presets import Preset
from .semantic_dit import SemanticDiT
from .semantic_encoder import QwenVisionEncoder
from .vae import VideoVAE

FORMAT, VERSION = MODEL_FILE_FORMAT, MODEL_FILE_VERSION


def _module_config(module: torch.nn.Module) -> dict:
    if isinstance(module, QwenVisionEncoder):
        return module.model.config.to_dict()
    return dict(module.config)


def _clean(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


# kind -> builder(configs, preset) of the modules that make up the part, by name
BUILDERS: dict[str, Callable[[dict, Preset], dict[str, torch.nn.Module]]] = {
    "stage1": lambda c, p: {"stage1": SemanticDiT(**_clean(c["stage1"]))},
    "stage2": lambda c, p: {"compressor": SemanticCompressor(**_clean(c["compressor"])),
                            "stage2": LatentDiT(**_clean(c["stage2"]))},
    "semantic_encoder": lambda c, p: {"encoder": QwenVisionEncoder.from_config(c["encoder"], p.sample_fps,
                                                                               name=f"qwen2.5-vl-vision:{p.name}")},
    "vae": lambda c, p: {"vae": VideoVAE.from_config(_clean(c["vae"]))},
    "baseline": lambda c, p: {"baseline": LatentDiT(**_clean(c["baseline"]))},
    "preview": lambda c, p: {"preview": PlanPreviewDecoder(**_clean(c["preview"]))},
    "aligner": lambda c, p: {"aligner": PlanTextAligner(**_clean(c["aligner"]))},
}


@dataclass
class ModelFile:
    kind: str
    modules: dict[str, torch.nn.Module]
    preset: Preset
    info: dict  # training provenance: steps, CPU time, data


def save_model(path: str | os.PathLike, kind: str, modules: dict[str, torch.nn.Module], preset: Preset,
               info: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """Write a part (its modules' weights, optionally cast to ``dtype``) atomically to ``path``."""
    save_states(path, kind, {n: m.state_dict() for n, m in modules.items()},
                {n: _module_config(m) for n, m in modules.items()}, preset, info, dtype)


def save_states(path: str | os.PathLike, kind: str, states: dict[str, dict[str, torch.Tensor]], configs: dict[str, dict],
                preset: Preset, info: dict | None = None, dtype: torch.dtype | None = None) -> None:
    """``save_model`` from state dicts and configs (the trainer's gathered, averaged weights)."""
    if kind not in BUILDERS:
        raise CheckpointError(f"unknown model kind {kind!r}: one of {', '.join(BUILDERS)}")
    tensors = {}
    for name, state in states.items():
        for key, value in state.items():
            value = value.detach().cpu()
            tensors[f"{name}.{key}"] = (value.to(dtype) if dtype and value.is_floating_point() else value).contiguous()
    metadata = {"format": FORMAT, "version": str(VERSION), "kind": kind, "config": json.dumps(configs),
                "preset": json.dumps(preset.to_dict()), "info": json.dumps(info or {})}
    save_file_atomic(tensors, path, metadata)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be truncated: "
                              "copy or train it again") from None


def load_model(path: str | os.PathLike, kind: str, dtype: torch.dtype = torch.float32,
               device: str | torch.device = "cpu") -> ModelFile:
    """Load a part written by ``save_model``, checking that it is the expected kind."""
    meta = read_metadata(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a SemanticGen {kind} file (no '{FORMAT}' metadata): SemanticGen "
                              f"files are written by the training recipes; other checkpoints go to other loaders")
    if meta.get("kind") != kind:
        raise CheckpointError(f"{path} holds a SemanticGen {meta.get('kind')!r} model, not {kind!r}: "
                              f"pick it in the {meta.get('kind')} loader")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path} has format version {meta['version']}, newer than this code reads "
                              f"({VERSION}): update ComfyUI-SemanticGen")
    configs, preset = json.loads(meta["config"]), Preset.from_dict(json.loads(meta["preset"]))
    with init_empty_weights():
        modules = BUILDERS[kind](configs, preset)
    state = load_state_dict(path)
    for name, module in modules.items():
        part = {k[len(name) + 1:]: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                for k, v in state.items() if k.startswith(name + ".")}
        load_into(module, part, f"SemanticGen {kind} ({name}) from {path}")
        module.to(device).eval()
    extra = set(k.split(".", 1)[0] for k in state) - set(modules)
    if extra:
        raise CheckpointError(f"{path} holds unexpected modules {sorted(extra)} for a {kind} file")
    return ModelFile(kind, modules, preset, json.loads(meta.get("info", "{}")))
