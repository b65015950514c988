"""Real videos as training data: from a folder of captioned videos (or a manifest) to fixed-geometry clips.

A trainer needs every clip of a dataset at one geometry (a preset's frame count, frame rate and size), while
a user's videos come at any frame rate, size and length, and some of them are broken. This module lists a
dataset (``list_videos``: which videos, with which captions, and which entries are unusable and why),
decodes one video into clips (``read_clips``: resample by time, cover-resize and centre-crop, cut into
consecutive clips) and wraps both as a data source (``VideoFolder``). Decoding is OpenCV's (FFmpeg), frame
by frame, keeping only the frames that are output, so a long source video is never held in memory.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Iterator

import cv2
import numpy as np

from .errors import SemanticGenError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv")

# CAP_PROP_FPS outside this range is a container default or a time base (WebM often reports 1000), not a
# frame rate: the frames' own timestamps are used instead.
_MIN_FPS, _MAX_FPS = 1.0, 500.0
_MAX_LISTED_REASONS = 20  # in the "every video was skipped" error


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class ClipSpec:
    """The geometry every clip of a dataset gets (a preset's)."""

    num_frames: int  # 4k+1: the Wan VAE keeps the first frame and compresses the rest 4x in time
    fps: float
    height: int  # multiples of 16: the VAE's 8x and the transformer's 2x patches
    width: int

    def __post_init__(self) -> None:
        n = self.num_frames
        if not isinstance(n, (int, np.integer)) or n < 1 or (n - 1) % 4:
            lower = max(1, (int(n) - 1) // 4 * 4 + 1) if isinstance(n, (int, np.integer)) and n > 1 else None
            hint = f"; nearest valid: {lower} or {lower + 4}" if lower is not None else "; e.g. 9, 17 or 33"
            raise SemanticGenError(f"ClipSpec: num_frames must be 4k+1 (1, 5, 9, 13, ...; the Wan VAE compresses "
                                   f"time 4x after the first frame), got {n}{hint}")
        if not (isinstance(self.fps, numbers.Real) and math.isfinite(self.fps) and self.fps > 0):
            raise SemanticGenError(f"ClipSpec: fps must be a positive number, got {self.fps}")
        for name in ("height", "width"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 16 or v % 16:
                lower = int(v) // 16 * 16 if isinstance(v, (int, np.integer)) else 0
                hint = f"{lower} or {lower + 16}" if lower >= 16 else "16"
                raise SemanticGenError(f"ClipSpec: {name} must be a positive multiple of 16 pixels, got {v}; "
                                       f"nearest valid: {hint}")

    @property
    def seconds(self) -> float:
        """How long one clip lasts."""
        return self.num_frames / self.fps


def _fmt_seconds(x: float) -> str:
    s = f"{x:.3f}".rstrip("0")
    return s + "0" if s.endswith(".") else s


def _range_problem(start: float | None, end: float | None) -> str | None:
    """Why a time range cannot be used, or None."""
    for what, v in (("start", start), ("end", end)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            return f"{what} {v} must be a number of seconds >= 0"
    if end is not None and (start or 0.0) >= end:
        return f"start {start or 0:g} >= end {end:g}"
    return None


@dataclass(frozen=True)
class VideoItem:
    """One entry of a dataset: a file, its caption (and other wordings of it), an optional time range in seconds."""

    path: Path
    caption: str
    start: float | None = None
    end: float | None = None
    root: Path | None = field(default=None, compare=False, repr=False)  # the dataset's folder, for ``name``
    more_captions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        problem = _range_problem(self.start, self.end)
        if problem:
            raise SemanticGenError(f"{self.path}: bad time range: {problem}")

    @property
    def name(self) -> str:
        """For messages: the path relative to the dataset (as given when there is none), and the range."""
        try:
            name = self.path.relative_to(self.root).as_posix() if self.root is not None else str(self.path)
        except ValueError:
            name = str(self.path)
        if self.start is None and self.end is None:
            return name
        end = f"{_fmt_seconds(self.end)}s" if self.end is not None else "end"
        return f"{name}[{_fmt_seconds(self.start or 0.0)}-{end}]"


@dataclass
class Clip:
    """What a data source yields."""

    frames: np.ndarray  # uint8 [T, H, W, 3] RGB at the dataset's ClipSpec
    caption: str
    source: str  # where it came from, for messages: "cat.mp4@4.00s", "world seed 7"
    more_captions: tuple[str, ...] = ()  # other wordings of the same clip: training draws one per sample
    object_mask: np.ndarray | None = None  # bool [T, H, W]: the pixels on an object, where the source knows them

    @property
    def captions(self) -> tuple[str, ...]:
        return (self.caption, *self.more_captions)


class VideoReadError(SemanticGenError):
    """A video file that cannot be used (corrupt, empty, too short); the message names the file and why."""


# --------------------------------------------------------------------------- listing


def list_videos(path: str | os.PathLike) -> tuple[list[VideoItem], list[str]]:
    """A folder (every video file with a same-name .txt caption beside it, recursively, sorted by relative
    path), or a manifest file (.csv with header columns path,caption[,start,end]; or .jsonl with keys path,
    caption, optional start/end, where caption may also be a list of captions of the same video, of which
    training draws one per sample; relative paths are relative to the manifest's folder).

    Returns ``(items, skipped)``: ``skipped`` has one line per unusable entry, saying why. Raises
    ``SemanticGenError`` when the path is missing, a folder has no videos, a manifest cannot be parsed or has
    no entries, or every video was skipped."""
    path = Path(path).expanduser()
    if not path.exists():
        raise SemanticGenError(f"video dataset {path} does not exist: give a folder of videos with .txt captions, "
                               f"or a .csv/.jsonl manifest")
    if path.is_dir():
        items, skipped = _list_folder(path)
    elif path.suffix.lower() in (".csv", ".jsonl"):
        is_csv = path.suffix.lower() == ".csv"
        rows = _read_csv(path) if is_csv else _read_jsonl(path)
        if not rows:
            form = "path,caption[,start,end] rows" if is_csv else "JSON objects with path and caption"
            raise SemanticGenError(f"manifest {path} has no entries: add one line per video ({form})")
        items, skipped = _manifest_items(path, rows)
    else:
        raise SemanticGenError(f"video dataset {path} is a file but not a manifest: give a folder of videos with "
                               f".txt captions, or a .csv or .jsonl manifest")
    if not items:
        reasons = skipped[:_MAX_LISTED_REASONS]
        more = len(skipped) - len(reasons)
        raise SemanticGenError(f"no usable video in {path}: all {len(skipped)} were skipped:\n  "
                               + "\n  ".join(reasons) + (f"\n  ... and {more} more" if more > 0 else ""))
    return items, skipped


def _list_folder(root: Path) -> tuple[list[VideoItem], list[str]]:
    videos = sorted(
        (p for p in root.rglob("*")
         if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
         # hidden files are partial writes (".x.mp4.tmp"), macOS "._x.mp4" metadata, or tool caches
         and not any(part.startswith(".") for part in p.relative_to(root).parts)),
        key=lambda p: p.relative_to(root).as_posix())
    if not videos:
        raise SemanticGenError(
            f"no video files in folder {root} (looked recursively for {', '.join(VIDEO_EXTENSIONS)}); each video "
            f"needs its caption in a .txt file of the same name beside it (cat.mp4 + cat.txt)")
    items, skipped = [], []
    for video in videos:
        name = video.relative_to(root).as_posix()
        caption, problem = _read_caption(video.with_suffix(".txt"))
        if problem:
            skipped.append(f"{name}: {problem}")
        else:
            items.append(VideoItem(video, caption, root=root))
    return items, skipped


def _read_caption(txt: Path) -> tuple[str, str | None]:
    """(caption, None) or ("", why it is unusable)."""
    if not txt.is_file():
        return "", f"no caption (expected {txt.name} beside it)"
    try:
        caption = txt.read_text(encoding="utf-8-sig").strip()
    except UnicodeDecodeError:
        return "", f"caption {txt.name} is not UTF-8 text"
    except OSError as e:
        return "", f"caption {txt.name} cannot be read ({e.strerror or e})"
    return (caption, None) if caption else ("", f"empty caption ({txt.name})")


_COLUMNS = ("path", "caption", "start", "end")


def _read_csv(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for each row; errors name the line or the missing columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                return []
            columns = [c.strip().lower() for c in header]
            missing = [c for c in ("path", "caption") if c not in columns]
            if missing:
                raise SemanticGenError(
                    f"manifest {path}: the CSV header (line 1) must name the columns path,caption[,start,end]; "
                    f"found {','.join(columns) or 'nothing'} (missing: {', '.join(missing)})")
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank line
                if len(cells) > len(columns):
                    raise SemanticGenError(f"manifest {path}: line {reader.line_num} has {len(cells)} fields but "
                                           f"the header has {len(columns)} (quote captions that contain commas)")
                rows.append((reader.line_num, dict(zip(columns, cells))))
            return rows
    except csv.Error as e:
        raise SemanticGenError(f"manifest {path}: not valid CSV near line {reader.line_num}: {e}") from e
    except UnicodeDecodeError as e:
        raise SemanticGenError(f"manifest {path} is not UTF-8 text: {e}") from e


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise SemanticGenError(f"manifest {path} is not UTF-8 text: {e}") from e
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise SemanticGenError(f"manifest {path}: line {number} is not JSON ({e.msg}); each line must be one "
                                   f'object like {{"path": "cat.mp4", "caption": "a cat"}}') from e
        if not isinstance(row, dict):
            raise SemanticGenError(f"manifest {path}: line {number} is not a JSON object; each line must be one "
                                   f'object like {{"path": "cat.mp4", "caption": "a cat"}}')
        rows.append((number, {k: row[k] for k in _COLUMNS if k in row}))
    return rows


def _seconds(value) -> float | None:
    """A start/end cell: None when blank; ValueError when not a number."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


def _manifest_items(manifest: Path, rows: list[tuple[int, dict]]) -> tuple[list[VideoItem], list[str]]:
    root = manifest.parent
    items, skipped = [], []
    for line, row in rows:
        where = f"line {line}"
        raw_path = str(row.get("path") or "").strip()
        if not raw_path:
            skipped.append(f"{where}: no path")
            continue
        video = Path(raw_path).expanduser()
        video = video if video.is_absolute() else root / video
        where = f"line {line}: {raw_path}"
        try:
            start, end = _seconds(row.get("start")), _seconds(row.get("end"))
        except (TypeError, ValueError):
            skipped.append(f"{where}: start/end must be numbers of seconds, got "
                           f"{row.get('start')!r}/{row.get('end')!r}")
            continue
        raw = row.get("caption")
        captions = [c for c in (str(c or "").strip() for c in (raw if isinstance(raw, list) else [raw])) if c]
        caption = captions[0] if captions else ""
        problem = (_range_problem(start, end) or (None if caption else "empty caption")
                   or (None if video.exists() else "file not found")
                   or (None if video.is_file() else "not a file"))
        if problem:
            skipped.append(f"{where}: {problem}")
        else:
            items.append(VideoItem(video, caption, start, end, root=root, more_captions=tuple(captions[1:])))
    return items, skipped


# --------------------------------------------------------------------------- decoding


def read_clips(item: VideoItem, spec: ClipSpec) -> list[Clip]:
    """Decode ``item`` into consecutive, non-overlapping clips of ``spec`` (a long video gives several; the
    remainder is dropped).

    Output frame k shows the source frame nearest in time to ``start + k / spec.fps``, for the times in
    ``[start, end)`` when the item has a range, and not after the last source frame; frames are resized to
    cover ``spec.height x spec.width`` keeping the aspect ratio, centre-cropped, and converted to RGB.
    Raises ``VideoReadError`` naming the file when it cannot be opened or decoded, has no frames, or is too
    short for one clip."""
    return list(iter_clips(item, spec))


def iter_clips(item: VideoItem, spec: ClipSpec) -> Iterator[Clip]:
    """``read_clips`` one clip at a time, so a long video's clips need not all be in memory together."""
    start = item.start or 0.0
    buffer: list[np.ndarray] = []
    count = 0
    last_raw, last_out = None, None
    for raw in _resample(_timed_frames(item), start, item.end, spec.fps):
        if raw is not last_raw:  # when upsampling, one source frame serves several output frames
            last_raw, last_out = raw, _fit(raw, spec.height, spec.width)
        buffer.append(last_out)
        if len(buffer) == spec.num_frames:
            clip_start = start + count * spec.seconds
            yield Clip(np.stack(buffer), item.caption, f"{_display_path(item)}@{clip_start:.2f}s", item.more_captions)
            buffer, count = [], count + 1
    if count == 0:
        _too_short(item, spec, len(buffer))


def _display_path(item: VideoItem) -> str:
    return VideoItem(item.path, item.caption, root=item.root).name


def _too_short(item: VideoItem, spec: ClipSpec, num_output: int) -> None:
    if num_output == 0 and item.start:
        raise VideoReadError(f"{item.name}: no frames from {_fmt_seconds(item.start)} s on (the video ends before "
                             f"its start time)")
    what = "the range" if item.start is not None or item.end is not None else "the video"
    raise VideoReadError(f"{item.name}: too short for one clip: {what} lasts about {num_output / spec.fps:.2f} s "
                         f"({num_output} frames at {spec.fps:g} fps), one clip of {spec.num_frames} frames needs "
                         f"{spec.seconds:.2f} s")


def _open(item: VideoItem) -> cv2.VideoCapture:
    if not item.path.is_file():
        raise VideoReadError(f"{item.name}: file not found")
    cap = cv2.VideoCapture(str(item.path))
    if not cap.isOpened():
        cap.release()
        raise VideoReadError(f"{item.name}: cannot be opened as a video (corrupt, truncated, or a format "
                             f"OpenCV's FFmpeg cannot decode)")
    return cap


def _timed_frames(item: VideoItem) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, BGR frame) for each decoded frame, from about ``item.start`` on.

    Times are ``index / CAP_PROP_FPS`` (counted from the first frame read, whose own timestamp anchors them
    after a seek); when the container's frame rate is missing or absurd, each frame's timestamp is used,
    relative to the first frame's (some streams do not start at 0)."""
    cap = _open(item)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        period = 1.0 / fps if _MIN_FPS <= fps <= _MAX_FPS else None
        first = None
        if item.start and period is not None:
            first = _seek(cap, item.start, period)
            if first is None:  # the seek failed or overshot: decode from the beginning instead
                cap.release()
                cap = _open(item)
        if first is None:
            ok, frame = cap.read()
            if not ok:
                raise VideoReadError(f"{item.name}: no decodable frames (empty or corrupt video)")
            first = (0.0, frame)
        offset = _stamp(cap) if period is None else 0.0
        origin, frame = first
        yield origin, frame
        index, previous = 1, origin
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            if period is not None:
                t = origin + index * period
            else:
                t = _stamp(cap) - offset
                if t <= previous:
                    raise VideoReadError(f"{item.name}: the file reports no frame rate "
                                         f"({cap.get(cv2.CAP_PROP_FPS):g}) and no increasing frame timestamps")
            index, previous = index + 1, t
            yield t, frame
    finally:
        cap.release()


def _stamp(cap: cv2.VideoCapture) -> float:
    """The timestamp of the frame just read, in seconds."""
    return cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0


def _seek(cap: cv2.VideoCapture, start: float, period: float) -> tuple[float, np.ndarray] | None:
    """Seek to ``start``; (time, frame) of the first frame there, or None when the seek cannot be trusted
    (FFmpeg lands on a keyframe and OpenCV decodes forward, which some files get wrong: check the timestamp)."""
    if not cap.set(cv2.CAP_PROP_POS_MSEC, start * 1000.0):
        return None
    ok, frame = cap.read()
    if not ok:
        return None  # past the end, or a seek the file does not support; reading from 0 tells which
    t = _stamp(cap)
    if not start - 2 * period <= t <= start + period:
        return None
    return t, frame


def _resample(frames: Generator[tuple[float, np.ndarray], None, None], start: float, end: float | None,
              fps: float) -> Iterator[np.ndarray]:
    """For each output time ``start + k / fps`` before ``end`` and not after the last source frame, the
    nearest source frame (a tie goes to the earlier one); stops reading the source at ``end``."""
    k, previous = 0, None
    try:
        for t, frame in frames:
            while True:
                target = start + k / fps
                if end is not None and target >= end - 1e-9:  # [start, end): a 1 s range gives fps frames
                    return
                if t < target:
                    break
                # `frame` is the first at or after the target: the nearest is it or the one before
                use_previous = previous is not None and target - previous[0] <= t - target
                yield previous[1] if use_previous else frame
                k += 1
            previous = (t, frame)
    finally:
        frames.close()  # release the capture now, also when stopping early


def _fit(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """BGR frame -> RGB ``[height, width, 3]``: resize to cover (aspect kept), then centre-crop."""
    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR  # AREA averages: no aliasing
        frame = cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return cv2.cvtColor(frame[top:top + height, left:left + width], cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- data source


class VideoFolder:
    """A data source over ``list_videos(path)``: ``.items``, ``.skipped`` (from listing), ``.clips(i)``
    (``read_clips`` of ``items[i]``; raises ``VideoReadError`` for a bad file) and ``.describe()``."""

    def __init__(self, path: str | os.PathLike, spec: ClipSpec):
        self.path = Path(path)
        self.spec = spec
        self.items, self.skipped = list_videos(self.path)

    def __len__(self) -> int:
        return len(self.items)

    def clips(self, i: int) -> list[Clip]:
        return read_clips(self.items[i], self.spec)

    def describe(self) -> dict:
        return {"kind": "videos", "path": str(self.path), "items": len(self.items)}
