"""Train the embedded default's semantic encoder: a tiny Qwen2.5-VL vision tower, from scratch, on the world.

    python -m semanticgen_world.recipes.train_semantic_encoder --out runs/semantic_encoder [--minutes 22]
    python -m semanticgen_world.recipes.train_semantic_encoder --out runs/semantic_encoder --eval

The paper freezes a pretrained video-understanding tower; the embedded default has none, so it trains one
whose features carry *what, where and how it moves* and not texture, since the semantic space is meant to
hold layout, objects and motion while stage 2 adds texture. The objective (heads are thrown away):

* Dense supervision from the world's ground truth, per semantic token (temporal patch t, cell i, j), with
  linear heads on the tower's merged features: colour and shape class of the object covering the cell (or
  "none"), the backdrop's colour and kind, the object's motion inside the temporal patch (dx, dy, dsize as
  fractions of the frame), its geometry (centre offset from the cell centre and size) and the objects'
  silhouette on a 4x4 sub-grid of the cell. Labels are the world's per-pixel label maps pooled over the
  cell and the temporal patch's frames. (The silhouette target was added after pilot runs in which the
  shape head stayed at chance for 350 steps while colour was learnt in 150: it makes the tower keep
  object outlines, which shape needs and which stage 2 needs to draw the object in the right place.)
* Texture invariance: each scene is rendered twice with new object textures / texture seeds and a new
  background pattern seed (same colours, shapes, positions, motion and backdrop kind); the squared
  distance between the two feature grids is divided by the batch's feature variance, so the tower cannot
  lower it by shrinking its features.

Qwen2.5-VL's tower attends within one temporal patch only (2 sampled frames; windows and "full"
attention never cross time, and its rotary positions are spatial), so every temporal patch is encoded
independently: a batch holds a few temporal patches of many 4 s clips (33 frames at 8 fps, 64x64, a
quarter of them two-shot) instead of whole clips, which is exactly equivalent and more varied. Training
seeds are below ``HELDOUT_SEED_START``; every figure reported is on seeds at or above it.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..world import (BACKGROUND_COLORS, BACKGROUNDS, HELDOUT_SEED_START, OBJECT_COLORS, SHAPES, TEXTURES,
                          ShotSpec, label_maps, object_track, render_clip, retexture_shot, sample_clip_shots)
from semanticgen_core.errors import SemanticGenError, run_command
from semanticgen_core.presets import EMBEDDED
from semanticgen_core.semantic_encoder import QwenVisionEncoder, qwen_patchify, sample_indices
from .loop import save_atomic

NUM_FRAMES, FPS, SIZE = 33, 8.0, 64  # 4 s clips of the embedded default
TWO_SHOT_RATE = 0.25
IGNORE = -100  # cross_entropy's ignore_index: cells too ambiguous to label
NO_COLOR, NO_SHAPE = len(OBJECT_COLORS), len(SHAPES)  # the "none" class of each object head
OBJECT_MIN_COVER = 0.2  # an object labels a cell if it covers this much of it (over the patch's frames) ...
OBJECT_MIN_SHARE = 0.4  # ... or this much of the object lies in the cell (small objects)
EMPTY_MAX_COVER = 0.03  # below this, the cell is "none"; in between it is ignored
# Regression targets are divided by these (fractions of the frame): sizes change far less than positions.
MOTION_UNIT = np.array([0.05, 0.05, 0.01], np.float32)
GEOMETRY_UNIT = 0.1
SUB = 4  # silhouette resolution inside a token cell (SUB x SUB blocks)
STILL = 0.01  # displacement (fraction of the frame) under which a token counts as still
DIRECTIONS = ("still", "right", "left", "down", "up")
OBJECTIVE = (
    "dense ground-truth supervision per semantic token with linear heads (object colour / shape or none, "
    "background colour and kind, object motion dx, dy, dsize within the temporal patch, object centre "
    "offset and size, object silhouette on a 4x4 sub-grid) + texture invariance (squared feature distance "
    "between two renders of the same scene with different object textures and background pattern seeds, "
    "divided by the batch feature variance); heads discarded"
)


def new_encoder(seed: int = 0) -> QwenVisionEncoder:
    """A freshly initialised embedded-preset tower (deterministic for a seed)."""
    torch.manual_seed(seed)
    return QwenVisionEncoder.from_config(EMBEDDED.encoder, EMBEDDED.sample_fps, name=f"qwen2.5-vl-vision:{EMBEDDED.name}")


def plan_patches(encoder: QwenVisionEncoder, num_frames: int = NUM_FRAMES, fps: float = FPS) -> list[tuple[int, ...]]:
    """Source frames of each temporal patch, as ``encode`` groups them (the last one padded by repetition)."""
    idx = sample_indices(num_frames, fps, encoder.sample_fps)
    tp = encoder.temporal_patch_size
    idx = idx + [idx[-1]] * (-len(idx) % tp)
    return [tuple(idx[i:i + tp]) for i in range(0, len(idx), tp)]


def direction_class(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Index into ``DIRECTIONS``: still, or the dominant axis of the displacement (y down)."""
    horizontal = np.abs(dx) >= np.abs(dy)
    cls = np.where(horizontal, np.where(dx > 0, 1, 2), np.where(dy > 0, 3, 4))
    return np.where(np.maximum(np.abs(dx), np.abs(dy)) < STILL, 0, cls)


def token_labels(shots: list[ShotSpec], patches: list[tuple[int, ...]], height: int, width: int,
                 cell: int) -> dict[str, np.ndarray]:
    """Ground truth per semantic token for the given temporal patches (each a tuple of clip frames).

    Returns ``color`` / ``shape`` [P, h, w] (class, the "none" class, or ``IGNORE``), ``background`` and
    ``bg_kind`` [P, h, w] (mode over the cell's pixels and the patch's frames), ``texture`` [P, h, w]
    (the object's texture for object cells, else ``IGNORE``; for evaluation only), ``motion`` [P, h, w, 3]
    (dx, dy, dsize of the object from the patch's first to last frame, fractions of the frame),
    ``geometry`` [P, h, w, 3] (object centre minus cell centre, x and y, and diameter, averaged over the
    frames), ``object_mask`` [P, h, w] (1 where the cell is an object cell whose motion is defined) and
    ``silhouette`` [P, h, w, SUB * SUB] (share of each sub-block covered by an object, over the frames).
    """
    if height % cell or width % cell:
        raise SemanticGenError(f"frame {height}x{width} is not a multiple of the {cell}-pixel token cell")
    frames = sorted({f for p in patches for f in p})
    maps = label_maps(shots, height, width, frames)
    row = {f: i for i, f in enumerate(frames)}
    h, w, n_p = height // cell, width // cell, len(patches)
    tracks = {(s, k): object_track(shot, k, height, width) for s, shot in enumerate(shots)
              for k in range(len(shot.objects))}
    out = {
        "color": np.full((n_p, h, w), IGNORE, np.int64), "shape": np.full((n_p, h, w), IGNORE, np.int64),
        "texture": np.full((n_p, h, w), IGNORE, np.int64),
        "background": np.zeros((n_p, h, w), np.int64), "bg_kind": np.zeros((n_p, h, w), np.int64),
        "motion": np.zeros((n_p, h, w, 3), np.float32), "geometry": np.zeros((n_p, h, w, 3), np.float32),
        "object_mask": np.zeros((n_p, h, w), np.float32),
        "silhouette": np.zeros((n_p, h, w, SUB * SUB), np.float32),
    }
    kinds = np.array([BACKGROUNDS.index(s.background.kind) for s in shots])

    def cells(a: np.ndarray) -> np.ndarray:  # [n, H, W] -> [h, w, n * cell * cell]
        return a.reshape(a.shape[0], h, cell, w, cell).transpose(1, 3, 0, 2, 4).reshape(h, w, -1)

    for p, fr in enumerate(patches):
        rows = [row[f] for f in fr]
        shot_of = maps["shot"][rows].astype(np.int64)
        obj = maps["object"][rows].astype(np.int64)
        key = cells(np.where(obj >= 0, shot_of[:, None, None] * 16 + obj, -1))
        total = key.shape[-1]
        out["background"][p] = _mode(cells(maps["background"][rows].astype(np.int64)), len(BACKGROUND_COLORS))
        out["bg_kind"][p] = _mode(cells(np.broadcast_to(kinds[shot_of][:, None, None], obj.shape)), len(BACKGROUNDS))
        occupied = (obj >= 0).astype(np.float32)  # [n, H, W] -> share of each sub-block covered
        sub = cell // SUB
        out["silhouette"][p] = occupied.reshape(len(rows), h, SUB, sub, w, SUB, sub).mean((0, 3, 6)).transpose(
            0, 2, 1, 3).reshape(h, w, SUB * SUB)
        present = np.unique(key[key >= 0])
        if present.size == 0:
            out["color"][p], out["shape"][p] = NO_COLOR, NO_SHAPE
            continue
        counts = np.stack([(key == k).sum(-1) for k in present])  # [K, h, w]
        best = counts.argmax(0)
        cover = counts.max(0) / total
        share = counts.max(0) / np.maximum(counts.sum((1, 2)), 1)[best]
        empty = counts.sum(0) / total < EMPTY_MAX_COVER
        labelled = ~empty & ((cover >= OBJECT_MIN_COVER) | (share >= OBJECT_MIN_SHARE))
        out["color"][p][empty], out["shape"][p][empty] = NO_COLOR, NO_SHAPE
        for i, j in zip(*np.nonzero(labelled)):
            s, k = divmod(int(present[best[i, j]]), 16)
            spec = shots[s].objects[k]
            out["color"][p, i, j] = OBJECT_COLORS.index(spec.color)
            out["shape"][p, i, j] = SHAPES.index(spec.shape)
            out["texture"][p, i, j] = TEXTURES.index(spec.texture)
            local = [f - shots[s].start_frame for f in fr if 0 <= f - shots[s].start_frame < shots[s].num_frames]
            track = tracks[(s, k)][local]  # x, y (pixel-index coordinates), diameter (pixels), visible
            scale = min(height, width)
            out["geometry"][p, i, j] = ((track[:, 0].mean() + 0.5) / width - (j + 0.5) * cell / width,
                                        (track[:, 1].mean() + 0.5) / height - (i + 0.5) * cell / height,
                                        track[:, 2].mean() / scale)
            if len(local) == len(fr):  # a cut inside the patch: the motion is not defined
                out["motion"][p, i, j] = ((track[-1, 0] - track[0, 0]) / width, (track[-1, 1] - track[0, 1]) / height,
                                          (track[-1, 2] - track[0, 2]) / scale)
                out["object_mask"][p, i, j] = 1.0
    return out


def _mode(values: np.ndarray, classes: int) -> np.ndarray:
    """Most frequent class along the last axis."""
    counts = np.stack([(values == c).sum(-1) for c in range(classes)], -1)
    return counts.argmax(-1)


# --------------------------------------------------------------------------- data


@dataclass
class Patches:
    """Temporal patches of clips, rendered twice (``frames_b``: new textures), with their labels."""

    frames_a: np.ndarray  # uint8 [P, tp, H, W, 3]
    frames_b: np.ndarray
    labels: dict[str, np.ndarray]  # [P, h, w(, 3)]


def clip_patches(seed: int, num_shots: int, tex_rng: np.random.Generator, encoder: QwenVisionEncoder,
                 patch_ids: list[int] | None = None) -> Patches:
    """Render the chosen temporal patches (default all) of clip ``seed`` and of a retextured copy."""
    shots = sample_clip_shots(seed, NUM_FRAMES, FPS, num_shots)
    alt = [retexture_shot(s, tex_rng) for s in shots]
    patches = plan_patches(encoder)
    chosen = [patches[i] for i in (range(len(patches)) if patch_ids is None else patch_ids)]
    flat = [f for p in chosen for f in p]
    shape = (len(chosen), len(chosen[0]), SIZE, SIZE, 3)
    frames_a = render_clip(shots, SIZE, SIZE, flat).reshape(shape)
    frames_b = render_clip(alt, SIZE, SIZE, flat).reshape(shape)
    return Patches(frames_a, frames_b, token_labels(shots, chosen, SIZE, SIZE, encoder.patch_size * encoder.merge_size))


def concat(parts: list[Patches]) -> Patches:
    return Patches(np.concatenate([p.frames_a for p in parts]), np.concatenate([p.frames_b for p in parts]),
                   {k: np.concatenate([p.labels[k] for p in parts]) for k in parts[0].labels})


def training_batch(rng: np.random.Generator, encoder: QwenVisionEncoder, clips: int, per_clip: int) -> Patches:
    """``per_clip`` random temporal patches from each of ``clips`` random training clips."""
    n_patches = len(plan_patches(encoder))
    parts = []
    for _ in range(clips):
        seed = int(rng.integers(HELDOUT_SEED_START))
        num_shots = 2 if rng.random() < TWO_SHOT_RATE else 1
        ids = sorted(rng.choice(n_patches, size=min(per_clip, n_patches), replace=False).tolist())
        parts.append(clip_patches(seed, num_shots, rng, encoder, ids))
    return concat(parts)


def heldout_clips(count: int, start: int = HELDOUT_SEED_START) -> list[tuple[int, int]]:
    """(seed, num_shots) of the evaluation clips: consecutive seeds, every fourth clip two-shot."""
    return [(start + i, 2 if i % 4 == 3 else 1) for i in range(count)]


def heldout_patches(encoder: QwenVisionEncoder, count: int) -> Patches:
    rng = np.random.default_rng(HELDOUT_SEED_START)
    return concat([clip_patches(s, n, rng, encoder) for s, n in heldout_clips(count)])


def pixel_batch(encoder: QwenVisionEncoder, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 patches [P, tp, H, W, 3] -> ``(pixel_values, grid_thw)`` of P one-patch videos.

    The same rows ``encoder.preprocess`` gives for each patch (frames already at the sampled rate and a
    multiple of the token cell), computed for all patches at once: patchifying the P patches as one video
    of P temporal patches orders the rows patch by patch.
    """
    p, tp, h, w, _ = frames.shape
    if tp != encoder.temporal_patch_size or h % (encoder.patch_size * encoder.merge_size) or w % (
            encoder.patch_size * encoder.merge_size):
        raise SemanticGenError(f"patches of shape {list(frames.shape)} do not fit the encoder's "
                               f"{encoder.temporal_patch_size}-frame, {encoder.patch_size * encoder.merge_size}-pixel tokens")
    video = torch.from_numpy(frames).reshape(p * tp, h, w, 3).permute(0, 3, 1, 2).float() / 255.0
    video = (video - encoder.mean) / encoder.std
    pixel_values, grid = qwen_patchify(video, encoder.patch_size, encoder.temporal_patch_size, encoder.merge_size)
    gt, gh, gw = grid[0].tolist()
    return pixel_values, torch.tensor([[1, gh, gw]] * gt, dtype=torch.long)


# --------------------------------------------------------------------------- objective


_SEGMENTS = "semanticgen_equal_segments"  # the name has "flash" semantics: transformers passes cu_seqlens


def _equal_segment_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                             cu_seq_lens_q=None, **kwargs):
    """Attention within packed segments (``cu_seq_lens_q``) as one batched SDPA when they are all the same
    length, which they are here (one-patch videos: equal windows, equal frames); else segment by segment.
    Same result as transformers' SDPA path, which loops over segments: about 30% less CPU per step."""
    _, heads, seq, dim = query.shape
    lengths = cu_seq_lens_q[1:] - cu_seq_lens_q[:-1]
    if bool((lengths == lengths[0]).all()):
        n, length = lengths.numel(), int(lengths[0])
        split = lambda t: t.reshape(heads, n, length, dim).transpose(0, 1)  # noqa: E731
        out = F.scaled_dot_product_attention(split(query), split(key), split(value), dropout_p=dropout, scale=scaling)
        return out.permute(0, 2, 1, 3).reshape(1, seq, heads, dim), None
    outs = [F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling)
            for q, k, v in zip(*(torch.split(t, lengths.tolist(), dim=2) for t in (query, key, value)))]
    return torch.cat(outs, 2).transpose(1, 2), None


class batched_attention:  # noqa: N801 - used as a context manager
    """Run the tower with ``_equal_segment_attention`` inside the block; restores its implementation after."""

    def __init__(self, encoder: QwenVisionEncoder) -> None:
        self.config = encoder.model.config
        self.saved = None

    def __enter__(self):
        try:
            from transformers import AttentionInterface

            AttentionInterface.register("flash_" + _SEGMENTS, _equal_segment_attention)
        except (ImportError, AttributeError):  # older transformers: keep its own attention
            return self
        self.saved = self.config._attn_implementation
        self.config._attn_implementation = "flash_" + _SEGMENTS
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            self.config._attn_implementation = self.saved



class Heads(torch.nn.Module):
    """Linear read-outs of one semantic token (thrown away after training)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.color = torch.nn.Linear(dim, len(OBJECT_COLORS) + 1)
        self.shape = torch.nn.Linear(dim, len(SHAPES) + 1)
        self.background = torch.nn.Linear(dim, len(BACKGROUND_COLORS))
        self.bg_kind = torch.nn.Linear(dim, len(BACKGROUNDS))
        self.motion = torch.nn.Linear(dim, 3)
        self.geometry = torch.nn.Linear(dim, 3)
        self.silhouette = torch.nn.Linear(dim, SUB * SUB)


def _label_tensors(labels: dict[str, np.ndarray], repeat: int = 1) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).repeat(repeat, *([1] * (v.ndim - 1))) for k, v in labels.items()}


def _masked_huber(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    err = F.huber_loss(pred, target, reduction="none").sum(-1)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


def _balanced_ce(logits: torch.Tensor, target: torch.Tensor, none: int) -> torch.Tensor:
    """Cross-entropy averaged over object cells and over empty cells separately, then summed: objects
    cover about a tenth of the cells, and a plain mean lets the head answer "none" everywhere."""
    logits, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    loss = logits.new_zeros(())
    for sel in ((target >= 0) & (target != none), target == none):
        if sel.any():
            loss = loss + F.cross_entropy(logits[sel], target[sel])
    return loss


def texture_ratio(fa: torch.Tensor, fb: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between texture-swapped tokens over that between tokens of other clips."""
    return (fa - fb).square().sum(-1).mean() / (fa - fc).square().sum(-1).mean().clamp(min=1e-12)


def losses(encoder: QwenVisionEncoder, heads: Heads, batch: Patches, pixels, weights: dict[str, float]):
    """All terms for a batch (``pixels`` from ``pixel_batch`` of ``frames_a`` then ``frames_b``)."""
    feats = encoder.features(*pixels)[:, 0]  # [2P, h, w, d]
    p = batch.frames_a.shape[0]
    lab = _label_tensors(batch.labels, 2)  # both renders share the labels
    out = {
        "color": _balanced_ce(heads.color(feats), lab["color"], NO_COLOR),
        "shape": _balanced_ce(heads.shape(feats), lab["shape"], NO_SHAPE),
        "background": F.cross_entropy(heads.background(feats).permute(0, 3, 1, 2), lab["background"]),
        "bg_kind": F.cross_entropy(heads.bg_kind(feats).permute(0, 3, 1, 2), lab["bg_kind"]),
        "motion": _masked_huber(heads.motion(feats), lab["motion"] / torch.from_numpy(MOTION_UNIT), lab["object_mask"]),
        "geometry": _masked_huber(heads.geometry(feats), lab["geometry"] / GEOMETRY_UNIT, lab["object_mask"]),
        "silhouette": F.binary_cross_entropy_with_logits(heads.silhouette(feats), lab["silhouette"]),
    }
    # Invariance, scaled by the batch's spread: E|x - y|^2 = 2 tr(Cov) for independent tokens, so 1 means
    # "as different as unrelated tokens" and shrinking all features changes nothing.
    flat = feats.reshape(-1, feats.shape[-1])
    spread = 2 * flat.var(0).sum().clamp(min=1e-12)
    out["invariance"] = (feats[:p] - feats[p:]).square().sum(-1).mean() / spread
    out["loss"] = sum(weights.get(k, 1.0) * v for k, v in out.items())
    return out


@torch.no_grad()
def head_eval(encoder: QwenVisionEncoder, heads: Heads, data: Patches, chunk: int = 256) -> dict[str, float]:
    """Held-out figures of the training heads (a quick check during training)."""
    feats_a, feats_b = [], []
    for i in range(0, data.frames_a.shape[0], chunk):
        feats_a.append(encoder.features(*pixel_batch(encoder, data.frames_a[i:i + chunk]))[:, 0])
        feats_b.append(encoder.features(*pixel_batch(encoder, data.frames_b[i:i + chunk]))[:, 0])
    fa, fb = torch.cat(feats_a), torch.cat(feats_b)
    lab = data.labels
    n_patch = len(plan_patches(encoder))
    preds = {k: getattr(heads, k)(fa).argmax(-1).numpy() for k in ("color", "shape", "background", "bg_kind")}
    motion = heads.motion(fa).numpy() * MOTION_UNIT
    geometry = heads.geometry(fa).numpy() * GEOMETRY_UNIT
    obj, mask = (lab["color"] >= 0) & (lab["color"] != NO_COLOR), lab["object_mask"] > 0
    other = torch.roll(fa, n_patch, 0)  # the same temporal patch of the next clip
    return {
        "colour": _acc(preds["color"], lab["color"], obj), "shape": _acc(preds["shape"], lab["shape"], obj),
        "empty": _acc(preds["color"], lab["color"], lab["color"] == NO_COLOR),
        "background": _acc(preds["background"], lab["background"]), "bg_kind": _acc(preds["bg_kind"], lab["bg_kind"]),
        "motion_dir": _acc(direction_class(motion[..., 0], motion[..., 1]),
                           direction_class(lab["motion"][..., 0], lab["motion"][..., 1]), mask),
        "motion_r2": _r2(motion[mask], lab["motion"][mask]), "geometry_r2": _r2(geometry[obj], lab["geometry"][obj]),
        "silhouette_iou": _iou(heads.silhouette(fa).numpy() > 0, lab["silhouette"] > 0.5),
        "texture_ratio": float(texture_ratio(fa, fb, other)),
    }


def _acc(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    mask = np.ones(target.shape, bool) if mask is None else mask
    return float((pred[mask] == target[mask]).mean()) if mask.any() else float("nan")


def _iou(pred: np.ndarray, target: np.ndarray) -> float:
    union = (pred | target).sum()
    return float((pred & target).sum() / union) if union else float("nan")


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination, averaged over the output columns."""
    if len(target) < 2:
        return float("nan")
    sse = ((pred - target) ** 2).sum(0)
    sst = ((target - target.mean(0)) ** 2).sum(0)
    varies = sst > 1e-12 * len(target)  # a constant column (e.g. no size change in a tiny set) has no R^2
    return float(np.mean(1 - sse[varies] / sst[varies])) if varies.any() else float("nan")


# --------------------------------------------------------------------------- linear probes (--eval)


def encode_clips(encoder: QwenVisionEncoder, clips: list[tuple[int, int]], tex_seed: int):
    """Features of whole clips through ``encode`` (the path the pipeline uses) for clip and retextured clip,
    raw pixel tokens of both, and the labels. Returns (feats_a, feats_b, pix_a, pix_b, labels) with
    tokens flattened clip-major: [N * T_s * h * w, d]."""
    rng = np.random.default_rng(tex_seed)
    cell = encoder.patch_size * encoder.merge_size
    fa, fb, pa, pb, labels = [], [], [], [], []
    for seed, num_shots in clips:
        shots = sample_clip_shots(seed, NUM_FRAMES, FPS, num_shots)
        alt = [retexture_shot(s, rng) for s in shots]
        for store_f, store_p, sh in ((fa, pa, shots), (fb, pb, alt)):
            frames = torch.from_numpy(render_clip(sh, SIZE, SIZE)).float() / 255.0
            store_f.append(encoder.encode(frames, FPS).reshape(-1, encoder.feature_dim))
            pv, _ = encoder.preprocess(frames, FPS)
            store_p.append(pv.reshape(-1, encoder.merge_size**2 * pv.shape[1]))  # one row per merged token
        labels.append(token_labels(shots, plan_patches(encoder), SIZE, SIZE, cell))
    cat = lambda xs: torch.cat(xs).float()  # noqa: E731
    lab = {k: np.concatenate([l[k].reshape(-1, *l[k].shape[3:]) for l in labels]) for k in labels[0]}
    return cat(fa), cat(fb), cat(pa), cat(pb), lab


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return (train - mean) / std, (test - mean) / std


def fit_logistic(x: torch.Tensor, y: np.ndarray, classes: int, l2: float = 1e-3, iters: int = 150) -> torch.nn.Linear:
    """Multinomial logistic regression (L-BFGS) on standardised features; ``IGNORE`` rows are skipped."""
    keep = torch.from_numpy(y != IGNORE)
    x, y = x[keep], torch.from_numpy(y[y != IGNORE])
    probe = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), y) + l2 * probe.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


def fit_ridge(x: torch.Tensor, y: np.ndarray, l2: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    x1 = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    reg = l2 * len(x) * torch.eye(x1.shape[1], dtype=torch.float64)
    reg[-1, -1] = 0
    w = torch.linalg.solve(x1.T @ x1 + reg, x1.T @ torch.from_numpy(y).double())
    return w[:-1].float(), w[-1].float()


def probe_figures(train: tuple, test: tuple, n_patch: int, grid: int) -> dict[str, float]:
    """Linear probes fitted on ``train`` tokens, measured on ``test`` (both from ``encode_clips``; the
    features are in slot 0 of each, the retextured features in slot 1)."""
    xtr, xte = _standardise(train[0], test[0])
    ltr, lte = train[-1], test[-1]
    obj_tr = (ltr["color"] >= 0) & (ltr["color"] != NO_COLOR)
    obj_te = (lte["color"] >= 0) & (lte["color"] != NO_COLOR)
    figures = {}
    only = lambda labels, mask: np.where(mask, labels, IGNORE)  # noqa: E731
    with torch.enable_grad():
        # Colour and shape of the object given that a cell holds one (8- and 4-way), whether it holds one
        # (object vs "none"), and the backdrop's colour and kind on every cell.
        colour = fit_logistic(xtr, only(ltr["color"], obj_tr), NO_COLOR)(xte).argmax(-1).numpy()
        shape = fit_logistic(xtr, only(ltr["shape"], obj_tr), NO_SHAPE)(xte).argmax(-1).numpy()
        occ_tr = np.where(ltr["color"] == IGNORE, IGNORE, (ltr["color"] != NO_COLOR).astype(np.int64))
        occupied = fit_logistic(xtr, occ_tr, 2)(xte).argmax(-1).numpy()
        background = fit_logistic(xtr, ltr["background"], len(BACKGROUND_COLORS))(xte).argmax(-1).numpy()
        bg_kind = fit_logistic(xtr, ltr["bg_kind"], len(BACKGROUNDS))(xte).argmax(-1).numpy()
        mtr, mte = ltr["object_mask"] > 0, lte["object_mask"] > 0
        dirs_tr = np.where(mtr, direction_class(ltr["motion"][:, 0], ltr["motion"][:, 1]), IGNORE)
        dirs = fit_logistic(xtr, dirs_tr, len(DIRECTIONS))(xte).argmax(-1).numpy()
        tex = fit_logistic(xtr, only(ltr["texture"], obj_tr), len(TEXTURES))(xte).argmax(-1).numpy()
    figures["colour"] = _acc(colour, lte["color"], obj_te)
    figures["shape"] = _acc(shape, lte["shape"], obj_te)
    empty_te = lte["color"] == NO_COLOR  # balanced accuracy of "is there an object in this cell"
    figures["objectness"] = 0.5 * (_acc(occupied, np.ones_like(occupied), obj_te) + _acc(occupied, np.zeros_like(occupied), empty_te))
    figures["background"] = _acc(background, lte["background"])
    figures["bg_kind"] = _acc(bg_kind, lte["bg_kind"])
    figures["motion_dir"] = _acc(dirs, direction_class(lte["motion"][:, 0], lte["motion"][:, 1]), mte)
    w, b = fit_ridge(xtr[torch.from_numpy(mtr)], ltr["motion"][mtr])
    figures["motion_r2"] = _r2((xte[torch.from_numpy(mte)] @ w + b).numpy(), lte["motion"][mte])
    w, b = fit_ridge(xtr[torch.from_numpy(obj_tr)], ltr["geometry"][obj_tr])
    figures["geometry_r2"] = _r2((xte[torch.from_numpy(obj_te)] @ w + b).numpy(), lte["geometry"][obj_te])
    w, b = fit_ridge(xtr, ltr["silhouette"])
    figures["silhouette_iou"] = _iou((xte @ w + b).numpy() > 0.5, lte["silhouette"] > 0.5)
    figures["texture_probe"] = _acc(tex, lte["texture"], obj_te)  # lower is better
    # Texture sensitivity: retextured vs. the same token of the next held-out clip.
    fa, fb = test[0], test[1]
    per_clip = n_patch * grid
    figures["texture_ratio"] = float(texture_ratio(fa, fb, torch.roll(fa, per_clip, 0)))
    # The same on object cells only (where object textures change), against object cells of other clips:
    # the whole-frame ratio is dominated by backdrop colours, which differ between clips.
    cells = torch.from_numpy(np.nonzero(obj_te)[0])
    if len(cells) > 1:
        oa, ob = fa[cells], fb[cells]
        figures["texture_ratio_objects"] = float(texture_ratio(oa, ob, torch.roll(oa, len(cells) // 2, 0)))
    return figures


def evaluate(encoder: QwenVisionEncoder, train_clips: int, test_clips: int, baselines: bool = False,
             log=print) -> dict[str, dict[str, float]]:
    """Held-out linear-probe figures of ``encoder`` (and of a random tower and raw pixels if ``baselines``)."""
    rng = np.random.default_rng(12345)
    train_set = [(int(s), 2 if rng.random() < TWO_SHOT_RATE else 1)
                 for s in rng.integers(HELDOUT_SEED_START, size=train_clips)]
    test_set = heldout_clips(test_clips)
    n_patch, grid = len(plan_patches(encoder)), (SIZE // (encoder.patch_size * encoder.merge_size)) ** 2
    towers = {"trained": encoder}
    if baselines:
        towers["random_init"] = new_encoder(0)
    results = {}
    for name, tower in towers.items():
        t0 = time.time()
        tr, te = encode_clips(tower, train_set, 1), encode_clips(tower, test_set, 2)
        results[name] = probe_figures(tr, te, n_patch, grid)
        log(f"  {name}: {time.time() - t0:.0f} s")
        if baselines and name == "trained":  # raw pixels of each token (4 patches x 2 frames), same probes
            results["pixels"] = probe_figures((tr[2], tr[3], tr[4]), (te[2], te[3], te[4]), n_patch, grid)
    return results


def format_figures(results: dict[str, dict[str, float]]) -> str:
    keys = ["colour", "shape", "objectness", "empty", "background", "bg_kind", "motion_dir", "motion_r2", "geometry_r2",
            "silhouette_iou", "texture_probe", "texture_ratio", "texture_ratio_objects"]
    keys = [k for k in keys if any(k in r for r in results.values())]
    short = {"texture_ratio_objects": "tex_ratio_obj", "silhouette_iou": "silhouette_iou", "texture_probe": "texture_probe"}
    head = f"{'':12s}" + "".join(f"{short.get(k, k):>15s}" for k in keys)
    rows = [f"{name:12s}" + "".join(f"{r.get(k, float('nan')):15.3f}" for k in keys) for name, r in results.items()]
    return "\n".join([head, *rows])


# --------------------------------------------------------------------------- training loop


def _lr(args, step: int, elapsed: float) -> float:
    """Linear warm-up, then cosine decay to a tenth over the run (by steps or by time, whichever is further)."""
    progress = 0.0
    if args.steps:
        progress = max(progress, step / args.steps)
    if args.minutes:
        progress = max(progress, elapsed / (60 * args.minutes))
    warm = min(1.0, (step + 1) / args.warmup)
    return args.lr * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def _log(out: Path, record: dict) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _fmt(d: dict) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in d.items())


def train(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = new_encoder(args.seed)
    encoder.model.requires_grad_(True)
    heads = Heads(encoder.feature_dim)
    params = list(encoder.model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)
    step, elapsed, cpu = 0, 0.0, 0.0
    last = out / "last.pt"
    if last.is_file():
        try:
            state = torch.load(last, map_location="cpu", weights_only=False)
            encoder.model.load_state_dict(state["encoder"])
            heads.load_state_dict(state["heads"])
            opt.load_state_dict(state["optimizer"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            step, elapsed, cpu = state["step"], state["elapsed"], state["cpu"]
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
            raise SemanticGenError(f"cannot resume from {last} ({e}); delete it to start over") from e
        print(f"resumed from {last} at step {step} ({elapsed / 60:.1f} min)", flush=True)
    weights = {"invariance": args.w_invariance, "motion": args.w_motion, "geometry": args.w_geometry,
               "shape": args.w_shape}
    heldout = heldout_patches(encoder, args.eval_clips)

    def done() -> bool:
        return bool((args.steps and step >= args.steps) or (args.minutes and elapsed >= 60 * args.minutes))

    def checkpoint() -> None:
        save_atomic({"encoder": encoder.model.state_dict(), "heads": heads.state_dict(), "optimizer": opt.state_dict(),
                      "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                      "elapsed": elapsed, "cpu": cpu, "args": vars(args)}, last)

    stop = {"signal": None}

    def on_signal(signum, frame):  # finish the step, save, exit
        stop["signal"] = signum

    handlers = {}
    if args.handle_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    try:
        with batched_attention(encoder):
            last_save, running, count = time.time(), {}, 0
            while not done() and stop["signal"] is None:
                t0, c0 = time.time(), time.process_time()
                batch = training_batch(rng, encoder, args.batch, args.patches_per_clip)
                pixels = pixel_batch(encoder, np.concatenate([batch.frames_a, batch.frames_b]))
                for group in opt.param_groups:
                    group["lr"] = _lr(args, step, elapsed)
                terms = losses(encoder, heads, batch, pixels, weights)
                opt.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                step += 1
                elapsed += time.time() - t0
                cpu += time.process_time() - c0
                for k, v in terms.items():
                    running[k] = running.get(k, 0.0) + float(v.detach())
                count += 1
                if step % args.log_every == 0 or done():
                    mean = {k: v / count for k, v in running.items()}
                    running, count = {}, 0
                    print(f"step {step} | {_fmt(mean)} | lr {opt.param_groups[0]['lr']:.2e} | "
                          f"{elapsed / step:.2f} s/step {elapsed / 60:.1f} min", flush=True)
                    _log(out, {"step": step, "elapsed": round(elapsed, 1), "lr": opt.param_groups[0]["lr"], **mean})
                if step % args.eval_every == 0 or done():
                    figures = head_eval(encoder, heads, heldout)
                    print(f"held-out step {step} | {_fmt(figures)}", flush=True)
                    _log(out, {"step": step, "elapsed": round(elapsed, 1), "heldout": figures})
                if time.time() - last_save > args.save_every:
                    checkpoint()
                    last_save = time.time()
            checkpoint()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if stop["signal"] is not None:
        print(f"stopped by signal {stop['signal']} at step {step}; saved {last} (run again to resume)", flush=True)
        return 130
    export(args, encoder, heads, heldout, step, elapsed, cpu)
    return 0


def export(args, encoder, heads, heldout, step, elapsed, cpu) -> Path:
    from semanticgen_core.model_files import save_model  # imports the VAE module too; only needed here

    encoder.model.requires_grad_(False)
    figures = head_eval(encoder, heads, heldout)
    info = {"steps": step, "cpu_minutes": round(cpu / 60, 2), "wall_minutes": round(elapsed / 60, 2),
            "objective": OBJECTIVE, "heldout_heads": figures,
            "data": (f"procedural world, {NUM_FRAMES} frames at {FPS:g} fps, {SIZE}x{SIZE}, "
                     f"{TWO_SHOT_RATE:.0%} two-shot, seeds < {HELDOUT_SEED_START}"),
            "batch": {"clips": args.batch, "patches_per_clip": args.patches_per_clip}}
    if args.probe_clips:
        print("linear probes (held-out):", flush=True)
        info["heldout_probes"] = evaluate(encoder, args.probe_clips, args.probe_clips)["trained"]
        print(format_figures({"trained": info["heldout_probes"]}), flush=True)
    path = Path(args.out) / "semantic_encoder.safetensors"
    save_model(path, "semantic_encoder", {"encoder": encoder}, EMBEDDED, info)
    _log(Path(args.out), {"step": step, "exported": str(path), "info": info})
    print(f"exported {path}", flush=True)
    return path


def run_eval(args) -> int:
    from semanticgen_core.model_files import load_model

    path = Path(args.weights) if args.weights else Path(args.out) / "semantic_encoder.safetensors"
    encoder = load_model(path, "semantic_encoder").modules["encoder"]
    print(f"{path}: linear probes fitted on {args.probe_clips} training clips, scored on {args.probe_clips} held-out "
          f"clips (seeds >= {HELDOUT_SEED_START}). colour/shape: accuracy on object cells (8-/4-way); objectness: "
          "object vs empty cell, balanced accuracy; motion_dir: still/right/left/down/up of object cells; *_r2: ridge regression; silhouette_iou: "
          "4x4 sub-cell object mask; texture_probe: object texture read from the features (lower is better, "
          "chance about 0.2); texture_ratio: |f(x) - f(retextured x)|^2 / |f(x) - f(other clip)|^2 per token "
          "(lower is better; tex_ratio_obj: on object cells, against object cells of other clips). Rows: the "
          "file, a randomly initialised tower of the same shape, and the raw pixels of each token.", flush=True)
    results = evaluate(encoder, args.probe_clips, args.probe_clips, baselines=not args.no_baselines)
    print(format_figures(results), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "eval.json").write_text(json.dumps({"weights": str(path), "figures": results}, indent=1))
    return 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run folder: last.pt, log.jsonl, semantic_encoder.safetensors")
    p.add_argument("--minutes", type=float, default=None, help="training wall-time budget (default 22 if no --steps)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps in all")
    p.add_argument("--batch", type=int, default=16, help="clips per step")
    p.add_argument("--patches-per-clip", type=int, default=4, help="temporal patches drawn from each clip")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--w-invariance", type=float, default=10.0)
    p.add_argument("--w-motion", type=float, default=3.0)
    p.add_argument("--w-geometry", type=float, default=0.5)
    p.add_argument("--w-shape", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-clips", type=int, default=32, help="held-out clips for the heads' figures")
    p.add_argument("--probe-clips", type=int, default=128, help="clips for linear probes (0: none at export)")
    p.add_argument("--save-every", type=float, default=120.0, help="seconds between last.pt saves")
    p.add_argument("--eval", action="store_true", help="print held-out linear-probe figures of the exported file")
    p.add_argument("--weights", default=None, help="with --eval: the file to evaluate (default OUT/semantic_encoder.safetensors)")
    p.add_argument("--no-baselines", action="store_true", help="with --eval: skip the random-tower and pixel rows")
    p.add_argument("--no-signals", dest="handle_signals", action="store_false", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.eval and args.minutes is None and args.steps is None:
        args.minutes = 22.0
    for name in ("batch", "patches_per_clip", "warmup", "log_every", "eval_every", "eval_clips"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.eval_clips < 2:
        p.error("--eval-clips must be >= 2 (the texture ratio compares different clips)")
    if args.probe_clips == 1 or args.probe_clips < 0:
        p.error("--probe-clips must be 0 or >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.eval:
        return run_eval(args)
    return train(args)


if __name__ == "__main__":
    run_command(main)
