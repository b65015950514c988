"""The procedural world as a training data source, and as a folder of real video files.

``WorldSource`` yields world clips in the same form as ``semanticgen_core.video_data.VideoFolder`` yields a
user's videos, so a trainer takes either. ``write_videos`` renders world clips to ``.mp4`` files with
``.txt`` captions beside them: a real-video dataset whose content and captions are known, to run (and test)
the real-video path end to end.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from semanticgen_core.checkpoints import atomic_file
from semanticgen_core.errors import SemanticGenError
from semanticgen_core.video_data import Clip, ClipSpec

from . import world, wording


def _check_seeds(first_seed: int, num_clips: int) -> None:
    """Training data stays below the held-out seeds that evaluation uses."""
    if num_clips < 1:
        raise SemanticGenError(f"the number of world clips must be >= 1, got {num_clips}")
    if first_seed < 0:
        raise SemanticGenError(f"the first world seed must be >= 0, got {first_seed}")
    last = first_seed + num_clips - 1
    if last >= world.HELDOUT_SEED_START:
        room = world.HELDOUT_SEED_START - first_seed
        fix = f"use at most {room} clips from seed {first_seed}" if room > 0 else "start below it"
        raise SemanticGenError(
            f"world seeds {first_seed}..{last} reach into the held-out seeds (>= {world.HELDOUT_SEED_START}, "
            f"kept for evaluation): {fix}")


class WorldSource:
    """``num_clips`` world clips, seeds ``first_seed, first_seed + 1, ...`` (with ``objects``, only the seeds whose
    scenes have that many objects), one clip per item, each with ``captions`` wordings (its template caption,
    then training phrasings: ``wording.captions``)."""

    def __init__(self, num_clips: int, spec: ClipSpec, first_seed: int = 0, captions: int = 1,
                 objects: int | None = None):
        _check_seeds(first_seed, num_clips)
        if captions < 1:
            raise SemanticGenError(f"world clips need at least 1 caption each, got {captions}")
        self.spec = spec
        self.first_seed = first_seed
        self.captions = captions
        self.objects = objects
        if objects is None:
            self.items: list[int] = list(range(first_seed, first_seed + num_clips))
        else:  # the first num_clips seeds whose scenes have that many objects (scenes are drawn without rendering)
            if objects not in (1, 2):
                raise SemanticGenError(f"world scenes have 1 or 2 objects, got {objects}")
            seeds = (seed for seed in itertools.count(first_seed)
                     if len(world.sample_clip_shots(seed, spec.num_frames, spec.fps)[0].objects) == objects)
            self.items = list(itertools.islice(seeds, num_clips))
            _check_seeds(first_seed, self.items[-1] - first_seed + 1)
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.items)

    def clips(self, i: int) -> list[Clip]:
        seed = self.items[i]
        s = self.spec
        clip = world.sample_clip(seed, s.num_frames, s.height, s.width, s.fps)
        caption, *more = wording.captions(clip, self.captions)
        objects = world.label_maps(clip.shots, s.height, s.width)["object"] >= 0
        return [Clip(frames=clip.frames, caption=caption, source=f"world seed {seed}", more_captions=tuple(more),
                     object_mask=objects)]

    def describe(self) -> dict:
        return {"kind": "world", "first_seed": self.first_seed, "clips": len(self.items), "captions": self.captions,
                **({"objects": self.objects} if self.objects else {})}


def write_videos(out: str | os.PathLike, num_clips: int, *, seconds: float = 4.0, fps: float = 8.0,
                 height: int = 64, width: int = 64, first_seed: int = 0) -> list[Path]:
    """Write world clips as ``out/world_<seed>.mp4`` (mp4v) + ``out/world_<seed>.txt`` (the caption).

    Each file is written under a temporary name and renamed, so an interrupted run leaves no partial file;
    files already there are kept (a rerun resumes). Returns the files written."""
    _check_seeds(first_seed, num_clips)
    num_frames = round(seconds * fps)
    if num_frames < 1 or fps <= 0:
        raise SemanticGenError(f"--seconds {seconds} at --fps {fps} gives no frames")
    if height % 2 or width % 2:
        raise SemanticGenError(f"video size must be even (mp4 encoders drop an odd last row/column), got "
                               f"{height}x{width}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for seed in range(first_seed, first_seed + num_clips):
        video, caption = out / f"world_{seed}.mp4", out / f"world_{seed}.txt"
        if video.exists() and caption.exists():
            continue
        clip = world.sample_clip(seed, num_frames, height, width, fps)
        if not video.exists():
            _write_mp4(video, clip.frames, fps)
            written.append(video)
        if not caption.exists():
            with atomic_file(caption) as tmp:
                tmp.write_text(clip.caption + "\n", encoding="utf-8")
            written.append(caption)
    return written


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """RGB uint8 [T, H, W, 3] -> ``path``, atomically. OpenCV picks the container from the file's extension,
    so the temporary file (hidden, in the same folder) ends in .mp4 too."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    try:
        height, width = frames.shape[1:3]
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
        if not writer.isOpened():
            raise SemanticGenError(f"OpenCV cannot write mp4 video (fourcc mp4v) to {tmp}")
        try:
            for frame in frames:
                writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        if os.path.getsize(tmp) == 0:
            raise SemanticGenError(f"OpenCV wrote an empty video to {tmp}")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; these are ordinary data files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
