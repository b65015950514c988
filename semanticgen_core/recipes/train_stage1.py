"""Train the embedded default's stage 1 (the paper's step (b)) on plans of the frozen compressor.

    python -m semanticgen_core.recipes.train_stage1 --cache runs/cache --stage2 runs/stage2/stage2.safetensors \
        --out runs/stage1 --minutes 30
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..model_files import load_model
from ..presets import EMBEDDED
from ..semantic_dit import SemanticDiT
from ..training import stage1_loss
from .stages import arguments, train


def main(argv: list[str] | None = None) -> None:
    p = arguments(__doc__.splitlines()[0], "runs/stage1")
    p.add_argument("--stage2", type=Path, required=True, help="the trained stage-2 file (its compressor is used)")
    args = p.parse_args(argv)
    compressor = load_model(args.stage2, "stage2").modules["compressor"].requires_grad_(False)
    stage1 = SemanticDiT(**EMBEDDED.stage1)

    def loss(batch, empty, generator, step):
        with torch.no_grad():
            plan = compressor.sample(*compressor(batch["features"]), generator)
        return stage1_loss(stage1, plan, batch["text"], empty, generator=generator)

    train(args, "stage1", {"stage1": stage1}, loss,
          {"objective": "rectified flow on compressed plans (sampled) given text", "stage2": str(args.stage2)})


if __name__ == "__main__":
    main()
