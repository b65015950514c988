"""The one module that talks to ComfyUI; every other node module goes through it.

Inside ComfyUI (its modules are already loaded when our nodes run) this uses the real thing:
``folder_paths`` for model, input and output folders, ``comfy.utils.ProgressBar`` for progress,
``comfy.model_management`` for devices, interruption and memory, ``comfy.model_patcher.ModelPatcher`` for
our models. Outside ComfyUI (tests, the headless runner ``python -m semanticgen``) it falls back to plain
folders set with ``configure``, a progress hook, and an interrupt flag.

We never import ComfyUI ourselves: importing ``comfy.model_management`` in a process that is not ComfyUI
parses ``sys.argv`` and picks devices, so "inside ComfyUI" means "ComfyUI's modules are loaded already".
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from semanticgen_core.errors import Interrupted

MODEL_EXTENSIONS = (".safetensors", ".sft")
SEMANTICGEN_FOLDER = "semanticgen"  # models/semanticgen: SemanticGen's own model files


def in_comfyui() -> bool:
    """True when running inside a ComfyUI server (its core modules are loaded)."""
    return "folder_paths" in sys.modules and "comfy.model_management" in sys.modules


def _mm():
    import comfy.model_management  # noqa: PLC0415  (only reached inside ComfyUI)

    return comfy.model_management


def _folder_paths():
    import folder_paths  # noqa: PLC0415

    return folder_paths


# -- folders ---------------------------------------------------------------------------------------


@dataclass
class Folders:
    """Where models, inputs and outputs live outside ComfyUI (a ComfyUI-like layout by default)."""

    models: Path = field(default_factory=lambda: Path(os.environ.get("SEMANTICGEN_MODELS_DIR", "models")))
    input: Path = field(default_factory=lambda: Path(os.environ.get("SEMANTICGEN_INPUT_DIR", "input")))
    output: Path = field(default_factory=lambda: Path(os.environ.get("SEMANTICGEN_OUTPUT_DIR", "output")))
    temp: Path = field(default_factory=lambda: Path(os.environ.get("SEMANTICGEN_TEMP_DIR", "temp")))


_folders = Folders()


def configure(models: str | os.PathLike | None = None, input: str | os.PathLike | None = None,
              output: str | os.PathLike | None = None, temp: str | os.PathLike | None = None) -> Folders:
    """Set the folders used outside ComfyUI (the runner's --models/--input/--out, and tests)."""
    for name, value in (("models", models), ("input", input), ("output", output), ("temp", temp)):
        if value is not None:
            setattr(_folders, name, Path(value))
    return _folders


def register_model_folder() -> None:
    """Register ``models/semanticgen`` with ComfyUI (keeping any paths extra_model_paths.yaml gave it)."""
    if not in_comfyui():
        return
    fp = _folder_paths()
    default = os.path.join(fp.models_dir, SEMANTICGEN_FOLDER)
    paths, exts = fp.folder_names_and_paths.get(SEMANTICGEN_FOLDER, ([], set()))
    paths = list(paths) + ([default] if default not in paths else [])
    fp.folder_names_and_paths[SEMANTICGEN_FOLDER] = (paths, set(exts) | set(MODEL_EXTENSIONS))


def folder_dirs(folder: str) -> list[Path]:
    """The directories of a model folder (``diffusion_models``, ``vae``, ``semanticgen``...)."""
    if in_comfyui():
        try:
            return [Path(p) for p in _folder_paths().get_folder_paths(folder)]
        except KeyError:
            return []
    return [_folders.models / folder]


def list_models(folder: str) -> list[str]:
    """Model files in a folder, as names relative to it (what a loader's list shows)."""
    if in_comfyui():
        try:
            return list(_folder_paths().get_filename_list(folder))
        except KeyError:
            return []
    names = set()
    for root in folder_dirs(folder):
        if root.is_dir():
            for path in root.rglob("*"):
                if path.suffix.lower() in MODEL_EXTENSIONS and path.is_file():
                    names.add(path.relative_to(root).as_posix())
    return sorted(names)


def model_path(folder: str, name: str) -> Path | None:
    """Full path of ``name`` in a model folder, or None when it is not there."""
    if in_comfyui():
        try:
            full = _folder_paths().get_full_path(folder, name)
        except KeyError:
            return None
        return Path(full) if full else None
    for root in folder_dirs(folder):
        if (root / name).is_file():
            return root / name
    return None


def input_dir() -> Path:
    return Path(_folder_paths().get_input_directory()) if in_comfyui() else _folders.input


def output_dir() -> Path:
    return Path(_folder_paths().get_output_directory()) if in_comfyui() else _folders.output


def temp_dir() -> Path:
    return Path(_folder_paths().get_temp_directory()) if in_comfyui() else _folders.temp


def allow_absolute_paths() -> bool:
    """Outside ComfyUI a user may name any file; a server only serves its own folders."""
    return not in_comfyui()


# -- devices and memory ----------------------------------------------------------------------------


def load_device() -> torch.device:
    """Where models run: ComfyUI's torch device, else CUDA when present, else the CPU."""
    if in_comfyui():
        return _mm().get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    return _mm().unet_offload_device() if in_comfyui() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on the CPU; bf16 on a GPU that supports it, else fp16."""
    if device.type == "cpu":
        return torch.float32
    if in_comfyui():
        return torch.bfloat16 if _mm().should_use_bf16(device) else torch.float16
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16


def model_patcher(module: torch.nn.Module):
    """Wrap a model in core's ModelPatcher (inside ComfyUI), so core's memory manager sees it."""
    if not in_comfyui():
        return None
    import comfy.model_patcher  # noqa: PLC0415

    return comfy.model_patcher.ModelPatcher(module, load_device=load_device(), offload_device=offload_device())


def load_models(patchers: list) -> None:
    """Make these models resident on the load device, evicting others (ours or core's) as needed.

    Our modules do not use ``comfy.ops``, so they cannot be split between devices: load them whole.
    """
    patchers = [p for p in patchers if p is not None]
    if patchers and in_comfyui():
        _mm().load_models_gpu(patchers, force_full_load=True)


# -- progress and interruption ---------------------------------------------------------------------

_interrupt = threading.Event()
_listeners: list[Callable[[str, int, int], None]] = []


def request_interrupt() -> None:
    """Ask the running node to stop at its next step (SIGINT in the runner, tests)."""
    if in_comfyui():
        _mm().interrupt_current_processing(True)
    _interrupt.set()


def clear_interrupt() -> None:
    _interrupt.clear()


def interrupt_requested() -> bool:
    return _interrupt.is_set()


def check_interrupt() -> None:
    """Raise if an interrupt was requested (ComfyUI's exception inside ComfyUI, else ``Interrupted``).

    Like ComfyUI, the request is consumed by the raise, so the next run starts clean.
    """
    if in_comfyui():
        _mm().throw_exception_if_processing_interrupted()
    if _interrupt.is_set():
        _interrupt.clear()
        raise Interrupted("interrupted by the user")


def should_stop() -> bool:
    """For the library's ``should_stop`` hooks: raises on an interrupt (so the right exception
    propagates), returns False otherwise."""
    check_interrupt()
    return False


def add_progress_listener(listener: Callable[[str, int, int], None]) -> Callable[[], None]:
    """Call ``listener(what, step, total)`` on every progress step outside ComfyUI; returns a remover."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


class Progress:
    """One progress bar per loop: ``ComfyUI``'s ProgressBar (the UI's bar, which also raises on an
    interrupt) or the listeners of the headless runner. Call it as the library's progress hook."""

    def __init__(self, what: str, total: int):
        self.what, self.total = what, total
        self.bar = None
        if in_comfyui():
            import comfy.utils  # noqa: PLC0415

            self.bar = comfy.utils.ProgressBar(total)

    def __call__(self, step: int, total: int, *_latest) -> None:
        if self.bar is not None:
            self.bar.update_absolute(step, total)
        for listener in list(_listeners):
            listener(self.what, step, total)
        check_interrupt()
