"""What the stage-1 and stage-2 recipes share: arguments, the optimiser, one step, the export."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch

from ..model_files import save_model
from ..presets import EMBEDDED, Preset
from .dataset import ClipCache, empty_text
from semanticgen_world.recipes.loop import Run, lr_factor


def arguments(description: str, out: str) -> argparse.ArgumentParser:
    """Options shared by both stage recipes (each adds its own)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cache", type=Path, default=Path("runs/cache"), help="clips cached by recipes.dataset")
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--minutes", type=float, default=None, help="stop (and save) after this much wall time")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--decay-steps", type=int, default=0,
                   help="let the learning rate fall linearly to 0 over the last N steps of --steps (a cool-down "
                        "that a run resumed with a higher --steps can append to a constant-rate run)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--export-dtype", choices=("float32", "float16"), default="float32",
                   help="precision of the exported model file (training state stays float32)")
    return p


def train(args, kind: str, trained: dict[str, torch.nn.Module],
          loss_fn: Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Generator, int], dict[str, torch.Tensor]],
          info: dict, preset: Preset = EMBEDDED) -> None:
    """Train ``trained`` on the cache with ``loss_fn(batch, empty_text, generator, step)``; export as ``kind``
    with ``preset`` (the one the modules were built from) in the file."""
    if args.decay_steps and args.steps is None:
        raise SystemExit("--decay-steps needs --steps: the cool-down ends at that step")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cache = ClipCache(args.cache)
    params = [p for m in trained.values() for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01)
    run = Run(args.out, trained, optimizer)
    empty = empty_text()

    def export():
        save_model(args.out / f"{kind}.safetensors", kind, trained, preset,
                   {**info, "steps": run.step, "wall_minutes": round(run.elapsed / 60, 1), "threads": args.threads,
                    "clips": len(cache), "batch": args.batch, "lr": args.lr, "data": cache.made_by},
                   dtype=getattr(torch, args.export_dtype))

    for m in trained.values():
        m.train()
    for step in run.steps(args.steps, args.minutes, on_save=export):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.warmup, args.steps, args.decay_steps)
        batch = cache.batch(torch.randint(len(cache), (args.batch,), generator=run.generator))
        losses = loss_fn(batch, empty, run.generator, step)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if step % 25 == 0:
            run.log(**losses)
