"""Multi-shot prompts: ``"0-8 s: a red circle ...; 8-20 s: a blue star ..."`` <-> plan segments.

A prompt without times is one shot covering the whole video. With times, each shot's prompt conditions
its own span of the plan and of the video (``wan_blocks.shot_routing``); a gap between shots belongs to
the shot before it. The same syntax is what the procedural world writes as multi-shot captions.
"""

from __future__ import annotations

import re

from .errors import SemanticGenError
from .plan import Segment

_SHOT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*s\s*:\s*(.*?)\s*$", re.S)


def split_shots(prompt: str) -> list[tuple[float, float, str]] | None:
    """``[(start_s, end_s, text)]`` of a timed prompt, or None for a plain one."""
    parts = [p for p in prompt.split(";") if p.strip()]
    matches = [_SHOT.match(p) for p in parts]
    if not any(matches):
        return None
    bad = [p.strip() for p, m in zip(parts, matches) if m is None]
    if bad:
        raise SemanticGenError(f"shot {bad[0]!r} has no time range: write every shot as 'START-END s: text', "
                               f"e.g. '0-8 s: a red circle; 8-20 s: a blue star'")
    shots = [(float(m[1]), float(m[2]), m[3]) for m in matches]
    for (s0, e0, t0), (s1, _, t1) in zip(shots, shots[1:]):
        if s1 < e0:
            raise SemanticGenError(f"shots overlap: '{t1}' starts at {s1:g} s, before '{t0}' ends at {e0:g} s")
    for s, e, t in shots:
        if e <= s:
            raise SemanticGenError(f"shot '{t}' ends ({e:g} s) before it starts ({s:g} s)")
    return shots


def parse_shots(prompt: str, duration_s: float) -> list[Segment]:
    """Segments of ``prompt`` for a video of ``duration_s`` seconds (a plain prompt: one segment)."""
    shots = split_shots(prompt)
    if shots is None:
        return [Segment(0.0, float(duration_s), prompt)]
    end = shots[-1][1]
    if end > duration_s + 1e-6:
        raise SemanticGenError(f"the shots run to {end:g} s but the video lasts {duration_s:g} s: make the video "
                               f"longer or end the last shot by {duration_s:g} s")
    return [Segment(s, e, t) for s, e, t in shots]


def format_shots(segments: list[Segment]) -> str:
    """The prompt that ``parse_shots`` reads back into these segments."""
    if len(segments) == 1:
        return segments[0].prompt
    return "; ".join(f"{s.start_s:g}-{s.end_s:g} s: {s.prompt}" for s in segments)


def shot_starts(segments: list[Segment], duration_s: float, units: int) -> list[float] | None:
    """Shot start times on a model's token time axis of ``units`` cells spanning the video (cell ``j``
    has its centre at ``j``), or None for a single shot."""
    if len(segments) == 1:
        return None
    return [s.start_s / duration_s * units - 0.5 if i else float("-inf") for i, s in enumerate(segments)]
