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


def prompt_server():
    """ComfyUI's web server (``server.PromptServer.instance``), or None outside ComfyUI."""
    server = sys.modules.get("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None) if in_comfyui() else None


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
    """Wrap a model in core's ModelPatcher (inside ComfyUI), so core's memory manager sees it.

    The model's weight modules get comfy.ops' switch first (``enable_offload``), so core may load it
    partially, as it loads its own Wan models on a small card.
    """
    if not in_comfyui():
        return None
    import comfy.model_patcher  # noqa: PLC0415

    enable_offload(module)
    return comfy.model_patcher.ModelPatcher(module, load_device=load_device(), offload_device=offload_device())


def load_models(patchers: list, memory_required: int = 0) -> None:
    """Make these models ready on the load device, evicting others (ours or core's) as needed.

    Like core's own models they may be loaded partially: what does not fit stays on the offload device
    and is cast to the load device layer by layer as it runs (``enable_offload``). ``memory_required``
    is the working memory the coming computation needs on top of the weights (core keeps it free).
    """
    patchers = [p for p in patchers if p is not None]
    if not patchers or not in_comfyui():
        return
    # A model without the per-layer switch (wrapped elsewhere) cannot run split between devices.
    whole = any(not getattr(p.model, OFFLOAD_MARK, False) for p in patchers)
    _mm().load_models_gpu(patchers, memory_required=memory_required, force_full_load=whole)
    for p in patchers:
        finish_partial_load(p)


# -- partial loading -------------------------------------------------------------------------------
#
# Core's ModelPatcher loads a model module by module (``ModelPatcher.load(lowvram_model_memory=...)``):
# largest first, it moves each module whose parameters are all its own to the GPU while the budget lasts;
# a module past the budget stays on the offload device, and if it has comfy.ops' ``comfy_cast_weights``
# switch, core turns it on, and the layer casts its weights to the input's device each time it runs
# (``comfy.ops.cast_bias_weight``). A module without the switch is simply left behind, so our diffusers
# modules (plain nn.Linear, nn.Conv3d, RMSNorm...) had to be loaded whole. ``enable_offload`` gives every
# such module the switch and does what comfy.ops' forward does when it is on, with forward hooks (the
# classes are not changed). Two things core does not move on a partial load, we move ourselves after it
# (``finish_partial_load``): parameters of a module that also has children with parameters (a DiT's
# ``scale_shift_table``: core's own Wan casts those by hand in its forward), and the module of each
# model's first parameter, which the library reads to know where a model runs (``next(m.parameters())``).

OFFLOAD_MARK = "_semanticgen_offload"
_SHADOW = "_semanticgen_cast"


def weight_modules(root: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules core's ModelPatcher moves one by one: those with parameters, all of them their own."""
    return [m for m in root.modules()
            if any(True for _ in m.parameters(recurse=False))
            and not any(True for c in m.children() for _ in c.parameters())]


def _orphan_modules(root: torch.nn.Module) -> list[torch.nn.Module]:
    """Modules with parameters of their own and children with parameters: core never moves them alone."""
    return [m for m in root.modules()
            if any(True for _ in m.parameters(recurse=False))
            and any(True for c in m.children() for _ in c.parameters())]


def _input_device(args, kwargs) -> torch.device | None:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    return None


def _uncast(module: torch.nn.Module) -> None:
    for name in module.__dict__.pop(_SHADOW, ()):
        module.__dict__.pop(name, None)


def _cast_pre_hook(module: torch.nn.Module, args, kwargs):
    """comfy.ops' forward_comfy_cast_weights for any module: while the switch is on (or weight functions,
    e.g. a LoRA's ``LowVramPatch``, are set), run with the weights cast to the input's device."""
    _uncast(module)  # a forward that raised leaves no cast copies behind
    weight_fns, bias_fns = module.weight_function, module.bias_function
    if not (module.comfy_cast_weights or weight_fns or bias_fns):
        return None
    device = _input_device(args, kwargs)
    if device is None:
        return None
    cast = {}
    for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
        if tensor is None:
            continue
        fns = weight_fns if name == "weight" else bias_fns if name == "bias" else []
        value = tensor.detach().to(device, copy=bool(fns))  # functions may work in place: on a copy
        for fn in fns:
            value = fn(value)
        cast[name] = value
    # Instance attributes shadow the parameters for this call only: the module's parameters stay where core put them.
    module.__dict__.update(cast)
    module.__dict__[_SHADOW] = list(cast)
    return None


def _cast_post_hook(module: torch.nn.Module, args, kwargs, output):
    _uncast(module)
    return None


def enable_offload(root: torch.nn.Module) -> torch.nn.Module:
    """Give every weight module of ``root`` comfy.ops' switch (``comfy_cast_weights``, ``weight_function``,
    ``bias_function``), off, and the hooks that honour it. Idempotent; nothing changes while the switch is off."""
    if getattr(root, OFFLOAD_MARK, False):
        return root
    for module in weight_modules(root):
        if hasattr(module, "comfy_cast_weights"):  # already a comfy.ops layer: it casts by itself
            continue
        module.comfy_cast_weights = False
        module.weight_function = []
        module.bias_function = []
        module.register_forward_pre_hook(_cast_pre_hook, with_kwargs=True)
        module.register_forward_hook(_cast_post_hook, with_kwargs=True, always_call=True)
    setattr(root, OFFLOAD_MARK, True)
    return root


def _module_bytes(module: torch.nn.Module, recurse: bool) -> int:
    tensors = list(module.parameters(recurse=recurse)) + list(module.buffers(recurse=recurse))
    return sum(t.numel() * t.element_size() for t in tensors)


def _move_own(module: torch.nn.Module, device: torch.device) -> int:
    """Move a module's own parameters and buffers (not its children's); returns the bytes moved."""
    moved = 0
    for tensors in (module._parameters, module._buffers):
        for name, t in tensors.items():
            if t is not None and t.device != device:
                new = t.data.to(device)
                if torch._has_compatible_shallow_copy_type(t, new):  # as Module.to(): keep the Parameter
                    t.data = new
                else:
                    tensors[name] = torch.nn.Parameter(new, t.requires_grad) if name in module._parameters else new
                moved += t.numel() * t.element_size()
    return moved


def finish_partial_load(patcher) -> int:
    """After core loaded a model partially, move what core leaves behind but the library needs on the load
    device (see above), and add it to the patcher's count of loaded bytes. Returns the bytes moved."""
    root, device = patcher.model, torch.device(patcher.load_device)
    if not getattr(root, "model_lowvram", False):
        return 0  # loaded whole: everything is there
    moved = sum(_move_own(m, device) for m in _orphan_modules(root))
    for top in root.children():
        first = next(iter(top.named_parameters()), None)
        if first is None or first[1].device == device:
            continue
        owner = top.get_submodule(first[0].rpartition(".")[0])
        if any(True for c in owner.children() for _ in c.parameters()):
            moved += _move_own(owner, device)
            continue
        owner.to(device)
        moved += _module_bytes(owner, recurse=True)
        # As core's load() does for a module it loads regularly: switch off the casting it set up.
        if hasattr(owner, "prev_comfy_cast_weights"):
            owner.comfy_cast_weights = owner.prev_comfy_cast_weights
            del owner.prev_comfy_cast_weights
        owner.comfy_patched_weights = True
    root.model_loaded_weight_memory = getattr(root, "model_loaded_weight_memory", 0) + moved
    return moved


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
