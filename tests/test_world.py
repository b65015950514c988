"""The procedural world: determinism, captions that match the pixels, and caption parsing."""

import time

import cv2
import numpy as np
import pytest

from semanticgen_world import world
from semanticgen_world.world import (
    HELDOUT_SEED_START,
    MOTIONS,
    PALETTE,
    BackgroundSpec,
    ObjectSpec,
    ShotSpec,
    classify_rgb,
    color_mask,
    object_track,
    parse_caption,
    render_shot,
    sample_clip,
    sample_shot,
)
from semanticgen_core.errors import SemanticGenError
from semanticgen_core.shots import split_shots

H = W = 64


def _shots(count: int, num_frames: int = 16, seed: int = 0) -> list[ShotSpec]:
    rng = np.random.default_rng(seed)
    return [sample_shot(rng, num_frames) for _ in range(count)]


def _expected(shot: ShotSpec) -> list[dict]:
    bg = {"kind": shot.background.kind, "color": shot.background.color}
    size = lambda s: "small" if s < 0.2 else "large" if s > 0.3 else None  # noqa: E731
    return [
        {"color": o.color, "shape": o.shape, "motion": o.motion, "size": size(o.size), "background": bg}
        for o in shot.objects
    ]


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def test_same_seed_same_bytes_and_different_seeds_differ():
    a, b = sample_clip(7, 12, num_shots=2), sample_clip(7, 12, num_shots=2)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (12, H, W, 3)
    assert a.frames.tobytes() == b.frames.tobytes() and a.caption == b.caption
    c = sample_clip(8, 12, num_shots=2)
    assert c.frames.tobytes() != a.frames.tobytes() and c.caption != a.caption


def test_speeds_are_per_second_and_sizes_per_frame():
    slow, fast = sample_clip(5, 12, fps=8.0), sample_clip(5, 24, fps=16.0)
    assert slow.caption == fast.caption
    np.testing.assert_array_equal(fast.frames[::2], slow.frames)  # same times, same pixels
    small, big = sample_clip(11, 6, 64, 64), sample_clip(11, 6, 128, 128)
    down = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in big.frames])
    assert np.abs(down.astype(int) - small.frames.astype(int)).mean() < 6
    assert sample_clip(3, 1, 40, 96).frames.shape == (1, 40, 96, 3)


def test_object_colour_and_track_match_the_pixels():
    checked = 0
    for shot in _shots(60, num_frames=8):
        frames = render_shot(shot, H, W)
        parsed = parse_caption(shot.caption)
        tracks = [object_track(shot, i, H, W) for i in range(len(shot.objects))]
        for i, info in enumerate(parsed):
            for f, (x, y, size, visible) in enumerate(tracks[i]):
                r = size / 2
                inside = r + 1 <= x <= W - 2 - r and r + 1 <= y <= H - 2 - r
                apart = all(np.hypot(t[f, 0] - x, t[f, 1] - y) > (t[f, 2] + size) / 2 + 2
                            for j, t in enumerate(tracks) if j != i)
                if not (visible and inside and apart):
                    continue
                yy, xx = np.mgrid[:H, :W]
                core = (xx - x) ** 2 + (yy - y) ** 2 <= (0.35 * r) ** 2
                assert classify_rgb(frames[f][core].mean(0)) == info["color"], shot.caption
                mask = color_mask(frames[f], info["color"])
                assert mask[core].mean() > 0.9
                if len(shot.objects) == 1:
                    cx, cy = _centroid(mask)
                    assert abs(cx - x) < 1.0 and abs(cy - y) < 1.0, (shot.caption, f)
                checked += 1
    assert checked > 200


def _by_motion(num_frames: int) -> dict[str, list[ShotSpec]]:
    groups: dict[str, list[ShotSpec]] = {m: [] for m in MOTIONS}
    for shot in _shots(200, num_frames=num_frames, seed=1):
        if len(shot.objects) == 1:
            groups[parse_caption(shot.caption)[0]["motion"]].append(shot)
    assert all(len(g) >= 3 for g in groups.values()), {m: len(g) for m, g in groups.items()}
    return groups


def test_captioned_motion_happens():
    for motion, shots in _by_motion(16).items():
        for shot in shots[:5]:
            color = shot.objects[0].color
            masks = color_mask(render_shot(shot, H, W), color)
            area = masks.sum((1, 2))
            seen = [_centroid(m) for m in masks if m.sum() > 3]
            dx, dy = seen[-1][0] - seen[0][0], seen[-1][1] - seen[0][1]
            track = object_track(shot, 0, H, W)
            msg = f"{shot.caption}: dx={dx:.1f} dy={dy:.1f} area {area[0]}->{area[-1]}"
            if motion in ("left_to_right", "right_to_left", "up", "down", "static", "bouncing"):
                assert np.all(track[:, 3] == 1), msg
            if motion in ("left_to_right", "right_to_left") or motion[:5] in ("enter", "leave"):
                assert np.ptp(track[:, 1]) == 0, msg  # partly hidden shapes shift the pixel centroid
            if motion in ("left_to_right", "enter_left"):
                assert dx > 8, msg
            if motion in ("right_to_left", "enter_right"):
                assert dx < -8, msg
            if motion in ("left_to_right", "right_to_left"):
                assert abs(dy) < 1, msg
            if motion == "leave_left":
                assert dx < -4 and area[0] > 20 and area[-1] == 0, msg
            if motion == "leave_right":
                assert dx > 4 and area[0] > 20 and area[-1] == 0, msg
            if motion.startswith("enter"):
                assert area[0] == 0 and area[-1] > 20 and track[0, 3] == 0 and track[-1, 3] == 1, msg
            if motion == "up":
                assert dy < -8 and abs(dx) < 2, msg
            if motion == "down":
                assert dy > 8 and abs(dx) < 2, msg
            if motion == "growing":
                assert area[-1] > 2 * area[0] and np.all(np.diff(track[:, 2]) > 0), msg
            if motion == "shrinking":
                assert area[-1] < area[0] / 2 and np.all(np.diff(track[:, 2]) < 0), msg
            if motion == "static":
                assert abs(dx) < 0.5 and abs(dy) < 0.5 and np.ptp(area) < 0.05 * area[0] + 3, msg


def test_bouncing_objects_turn_at_the_walls_and_stay_inside():
    for shot in _by_motion(32)["bouncing"][:5]:  # 4 s: long enough to hit a wall
        track = object_track(shot, 0, H, W)
        r = track[:, 2] / 2
        assert np.all(track[:, 0] - r >= -0.6) and np.all(track[:, 0] + r <= W - 0.4)
        assert np.all(track[:, 1] - r >= -0.6) and np.all(track[:, 1] + r <= H - 0.4)
        flips = [np.any(np.diff(np.sign(np.diff(track[:, k]))) != 0) for k in (0, 1)]
        assert any(flips), shot.caption
        masks = color_mask(render_shot(shot, H, W), shot.objects[0].color)
        cx = np.array([_centroid(m)[0] for m in masks])
        assert np.abs(cx - track[:, 0]).max() < 1.0


def test_multishot_cuts_and_captions():
    for seed in range(6):
        clip = sample_clip(seed, 24, num_shots=3)
        diff = np.abs(np.diff(clip.frames.astype(np.int16), axis=0)).mean((1, 2, 3))
        cuts = [s.start_frame for s in clip.shots[1:]]
        assert cuts == [8, 16]
        within = np.delete(diff, [c - 1 for c in cuts])
        assert diff[[c - 1 for c in cuts]].min() > 3 * within.max() + 5, (clip.caption, diff)
        entries = split_shots(clip.caption)  # multi-shot captions use the prompts' shot syntax
        assert [(a, b) for a, b, _ in entries] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
        assert [t for _, _, t in entries] == [s.caption for s in clip.shots]
    uneven = sample_clip(4, 10, fps=8.0, num_shots=3)
    assert [s.num_frames for s in uneven.shots] == [3, 4, 3]
    assert uneven.caption.startswith("0-0.38 s: ") and "; 0.38-0.88 s: " in uneven.caption
    single = sample_clip(4, 10)
    assert split_shots(single.caption) is None


def test_parse_caption_recovers_parameters():
    shots = _shots(400, seed=2)
    assert sum(len(s.objects) == 2 for s in shots) > 50  # two-object captions are exercised
    for shot in shots:
        assert parse_caption(shot.caption) == _expected(shot), shot.caption


def test_parse_caption_reads_free_text():
    (obj,) = parse_caption("a red circle bouncing from left to right over blue stripes")
    assert (obj["color"], obj["shape"], obj["motion"]) == ("red", "circle", "bouncing")
    assert obj["background"] == {"kind": "stripes", "color": "blue"}
    (obj,) = parse_caption("A big Blue ball rising on a gray background.")
    assert (obj["size"], obj["color"], obj["shape"], obj["motion"]) == ("large", "blue", "circle", "up")
    assert obj["background"] == {"kind": "plain", "color": "grey"}
    a, b = parse_caption("a yellow star and a striped cyan square sliding to the right, green clouds")
    assert (a["color"], a["shape"], b["color"], b["shape"]) == ("yellow", "star", "cyan", "square")
    assert a["motion"] == b["motion"] == "left_to_right" and a["background"]["kind"] == "noise"
    assert parse_caption("only blue stripes") == []


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(SemanticGenError, match=r"num_frames must be >= 1, got 0"):
        sample_clip(0, 0)
    with pytest.raises(SemanticGenError, match=r">= 16 pixels, got 8x64"):
        sample_clip(0, 4, height=8)
    with pytest.raises(SemanticGenError, match=r"num_shots must be in 1..num_frames \(4\)"):
        sample_clip(0, 4, num_shots=5)
    with pytest.raises(SemanticGenError, match=r"num_frames must be >= 1"):
        sample_shot(np.random.default_rng(0), 0)
    with pytest.raises(SemanticGenError, match=r"unknown shape 'hexagon'; valid: circle"):
        ObjectSpec("hexagon", "red", "static", 0.2)
    shot = ShotSpec(0, 4, BackgroundSpec(), [ObjectSpec("star", "red", "static", 0.3)])
    with pytest.raises(SemanticGenError, match=r"obj_index 1 is outside 0..0"):
        object_track(shot, 1, H, W)
    with pytest.raises(SemanticGenError, match=r">= 16 pixels"):
        render_shot(shot, 64, 15)


def test_hand_made_shot_renders_what_it_says():
    obj = ObjectSpec("square", "orange", "left_to_right", 0.25, start=(0.3, 0.5), velocity=(0.4, 0.0))
    shot = ShotSpec(0, 9, BackgroundSpec("stripes", "blue", "vertical"), [obj], fps=8.0)
    assert shot.caption == "an orange square moving from left to right over blue stripes"
    frames = render_shot(shot, H, W)
    x0, _ = _centroid(color_mask(frames[0], "orange"))
    x8, _ = _centroid(color_mask(frames[8], "orange"))
    assert x0 == pytest.approx(0.3 * W - 0.5, abs=0.5) and x8 - x0 == pytest.approx(0.4 * W, abs=0.5)
    far = frames[0][:, 40:].reshape(-1, 3)  # away from the square's anti-aliased edge
    assert {classify_rgb(p) for p in far} == {"blue"}
    assert set(PALETTE) >= set(world.OBJECT_COLORS) | set(world.BACKGROUND_COLORS)
    assert HELDOUT_SEED_START == 1_000_000


def test_render_speed():
    shots = _shots(20, num_frames=32, seed=3)
    start = time.perf_counter()
    for shot in shots:
        render_shot(shot, H, W)
    ms = (time.perf_counter() - start) * 1000 / (20 * 32)
    print(f"\nrender speed: {ms:.3f} ms per {H}x{W} frame")
