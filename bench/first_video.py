"""Benchmark: the README's first command, cold (a fresh process to the mp4) and warm (models loaded).

    python bench/first_video.py [--cold-runs 3] [--warm-runs 3] [--steps N] [--seconds S] [--json FILE]

Cold: runs ``python -m semanticgen generate PROMPT --seed SEED --out ...mp4`` in a fresh process ``--cold-runs`` times
and takes the wall clock from process start until it has exited with the mp4 written; the process's own
stage table splits that into process start + imports (the rest) and its stages. Warm: in this process,
loads the models once (as a ComfyUI server keeps them), then times ``--warm-runs`` runs of the same command
(``semanticgen.cli.generate``: stages and decode, the models coming from the cache). Prints each part's
median and its share, the targets (cold <= 5 s, warm stages + decode <= 2 s) with PASS/MISS, and the load
average (timings on busy cores are not comparable).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the README's first command
PROMPT, SEED = "a red circle moving from left to right over blue stripes", "280"
COLD_TARGET_S, WARM_TARGET_S = 5.0, 2.0
STAGES = ("load models", "Stage 1: plan", "Stage 2: render", "VAE decode")
START = "process start + imports"
ROW = re.compile(r"^  (.+?)\s+(\d+\.\d+) s\b")


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def stage_rows(stdout: str) -> dict[str, float]:
    """The stage table ``generate`` prints: {stage: seconds}."""
    rows = {}
    for line in stdout.splitlines():
        m = ROW.match(line)
        if m and m.group(1).strip() in STAGES:
            rows[m.group(1).strip()] = float(m.group(2))
    return rows


def cold_run(extra: list[str], out: Path) -> dict[str, float]:
    """One fresh ``python -m semanticgen generate``: wall seconds to the mp4, split into its parts."""
    cmd = [sys.executable, "-m", "semanticgen", "generate", PROMPT, "--seed", SEED, "--out", str(out), "-q",
           *extra]
    t0 = time.perf_counter()
    # a child that hangs ends the bench (and its test) with TimeoutExpired, naming the command
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    rows = stage_rows(done.stdout)
    if set(rows) != set(STAGES):
        raise RuntimeError(f"no stage table in the output of {' '.join(cmd)}:\n{done.stdout}")
    return {START: wall - sum(rows.values()), **rows, "total": wall}


def warm_runs(extra: list[str], out: Path, runs: int) -> list[dict[str, float]]:
    """Load the models (one untimed run), then time ``runs`` runs of ``generate`` in this process."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import torch

    from semanticgen import cli

    args = cli.build_parser().parse_args(["generate", PROMPT, "--seed", SEED, "--out", str(out), "-q",
                                          *extra])
    cli.set_threads(args)  # as the command does
    got = []
    for i in range(runs + 1):
        with contextlib.redirect_stdout(io.StringIO()):
            times, loads, _, _ = cli.generate(args)
        if i == 0:
            continue  # the load
        rows = dict(times)
        rows["total"] = sum(rows[s] for s in STAGES[1:])  # stages + decode
        rows["model loads"] = loads
        rows["threads"] = torch.get_num_threads()
        got.append(rows)
    return got


def median_rows(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def table(title: str, rows: dict[str, float], parts: tuple[str, ...], total_name: str, target: float) -> list[str]:
    lines = [title]
    total = rows["total"]
    for part in parts:
        share = rows[part] / total if total > 0 else 0.0
        lines.append(f"  {part:<24}  {rows[part]:7.2f} s  {share:6.1%}")
    verdict = "PASS" if total <= target else "MISS"
    lines.append(f"  {total_name:<24}  {total:7.2f} s  target <= {target:g} s: {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-runs", type=int, default=3, help="fresh processes to time (default 3)")
    parser.add_argument("--warm-runs", type=int, default=3, help="in-process runs after the load (default 3)")
    parser.add_argument("--steps", type=int, help="denoising steps (default: the model's, as the README's command)")
    parser.add_argument("--seconds", type=float, help="video length (default: generate's 4 s)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: the command's, the CPUs idle at start)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.cold_runs < 1 or args.warm_runs < 1:
        parser.error("--cold-runs and --warm-runs must be at least 1")
    extra = [*(["--steps", str(args.steps)] if args.steps else []),
             *(["--seconds", str(args.seconds)] if args.seconds else []),
             *(["--threads", str(args.threads)] if args.threads else [])]
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        cold = [cold_run(extra, Path(tmp) / f"cold{i}.mp4") for i in range(args.cold_runs)]
        warm = warm_runs(extra, Path(tmp) / "warm.mp4", args.warm_runs)
    load_after = load_average()
    c, w = median_rows(cold), median_rows(warm)
    command = " ".join(["python -m semanticgen generate", json.dumps(PROMPT), "--seed", SEED, *extra])
    lines = [f"first video: {command}",
             f"{load_before} before, {load_after} after",
             *table(f"cold: fresh process to mp4 written (median of {len(cold)})", c, (START, *STAGES),
                    "total", COLD_TARGET_S),
             *table(f"warm: models loaded, {w['model loads']:g} loads, {w['threads']:g} CPU threads (median of {len(warm)})", w, STAGES[1:],
                    "stages + decode", WARM_TARGET_S)]
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "load_before": load_before, "load_after": load_after,
                                         "cold": cold, "warm": warm, "cold_median": c, "warm_median": w,
                                         "targets": {"cold_s": COLD_TARGET_S, "warm_s": WARM_TARGET_S}},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
