"""One model cache for every SemanticGen node.

A loader node asks ``get(kind, path, dtype, load)``; the cache keys the model by (kind, path, the file's
mtime and size, dtype), so an unchanged file is loaded once per process, whichever workflow or node asks
again, and a file replaced on disk is loaded afresh. Models are held on the offload device (the CPU)
under a memory budget, least recently used first out.

What flows on a SemanticGen model wire is a ``LoadedModel``: the modules of one file, its preset, and
(inside ComfyUI) the core ``ModelPatcher`` wrapping them. Before a node runs a model it calls
``model.ready()``, which asks core's ``load_models_gpu`` to load it on the GPU, so ours and core's models
evict each other under ComfyUI's single memory budget; like core's own models, ours may be loaded partially
(``comfy.enable_offload``), so a model larger than the free memory still runs. Outside ComfyUI ``ready()``
moves the modules to the device itself.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import comfy

log = logging.getLogger("SemanticGen")


class Part(torch.nn.ModuleDict):
    """The modules of one model file under one parent, which is what a ModelPatcher wraps.

    (A diffusers model cannot be wrapped directly: ModelPatcher assigns ``model.device``, which is a
    read-only property on diffusers models.) ``part_class(kind)`` names a subclass per kind, so ComfyUI's
    log says "Requested to load SemanticGen_stage2".
    """


@functools.lru_cache(maxsize=None)
def part_class(kind: str) -> type[Part]:
    return type(f"SemanticGen_{kind}", (Part,), {"__module__": __name__})


@dataclass(eq=False)
class LoadedModel:
    kind: str                      # "text_encoder", "stage1", "stage2", "vae", "semantic_encoder"
    name: str                      # what the user picked, for messages
    path: str                      # the file (or folder) it came from
    part: Part                     # the modules, by name
    preset: Any = None             # semanticgen_core.presets.Preset of the file, when it carries one
    info: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float32
    patcher: Any = None            # comfy.model_patcher.ModelPatcher inside ComfyUI
    load_seconds: float = 0.0

    def __getitem__(self, name: str) -> torch.nn.Module | None:
        return self.part[name] if name in self.part else None

    def ready(self, memory_required: int = 0) -> "LoadedModel":
        """Make the modules ready on the load device; returns self for chaining.

        Inside ComfyUI, core may load them partially (what does not fit runs from the offload device, layer
        by layer), keeping ``memory_required`` bytes free for the computation that follows."""
        if self.patcher is not None:
            comfy.load_models([self.patcher], memory_required=memory_required)
        else:
            device = comfy.load_device()
            param = next(self.part.parameters(), None)
            if param is not None and param.device != device:
                self.part.to(device)
        return self

    @property
    def device(self) -> torch.device:
        param = next(self.part.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in list(self.part.parameters()) + list(self.part.buffers()))

    def __repr__(self) -> str:
        return f"<SemanticGen {self.kind} {self.name!r} ({self.dtype}, {self.nbytes() / 2**20:.1f} MiB)>"


def _file_key(path: Path) -> tuple:
    """Identity of what is on disk: a file's mtime and size, or (for a folder) those of its weight files."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".json", ".bin") and p.is_file())
        return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    stat = path.stat()
    return (stat.st_mtime_ns, stat.st_size)


def _default_budget() -> int:
    """Bytes of models kept in RAM: SEMANTICGEN_CACHE_GB, else half of the machine's memory."""
    if "SEMANTICGEN_CACHE_GB" in os.environ:
        return int(float(os.environ["SEMANTICGEN_CACHE_GB"]) * 2**30)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


class ModelCache:
    """LRU cache of ``LoadedModel`` under a memory budget, with load counters for benchmarks and tests."""

    def __init__(self, budget_bytes: int | None = None):
        self.budget = _default_budget() if budget_bytes is None else budget_bytes
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()
        self.loads = 0          # models read from disk
        self.hits = 0           # requests served from the cache
        self.load_seconds = 0.0

    def get(self, kind: str, name: str, path: str | os.PathLike, dtype: torch.dtype,
            load: Callable[[], tuple[dict[str, torch.nn.Module], Any, dict]]) -> LoadedModel:
        """The cached model for this file, or ``load()`` -> (modules, preset, info) on a miss."""
        path = Path(path)
        key = (kind, str(path.resolve()), _file_key(path), str(dtype))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                self.hits += 1
                return self._models[key]
            # The same file changed on disk: drop the stale copy before loading the new one.
            for old in [k for k in self._models if k[:2] == key[:2] and k[3] == key[3]]:
                del self._models[old]
            start = time.perf_counter()
            modules, preset, info = load()
            part = part_class(kind)({k: m.eval().requires_grad_(False) for k, m in modules.items()})
            model = LoadedModel(kind=kind, name=name, path=str(path), part=part, preset=preset, info=info or {},
                                dtype=dtype, patcher=comfy.model_patcher(part))
            model.load_seconds = time.perf_counter() - start
            self.loads += 1
            self.load_seconds += model.load_seconds
            log.info("SemanticGen: loaded %s %s in %.2f s (%.1f MiB)", kind, name, model.load_seconds,
                     model.nbytes() / 2**20)
            self._models[key] = model
            self._evict(keep=key)
            return model

    def _evict(self, keep: tuple) -> None:
        total = sum(m.nbytes() for m in self._models.values())
        for key in list(self._models):
            if total <= self.budget:
                break
            if key != keep:
                total -= self._models.pop(key).nbytes()

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def reset_stats(self) -> None:
        self.loads, self.hits, self.load_seconds = 0, 0, 0.0

    def __len__(self) -> int:
        return len(self._models)

    def nbytes(self) -> int:
        return sum(m.nbytes() for m in self._models.values())


CACHE = ModelCache()
