"""Best of N videos, chosen by the aligner: does reading each finished video back and keeping the one whose plan
best matches the prompt make the embedded default follow it better?

For each of the evaluation's held-out prompts (``python -m semanticgen eval``'s: world seeds from
``HELDOUT_SEED_START + --first``, the shipped defaults), N videos are made at seeds ``s, s + 1000, ...`` (``s`` the
eval's seed for that prompt, so candidate 0 is exactly the eval's video); each is read back by the semantic encoder
and the compressor (``pipeline.encode_video``) and scored against its prompt by stage 1's aligner
(``plan_alignment.PlanTextAligner.score``, the score the alignment guidance climbs); the independent detector judges
every candidate. Prints, for best-of-1..N, the figures ``eval`` prints (colour, direction, shape over all prompt
objects; all three right; colour and direction by the number of objects) and, against candidate 0, how many
objects each aspect gains and loses with a two-sided sign test; then each candidate alone and the lowest-scored
one (how well the aligner tells videos apart). ``generate --candidates N``, ``eval --candidates N`` and the Best of N
Videos node keep the highest-scored video; this bench judges every candidate.

    python bench/video_candidates.py --prompts 100 --candidates 4 [--first 0] [--wording paraphrase] \
        [--threads 1] [--out runs/video_candidates.json]

About 2 s a video on one CPU thread (100 prompts x 4 candidates: 13 min).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semanticgen_core.checkpoints import atomic_file  # noqa: E402
from semanticgen_core.errors import SemanticGenError, run_command  # noqa: E402
from semanticgen_core.pipeline import SemanticGenPipeline, candidate_seeds  # noqa: E402
from semanticgen_core.sampling import SamplingOptions  # noqa: E402
from semanticgen_world import evaluation as ev, world  # noqa: E402


def candidates(pipe: SemanticGenPipeline, prompts: list[str], seeds: list[int], n: int) -> list[list[dict]]:
    """Per prompt, ``n`` candidates ``{"seed", "score", "judgement"}`` at ``candidate_seeds`` (as
    ``SemanticGenPipeline.best_of`` makes them; the score is ``video_score``'s)."""
    d = pipe.preset.defaults
    out = []
    for prompt, seed in zip(prompts, seeds):
        row = []
        for s in candidate_seeds(seed, n):
            frames = pipe(prompt, opts=SamplingOptions(steps=d["steps"], guidance=d["guidance"], seed=s))
            row.append({"seed": s, "score": pipe.video_score(frames, d["fps"], prompt),
                        "judgement": ev.judge(frames, prompt)})
        out.append(row)
    return out


def best_of(rows: list[list[dict]], n: int) -> list[dict]:
    """The judgement of the highest-scored of each prompt's first ``n`` candidates."""
    return [max(row[:n], key=lambda c: c["score"])["judgement"] for row in rows]


def line(judgements: list[dict]) -> str:
    a = ev.aggregate(judgements)
    cell = lambda r: f"{100 * r['accuracy']:.1f}% ({r['correct']}/{r['total']})"  # noqa: E731
    by = a["by_object_count"]
    return (" ".join(f"{name} {cell(a['objects'][k])}" for k, name in ev.HEADLINE.items())
            + f"; all three {a['all_correct']['correct']}; "
            + "; ".join(f"{c} object(s): colour {cell(by[c]['color'])}, direction {cell(by[c]['motion'])}"
                        for c in sorted(by)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--first", type=int, default=0, help="held-out prompt to start at (as eval --first)")
    p.add_argument("--seed", type=int, default=0, help="the eval's seed of the first prompt (as eval --seed)")
    p.add_argument("--candidates", type=int, default=4, help="videos per prompt (default 4)")
    p.add_argument("--wording", choices=ev.WORDINGS, default="template")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, help="write every candidate's score and judgement here (JSON)")
    args = p.parse_args(argv)
    if args.prompts < 1 or args.candidates < 1:
        raise SemanticGenError(f"--prompts and --candidates must be at least 1, got {args.prompts} and "
                               f"{args.candidates}")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = SemanticGenPipeline.embedded(with_encoder=True)
    prompts = ev.heldout_prompts(args.prompts, world.HELDOUT_SEED_START + args.first, wording=args.wording)
    rows = candidates(pipe, prompts, [args.seed + i for i in range(len(prompts))], args.candidates)
    base = [row[0]["judgement"] for row in rows]
    for n in range(1, args.candidates + 1):
        picked = best_of(rows, n)
        moves = "; ".join(f"{name} +{g} -{lost} (p {ev.sign_test(g, lost):.2f})"
                          for k, name in ev.HEADLINE.items() for g, lost in [ev.paired_changes(base, picked, k)])
        print(f"best of {n}: {line(picked)}" + (f"\n    against candidate 0: {moves}" if n > 1 else ""))
    for k in range(1, args.candidates):
        print(f"candidate {k} alone: {line([row[k]['judgement'] for row in rows])}")
    if args.candidates > 1:
        print(f"lowest-scored: {line([min(row, key=lambda c: c['score'])['judgement'] for row in rows])}")
    if args.out:
        with atomic_file(args.out) as tmp:
            tmp.write_text(json.dumps({"command": " ".join(sys.argv), "wording": args.wording, "first": args.first,
                                       "prompts": prompts, "candidates": rows}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_command(main)
