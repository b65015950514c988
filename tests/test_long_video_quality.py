"""bench/long_video_quality.py: the seam, drift, sharpness and adherence measures on constructed and world
videos, and the bench end to end on tiny random models."""

import json
import math

import cv2
import numpy as np
import pytest

from bench import long_video_quality as lq
from semanticgen_world import world
from semanticgen_core.plan import Segment
from semanticgen_core.shots import format_shots


def _moving_square(frames: int, size: int = 64, speed: float = 0.25) -> np.ndarray:
    """A bright square drifting right at a constant sub-pixel speed over a gradient: smooth motion."""
    x = np.arange(size, dtype=np.float32)
    out = np.empty((frames, size, size, 3), np.float32)
    for f in range(frames):
        bg = np.tile((0.2 + 0.5 * x / size)[None, :, None], (size, 1, 3))
        centre = 10 + speed * f
        profile = np.clip(6 - np.abs(x - centre), 0, 1)  # anti-aliased edges: every frame changes a little
        out[f] = bg + 0.4 * profile[None, :, None] * np.clip(8 - np.abs(x - 32), 0, 1)[:, None, None]
    return np.clip(out, 0, 1)


def test_border_pairs_follow_the_latent_layout():
    # 129 frames = 33 latent frames; latent k >= 1 starts at video frame 4k - 3, so border k-1|k is (4k-4, 4k-3)
    assert lq.window_border_pairs(129, 4, shifted=False) == [12, 28, 44, 60, 76, 92, 108, 124]  # k = 4, 8, ...
    assert lq.window_border_pairs(129, 4, shifted=True) == [4, 20, 36, 52, 68, 84, 100, 116]   # k = 2, 6, ...
    assert lq.latent_border_pairs(17) == [0, 4, 8, 12]
    assert lq.window_border_pairs(9, 4, shifted=False) == []  # 3 latent frames: one window


def test_seam_ratio_on_synthetic_videos():
    smooth = _moving_square(129)
    s = lq.seam_ratio(smooth, 4)
    assert s["unshifted_ratio"] == pytest.approx(1.0, abs=0.15)
    assert s["shifted_ratio"] == pytest.approx(1.0, abs=0.15)
    assert s["n_unshifted"] == 8 and s["n_shifted"] == 8 and s["n_interior"] == 128 - 16

    # A brightness jump after every unshifted border (a seam): only the unshifted ratio explodes.
    seam = smooth.copy()
    for a in lq.window_border_pairs(129, 4, False):
        seam[a + 1:] = np.clip(seam[a + 1:] + (0.08 if (a // 16) % 2 == 0 else -0.08), 0, 1)
    s = lq.seam_ratio(seam, 4)
    assert s["unshifted_ratio"] > 10
    assert s["shifted_ratio"] == pytest.approx(1.0, abs=0.15)

    # The same jumps only at shot cuts: excluded, so no seam is reported.
    cuts = [45, 77]  # near the unshifted borders (44, 45) and (76, 77)
    cut_video = smooth.copy()
    for c in cuts:
        cut_video[c:] = np.clip(cut_video[c:] + 0.3, 0, 1) if c == 45 else cut_video[c:][:, ::-1]
    assert lq.seam_ratio(cut_video, 4)["unshifted_ratio"] > 5  # not excluded: it looks like a seam
    s = lq.seam_ratio(cut_video, 4, cut_frames=cuts)
    assert s["unshifted_ratio"] == pytest.approx(1.0, abs=0.15)
    assert s["n_unshifted"] == 6  # two borders left out
    # uint8 frames give the same answer
    assert lq.seam_ratio((seam * 255).round().astype(np.uint8), 4)["unshifted_ratio"] > 10


def test_drift_exact_values():
    assert lq.drift(np.arange(20)) == 17.0  # 3 values each end: mean 1 vs mean 18
    assert lq.drift([5.0] * 7) == 0.0
    assert lq.drift([0, 0, 1, 1, 1, 1, 1, 1, 1, 1], fraction=0.2) == 1.0
    assert lq.drift([1, np.nan, 3, 4, 5, 6, 7, 8, 9, 10]) == 8.5  # k = 2: mean(1) vs mean(9, 10); NaN ignored
    assert lq.drift([2.0, 4.0], fraction=0.15) == 2.0  # at least one value each end
    assert math.isnan(lq.drift([np.nan, 1, 1, np.nan]))
    with pytest.raises(ValueError):
        lq.drift([])


def test_sharpness_ranks_blur_below_sharp():
    clip = world.sample_clip(world.HELDOUT_SEED_START + 3, 4, 64, 64, 8.0)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in clip.frames])
    sharp, soft = lq.sharpness(clip.frames), lq.sharpness(blurred)
    assert sharp.shape == (4,) and (soft < 0.5 * sharp).all()
    assert lq.sharpness(np.full((2, 16, 16, 3), 0.5))[0] == 0.0


def _recolour(caption: str, colour: str) -> str:
    for c in world.OBJECT_COLORS:
        caption = caption.replace(f" {c} ", f" {colour} ")
    return caption


def test_adherence_on_a_two_shot_world_clip():
    clip = world.sample_clip(world.HELDOUT_SEED_START + 3, 33, 64, 64, 8.0, num_shots=2)
    assert ";" in clip.caption
    good = lq.adherence_per_frame(clip.frames, clip.caption, 8.0)
    assert good.shape == (33,) and np.nanmean(good) > 0.8
    # the shots' object colours are purple then yellow: ask for white (no object of that colour) in both
    shots = [s.split(": ", 1) for s in clip.caption.split("; ")]
    wrong = "; ".join(f"{t}: {_recolour(' ' + text, 'white').strip()}" for t, text in shots)
    assert [o["color"] for t in wrong.split("; ") for o in world.parse_caption(t)] == ["white", "white"]
    assert np.nanmean(lq.adherence_per_frame(clip.frames, wrong, 8.0)) < 0.2
    # swapping the two shots' prompts: each span is judged by the other shot's colour
    swapped = format_shots([Segment(0, 2, shots[1][1]), Segment(2, 4.125, shots[0][1])])
    assert np.nanmean(lq.adherence_per_frame(clip.frames, swapped, 8.0)) < 0.2


def test_frame_shots_and_spans():
    prompt = "0-4 s: a red circle; 4-8 s: a blue star"
    assert lq.frame_shots(prompt, 65, 8.0).tolist() == [0] * 32 + [1] * 33
    assert lq.shot_spans(prompt, 65, 8.0) == [(0, 32, "a red circle"), (32, 65, "a blue star")]
    assert lq.num_shots(60, 4) == 15 and lq.num_shots(1, 4) == 1


def test_bench_end_to_end_on_tiny_models(tiny_pipe, tmp_path):
    md_path, json_path = tmp_path / "docs" / "lvq.md", tmp_path / "lvq.json"
    argv = ["--seconds", "1", "2", "--steps", "1", "--videos", "1", "--shot-seconds", "1",
            "--out", str(md_path), "--json", str(json_path)]
    out = lq.main(argv, pipe=tiny_pipe, log=lambda *_: None)
    summary = out["summary"]
    assert sorted(summary) == [1.0, 2.0] and summary[2.0]["shots"] == 2 and summary[1.0]["frames"] == 9
    for entry in summary.values():
        for src in ("ours", "baseline", "vae", "real"):
            assert 0 <= entry["accuracy"][src]["color"]["accuracy"] <= 1
    assert summary[2.0]["accuracy"]["real"]["shots"] == 2
    assert summary[1.0]["seams"]["ours"]["n_shifted"] == 1  # 3 latent frames: the shifted border k = 2
    assert summary[2.0]["seams"]["ours"]["n_shifted"] == 0  # its one border is next to the cut at 1 s
    md = md_path.read_text()
    assert md.startswith("# Long-video quality")
    assert "python bench/long_video_quality.py --seconds 1 2 --steps 1" in md and "sampling seed" in md
    for heading in ("## 1. Per-shot prompts", "## 2. Seams", "## 3. Drift"):
        assert heading in md
    for label in ("SemanticGen", "baseline (single stage)", "real through the VAE", "real (world render)"):
        assert f"| 2 s | 2 | {label} | 2 |" in md  # table 1: a row per source, 2 shots judged
    assert "baseline (single stage)" in md and "No baseline columns" not in md
    assert "largest time offset" in md
    data = json.loads(json_path.read_text())
    assert data["rows"][1]["prompt"].startswith("0-1 s: ") and data["has_baseline"] is True
    assert not list(tmp_path.rglob("*.tmp"))


def test_bench_without_baseline_says_so(tiny_pipe, tmp_path):
    import dataclasses

    pipe = dataclasses.replace(tiny_pipe, baseline=None)
    md_path = tmp_path / "lvq.md"
    out = lq.main(["--seconds", "1", "--steps", "1", "--videos", "1", "--out", str(md_path)], pipe=pipe,
                  log=lambda *_: None)
    assert "baseline" not in out["summary"][1.0]["accuracy"]
    md = md_path.read_text()
    assert "No baseline columns" in md and "baseline (single stage)" not in md
