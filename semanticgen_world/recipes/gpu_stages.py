"""The embedded default's stages on one GPU within a fixed time: world clips encoded into feature caches by
several processes sharing the GPU, then several trainer runs side by side on it, each ending with a cool-down.

    python -m semanticgen_world.recipes.gpu_stages --out runs/gpu --minutes 8.5 --clips 12800 --cache-procs 8

Tiny models leave a GPU mostly idle in one process (each step is a few hundred small kernels), so the caches
and the runs each take a process of their own on the same GPU. Each run (``RUNS``) trains at a constant
learning rate for ``--probe-minutes``, then continues from its checkpoint with ``--steps S + X --decay-steps
X``, X being the steps its measured speed gives in the time left: the same weights as one trainer command with
those two options (the learning rate is a function of the step), which the run's ``command.txt`` records.
Every part is the project's own command (``semanticgen_world.cache``, ``semanticgen_core.trainer``); this
file only schedules them. A CPU machine runs it too (slowly: ``--clips 8 --minutes 2`` is a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from semanticgen_core.errors import SemanticGenError, run_command

WEIGHTS = Path(__file__).resolve().parents[2] / "semanticgen_core" / "weights"

# name -> trainer arguments (the cache, --out and the schedule are added). Stage 2 candidates are fresh DiTs on
# the shipped compressor, frozen, so the shipped stage 1, aligner and preview decoder stay valid for them.
OBJECTS = ["--object-weight", "8", "--flow-shift", "3"]  # stage 2's objects weighed up (docs/embedded_experiments.md)
RUNS = {
    "s2-joint-256": ["stage2", "--compressor", "{W}/stage2.safetensors", "--freeze-compressor", "--width", "256",
                     "--plan-attention", "joint", "--batch", "128", "--lr", "5e-4", "--warmup", "300", *OBJECTS],
    "s2-gated-256": ["stage2", "--compressor", "{W}/stage2.safetensors", "--freeze-compressor", "--width", "256",
                     "--batch", "128", "--lr", "5e-4", "--warmup", "300", *OBJECTS],
    "s2-joint-192": ["stage2", "--compressor", "{W}/stage2.safetensors", "--freeze-compressor", "--width", "192",
                     "--plan-attention", "joint", "--batch", "128", "--lr", "5e-4", "--warmup", "300", *OBJECTS],
    "s1-continued": ["stage1", "--init", "{W}/stage1.safetensors", "--stage2", "{W}/stage2.safetensors",
                     "--batch", "256", "--lr", "2e-4", "--warmup", "100"],
    # two-object scenes are where stage 1 fails (the model card): is it the 128-wide model's capacity?
    "s1-fresh-256": ["stage1", "--stage2", "{W}/stage2.safetensors", "--width", "256", "--batch", "256",
                     "--lr", "5e-4", "--warmup", "300"],
}
SLACK_MINUTES = 3  # a trainer part's start-up, final checkpoint and export beyond its --minutes
COMMON = ["--ema", "0.999", "--workers", "3", "--threads", "1", "--save-every", "1000000000", "--log-every", "25",
          "--export-dtype", "float16"]


def build_caches(out: Path, clips: int, procs: int, text_encoder: str | None, minutes: float) -> list[Path]:
    """``procs`` cache commands over consecutive world seeds; returns the caches that completed in time."""
    per = -(-clips // procs)
    folders, jobs = [], []
    for k in range(procs):
        folder = out / f"cache-{k}"
        cmd = [sys.executable, "-m", "semanticgen_world.cache", "--out", str(folder), "--first-seed", str(k * per),
               "--clips", str(per), "--captions", "4", "--items-per-shard", "100", "--threads", "1",
               "--vae", str(WEIGHTS / "vae.safetensors"), "--encoder", str(WEIGHTS / "semantic_encoder.safetensors")]
        if text_encoder:
            cmd += ["--text-encoder", text_encoder]
        log = open(out / f"cache-{k}.log", "w")
        jobs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        folders.append(folder)
    deadline = time.monotonic() + 60 * minutes
    for proc, log in jobs:
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.terminate()  # its finished shards stay; the folder is left out below
            proc.wait()
        log.close()
    done = []
    for folder, (proc, _) in zip(folders, jobs):
        record = folder / "cache.json"
        shards = json.loads(record.read_text())["shards"] if record.is_file() else None
        if proc.returncode == 0 and shards and len(list(folder.glob("shard_*.safetensors"))) == shards:
            done.append(folder)
        else:
            print(f"cache {folder} did not complete (exit {proc.returncode}); see {folder}.log", flush=True)
    if not done:
        raise SemanticGenError(f"no feature cache completed in {minutes} min: see {out}/cache-*.log")
    return done


def trained_so_far(run: Path, wall_minutes: float) -> tuple[int, float]:
    """(step of the latest checkpoint, steps a minute: by the log's training time, else by ``wall_minutes``)."""
    step = int((run / "checkpoints" / "latest").read_text().strip()[len("step_"):])
    log = run / "log.jsonl"
    last = json.loads(log.read_text().splitlines()[-1]) if log.is_file() else {"step": step, "minutes": wall_minutes}
    return step, float(last["step"]) / max(float(last["minutes"]), 1e-6)


def train(name: str, args: list[str], caches: list[Path], out: Path, probe: float, until: float,
          results: dict) -> None:
    """One run: ``probe`` minutes at a constant rate, then a cool-down sized to end by ``until`` (monotonic).
    Each part is killed past its minutes plus ``SLACK_MINUTES`` (a hung trainer never holds the recipe)."""
    run = out / name
    base = [sys.executable, "-m", "semanticgen_core.trainer", *[a.format(W=os.path.relpath(WEIGHTS)) for a in args],
            "--cache", *map(str, caches), "--out", str(run), *COMMON]
    with open(out / f"{name}.log", "w") as log:
        def part(extra: list[str], minutes: float) -> tuple[int | None, float]:
            """(exit code, None if killed; wall minutes) of one trainer command stopping after ``minutes``."""
            began = time.monotonic()
            try:
                code = subprocess.run([*base, *extra, "--minutes", str(minutes)], stdout=log, stderr=subprocess.STDOUT,
                                      timeout=60 * (minutes + SLACK_MINUTES)).returncode
            except subprocess.TimeoutExpired:
                code = None
            return code, (time.monotonic() - began) / 60

        code, wall = part([], probe)
        if code != 0:
            results[name] = f"failed ({'killed, hung' if code is None else f'exit {code}'}) in its first part"
            return
        step, per_minute = trained_so_far(run, wall)
        left = (until - time.monotonic()) / 60 - 0.4  # start-up, the final checkpoint and export
        decay = max(1, int(per_minute * left * 0.9))
        schedule = ["--steps", str(step + decay), "--decay-steps", str(decay)]
        (run / "command.txt").write_text(" ".join(["python -m semanticgen_core.trainer", *base[3:], *schedule]) + "\n")
        code, wall = part(schedule, max(0.2, left + 0.2))
    step_end, per_minute = trained_so_far(run, wall)
    results[name] = (f"{'killed, hung' if code is None else f'exit {code}'}: {step_end} of {step + decay} steps, "
                     f"{per_minute:.0f} a minute (constant to {step}, cool-down over {decay})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder of the caches, run folders and logs")
    p.add_argument("--minutes", type=float, required=True, help="wall time of the whole recipe")
    p.add_argument("--clips", type=int, default=12800, help="world clips (seeds 0..N-1), 4 captions each")
    p.add_argument("--cache-procs", type=int, default=8, help="processes encoding caches side by side")
    p.add_argument("--cache-minutes", type=float, default=2.0, help="longest the caches may take")
    p.add_argument("--probe-minutes", type=float, default=1.5, help="each run's constant-rate part")
    p.add_argument("--text-encoder", help="an all-MiniLM-L6-v2 folder (default: the bundled package's)")
    p.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=sorted(RUNS))
    args = p.parse_args(argv)
    start = time.monotonic()
    until = start + 60 * args.minutes
    args.out.mkdir(parents=True, exist_ok=True)
    caches = build_caches(args.out, args.clips, args.cache_procs, args.text_encoder, args.cache_minutes)
    print(f"caches ready in {time.monotonic() - start:.0f} s: {', '.join(c.name for c in caches)}", flush=True)
    results: dict[str, str] = {}
    threads = [threading.Thread(target=train, args=(name, RUNS[name], caches, args.out, args.probe_minutes, until,
                                                    results)) for name in args.runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in args.runs:
        print(f"{name}: {results.get(name)}", flush=True)
    print(f"done in {(time.monotonic() - start) / 60:.2f} min", flush=True)


if __name__ == "__main__":
    run_command(main)
