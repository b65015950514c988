"""SemanticPlan: time base, consistency checks, and a strict, atomic, bit-exact file format."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from semanticgen_core.errors import PlanFormatError, SemanticGenError
from semanticgen_core.plan import SUPPORTED_VERSIONS, Segment, SemanticPlan


def make_plan(**overrides) -> SemanticPlan:
    """81 frames at 16 fps (5.0625 s), 0.8 semantic steps/s -> 4 steps of a 3x5 grid, 8 channels."""
    torch.manual_seed(0)
    kwargs = dict(
        tokens=torch.randn(4, 3, 5, 8),
        fps=0.8,
        video_fps=16.0,
        num_frames=81,
        height=480,
        width=832,
        segments=[Segment(0.0, 2.5, "a red circle moves left"), Segment(2.5, 5.0625, "ein blauer Kreis, 青い円 ✨")],
        encoder="qwen2.5-vl-vision:tiny",
        compressor="mlp-c8:abc123",
        seed=1234,
        history=[{"op": "replace_segment", "index": 1, "args": {"prompt": "ünï", "strength": 0.5}, "tags": [1, None]}],
    )
    kwargs.update(overrides)
    return SemanticPlan(**kwargs)


def rewrite(path: Path, tokens: torch.Tensor | None = None, **meta_changes: str | None) -> None:
    """Re-save a plan file with edited metadata (None deletes a field), bypassing SemanticPlan.save."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = dict(f.metadata())
    for key, value in meta_changes.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    save_file({"tokens": load_file(path)["tokens"] if tokens is None else tokens}, path, metadata=meta)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "plan.safetensors"
    make_plan().save(path)
    return path


# --- time base and validation ------------------------------------------------------------------------


def test_time_base() -> None:
    plan = make_plan()
    assert plan.duration_s == 5.0625 and plan.grid == (4, 3, 5)
    assert [plan.time_of(i) for i in range(4)] == [(0.0, 1.25), (1.25, 2.5), (2.5, 3.75), (3.75, 5.0625)]
    assert [plan.index_at(s) for s in (0.0, 1.24, 1.25, 4.0, 5.0625)] == [0, 0, 1, 3, 3]
    assert plan.segment_at(0.0).prompt == "a red circle moves left"
    assert plan.segment_at(2.5) is plan.segments[1] and plan.segment_at(5.0625) is plan.segments[1]
    with pytest.raises(SemanticGenError, match="outside the plan"):
        plan.index_at(6.0)
    with pytest.raises(SemanticGenError, match="out of range"):
        plan.time_of(4)
    gap = make_plan(segments=[Segment(0, 1, "a"), Segment(2, 3, "b")])
    assert gap.segment_at(1.5) is None and gap.segments[0].start_s == 0.0 and isinstance(gap.segments[0].start_s, float)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tokens": torch.zeros(4, 3, 8)}, "4-D"),
        ({"tokens": torch.zeros(4, 3, 5, 8, dtype=torch.float16)}, "float32"),
        ({"tokens": torch.full((4, 3, 5, 8), float("nan"))}, "NaN"),
        ({"fps": 0.0}, "fps must be a positive"),
        ({"num_frames": 80.5}, "num_frames must be a positive integer"),
        ({"tokens": torch.zeros(9, 3, 5, 8)}, "9 semantic steps"),
        ({"segments": [Segment(0, 3, "a"), Segment(2, 4, "b")]}, "overlap"),
        ({"segments": [Segment(2, 3, "b"), Segment(0, 1, "a")]}, "out of order"),
        ({"segments": [Segment(0, 6, "a")]}, "0 <= start < end <= duration"),
        ({"segments": [Segment(1, 1, "a")]}, "0 <= start < end"),
        ({"history": [{"args": (1, 2)}]}, "survive JSON"),
        ({"history": [{"x": object()}]}, "JSON-serialisable"),
        ({"seed": "7"}, "seed must be an integer"),
    ],
)
def test_validation_names_the_problem(overrides: dict, message: str) -> None:
    with pytest.raises(PlanFormatError, match=message):
        make_plan(**overrides)


def test_to_copies_metadata() -> None:
    plan = make_plan()
    other = plan.to("cpu")
    other.history.append({"op": "noop"})
    assert len(plan.history) == 1 and torch.equal(other.tokens, plan.tokens)


# --- files --------------------------------------------------------------------------------------------


def test_round_trip_is_bit_exact(saved: Path) -> None:
    plan = make_plan()
    loaded = SemanticPlan.load(saved)
    assert loaded == plan
    assert torch.equal(loaded.tokens, plan.tokens) and loaded.tokens.dtype == torch.float32
    assert loaded.metadata() == plan.metadata()
    assert loaded.segments[1].prompt == "ein blauer Kreis, 青い円 ✨" and loaded.history == plan.history
    assert (loaded.fps, loaded.video_fps, loaded.seed, loaded.encoder) == (0.8, 16.0, 1234, "qwen2.5-vl-vision:tiny")
    unseeded = make_plan(seed=None, history=[], segments=[])
    unseeded.save(saved)
    assert SemanticPlan.load(saved) == unseeded
    assert loaded != unseeded


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanFormatError, match="not found") as err:
        SemanticPlan.load(tmp_path / "nope.safetensors")
    assert "nope.safetensors" in str(err.value) and "Save Plan" in str(err.value)


def test_truncated_file(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:-37])
    with pytest.raises(PlanFormatError, match="truncated") as err:
        SemanticPlan.load(saved)
    assert str(saved) in str(err.value)


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(b"this is not a plan at all, just some text\n" * 10)
    with pytest.raises(PlanFormatError, match="not a readable safetensors file") as err:
        SemanticPlan.load(path)
    assert "garbage.safetensors" in str(err.value)


def test_flipped_bytes_in_the_tokens_fail_the_checksum(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    (header_size,) = struct.unpack("<Q", data[:8])
    data[8 + header_size + 100] ^= 0x01  # one bit of one float's mantissa: still a valid, finite file
    saved.write_bytes(bytes(data))
    with pytest.raises(PlanFormatError, match="checksum mismatch"):
        SemanticPlan.load(saved)


def test_model_checkpoint_is_not_a_plan(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, path)
    with pytest.raises(PlanFormatError, match="not a semantic plan"):
        SemanticPlan.load(path)


def test_missing_field_is_named(saved: Path) -> None:
    rewrite(saved, video_fps=None)
    with pytest.raises(PlanFormatError, match="lacks the metadata field 'video_fps'"):
        SemanticPlan.load(saved)


def test_unknown_version(saved: Path) -> None:
    rewrite(saved, format_version="99")
    with pytest.raises(PlanFormatError, match="version '99'") as err:
        SemanticPlan.load(saved)
    assert f"reads versions {', '.join(map(str, SUPPORTED_VERSIONS))}" in str(err.value)


def test_inconsistent_segments_in_file(saved: Path) -> None:
    segments = [{"start_s": 0.0, "end_s": 3.0, "prompt": "a"}, {"start_s": 2.0, "end_s": 4.0, "prompt": "b"}]
    rewrite(saved, segments=json.dumps(segments))
    with pytest.raises(PlanFormatError, match="overlap") as err:
        SemanticPlan.load(saved)
    assert str(saved) in str(err.value)
    rewrite(saved, segments=json.dumps([{"start": 0, "prompt": "a"}]))
    with pytest.raises(PlanFormatError, match="'segments' is malformed"):
        SemanticPlan.load(saved)


def test_wrong_rank_tokens_in_file(saved: Path) -> None:
    from semanticgen_core.plan import _sha256

    tokens = torch.zeros(4, 15, 8)
    rewrite(saved, tokens=tokens, tokens_sha256=_sha256(tokens))
    with pytest.raises(PlanFormatError, match=r"4-D tensor \[T_s, h, w, c\], got shape \[4, 15, 8\]"):
        SemanticPlan.load(saved)


def test_failed_save_keeps_the_old_file(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = saved.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        make_plan(seed=99).save(saved)
    assert saved.read_bytes() == old and SemanticPlan.load(saved).seed == 1234
    assert sorted(p.name for p in saved.parent.iterdir()) == ["plan.safetensors"]  # no temp file left


def test_invalid_plan_is_never_written(saved: Path) -> None:
    plan = make_plan()
    plan.segments = [Segment(0, 9, "too long")]  # edited after construction
    with pytest.raises(PlanFormatError, match="duration"):
        plan.save(saved)
    assert SemanticPlan.load(saved) == make_plan()
