"""Train the embedded default's stage 1 (the paper's step (b)) on plans of the frozen compressor.

    python -m semanticgen_core.recipes.train_stage1 --cache runs/cache --stage2 runs/stage2/stage2.safetensors \
        --out runs/stage1 --minutes 30

Long plans: the cache holds 4 s clips, but stage 1 must plan up to a minute with full attention. So each
step strings ``k`` cached clips together into one plan of ``k`` shots, each with its own caption (the
multi-shot prompt of a k-shot video), with ``k`` drawn from 1, 2, 4, ... ``--max-shots`` and the batch
divided by ``k`` so a step costs about the same. The model thus sees cuts, per-shot prompts, and the
relative distances of plans up to ``max_shots`` times the clip length.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import run_command
from ..model_files import load_model
from ..semantic_dit import SemanticDiT
from ..training import stage1_loss
from .plan_sources import plan_features, plan_preset
from .stages import arguments, train


def main(argv: list[str] | None = None) -> None:
    p = arguments(__doc__.splitlines()[0], "runs/stage1")
    p.add_argument("--stage2", type=Path, required=True, help="the trained stage-2 file (its compressor is used)")
    p.add_argument("--max-shots", type=int, default=8, help="longest training plan, in cached clips (a power of 2)")
    args = p.parse_args(argv)
    shot_counts = [2 ** i for i in range(args.max_shots.bit_length()) if 2 ** i <= min(args.max_shots, args.batch)]
    stage2_file = load_model(args.stage2, "stage2")
    compressor = stage2_file.modules["compressor"].requires_grad_(False)
    plan_from = stage2_file.info.get("plan_from", "encoder")  # files from before the option: the encoder
    preset = plan_preset(compressor.config.out_dim)
    stage1 = SemanticDiT(**preset.stage1)

    def loss(batch, empty, generator, step):
        with torch.no_grad():
            plan = compressor.sample(*compressor(plan_features(batch, plan_from)), generator)
        k = shot_counts[int(torch.randint(len(shot_counts), (1,), generator=generator))]
        plan, text, starts = string_shots(plan, batch["text"], k)
        return stage1_loss(stage1, plan, text, empty, shot_starts=starts, generator=generator)

    train(args, "stage1", {"stage1": stage1}, loss,
          {"objective": "rectified flow on compressed plans (sampled) given text; clips strung into plans of "
                        f"{', '.join(map(str, shot_counts))} shots", "stage2": str(args.stage2),
           "plan_from": plan_from}, preset)


def string_shots(plan: torch.Tensor, text: torch.Tensor, k: int):
    """``B`` one-shot plans ``[B, T, h, w, c]`` with texts ``[B, L, D]`` -> ``B // k`` plans of ``k`` shots
    ``[B // k, k T, h, w, c]``, per-shot texts ``[B // k, k, L, D]`` and the shots' start times in plan steps
    (None for one shot)."""
    if k == 1:
        return plan, text, None
    b, t = plan.shape[:2]
    n = b // k * k
    plan = plan[:n].unflatten(0, (-1, k)).flatten(1, 2)
    starts = [float("-inf")] + [i * t - 0.5 for i in range(1, k)]  # shots.shot_starts' convention
    return plan, text[:n].unflatten(0, (-1, k)), starts


if __name__ == "__main__":
    run_command(main)
