"""A candidate against the shipped model, or chance? Two evaluations of the same prompts, judgement by judgement.

    python bench/compare_evals.py BASE.json OTHER.json [BASE2.json OTHER2.json ...]

Each pair is two ``python -m semanticgen eval --out`` files of the same prompts (the same ``--prompts``,
``--first`` and ``--wording``), say the shipped files' and a candidate's (``--stage1``/``--stage2 FILE``). For
colour, direction and shape over every prompt object it prints each model's count, how many objects the
second gets right that the first gets wrong (+) and the reverse (-), and a two-sided sign test on them; with
several pairs (other sets of prompts, ``--first``), each set and then all of them pooled.

Pool at least two sets before keeping a change: sampling is chaotic, so a model that changes little still
flips many single judgements both ways. In session 23 the same continuation of stage 2 lost 8 directions
of 129 against the shipped files on the evaluation's prompts (+4 -12, p 0.08) and gained 10 of 122 on
prompts 600-699 (+14 -4, p 0.03): 107 and 109 of 251 pooled (``docs/embedded_experiments.md``). The shipped
sampling defaults were chosen on the evaluation's first 100 prompts, which favours the shipped files there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semanticgen_core.errors import SemanticGenError, run_command  # noqa: E402
from semanticgen_world import evaluation as ev  # noqa: E402


def read(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
        record["per_prompt"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SemanticGenError(f"{path} is not an evaluation's JSON (python -m semanticgen eval --out FILE): "
                               f"{e.__class__.__name__}: {e}") from None
    return record


def tally(base: list[dict], other: list[dict]) -> dict[str, tuple[int, int, int, int]]:
    """Per aspect: (objects right for base, for other, gained, lost)."""
    a, b = ev.aggregate(base)["objects"], ev.aggregate(other)["objects"]
    return {k: (a[k]["correct"], b[k]["correct"], *ev.paired_changes(base, other, k)) for k in ev.HEADLINE}


def line(label: str, objects: int, counts: dict[str, tuple[int, int, int, int]]) -> str:
    return f"{label} ({objects} objects): " + "; ".join(
        f"{ev.HEADLINE[k]} {a} -> {b} (+{g} -{lost}, p {ev.sign_test(g, lost):.2f})" for k, (a, b, g, lost) in counts.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", type=Path, nargs="+", help="pairs of evaluation JSONs: BASE OTHER [BASE2 OTHER2 ...]")
    args = p.parse_args(argv)
    if len(args.files) % 2:
        raise SemanticGenError(f"give the evaluations in pairs (base, other), got {len(args.files)} files")
    pooled = {k: [0, 0, 0, 0] for k in ev.HEADLINE}
    total = 0
    for base_path, other_path in zip(args.files[::2], args.files[1::2]):
        base, other = read(base_path), read(other_path)
        try:
            counts = tally(base["per_prompt"], other["per_prompt"])
        except SemanticGenError as e:
            raise SemanticGenError(f"{base_path} and {other_path}: {e}") from None
        seeds = base.get("heldout_seeds") or [None]
        objects = sum(len(j["objects"]) for j in base["per_prompt"])
        print(line(f"{base_path.name} -> {other_path.name}, world seeds {seeds[0]}..{seeds[-1]}, "
                   f"{base.get('wording', 'template')} wording", objects, counts))
        for k, c in counts.items():
            pooled[k] = [x + y for x, y in zip(pooled[k], c)]
        total += objects
    if len(args.files) > 2:
        print(line(f"pooled over {len(args.files) // 2} sets", total, {k: tuple(c) for k, c in pooled.items()}))
    return 0


if __name__ == "__main__":
    run_command(main)
