"""Video files: load a video as IMAGE frames, save frames as an mp4 (opencv), with a preview in the UI."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch

from semanticgen_core.errors import SemanticGenError
from . import comfy
from .plans import next_path

log = logging.getLogger("SemanticGen")

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v", ".gif")
# Example clips shipped with the pack (rendered by the procedural world), listed after the input folder's.
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "workflows" / "media"
CODECS = {"vp9": "vp09", "mp4v": "mp4v"}
# The inputs of a node that writes an mp4 (Save Video, VAE Decode to Video).
SAVE_INPUTS = {
    "fps": ("FLOAT", {"default": 8.0, "min": 0.1, "max": 120.0, "step": 0.1, "round": 0.01,
                      "tooltip": "Frame rate written into the file (8 for the embedded default)."}),
    "filename_prefix": ("STRING", {"default": "SemanticGen/video",
                                   "tooltip": "File name prefix inside the output folder; may contain sub-folders. "
                                              "A counter is appended (video_00001.mp4)."}),
    "codec": (list(CODECS), {"default": "vp9",
                             "tooltip": "vp9: plays in browsers (and the preview here). mp4v: MPEG-4 part 2, for "
                                        "players without VP9."}),
}


def _videos(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def _resolve_video(name: str) -> Path:
    for folder in (comfy.input_dir(), EXAMPLES_DIR):
        if (folder / name).is_file():
            return folder / name
    if comfy.allow_absolute_paths() and Path(name).is_absolute() and Path(name).is_file():
        return Path(name)
    raise SemanticGenError(f"video {name!r} not found: put it in ComfyUI's input folder ({comfy.input_dir()}) or "
                           "upload it with the node's upload button, then pick it from the list.")


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to cover width x height and centre-crop (0 keeps that side; one 0 keeps the aspect ratio)."""
    import cv2

    h, w = frame.shape[:2]
    if width == 0 and height == 0:
        return frame
    if width == 0 or height == 0:
        scale = height / h if width == 0 else width / w
        size = (max(16, round(w * scale / 16) * 16) if width == 0 else width,
                max(16, round(h * scale / 16) * 16) if height == 0 else height)
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    scale = max(width / w, height / h)
    nw, nh = max(width, round(w * scale)), max(height, round(h * scale))
    frame = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (nh - height) // 2, (nw - width) // 2
    return frame[top:top + height, left:left + width]


def read_video(path: Path, force_rate: float = 0.0, width: int = 0, height: int = 0,
               max_frames: int = 0) -> tuple[torch.Tensor, float]:
    """Frames ``[T, H, W, 3]`` float 0..1 and their rate; resampled to ``force_rate`` by nearest frame."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SemanticGenError(f"opencv cannot open {path}: not a video, or a codec this opencv build lacks.")
    source_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not source_fps > 0:
        source_fps = force_rate or 8.0
        log.warning("SemanticGen: %s has no frame rate; assuming %g fps", path.name, source_fps)
    rate = force_rate if force_rate > 0 else source_fps
    frames, index, k = [], 0, 0
    try:
        while not max_frames or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            # Keep this source frame once for every output time k / rate that it is nearest to.
            while round(k * source_fps / rate) == index and (not max_frames or len(frames) < max_frames):
                frames.append(_fit(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), width, height))
                k += 1
            index += 1
            if len(frames) % 16 == 0:
                comfy.check_interrupt()
    finally:
        cap.release()
    if not frames:
        raise SemanticGenError(f"{path} holds no readable frames.")
    return torch.from_numpy(np.stack(frames)).float() / 255.0, float(rate)


class VideoFileWriter:
    """Writes frames to an mp4 chunk by chunk (``with VideoFileWriter(...) as w: w.write(frames)``), so a
    video never has to be in memory whole. Frames go to a hidden file beside ``path`` (same folder, so the
    final rename is atomic; .mp4 suffix, so opencv picks the container) that becomes ``path`` only when
    the block completes and is deleted on an error or an interrupt: no half-written video is ever left."""

    def __init__(self, path: Path, fps: float, codec: str = "vp9"):
        if codec not in CODECS:
            raise SemanticGenError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}.")
        self.path, self.fps, self.codec = Path(path), float(fps), codec
        self.tmp = self.path.with_name(f".{self.path.stem}.{uuid.uuid4().hex[:8]}.partial{self.path.suffix}")
        self.frames = 0
        self._writer, self._size = None, None

    def __enter__(self) -> VideoFileWriter:
        return self

    def write(self, frames: torch.Tensor) -> None:
        """Append frames ``[t, H, W, 3]`` in 0..1 (every chunk the same size)."""
        import cv2

        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise SemanticGenError(f"expected IMAGE frames [T, H, W, 3], got {list(frames.shape)}")
        size = tuple(frames.shape[1:3])
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*CODECS[self.codec]), self.fps,
                                           (size[1], size[0]))
            self._size = size
            if not self._writer.isOpened():
                raise SemanticGenError(f"opencv cannot write {self.codec} video here; choose codec mp4v.")
        elif size != self._size:
            raise SemanticGenError(f"frames of {list(size)} after frames of {list(self._size)}: one size per video")
        for frame in frames:  # one frame at a time: no uint8 copy of the whole chunk
            if self.frames % 16 == 0:
                comfy.check_interrupt()
            rgb = (frame.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._writer is not None:
                self._writer.release()
            if exc_type is None:
                if not self.frames:
                    raise SemanticGenError(f"no frames to write to {self.path.name}")
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)


def write_video(path: Path, frames: torch.Tensor, fps: float, codec: str = "vp9") -> None:
    with VideoFileWriter(path, fps, codec) as writer:
        writer.write(frames)


def video_ui(videos: list[tuple[Path, str, int]]) -> dict:
    """The ``ui`` of a node that wrote videos (path, subfolder, frame count): the frontend previews them."""
    return {"images": [{"filename": path.name, "subfolder": sub, "type": "output"} for path, sub, _ in videos],
            "animated": [True], "frames": [count for *_, count in videos]}


LOAD_VIDEO_NODE = "SemanticGen Load Video"


class SemanticGenLoadVideo:
    CATEGORY = "SemanticGen/video"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("The frames [T, H, W, 3] in 0..1.", "Frame rate of the frames.", "Number of frames.")
    DESCRIPTION = "Loads a video file (opencv) from ComfyUI's input folder as a batch of frames."

    @classmethod
    def INPUT_TYPES(cls):
        if comfy.in_comfyui():  # so the bundled example previews like an uploaded file
            for name in _videos(EXAMPLES_DIR):
                target = comfy.input_dir() / name
                if not target.exists():
                    try:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(EXAMPLES_DIR / name, target)
                    except OSError:
                        pass
        names = sorted(set(_videos(comfy.input_dir())) | set(_videos(EXAMPLES_DIR)))
        return {"required": {
            "video": (names, {"video_upload": True,
                              "tooltip": "A video in ComfyUI's input folder (upload one with the button). "
                                         "semanticgen_example.mp4 ships with the pack."}),
            "force_rate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "step": 0.1, "round": 0.01,
                                     "tooltip": "Resample to this frame rate (nearest frame); 0 keeps the file's."}),
            "width": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                              "tooltip": "Resize (cover and centre-crop) to this width, a multiple of 16; 0 keeps "
                                         "it (or keeps the aspect ratio when only height is set). 64 for the embedded "
                                         "default. Plan from Video takes only multiples of 16."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 16,
                               "tooltip": "Resize to this height, a multiple of 16; 0 keeps it (see width)."}),
            "max_frames": ("INT", {"default": 0, "min": 0, "max": 100000,
                                   "tooltip": "Keep at most this many frames from the start; 0 keeps all."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, video=None, width=None, height=None):
        from .sampling import size_problem

        # Naming width and height here makes ComfyUI skip its own range check of them: size_problem does it.
        problems = [size_problem(LOAD_VIDEO_NODE, name, value, zero_ok=True)
                    for name, value in (("width", width), ("height", height)) if value is not None]
        if video is not None:
            try:
                _resolve_video(video)
            except SemanticGenError as e:
                problems.append(str(e))
        problems = [p for p in problems if p]
        return "; ".join(problems) if problems else True

    @classmethod
    def IS_CHANGED(cls, video=None, **_):
        try:
            stat = _resolve_video(video).stat()
            return f"{stat.st_mtime_ns}:{stat.st_size}"
        except (SemanticGenError, OSError, TypeError):
            return ""

    def load(self, video: str, force_rate: float = 0.0, width: int = 0, height: int = 0, max_frames: int = 0):
        from .sampling import size_problem

        for problem in (size_problem(LOAD_VIDEO_NODE, n, v, zero_ok=True) for n, v in (("width", width), ("height", height))):
            if problem:
                raise SemanticGenError(problem)
        frames, fps = read_video(_resolve_video(video), force_rate, width, height, max_frames)
        return (frames, fps, int(frames.shape[0]))


class SemanticGenSaveVideo:
    CATEGORY = "SemanticGen/video"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    DESCRIPTION = "Writes frames as an .mp4 file (opencv) in ComfyUI's output folder and shows it on the node."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames to write, [T, H, W, 3] in 0..1."}),
            **SAVE_INPUTS,
        }}

    def save(self, images: torch.Tensor, fps: float = 8.0, filename_prefix: str = "SemanticGen/video",
             codec: str = "vp9"):
        out = comfy.output_dir()
        path, subfolder = next_path(out, filename_prefix, ".mp4")
        write_video(path, images, fps, codec)
        log.info("SemanticGen: wrote %s (%d frames at %g fps)", path, images.shape[0], fps)
        return {"ui": video_ui([(path, subfolder, int(images.shape[0]))])}
