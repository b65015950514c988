"""Which words of a prompt does stage 1 read? The change of its velocity when one phrase is swapped.

    python bench/text_sensitivity.py [--stage1 FILE] [--samples 8]

For a world caption and variants that each swap one thing (the direction of motion, which keeps the same
words in another order; the colour; the shape; the kind of motion; the background), prints
|v(variant) - v(caption)| / |v(caption)| for the same noisy plans at several timesteps (1000: pure noise,
where sampling decides the layout). A phrase the model ignores scores about 0.01; one it reads, 0.1 or
more. It shows why stage 1's plans move the caption's way only by chance: swapping "left to right" for
"right to left" moves the shipped stage 1's velocity by 0.6-1%, against 10-25% for "moving up" (the
model card's "Direction of motion").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semanticgen_core.errors import run_command  # noqa: E402
from semanticgen_core.pipeline import SemanticGenPipeline  # noqa: E402

CAPTION = "a small red circle moving from left to right on a plain blue background"
SWAPS = {"direction (same words)": ("left to right", "right to left"), "colour": ("red", "green"),
         "shape": ("circle", "square"), "motion kind": ("moving from left to right", "moving up"),
         "background": ("plain blue", "plain grey")}


def sensitivities(pipe: SemanticGenPipeline, caption: str, samples: int, timesteps: tuple[float, ...],
                  seed: int = 0) -> dict[float, dict[str, float]]:
    """{timestep: {swap: relative velocity change}} over ``samples`` noisy plans of a 4 s clip."""
    variants = [caption.replace(*swap) for swap in SWAPS.values()]
    model = pipe.stage1
    d = pipe.preset.defaults
    grid = pipe.preset.plan_grid(int(4 * d["fps"]) + 1, d["fps"], d["height"], d["width"])
    with torch.no_grad():
        text, _ = pipe.text_encoder.encode([caption, *variants])
        text = text.to(model.dtype)
        x = torch.randn(samples, *grid, model.config.in_channels, generator=torch.Generator().manual_seed(seed))
        out = {}
        for t in timesteps:
            tb = torch.full((samples,), t)
            base = model.velocity(x, tb, text[:1].expand(samples, -1, -1)).float()
            out[t] = {name: float((model.velocity(x, tb, text[i:i + 1].expand(samples, -1, -1)).float() - base).norm()
                                  / base.norm()) for i, name in enumerate(SWAPS, 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage1", type=Path, help="a stage-1 file instead of the embedded default's")
    p.add_argument("--samples", type=int, default=8, help="noisy plans averaged over (default 8)")
    p.add_argument("--caption", default=CAPTION)
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error(f"--samples must be at least 1, got {args.samples}")
    pipe = SemanticGenPipeline.embedded(stage1=args.stage1)
    table = sensitivities(pipe, args.caption, args.samples, (1000.0, 900.0, 700.0, 400.0))
    print(f"stage 1: {args.stage1 or 'embedded'}; caption: {args.caption!r}")
    print("| timestep | " + " | ".join(SWAPS) + " |")
    print("|---" * (len(SWAPS) + 1) + "|")
    for t, row in table.items():
        print(f"| {t:g} | " + " | ".join(f"{row[name]:.3f}" for name in SWAPS) + " |")
    return 0


if __name__ == "__main__":
    run_command(main)
