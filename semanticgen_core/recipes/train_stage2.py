"""Train the embedded default's compressor + stage 2 (the paper's step (a)) on cached world clips.

    python -m semanticgen_core.recipes.train_stage2 --cache runs/cache --out runs/stage2 --minutes 60

``--plan-from vae --plan-dim N`` change what the plan is compressed from and how wide it is, for the
paper's convergence and compression ablations (``bench/claims.py``); the defaults are the embedded default.
"""

from __future__ import annotations

from ..compressor import SemanticCompressor
from ..errors import run_command
from ..latent_dit import LatentDiT
from ..training import stage2_loss
from .plan_sources import SOURCES, plan_features, plan_preset
from .stages import arguments, train


def main(argv: list[str] | None = None) -> None:
    p = arguments(__doc__.splitlines()[0], "runs/stage2")
    p.add_argument("--kl", type=float, default=1e-4, help="KL weight of the compressor")
    p.add_argument("--kl-warmup", type=int, default=1000,
                   help="steps over which the KL weight ramps up from 0: stage 2's plan gate starts closed, so "
                        "early on the KL is the compressor's only gradient and would collapse it to the prior")
    p.add_argument("--plan-noise", type=float, default=0.3, help="max noise level of the plan augmentation")
    p.add_argument("--plan-from", choices=SOURCES, default="encoder",
                   help="compress the semantic encoder's features (the paper's plan) or the VAE latents "
                        "(the paper's Fig. 9 comparison); stage 1 follows what the file records")
    p.add_argument("--plan-dim", type=int, default=8, help="channels of the plan (the compressor's output)")
    p.add_argument("--freeze-compressor", action="store_true",
                   help="train the DiT alone, the compressor as it is, so that a stage 1 trained on its plans "
                        "stays valid (and can train at the same time)")
    args = p.parse_args(argv)
    preset = plan_preset(args.plan_dim)
    compressor, stage2 = SemanticCompressor(**preset.compressor), LatentDiT(**preset.stage2)
    compressor.requires_grad_(not args.freeze_compressor)

    def loss(batch, empty, generator, step):
        features = plan_features(batch, args.plan_from)
        return stage2_loss(compressor, stage2, batch["latents"], features, batch["text"], empty,
                           kl_weight=args.kl * min(1.0, step / args.kl_warmup), plan_noise=args.plan_noise,
                           generator=generator)

    train(args, "stage2", {"compressor": compressor, "stage2": stage2}, loss,
          {"objective": "rectified flow on VAE latents given the plan (noised) + text; KL on the compressor",
           "kl_weight": args.kl, "kl_warmup": args.kl_warmup, "plan_noise": args.plan_noise,
           "plan_from": args.plan_from}, preset)


if __name__ == "__main__":
    run_command(main)
