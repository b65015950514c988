"""Does stage 1 underfit or overfit? Its flow loss on clips it trained on against clips it never saw, by the
number of objects in the scene and the noise level.

    python bench/stage1_fit.py --cache runs/features-seen runs/features-cov-0 [--stage1 FILE] [--clips 500]

For each cache (a feature cache of world clips, ``semanticgen_world.cache``), each clip's plan is drawn from
the compressor of the shipped stage 2 as training draws it, noised to each level t of ``--levels`` with noise
seeded by the clip's row, and the error of stage 1's velocity under the clip's first caption is averaged by
the number of objects in the clip's scene. Equal losses on the clips a file trained on and on unseen ones mean
it does not overfit (more data is not the lever); a lower loss on its own clips, that it does. Comparing files
on the same caches shows what a change of training bought (part of the flow loss is irreducible noise, so
small differences matter). The embedded stage 1 trained on world seeds 0-3,999 (``--first-seed 0``); seeds from 4,000 on are
clips it never saw.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.claims import world_seed  # noqa: E402
from semanticgen_core.embedded import weights_path  # noqa: E402
from semanticgen_core.errors import SemanticGenError, run_command  # noqa: E402
from semanticgen_core.feature_cache import FeatureCache  # noqa: E402
from semanticgen_core.model_files import load_model  # noqa: E402
from semanticgen_world import world  # noqa: E402


def object_count(source: str) -> int:
    """Objects in the first shot of the world clip a cache row came from ("world seed N")."""
    seed = world_seed(source)
    if seed is None:
        raise SemanticGenError(f"{source!r} is not a world clip: this bench groups world clips by their objects")
    return len(world.sample_clip_shots(seed, 33)[0].objects)


@torch.no_grad()
def losses(stage1, compressor, cache: FeatureCache, clips: int, levels: tuple[float, ...]) -> dict[int, list[list[float]]]:
    """{objects: one row of flow losses (one per level) per clip} over the cache's first ``clips`` rows."""
    out: dict[int, list[list[float]]] = {}
    for i in range(min(clips, len(cache))):
        sample = cache.get(i, 0)
        mean, logvar = compressor(sample["features"][None])
        g = torch.Generator().manual_seed(i)
        x0 = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=g)
        row = []
        for t in levels:
            eps = torch.randn(x0.shape, generator=g)
            v = stage1.velocity((1 - t) * x0 + t * eps, torch.full((1,), 1000 * t), sample["text"][None])
            row.append(float((v - (eps - x0)).pow(2).mean()))
        out.setdefault(object_count(cache.sources[i]), []).append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", nargs="+", required=True, type=Path, help="feature caches of world clips, one row each")
    p.add_argument("--stage1", type=Path, help="a stage-1 file (default: the embedded one)")
    p.add_argument("--stage2", type=Path, help="the stage-2 file whose compressor makes the plans (default: embedded)")
    p.add_argument("--clips", type=int, default=500, help="first clips of each cache (default 500)")
    p.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.6, 0.9, 0.97], help="noise levels t")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    stage1 = load_model(args.stage1 or weights_path("stage1"), "stage1").modules["stage1"].float().eval()
    compressor = load_model(args.stage2 or weights_path("stage2"), "stage2").modules["compressor"].float().eval()
    levels = tuple(args.levels)
    caches = [FeatureCache(folder) for folder in args.cache]  # a missing or broken cache fails before any output
    print(f"| cache | objects | clips | {' | '.join(f'loss at t = {t:g}' for t in levels)} |")
    print("|---" * (3 + len(levels)) + "|")
    for folder, cache in zip(args.cache, caches):
        for objects, rows in sorted(losses(stage1, compressor, cache, args.clips, levels).items()):
            means = [sum(r[j] for r in rows) / len(rows) for j in range(len(levels))]
            print(f"| {folder} | {objects} | {len(rows)} | {' | '.join(f'{m:.4f}' for m in means)} |", flush=True)
    return 0


if __name__ == "__main__":
    run_command(main)
