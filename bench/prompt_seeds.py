"""One prompt over many seeds: how often the embedded default gets it right, as the README's first command
makes it (4 s, the model's steps and guidance), judged by the independent detector.

    python bench/prompt_seeds.py "a red circle moving from left to right over blue stripes" --seeds 52

Prints each seed's verdict on the prompt's first object (colour, shape, motion) and the counts; the seeds
judged right on all three are the ones a README command may use. ``--mp4`` judges the video as ``generate``
writes it (vp9 through the pack's writer, read back) instead of its frames: at 64x64 the codec can tip the
detector's reading of a blob's shape.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prompt_sheet import verdict  # noqa: E402
from nodes.video import read_video, write_video  # noqa: E402
from semanticgen_core.errors import run_command  # noqa: E402
from semanticgen_core.pipeline import SemanticGenPipeline  # noqa: E402
from semanticgen_core.sampling import SamplingOptions  # noqa: E402
from semanticgen_world.evaluation import judge  # noqa: E402

ASPECTS = ("color", "shape", "motion")


def judgements(pipe: SemanticGenPipeline, prompt: str, seeds: range, steps: int | None = None,
               mp4: bool = False) -> dict[int, dict]:
    """{seed: the detector's judgement (``evaluation.judge``) of that seed's video}: its frames, or with ``mp4``
    the mp4 ``generate`` writes of them, read back."""
    d = pipe.preset.defaults
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            frames = pipe(prompt, opts=SamplingOptions(steps=steps or d["steps"], guidance=d["guidance"], seed=seed))
            if mp4:
                path = Path(tmp) / f"{seed}.mp4"
                write_video(path, frames, d["fps"])
                frames = read_video(path)[0]
            out[seed] = judge(frames, prompt)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("prompt")
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (default 20)")
    p.add_argument("--first", type=int, default=0, help="first seed")
    p.add_argument("--steps", type=int, help="denoising steps (default: the model's)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--mp4", action="store_true", help="judge the mp4 `generate` writes (vp9), not the frames")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    judged = judgements(SemanticGenPipeline.embedded(), args.prompt, range(args.first, args.first + args.seeds),
                        args.steps, args.mp4)
    for seed, j in judged.items():
        print(seed, verdict(j))
    got = {seed: j["objects"][0] for seed, j in judged.items()}
    right = [s for s, v in got.items() if all(v[a] is not False for a in ASPECTS)]
    counts = ", ".join(f"{a} {sum(bool(v[a]) for v in got.values())}" for a in ASPECTS)
    print(f"{args.prompt!r}, seeds {args.first}..{args.first + args.seeds - 1}{', the mp4' if args.mp4 else ''}: "
          f"{counts} of {len(got)} right; "
          f"all three at seeds {right or 'none'}")
    return 0


if __name__ == "__main__":
    run_command(main)
