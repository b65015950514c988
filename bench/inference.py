"""Benchmark: inference time and peak VRAM on a GPU, SemanticGen against a single-stage Wan of the same size.

    python bench/inference.py                                   # one H100/H200: wan2.1-1.3b, 832x480, 16 fps
    python bench/inference.py --device cpu --preset tiny --seconds 2 6 --steps 4   # the test's quick mode

Random weights of the real sizes (``presets.py``; built on the device in bf16, nothing downloaded):
stage 1 (``SemanticDiT``, full attention over the plan), stage 2 (``LatentDiT``: video and plan tokens in
shifted windows, streamed over time as ``pipeline.render_latents`` runs it) and the VAE decode, for each
``--seconds``, against the single-stage baseline: the same DiT as stage 2 with ``window_frames=None`` and
no plan, which is plain Wan2.1. Cost does not depend on the weights' values.

A **denoising step** is one model call at batch 2 (classifier-free guidance batches the two texts, as
``sampling.denoise`` does) plus the Euler update. Each part is warmed up once, then ``--timed-steps`` steps
are timed (median), and the whole sampling (``--steps``) is that times the step count: *extrapolated*,
said so in the table. Where a part would not fit in what is left of ``--max-seconds`` (the 60 s baseline:
full attention over 376k tokens), it is timed with fewer or smaller calls (one forward at batch 1, times 2
for guidance) or, failing that, estimated from the shortest length's measured step by the ratio of
analytic FLOPs (``bench/long_video.py``); the table says which. Decoding a long video is timed over its
first latent frames and extrapolated by frame count (the VAE decodes chunk by chunk, a constant cost per
latent frame).

Printed: a markdown table (the device's name and the exact command above it), the ratio SemanticGen /
baseline at the longest length (the analytic estimate in docs/long_video.md: about 0.08 at 60 s), and the
target "a stage-2 step at 832x480x81 frames within 1.3x of plain Wan2.1-1.3B's step at the same size"
(``--target-seconds``, 5 s = 81 frames). ``--json`` / ``--md`` write the same to files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from semanticgen_core.errors import SemanticGenError, run_command  # noqa: E402
from semanticgen_core.pipeline import STREAM_WINDOWS, latent_frames  # noqa: E402
from semanticgen_core.presets import PRESETS, Preset  # noqa: E402

PARTS = ("stage1", "stage2", "decode", "baseline")
TARGET_RATIO = 1.3  # a stage-2 step within 1.3x of plain Wan's at the same size
GiB = 2 ** 30


class OutOfBudget(Exception):
    """``--max-seconds`` ran out in the middle of a measurement."""


# --------------------------------------------------------------------------- geometry and analytic cost


def geometry(preset: Preset, seconds: float, fps: float, height: int, width: int, window: int) -> dict:
    """Token counts of one video: latent frames, video tokens, the plan grid, stage 2's windows."""
    from long_video import stage2_windows

    num_frames = int(round(seconds * fps)) + 1
    frames = latent_frames(num_frames)
    pt, ph, pw = preset.stage2["patch_size"]
    per_frame = (height // 8 // ph) * (width // 8 // pw)
    plan = preset.plan_grid(num_frames, fps, height, width)
    per_step = plan[1] * plan[2]
    return {"seconds": seconds, "num_frames": num_frames, "latent_frames": frames, "plan_grid": plan,
            "video_tokens": frames // pt * per_frame, "plan_tokens": plan[0] * per_step,
            "windows": stage2_windows(frames // pt, per_frame, plan[0], per_step, window)}


def analytic_flops(stage1: dict, stage2: dict, geo: dict, text_len: int) -> dict[str, int]:
    """FLOPs of one forward at batch 1 of each DiT part (``bench/long_video.py``'s formulas), from the
    models' full configs."""
    from long_video import DiTShape, forward_flops

    s1 = forward_flops(DiTShape.of(stage1), [[geo["plan_tokens"]]], geo["plan_tokens"], 0, text_len)
    s2 = forward_flops(DiTShape.of(stage2), geo["windows"], geo["video_tokens"], geo["plan_tokens"], text_len)
    base = forward_flops(DiTShape.of(stage2), [[geo["video_tokens"]]], geo["video_tokens"], 0, text_len)
    return {"stage1": s1["total"], "stage2": s2["total"], "baseline": base["total"]}


# --------------------------------------------------------------------------- timing


class Clock:
    """Wall time with the device synchronised, and the peak memory of what ran since ``reset``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.cuda:
            self.sync()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int | None:
        return torch.cuda.max_memory_allocated(self.device) if self.cuda else None


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise ``OutOfBudget`` in the main thread when ``seconds`` have passed (a hard stop beside the
    per-part predictions); a no-op where signals cannot be used."""
    if seconds <= 0:
        raise OutOfBudget()
    def stop(*_):
        raise OutOfBudget()

    try:
        old = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    except (ValueError, AttributeError):  # not the main thread, or no SIGALRM
        yield
        return
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def time_steps(clock: Clock, step: Callable[[], None], timed: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(timed):
        start = clock.now()
        step()
        times.append(clock.now() - start)
    return times


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, args, preset: Preset, device: torch.device, dtype: torch.dtype):
        from semanticgen_core.latent_dit import LatentDiT
        from semanticgen_core.semantic_dit import SemanticDiT
        from semanticgen_core.vae import VideoVAE

        self.args, self.preset, self.device, self.dtype = args, preset, device, dtype
        self.clock = Clock(device)
        torch.manual_seed(0)
        start = time.perf_counter()
        with torch.device(device):  # built where they run: no host copy of 1.3B parameters
            self.stage1 = SemanticDiT(**preset.stage1).to(dtype).eval()
            # stage 2 and the baseline have the same architecture: one set of weights, called two ways
            self.stage2 = LatentDiT(**{**preset.stage2, "window_frames": args.window}).to(dtype).eval()
            self.vae = VideoVAE.from_config(preset.vae).to(dtype).eval()
        self.build_s = time.perf_counter() - start
        if args.compile:
            from semanticgen_core.compile import compile_blocks

            compile_blocks(self.stage1)
            compile_blocks(self.stage2)
        self.text = torch.randn(2, args.text_len, preset.stage2["text_dim"], device=device, dtype=dtype)
        self.t = torch.full((2,), 500.0, device=device)
        self.warm: set[str] = set()

    # -- one step of each part --
    def steps(self, part: str, geo: dict, batch: int = 2) -> Callable[[], None]:
        """A callable doing one denoising step (model call at ``batch`` + Euler update) of ``part``."""
        a, dev, dt = self.args, self.device, self.dtype
        g = torch.Generator(dev).manual_seed(0)
        text, t = self.text[:batch], self.t[:batch]
        if part == "stage1":
            c = self.stage1.config
            x = torch.randn(batch, c.in_channels, *geo["plan_grid"], device=dev, dtype=dt, generator=g)

            def call():
                return self.stage1(x, t, text).sample
        else:
            c = self.stage2.config
            shape = (batch, c.in_channels, geo["latent_frames"], a.height // 8, a.width // 8)
            x = torch.randn(shape, device=dev, dtype=dt, generator=g)
            if part == "stage2":
                plan = torch.randn(batch, *geo["plan_grid"], c.semantic_dim, device=dev, dtype=dt, generator=g)

                def call():
                    return self.stage2(x, t, text, semantic_tokens=plan, window_frames=a.window,
                                       stream_frames=None if a.one_pass else STREAM_WINDOWS * a.window,
                                       window_offset=1.0).sample
            else:
                def call():
                    return self.stage2(x, t, text, window_frames=None).sample

        def step():
            nonlocal x
            with torch.no_grad():
                v = call()
                x = x - 0.02 * v  # the Euler update (its cost is nothing next to the call)

        return step

    def decode(self, geo: dict, max_latent_frames: int | None) -> tuple[float, int]:
        """Decode (streamed, chunk by chunk, frames to the CPU and dropped) the first
        ``max_latent_frames`` latent frames (all when None); returns (seconds, latent frames decoded)."""
        c = self.vae.config
        shape = (1, c.z_dim, geo["latent_frames"], self.args.height // 8, self.args.width // 8)
        g = torch.Generator(self.device).manual_seed(0)
        latents = torch.randn(shape, device=self.device, dtype=self.dtype, generator=g)
        if max_latent_frames is not None and max_latent_frames < geo["latent_frames"]:
            latents = latents[:, :, :max_latent_frames]
        start = self.clock.now()
        for chunk in self.vae.decode_iter(latents, chunk=1):
            del chunk
        return self.clock.now() - start, latents.shape[2]


def measure(bench: Bench, part: str, geo: dict, flops: dict, reference: dict | None, budget_end: float) -> dict:
    """One row: time a part at one length within what is left of the budget."""
    a, clock = bench.args, bench.clock
    row = {"seconds": geo["seconds"], "part": part, "num_frames": geo["num_frames"],
           "latent_frames": geo["latent_frames"], "tokens": None, "step_s": None, "steps": a.steps,
           "total_s": None, "peak_vram_bytes": None, "how": "", "error": None}
    if part == "stage1":
        row["tokens"] = geo["plan_tokens"]
    elif part == "stage2":
        row["tokens"] = geo["video_tokens"] + geo["plan_tokens"]
    elif part == "baseline":
        row["tokens"] = geo["video_tokens"]
    left = budget_end - time.perf_counter()
    predicted = None
    clock.reset_peak()
    try:
        if part == "decode":
            row["steps"] = None
            n = None if geo["latent_frames"] <= a.decode_frames else a.decode_frames
            per_frame = reference.get("decode") if reference else None  # seconds per latent frame
            if per_frame and per_frame * (n or geo["latent_frames"]) > left - 5:
                row["total_s"] = per_frame * geo["latent_frames"]
                row["how"] = (f"estimated, not run: {max(left, 0):.0f} s of the budget left; the "
                              f"{reference['seconds']:g} s decode's time per latent frame x {geo['latent_frames']}")
                return row
            with deadline(left):
                if "decode" not in bench.warm:
                    bench.decode(geo, min(2, geo["latent_frames"]))
                    bench.warm.add("decode")
                elapsed, done = bench.decode(geo, n)
            if done < geo["latent_frames"]:
                # chunk 0 is one latent frame (1 video frame), each later one a latent frame (4 frames)
                row["total_s"] = elapsed * geo["latent_frames"] / done
                row["how"] = f"first {done} of {geo['latent_frames']} latent frames timed, extrapolated by frame count"
            else:
                row["total_s"] = elapsed
                row["how"] = "measured (whole video)"
            row["peak_vram_bytes"] = clock.peak()
            return row

        # predicted seconds for one step: from the shortest length's measured step, scaled by FLOPs
        if reference and reference.get(part):
            ref_step, ref_flops = reference[part]
            predicted = ref_step * flops[part] / ref_flops
        warmup = 0 if part in bench.warm and not a.compile else 1  # compiled: new lengths recompile
        timed, batch, how = a.timed_steps, 2, []
        if predicted is not None:
            # at most half of what is left for one part, so a mispredicted step cannot eat the rest
            fit = int((0.5 * left - 5) / predicted) - warmup
            if fit < 1 and predicted / 2 < 0.8 * left - 5:
                timed, batch, warmup = 1, 1, 0  # one forward at batch 1, doubled for guidance below
            elif fit < 1:
                row["step_s"] = predicted
                row["total_s"] = predicted * a.steps
                row["how"] = (f"estimated, not run: a step would take ~{predicted:.0f} s, {max(left, 0):.0f} s of "
                              f"the budget left; scaled from the {reference['seconds']:g} s step by analytic FLOPs")
                return row
            else:
                timed = max(1, min(timed, fit))
        with deadline(left):
            times = time_steps(clock, bench.steps(part, geo, batch), timed, warmup)
        bench.warm.add(part)
        step = statistics.median(times) * (2 if batch == 1 else 1)
        if batch == 1:
            how.append("1 forward at batch 1, x2 for guidance")
        else:
            how.append(f"median of {timed} timed step(s) after {warmup} warm-up")
        if a.steps != timed or batch == 1:
            how.append(f"x{a.steps} steps: extrapolated")
        row.update(step_s=step, total_s=step * a.steps, peak_vram_bytes=clock.peak(), how="; ".join(how))
    except OutOfBudget:
        if predicted is not None:
            row.update(step_s=predicted, total_s=predicted * a.steps, peak_vram_bytes=clock.peak(),
                       how=f"estimated: the run was stopped by --max-seconds; scaled from the "
                           f"{reference['seconds']:g} s step by analytic FLOPs")
        else:
            row["error"] = "stopped: --max-seconds ran out"
    except torch.cuda.OutOfMemoryError:
        row["error"] = "does not fit in GPU memory"
        torch.cuda.empty_cache()
    return row


def run(args) -> dict:
    preset = PRESETS[args.preset]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SemanticGenError("no CUDA device here: run on a GPU, or pass --device cpu --preset tiny")
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    d = preset.defaults
    args.fps = args.fps or float(d["fps"])
    args.height = args.height or int(d["height"])
    args.width = args.width or int(d["width"])
    args.window = args.window or d.get("window_frames") or 4
    args.text_len = args.text_len or (512 if preset.text_encoder == "umt5-xxl" else 16)
    args.steps = args.steps or int(d["steps"])
    start = time.perf_counter()
    budget_end = start + args.max_seconds
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    bench = Bench(args, preset, device, dtype)
    seconds = sorted(set(args.seconds))
    if args.target_seconds not in seconds:
        seconds = sorted({*seconds, args.target_seconds})
    geos = {s: geometry(preset, s, args.fps, args.height, args.width, args.window) for s in seconds}
    configs = dict(bench.stage1.config), dict(bench.stage2.config)
    flops = {s: analytic_flops(*configs, geos[s], args.text_len) for s in seconds}
    rows, reference = [], {}
    for s in seconds:  # shortest first: its steps predict the longer ones' (the budget guard)
        for part in PARTS:
            print(f"[inference] {part} at {s:g} s ...", file=sys.stderr, flush=True)
            row = measure(bench, part, geos[s], flops[s], reference or None, budget_end)
            rows.append(row)
            if not reference.get(part) and row["total_s"] and not row["error"] and "estimated" not in row["how"]:
                reference.setdefault("seconds", s)
                reference[part] = row["total_s"] / geos[s]["latent_frames"] if part == "decode" \
                    else (row["step_s"], flops[s][part])
            if row["error"]:
                print(f"[inference] {part} at {s:g} s: {row['error']}", file=sys.stderr, flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" \
        else f"CPU ({torch.get_num_threads()} threads)"
    return {"command": "python " + shlex.join(["bench/inference.py", *args.argv]), "device": device_name,
            "torch": torch.__version__, "preset": preset.name, "dtype": str(dtype).replace("torch.", ""),
            "height": args.height, "width": args.width, "fps": args.fps, "window_frames": args.window,
            "stream_frames": None if args.one_pass else STREAM_WINDOWS * args.window, "steps": args.steps,
            "guidance_batch": 2, "text_len": args.text_len, "compile": args.compile, "build_s": bench.build_s,
            "wall_s": time.perf_counter() - start, "max_seconds": args.max_seconds,
            "rows": rows, "summary": summarize(rows, seconds, flops, args.target_seconds)}


def summarize(rows: list[dict], seconds: Sequence[float], flops: dict, target_seconds: float) -> dict:
    def get(s, part):
        r = next((r for r in rows if r["seconds"] == s and r["part"] == part), None)
        return None if r is None or r["error"] else r

    out = {"lengths": {}}
    for s in seconds:
        parts = {p: get(s, p) for p in PARTS}
        total = lambda *ps: None if any(parts[p] is None or parts[p]["total_s"] is None for p in ps) \
            else sum(parts[p]["total_s"] for p in ps)  # noqa: E731
        sg, base = total("stage1", "stage2"), total("baseline")
        sg_dec, base_dec = total("stage1", "stage2", "decode"), total("baseline", "decode")
        f = flops[s]
        out["lengths"][str(s)] = {
            "semanticgen_s": sg, "baseline_s": base, "semanticgen_with_decode_s": sg_dec,
            "baseline_with_decode_s": base_dec,
            "ratio": sg / base if sg and base else None,
            "ratio_with_decode": sg_dec / base_dec if sg_dec and base_dec else None,
            "analytic_ratio": (f["stage1"] + f["stage2"]) / f["baseline"]}
    s2, base = get(target_seconds, "stage2"), get(target_seconds, "baseline")
    step_ratio = s2["step_s"] / base["step_s"] if s2 and base and s2["step_s"] and base["step_s"] else None
    out["target"] = {"seconds": target_seconds, "stage2_step_s": s2 and s2["step_s"],
                     "baseline_step_s": base and base["step_s"], "ratio": step_ratio, "limit": TARGET_RATIO,
                     "pass": None if step_ratio is None else step_ratio <= TARGET_RATIO}
    return out


# --------------------------------------------------------------------------- report


def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def markdown(rec: dict) -> str:
    lines = [f"Device: **{rec['device']}** (torch {rec['torch']}), preset `{rec['preset']}`, {rec['dtype']}, "
             f"{rec['width']}x{rec['height']} at {rec['fps']:g} fps; stage 2 windows of {rec['window_frames']} latent "
             f"frames, streamed {rec['stream_frames']} at a time; {rec['steps']} sampling steps with guidance "
             "(batch 2); "
             f"text {rec['text_len']} tokens; random weights; torch.compile {'on' if rec['compile'] else 'off'}.",
             f"Command: `{rec['command']}` (wall {rec['wall_s']:.0f} s of --max-seconds {rec['max_seconds']:g}; "
             f"models built in {rec['build_s']:.1f} s)", "",
             "| length (s) | part | frames | latent frames | tokens | s per step | steps | total (s) "
             "| peak VRAM (GiB) | how |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rec["rows"]:
        vram = None if r["peak_vram_bytes"] is None else r["peak_vram_bytes"] / GiB
        how = r["error"] or r["how"]
        lines.append(f"| {r['seconds']:g} | {r['part']} | {r['num_frames']} | {r['latent_frames']} "
                     f"| {r['tokens'] if r['tokens'] is not None else '-'} | {_f(r['step_s'])} "
                     f"| {r['steps'] if r['steps'] is not None else '-'} | {_f(r['total_s'], '{:.2f}')} "
                     f"| {_f(vram, '{:.2f}')} | {how} |")
    lines += ["", "| length (s) | SemanticGen: stage 1 + stage 2 (s) | baseline (s) | SemanticGen / baseline "
              "| analytic (FLOPs) | with decode: SemanticGen (s) | baseline (s) | ratio |",
              "|---|---|---|---|---|---|---|---|"]
    for s, v in rec["summary"]["lengths"].items():
        lines.append(f"| {float(s):g} | {_f(v['semanticgen_s'], '{:.2f}')} | {_f(v['baseline_s'], '{:.2f}')} "
                     f"| {_f(v['ratio'])} | {v['analytic_ratio']:.3f} | {_f(v['semanticgen_with_decode_s'], '{:.2f}')} "
                     f"| {_f(v['baseline_with_decode_s'], '{:.2f}')} | {_f(v['ratio_with_decode'])} |")
    t = rec["summary"]["target"]
    verdict = "n/a" if t["pass"] is None else ("PASS" if t["pass"] else "MISS")
    frames = int(round(t["seconds"] * rec["fps"])) + 1
    lines += ["", f"Target: a stage-2 step at {rec['width']}x{rec['height']}x{frames} frames within {t['limit']}x "
              f"of the plain Wan step of the same size: stage 2 {_f(t['stage2_step_s'])} s, "
              f"plain Wan {_f(t['baseline_step_s'])} s, ratio {_f(t['ratio'])}: **{verdict}**"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="wan2.1-1.3b", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), help="default: bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--seconds", type=float, nargs="+", default=[5, 60])
    parser.add_argument("--target-seconds", type=float, default=5.0,
                        help="the length of the stage-2 vs plain-Wan step target (5 s at 16 fps = 81 frames)")
    parser.add_argument("--fps", type=float)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--window", type=int, help="stage-2 window in latent frames (default: the preset's, else 4)")
    parser.add_argument("--steps", type=int, help="sampling steps the totals are for (default: the preset's)")
    parser.add_argument("--timed-steps", type=int, default=3, help="steps timed per part (median)")
    parser.add_argument("--decode-frames", type=int, default=24,
                        help="a longer video's decode is timed over this many latent frames and extrapolated")
    parser.add_argument("--text-len", type=int, help="text tokens (default 512 for umT5, 16 otherwise)")
    parser.add_argument("--one-pass", action="store_true", help="stage 2 in one pass instead of streamed")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the DiT blocks (semanticgen_core.compile)")
    parser.add_argument("--max-seconds", type=float, default=420.0,
                        help="budget for the measurements; a part that would overrun is estimated instead")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args(argv)
    args.argv = argv
    rec = run(args)
    text = markdown(rec)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rec, indent=1, default=str))
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    run_command(main)
