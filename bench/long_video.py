"""Benchmark: cost of long videos, SemanticGen (windowed stage 2) against the single-stage baseline.

    python bench/long_video.py [--seconds 4 8 16 32 60] [--steps 4] [--threads 2] [--repeat 3] [--json FILE]

1. **Measured, at the embedded scale** (the shipped CPU models, 64x64 at 8 fps, CFG on): for each video
   length and each part (stage 1, stage 2, VAE decode, baseline) the part runs in a fresh subprocess,
   so its peak RSS is its own. Reported: wall time of the part alone (models loaded and inputs built
   before the clock starts; text embedded beforehand), time per second of video, peak RSS during the
   part (the kernel's peak counter is reset just before it runs, ``/proc/self/clear_refs``), how much
   the part raised RSS above what was resident before it, and the peak bytes of live tensors from a
   separate one-step run under ``PeakTensorMemory`` (never during the timed run: it slows execution).
   Stage 2 renders a random plan of the right shape (cost does not depend on the values); decode
   streams frames chunk by chunk and drops them, as a streamed video writer would. Wall time scales
   with ``--steps`` (the default 4 is for speed: the per-step cost is what matters); each part is timed
   ``--repeat`` times in its process and the fastest run is reported.
2. **Analytic, at Wan2.1-1.3B scale** (480x832, 16 fps, 50 steps, CFG): attention and total FLOPs of
   SemanticGen (stage 1 over the plan with full attention + stage 2 over video and plan tokens in
   shifted windows) and of the baseline (the same DiT over the video tokens, full attention).

The targets checked: stage 2's time per second of video within 15% of constant from the shortest to
the longest length (max/min <= 1.15), and its peak RSS within 20% (max/min <= 1.20).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from semanticgen_core.errors import run_command  # noqa: E402
from semanticgen_core.pipeline import latent_frames  # noqa: E402
from semanticgen_core.presets import WAN  # noqa: E402

PARTS = ("stage1", "stage2", "decode", "baseline")
DEFAULT_SECONDS = (4, 8, 16, 32, 60)
PROMPT = "a red circle bouncing from left to right over blue stripes"
ROW_MARK = "LONG_VIDEO_ROW "  # a child's result line on stdout
TIME_TARGET, RSS_TARGET = 1.15, 1.20
MiB = 2 ** 20

# --------------------------------------------------------------------------- analytic FLOPs


def layer_flops(windows: Sequence[int], dim: int, ffn_dim: int, text_len: int) -> dict[str, int]:
    """FLOPs (a multiply-add is 2) of one Wan DiT block, batch 1, over ``N = sum(windows)`` tokens.

    ``windows``: the token count of each self-attention window (one entry: full attention over all N);
    ``D = dim``, ``F = ffn_dim``, ``L = text_len`` text tokens::

        self-attention projections (q, k, v, out)   4 * 2*N*D^2
        attention scores QK^T + values PV           sum over windows of 2 * 2*n_w*n_w*D
                                                    (= 2*2*N*N_ctx*D, N_ctx the window's token count;
                                                     N_ctx = N for full attention)
        cross-attention to the text: q, out         2 * 2*N*D^2
                                     k, v           2 * 2*L*D^2
                                     scores+values  2 * 2*N*L*D
        feed-forward (D -> F -> D)                  2 * 2*N*D*F

    In stage 2 a window holds video tokens and the plan tokens of its time span; each query attends to
    both through two softmaxes (the gated plan branch), which together cost the same as one over n_w
    keys. Elementwise work (norms, modulation, rotary, softmax) is not counted. Streamed stage 2 computes
    the text's k, v once per chunk, not once per layer pass: counted once (L << N).
    """
    n, d = sum(windows), dim
    attention = sum(4 * w * w * d for w in windows)
    projections = 8 * n * d * d
    cross = 4 * n * d * d + 4 * text_len * d * d + 4 * n * text_len * d
    ffn = 4 * n * d * ffn_dim
    return {"attention": attention, "projections": projections, "cross": cross, "ffn": ffn,
            "total": attention + projections + cross + ffn}


@dataclass(frozen=True)
class DiTShape:
    """What the FLOP count needs of a Wan-style DiT config (``LatentDiT`` / ``SemanticDiT`` kwargs)."""

    dim: int
    ffn_dim: int
    layers: int
    text_dim: int
    freq_dim: int
    patch_in: int     # in_channels * prod(patch_size)
    patch_out: int    # out_channels * prod(patch_size)
    semantic_dim: int

    @classmethod
    def of(cls, config: dict) -> DiTShape:
        pt, ph, pw = config["patch_size"]
        p = pt * ph * pw
        return cls(config["num_attention_heads"] * config["attention_head_dim"], config["ffn_dim"],
                   config["num_layers"], config["text_dim"], config["freq_dim"], config["in_channels"] * p,
                   config["out_channels"] * p, config.get("semantic_dim", 8))


def forward_flops(shape: DiTShape, layer_windows: Sequence[Sequence[int]], n_video: int, n_plan: int,
                  text_len: int) -> dict[str, int]:
    """FLOPs of one DiT forward, batch 1: the blocks (layer ``i`` with windows ``layer_windows[i % len]``)
    plus what runs once: patch embedding (a conv over ``n_video`` patches), plan projection, text
    projection (text_dim -> D -> D), timestep embedding and modulation (twice with a plan: the plan has
    its own timestep), output head."""
    d = shape.dim
    attention = blocks = 0
    for i in range(shape.layers):
        f = layer_flops(layer_windows[i % len(layer_windows)], d, shape.ffn_dim, text_len)
        attention += f["attention"]
        blocks += f["total"]
    time_mod = 2 * (shape.freq_dim * d + d * d + d * 6 * d) * (2 if n_plan else 1)
    once = (2 * n_video * shape.patch_in * d + 2 * n_plan * shape.semantic_dim * d
            + 2 * text_len * (shape.text_dim * d + d * d) + time_mod + 2 * n_video * d * shape.patch_out)
    return {"attention": attention, "total": blocks + once}


def stage2_windows(frames: int, tokens_per_frame: int, plan_steps: int, tokens_per_step: int,
                   window_frames: int | None) -> list[list[int]]:
    """Token counts of stage 2's attention windows: ``[unshifted layer, shifted layer]``, laid out by the
    library's own ``time_windows`` (plan steps at their cell centres, clamped into the video), one
    token per frame / step, then scaled by the tokens each holds. ``window_frames=None``: full attention."""
    from semanticgen_core.attention import time_windows
    from semanticgen_core.wan_blocks import cell_centres

    video = torch.arange(frames, dtype=torch.float64)
    plan = cell_centres(plan_steps, frames).clamp(0, frames - 1) if plan_steps else None
    out = []
    for shifted in (False, True):
        out.append([(w.video.stop - w.video.start) * tokens_per_frame
                    + (w.semantic.stop - w.semantic.start) * tokens_per_step
                    for w in time_windows(video, plan, window_frames, shifted)])
    return out


def wan_flops(seconds: float, height: int = 480, width: int = 832, fps: float = 16.0, steps: int = 50,
              cfg: bool = True, text_len: int = 512, window_frames: int | None = None) -> dict:
    """Analytic FLOPs of a whole generation at Wan2.1-1.3B scale (``presets.WAN``): stage 1 (SemanticDiT,
    patch 1, full attention over the plan), stage 2 (LatentDiT, video + plan tokens in shifted windows of
    ``window_frames`` latent frames, default ``WAN.defaults``) and the baseline (the same DiT as stage 2,
    video tokens only, full attention). Each is ``steps`` forwards, doubled by CFG. The semantic encoder,
    text encoder and VAE are not counted."""
    window = WAN.defaults["window_frames"] if window_frames is None else window_frames
    num_frames = int(seconds * fps) + 1
    frames = latent_frames(num_frames)
    pt, ph, pw = WAN.stage2["patch_size"]
    per_frame = (height // 8 // ph) * (width // 8 // pw)
    t_s, h_s, w_s = WAN.plan_grid(num_frames, fps, height, width)
    per_step = h_s * w_s
    n_video, n_plan = frames // pt * per_frame, t_s * per_step
    forwards = steps * (2 if cfg else 1)
    s1 = forward_flops(DiTShape.of(WAN.stage1), [[n_plan]], n_plan, 0, text_len)
    s2 = forward_flops(DiTShape.of(WAN.stage2), stage2_windows(frames // pt, per_frame, t_s, per_step, window),
                       n_video, n_plan, text_len)
    base = forward_flops(DiTShape.of(WAN.stage2), [[n_video]], n_video, 0, text_len)
    scale = lambda f: {k: v * forwards for k, v in f.items()}  # noqa: E731
    s1, s2, base = scale(s1), scale(s2), scale(base)
    return {"seconds": seconds, "num_frames": num_frames, "latent_frames": frames, "video_tokens": n_video,
            "plan_tokens": n_plan, "stage1": s1, "stage2": s2, "baseline": base,
            "semanticgen": {k: s1[k] + s2[k] for k in s1}}


def flops_table(seconds: Sequence[float]) -> tuple[str, list[dict]]:
    rows = [wan_flops(s) for s in seconds]
    t = 1e12
    lines = ["| length (s) | video / plan tokens | SemanticGen attention TFLOPs | SemanticGen total TFLOPs "
             "| baseline attention TFLOPs | baseline total TFLOPs | baseline / SemanticGen (total) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sg, b = r["semanticgen"], r["baseline"]
        lines.append(f"| {r['seconds']:g} | {r['video_tokens']:,} / {r['plan_tokens']:,} | {sg['attention'] / t:,.0f} "
                     f"| {sg['total'] / t:,.0f} | {b['attention'] / t:,.0f} | {b['total'] / t:,.0f} "
                     f"| {b['total'] / sg['total']:.2f} |")
    return "\n".join(lines), rows


# --------------------------------------------------------------------------- measurement (one part)


@dataclass(frozen=True)
class ModelPaths:
    stage1: str
    stage2: str
    vae: str
    baseline: str | None  # None: an untrained baseline of stage 2's architecture

    @classmethod
    def embedded(cls) -> ModelPaths:
        from semanticgen_core.embedded import WEIGHTS_DIR, weights_path

        baseline = WEIGHTS_DIR / "baseline.safetensors"
        return cls(str(weights_path("stage1")), str(weights_path("stage2")), str(weights_path("vae")),
                   str(baseline) if baseline.is_file() else None)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc), so RSS before a part is what is really in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (``ru_maxrss``) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cache_text(pipe, segments) -> None:
    """Embed the prompt now and serve it from a cache, so the timed part does no text encoding."""
    cache = {tuple(segments): pipe.shot_text(segments)}
    original = pipe.shot_text

    def shot_text(segs, text_embeddings=None):
        if text_embeddings is not None or tuple(segs) not in cache:
            return original(segs, text_embeddings)
        return cache[tuple(segs)]

    pipe.shot_text = shot_text


def _stage2_file_info(path: str):
    from semanticgen_core.model_files import read_metadata
    from semanticgen_core.presets import Preset

    meta = read_metadata(path)
    return Preset.from_dict(json.loads(meta["preset"])), json.loads(meta["config"])["stage2"]


def measure_part(part: str, seconds: float, steps: int, threads: int, paths: ModelPaths,
                 repeat: int = 1) -> dict:
    """Run one part at one length in this process and measure it; returns a row (see the module doc)."""
    from semanticgen_core.latent_dit import LatentDiT
    from semanticgen_core.memory import PeakTensorMemory
    from semanticgen_core.pipeline import SemanticGenPipeline
    from semanticgen_core.plan import SemanticPlan
    from semanticgen_core.sampling import SamplingOptions
    from semanticgen_core.shots import parse_shots
    from semanticgen_core.text_encoders import MiniLMTextEncoder
    from semanticgen_core.vae import VideoVAE

    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}: one of {', '.join(PARTS)}")
    torch.set_num_threads(threads)
    preset, stage2_config = _stage2_file_info(paths.stage2)
    d = preset.defaults
    fps, height, width = float(d["fps"]), int(d["height"]), int(d["width"])
    num_frames = int(seconds * fps) + 1
    frames = latent_frames(num_frames)
    opts = SamplingOptions(steps=steps, guidance=float(d["guidance"]), seed=0)
    one_step = SamplingOptions(steps=1, guidance=opts.guidance, seed=0)
    segments = parse_shots(PROMPT, num_frames / fps)
    note, tokens = "", None

    # -- load and build inputs (not timed) --
    if part == "decode":
        vae = VideoVAE.from_pretrained(paths.vae)
        latents = torch.randn((1, vae.z_dim, frames, height // 8, width // 8),
                              generator=torch.Generator().manual_seed(0))

        def run(_opts):
            for chunk in vae.decode_iter(latents, num_frames, chunk=1):
                del chunk  # a streamed writer would encode and drop it
    elif part == "stage1":
        pipe = SemanticGenPipeline.from_files(paths.stage1, None, None)
        _cache_text(pipe, segments)
        tokens = pipe.preset.plan_grid(num_frames, fps, height, width)
        tokens = tokens[0] * tokens[1] * tokens[2]

        def run(o):
            pipe.generate_plan(PROMPT, num_frames, fps, height, width, o)
    elif part == "stage2":
        pipe = SemanticGenPipeline.from_files(None, paths.stage2, None)
        _cache_text(pipe, segments)
        grid = pipe.preset.plan_grid(num_frames, fps, height, width)
        c = pipe.stage2.config
        plan = SemanticPlan(tokens=torch.randn((*grid, c.semantic_dim), generator=torch.Generator().manual_seed(0)),
                            fps=pipe.preset.plan_fps(fps), video_fps=fps, num_frames=num_frames, height=height,
                            width=width, segments=segments, encoder="bench:random", compressor=pipe.name)
        tokens = frames // c.patch_size[0] * (height // 8 // c.patch_size[1]) * (width // 8 // c.patch_size[2]) \
            + grid[0] * grid[1] * grid[2]
        note = f"windows of {c.window_frames} latent frames" if c.window_frames else "full attention"

        def run(o):
            pipe.render_latents(plan, o)
    else:  # baseline
        if paths.baseline:
            pipe = SemanticGenPipeline.from_files(None, None, None, baseline=paths.baseline)
            note = "full attention"
        else:
            model = LatentDiT(**{**{k: v for k, v in stage2_config.items() if not k.startswith("_")},
                                 "window_frames": None}).eval()
            pipe = SemanticGenPipeline(preset, MiniLMTextEncoder.from_pretrained(), None, None, None, None,
                                       name=preset.name, baseline=model)
            note = "full attention; untrained (cost does not depend on the weights)"
        _cache_text(pipe, segments)
        c = pipe.baseline.config
        tokens = frames // c.patch_size[0] * (height // 8 // c.patch_size[1]) * (width // 8 // c.patch_size[2])

        def run(o):
            pipe.render_baseline(PROMPT, num_frames, fps, height, width, o)

    # -- peak tensor bytes: a separate one-step run (the whole decode), also a warm-up --
    with PeakTensorMemory() as mem:
        run(one_step)
    peak_tensors = mem.peak
    del mem

    # -- the timed run(s), with the peak-RSS counter reset just before --
    gc.collect()
    _trim_heap()
    reset = _reset_peak_rss()
    rss_before = _rss_kib()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(opts)
        times.append(time.perf_counter() - start)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if not reset:
        note = "; ".join(filter(None, [note, "peak RSS includes model loading (could not reset the counter)"]))
    wall = min(times)
    return {"part": part, "seconds": seconds, "num_frames": num_frames, "latent_frames": frames, "tokens": tokens,
            "steps": None if part == "decode" else steps, "cfg": opts.guidance != 1.0, "threads": threads,
            "wall_s": wall, "s_per_video_s": wall / seconds, "rss_before_bytes": rss_before * 1024,
            "peak_rss_bytes": peak_rss * 1024, "rss_increase_bytes": max(0, peak_rss - rss_before) * 1024,
            "peak_tensor_bytes": peak_tensors, "note": note, "error": None}


def failure_reason(returncode: int, stderr: str) -> str:
    """What a child's failure means for the table: out of memory is 'does not fit'."""
    text = stderr.lower()
    if returncode in (-9, 137) or "memoryerror" in text or "out of memory" in text or "cannot allocate" in text:
        return "does not fit in RAM (out of memory)"
    last = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"failed (exit {returncode}): {last[-1][:200] if last else 'no message'}"


def run_part(part: str, seconds: float, steps: int, threads: int, paths: ModelPaths, repeat: int = 1,
             in_process: bool = False, timeout: float | None = None) -> dict:
    """Measure one part at one length, in a fresh subprocess (default) so its peak RSS is its own."""
    if in_process:
        row = measure_part(part, seconds, steps, threads, paths, repeat)
        row["note"] = "; ".join(filter(None, [row["note"], "in-process: RSS not isolated"]))
        return row
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--seconds", str(seconds),
           "--steps", str(steps), "--threads", str(threads), "--repeat", str(repeat),
           "--stage1", paths.stage1, "--stage2", paths.stage2, "--vae", paths.vae]
    if paths.baseline:
        cmd += ["--baseline", paths.baseline]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    empty = {"part": part, "seconds": seconds, "wall_s": None, "note": ""}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**empty, "error": f"timed out after {timeout:g} s"}
    rows = [line[len(ROW_MARK):] for line in done.stdout.splitlines() if line.startswith(ROW_MARK)]
    if done.returncode != 0 or not rows:
        return {**empty, "error": failure_reason(done.returncode, done.stderr)}
    return json.loads(rows[-1])


# --------------------------------------------------------------------------- report


def _mib(value) -> str:
    return "-" if value is None else f"{value / MiB:,.1f}"


def measured_table(rows: list[dict]) -> str:
    lines = ["| length (s) | part | frames | latent frames | tokens | wall (s) | s per video-s | peak RSS (MiB) "
             "| RSS increase (MiB) | peak tensors (MiB) | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['seconds']:g} | {r['part']} | | | | - | - | - | - | - | {r['error']} |")
            continue
        lines.append(f"| {r['seconds']:g} | {r['part']} | {r['num_frames']} | {r['latent_frames']} "
                     f"| {r['tokens'] if r['tokens'] is not None else '-'} | {r['wall_s']:.2f} "
                     f"| {r['s_per_video_s']:.3f} | {_mib(r['peak_rss_bytes'])} | {_mib(r['rss_increase_bytes'])} "
                     f"| {_mib(r['peak_tensor_bytes'])} | {r['note']} |")
    return "\n".join(lines)


def _ratio(values: list[float]) -> float | None:
    return max(values) / min(values) if len(values) >= 2 and min(values) > 0 else None


def summarize(rows: list[dict]) -> dict[str, dict]:
    """Per part, over the lengths that ran: time per video-second and peak RSS, each with max/min."""
    out = {}
    for part in PARTS:
        ok = sorted((r for r in rows if r["part"] == part and not r.get("error")), key=lambda r: r["seconds"])
        failed = sorted(r["seconds"] for r in rows if r["part"] == part and r.get("error"))
        if not ok and not failed:
            continue
        per_s = [r["s_per_video_s"] for r in ok]
        rss = [r["peak_rss_bytes"] for r in ok]
        out[part] = {"seconds": [r["seconds"] for r in ok], "failed": failed, "s_per_video_s": per_s,
                     "time_ratio": _ratio(per_s), "peak_rss": rss, "rss_ratio": _ratio(rss),
                     "rss_increase": [r["rss_increase_bytes"] for r in ok],
                     "peak_tensors": [r["peak_tensor_bytes"] for r in ok]}
    return out


def summary_lines(summary: dict[str, dict]) -> list[str]:
    def verdict(ratio, target, judged):
        if ratio is None:
            return "n/a (needs two lengths)"
        return f"{ratio:.3f} (target <= {target:.2f}): {'PASS' if ratio <= target else 'MISS'}" if judged \
            else f"{ratio:.3f}"

    lines = []
    for part, s in summary.items():
        judged = part == "stage2"
        label = {"stage2": "stage 2 [targets]", "baseline": "baseline [contrast]"}.get(part, part)
        if s["seconds"]:
            times = ", ".join(f"{sec:g} s: {v:.3f}" for sec, v in zip(s["seconds"], s["s_per_video_s"]))
            lines.append(f"{label}: time per second of video ({times}) s; max/min "
                         f"{verdict(s['time_ratio'], TIME_TARGET, judged)}")
            lines.append(f"{label}: peak RSS {_mib(min(s['peak_rss']))}..{_mib(max(s['peak_rss']))} MiB; max/min "
                         f"{verdict(s['rss_ratio'], RSS_TARGET, judged)}; the part's own RSS increase "
                         f"{_mib(min(s['rss_increase']))}..{_mib(max(s['rss_increase']))} MiB, peak tensors "
                         f"{_mib(min(s['peak_tensors']))}..{_mib(max(s['peak_tensors']))} MiB")
        if s["failed"]:
            lines.append(f"{label}: did not run at {', '.join(f'{x:g}' for x in s['failed'])} s (see the table)")
    return lines


def _paths_from(args) -> ModelPaths:
    default = None if (args.stage1 and args.stage2 and args.vae) else ModelPaths.embedded()
    return ModelPaths(args.stage1 or default.stage1, args.stage2 or default.stage2, args.vae or default.vae,
                      args.baseline or (default.baseline if default else None))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=list(DEFAULT_SECONDS))
    parser.add_argument("--steps", type=int, default=4, help="sampling steps (wall time scales with them)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed runs per part (same process); the fastest is reported, against a busy machine")
    parser.add_argument("--timeout", type=float, default=None, help="seconds a part may take before it is stopped")
    parser.add_argument("--in-process", action="store_true",
                        help="run the parts in this process (quick; RSS is then not isolated per part)")
    parser.add_argument("--json", type=Path, help="write the rows (measured and analytic) to this file")
    parser.add_argument("--stage1", help="stage-1 model file (default: the embedded default's)")
    parser.add_argument("--stage2", help="stage-2 model file; its preset gives fps, size and guidance")
    parser.add_argument("--vae", help="VAE file")
    parser.add_argument("--baseline", help="baseline model file (default: semanticgen_core/weights/"
                                           "baseline.safetensors, else an untrained one of stage 2's architecture)")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)  # internal: one part, one length
    args = parser.parse_args(argv)
    paths = _paths_from(args)

    if args.part:
        row = measure_part(args.part, args.seconds[0], args.steps, args.threads, paths, args.repeat)
        print(ROW_MARK + json.dumps(row), flush=True)
        return 0

    rows = []
    for seconds in args.seconds:
        for part in args.parts:
            print(f"[long_video] {part} at {seconds:g} s ...", file=sys.stderr, flush=True)
            rows.append(run_part(part, seconds, args.steps, args.threads, paths, args.repeat, args.in_process,
                                 args.timeout))
    preset, _ = _stage2_file_info(paths.stage2)
    d = preset.defaults
    print(f"## Measured: {preset.name} models, {d['height']}x{d['width']} at {d['fps']:g} fps, {args.steps} "
          f"sampling steps, guidance {d['guidance']:g} (CFG doubles the batch when not 1), {args.threads} thread(s)\n")
    where = "in this process" if args.in_process else "in a fresh subprocess"
    print("Wall time of the part alone (models loaded, inputs built and text embedded before the clock starts), "
          f"fastest of {args.repeat}; it scales with --steps. Each part ran {where}"
          "; peak RSS is measured from just before the part; RSS increase = peak minus RSS before it; peak "
          "tensors from a separate one-step run (decode: the whole decode, streamed, frames dropped).\n")
    print(measured_table(rows))
    summary = summarize(rows)
    print()
    for line in summary_lines(summary):
        print(line)
    table, flops = flops_table(args.seconds)
    print(f"\n## Analytic: Wan2.1-1.3B scale, 480x832 at 16 fps, 50 steps with CFG (x2), text 512 tokens; stage 2 "
          f"windows of {WAN.defaults['window_frames']} latent frames\n")
    print("SemanticGen = stage 1 (Wan-1.3B-sized DiT, patch 1, full attention over the plan) + stage 2 (video + "
          "plan tokens, shifted windows); baseline = the same DiT as stage 2 over the video tokens, full attention. "
          "Attention = self-attention scores and values (QK^T, PV); total adds projections, cross-attention, "
          "feed-forward, embeddings and head. Excluded: the semantic encoder, the text encoder, the VAE, and "
          "elementwise work (norms, modulation, rotary, softmax).\n")
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"argv": list(argv) if argv is not None else sys.argv[1:], "measured": rows,
                                         "summary": summary, "analytic_wan": flops}, indent=1))
    return 0


if __name__ == "__main__":
    run_command(main)
