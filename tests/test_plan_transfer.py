"""bench/plan_transfer.py: the layout metric on constructed and world frames, and the bench end to end on
tiny random models."""

import math

import cv2
import numpy as np
import pytest

from bench import plan_transfer as pt
from semanticgen_world import evaluation
from semanticgen_world import world


def _square(size=32, x0=4, y0=4, side=8, frames=3):
    m = np.zeros((frames, size, size), bool)
    m[:, y0:y0 + side, x0:x0 + side] = True
    return m


def test_per_frame_iou_on_constructed_masks():
    a = _square()
    assert np.allclose(pt.per_frame_iou(a, a), 1.0)
    assert np.allclose(pt.per_frame_iou(a, _square(x0=20, y0=20)), 0.0)
    half = _square(x0=8)  # shifted by half its side: overlap 4x8 of a union 12x8
    assert np.allclose(pt.per_frame_iou(a, half), 32 / 96)
    empty = np.zeros_like(a)
    assert np.allclose(pt.per_frame_iou(empty, empty), 1.0)  # both show nothing: they agree
    assert np.allclose(pt.per_frame_iou(a, empty), 0.0)
    with pytest.raises(ValueError):
        pt.per_frame_iou(a, a[:2])


def _draw(frames=4, size=64, xs=(10, 20, 30, 40), bg=(40, 90, 240), fg=(225, 35, 45)):
    video = np.empty((frames, size, size, 3), np.uint8)
    video[:] = bg
    for f in range(frames):
        cv2.rectangle(video[f], (xs[f], 20), (xs[f] + 11, 31), fg, -1)
    return video


def test_object_masks_and_centroids_follow_the_detector():
    video = _draw()
    masks = pt.object_masks(video)
    assert masks.shape == (4, 64, 64) and masks.sum(axis=(1, 2)).tolist() == [144] * 4
    dets = evaluation.detect(video)
    for f, frame in enumerate(dets):
        assert math.isclose(sum(d.area for d in frame) * 64 * 64, masks[f].sum())
    centroids = pt.largest_object_centroids(video)
    assert np.allclose(centroids, [[d[0].x, d[0].y] for d in dets])
    # The same boxes recoloured (other object and background colours) give the same layout.
    recoloured = _draw(bg=(40, 200, 60), fg=(245, 235, 25))
    assert pt.compare(pt.Reference.of(video), recoloured)["iou"] == 1.0
    # Moved boxes: overlap only where they meet; centroids apart by the shift.
    moved = _draw(xs=(40, 30, 20, 10))
    s = pt.compare(pt.Reference.of(video), moved)
    assert 0.0 <= s["iou"] < 0.5 and s["both"] == 1.0 and s["dist"] > 0.1
    blank = np.full_like(video, 128)
    assert pt.compare(pt.Reference.of(video), blank) == {"iou": 0.0, "dist": pytest.approx(math.nan, nan_ok=True),
                                                           "both": 0.0}


def test_world_clip_against_itself_and_another():
    a = world.sample_clip(world.HELDOUT_SEED_START, 17, 64, 64, 8.0)
    b = world.sample_clip(world.HELDOUT_SEED_START + 1, 17, 64, 64, 8.0)
    ref = pt.Reference.of(a.frames)
    assert pt.compare(ref, a.frames)["iou"] == 1.0
    assert pt.compare(ref, a.frames.astype(np.float32) / 255)["iou"] == 1.0  # floats in 0..1 too
    assert pt.compare(ref, b.frames)["iou"] < 0.5
    labels = world.label_maps(a.shots, 64, 64)["object"] >= 0
    assert pt.per_frame_iou(labels, ref.masks).mean() > 0.8  # the detector sees the true objects


def test_recolor_caption_changes_colours_only():
    for seed in range(world.HELDOUT_SEED_START, world.HELDOUT_SEED_START + 12):
        caption = world.sample_clip(seed, 9, 16, 16, 8.0).caption
        new = pt.recolor_caption(caption)
        assert new != caption and " an c" not in new and " a o" not in new
        before, after = world.parse_caption(caption), world.parse_caption(new)
        assert [(o["shape"], o["motion"]) for o in before] == [(o["shape"], o["motion"]) for o in after]
    assert pt.recolor_caption("a red circle over yellow stripes") == "a green circle over blue stripes"
    assert pt.recolor_caption("A yellow star and an orange square") == "A blue star and a cyan square"


def test_bench_end_to_end_on_tiny_models(tiny_pipe, tmp_path):
    argv = ["--refs", "2", "--seeds", "2", "--steps", "1", "--frames", "9", "--picture-refs", "1",
            "--out", str(tmp_path)]
    summary = pt.main(argv, pipe=tiny_pipe)
    assert summary["same"]["n"] == 4 and summary["vae"]["n"] == 2 and summary["other_plan"]["ratio"] == 1.0
    for s in summary.values():
        assert 0.0 <= s["iou"] <= 1.0
    png = cv2.imread(str(tmp_path / "img" / "plan_transfer.png"))
    rows = 8  # reference, VAE, (a) x2, (b) x2, (c) x2
    assert png.shape[1] == pt.MARGIN + 6 * 64 * pt.SCALE and png.shape[0] > rows * 64 * pt.SCALE
    md = (tmp_path / "plan_transfer.md").read_text()
    assert "python bench/plan_transfer.py --refs 2" in md and "img/plan_transfer.png" in md
    assert md.count("\n| ") == len(summary) + 1  # header + one row per condition
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files
