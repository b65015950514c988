"""Plan transfer (the paper's Fig. 4): a plan encoded from a video carries its layout and motion.

Each held-out world clip (the *reference*) is encoded to a plan (semantic encoder + compressor) and
rendered by stage 2 + VAE under several conditions:

    (a) same plan, its own caption, other sampling seeds           -> should follow the reference
    (b) same plan, another prompt: the caption with its colours     -> should still follow the layout
        rotated, and the caption of an unrelated held-out clip
    (c) unrelated: the plan of an unrelated held-out clip rendered  -> baseline: layout by chance
        with the reference's caption, and a text-only video
        (stage 1 plan from the reference's caption)

Layout and motion agreement with the reference is measured with the independent OpenCV detector of
``semanticgen_world/evaluation.py``: in each frame, the union mask of the detected objects (every
non-background blob) of the reference and of the render; the per-frame IoU is averaged over the frames.
Also the distance between the centroids of the largest object in each frame (fraction of the frame).
Ceilings: the reference's own VAE reconstruction (what the VAE allows), and the detector against the
world's ground-truth labels. A no-model floor: an unrelated world clip against the reference.

    python bench/plan_transfer.py [--refs 8] [--seeds 2] [--steps N] [--out docs]

Writes ``<out>/img/plan_transfer.png`` and ``<out>/plan_transfer.md`` (generated from the numbers).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
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

# --------------------------------------------------------------------------- masks and metrics


def object_masks(frames) -> np.ndarray:
    """Per frame, the union of the detector's object blobs: bool ``[T, H, W]``.

    Exactly the blobs ``evaluation.detect`` reports (its background class and ``_frame_objects``), as
    masks instead of summary numbers. ``frames``: uint8 ``[T, H, W, 3]`` or floats in 0..1."""
    frames = evaluation.as_uint8_frames(frames)
    classes = world.classify_pixels(frames)
    out = np.zeros(frames.shape[:3], bool)
    for f in range(frames.shape[0]):
        for _, mask in evaluation._frame_objects(classes[f]):
            out[f] |= mask
    return out


def largest_object_centroids(frames) -> np.ndarray:
    """Per frame, the centroid ``(x, y)`` (fractions of width and height) of the largest detected blob,
    whatever its colour; NaN where the frame shows no object. ``[T, 2]``."""
    frames = evaluation.as_uint8_frames(frames)
    _, height, width, _ = frames.shape
    classes = world.classify_pixels(frames)
    out = np.full((frames.shape[0], 2), np.nan)
    for f in range(frames.shape[0]):
        blobs = [mask for _, mask in evaluation._frame_objects(classes[f])]
        if blobs:
            ys, xs = np.nonzero(max(blobs, key=lambda m: int(m.sum())))
            out[f] = ((xs.mean() + 0.5) / width, (ys.mean() + 0.5) / height)
    return out


def per_frame_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of two mask videos ``[T, H, W]`` frame by frame; 1 where both frames are empty (they agree)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def centroid_distance(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean distance over the frames where both tracks show an object, fraction of frames where both do).
    Distance in fractions of the frame; NaN when no frame has both."""
    both = ~(np.isnan(a).any(1) | np.isnan(b).any(1))
    if not both.any():
        return math.nan, 0.0
    return float(np.linalg.norm(a[both] - b[both], axis=1).mean()), float(both.mean())


@dataclass
class Reference:
    """What the metrics need of a reference video, computed once."""

    frames: np.ndarray           # uint8 [T, H, W, 3]
    masks: np.ndarray            # bool [T, H, W]
    centroids: np.ndarray        # [T, 2]

    @classmethod
    def of(cls, frames) -> "Reference":
        frames = evaluation.as_uint8_frames(frames)
        return cls(frames, object_masks(frames), largest_object_centroids(frames))


def compare(reference: Reference, frames) -> dict:
    """Layout and motion agreement of ``frames`` with the reference: ``iou`` (per-frame IoU of the object
    masks, mean over frames), ``dist`` and ``both`` (``centroid_distance`` of the largest objects)."""
    frames = evaluation.as_uint8_frames(frames)
    if frames.shape != reference.frames.shape:
        raise ValueError(f"video {frames.shape} differs in shape from the reference {reference.frames.shape}")
    iou = float(per_frame_iou(reference.masks, object_masks(frames)).mean())
    dist, both = centroid_distance(reference.centroids, largest_object_centroids(frames))
    return {"iou": iou, "dist": dist, "both": both}


# --------------------------------------------------------------------------- prompts

_CHROMATIC = ("red", "orange", "yellow", "green", "cyan", "blue", "purple")  # world palette, hue order


def recolor_caption(caption: str, shift: int = 3) -> str:
    """The caption with every chromatic colour word moved ``shift`` places round the hue circle (red ->
    green at 3); white and grey stay. A permutation, so objects never take their backdrop's colour."""
    def swap(m: re.Match) -> str:
        color = _CHROMATIC[(_CHROMATIC.index(m.group(2)) + shift) % len(_CHROMATIC)]
        article = m.group(1)
        if article:  # "a red" -> "an orange"
            article = ("an " if color[0] in "aeiou" else "a ") if article.strip().lower() in ("a", "an") else article
            article = article[0].upper() + article[1:] if m.group(1)[0].isupper() else article
        return (article or "") + color

    return re.sub(r"\b((?:an?|An?) )?(" + "|".join(_CHROMATIC) + r")\b", swap, caption)


# --------------------------------------------------------------------------- the experiment

# Condition keys in report order: (key, label in tables, short label in the picture, group).
CONDITIONS = (
    ("gt_labels", "detector vs ground-truth labels", "GT labels", "ceiling"),
    ("vae", "VAE reconstruction of the reference", "VAE recon", "ceiling"),
    ("same", "(a) same plan, own caption, other seeds", "(a) seed", "transfer"),
    ("recolor", "(b) same plan, colours of the caption rotated", "(b) recolour", "transfer"),
    ("other_caption", "(b) same plan, caption of an unrelated clip", "(b) other text", "transfer"),
    ("other_plan", "(c) unrelated clip's plan, own caption", "(c) other plan", "unrelated"),
    ("text_only", "(c) text only: stage-1 plan from the caption", "(c) text only", "unrelated"),
    ("other_clip", "unrelated world clip itself (no model)", "other clip", "unrelated"),
)
LABELS = {key: label for key, label, _, _ in CONDITIONS}
BASELINE = "other_plan"
PICTURE_ROWS = ("(b) recolour", "(b) other text", "(c) other plan", "(c) text only")  # after reference, VAE, (a)


@dataclass
class Setup:
    refs: int = 8
    seeds: int = 2
    steps: int = 20
    guidance: float = 4.0
    start_seed: int = world.HELDOUT_SEED_START
    num_frames: int = 33
    size: int = 64
    fps: float = 8.0
    first_render_seed: int = 1
    text_only: bool = True

    @property
    def ref_seeds(self) -> list[int]:
        return [self.start_seed + i for i in range(self.refs)]

    @property
    def other_seeds(self) -> list[int]:
        """The unrelated clip of each reference: held-out seeds right after the references."""
        return [self.start_seed + self.refs + i for i in range(self.refs)]

    @property
    def render_seeds(self) -> list[int]:
        return [self.first_render_seed + s for s in range(self.seeds)]


@dataclass
class Result:
    setup: Setup
    scores: dict = field(default_factory=dict)     # condition -> list of {"ref", "seed", "iou", "dist", "both"}
    examples: list = field(default_factory=list)   # per reference: {"caption", ..., "videos": {row label: uint8}}
    seconds: float = 0.0


def _uint8(frames) -> np.ndarray:
    return evaluation.as_uint8_frames(frames)


def run(pipe, setup: Setup, picture_refs: int = 2, log=print) -> Result:
    """Run every condition on ``setup.refs`` references; keeps the videos of the first ``picture_refs``."""
    import torch

    from semanticgen_core.sampling import SamplingOptions

    start = time.time()
    result = Result(setup, {key: [] for key, *_ in CONDITIONS})
    n, size, fps = setup.num_frames, setup.size, setup.fps
    if not setup.text_only or pipe.stage1 is None:
        result.scores.pop("text_only")

    def opts(seed: int) -> SamplingOptions:
        return SamplingOptions(steps=setup.steps, guidance=setup.guidance, seed=seed)

    def render(plan, seed: int, prompt: str) -> np.ndarray:
        return _uint8(pipe.decode(pipe.render_latents(plan, opts(seed), prompt=prompt), n))

    def as_tensor(frames: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(frames.astype(np.float32) / 255.0)

    for i, (ref_seed, other_seed) in enumerate(zip(setup.ref_seeds, setup.other_seeds)):
        clip = world.sample_clip(ref_seed, n, size, size, fps)
        other = world.sample_clip(other_seed, n, size, size, fps)
        ref = Reference.of(clip.frames)
        keep = i < picture_refs
        videos: dict[str, tuple[str, int | None, np.ndarray]] = {"reference": ("reference", None, clip.frames)}

        def score(key: str, frames: np.ndarray, seed: int | None, label: str | None = None) -> None:
            s = compare(ref, frames)
            result.scores[key].append({"ref": ref_seed, "seed": seed, **s})
            if keep and label is not None:
                videos[label] = (key, seed, frames)

        labels = world.label_maps(clip.shots, size, size)["object"] >= 0
        gt_iou = float(per_frame_iou(labels, ref.masks).mean())
        result.scores["gt_labels"].append({"ref": ref_seed, "seed": None, "iou": gt_iou, "dist": math.nan,
                                           "both": math.nan})
        latents, count = pipe.vae.encode(as_tensor(clip.frames), pad=True)
        score("vae", _uint8(pipe.vae.decode(latents, num_frames=count)), None, "VAE recon")
        score("other_clip", other.frames, None)

        plan = pipe.encode_video(as_tensor(clip.frames), fps, prompt=clip.caption)
        other_plan = pipe.encode_video(as_tensor(other.frames), fps, prompt=other.caption)
        recolored = recolor_caption(clip.caption)
        for k, seed in enumerate(setup.render_seeds):
            first = k == 0
            score("same", render(plan, seed, clip.caption), seed, f"(a) seed {seed}" if k < 2 else None)
            score("recolor", render(plan, seed, recolored), seed, "(b) recolour" if first else None)
            score("other_caption", render(plan, seed, other.caption), seed, "(b) other text" if first else None)
            score("other_plan", render(other_plan, seed, clip.caption), seed, "(c) other plan" if first else None)
            if "text_only" in result.scores:
                text_plan = pipe.generate_plan(clip.caption, n, fps, size, size, opts(seed))
                score("text_only", render(text_plan, seed, clip.caption), seed, "(c) text only" if first else None)
        if keep:
            order = ["reference", "VAE recon", *(f"(a) seed {s}" for s in setup.render_seeds), *PICTURE_ROWS]
            videos = {label: videos[label] for label in order if label in videos}
            result.examples.append({"ref": ref_seed, "caption": clip.caption, "recolored": recolored,
                                    "other": other.caption, "videos": videos})
        row = result.scores["same"][-setup.seeds:]
        log(f"ref {ref_seed}: (a) IoU {np.mean([r['iou'] for r in row]):.3f}  "
            f"(c) IoU {np.mean([r['iou'] for r in result.scores['other_plan'][-setup.seeds:]]):.3f}  "
            f"VAE {result.scores['vae'][-1]['iou']:.3f}  [{time.time() - start:.0f} s]  {clip.caption}")
    result.seconds = time.time() - start
    return result


# --------------------------------------------------------------------------- summary


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    v = np.array([x for x in values if not math.isnan(x)], np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std()), int(v.size)


def summarize(result: Result) -> dict:
    """Per condition: n, IoU mean/std, ratio to the unrelated-plan baseline, centroid distance mean/std,
    fraction of frames where both videos show an object."""
    out = {}
    base = _mean_std([r["iou"] for r in result.scores.get(BASELINE, [])])[0]
    for key, rows in result.scores.items():
        iou, iou_sd, count = _mean_std([r["iou"] for r in rows])
        dist, dist_sd, _ = _mean_std([r["dist"] for r in rows])
        both, _, _ = _mean_std([r["both"] for r in rows])
        ratio = iou / base if key != "gt_labels" and base > 0 else math.nan  # NaN > 0 is False
        out[key] = {"n": count, "iou": iou, "iou_std": iou_sd, "ratio": ratio, "dist": dist, "dist_std": dist_sd,
                    "both": both}
    return out


def _fmt(mean: float, std: float | None = None, digits: int = 3) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if std is None or math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(summary: dict) -> str:
    lines = ["| condition | n | object IoU | ÷ (c) other plan | largest-object centroid distance | frames with an object in both |",
             "|---|---:|---|---:|---|---:|"]
    for key, *_ in CONDITIONS:
        if key not in summary:
            continue
        s = summary[key]
        lines.append(f"| {LABELS[key]} | {s['n']} | {_fmt(s['iou'], s['iou_std'])} | {_fmt(s['ratio'], None, 2)} | "
                     f"{_fmt(s['dist'], s['dist_std'])} | {_fmt(s['both'], None, 2)} |")
    return "\n".join(lines)


def paired(result: Result, key: str, base: str = BASELINE) -> dict | None:
    """``key`` against ``base`` on the same (reference, seed) pairs: mean IoU difference, its standard
    error, how many pairs ``key`` wins, and a verdict at two standard errors."""
    b = {(r["ref"], r["seed"]): r["iou"] for r in result.scores.get(base, [])}
    diffs = np.array([r["iou"] - b[(r["ref"], r["seed"])] for r in result.scores.get(key, [])
                      if (r["ref"], r["seed"]) in b])
    if diffs.size == 0:
        return None
    se = float(diffs.std(ddof=1) / math.sqrt(diffs.size)) if diffs.size > 1 else math.nan
    mean = float(diffs.mean())
    if math.isnan(se):
        verdict = "one pair only: no verdict"
    elif mean > 2 * se:
        verdict = "higher"
    elif mean < -2 * se:
        verdict = "lower"
    else:
        verdict = "not clearly different (within 2 standard errors)"
    return {"diff": mean, "se": se, "wins": int((diffs > 0).sum()), "ties": int((diffs == 0).sum()),
            "n": int(diffs.size), "verdict": verdict}


def findings(summary: dict, result: Result | None = None) -> list[str]:
    """Plain sentences read off the numbers (no claims that the numbers do not carry)."""
    out = []
    same, base = summary.get("same"), summary.get(BASELINE)
    vae, floor = summary.get("vae"), summary.get("other_clip")

    def versus(key: str) -> str:
        pr = paired(result, key) if result is not None else None
        if pr is None:
            return ""
        return (f"; paired with (c) on the same reference and seed: {pr['diff']:+.3f} ± {pr['se']:.3f} (s.e.), "
                f"{pr['verdict']}, higher in {pr['wins']} of {pr['n']} pairs")

    if same and base and not math.isnan(same["iou"]) and not math.isnan(base["iou"]):
        out.append(f"Rendering the reference's own plan (a) gives object IoU {same['iou']:.3f}; an unrelated clip's "
                   f"plan under the reference's caption (c) gives {base['iou']:.3f} (ratio "
                   f"{_fmt(same['ratio'], None, 2)}{versus('same')}).")
    for key in ("recolor", "other_caption"):
        s = summary.get(key)
        if s and same and not math.isnan(s["iou"]):
            out.append(f"With {'the colours of the caption rotated' if key == 'recolor' else 'an unrelated caption'}"
                       f", the same plan (b) gives IoU {s['iou']:.3f} ({s['iou'] - same['iou']:+.3f} against its own "
                       f"caption; ratio to (c) {_fmt(s['ratio'], None, 2)}{versus(key)}).")
    if "text_only" in summary and not math.isnan(summary["text_only"]["iou"]):
        out.append(f"A text-only video (stage 1 from the reference's caption) reaches IoU "
                   f"{summary['text_only']['iou']:.3f}: what the caption alone fixes of the layout.")
    if vae and same and not math.isnan(vae["iou"]) and vae["iou"] > 0:
        out.append(f"The VAE's reconstruction of the reference reaches IoU {vae['iou']:.3f}, the ceiling for any "
                   f"render through this VAE; plan transfer (a) gets {same['iou'] / vae['iou']:.0%} of it.")
    gt = summary.get("gt_labels")
    if gt and not math.isnan(gt["iou"]):
        out.append(f"The detector's masks on the reference match the world's ground-truth object labels at IoU "
                   f"{gt['iou']:.3f}: the metric itself is sound on clean frames.")
    if floor and not math.isnan(floor["iou"]):
        out.append(f"Two unrelated world clips overlap by IoU {floor['iou']:.3f}: chance layout agreement.")
    if same and base and not math.isnan(same["dist"]) and not math.isnan(base["dist"]):
        out.append(f"Largest-object centroids are {same['dist']:.3f} of the frame apart under (a) and "
                   f"{base['dist']:.3f} under (c) (over the frames where both videos show an object: "
                   f"{same['both']:.0%} and {base['both']:.0%} of them).")
    return out


def _weights_digest() -> dict[str, str]:
    from semanticgen_core.embedded import WEIGHTS_DIR

    out = {}
    for path in sorted(Path(WEIGHTS_DIR).glob("*.safetensors")):
        out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return out


def write_markdown(path: Path, result: Result, summary: dict, command: str, picture: str | None,
                   weights: dict[str, str] | None = None) -> None:
    s = result.setup
    parts = [
        "# Plan transfer (the paper's Fig. 4)",
        "",
        "_Generated by `bench/plan_transfer.py` from this run's numbers; rerun it after retraining._",
        "",
        f"Command: `{command}` ({result.seconds:.0f} s, one thread).",
        "",
        f"Each of {s.refs} held-out world clips (seeds {s.ref_seeds[0]}..{s.ref_seeds[-1]}; {s.num_frames} frames, "
        f"{s.fps:g} fps, {s.size}x{s.size}) is encoded to a plan and rendered by stage 2 + VAE ({s.steps} steps, "
        f"guidance {s.guidance:g}, sampling seeds {', '.join(map(str, s.render_seeds))}). Its unrelated clip is "
        f"the held-out clip {s.refs} seeds later ({s.other_seeds[0]}..{s.other_seeds[-1]}). "
        "Agreement with the reference is measured by the independent OpenCV detector (`semanticgen_world/evaluation.py`): "
        "per frame, IoU of the union of detected object blobs (everything but the background colour) in the "
        "reference and the render, averaged over frames (1 where neither shows an object); and the distance "
        "between the centroids of the largest blob, as a fraction of the frame. Mean ± std over references "
        "× sampling seeds; ÷ (c) is the ratio of mean IoUs to the unrelated-plan baseline.",
        "",
        markdown_table(summary),
        "",
        "What it shows:",
        "",
        *[f"- {line}" for line in findings(summary, result)],
    ]
    if weights:
        parts += ["", "Weights (sha256, first 12 hex): " + ", ".join(f"`{k}` {v}" for k, v in weights.items()) + "."]
    if picture:
        parts += ["", f"![plan transfer]({picture})", "",
                  "Rows: the reference, its VAE reconstruction, (a) its plan at two sampling seeds, (b) its plan "
                  "under a recoloured and an unrelated caption, (c) an unrelated clip's plan under the reference's "
                  "caption and a text-only video; each label gives that video's object IoU with the reference. "
                  "Frames evenly spaced, 64x64 upscaled 2x (nearest)."]
    write_atomic(path, ("\n".join(parts) + "\n").encode())


# --------------------------------------------------------------------------- picture

SCALE = 2
MARGIN = 150
COLUMNS = 6
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _put(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.42, color=(235, 235, 235)) -> None:
    cv2.putText(img, text, org, _FONT, scale, color, 1, cv2.LINE_AA)


def _wrap(text: str, width: int, scale: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if cv2.getTextSize(trial, _FONT, scale, 1)[0][0] > width and line:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def picture(examples: list[dict], scores: dict, columns: int = COLUMNS, scale: int = SCALE) -> np.ndarray:
    """One block per example reference: a header with its captions, then one row per video (frames evenly
    spaced, upscaled ``scale``x nearest) with its label and object IoU on a left margin. RGB uint8."""
    iou_of = {(r["ref"], key, r["seed"]): r["iou"] for key, rows in scores.items() for r in rows}
    blocks = []
    for ex in examples:
        frames0 = ex["videos"]["reference"][2]
        t, h, w = frames0.shape[:3]
        idx = np.linspace(0, t - 1, min(columns, t)).round().astype(int)
        width = MARGIN + len(idx) * w * scale
        text = [f"ref {ex['ref']}: {ex['caption']}", f"(b) recolour: {ex['recolored']}",
                f"(b) other text / (c) other plan from: {ex['other']}"]
        header_lines = [ln for s in text for ln in _wrap(s, width - 12, 0.4)]
        header = np.full((10 + 15 * len(header_lines), width, 3), 30, np.uint8)
        for k, ln in enumerate(header_lines):
            _put(header, ln, (6, 16 + 15 * k), 0.4)
        rows = [header]
        for label, (key, seed, frames) in ex["videos"].items():
            tiles = [cv2.resize(frames[i], (w * scale, h * scale), interpolation=cv2.INTER_NEAREST) for i in idx]
            margin = np.full((h * scale, MARGIN, 3), 30, np.uint8)
            _put(margin, label, (6, h * scale // 2 - 4), 0.45)
            iou = iou_of.get((ex["ref"], key, seed))
            if iou is not None:
                _put(margin, f"IoU {iou:.2f}", (6, h * scale // 2 + 16), 0.42, (160, 220, 255))
            rows.append(np.concatenate([margin, *tiles], axis=1))
        rows.append(np.full((6, width, 3), 255, np.uint8))
        blocks.append(np.concatenate(rows))
    if not blocks:
        raise ValueError("no example to draw")
    return np.concatenate(blocks)


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    write_atomic(path, buf.tobytes())


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None, pipe=None) -> dict:
    """Run the bench; ``pipe`` defaults to the embedded default with its encoder. Returns the summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--refs", type=int, default=8, help="held-out reference clips (default 8)")
    p.add_argument("--seeds", type=int, default=2, help="sampling seeds per condition (default 2)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    p.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the preset's)")
    p.add_argument("--start-seed", type=int, default=world.HELDOUT_SEED_START, help="first held-out world seed")
    p.add_argument("--frames", type=int, default=33, help="frames per clip (default 33: 4 s at 8 fps)")
    p.add_argument("--picture-refs", type=int, default=2, help="references shown in the picture (default 2)")
    p.add_argument("--no-text-only", action="store_true", help="skip the text-only baseline (stage 1)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="writes OUT/plan_transfer.md and OUT/img/plan_transfer.png")
    a = p.parse_args(argv)
    if a.refs < 1 or a.seeds < 1:
        p.error("--refs and --seeds must be >= 1")
    if a.start_seed < world.HELDOUT_SEED_START:
        p.error(f"--start-seed must be a held-out seed (>= {world.HELDOUT_SEED_START})")

    import torch

    torch.set_num_threads(1)
    embedded = pipe is None
    if embedded:
        from semanticgen_core.pipeline import SemanticGenPipeline

        pipe = SemanticGenPipeline.embedded(with_encoder=True)
    d = pipe.preset.defaults
    setup = Setup(refs=a.refs, seeds=a.seeds, steps=a.steps or d.get("steps", 20),
                  guidance=a.guidance if a.guidance is not None else d.get("guidance", 4.0),
                  start_seed=a.start_seed, num_frames=a.frames, size=d.get("height", 64), fps=d.get("fps", 8.0),
                  text_only=not a.no_text_only)
    result = run(pipe, setup, picture_refs=a.picture_refs)
    summary = summarize(result)
    table = markdown_table(summary)
    print(table)
    print()
    for line in findings(summary, result):
        print(f"- {line}")

    png = a.out / "img" / "plan_transfer.png"
    picture_ref = None
    if result.examples:
        write_png(png, picture(result.examples, result.scores))
        picture_ref = os.path.relpath(png, a.out)
        print(f"wrote {png}")
    command = "python bench/plan_transfer.py " + " ".join(shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    md = a.out / "plan_transfer.md"
    write_markdown(md, result, summary, command.strip(), picture_ref, _weights_digest() if embedded else None)
    print(f"wrote {md}  ({result.seconds:.0f} s)")
    return summary


if __name__ == "__main__":
    run_command(main)
