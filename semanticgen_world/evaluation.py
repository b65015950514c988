"""Judging videos against their prompts with an independent detector (``docs/evaluation.md``).

The detector is plain OpenCV colour and shape segmentation of the frames; it never touches the model's
own encoder, so a model cannot pass by agreeing with itself. It knows only what the procedural world
(``data/world.py``) draws: palette colours (judged in HSV by ``world.classify_pixels``), four shapes,
and the world's motions.

    detect(frames)                -> per-frame detections (colour, shape, centroid, area, ...)
    summarize(detections, ...)    -> tracks (one per colour), each with colour, shape and motion
    judge(frames, prompt)         -> which of colour / shape / motion are right, plus consistency
    evaluate(generate, prompts)   -> accuracies with counts over many prompts
    paired_changes, sign_test     -> what one model gets right that another gets wrong, on the same prompts
    heldout_prompts(n, wording)   -> captions of held-out world clips (the prompts the evaluation uses), in
                                     the template wording or the held-out paraphrases (``wording.py``)
    vae_psnr(vae, clips)          -> a VideoVAE's reconstruction PSNR

Coordinates in results are fractions of the frame (x of the width, y of the height, area of H*W), so the
rules hold at any resolution.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from . import wording as _wording, world
from semanticgen_core.errors import SemanticGenError, ShapeError
from semanticgen_core.shots import split_shots

NAMES: tuple[str, ...] = tuple(world.PALETTE)  # colour classes, indexed as world.classify_pixels returns

# Motion groups for the headline motion metric: the direction an object travels. "moving from left to
# right", "entering from the left" and "leaving to the right" all travel rightwards.
DIRECTION_GROUP: dict[str, str] = {
    "left_to_right": "rightward", "enter_left": "rightward", "leave_right": "rightward",
    "right_to_left": "leftward", "enter_right": "leftward", "leave_left": "leftward",
    "up": "up", "down": "down", "static": "static", "bouncing": "bouncing",
    "growing": "growing", "shrinking": "shrinking",
}

# Detector thresholds (fractions of the frame unless said otherwise); docs/evaluation.md explains them.
MIN_AREA = 8 / 4096          # smallest blob kept (8 pixels at 64x64)
MAX_AREA = 0.35              # a blob larger than this is background of another shade, not an object
STAR_SOLIDITY = 0.84         # area / convex-hull area below this: a star
TRUNCATED_AREA = 0.5         # a border-touching blob under this fraction of the track's full size is cut off
MOVE = 0.15                  # net travel that counts as moving (world objects travel 0.35..0.6)
SWING = 0.1                  # a back-and-forth swing larger than this is a bounce
GROWTH = 2.0                 # area ratio end/start that counts as growing (1/GROWTH: shrinking)
CONSISTENCY_SIZE = 16        # temporal_consistency compares frames averaged down to about this size
MIN_TRACK_FRAMES = 0.2       # a track must be seen in at least this fraction of the frames to count

# Prototypes (area / min-area-rectangle, area / min-enclosing-circle) of the convex shapes, from their
# geometry in world._shape_points: a circle fills pi/4 of its box and all of its circle, a square all of
# its box and 2/pi of its circle, an upright equilateral triangle half of its box and 0.41 of its circle.
_PROTOTYPES = {"circle": (math.pi / 4, 1.0), "square": (1.0, 2 / math.pi), "triangle": (0.5, 0.4135)}


# --------------------------------------------------------------------------- inputs


def as_uint8_frames(frames) -> np.ndarray:
    """Frames as uint8 RGB ``[T, H, W, 3]``: uint8 arrays pass through, floats are read as 0..1 (a torch
    tensor is moved to the CPU first)."""
    if hasattr(frames, "detach"):  # torch.Tensor, without importing torch
        frames = frames.detach().float().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ShapeError(f"expected frames [T, H, W, 3] (RGB), got shape {list(arr.shape)}")
    if arr.shape[0] == 0:
        raise ShapeError("got 0 frames")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        raise SemanticGenError(f"expected uint8 frames or floats in 0..1, got {arr.dtype}")
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- per-frame detection


@dataclass
class Detection:
    """One blob in one frame. ``x``, ``y``: centroid as fractions of width and height; ``area``: fraction
    of the frame; ``touches_border``: the blob reaches the frame's edge (its shape may be cut off)."""

    frame: int
    color: str
    shape: str
    x: float
    y: float
    area: float
    touches_border: bool
    solidity: float
    rect_fill: float
    circle_fill: float
    vertices: int


def _shape_features(mask: np.ndarray) -> tuple[float, float, float, int]:
    """(solidity, area / min-area rectangle, area / min-enclosing circle, polygon vertices) of a blob.

    The blob is upsampled 4x (bilinear on the binary mask, threshold one half) so the contour of a
    10-pixel shape is smooth enough for its geometry to show."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), np.float32)
    crop[1:-1, 1:-1] = mask[y0:y1, x0:x1]
    scale = 4
    big = cv2.resize(crop, (crop.shape[1] * scale, crop.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
    contours, _ = cv2.findContours((big >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=cv2.contourArea)
    area = cv2.contourArea(contour)
    if area <= 0:
        return 1.0, 1.0, 1.0, 0
    hull = cv2.convexHull(contour)
    solidity = area / max(cv2.contourArea(hull), 1e-6)
    (_, _), (w, h), _ = cv2.minAreaRect(contour)
    (_, _), radius = cv2.minEnclosingCircle(contour)
    approx = cv2.approxPolyDP(contour, 0.04 * cv2.arcLength(contour, True), True)
    return (float(solidity), float(area / max(w * h, 1e-6)), float(area / max(math.pi * radius**2, 1e-6)),
            int(len(approx)))


def classify_shape(solidity: float, rect_fill: float, circle_fill: float) -> str:
    """Star if the blob is clearly concave; else the nearest convex prototype in (rect_fill, circle_fill)."""
    if solidity < STAR_SOLIDITY:
        return "star"
    return min(_PROTOTYPES, key=lambda s: (rect_fill - _PROTOTYPES[s][0]) ** 2 + (circle_fill - _PROTOTYPES[s][1]) ** 2)


def _background_class(classes: np.ndarray) -> int:
    valid = classes[classes >= 0]
    if valid.size == 0:
        return -1
    return int(np.bincount(valid.ravel(), minlength=len(NAMES)).argmax())


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _frame_objects(classes: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(colour index, mask) of each object blob in one frame of colour classes."""
    height, width = classes.shape
    bg = _background_class(classes)
    fg = (classes >= 0) & (classes != bg)
    if not fg.any():
        return []
    # Cores: pixels whose 3x3 cross is all one colour. Anti-aliased rims (a blue disc on red shows a purple
    # rim) have no core and join the nearest core's colour, so a rim is never an object of its own.
    present = [k for k in np.unique(classes[fg]) if k >= 0]
    dist = np.full((len(present), height, width), np.inf, np.float32)
    for i, k in enumerate(present):
        core = cv2.erode(((classes == k) & fg).astype(np.uint8), _CROSS, borderType=cv2.BORDER_REPLICATE)
        if core.any():
            dist[i] = cv2.distanceTransform((1 - core).astype(np.uint8), cv2.DIST_L2, 3)
    if not np.isfinite(dist).any():
        return []
    owner = dist.argmin(0)
    min_area, max_area = MIN_AREA * height * width, MAX_AREA * height * width
    out = []
    for i, k in enumerate(present):
        if not np.isfinite(dist[i]).any():
            continue
        mask = (fg & (owner == i)).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for c in range(1, count):
            if min_area <= stats[c, cv2.CC_STAT_AREA] <= max_area:
                out.append((int(k), labels == c))
    return out


def detect(frames) -> list[list[Detection]]:
    """Per frame, the object blobs: colour (palette class in HSV), shape (contour geometry), centroid, area.

    ``frames``: uint8 ``[T, H, W, 3]`` or floats in 0..1 (numpy or torch). The background of each frame is
    its most common colour class; everything else of at least ``MIN_AREA`` is an object candidate.
    """
    frames = as_uint8_frames(frames)
    _, height, width, _ = frames.shape
    classes = world.classify_pixels(frames)
    result = []
    for f in range(frames.shape[0]):
        dets = []
        for k, mask in _frame_objects(classes[f]):
            ys, xs = np.nonzero(mask)
            solidity, rect_fill, circle_fill, vertices = _shape_features(mask)
            touches = bool(ys.min() == 0 or xs.min() == 0 or ys.max() == height - 1 or xs.max() == width - 1)
            dets.append(Detection(
                frame=f, color=NAMES[k], shape=classify_shape(solidity, rect_fill, circle_fill),
                x=float((xs.mean() + 0.5) / width), y=float((ys.mean() + 0.5) / height),
                area=float(len(xs) / (height * width)), touches_border=touches, solidity=solidity,
                rect_fill=rect_fill, circle_fill=circle_fill, vertices=vertices))
        result.append(dets)
    return result


# --------------------------------------------------------------------------- clip-level summary


def _swings(p: np.ndarray, threshold: float) -> int:
    """Legs of a zigzag through ``p`` that ignores moves smaller than ``threshold``."""
    if len(p) < 2:
        return 0
    direction, extreme, lo, hi, legs = 0, p[0], p[0], p[0], 0
    for v in p[1:]:
        if direction == 0:
            lo, hi = min(lo, v), max(hi, v)
            if v - lo >= threshold:
                direction, extreme, legs = 1, v, 1
            elif hi - v >= threshold:
                direction, extreme, legs = -1, v, 1
        elif direction * (v - extreme) > 0:
            extreme = v
        elif abs(v - extreme) >= threshold:
            direction, extreme, legs = -direction, v, legs + 1
    return legs


def _median3(p: np.ndarray) -> np.ndarray:
    """Running median of 3 (the ends kept)."""
    if len(p) < 3:
        return p
    return np.concatenate([p[:1], np.median(np.stack([p[:-2], p[1:-1], p[2:]]), axis=0), p[-1:]])


def _trend(t: np.ndarray, v: np.ndarray) -> float:
    """Least-squares change of ``v`` from the first to the last of the times ``t``."""
    if len(t) < 2 or t[-1] == t[0]:
        return 0.0
    slope = np.polyfit(t, v, 1)[0]
    return float(slope * (t[-1] - t[0]))


@dataclass
class Track:
    """One object over the clip: the largest blob of one colour in each frame where it is seen."""

    color: str
    shape: str | None
    motion: str
    direction: str | None          # net travel: rightward / leftward / up / down, or None
    reversals: int
    growth: float                  # fitted area ratio last/first (frames where the blob is not cut off)
    frames_seen: int
    total_area: float
    shape_votes: dict
    color_stability: float         # of the frames that show any object, the fraction that show this colour
    shape_stability: float         # fraction of shape votes for the majority shape
    path: list                     # [frame, x, y, area] per seen frame

    def as_dict(self) -> dict:
        return asdict(self)


def _classify_motion(dets: list[Detection], num_frames: int) -> tuple[str, str | None, int, float]:
    """(motion, net direction, reversals, growth) of one track; the rules are in docs/evaluation.md."""
    t = np.array([d.frame for d in dets], np.float64)
    x = np.array([d.x for d in dets])
    y = np.array([d.y for d in dets])
    whole = [d for d in dets if not d.touches_border] or dets
    full_size = float(np.median([d.area for d in whole]))
    inside = {d.frame for d in dets if not (d.touches_border and d.area < TRUNCATED_AREA * full_size)}
    dx, dy = _trend(t, x), _trend(t, y)
    direction = None
    if max(abs(dx), abs(dy)) >= MOVE:
        direction = ("rightward" if dx > 0 else "leftward") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
    # Bounces are counted on the frames where the blob is at least 0.4x its median size (an occluded or
    # cut-off sliver has a displaced centroid), after a 3-frame median filter against single-frame jumps.
    median_area = float(np.median([d.area for d in dets]))
    solid = [i for i, d in enumerate(dets) if d.area >= 0.4 * median_area]
    xs, ys = _median3(x[solid]), _median3(y[solid])
    reversals = max(_swings(xs, SWING), _swings(ys, SWING), 1) - 1
    tw = np.array([d.frame for d in whole], np.float64)
    growth = math.exp(_trend(tw, np.log([d.area for d in whole])))

    start_in, end_in = 0 in inside, (num_frames - 1) in inside
    if start_in != end_in and direction in ("rightward", "leftward"):
        if not start_in:
            return ("enter_left" if direction == "rightward" else "enter_right"), direction, reversals, growth
        return ("leave_right" if direction == "rightward" else "leave_left"), direction, reversals, growth
    if reversals >= 1:
        return "bouncing", direction, reversals, growth
    if growth >= GROWTH:
        return "growing", direction, reversals, growth
    if growth <= 1 / GROWTH:
        return "shrinking", direction, reversals, growth
    if direction is not None:
        return {"rightward": "left_to_right", "leftward": "right_to_left"}.get(direction, direction), \
            direction, reversals, growth
    return "static", direction, reversals, growth


def summarize(detections: list[list[Detection]]) -> dict:
    """Clip-level view: one track per colour (the largest blob of that colour in each frame), biggest
    first (by area summed over frames). ``main`` is the first track, or None when nothing was found.
    Tracks seen in fewer than ``MIN_TRACK_FRAMES`` of the frames are dropped as flicker."""
    num_frames = len(detections)
    by_color: dict[str, list[Detection]] = {}
    for frame in detections:
        best: dict[str, Detection] = {}
        for d in frame:
            if d.color not in best or d.area > best[d.color].area:
                best[d.color] = d
        for color, d in best.items():
            by_color.setdefault(color, []).append(d)
    frames_with_objects = sum(bool(frame) for frame in detections)
    tracks = []
    for color, dets in by_color.items():
        if len(dets) < max(2, MIN_TRACK_FRAMES * num_frames):
            continue
        votes = Counter(d.shape for d in dets if not d.touches_border) or Counter(d.shape for d in dets)
        shape = votes.most_common(1)[0][0]
        motion, direction, reversals, growth = _classify_motion(dets, num_frames)
        tracks.append(Track(
            color=color, shape=shape, motion=motion, direction=direction, reversals=reversals, growth=growth,
            frames_seen=len(dets), total_area=float(sum(d.area for d in dets)), shape_votes=dict(votes),
            color_stability=len(dets) / frames_with_objects,
            shape_stability=votes[shape] / sum(votes.values()),
            path=[[d.frame, round(d.x, 4), round(d.y, 4), round(d.area, 5)] for d in dets]))
    tracks.sort(key=lambda tr: -tr.total_area)
    main = tracks[0] if tracks else None
    return {
        "num_frames": num_frames,
        "tracks": tracks,
        "main": main,
        "color": main.color if main else None,
        "shape": main.shape if main else None,
        "motion": main.motion if main else None,
    }


# --------------------------------------------------------------------------- consistency


def temporal_consistency(frames) -> float:
    """1 - (mean |frame_t - frame_t-1|) / (mean |frame_i - frame_j| over all pairs i < j), in [0, 1].

    Frames are first area-averaged down to about ``CONSISTENCY_SIZE`` pixels on the short side. A
    smooth video changes little from one frame to the next compared with how much it changes over the
    whole clip: real world clips score high, shuffled frames or noise score near 0 (every pair differs
    as much as neighbours do). A video that does not change at all scores 1."""
    f = as_uint8_frames(frames).astype(np.float32) / 255.0
    n, height, width = f.shape[:3]
    if n < 3:
        return 1.0
    factor = max(1, min(height, width) // CONSISTENCY_SIZE)
    if factor > 1:  # object scale: averaging 4x4 pixels (at 64x64) keeps motion but not pixel noise
        f = np.stack([cv2.resize(x, (width // factor, height // factor), interpolation=cv2.INTER_AREA) for x in f])
    flat = f.reshape(n, -1)
    neighbours = float(np.abs(flat[1:] - flat[:-1]).mean())
    pairs = [float(np.abs(flat[i + 1:] - flat[i]).mean(axis=1).sum()) for i in range(n - 1)]
    overall = sum(pairs) / (n * (n - 1) / 2)
    if overall < 1e-4:
        return 1.0
    return float(min(max(1.0 - neighbours / overall, 0.0), 1.0))


# --------------------------------------------------------------------------- judging


def _secondary_motion(prompt: str) -> str | None:
    """For a one-object prompt such as "a red ball bouncing from left to right": the motion named beside
    "bouncing" (``parse_caption`` keeps only the first), or None."""
    rest = re.sub(r"\bbounc\w*", " ", prompt, flags=re.IGNORECASE)
    objects = world.parse_caption(rest) if rest != prompt else []
    if len(objects) != 1 or objects[0]["motion"] in (None, "bouncing"):
        return None
    return objects[0]["motion"]


def motion_matches(prompt_motion: str, track: Track, also: str | None = None) -> bool:
    """The prompt's motion against a detected track: equal direction groups (``DIRECTION_GROUP``). With
    ``also`` (a direction named beside "bouncing"), a track that travels that way is also right."""
    if DIRECTION_GROUP.get(track.motion) == DIRECTION_GROUP[prompt_motion]:
        return True
    if also is not None:
        group = DIRECTION_GROUP[also]
        return group in (DIRECTION_GROUP.get(track.motion), track.direction)
    return False


def judge(frames, prompt: str, detections: list[list[Detection]] | None = None) -> dict:
    """Judge one video against its prompt (one shot; a world caption or free text).

    Every object the prompt names is judged: the prompt's N objects are matched to the video's N largest
    tracks, first by colour (a prompt object takes a track of its own colour), then the rest in order
    of size. Each object gets ``color``, ``shape`` and ``motion`` True/False (None when the prompt does not
    say). ``motion`` compares direction groups (``DIRECTION_GROUP``); ``motion_exact`` the world's
    12 motion labels. Clip-level: ``consistency`` (``temporal_consistency``) and ``stability`` (mean of
    the main track's colour and shape stability; 0 when nothing was found).
    """
    frames = as_uint8_frames(frames)
    if split_shots(prompt) is not None:
        raise SemanticGenError("judge takes a one-shot prompt; this one has several timed shots "
                               f"(\"0-2 s: ...; 2-4 s: ...\"): judge each shot's frames with its own text: {prompt!r}")
    targets = world.parse_caption(prompt)
    if not targets:
        raise SemanticGenError(f"the prompt names no shape (circle, square, triangle, star), so there is "
                               f"nothing to judge: {prompt!r}")
    detections = detect(frames) if detections is None else detections
    summary = summarize(detections)
    candidates = list(summary["tracks"][:len(targets)])
    assigned: list[Track | None] = [None] * len(targets)
    for i, obj in enumerate(targets):
        for tr in candidates:
            if tr.color == obj["color"]:
                assigned[i] = tr
                candidates.remove(tr)
                break
    for i in range(len(targets)):
        if assigned[i] is None and candidates:
            assigned[i] = candidates.pop(0)
    objects = []
    for obj, tr in zip(targets, assigned):
        also = _secondary_motion(prompt) if obj["motion"] == "bouncing" and len(targets) == 1 else None
        objects.append({
            "prompt": {"color": obj["color"], "shape": obj["shape"], "motion": obj["motion"],
                       **({"also": also} if also else {})},
            "detected": None if tr is None else {"color": tr.color, "shape": tr.shape, "motion": tr.motion,
                                                 "direction": tr.direction},
            "color": None if obj["color"] is None else tr is not None and tr.color == obj["color"],
            "shape": None if obj["shape"] is None else tr is not None and tr.shape == obj["shape"],
            "motion": None if obj["motion"] is None else tr is not None and motion_matches(obj["motion"], tr, also),
            "motion_exact": None if obj["motion"] is None else tr is not None and tr.motion == obj["motion"],
        })
    main = summary["main"]
    stability = 0.0 if main is None else (main.color_stability + main.shape_stability) / 2
    return {
        "prompt": prompt,
        "objects": objects,
        "consistency": temporal_consistency(frames),
        "stability": stability,
        "num_tracks": len(summary["tracks"]),
        "tracks": [{"color": t.color, "shape": t.shape, "motion": t.motion, "frames_seen": t.frames_seen}
                   for t in summary["tracks"]],
    }


# --------------------------------------------------------------------------- evaluation over prompts

ATTRIBUTES = ("color", "shape", "motion", "motion_exact")
HEADLINE = {"color": "colour", "motion": "direction", "shape": "shape"}  # the figures reported first, as named


def _rate(values: list[bool]) -> dict:
    return {"correct": int(sum(values)), "total": len(values),
            "accuracy": (sum(values) / len(values)) if values else None}


def aggregate(judgements: list[dict]) -> dict:
    """Accuracies with counts: over every judged prompt object, over the first object of each prompt, and
    (``by_object_count``, keyed "1", "2", ...) over the objects of the prompts that name that many objects:
    scenes of two objects fare far worse than scenes of one, and hold nearly half of the objects."""
    out = {"prompts": len(judgements)}

    def rates(chosen, pick):
        return {a: _rate([o[a] for j in chosen for o in pick(j) if o[a] is not None]) for a in ATTRIBUTES}

    for scope, pick in (("objects", lambda j: j["objects"]), ("first_object", lambda j: j["objects"][:1])):
        out[scope] = rates(judgements, pick)
    counts = sorted({len(j["objects"]) for j in judgements})
    out["by_object_count"] = {str(n): rates([j for j in judgements if len(j["objects"]) == n], lambda j: j["objects"])
                              for n in counts}
    out["all_correct"] = _rate([all(o[a] is not False for o in j["objects"] for a in ("color", "shape", "motion"))
                                for j in judgements])
    for key in ("consistency", "stability"):
        values = [j[key] for j in judgements]
        out[key] = float(np.mean(values)) if values else None
    return out


def paired_changes(base: Sequence[dict], other: Sequence[dict], attribute: str) -> tuple[int, int]:
    """Judgements of the same prompts by two models (``evaluate``'s ``per_prompt``): (objects ``other`` gets right
    and ``base`` wrong, the reverse) for one attribute. Raises if the two judged different prompts."""
    if [j["prompt"] for j in base] != [j["prompt"] for j in other]:
        raise SemanticGenError("the two sets of judgements are of different prompts: compare evaluations made with "
                               "the same --prompts, --first and --wording")
    pairs = [(a[attribute], b[attribute]) for x, y in zip(base, other) for a, b in zip(x["objects"], y["objects"])]
    return sum(bool(b) and not a for a, b in pairs), sum(bool(a) and not b for a, b in pairs)


def sign_test(gained: int, lost: int) -> float:
    """Two-sided p of a sign test: how likely a split of changed objects at least this uneven is, were gains and
    losses equally likely."""
    n = gained + lost
    return 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, k) for k in range(min(gained, lost) + 1)) / 2 ** n)


Generate = Callable[[str, int], object]


def evaluate(generate: Generate, prompts: Sequence[str], seeds: int | Sequence[int] = 0,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Generate a video per prompt with ``generate(prompt, seed)`` (frames ``[T, H, W, 3]``, uint8 or 0..1)
    and judge it. ``seeds``: one per prompt, or an int ``s`` for seeds ``s, s+1, ...``.
    Returns ``aggregate``'s figures plus ``per_prompt`` (each judgement, with its seed)."""
    prompts = list(prompts)
    if isinstance(seeds, (int, np.integer)):
        seeds = [int(seeds) + i for i in range(len(prompts))]
    seeds = list(seeds)
    if len(seeds) != len(prompts):
        raise SemanticGenError(f"got {len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt "
                               "(or a single int)")
    judgements = []
    for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
        result = judge(generate(prompt, seed), prompt)
        result["seed"] = seed
        judgements.append(result)
        if progress is not None:
            progress(i + 1, len(prompts))
    return {**aggregate(judgements), "per_prompt": judgements}


CLIP_FRAMES, CLIP_FPS, CLIP_SIZE = 33, 8.0, 64
# Hand-written prompts in the world's vocabulary (not its captions): objects of distinct colours over
# backgrounds of other hues, for quick looks and tests of the shipped model.
FIXED_PROMPTS = (
    "a red circle moving from left to right over blue stripes",
    "a large yellow square moving up on a plain purple background",
    "a green triangle moving down on a red gradient",
    "a large blue star bouncing over orange stripes",
    "a large white circle growing on a plain green background",
    "a cyan square moving from right to left on a purple gradient",
)  # 4 s at the embedded default's 8 fps (4k+1 frames)


def heldout_clips(n: int, start_seed: int = world.HELDOUT_SEED_START, num_frames: int = CLIP_FRAMES,
                  size: int = CLIP_SIZE, fps: float = CLIP_FPS) -> list[world.Clip]:
    """``n`` one-shot world clips from the held-out seeds ``start_seed, start_seed + 1, ...``."""
    if n < 0:
        raise SemanticGenError(f"n must be >= 0, got {n}")
    if start_seed < world.HELDOUT_SEED_START:
        raise SemanticGenError(f"start_seed {start_seed} is a training seed: held-out seeds start at "
                               f"{world.HELDOUT_SEED_START}")
    return [world.sample_clip(start_seed + i, num_frames, size, size, fps) for i in range(n)]


WORDINGS = ("template", "paraphrase")


def prompt_of(clip: world.Clip, wording: str = "template") -> str:
    """A held-out clip's prompt: its template caption, or its paraphrase in the held-out wording that no
    training caption uses (``wording.paraphrase``)."""
    if wording not in WORDINGS:
        raise SemanticGenError(f"unknown wording {wording!r}: one of {', '.join(WORDINGS)}")
    return clip.caption if wording == "template" else _wording.paraphrase(clip)


def heldout_prompts(n: int, start_seed: int = world.HELDOUT_SEED_START, num_frames: int = CLIP_FRAMES,
                    wording: str = "template") -> list[str]:
    """Prompts of ``n`` held-out world clips: the prompts the evaluation uses (never seen in training)."""
    return [prompt_of(clip, wording) for clip in heldout_clips(n, start_seed, num_frames, size=16)]


def reference_generator(clips: Sequence[world.Clip], wording: str = "template") -> Generate:
    """A ``generate`` that returns the ground-truth clip of each prompt (the detector's ceiling)."""
    by_caption: dict[str, np.ndarray] = {}
    for clip in clips:
        by_caption.setdefault(prompt_of(clip, wording), clip.frames)

    def generate(prompt: str, seed: int) -> np.ndarray:
        if prompt not in by_caption:
            raise SemanticGenError(f"no reference clip has the caption {prompt!r}")
        return by_caption[prompt]

    return generate


# --------------------------------------------------------------------------- VAE reconstruction


def psnr(reference, reconstruction) -> float:
    """PSNR in dB of two videos (uint8, or floats in 0..1; same shape), peak 1.0; inf when equal."""
    a, b = _unit_float(reference), _unit_float(reconstruction)
    if a.shape != b.shape:
        raise ShapeError(f"PSNR needs two videos of one shape, got {list(a.shape)} and {list(b.shape)}")
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _unit_float(frames) -> np.ndarray:
    """float64 in 0..1 without rounding floats to 8 bits (uint8 is divided by 255)."""
    if hasattr(frames, "detach"):
        frames = frames.detach().double().cpu().numpy()
    arr = np.asarray(frames)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    return np.clip(arr.astype(np.float64), 0.0, 1.0)


def reconstruct(vae, frames):
    """A video (``[T, H, W, 3]`` uint8 or 0..1) through a ``VideoVAE``: encoded with padding to 4k+1
    frames, decoded back to T. Returns float frames in 0..1 on the CPU."""
    import torch

    x = torch.from_numpy(as_uint8_frames(frames).astype(np.float32) / 255.0)
    param = next(vae.parameters(), None)
    if param is not None:
        x = x.to(param.device)
    with torch.no_grad():
        latents, n = vae.encode(x, pad=True)
        return vae.decode(latents, n).cpu()


def vae_psnr(vae, clips, reconstructions: Sequence | None = None) -> dict:
    """Reconstruction PSNR (dB, peak 1.0) of a ``VideoVAE`` on ``clips`` (each ``[T, H, W, 3]`` uint8 or
    0..1, or a ``world.Clip``), through ``reconstruct``, or from ``reconstructions`` of the same clips
    already made by it.
    Returns ``{"psnr": mean over clips, "per_clip": [...], "clips": n}``."""
    if reconstructions is not None and len(reconstructions) != len(clips):
        raise SemanticGenError(f"vae_psnr got {len(reconstructions)} reconstructions for {len(clips)} clips")
    values = []
    for i, clip in enumerate(clips):
        frames = as_uint8_frames(clip.frames if isinstance(clip, world.Clip) else clip).astype(np.float32) / 255.0
        recon = reconstruct(vae, frames) if reconstructions is None else reconstructions[i]
        values.append(psnr(frames, recon))  # the same float32 frames the VAE saw
    if not values:
        raise SemanticGenError("vae_psnr needs at least one clip")
    return {"psnr": float(np.mean(values)), "per_clip": values, "clips": len(values)}
