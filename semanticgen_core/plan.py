"""``SemanticPlan``: the compact semantic plan that stage 1 writes and stage 2 renders.

The plan is the paper's intermediate representation (compressed semantic tokens of the whole video) plus
what is needed to render and edit it: the time base, the video it describes, per-shot prompts and a
history of the edits applied. Users save it between the two stages, edit it, and load it again, so the
file format is strict: every load checks structure, version, consistency and a checksum of the tokens,
and names what is wrong.

Time base: the video lasts ``num_frames / video_fps`` seconds; semantic step ``i`` starts at ``i / fps``
(``fps`` is the rate of the plan's time axis, e.g. 0.8 steps/s for Qwen2.5-VL features sampled at 1.6 fps
and merged 2x in time). The last step runs to the end of the video, so the steps partition it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes

from .checkpoints import save_file_atomic
from .errors import PlanFormatError, SemanticGenError

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
_EPS_S = 1e-6  # seconds of float slack when comparing segment bounds with the duration
_SAVE_HINT = "Plans are .safetensors files written by the Save Plan node (SemanticPlan.save)."


@dataclass(frozen=True)
class Segment:
    """One shot: ``prompt`` applies to video time ``[start_s, end_s)``."""

    start_s: float
    end_s: float
    prompt: str

    def __post_init__(self) -> None:
        for name in ("start_s", "end_s"):  # store floats, so ints from user code compare equal after a load
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))


@dataclass(eq=False)
class SemanticPlan:
    """Semantic tokens ``[T_s, h, w, c]`` (float32) of a video, with their time base and provenance.

    ``encoder`` names the semantic encoder or stage-1 model that made the plan, ``compressor`` the
    compressor whose latent space the tokens live in; stage 2 can only render plans of its own
    compressor. ``history`` holds JSON records of the edits applied, oldest first. Construction
    validates everything (``validate``).
    """

    tokens: torch.Tensor
    fps: float
    video_fps: float
    num_frames: int
    height: int
    width: int
    segments: list[Segment]
    encoder: str
    compressor: str
    seed: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    format_version: ClassVar[int] = FORMAT_VERSION

    def __post_init__(self) -> None:
        # ints from JSON or user code are fine for rates; store floats so a round trip is exact.
        if isinstance(self.fps, int) and not isinstance(self.fps, bool):
            self.fps = float(self.fps)
        if isinstance(self.video_fps, int) and not isinstance(self.video_fps, bool):
            self.video_fps = float(self.video_fps)
        self.validate()

    # --- time base -------------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """Length of the described video in seconds."""
        return self.num_frames / self.video_fps

    @property
    def grid(self) -> tuple[int, int, int]:
        """``(T_s, h, w)``: semantic time steps and spatial grid."""
        t, h, w, _ = self.tokens.shape
        return t, h, w

    def time_of(self, index: int) -> tuple[float, float]:
        """Video time ``(start_s, end_s)`` covered by semantic step ``index``."""
        steps = self.grid[0]
        if not 0 <= index < steps:
            raise SemanticGenError(f"Semantic step {index} is out of range: this plan has steps 0..{steps - 1}.")
        end = self.duration_s if index == steps - 1 else min((index + 1) / self.fps, self.duration_s)
        return index / self.fps, end

    def index_at(self, seconds: float) -> int:
        """The semantic step covering video time ``seconds`` (the end of the video maps to the last step)."""
        self._check_time(seconds)
        return min(int(seconds * self.fps), self.grid[0] - 1)

    def segment_at(self, seconds: float) -> Segment | None:
        """The segment whose ``[start_s, end_s)`` holds ``seconds`` (the video's end belongs to the
        segment ending there), or None in a gap between segments."""
        self._check_time(seconds)
        for seg in self.segments:
            if seg.start_s <= seconds < seg.end_s or (seconds == seg.end_s and seg.end_s >= self.duration_s - _EPS_S):
                return seg
        return None

    def _check_time(self, seconds: float) -> None:
        if not 0.0 <= seconds <= self.duration_s:
            raise SemanticGenError(f"Time {seconds} s is outside the plan, which covers 0..{self.duration_s:g} s.")

    # --- consistency ------------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise PlanFormatError naming the first inconsistency found."""
        t = self.tokens
        if not isinstance(t, torch.Tensor):
            raise PlanFormatError(f"Plan tokens must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() != 4 or 0 in t.shape:
            raise PlanFormatError(
                f"Plan tokens must be a non-empty 4-D tensor [T_s, h, w, c], got shape {list(t.shape)}."
            )
        if t.dtype != torch.float32:
            raise PlanFormatError(f"Plan tokens must be float32, got {t.dtype}; convert them with .float().")
        if not bool(torch.isfinite(t).all()):
            raise PlanFormatError("Plan tokens contain NaN or infinite values; the plan is corrupted.")
        for name in ("fps", "video_fps"):
            value = getattr(self, name)
            if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
                raise PlanFormatError(f"Plan {name} must be a positive finite number, got {value!r}.")
        for name in ("num_frames", "height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PlanFormatError(f"Plan {name} must be a positive integer, got {value!r}.")
        steps, expected = t.shape[0], self.duration_s * self.fps
        # The encoder pads frames to whole temporal patches, so T_s may exceed duration*fps by < 1 step;
        # more than one step of difference means fps, num_frames or video_fps is wrong.
        if not steps - 1 < expected <= steps + 1:
            raise PlanFormatError(
                f"Plan tokens have {steps} semantic steps, but {self.num_frames} frames at {self.video_fps:g} fps "
                f"({self.duration_s:g} s) at {self.fps:g} semantic steps/s need about {expected:.2f}; "
                "fix fps, num_frames or video_fps so they describe the same video."
            )
        self._validate_segments()
        for name in ("encoder", "compressor"):
            if not isinstance(getattr(self, name), str):
                raise PlanFormatError(f"Plan {name} must be a string id, got {getattr(self, name)!r}.")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise PlanFormatError(f"Plan seed must be an integer or None, got {self.seed!r}.")
        self._validate_history()

    def _validate_segments(self) -> None:
        if not isinstance(self.segments, list):
            raise PlanFormatError(f"Plan segments must be a list of Segment, got {type(self.segments).__name__}.")
        previous: Segment | None = None
        for i, seg in enumerate(self.segments):
            if not isinstance(seg, Segment):
                raise PlanFormatError(f"Plan segment {i} must be a Segment, got {type(seg).__name__}.")
            if not isinstance(seg.prompt, str):
                raise PlanFormatError(f"Plan segment {i} prompt must be a string, got {seg.prompt!r}.")
            times_ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (seg.start_s, seg.end_s))
            if not times_ok or not 0.0 <= seg.start_s < seg.end_s <= self.duration_s + _EPS_S:
                raise PlanFormatError(
                    f"Plan segment {i} ({seg.start_s!r}..{seg.end_s!r} s, {seg.prompt!r}) must satisfy "
                    f"0 <= start < end <= duration ({self.duration_s:g} s)."
                )
            if previous is not None and seg.start_s < previous.end_s - _EPS_S:
                raise PlanFormatError(
                    f"Plan segments {i - 1} and {i} overlap or are out of order: segment {i - 1} ends at "
                    f"{previous.end_s:g} s but segment {i} starts at {seg.start_s:g} s. Segments must be sorted "
                    "by time and must not overlap."
                )
            previous = seg

    def _validate_history(self) -> None:
        if not isinstance(self.history, list) or not all(isinstance(h, dict) for h in self.history):
            raise PlanFormatError("Plan history must be a list of dicts (one JSON record per edit).")
        try:
            same = json.loads(json.dumps(self.history, allow_nan=False)) == self.history
        except (TypeError, ValueError) as e:
            raise PlanFormatError(f"Plan history must be JSON-serialisable: {e}.") from e
        if not same:  # tuples, non-string keys... would come back changed after a save
            raise PlanFormatError(
                "Plan history must survive JSON unchanged: use lists (not tuples) and string keys in its records."
            )

    # --- helpers ------------------------------------------------------------------------------------

    def to(self, device: torch.device | str) -> SemanticPlan:
        """A copy with the tokens on ``device`` (metadata copied, so editing one leaves the other alone)."""
        kwargs = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "tokens"}
        return SemanticPlan(tokens=self.tokens.to(device), **kwargs)

    def metadata(self) -> dict[str, Any]:
        """Every field except the tokens, JSON-able (segments as dicts)."""
        meta = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "tokens"}
        meta["segments"] = [{"start_s": s.start_s, "end_s": s.end_s, "prompt": s.prompt} for s in self.segments]
        return meta

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemanticPlan):
            return NotImplemented
        same_tokens = self.tokens.dtype == other.tokens.dtype and torch.equal(self.tokens.cpu(), other.tokens.cpu())
        return same_tokens and self.metadata() == other.metadata()

    __hash__ = None  # mutable

    # --- files --------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the plan as a safetensors file (tokens + JSON metadata + sha256 of the tokens), atomically:
        ``path`` holds either the previous file or the complete new one."""
        self.validate()
        tokens = self.tokens.detach().cpu().contiguous()
        meta = {key: json.dumps(value, ensure_ascii=False) for key, value in self.metadata().items()}
        meta["format_version"] = str(FORMAT_VERSION)
        meta["tokens_sha256"] = _sha256(tokens)
        save_file_atomic({"tokens": tokens}, path, metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SemanticPlan:
        """Read and fully check a plan file; every problem raises PlanFormatError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise PlanFormatError(f"Plan file not found: {path}. {_SAVE_HINT}")
        data = path.read_bytes()
        try:
            tensors = load_safetensors_bytes(data)
        except SafetensorError as e:
            raise PlanFormatError(
                f"{path} is not a readable safetensors file ({e}): it is truncated, corrupted, or not a plan. "
                f"{_SAVE_HINT} Save the plan again."
            ) from e
        meta = _header_metadata(data)
        version = meta.get("format_version")
        if version is None:
            raise PlanFormatError(
                f"{path} is a safetensors file but not a semantic plan (no 'format_version' in its metadata); "
                f"is it a model checkpoint? {_SAVE_HINT}"
            )
        if version not in {str(v) for v in SUPPORTED_VERSIONS}:
            raise PlanFormatError(
                f"{path} has plan format version {version!r}; this version of SemanticGen reads versions "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}. Update ComfyUI-SemanticGen, or re-create the plan."
            )
        if "tokens" not in tensors:
            raise PlanFormatError(f"{path} holds no 'tokens' tensor (found {sorted(tensors)}); the plan is corrupted.")
        tokens = tensors["tokens"]
        if "tokens_sha256" not in meta:
            raise PlanFormatError(f"{path} lacks the metadata field 'tokens_sha256'; the plan is corrupted.")
        if _sha256(tokens) != meta["tokens_sha256"]:
            raise PlanFormatError(
                f"{path}: checksum mismatch, the token data changed after the plan was saved (disk or copy "
                "corruption, or an edit outside SemanticGen). Re-create or re-save the plan."
            )
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "tokens":
                continue
            if f.name not in meta:
                raise PlanFormatError(f"{path} lacks the metadata field {f.name!r}; the plan is incomplete.")
            try:
                kwargs[f.name] = json.loads(meta[f.name])
            except json.JSONDecodeError as e:
                raise PlanFormatError(f"{path}: metadata field {f.name!r} is not valid JSON ({e}).") from e
        try:
            kwargs["segments"] = [Segment(**s) for s in kwargs["segments"]]
        except TypeError as e:
            raise PlanFormatError(
                f"{path}: metadata field 'segments' is malformed ({e}); it must be a list of "
                '{"start_s": ..., "end_s": ..., "prompt": ...} records.'
            ) from e
        try:
            return cls(tokens=tokens, **kwargs)
        except PlanFormatError as e:
            raise PlanFormatError(f"{path}: {e}") from e


def _sha256(tokens: torch.Tensor) -> str:
    """sha256 of the raw little-endian float32 bytes, the same bytes safetensors stores."""
    return hashlib.sha256(tokens.contiguous().numpy().tobytes()).hexdigest()


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob already parsed by safetensors (so the header is valid)."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]).get("__metadata__") or {}
