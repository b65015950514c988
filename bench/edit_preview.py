"""Benchmark: the plan editor's instant preview (``POST /semanticgen/edit_plan/preview``) on a 60 s plan.

    python bench/edit_preview.py [--seconds 60] [--runs 5]

Makes a plan of ``--seconds`` with the embedded default's stage 1 (4 sampling steps: the plan's content
does not change the cost), lets the Edit Plan node remember it as a run would, then times the route's work
(``nodes.edit.preview_request``: apply the edit list, draw the input and output plans with the preview
decoder, encode the strips) for a few edit lists, as the timeline sends them after each edit. Prints the
median of ``--runs`` per edit list against the target (1 s) and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import torch

    from semanticgen.runner import load_pack
    from semanticgen_core.pipeline import SemanticGenPipeline
    from semanticgen_core.sampling import SamplingOptions

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    edit = load_pack().nodes.edit
    pipe = SemanticGenPipeline.embedded()
    fps = 8.0
    frames = int(args.seconds * fps) // 4 * 4 + 1
    plan = pipe.generate_plan("a red circle moving from left to right over blue stripes", frames, fps, 64, 64,
                              SamplingOptions(steps=4, seed=0))
    edit.remember_plan("1", plan)
    d = plan.duration_s
    cases = {
        "no edits": [],
        "cut": [{"op": "cut", "start_s": d / 4, "end_s": d / 2}],
        "reverse + interpolate": [{"op": "reverse"}, {"op": "interpolate", "start_s": d / 6, "end_s": d / 4}],
        "regenerate (pending)": [{"op": "regenerate", "start_s": d / 12, "end_s": d / 6, "prompt": "a blue star",
                                  "seed": 1}],
    }
    print(f"plan: {plan.grid[0]} steps of {plan.grid[1]}x{plan.grid[2]} tokens ({plan.duration_s:.1f} s), "
          f"embedded default; {args.runs} runs each")
    for name, edits in cases.items():
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            status, body = edit.preview_request({"node_id": "1", "edits": edits})
            times.append(time.perf_counter() - started)
            assert status == 200, body
        median = statistics.median(times)
        verdict = "PASS" if median <= TARGET_S else "MISS"
        print(f"  {name:<24} {median * 1000:7.0f} ms  (target {TARGET_S * 1000:.0f} ms: {verdict}; "
              f"pending {body['pending']})")
    one, five, _ = os.getloadavg()
    print(f"load average {one:.2f}, {five:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
