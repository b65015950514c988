"""Train the single-stage baseline: stage 2's DiT from text alone (no plan), full attention, same data.

    python -m semanticgen_core.recipes.train_baseline --cache runs/cache --out runs/baseline --minutes 30

Same size, cache, batch, optimiser and schedule as ``train_stage2``, so the comparisons in ``bench/`` are
between two models that differ only in the semantic plan and the attention windows. ``--init`` starts
from a stage-2 file's DiT (its plan layers are left unused), as both stages of the paper start from Wan:
a baseline trained for as many steps from the same start is the like-for-like comparison.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoints import load_into
from ..errors import run_command
from ..latent_dit import LatentDiT
from ..model_files import load_model
from ..presets import EMBEDDED
from ..training import baseline_loss
from .stages import arguments, train


def main(argv: list[str] | None = None) -> None:
    p = arguments(__doc__.splitlines()[0], "runs/baseline")
    p.add_argument("--init", type=Path, help="a stage-2 model file whose DiT weights the baseline starts from")
    args = p.parse_args(argv)
    model = LatentDiT(**{**EMBEDDED.stage2, "window_frames": None})
    if args.init and not (args.out / "last.pt").is_file():
        load_into(model, load_model(args.init, "stage2").modules["stage2"].state_dict(), f"baseline from {args.init}")

    def loss(batch, empty, generator, step):
        return baseline_loss(model, batch["latents"], batch["text"], empty, generator=generator)

    train(args, "baseline", {"baseline": model}, loss,
          {"objective": "rectified flow on VAE latents given the text only (single-stage baseline)",
           "init": args.init.name if args.init else "random"})


if __name__ == "__main__":
    run_command(main)
