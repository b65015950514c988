"""Long-video quality: per-shot prompt adherence, window seams and drift, SemanticGen against the baseline.

    python bench/long_video_quality.py [--seconds 4 8 16 32 60] [--videos 3] [--steps 10] [--seed 0]
                                       [--json FILE] [--out docs/long_video_quality.md]

For each length ``S`` and each of ``--videos`` videos, a multi-shot prompt is built from held-out world
captions, one shot per ``--shot-seconds`` (4 s: 1, 2, 4, 8, 15 shots for 4/8/16/32/60 s), written as
``"0-4 s: ...; 4-8 s: ..."`` (``shots.format_shots``). Three videos of it are measured the same way:

* **ours**: stage 1 (full attention over the whole plan) -> stage 2 (shifted windows) -> VAE decode;
* **baseline**: the single-stage model (stage 2's DiT from text alone, full attention) -> VAE decode,
  when a baseline file exists (``semanticgen_core/weights/baseline.safetensors`` or ``--baseline``);
* **real**: the world's own rendering of the same shots, cut together (the detector's ceiling, and what
  "no seam" / "no drift" look like in real footage). Its plan (semantic encoder + compressor, sampled as
  stage 1 was trained on) is the reference for the plan statistics;
* **real through the VAE**: the real video encoded and decoded by the VAE: what the VAE alone does
  (its own seams at latent-frame borders, its blur), with no DiT and no windows.

Measured (all with OpenCV on the decoded frames; the detector is ``semanticgen_world/evaluation.py``):

1. **Per-shot adherence**: each shot's span judged against its own caption (``evaluation.judge``):
   colour, shape and direction accuracy per length, against the shortest length. Plan statistics: the
   per-step standard deviation of the generated plan's tokens, and its step-to-step change, relative
   to the plan encoded from the real video (collapse at long lengths shows as ratios falling).
2. **Seams** (``seam_ratio``): mean absolute difference of consecutive frames at pairs straddling
   stage-2 window borders, over the same for all other (interior) pairs, with pairs near shot cuts left
   out. Latent frame ``k >= 1`` starts video frame ``4k - 3``, so the border between latent frames
   ``k - 1 | k`` is the pair ``(4(k-1), 4(k-1) + 1)``; unshifted borders are at ``k % W == 0``, shifted
   ones at ``k % W == W/2`` (``W`` = window in latent frames). The baseline has no windows: its ratio
   at the same positions shows what "no seam" looks like.
3. **Drift** (FramePack's measure, ``drift``): |mean of a per-frame metric over the first 15% of the
   frames - mean over the last 15%|, for two metrics: prompt adherence (``adherence_per_frame``: the
   fraction of the current shot's prompt colours the detector finds in the frame) and sharpness
   (``sharpness``: variance of the Laplacian of the grey frame, 0..255 scale).

Writes the markdown (atomically) with the command line and seeds at the top; ``--json`` the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semanticgen_world import evaluation  # noqa: E402
from semanticgen_core.checkpoints import write_atomic  # noqa: E402
from semanticgen_world import world  # noqa: E402
from semanticgen_core.errors import run_command  # noqa: E402
from semanticgen_core.plan import Segment  # noqa: E402
from semanticgen_core.shots import format_shots, parse_shots, shot_starts  # noqa: E402

DEFAULT_SECONDS = (4.0, 8.0, 16.0, 32.0, 60.0)
SHOT_SECONDS = 4.0
DRIFT_FRACTION = 0.15
CUT_MARGIN = 4            # frames either side of a shot cut left out of the seam measure (one latent frame)
TRAIN_CLIP_SECONDS = 4.0  # stage 1's training clips: 33 frames at 8 fps (semanticgen_core/weights/MODEL_CARD.md)
SOURCES = ("ours", "baseline", "vae", "real")
SOURCE_LABELS = {"ours": "SemanticGen", "baseline": "baseline (single stage)", "vae": "real through the VAE",
                 "real": "real (world render)"}

# --------------------------------------------------------------------------- per-frame metrics


def _unit_frames(frames) -> np.ndarray:
    """float32 ``[T, H, W, 3]`` in 0..1 (uint8 divided by 255; torch tensors moved to numpy)."""
    if hasattr(frames, "detach"):
        frames = frames.detach().float().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {list(arr.shape)}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def frame_differences(frames) -> np.ndarray:
    """``[T - 1]``: mean absolute difference (0..1 scale) between frames ``a`` and ``a + 1``."""
    f = _unit_frames(frames)
    return np.abs(f[1:] - f[:-1]).reshape(len(f) - 1, -1).mean(1).astype(np.float64)


def window_border_pairs(num_frames: int, window_latent_frames: int, shifted: bool) -> list[int]:
    """Pairs ``(a, a + 1)`` (given by ``a``) that straddle a border of stage 2's time windows.

    Windows are laid out as ``attention.time_windows`` does: latent frame ``k`` is in window
    ``floor((k + offset) / W)``, offset ``W / 2`` on shifted layers. A border between latent frames
    ``k - 1`` and ``k`` is the pair ``(4(k - 1), 4(k - 1) + 1)``: latent frame 0 is video frame 0 and
    latent frame ``k >= 1`` holds video frames ``4k - 3 .. 4k`` (Wan's causal VAE)."""
    w = float(window_latent_frames)
    offset = w / 2 if shifted else 0.0
    latent = (num_frames - 1 + 3) // 4 + 1
    out = []
    for k in range(1, latent):
        a = 4 * (k - 1)
        if a + 1 <= num_frames - 1 and math.floor((k - 1 + offset) / w) != math.floor((k + offset) / w):
            out.append(a)
    return out


def latent_border_pairs(num_frames: int) -> list[int]:
    """Every pair straddling two latent frames (window borders or not)."""
    return [4 * (k - 1) for k in range(1, (num_frames + 2) // 4 + 1) if 4 * (k - 1) + 1 <= num_frames - 1]


def seam_ratio(frames, window_latent_frames: int = 4, cut_frames=(), cut_margin: int = CUT_MARGIN) -> dict:
    """How much more the video changes across stage-2 window borders than elsewhere.

    ``frames``: ``[T, H, W, 3]`` (uint8 or 0..1). ``cut_frames``: first frames of shots after a cut; every
    pair ``(a, a + 1)`` with ``|a + 1 - cut| <= cut_margin`` is left out (a cut is a real jump, and the
    model may place it up to a latent frame from the prompt's time). Returns the mean frame difference at
    ``unshifted`` and ``shifted`` window borders, at the ``latent`` borders that are no window border, and
    over the ``interior`` (every kept pair that is no window border), the ratios ``*_ratio`` = mean / interior
    mean (NaN when there is no such pair or the interior does not change), and the pair counts ``n_*``."""
    diffs = frame_differences(frames)
    n = len(diffs) + 1
    near_cut = {a for c in cut_frames for a in range(int(c) - 1 - cut_margin, int(c) + cut_margin) if 0 <= a < n - 1}
    unshifted = [a for a in window_border_pairs(n, window_latent_frames, False) if a not in near_cut]
    shifted = [a for a in window_border_pairs(n, window_latent_frames, True) if a not in near_cut]
    borders = {a for s in (False, True) for a in window_border_pairs(n, window_latent_frames, s)}
    latent = [a for a in latent_border_pairs(n) if a not in borders and a not in near_cut]
    interior = [a for a in range(n - 1) if a not in borders and a not in near_cut]
    mean = {name: float(diffs[idx].mean()) if idx else math.nan
            for name, idx in (("unshifted", unshifted), ("shifted", shifted), ("latent", latent),
                              ("interior", interior))}
    base = mean["interior"]
    out = dict(mean)
    for name in ("unshifted", "shifted", "latent"):
        out[f"{name}_ratio"] = mean[name] / base if base > 1e-12 and not math.isnan(base) else math.nan
    out.update({"n_unshifted": len(unshifted), "n_shifted": len(shifted), "n_latent": len(latent),
                "n_interior": len(interior), "window_latent_frames": window_latent_frames})
    return out


def _ends(values, fraction: float = DRIFT_FRACTION) -> tuple[float, float]:
    """(mean over the first ``fraction`` of the values, mean over the last), NaNs ignored."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0:
        raise ValueError("drift of an empty sequence")
    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction must be in (0, 0.5], got {fraction}")
    k = max(1, int(fraction * v.size + 0.5))

    def nanmean(x):
        x = x[~np.isnan(x)]
        return float(x.mean()) if x.size else math.nan

    return nanmean(v[:k]), nanmean(v[-k:])


def drift(values, fraction: float = DRIFT_FRACTION) -> float:
    """FramePack's drift: |mean of ``values`` over the first ``fraction`` - mean over the last ``fraction``|
    (``round(fraction * len)`` values each, at least one; NaNs ignored, NaN when a part has none)."""
    first, last = _ends(values, fraction)
    return abs(first - last)


def sharpness(frames) -> np.ndarray:
    """``[T]``: variance of the Laplacian (3x3) of each grey frame, on the 0..255 scale."""
    frames = evaluation.as_uint8_frames(frames)
    out = np.empty(len(frames), np.float64)
    for i, f in enumerate(frames):
        grey = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)
        out[i] = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return out


def frame_shots(prompt: str, num_frames: int, fps: float) -> np.ndarray:
    """``[T]``: index of the shot (``shots.parse_shots``) each frame is in; frame ``f`` is at ``f / fps``
    seconds, a gap between shots belongs to the shot before, frames before the first shot to the first."""
    segments = parse_shots(prompt, num_frames / fps)
    starts = np.array([s.start_s for s in segments])
    t = np.arange(num_frames) / fps
    return np.clip(np.searchsorted(starts, t + 1e-9, side="right") - 1, 0, len(segments) - 1)


def adherence_per_frame(frames, prompt: str, fps: float, detections=None) -> np.ndarray:
    """``[T]``: per frame, the fraction of the current shot's prompt colours (``world.parse_caption``) of
    which the detector (``evaluation.detect``) finds an object in that frame: 0 or 1 for a one-object
    shot. NaN in frames whose shot names no colour. ``detections``: ``evaluation.detect(frames)`` if
    already computed."""
    frames = evaluation.as_uint8_frames(frames)
    detections = evaluation.detect(frames) if detections is None else detections
    segments = parse_shots(prompt, len(frames) / fps)
    colours = [{o["color"] for o in world.parse_caption(s.prompt) if o["color"]} for s in segments]
    shot_of = frame_shots(prompt, len(frames), fps)
    out = np.full(len(frames), np.nan)
    for f, dets in enumerate(detections):
        wanted = colours[shot_of[f]]
        if wanted:
            out[f] = len(wanted & {d.color for d in dets}) / len(wanted)
    return out


# --------------------------------------------------------------------------- prompts and shots


def shot_segments(captions: list[str], seconds: float) -> list[Segment]:
    """``len(captions)`` equal shots over ``seconds``, one caption each."""
    n = len(captions)
    return [Segment(seconds * i / n, seconds * (i + 1) / n, c) for i, c in enumerate(captions)]


def num_shots(seconds: float, shot_seconds: float) -> int:
    return max(1, round(seconds / shot_seconds))


def shot_spans(prompt: str, num_frames: int, fps: float) -> list[tuple[int, int, str]]:
    """``[(first frame, end frame, text)]`` of each shot, covering all frames (``frame_shots``)."""
    shot_of = frame_shots(prompt, num_frames, fps)
    segments = parse_shots(prompt, num_frames / fps)
    spans = []
    for k, seg in enumerate(segments):
        idx = np.nonzero(shot_of == k)[0]
        if idx.size:
            spans.append((int(idx[0]), int(idx[-1]) + 1, seg.prompt))
    return spans


def _reindexed(detections, start: int):
    return [[dataclasses.replace(d, frame=d.frame - start) for d in frame] for frame in detections]


def step_shots(segments: list[Segment], duration_s: float, steps: int) -> np.ndarray:
    """Shot of each plan step, routed as the models route it (``shots.shot_starts``, cell ``j`` at ``j``)."""
    starts = shot_starts(segments, duration_s, steps)
    if starts is None:
        return np.zeros(steps, int)
    return np.searchsorted(np.array(starts), np.arange(steps), side="right") - 1


def plan_stats(tokens, shots_of_steps=None) -> dict:
    """Of plan tokens ``[T_s, h, w, c]``: ``step_std`` (std of each step's tokens, mean over steps),
    ``step_std_min`` (its minimum over steps) and ``change`` (mean |step t+1 - step t|, pairs across a
    shot change left out)."""
    x = np.asarray(tokens.detach().cpu() if hasattr(tokens, "detach") else tokens, np.float64)
    x = x.reshape(x.shape[0], -1)
    std = x.std(1)
    keep = np.ones(len(x) - 1, bool)
    if shots_of_steps is not None and len(x) > 1:
        keep = np.asarray(shots_of_steps)[1:] == np.asarray(shots_of_steps)[:-1]
    change = np.abs(x[1:] - x[:-1]).mean(1)[keep] if len(x) > 1 else np.zeros(0)
    return {"step_std": float(std.mean()), "step_std_min": float(std.min()),
            "change": float(change.mean()) if change.size else math.nan}


# --------------------------------------------------------------------------- one video


def measure(frames, prompt: str, fps: float, window: int) -> dict:
    """Everything the tables need of one decoded video."""
    frames = evaluation.as_uint8_frames(frames)
    detections = evaluation.detect(frames)
    spans = shot_spans(prompt, len(frames), fps)
    shots = []
    for a, b, text in spans:
        j = evaluation.judge(frames[a:b], text, detections=_reindexed(detections[a:b], a))
        shots.append({"frames": [a, b], "prompt": text, "objects": j["objects"]})
    adherence = adherence_per_frame(frames, prompt, fps, detections)
    sharp = sharpness(frames)
    out = {"shots": shots, "seams": seam_ratio(frames, window, [a for a, _, _ in spans[1:]])}
    for name, values in (("adherence", adherence), ("sharpness", sharp)):
        first, last = _ends(values)
        out[name] = {"mean": float(np.nanmean(values)) if not np.isnan(values).all() else math.nan,
                     "first": first, "last": last, "drift": drift(values)}
    return out


def real_video(specs: list, spans: list[tuple[int, int, str]], height: int, width: int) -> np.ndarray:
    """The world's rendering of the shots, each over its span, cut together (uint8)."""
    parts = [world.render_shot(dataclasses.replace(spec, start_frame=0, num_frames=b - a), height, width)
             for spec, (a, b, _) in zip(specs, spans)]
    return np.concatenate(parts)


def real_plan_tokens(pipe, frames, fps: float, seed: int):
    """Plan tokens ``[T_s, h, w, c]`` of a real video as stage 1 was trained on them: semantic encoder ->
    compressor -> a sample of its Gaussian (seeded), not only its mean."""
    import torch

    with torch.no_grad():
        features = pipe.semantic_encoder.encode(frames.to(pipe.device), fps)
        compressor = pipe.compressor
        mean, logvar = compressor(features.to(next(compressor.parameters()).dtype))
        return compressor.sample(mean, logvar, torch.Generator("cpu").manual_seed(int(seed))).float().cpu()


# --------------------------------------------------------------------------- the experiment


@dataclass
class Setup:
    seconds: tuple[float, ...] = DEFAULT_SECONDS
    videos: int = 3
    steps: int = 10
    seed: int = 0
    guidance: float = 4.0
    shot_seconds: float = SHOT_SECONDS
    fps: float = 8.0
    height: int = 64
    width: int = 64
    caption_start: int = world.HELDOUT_SEED_START

    @property
    def max_shots(self) -> int:
        return max(num_shots(s, self.shot_seconds) for s in self.seconds)

    def caption_seeds(self, video: int, shots: int) -> list[int]:
        """Held-out world seeds of the captions of one video: video ``v`` takes ``max_shots`` consecutive
        seeds, its ``k``-shot prompt the first ``k`` of them (so each video's shorter prompts are prefixes
        of its longer ones)."""
        first = self.caption_start + video * self.max_shots
        return list(range(first, first + shots))


@dataclass
class Result:
    setup: Setup
    window: int
    stage2_windowed: bool
    has_baseline: bool
    baseline_note: str
    rows: list = field(default_factory=list)   # one per (length, video)
    seconds_total: float = 0.0


def run(pipe, setup: Setup, window: int, baseline_note: str = "", log=print) -> Result:
    from semanticgen_core.sampling import SamplingOptions
    import torch

    has_baseline = pipe.baseline is not None
    windowed = pipe.stage2 is not None and pipe.stage2.config.window_frames is not None
    result = Result(setup, window, windowed, has_baseline, baseline_note)
    clip_frames = int(setup.shot_seconds * setup.fps) + 1
    spec_cache: dict[int, object] = {}
    start = time.time()

    def spec(seed: int):
        if seed not in spec_cache:
            spec_cache[seed] = world.sample_clip_shots(seed, clip_frames, setup.fps)[0]
        return spec_cache[seed]

    for seconds in setup.seconds:
        n = int(seconds * setup.fps) + 1
        k = num_shots(seconds, setup.shot_seconds)
        for v in range(setup.videos):
            seeds = setup.caption_seeds(v, k)
            specs = [spec(s) for s in seeds]
            prompt = format_shots(shot_segments([s.caption for s in specs], seconds))
            opts = SamplingOptions(steps=setup.steps, guidance=setup.guidance, seed=setup.seed + v)
            row = {"seconds": seconds, "frames": n, "video": v, "shots": k, "caption_seeds": seeds,
                   "sampling_seed": opts.seed, "prompt": prompt, "time": {}}
            spans = shot_spans(prompt, n, setup.fps)
            real = real_video(specs, spans, setup.height, setup.width)
            row["real"] = measure(real, prompt, setup.fps, window)

            t0 = time.time()
            plan = pipe.generate_plan(prompt, n, setup.fps, setup.height, setup.width, opts)
            t1 = time.time()
            latents = pipe.render_latents(plan, opts)
            t2 = time.time()
            frames = pipe.decode(latents, n)
            t3 = time.time()
            row["time"].update(stage1=t1 - t0, stage2=t2 - t1, decode=t3 - t2)
            row["ours"] = measure(frames, prompt, setup.fps, window)
            shots_of = step_shots(plan.segments, plan.duration_s, plan.tokens.shape[0])
            row["plan"] = {"steps": int(plan.tokens.shape[0]), "ours": plan_stats(plan.tokens, shots_of)}
            real_t = torch.from_numpy(real.astype(np.float32) / 255.0)
            if pipe.semantic_encoder is not None and pipe.compressor is not None:
                tokens = real_plan_tokens(pipe, real_t, setup.fps, seeds[0])
                row["plan"]["real"] = plan_stats(tokens, shots_of[:tokens.shape[0]])
            if pipe.vae is not None:
                latents, count = pipe.vae.encode(real_t, pad=True)
                row["vae"] = measure(pipe.vae.decode(latents, num_frames=count), prompt, setup.fps, window)
            if has_baseline:
                t4 = time.time()
                base = pipe.decode(pipe.render_baseline(prompt, n, setup.fps, setup.height, setup.width, opts), n)
                row["time"]["baseline"] = time.time() - t4
                row["baseline"] = measure(base, prompt, setup.fps, window)
            result.rows.append(row)
            log(f"{seconds:g} s video {v}: {k} shot(s), stage 1 {t1 - t0:.1f} s, stage 2 {t2 - t1:.1f} s, "
                f"decode {t3 - t2:.1f} s [{time.time() - start:.0f} s total]")
    result.seconds_total = time.time() - start
    return result


# --------------------------------------------------------------------------- summaries

ATTRS = ("color", "shape", "motion")
ATTR_LABELS = {"color": "colour", "shape": "shape", "motion": "direction"}


def _rate(values: list[bool]) -> dict:
    return {"correct": int(sum(values)), "total": len(values),
            "accuracy": sum(values) / len(values) if values else math.nan}


def accuracy(rows: list[dict], source: str) -> dict:
    """Per attribute, over every prompt object of every shot: correct / total; and all three right per shot."""
    objects = [o for r in rows if source in r for s in r[source]["shots"] for o in s["objects"]]
    out = {a: _rate([o[a] for o in objects if o[a] is not None]) for a in ATTRS}
    shots = [s for r in rows if source in r for s in r[source]["shots"]]
    out["all"] = _rate([all(o[a] is not False for o in s["objects"] for a in ATTRS) for s in shots])
    out["shots"] = len(shots)
    return out


def _mean(values) -> float:
    v = np.array([x for x in values if x is not None and not math.isnan(x)], np.float64)
    return float(v.mean()) if v.size else math.nan


def _std(values) -> float:
    v = np.array([x for x in values if x is not None and not math.isnan(x)], np.float64)
    return float(v.std()) if v.size > 1 else math.nan


def summarize(result: Result) -> dict:
    """Per length and source: accuracies, plan statistics, seam ratios and drifts (means over videos)."""
    by_len: dict[float, list[dict]] = {}
    for r in result.rows:
        by_len.setdefault(r["seconds"], []).append(r)
    sources = [s for s in SOURCES if any(s in r for r in result.rows)]
    out = {}
    for seconds, rows in by_len.items():
        entry = {"frames": rows[0]["frames"], "shots": rows[0]["shots"], "videos": len(rows),
                 "plan_steps": rows[0]["plan"]["steps"], "accuracy": {}, "seams": {}, "drift": {}, "plan": {},
                 "time": {k: _mean([r["time"].get(k) for r in rows]) for k in rows[0]["time"]}}
        for src in sources:
            entry["accuracy"][src] = accuracy(rows, src)
            entry["seams"][src] = {key: _mean([r[src]["seams"][key] for r in rows])
                                   for key in ("unshifted_ratio", "shifted_ratio", "latent_ratio")}
            entry["seams"][src].update({key: rows[0][src]["seams"][key]
                                        for key in ("n_unshifted", "n_shifted", "n_latent", "n_interior")})
            entry["drift"][src] = {m: {k: _mean([r[src][m][k] for r in rows]) for k in ("first", "last", "drift")}
                                   | {"drift_std": _std([r[src][m]["drift"] for r in rows])}
                                   for m in ("adherence", "sharpness")}
        if all("real" in r["plan"] for r in rows):
            for key in ("step_std", "step_std_min", "change"):
                entry["plan"][key] = _mean([r["plan"]["ours"][key] / r["plan"]["real"][key]
                                            if r["plan"]["real"][key] > 0 else math.nan for r in rows])
        for key in ("step_std", "step_std_min", "change"):
            entry["plan"][f"ours_{key}"] = _mean([r["plan"]["ours"][key] for r in rows])
        out[seconds] = entry
    return out


# --------------------------------------------------------------------------- markdown


def _f(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _acc(rate: dict) -> str:
    if not rate["total"]:
        return "–"
    return f"{rate['accuracy']:.2f} ({rate['correct']}/{rate['total']})"


def _mean_acc(acc: dict) -> float:
    return _mean([acc[a]["accuracy"] for a in ATTRS])


def training_lengths(info: dict | None) -> tuple[list[int], str]:
    """(shot counts stage 1's plans were strung from in training, sentence) from the stage-1 file's info."""
    objective = (info or {}).get("objective", "")
    m = re.search(r"plans of ([\d, ]+) shots", objective)
    counts = [int(x) for x in m.group(1).replace(" ", "").split(",") if x] if m else [1]
    if counts == [1]:
        return counts, (f"trained on single {TRAIN_CLIP_SECONDS:g} s clips only"
                        if info else f"assumed trained on single {TRAIN_CLIP_SECONDS:g} s clips (no training "
                                     "record in the file)")
    return counts, (f"trained on {TRAIN_CLIP_SECONDS:g} s clips strung into plans of "
                    f"{', '.join(map(str, counts))} shots (up to {max(counts) * TRAIN_CLIP_SECONDS:g} s)")


def long_plan_paragraph(summary: dict, train_steps: int, info: dict | None) -> str:
    counts, trained = training_lengths(info)
    longest_trained = max(counts) * train_steps
    steps = max(e["plan_steps"] for e in summary.values())
    return (
        f"**How stage 1 handles plans longer than it was trained on.** Stage 1 was {trained}: a "
        f"{TRAIN_CLIP_SECONDS:g} s clip is a plan of {train_steps} steps, so the longest trained plan has "
        f"{longest_trained} steps and the largest time offset between two tokens it saw is "
        f"{longest_trained - 1} steps. At generation it runs full attention over the whole plan, nothing "
        f"cropped, tiled or rescaled: positions are Wan's 3-axis rotary embedding evaluated at each token's "
        f"time (`attention.rope_at`, no table to run past), and rotary attention depends only on the offset "
        f"between query and key. A plan of {steps} steps therefore shows offsets up to {steps - 1} steps "
        f"({(steps - 1) / max(longest_trained - 1, 1):.1f}x the trained maximum) that the model extrapolates to "
        f"(no position interpolation or NTK scaling), and each softmax spreads over {steps / longest_trained:.1f}x "
        f"as many keys. Each token's cross-attention reads only its own shot's prompt "
        f"(`wan_blocks.shot_routing`), and every shot here is {TRAIN_CLIP_SECONDS:g} s, a trained length: what is "
        f"new at long lengths is self-attention across distant shots. Table 1 measures whether that hurts: "
        f"per-shot accuracy against the shortest length, and plan statistics against plans encoded from the real "
        f"videos (a plan collapsing towards its mean at long lengths would show as falling std ratios)."
    )


def table_accuracy(summary: dict, sources: list[str]) -> str:
    lengths = sorted(summary)
    ref = {src: _mean_acc(summary[lengths[0]]["accuracy"][src]) for src in sources}
    lines = [f"| length | shots/video | video | shots judged | colour | shape | direction | all three right | "
             f"mean of the three, Δ vs {lengths[0]:g} s |", "|---:|---:|---|---:|---|---|---|---|---:|"]
    for s in lengths:
        e = summary[s]
        for src in sources:
            a = e["accuracy"][src]
            delta = _mean_acc(a) - ref[src]
            lines.append(f"| {s:g} s | {e['shots']} | {SOURCE_LABELS[src]} | {a['shots']} | {_acc(a['color'])} | "
                         f"{_acc(a['shape'])} | {_acc(a['motion'])} | {_acc(a['all'])} | "
                         f"{_f(_mean_acc(a))}, {'+' if delta >= 0 else ''}{_f(delta)} |")
    return "\n".join(lines)


def table_plan(summary: dict) -> str:
    lengths = sorted(summary)
    has_real = all("step_std" in summary[s]["plan"] for s in lengths)
    ref = summary[lengths[0]]["plan"]
    if has_real:
        lines = ["| length | plan steps | per-step token std, generated / real | lowest step's std, generated / "
                 "real | step-to-step change, generated / real | per-step std ratio ÷ its value at "
                 f"{lengths[0]:g} s |", "|---:|---:|---:|---:|---:|---:|"]
        for s in lengths:
            p = summary[s]["plan"]
            rel = p["step_std"] / ref["step_std"] if ref["step_std"] else math.nan
            lines.append(f"| {s:g} s | {summary[s]['plan_steps']} | {_f(p['step_std'])} | {_f(p['step_std_min'])} | "
                         f"{_f(p['change'])} | {_f(rel)} |")
        return "\n".join(lines)
    lines = ["| length | plan steps | per-step token std (generated) | lowest step's std | step-to-step change | "
             f"per-step std ÷ its value at {lengths[0]:g} s |", "|---:|---:|---:|---:|---:|---:|"]
    for s in lengths:
        p = summary[s]["plan"]
        lines.append(f"| {s:g} s | {summary[s]['plan_steps']} | {_f(p['ours_step_std'], 3)} | "
                     f"{_f(p['ours_step_std_min'], 3)} | {_f(p['ours_change'], 3)} | "
                     f"{_f(p['ours_step_std'] / ref['ours_step_std'])} |")
    return "\n".join(lines)


def table_seams(summary: dict, sources: list[str]) -> str:
    lines = ["| length | video | unshifted borders ÷ interior | shifted borders ÷ interior | other latent-frame "
             "borders ÷ interior | pairs: unshifted / shifted / other latent / interior |",
             "|---:|---|---:|---:|---:|---|"]
    for s in sorted(summary):
        for src in sources:
            m = summary[s]["seams"][src]
            lines.append(f"| {s:g} s | {SOURCE_LABELS[src]} | {_f(m['unshifted_ratio'])} | {_f(m['shifted_ratio'])} | "
                         f"{_f(m['latent_ratio'])} | {m['n_unshifted']} / {m['n_shifted']} / {m['n_latent']} / "
                         f"{m['n_interior']} |")
    return "\n".join(lines)


def table_drift_videos(result: Result, seconds: float, sources: list[str]) -> str:
    lines = ["| video | sampling seed | adherence: first 15% | last 15% | **drift** | sharpness: first 15% | "
             "last 15% | **drift** |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = [r for r in result.rows if r["seconds"] == seconds]
    for src in sources:
        for r in rows:
            a, s = r[src]["adherence"], r[src]["sharpness"]
            seed = r["sampling_seed"] if src in ("ours", "baseline") else "–"
            lines.append(f"| {SOURCE_LABELS[src]} #{r['video']} | {seed} | "
                         f"{_f(a['first'])} | {_f(a['last'])} | {_f(a['drift'])} | {_f(s['first'], 1)} | "
                         f"{_f(s['last'], 1)} | {_f(s['drift'], 1)} |")
        a = [r[src]["adherence"]["drift"] for r in rows]
        s = [r[src]["sharpness"]["drift"] for r in rows]
        lines.append(f"| **{SOURCE_LABELS[src]}, mean of {len(rows)}** | | | | **{_f(_mean(a))}** ± {_f(_std(a))} "
                     f"| | | **{_f(_mean(s), 1)}** ± {_f(_std(s), 1)} |")
    return "\n".join(lines)


def table_drift_lengths(summary: dict, sources: list[str]) -> str:
    lines = ["| length | " + " | ".join(f"adherence drift, {SOURCE_LABELS[s]}" for s in sources) + " | "
             + " | ".join(f"sharpness drift, {SOURCE_LABELS[s]}" for s in sources) + " |",
             "|---:|" + "---:|" * (2 * len(sources))]
    for s in sorted(summary):
        d = summary[s]["drift"]
        lines.append(f"| {s:g} s | " + " | ".join(_f(d[src]["adherence"]["drift"]) for src in sources) + " | "
                     + " | ".join(_f(d[src]["sharpness"]["drift"], 1) for src in sources) + " |")
    return "\n".join(lines)


def table_time(summary: dict, has_baseline: bool) -> str:
    cols = ["stage1", "stage2", "decode"] + (["baseline"] if has_baseline else [])
    lines = ["| length | frames | " + " | ".join(f"{c} (s)" for c in cols) + " |", "|---:|---:|" + "---:|" * len(cols)]
    for s in sorted(summary):
        e = summary[s]
        lines.append(f"| {s:g} s | {e['frames']} | " + " | ".join(_f(e["time"].get(c), 1) for c in cols) + " |")
    return "\n".join(lines)


def markdown(result: Result, summary: dict, command: str, train_steps: int, info: dict | None,
             weights: dict[str, str] | None = None) -> str:
    s = result.setup
    sources = [src for src in SOURCES if any(src in r for r in result.rows)]
    longest = max(summary)
    seeds = sorted({x for r in result.rows for x in r["caption_seeds"]})
    window_note = (f"stage 2 attends in windows of {result.window} latent frames ({4 * result.window} video frames), "
                   f"odd layers shifted by {result.window / 2:g}" if result.stage2_windowed else
                   f"this stage 2 runs full attention (no windows); borders are measured at the positions windows "
                   f"of {result.window} latent frames would have")
    parts = [
        "# Long-video quality: per-shot adherence, window seams, drift",
        "",
        "_Generated by `bench/long_video_quality.py` from this run's numbers; rerun it after retraining._",
        "",
        f"Command: `{command}`",
        "",
        f"Seeds: sampling seed of video *v* = {s.seed} + *v* ({', '.join(str(s.seed + v) for v in range(s.videos))}), "
        f"the same at every length; captions from held-out world seeds {seeds[0]}..{seeds[-1]} (video *v*'s "
        f"*k*-shot prompt uses seeds {s.caption_start} + {s.max_shots}*v .. + k - 1). {s.steps} sampling steps, "
        f"guidance {s.guidance:g}, {s.height}x{s.width} at {s.fps:g} fps, one shot per {s.shot_seconds:g} s, "
        f"{s.videos} video(s) per length; {result.seconds_total:.0f} s in all.",
        "",
        f"Sources: **{SOURCE_LABELS['ours']}** (stage 1 -> stage 2 -> VAE; {window_note}); "
        + (f"**{SOURCE_LABELS['baseline']}** (stage 2's DiT from text alone, full attention, same seed, same VAE); "
           if result.has_baseline else "")
        + f"**{SOURCE_LABELS['real']}** (the world's own rendering of the prompt's shots, cut together: the "
          f"detector's ceiling and a no-model control); **{SOURCE_LABELS['vae']}** (the real video encoded and "
          f"decoded by the VAE: what the VAE alone does, with no DiT and no windows).",
    ]
    if not result.has_baseline:
        parts += ["", f"**No baseline columns:** {result.baseline_note}"]
    if weights:
        parts += ["", "Weights (sha256, first 12 hex): " + ", ".join(f"`{k}` {v}" for k, v in weights.items()) + "."]
    parts += [
        "",
        "## 1. Per-shot prompts over long videos",
        "",
        long_plan_paragraph(summary, train_steps, info),
        "",
        "Each shot's span of frames is judged against its own caption by the independent detector "
        "(`evaluation.judge`); accuracy over every object the captions name, with counts. The shortest "
        "length is the single-shot reference.",
        "",
        table_accuracy(summary, sources),
        "",
        "Plan statistics (stage 1's plan against the plan of the real video of the same shots, made as stage 1's "
        "training plans were: semantic encoder, compressor, a sample of its Gaussian; a ratio near 1 means the "
        "generated plan varies as much as real ones; step-to-step change leaves out pairs across a shot change):",
        "",
        table_plan(summary),
        "",
        "## 2. Seams at stage-2 window borders",
        "",
        f"Mean absolute difference of consecutive frames (0..1) at pairs straddling window borders, divided by "
        f"the same over all other pairs (interior), per video, mean over videos. The border between latent frames "
        f"k-1 | k is the pair (4(k-1), 4(k-1)+1); unshifted borders at k % {result.window} == 0, shifted at "
        f"k % {result.window} == {result.window / 2:g}. Pairs within {CUT_MARGIN} frames of a shot cut are left "
        f"out. \"Other latent-frame borders\" (latent borders that are no window border) separate a seam of the "
        f"VAE's temporal chunks from one of the windows. 1.0 = no seam.",
        "",
        table_seams(summary, sources),
        "",
        "## 3. Drift",
        "",
        f"FramePack's drift: |mean of a per-frame metric over the first 15% of the frames - mean over the last "
        f"15%|. Metrics: **prompt adherence** = fraction of the current shot's prompt colours of which the "
        f"detector finds an object in the frame (0..1); **sharpness** = variance of the Laplacian of the grey "
        f"frame (0..255 scale). Per video at {longest:g} s, then the mean (± std) over videos:",
        "",
        table_drift_videos(result, longest, sources),
        "",
        "Sharpness depends on what a shot shows (a noise backdrop is far sharper than a plain one), so the real "
        "video's sharpness drift is the content's own; the model comparison is on the same prompts and seeds. "
        "Adherence of the real video is below 1 where an object is out of frame (entering, leaving).",
        "",
        "Mean drift by length:",
        "",
        table_drift_lengths(summary, sources),
        "",
        "## Time",
        "",
        "Mean seconds per video (this machine, the thread count of the run):",
        "",
        table_time(summary, result.has_baseline),
        "",
    ]
    return "\n".join(parts)


def _weights_digest(paths: dict[str, Path]) -> dict[str, str]:
    out = {}
    for name, path in paths.items():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[Path(path).name] = h.hexdigest()[:12]
    return out


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# --------------------------------------------------------------------------- command line


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, nargs="+", default=list(DEFAULT_SECONDS), help="video lengths")
    p.add_argument("--videos", type=int, default=3, help="videos (prompts x seeds) per length")
    p.add_argument("--steps", type=int, default=10, help="sampling steps of every stage")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the first video (video v: seed + v)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the model's)")
    p.add_argument("--shot-seconds", type=float, default=SHOT_SECONDS, help="length of each shot of the prompts")
    p.add_argument("--baseline", default=None,
                   help="baseline model file (default semanticgen_core/weights/baseline.safetensors; 'none' skips)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", type=Path, default=None, help="write the figures and per-video rows here")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "long_video_quality.md", help="markdown file to write")
    args = p.parse_args(argv)
    if args.videos < 1 or args.steps < 1 or any(s <= 0 for s in args.seconds) or args.shot_seconds <= 0:
        p.error("--videos, --steps, --seconds and --shot-seconds must be positive")
    return args


def load_pipeline(baseline_arg: str | None):
    """The embedded default (with its semantic encoder) and the baseline if there is one; a note why not."""
    from semanticgen_core.embedded import WEIGHTS_DIR, weights_path
    from semanticgen_core.model_files import read_metadata
    from semanticgen_core.pipeline import SemanticGenPipeline

    paths = {k: weights_path(k) for k in ("stage1", "stage2", "vae", "semantic_encoder")}
    note = ""
    base = None
    if baseline_arg and baseline_arg.lower() == "none":
        note = "skipped with --baseline none."
    else:
        base = Path(baseline_arg) if baseline_arg else Path(WEIGHTS_DIR) / "baseline.safetensors"
        if not base.is_file():
            note = (f"no baseline model file at {base} (train one, or pass --baseline FILE); the seam and drift "
                    f"controls below are the real videos only.")
            base = None
    pipe = SemanticGenPipeline.from_files(paths["stage1"], paths["stage2"], paths["vae"], paths["semantic_encoder"],
                                          baseline=str(base) if base else None)
    if base:
        paths["baseline"] = base
    info = json.loads(read_metadata(paths["stage1"]).get("info", "{}"))
    return pipe, note, info, paths


def main(argv=None, pipe=None, log=print) -> dict:
    """Run the bench; ``pipe``: a ready pipeline (tests), else the embedded default + baseline file."""
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info, paths, note = None, None, ""
    if pipe is None:
        pipe, note, info, paths = load_pipeline(args.baseline)
    elif pipe.baseline is None:
        note = "this pipeline has no baseline model."
    d = pipe.preset.defaults
    setup = Setup(seconds=tuple(args.seconds), videos=args.videos, steps=args.steps, seed=args.seed,
                  guidance=d.get("guidance", 4.0) if args.guidance is None else args.guidance,
                  shot_seconds=args.shot_seconds, fps=float(d.get("fps", 8.0)), height=int(d.get("height", 64)),
                  width=int(d.get("width", 64)))
    window = (pipe.stage2.config.window_frames if pipe.stage2 is not None else None) or d.get("window_frames") or 4
    result = run(pipe, setup, int(window), note, log)
    summary = summarize(result)
    train_frames = int(TRAIN_CLIP_SECONDS * setup.fps) + 1
    train_steps = pipe.preset.plan_grid(train_frames, setup.fps, setup.height, setup.width)[0]
    command = "python bench/long_video_quality.py " + shlex.join(argv) if argv else "python bench/long_video_quality.py"
    text = markdown(result, summary, command.strip(), train_steps, info,
                    _weights_digest(paths) if paths else None)
    write_atomic(Path(args.out), text.encode())
    print(text)
    out = {"command": command.strip(), "setup": dataclasses.asdict(setup), "window": result.window,
           "has_baseline": result.has_baseline, "baseline_note": note, "seconds_total": result.seconds_total,
           "summary": summary, "rows": result.rows}
    if args.json:
        write_atomic(Path(args.json), json.dumps(_json_safe(out), indent=1).encode())
    return out


if __name__ == "__main__":
    run_command(main)
