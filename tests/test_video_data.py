"""The video dataset layer (semanticgen_core.video_data) on real files written by OpenCV, and the world as a
data source and as a folder of videos (semanticgen_world.world_source)."""

import json

import cv2
import numpy as np
import pytest

from semanticgen_core.errors import SemanticGenError
from semanticgen_core.video_data import (
    Clip, ClipSpec, VideoFolder, VideoItem, VideoReadError, _resample, list_videos, read_clips,
)
from semanticgen_world import world
from semanticgen_world.world_source import WorldSource, write_videos
from semanticgen_world.write_videos import main as write_videos_main

SPEC = ClipSpec(num_frames=9, fps=8, height=32, width=48)


def write_video(path, frames_bgr, fps):
    h, w = frames_bgr[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames_bgr:
        writer.write(f)
    writer.release()
    return path


def coded_frames(n, height=100, width=180, bars=12):
    """Frame i shows its index in two grey halves (left i // 8, right i % 8, 24 levels a step: survives mp4
    compression), with blue bars at the far left and right that a centred crop of a wider frame removes."""
    frames = []
    for i in range(n):
        f = np.empty((height, width, 3), np.uint8)
        f[:, : width // 2] = 40 + 24 * (i // 8)
        f[:, width // 2:] = 40 + 24 * (i % 8)
        f[:, :bars] = f[:, width - bars:] = (255, 0, 0)  # BGR blue
        frames.append(f)
    return frames


def decoded_index(frames):
    """The source frame index each output frame shows, read back from the two halves (SPEC's 48 px width)."""
    left = frames[:, 8:24, 4:18].mean(axis=(1, 2, 3))
    right = frames[:, 8:24, 30:44].mean(axis=(1, 2, 3))
    return [int(i) for i in np.round((left - 40) / 24) * 8 + np.round((right - 40) / 24)]


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """24 fps, 3 s, 100x180 (wider than SPEC's 3:2)."""
    path = tmp_path_factory.mktemp("coded") / "coded.mp4"
    return write_video(path, coded_frames(72), 24)


# --------------------------------------------------------------------------- ClipSpec / VideoItem


def test_clip_spec_validation_names_the_nearest_valid_values():
    with pytest.raises(SemanticGenError, match=r"num_frames must be 4k\+1.*got 10.*9 or 13"):
        ClipSpec(10, 8, 32, 48)
    with pytest.raises(SemanticGenError, match=r"height must be a positive multiple of 16.*got 100.*96 or 112"):
        ClipSpec(9, 8, 100, 48)
    with pytest.raises(SemanticGenError, match=r"width .* got 8.*nearest valid: 16"):
        ClipSpec(9, 8, 32, 8)
    with pytest.raises(SemanticGenError, match="fps must be a positive number"):
        ClipSpec(9, 0, 32, 48)
    assert ClipSpec(33, 16, 480, 832).seconds == pytest.approx(33 / 16)


def test_video_item_name_and_range_checks(tmp_path):
    assert VideoItem(tmp_path / "clips" / "cat.mp4", "a cat", root=tmp_path).name == "clips/cat.mp4"
    assert VideoItem(tmp_path / "clips" / "cat.mp4", "a cat", 2, 6.5, root=tmp_path).name == "clips/cat.mp4[2.0-6.5s]"
    assert VideoItem("cat.mp4", "a cat", start=1.25).name == "cat.mp4[1.25-end]"
    with pytest.raises(SemanticGenError, match="start 5 >= end 3"):
        VideoItem("cat.mp4", "a cat", 5, 3)
    with pytest.raises(SemanticGenError, match="start 0 >= end 0"):
        VideoItem("cat.mp4", "a cat", end=0)


# --------------------------------------------------------------------------- decoding


def test_read_clips_resamples_by_time_crops_the_centre(coded):
    clips = read_clips(VideoItem(coded, "coded"), SPEC)
    assert len(clips) == 2  # 3 s at 8 fps = 24 frames: two clips of 9, 6 left over
    for c in clips:
        assert c.frames.shape == (9, 32, 48, 3) and c.frames.dtype == np.uint8 and c.caption == "coded"
    # output frame k is at k/8 s: source frame 3k of a 24 fps video
    assert decoded_index(clips[0].frames) == list(range(0, 27, 3))
    assert decoded_index(clips[1].frames) == list(range(27, 54, 3))
    assert [c.source for c in clips] == [f"{coded}@0.00s", f"{coded}@1.12s"]
    # centred crop: the blue bars (12 of 180 px a side) are cut off, and the grey halves meet in the middle
    f = clips[0].frames[-1].astype(int)  # index 24: left 40 + 3 * 24, right 40
    edges = np.concatenate([f[:, :2], f[:, -2:]], axis=1)
    assert np.abs(edges[..., 2] - edges[..., 0]).max() < 12
    assert f[:, 21].mean() == pytest.approx(112, abs=6) and f[:, 26].mean() == pytest.approx(40, abs=6)


def test_read_clips_upsamples_a_low_frame_rate_and_outputs_rgb(tmp_path):
    # 4 fps source: output k at k/8 s is source frame k // 2 (a tie goes to the earlier frame)
    path = write_video(tmp_path / "slow.mp4", coded_frames(12, 64, 96, bars=0), 4)
    clips = read_clips(VideoItem(path, "slow"), SPEC)
    assert len(clips) == 2 and decoded_index(clips[0].frames) == [k // 2 for k in range(9)]
    assert decoded_index(clips[1].frames) == [k // 2 for k in range(9, 18)]

    red = [np.dstack([np.zeros((64, 64)), np.zeros((64, 64)), np.full((64, 64), 255)]).astype(np.uint8)] * 9
    clip = read_clips(VideoItem(write_video(tmp_path / "red.mp4", red, 8), "red"), SPEC)[0]
    r, g, b = clip.frames.reshape(-1, 3).mean(axis=0)
    assert r > 220 and g < 30 and b < 30


class QuirkyCapture:
    """A real cv2.VideoCapture that reports no frame rate (as some WebM/MKV files do) and/or cannot seek."""

    fps = None
    seek = True

    def __init__(self, path):
        self._cap = REAL_CAPTURE(path)

    def get(self, prop):
        return self.fps if prop == cv2.CAP_PROP_FPS and self.fps is not None else self._cap.get(prop)

    def set(self, prop, value):
        return self.seek and self._cap.set(prop, value)

    def __getattr__(self, name):
        return getattr(self._cap, name)


REAL_CAPTURE = cv2.VideoCapture


@pytest.mark.parametrize("fps, seek", [(0.0, True), (1000.0, True), (None, False)])
def test_fallbacks_without_frame_rate_or_seeking_give_the_same_frames(coded, monkeypatch, fps, seek):
    quirky = type("Quirky", (QuirkyCapture,), {"fps": fps, "seek": seek})
    monkeypatch.setattr(cv2, "VideoCapture", quirky)
    whole = read_clips(VideoItem(coded, "x"), SPEC)
    assert [decoded_index(c.frames) for c in whole] == [list(range(0, 27, 3)), list(range(27, 54, 3))]
    [part] = read_clips(VideoItem(coded, "x", 1.0, 2.5), SPEC)  # by timestamps, or decoded from the start
    assert decoded_index(part.frames) == list(range(24, 51, 3))


def test_resample_nearest_frame_with_irregular_timestamps_stops_past_end():
    read = []

    def frames():  # variable frame rate: 10 frames, timestamps not a multiple of anything
        for i, t in enumerate([0.0, 0.1, 0.15, 0.4, 0.45, 0.5, 0.8, 0.9, 1.0, 1.3]):
            read.append(i)
            yield t, i

    # targets 0.3, 0.55, 0.8 (step 0.25, end 0.9): nearest 0.4 (index 3), 0.5 (5), 0.8 (6)
    assert list(_resample(frames(), 0.3, 0.9, 4.0)) == [3, 5, 6]
    assert max(read) <= 7  # stopped reading once the next target (1.05) was past end
    assert list(_resample(frames(), 0.3, 0.8, 4.0)) == [3, 5]  # the end is excluded
    # 0.25 is nearer 0.15 (index 2) than 0.4; 1.25 is before the last frame (1.3 s), 1.5 is not
    assert list(_resample(frames(), 0.0, None, 4.0)) == [0, 2, 5, 6, 8, 9]


def test_manifest_ranges_are_honoured(coded, tmp_path):
    (tmp_path / "sub").mkdir()
    link = tmp_path / "sub" / "coded.mp4"
    link.write_bytes(coded.read_bytes())
    (tmp_path / "m.csv").write_text('path,caption,start,end\nsub/coded.mp4,"a range, quoted",1.0,2.5\n'
                                    "sub/coded.mp4,whole,,\n")
    items, skipped = list_videos(tmp_path / "m.csv")
    assert skipped == [] and [i.name for i in items] == ["sub/coded.mp4[1.0-2.5s]", "sub/coded.mp4"]
    assert items[0].caption == "a range, quoted" and items[0].path == link
    clips = read_clips(items[0], SPEC)
    assert len(clips) == 1  # 1.0..2.5 s: 12 output frames, one clip
    assert decoded_index(clips[0].frames) == list(range(24, 51, 3))  # seeked to 1.0 s = source frame 24
    assert clips[0].source == f"{link.relative_to(tmp_path).as_posix()}@1.00s"

    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "sub/coded.mp4", "caption": "late", "start": 1.75}) + "\n"
                                      + json.dumps({"path": str(link), "caption": "early", "end": 1.2}) + "\n")
    late, early = list_videos(tmp_path / "m.jsonl")[0]
    assert decoded_index(read_clips(late, SPEC)[0].frames) == list(range(42, 69, 3))
    assert decoded_index(read_clips(early, SPEC)[0].frames) == list(range(0, 27, 3))
    with pytest.raises(VideoReadError, match=r"coded.mp4\[0.0-1.0s\]: too short for one clip: the range lasts "
                                             r"about 1.00 s \(8 frames at 8 fps\), one clip of 9 frames needs 1.12 s"):
        read_clips(VideoItem(link, "x", end=1.0), SPEC)
    with pytest.raises(VideoReadError, match=r"no frames from 5.0 s on"):
        read_clips(VideoItem(link, "x", start=5.0), SPEC)


# --------------------------------------------------------------------------- listing


def test_folder_listing_skips_and_bad_files(coded, tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    for name in ("a", "sub/b", "c", "f"):
        (data / f"{name}.mp4").write_bytes(coded.read_bytes())
    (data / "a.txt").write_text("first video\n")
    (data / "sub" / "b.txt").write_text("second video")
    (data / "f.txt").write_text("  \n")
    (data / "d.mp4").write_bytes(np.random.default_rng(0).bytes(4000))  # corrupt
    (data / "d.txt").write_text("corrupt")
    write_video(data / "e.MP4", coded_frames(12), 24)  # 0.5 s; upper-case extension still listed
    (data / "e.txt").write_text("short")
    (data / ".partial.mp4").write_bytes(b"")  # hidden: an interrupted write, never listed
    (data / "notes.txt").write_text("not a caption")

    folder = VideoFolder(data, SPEC)
    assert [i.name for i in folder.items] == ["a.mp4", "d.mp4", "e.MP4", "sub/b.mp4"]
    assert [i.caption for i in folder.items] == ["first video", "corrupt", "short", "second video"]
    assert folder.skipped == ["c.mp4: no caption (expected c.txt beside it)", "f.mp4: empty caption (f.txt)"]
    assert folder.describe() == {"kind": "videos", "path": str(data), "items": 4}
    assert len(folder.clips(0)) == 2 and decoded_index(folder.clips(3)[1].frames) == list(range(27, 54, 3))
    with pytest.raises(VideoReadError, match=r"^d.mp4: cannot be opened as a video"):
        folder.clips(1)
    with pytest.raises(VideoReadError, match=r"^e.MP4: too short for one clip: the video lasts about 0.50 s "
                                             r"\(4 frames at 8 fps\), one clip of 9 frames needs 1.12 s"):
        folder.clips(2)


def test_listing_errors_are_clear(coded, tmp_path):
    with pytest.raises(SemanticGenError, match=r"nowhere does not exist: give a folder"):
        list_videos(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(SemanticGenError, match=r"no video files in folder .*empty \(looked recursively for "
                                               r"\.mp4, \.webm, \.mov, \.mkv\); each video needs its caption"):
        list_videos(tmp_path / "empty")
    (tmp_path / "nocaps").mkdir()
    (tmp_path / "nocaps" / "x.mp4").write_bytes(coded.read_bytes())
    with pytest.raises(SemanticGenError, match=r"no usable video in .*nocaps: all 1 were skipped:\n"
                                               r"  x.mp4: no caption"):
        list_videos(tmp_path / "nocaps")

    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"path": "x.mp4", "caption": "ok"}\n{"path": "y.mp4", caption: no}\n')
    with pytest.raises(SemanticGenError, match=r"bad.jsonl: line 2 is not JSON"):
        list_videos(bad_json)
    no_caption = tmp_path / "bad.csv"
    no_caption.write_text("path,text\nx.mp4,hello\n")
    with pytest.raises(SemanticGenError, match=r"bad.csv: the CSV header \(line 1\) must name the columns "
                                               r"path,caption.*found path,text \(missing: caption\)"):
        list_videos(no_caption)
    header_only = tmp_path / "header.csv"
    header_only.write_text("path,caption\n\n")
    with pytest.raises(SemanticGenError, match=r"header.csv has no entries"):
        list_videos(header_only)
    with pytest.raises(SemanticGenError, match=r"is a file but not a manifest"):
        list_videos(coded)

    (tmp_path / "v.mp4").write_bytes(coded.read_bytes())
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,caption,start,end\nv.mp4,ok,,\ngone.mp4,missing,,\nv.mp4,,,\nv.mp4,backwards,5,3\n"
                        ",no path,,\nv.mp4,words,soon,\n")
    items, skipped = list_videos(manifest)
    assert [i.caption for i in items] == ["ok"]
    assert skipped == ["line 3: gone.mp4: file not found", "line 4: v.mp4: empty caption",
                       "line 5: v.mp4: start 5 >= end 3", "line 6: no path",
                       "line 7: v.mp4: start/end must be numbers of seconds, got 'soon'/''"]


# --------------------------------------------------------------------------- the world


def test_world_source_gives_world_clips():
    spec = ClipSpec(9, 8, 32, 32)
    source = WorldSource(2, spec, first_seed=5)
    assert source.items == [5, 6] and source.skipped == [] and len(source) == 2
    assert source.describe() == {"kind": "world", "first_seed": 5, "clips": 2, "captions": 1}
    [clip] = source.clips(1)
    expected = world.sample_clip(6, 9, 32, 32, 8)
    assert isinstance(clip, Clip) and clip.source == "world seed 6" and clip.caption == expected.caption
    assert clip.more_captions == () and len(WorldSource(1, spec, 5, captions=3).clips(0)[0].captions) == 3
    np.testing.assert_array_equal(clip.frames, expected.frames)
    with pytest.raises(SemanticGenError, match=r"reach into the held-out seeds .*use at most 2 clips"):
        WorldSource(3, spec, first_seed=world.HELDOUT_SEED_START - 2)


def test_world_source_can_keep_the_scenes_of_two_objects():
    spec = ClipSpec(9, 8, 32, 32)
    source = WorldSource(3, spec, first_seed=5, objects=2)
    counts = {seed: len(world.sample_clip_shots(seed, 9, 8)[0].objects) for seed in range(5, source.items[-1] + 1)}
    assert source.items == [seed for seed, n in counts.items() if n == 2] and len(source.items) == 3
    assert 1 in counts.values()  # one-object scenes were passed over
    assert source.describe()["objects"] == 2
    assert [len(world.parse_caption(source.clips(i)[0].caption)) for i in range(3)] == [2, 2, 2]
    with pytest.raises(SemanticGenError, match="world scenes have 1 or 2 objects, got 3"):
        WorldSource(1, spec, objects=3)


def test_write_videos_round_trip_and_resume(tmp_path, capsys):
    spec = ClipSpec(9, 8, 32, 32)
    out = tmp_path / "world"
    written = write_videos(out, 2, seconds=9 / 8, fps=8, height=32, width=32, first_seed=3)
    assert sorted(p.name for p in written) == ["world_3.mp4", "world_3.txt", "world_4.mp4", "world_4.txt"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # no temporary left
    folder = VideoFolder(out, spec)
    assert folder.skipped == [] and [i.name for i in folder.items] == ["world_3.mp4", "world_4.mp4"]
    for i, seed in enumerate((3, 4)):
        [clip] = folder.clips(i)
        rendered = world.sample_clip(seed, 9, 32, 32, 8)
        assert clip.caption == rendered.caption
        diff = np.abs(clip.frames.astype(int) - rendered.frames.astype(int)).mean()
        assert diff < 8, diff  # mp4 compression only
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "world_4.txt").unlink()
    assert write_videos(out, 2, seconds=9 / 8, fps=8, height=32, width=32, first_seed=3) == [out / "world_4.txt"]
    assert (out / "world_4.txt").read_text().strip() == world.sample_clip(4, 9, 32, 32, 8).caption
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".mp4"} == {
        k: v for k, v in stamps.items() if k.endswith(".mp4")}
    assert write_videos_main(["--out", str(out), "--clips", "2", "--first-seed", "3", "--seconds", "1.125",
                              "--size", "32"]) == 0
    assert "wrote 0 videos" in capsys.readouterr().out
