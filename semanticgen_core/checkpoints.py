"""Weight files: find, read, strictly load and atomically save safetensors checkpoints.

Every loader in the project goes through here so that a missing, truncated or mismatched file always
fails with a message naming the file, the keys and the shapes, instead of leaving a model silently random.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError

_EXPECTED = (
    "expected a .safetensors file, or a folder holding model.safetensors (or a single *.safetensors), "
    "or a sharded checkpoint (*.safetensors.index.json plus the shard files it names)"
)
_SHOW = 10  # how many offending keys an error message lists


def _index_file(folder: Path) -> Path | None:
    """The folder's ``*.safetensors.index.json``, preferring ``model.safetensors.index.json``."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if not indexes:
        return None
    preferred = folder / "model.safetensors.index.json"
    if preferred in indexes:
        return preferred
    if len(indexes) > 1:
        raise CheckpointError(
            f"Checkpoint folder {folder} has several index files ({', '.join(p.name for p in indexes)}); "
            "pass the path of the one to load."
        )
    return indexes[0]


def _resolve(path: str | os.PathLike) -> tuple[Path, dict[str, str] | None]:
    """Return ``(file, None)`` for a single-file checkpoint or ``(index_file, weight_map)`` for a sharded one."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint not found: {path} does not exist; {_EXPECTED}.")
    index = path if path.is_file() and path.name.endswith(".index.json") else None
    if path.is_dir():
        index = _index_file(path)
        if index is None:
            files = sorted(path.glob("*.safetensors"))
            if (path / "model.safetensors") in files:
                return path / "model.safetensors", None
            if len(files) == 1:
                return files[0], None
            found = ", ".join(p.name for p in files[:_SHOW]) if files else "no *.safetensors files"
            raise CheckpointError(f"Cannot pick a checkpoint in folder {path} (found {found}); {_EXPECTED}.")
    if index is None:
        return path, None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"Checkpoint index {index} is unreadable or has no 'weight_map' ({e}); it should be JSON like "
            '{"weight_map": {"<tensor name>": "<shard>.safetensors", ...}}. Re-download it.'
        ) from e
    return index, weight_map


def _read(file: Path, keys: list[str] | None = None, prefix: str = "") -> dict[str, torch.Tensor]:
    """Read ``keys`` (default: all keys starting with ``prefix``) from one safetensors file, prefix stripped."""
    try:
        with safe_open(file, framework="pt") as f:
            available = set(f.keys())
            wanted = [k for k in available if k.startswith(prefix)] if keys is None else keys
            absent = [k for k in wanted if k not in available]
            if absent:
                raise CheckpointError(
                    f"Checkpoint shard {file} lacks {len(absent)} tensors that its index assigns to it, "
                    f"e.g. {absent[:_SHOW]}; the shard and the index do not match. Re-download the checkpoint."
                )
            return {k[len(prefix):]: f.get_tensor(k) for k in sorted(wanted)}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"Cannot read safetensors file {file}: {e}. The file is corrupted or truncated (an interrupted "
            "download or save?); re-download or re-save it."
        ) from e


def list_keys(path: str | os.PathLike) -> list[str]:
    """All tensor names in a checkpoint (file, folder or sharded folder), sorted, without reading tensors."""
    file, weight_map = _resolve(path)
    if weight_map is not None:
        return sorted(weight_map)
    try:
        with safe_open(file, framework="pt") as f:
            return sorted(f.keys())
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"Cannot read safetensors file {file}: {e}. The file is corrupted or truncated; re-download or re-save it."
        ) from e


def load_state_dict(path: str | os.PathLike, prefix: str | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors checkpoint into CPU tensors.

    ``path`` is a ``.safetensors`` file, a folder holding ``model.safetensors`` (or a single
    ``*.safetensors``), or a sharded folder with ``*.safetensors.index.json`` (or that index file itself).
    With ``prefix`` (e.g. ``"visual."``) only keys starting with it are returned, prefix stripped, and of a
    sharded checkpoint only the shards holding such keys are opened. No match gives an empty dict.
    """
    prefix = prefix or ""
    file, weight_map = _resolve(path)
    if weight_map is None:
        return _read(file, prefix=prefix)
    by_shard: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        if key.startswith(prefix):
            by_shard.setdefault(shard, []).append(key)
    state: dict[str, torch.Tensor] = {}
    for shard, keys in sorted(by_shard.items()):
        shard_file = file.parent / shard
        if not shard_file.is_file():
            raise CheckpointError(
                f"Checkpoint shard {shard_file} is missing: the index {file} names it for {len(keys)} tensors "
                f"(e.g. {keys[0]}). Download the missing shard into {file.parent}."
            )
        state.update(_read(shard_file, keys=keys, prefix=prefix))
    return state


def _on_meta(module: torch.nn.Module) -> list[str]:
    """Names of the module's parameters and buffers that still live on the meta device."""
    tensors = list(module.named_parameters()) + list(module.named_buffers())
    return [name for name, t in tensors if t.is_meta]


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """Load ``state_dict`` into ``module`` strictly, or raise a CheckpointError that lists every mismatch.

    ``what`` names the model and its source for the message (e.g. "Qwen2.5-VL vision tower from /x").
    Into a real module the values are copied (taking the module's dtypes and devices). A module with
    parameters on the meta device (built without memory, see ``init_empty_weights``) is loaded with
    ``assign=True``: it takes the state dict's tensors as they are (dtype and device), so nothing is
    allocated twice; cast them beforehand.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k}: checkpoint {list(state_dict[k].shape)} vs model {list(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        parts = [f"Checkpoint does not match the {what}."]
        problems = (("Missing keys", missing), ("Unexpected keys", unexpected), ("Shape mismatches", mismatched))
        for label, items in problems:
            if items:
                more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
                parts.append(f"{label} ({len(items)}): {', '.join(items[:_SHOW])}{more}.")
        parts.append("Check that the file is the right model and that its config matches the weights.")
        raise CheckpointError(" ".join(parts))
    module.load_state_dict(state_dict, strict=True, assign=bool(_on_meta(module)))
    left = _on_meta(module)
    if left:
        raise CheckpointError(
            f"After loading the {what}, these tensors are still on the meta device: {left[:_SHOW]}. They are not "
            "stored in checkpoints (non-persistent buffers); build the model with init_empty_weights(), which "
            "keeps buffers real, instead of under torch.device('meta')."
        )


@contextlib.contextmanager
def init_empty_weights() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory) but real buffers.

    Non-persistent buffers such as rotary frequencies are computed in ``__init__`` and never saved, so they
    must stay real; parameters are filled afterwards by ``load_into`` (same trick as accelerate's).
    """
    register = torch.nn.Module.register_parameter

    def register_on_meta(self: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        register(self, name, param)
        if param is not None:
            meta = param.to("meta")
            self._parameters[name] = type(param)(meta, requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_file(path) as tmp: write tmp`` leaves ``path`` holding the old file or the complete new one.

    The data goes to a temporary file in the same folder (same filesystem, so the rename is atomic), is
    fsynced, then replaces ``path``; on any failure the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved model, plan or figure is an ordinary file
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # persist the rename itself; not possible on every OS
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save_file_atomic(
    tensors: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Save tensors as safetensors atomically (``atomic_file``)."""
    with atomic_file(path) as tmp:
        save_file(dict(tensors), tmp, metadata=metadata)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to ``path`` atomically (``atomic_file``)."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
