"""Optional ``torch.compile`` of the DiT blocks, which never breaks a run.

    from semanticgen_core.compile import compile_blocks
    compile_blocks(pipe.stage2)          # or: SEMANTICGEN_COMPILE=1 and maybe_compile(model)

Each block's forward is wrapped: the first call goes through ``torch.compile``; if compiling is not
available (no compiler on the machine, an old torch) or fails at any call, a warning is logged once and
that block runs eagerly from then on (the failed call is rerun eagerly, so the caller gets the eager
result; if the eager call fails too, the inputs are wrong: its error is raised and compiling stays on).
Weights, names and state dicts are unchanged. Window layouts differ between calls (video lengths, the
streamed chunks, the moving grid), so expect a few recompiles; torch falls back to eager by itself past
its recompile limit.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)
ENV = "SEMANTICGEN_COMPILE"


def compile_requested() -> bool:
    """Whether ``SEMANTICGEN_COMPILE`` asks for compiled blocks (1, true, yes, on)."""
    return os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")


def maybe_compile(model: torch.nn.Module, **options) -> int:
    """``compile_blocks(model)`` when ``SEMANTICGEN_COMPILE`` is set; returns the blocks wrapped (0 if not)."""
    return compile_blocks(model, **options) if compile_requested() else 0


def compile_blocks(model: torch.nn.Module, **options) -> int:
    """Wrap every block of ``model.blocks`` in a compiled forward with an eager fallback (see the module
    doc). ``options`` go to ``torch.compile`` (e.g. ``mode="max-autotune-no-cudagraphs"``). Returns how many
    blocks were wrapped; 0, with a warning, when ``torch.compile`` cannot even be set up."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        log.warning("compile_blocks: %s has no .blocks; running it eagerly", type(model).__name__)
        return 0
    n = 0
    for block in blocks:
        if getattr(block, "_semanticgen_eager_forward", None) is not None:
            continue  # already wrapped
        eager = block.forward
        try:
            compiled = torch.compile(eager, **options)
        except Exception as e:  # noqa: BLE001 - any failure means: stay eager
            log.warning("torch.compile is not available (%s: %s); the blocks run eagerly", type(e).__name__, e)
            return n
        block._semanticgen_eager_forward = eager
        block.forward = _guarded(block, compiled, eager)
        n += 1
    return n


def uncompile_blocks(model: torch.nn.Module) -> None:
    """Undo ``compile_blocks``: the blocks' own forwards again."""
    for block in getattr(model, "blocks", []):
        if getattr(block, "_semanticgen_eager_forward", None) is not None:
            del block.forward
            block._semanticgen_eager_forward = None


def _guarded(block: torch.nn.Module, compiled, eager):
    state = {"compiled": True}

    def forward(*args, **kwargs):
        if not state["compiled"]:
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - compile errors come in many types (backend, inductor, C++)
            out = eager(*args, **kwargs)  # raises if the inputs are wrong: not compile's fault, keep it on
            state["compiled"] = False
            block.forward = eager  # later calls skip the wrapper altogether
            log.warning("torch.compile failed for %s (%s: %s); it runs eagerly from now on",
                        type(block).__name__, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return out

    return forward
