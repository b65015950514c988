"""The semantic encoder's training recipe: labels that match the pixels, a loss that falls, resume, export."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from semanticgen_world.world import (BACKGROUND_COLORS, OBJECT_COLORS, PALETTE, SHAPES, BackgroundSpec, ObjectSpec,
                                         ShotSpec, classify_pixels, label_maps, render_clip, retexture_shot,
                                         sample_clip, sample_clip_shots)
from semanticgen_world.recipes import train_semantic_encoder as rec

H = W = 64
NAMES = list(PALETTE)


def test_label_maps_agree_with_the_rendered_frames():
    for seed in range(6):
        clip = sample_clip(seed, 33, num_shots=1 + seed % 2)
        assert sample_clip_shots(seed, 33, 8.0, 1 + seed % 2) == clip.shots
        assert np.array_equal(render_clip(clip.shots, H, W), clip.frames)
        frames = [0, 7, 16, 32]
        assert np.array_equal(render_clip(clip.shots, H, W, frames), clip.frames[frames])
        maps = label_maps(clip.shots, H, W, frames)
        pixel_colour = classify_pixels(clip.frames[frames])
        obj = maps["color"] >= 0
        # Object pixels have the object's colour, the rest the backdrop's (anti-aliased edges aside).
        want = np.where(obj, np.array([NAMES.index(c) for c in OBJECT_COLORS])[np.maximum(maps["color"], 0)],
                        np.array([NAMES.index(c) for c in BACKGROUND_COLORS])[maps["background"]])
        assert (pixel_colour == want).mean() > 0.985, seed
        assert (pixel_colour[obj] == want[obj]).mean() > 0.97, seed
        for n, f in enumerate(frames):
            shot = next(s for s in clip.shots if s.start_frame <= f < s.start_frame + s.num_frames)
            assert maps["shot"][n] == clip.shots.index(shot)
            assert set(np.unique(maps["object"][n])) <= {-1, *range(len(shot.objects))}
            for k, o in enumerate(shot.objects):
                sel = maps["object"][n] == k
                assert set(np.unique(maps["shape"][n][sel])) <= {SHAPES.index(o.shape)}


def test_token_labels_of_a_hand_made_shot():
    # A 20-pixel red square moving right by 0.1 frame/s over a plain blue backdrop, centred in cell (1, 1).
    obj = ObjectSpec("square", "red", "left_to_right", 20 / 64, start=(24 / 64, 24 / 64), velocity=(0.4, 0.0))
    shot = ShotSpec(0, 33, BackgroundSpec("plain", "blue"), [obj], fps=8.0)
    lab = rec.token_labels([shot], [(0, 2), (32, 32)], H, W, 16)
    assert lab["color"][0, 1, 1] == OBJECT_COLORS.index("red") and lab["shape"][0, 1, 1] == SHAPES.index("square")
    assert lab["color"][0, 3, 3] == rec.NO_COLOR and lab["shape"][0, 3, 3] == rec.NO_SHAPE
    assert (lab["background"] == BACKGROUND_COLORS.index("blue")).all() and (lab["bg_kind"] == 0).all()
    dx, dy, ds = lab["motion"][0, 1, 1]
    assert dx == pytest.approx(0.4 * 2 / 8, abs=1e-6) and dy == 0 and ds == 0  # 0.25 s between the frames
    gx, gy, size = lab["geometry"][0, 1, 1]
    assert gx == pytest.approx((24 / 64 + 0.05) - 24 / 64, abs=1e-6) and gy == pytest.approx(0, abs=1e-6)
    assert size == pytest.approx(20 / 64, abs=1e-6)
    assert lab["object_mask"][0, 1, 1] == 1 and lab["object_mask"][0, 3, 3] == 0
    # Silhouette: the square (pixels ~15..32 in frame 0, 6 pixels further right in frame 2) fills cell (1, 1)
    # but its left column in frame 0 only, reaches the left of cell (1, 2) in frame 2 only, and touches cell
    # (2, 1) by one anti-aliased row.
    inside = lab["silhouette"][0, 1, 1].reshape(4, 4)
    assert inside[:, 2:].min() == 1 and (inside[:, 0] == 0.5).all() and lab["silhouette"][0, 3, 3].max() == 0
    right = lab["silhouette"][0, 1, 2].reshape(4, 4)
    assert (right[:, 0] >= 0.5).all() and (right[:, 0] < 1).all() and right[:, 2:].max() == 0
    below = lab["silhouette"][0, 2, 1].reshape(4, 4)
    assert 0 < below[0].max() <= 0.25 and below[1:].max() == 0
    # The padded last patch holds one frame twice: the encoder sees no motion there, nor do the labels.
    assert np.abs(lab["motion"][1]).max() == 0
    assert rec.direction_class(np.array([0.05, -0.05, 0.0, 0.01, 0.001]),
                               np.array([0.0, 0.02, -0.03, 0.04, 0.0])).tolist() == [1, 2, 4, 3, 0]


def test_retexture_keeps_everything_a_caption_names():
    rng = np.random.default_rng(0)
    for shot in sample_clip_shots(3, 33, 8.0, 2):
        alt = retexture_shot(shot, rng)
        assert alt.caption == shot.caption and alt.background.kind == shot.background.kind
        assert [(o.start, o.velocity, o.size) for o in alt.objects] == [(o.start, o.velocity, o.size) for o in shot.objects]
        alone = lambda s: [replace(s, start_frame=0)]  # noqa: E731
        assert np.array_equal(label_maps(alone(alt), H, W)["object"], label_maps(alone(shot), H, W)["object"])
        assert not np.array_equal(render_clip(alone(alt), H, W), render_clip(alone(shot), H, W))


def test_pixel_batch_matches_preprocess_and_patches_encode_like_the_clip():
    enc = rec.new_encoder(0)
    patches = rec.plan_patches(enc)
    assert patches == [(0, 2), (4, 6), (8, 10), (12, 14), (16, 18), (20, 22), (24, 26), (28, 30), (32, 32)]
    clip = sample_clip(5, 33)
    frames = clip.frames[np.array(patches)]  # [9, 2, H, W, 3]
    pv, grid = rec.pixel_batch(enc, frames)
    ref = torch.cat([enc.preprocess(torch.from_numpy(f).float() / 255, enc.sample_fps)[0] for f in frames])
    torch.testing.assert_close(pv, ref, atol=1e-6, rtol=0)
    whole = enc.encode(torch.from_numpy(clip.frames).float() / 255, clip.fps)
    with torch.no_grad(), rec.batched_attention(enc):
        per_patch = enc.features(pv, grid)[:, 0]
    torch.testing.assert_close(per_patch, whole, atol=1e-5, rtol=1e-5)
    assert enc.model.config._attn_implementation == "sdpa"  # restored


def test_a_few_steps_reduce_the_loss():
    enc = rec.new_encoder(0)
    enc.model.requires_grad_(True)
    heads = rec.Heads(enc.feature_dim)
    opt = torch.optim.AdamW(list(enc.model.parameters()) + list(heads.parameters()), lr=3e-3)
    batch = rec.training_batch(np.random.default_rng(1), enc, clips=2, per_clip=3)
    pixels = rec.pixel_batch(enc, np.concatenate([batch.frames_a, batch.frames_b]))
    weights = {"invariance": 10.0}
    history = []
    with rec.batched_attention(enc):
        for _ in range(12):
            terms = rec.losses(enc, heads, batch, pixels, weights)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            history.append({k: float(v.detach()) for k, v in terms.items()})
    assert history[-1]["loss"] < 0.7 * history[0]["loss"], [h["loss"] for h in history]
    assert history[-1]["color"] < history[0]["color"] and history[-1]["background"] < history[0]["background"]
    assert all(0 <= h["invariance"] < 1 for h in history)
    # Scaling the features does not change the invariance term (no shrinking to cheat).
    with torch.no_grad():
        feats = enc.features(*pixels)[:, 0]
        p = len(batch.frames_a)
        a = (feats[:p] - feats[p:]).square().sum(-1).mean() / (2 * feats.reshape(-1, 64).var(0).sum())
        f2 = 0.01 * feats
        b = (f2[:p] - f2[p:]).square().sum(-1).mean() / (2 * f2.reshape(-1, 64).var(0).sum())
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def _run(out, *extra):
    return rec.main(["--out", str(out), "--batch", "2", "--patches-per-clip", "2", "--eval-clips", "2",
                     "--log-every", "1", "--eval-every", "2", "--no-signals", *extra])


def test_resume_continues_and_export_loads(tmp_path, capsys):
    from semanticgen_core.model_files import load_model

    assert _run(tmp_path, "--steps", "2", "--probe-clips", "0") == 0
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["step"] == 2 and set(state) >= {"encoder", "heads", "optimizer", "rng", "elapsed"}
    capsys.readouterr()
    assert _run(tmp_path, "--steps", "3", "--probe-clips", "3") == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "at step 2" in out and "step 3 |" in out and "step 1 |" not in out
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "color" in r] == [1, 2, 3]
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 3

    loaded = load_model(tmp_path / "semantic_encoder.safetensors", "semantic_encoder")
    enc = loaded.modules["encoder"]
    assert loaded.info["steps"] == 3 and loaded.info["objective"] == rec.OBJECTIVE
    assert set(loaded.info["heldout_heads"]) >= {"colour", "shape", "motion_dir", "texture_ratio"}
    assert "colour" in loaded.info["heldout_probes"] and loaded.preset.name == "embedded"
    assert enc.sample_fps == 4.0 and enc.model.config._attn_implementation == "sdpa"
    clip = sample_clip(1_000_001, 33)
    feats = enc.encode(torch.from_numpy(clip.frames).float() / 255, clip.fps)
    assert feats.shape == (9, 4, 4, 64) and torch.isfinite(feats).all()
    # The exported tower is the trained one, not a fresh initialisation.
    assert not torch.allclose(feats, rec.new_encoder(0).encode(torch.from_numpy(clip.frames).float() / 255, 8.0))
