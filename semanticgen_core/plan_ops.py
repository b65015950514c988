"""Editing semantic plans: pure functions ``plan -> plan``, each recorded in the new plan's ``history``.

The plan holds layout and motion for the whole video in a few thousand numbers, so a video can be
rearranged before a pixel is rendered: ``cut``, ``splice``, ``concatenate``, ``move``, ``reverse`` and
``repeat`` rearrange plan steps; ``interpolate`` and ``blend`` mix tokens; ``regenerate`` re-samples a span
with stage 1 while the rest of the plan is held. ``apply_edits`` applies a JSON list of such edits (the
edit node's widget, and what the timeline editor in ``web/`` writes).

Time. Arguments are seconds of video. A plan step ``i`` starts at ``i / fps`` and the last step runs to
the end of the video (``SemanticPlan``'s time base), so:

* a range ``start_s..end_s`` covers every step it overlaps: steps ``floor(start_s * fps)`` up to
  ``ceil(end_s * fps)`` (exclusive), and ``end_s == duration`` reaches the last step;
* a point ``at_s`` / ``to_s`` (where to insert) is the step boundary nearest to it, the video's end
  being the boundary after the last step.

Frames. Step ``i`` owns the video frames ``round(i * video_fps / fps)`` up to the next step's first
frame (the last step owns the rest). After a rearrangement the video has the frames of the steps it
keeps, in their new order (a permutation keeps ``num_frames``; a cut removes the frames of the cut
steps), nudged by a frame or two where needed so that ``num_frames`` stays consistent with the step
count (every step but the last spans a whole ``1 / fps`` seconds).

Segments (per-shot prompts). Each step carries the prompt of the segment it starts in, and moves with
its step. When an edit leaves the steps' count, prompts and frame count as they were, the segments are
kept exactly; otherwise they are rebuilt from the steps (runs of one prompt become one segment, with
bounds on step boundaries and the last one ending with the video).

Compatibility. Plans combined by ``splice``, ``concatenate`` and ``blend`` must share the token grid
(``h x w``), the channel count and the compressor (the token space: plans of one compressor may come
from stage 1 or from a video, whose ``encoder`` fields differ), and the time base (``fps``,
``video_fps``) and frame size. Every bad input raises ``SemanticGenError`` naming the problem.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, MutableMapping, Sequence

import torch

from .errors import SemanticGenError
from .plan import Segment, SemanticPlan

_TOL = 1e-6  # slack in plan steps when mapping seconds to steps (floats such as 3 * 0.1)
MODES = ("linear", "slerp")
MAX_REPEAT = 1000


# -- time -> steps ---------------------------------------------------------------------------------


def _seconds(value: Any, name: str, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SemanticGenError(f"{op}: {name} must be a time in seconds (a number), got {value!r}.")
    return float(value)


def _covers(plan: SemanticPlan) -> str:
    return f"0..{plan.duration_s:g} s ({plan.grid[0]} steps of {1 / plan.fps:g} s)"


def step_range(plan: SemanticPlan, start_s: float | None = None, end_s: float | None = None,
               op: str = "edit") -> tuple[int, int]:
    """Steps ``[i0, i1)`` covered by video time ``start_s..end_s`` (None: the plan's start / end)."""
    steps, duration = plan.grid[0], plan.duration_s
    start = 0.0 if start_s is None else _seconds(start_s, "start_s", op)
    end = duration if end_s is None else _seconds(end_s, "end_s", op)
    slack = _TOL / plan.fps
    if start < -slack or end > duration + slack:
        raise SemanticGenError(f"{op}: the range {start:g}..{end:g} s is outside the plan, which covers "
                               f"{_covers(plan)}.")
    if not start < end:
        raise SemanticGenError(f"{op}: the range {start:g}..{end:g} s is empty: start_s must be before end_s.")
    i0 = min(max(0, math.floor(start * plan.fps + _TOL)), steps - 1)
    i1 = steps if end * plan.fps >= duration * plan.fps - _TOL else min(steps, math.ceil(end * plan.fps - _TOL))
    return i0, max(i1, i0 + 1)


def boundary_at(plan: SemanticPlan, seconds: float, name: str = "at_s", op: str = "edit") -> int:
    """The step boundary nearest to ``seconds`` (0..T; the video's end is T)."""
    steps, duration = plan.grid[0], plan.duration_s
    t = _seconds(seconds, name, op)
    if t < -_TOL / plan.fps or t > duration + _TOL / plan.fps:
        raise SemanticGenError(f"{op}: {name}={t:g} s is outside the plan, which covers {_covers(plan)}.")
    if t * plan.fps >= duration * plan.fps - _TOL:
        return steps
    return min(steps, max(0, math.floor(t * plan.fps + 0.5)))


def step_times(plan: SemanticPlan, i0: int, i1: int) -> tuple[float, float]:
    """Video time ``(start_s, end_s)`` of steps ``[i0, i1)``: the inverse of ``step_range``."""
    return i0 / plan.fps, (plan.duration_s if i1 >= plan.grid[0] else i1 / plan.fps)


# -- frames, prompts and the rebuilt plan ----------------------------------------------------------


def _frame_at(plan: SemanticPlan, i: int) -> int:
    if i >= plan.grid[0]:
        return plan.num_frames
    return min(plan.num_frames, math.floor(i * plan.video_fps / plan.fps + 0.5))


def step_frames(plan: SemanticPlan) -> list[int]:
    """Frames owned by each step (they sum to ``num_frames``)."""
    return [_frame_at(plan, i + 1) - _frame_at(plan, i) for i in range(plan.grid[0])]


def step_prompts(plan: SemanticPlan) -> list[str | None]:
    """The prompt of the segment each step starts in (None in a gap between segments)."""
    out = []
    for i in range(plan.grid[0]):
        seg = plan.segment_at(i / plan.fps)
        out.append(None if seg is None else seg.prompt)
    return out


def _frames_valid(n: int, steps: int, video_fps: float, fps: float) -> bool:
    expected = n / video_fps * fps  # as SemanticPlan.validate computes it
    return steps - 1 < expected <= steps + 1


def fit_frames(n: int, steps: int, video_fps: float, fps: float) -> int:
    """``n`` if it is a consistent frame count for ``steps`` plan steps, else the nearest one that is."""
    if n >= 1 and _frames_valid(n, steps, video_fps, fps):
        return n
    lo = max(1, math.floor((steps - 1) * video_fps / fps) - 1)
    hi = math.floor((steps + 1) * video_fps / fps) + 2
    valid = [c for c in range(lo, hi + 1) if _frames_valid(c, steps, video_fps, fps)]
    if not valid:
        raise SemanticGenError(f"no frame count fits {steps} steps at {fps:g} steps/s and {video_fps:g} fps.")
    return min(valid, key=lambda c: (abs(c - n), c))


def segments_from_prompts(prompts: Sequence[str | None], fps: float, duration_s: float) -> list[Segment]:
    """Runs of one prompt -> segments on step boundaries (the last ends with the video; gaps stay gaps)."""
    segments, steps, k = [], len(prompts), 0
    while k < steps:
        j = k
        while j + 1 < steps and prompts[j + 1] == prompts[k]:
            j += 1
        if prompts[k] is not None:
            segments.append(Segment(k / fps, duration_s if j + 1 >= steps else (j + 1) / fps, prompts[k]))
        k = j + 1
    return segments


Owner = tuple[SemanticPlan, int]  # (plan, step): where a step of the edited plan comes from


def _rebuild(plan: SemanticPlan, owners: Sequence[Owner], record: dict, tokens: torch.Tensor | None = None,
             prompts: Sequence[str | None] | None = None) -> SemanticPlan:
    """The edited plan: its steps come from ``owners`` (tokens gathered unless given), with frames,
    prompts and segments carried along, and ``record`` appended to the history."""
    cache: dict[int, tuple[list[int], list[str | None]]] = {}

    def info(p: SemanticPlan):
        if id(p) not in cache:
            cache[id(p)] = (step_frames(p), step_prompts(p))
        return cache[id(p)]

    if tokens is None:
        tokens = torch.stack([p.tokens[i].to(plan.tokens.device) for p, i in owners])
    steps = tokens.shape[0]
    frames = fit_frames(sum(info(p)[0][i] for p, i in owners), steps, plan.video_fps, plan.fps)
    prompts = list(prompts) if prompts is not None else [info(p)[1][i] for p, i in owners]
    if steps == plan.grid[0] and frames == plan.num_frames and prompts == info(plan)[1]:
        segments = list(plan.segments)
    else:
        segments = segments_from_prompts(prompts, plan.fps, frames / plan.video_fps)
    return SemanticPlan(tokens=tokens.contiguous(), fps=plan.fps, video_fps=plan.video_fps, num_frames=frames,
                        height=plan.height, width=plan.width, segments=segments, encoder=plan.encoder,
                        compressor=plan.compressor, seed=plan.seed,
                        history=copy.deepcopy(plan.history) + [_jsonable(record)])


def _jsonable(record: dict) -> dict:
    return {k: v for k, v in record.items() if v is not None}


def plan_fingerprint(plan: SemanticPlan) -> str:
    """sha256 of the tokens and every metadata field: equal fingerprints, equal plans."""
    h = hashlib.sha256(plan.tokens.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(plan.metadata(), sort_keys=True).encode())
    return h.hexdigest()


def describe(plan: SemanticPlan) -> dict:
    """A short JSON record of a plan, for the history of edits that take tokens from it."""
    return {"encoder": plan.encoder, "seed": plan.seed, "steps": plan.grid[0], "num_frames": plan.num_frames,
            "fingerprint": plan_fingerprint(plan)[:16]}


def check_compatible(plan: SemanticPlan, other: Any, op: str) -> None:
    """Raise unless ``other`` can be combined with ``plan`` (same token space, grid and time base)."""
    if not isinstance(other, SemanticPlan):
        raise SemanticGenError(f"{op}: expected a SemanticPlan to combine with, got {type(other).__name__}.")
    (_, h, w), c = plan.grid, plan.tokens.shape[-1]
    (_, oh, ow), oc = other.grid, other.tokens.shape[-1]
    if (h, w, c) != (oh, ow, oc):
        raise SemanticGenError(f"{op}: the plans have different grids: this one has {h}x{w} tokens of {c} channels, "
                               f"the other {oh}x{ow} tokens of {oc} channels (made for another video size or model).")
    if plan.compressor != other.compressor:
        raise SemanticGenError(f"{op}: the plans come from different compressors ({plan.compressor!r} and "
                               f"{other.compressor!r}, encoders {plan.encoder!r} and {other.encoder!r}): their "
                               "tokens live in different spaces. Combine plans of one model family.")
    for name in ("fps", "video_fps", "height", "width"):
        if getattr(plan, name) != getattr(other, name):
            raise SemanticGenError(f"{op}: the plans have different {name} ({getattr(plan, name)!r} and "
                                   f"{getattr(other, name)!r}); combine plans of one video size and frame rate.")


def _steps_of(plan: SemanticPlan, indices) -> list[Owner]:
    return [(plan, i) for i in indices]


# -- rearranging steps -----------------------------------------------------------------------------


def cut(plan: SemanticPlan, start_s: float, end_s: float) -> SemanticPlan:
    """Remove ``start_s..end_s``; what follows moves earlier."""
    i0, i1 = step_range(plan, start_s, end_s, "cut")
    steps = plan.grid[0]
    if i1 - i0 >= steps:
        raise SemanticGenError(f"cut: removing {start_s:g}..{end_s:g} s would leave an empty plan "
                               f"(it covers {_covers(plan)}).")
    return _rebuild(plan, _steps_of(plan, [i for i in range(steps) if not i0 <= i < i1]),
                    {"op": "cut", "start_s": start_s, "end_s": end_s})


def splice(plan: SemanticPlan, source: SemanticPlan, at_s: float, start_s: float | None = None,
           end_s: float | None = None) -> SemanticPlan:
    """Insert ``source``'s range ``start_s..end_s`` (default: all of it) into ``plan`` at ``at_s``."""
    check_compatible(plan, source, "splice")
    at = boundary_at(plan, at_s, "at_s", "splice")
    j0, j1 = step_range(source, start_s, end_s, "splice (in the source plan)")
    owners = _steps_of(plan, range(at)) + _steps_of(source, range(j0, j1)) + \
        _steps_of(plan, range(at, plan.grid[0]))
    return _rebuild(plan, owners, {"op": "splice", "source": describe(source), "at_s": at_s,
                                   "start_s": start_s, "end_s": end_s})


def concatenate(plan: SemanticPlan, *others: SemanticPlan) -> SemanticPlan:
    """``plan`` followed by each of ``others``."""
    if not others:
        raise SemanticGenError("concatenate: give at least one more plan to append.")
    owners = _steps_of(plan, range(plan.grid[0]))
    for other in others:
        check_compatible(plan, other, "concatenate")
        owners += _steps_of(other, range(other.grid[0]))
    return _rebuild(plan, owners, {"op": "concatenate", "sources": [describe(o) for o in others]})


def move(plan: SemanticPlan, start_s: float, end_s: float, to_s: float) -> SemanticPlan:
    """Move ``start_s..end_s`` so that it starts at the boundary nearest ``to_s`` (a time of this plan,
    before the move: drag-and-drop on the timeline)."""
    i0, i1 = step_range(plan, start_s, end_s, "move")
    to = boundary_at(plan, to_s, "to_s", "move")
    if i0 < to < i1:
        raise SemanticGenError(f"move: to_s={to_s:g} s lies inside the moved range {start_s:g}..{end_s:g} s; "
                               "move it before its start or after its end.")
    rest = [i for i in range(plan.grid[0]) if not i0 <= i < i1]
    where = to if to <= i0 else to - (i1 - i0)
    order = rest[:where] + list(range(i0, i1)) + rest[where:]
    return _rebuild(plan, _steps_of(plan, order), {"op": "move", "start_s": start_s, "end_s": end_s, "to_s": to_s})


def reverse(plan: SemanticPlan, start_s: float | None = None, end_s: float | None = None) -> SemanticPlan:
    """Play ``start_s..end_s`` (default: the whole plan) backwards."""
    i0, i1 = step_range(plan, start_s, end_s, "reverse")
    order = list(range(i0)) + list(range(i1 - 1, i0 - 1, -1)) + list(range(i1, plan.grid[0]))
    return _rebuild(plan, _steps_of(plan, order), {"op": "reverse", "start_s": start_s, "end_s": end_s})


def repeat(plan: SemanticPlan, start_s: float | None = None, end_s: float | None = None,
           times: int = 2) -> SemanticPlan:
    """Play ``start_s..end_s`` (default: the whole plan) ``times`` times in a row (2: duplicate it)."""
    if isinstance(times, bool) or not isinstance(times, int) or not 1 <= times <= MAX_REPEAT:
        raise SemanticGenError(f"repeat: times must be a whole number from 1 to {MAX_REPEAT}, got {times!r}.")
    i0, i1 = step_range(plan, start_s, end_s, "repeat")
    order = list(range(i1)) + list(range(i0, i1)) * (times - 1) + list(range(i1, plan.grid[0]))
    return _rebuild(plan, _steps_of(plan, order), {"op": "repeat", "start_s": start_s, "end_s": end_s,
                                                    "times": times})


# -- mixing tokens ---------------------------------------------------------------------------------


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation of token vectors (last dimension); linear where they are (anti)parallel or zero."""
    a64, b64 = a.double(), b.double()
    cos = (torch.nn.functional.normalize(a64, dim=-1) * torch.nn.functional.normalize(b64, dim=-1)).sum(-1)
    theta = torch.arccos(cos.clamp(-1.0, 1.0))
    sin = torch.sin(theta)
    ok = (sin.abs() > 1e-6) & (a64.norm(dim=-1) > 1e-12) & (b64.norm(dim=-1) > 1e-12)
    safe = torch.where(ok, sin, torch.ones_like(sin))
    ca, cb = torch.sin((1 - w) * theta) / safe, torch.sin(w * theta) / safe
    spherical = ca[..., None] * a64 + cb[..., None] * b64
    linear = (1 - w) * a64 + w * b64
    return torch.where(ok[..., None], spherical, linear).to(a.dtype)


def _mix(a: torch.Tensor, b: torch.Tensor, w: float, mode: str) -> torch.Tensor:
    return (1 - w) * a + w * b if mode == "linear" else slerp(a, b, w)


def interpolation_weights(plan: SemanticPlan, i0: int, i1: int, anchors_given: tuple[bool, bool]
                          ) -> list[float]:
    """Weights of the second moment for steps ``i0..i1-1``. Moment A sits just before the range and B
    just after it, so the range becomes a transition that repeats neither; where the range touches the
    plan's start (end) and no moment was given, A (B) is the range's own first (last) step, kept as is."""
    pa = i0 if (i0 == 0 and not anchors_given[0]) else i0 - 1
    pb = i1 - 1 if (i1 == plan.grid[0] and not anchors_given[1]) else i1
    if pb == pa:
        return [0.0] * (i1 - i0)
    return [(k - pa) / (pb - pa) for k in range(i0, i1)]


def interpolate(plan: SemanticPlan, start_s: float | None = None, end_s: float | None = None,
                from_s: float | None = None, to_s: float | None = None, mode: str = "linear") -> SemanticPlan:
    """Replace ``start_s..end_s`` by a transition from the tokens at moment ``from_s`` to those at
    ``to_s`` (default: the steps just before and just after the range), ``linear`` or ``slerp`` (per
    token, over channels). See ``interpolation_weights`` for where the two moments sit."""
    if mode not in MODES:
        raise SemanticGenError(f"interpolate: mode must be one of {', '.join(MODES)}, got {mode!r}.")
    i0, i1 = step_range(plan, start_s, end_s, "interpolate")
    steps = plan.grid[0]
    a = plan.index_at(_seconds(from_s, "from_s", "interpolate")) if from_s is not None else max(i0 - 1, 0)
    b = plan.index_at(_seconds(to_s, "to_s", "interpolate")) if to_s is not None else min(i1, steps - 1)
    weights = interpolation_weights(plan, i0, i1, (from_s is not None, to_s is not None))
    tokens = plan.tokens.clone()
    A, B = plan.tokens[a], plan.tokens[b]
    for k, w in zip(range(i0, i1), weights):
        tokens[k] = _mix(A, B, w, mode)
    return _rebuild(plan, _steps_of(plan, range(steps)), {"op": "interpolate", "start_s": start_s, "end_s": end_s,
                                                          "from_s": from_s, "to_s": to_s, "mode": mode},
                    tokens=tokens)


def blend(plan: SemanticPlan, other: SemanticPlan, weight: float, start_s: float | None = None,
          end_s: float | None = None, mode: str = "linear") -> SemanticPlan:
    """``(1 - weight) * plan + weight * other`` over ``start_s..end_s`` (default: the whole plan), step by
    step (step ``i`` with the other plan's step ``i``); timing and prompts stay ``plan``'s."""
    check_compatible(plan, other, "blend")
    w = _seconds(weight, "weight", "blend")
    if not 0.0 <= w <= 1.0:
        raise SemanticGenError(f"blend: weight must be between 0 and 1, got {weight!r}.")
    if mode not in MODES:
        raise SemanticGenError(f"blend: mode must be one of {', '.join(MODES)}, got {mode!r}.")
    i0, i1 = step_range(plan, start_s, end_s, "blend")
    if other.grid[0] < i1:
        t0, t1 = step_times(plan, i0, i1)
        raise SemanticGenError(f"blend: the other plan has {other.grid[0]} steps ({other.duration_s:g} s) but the "
                               f"range {t0:g}..{t1:g} s needs steps up to {i1}: blend a shorter range or a longer plan.")
    tokens = plan.tokens.clone()
    tokens[i0:i1] = _mix(plan.tokens[i0:i1], other.tokens[i0:i1].to(tokens.device), w, mode)
    return _rebuild(plan, _steps_of(plan, range(plan.grid[0])),
                    {"op": "blend", "source": describe(other), "weight": weight, "start_s": start_s, "end_s": end_s,
                     "mode": None if mode == "linear" else mode}, tokens=tokens)


# -- regenerating a span with stage 1 --------------------------------------------------------------


def shots(prompts: Sequence[str | None]) -> tuple[list[str], list[float]]:
    """Per-step prompts -> (one prompt per shot, shot start steps); a gap's steps get the empty prompt."""
    texts, starts = [], []
    for k, p in enumerate(prompts):
        p = "" if p is None else p
        if not texts or p != texts[-1]:
            texts.append(p)
            starts.append(float(k))
    return texts, starts


@torch.no_grad()
def regenerate(plan: SemanticPlan, start_s: float | None, end_s: float | None, stage1, text_encoder, opts,
               prompt: str | None = None, negative_prompt: str = "",
               progress: Callable[[int, int, torch.Tensor], None] | None = None,
               should_stop: Callable[[], bool] | None = None, aligner=None) -> SemanticPlan:
    """Re-sample ``start_s..end_s`` with stage 1 (``SemanticDiT``) while holding the rest of the plan.

    After every sampling step the held steps are set to their known tokens re-noised to the current
    noise level with the same noise the sampler started from, ``(1 - sigma) * x0 + sigma * noise``, so
    the span is sampled in context and the held steps come back exactly. ``prompt`` (optional) becomes
    the span's prompt: each stretch of one prompt is a shot of stage 1's per-shot text (``text_encoder``
    embeds them; ``negative_prompt`` is the unconditional text). ``opts``: ``SamplingOptions`` (its seed
    draws the noise). ``aligner``: a ``PlanTextAligner`` for stage 1's alignment guidance, at weight
    ``opts.alignment`` (None or 0: none) down to the noise level ``opts.alignment_stop`` (None or 0: every step),
    as ``SemanticGenPipeline.generate_plan`` samples.
    """
    from .plan_alignment import alignment_steer
    from .sampling import denoise, initial_noise

    if prompt is not None and not isinstance(prompt, str):
        raise SemanticGenError(f"regenerate: prompt must be text, got {prompt!r}.")
    i0, i1 = step_range(plan, start_s, end_s, "regenerate")
    channels = plan.tokens.shape[-1]
    if stage1 is None or not hasattr(stage1, "velocity"):
        raise SemanticGenError("regenerate: needs a stage-1 model (SemanticDiT) to sample the span with.")
    if text_encoder is None:
        raise SemanticGenError("regenerate: needs a text encoder for the span's prompt.")
    if stage1.config.in_channels != channels:
        raise SemanticGenError(f"regenerate: this stage 1 writes {stage1.config.in_channels}-channel plans but the "
                               f"plan has {channels} channels (compressor {plan.compressor!r}): use the stage 1 of "
                               "its family.")
    prompts = step_prompts(plan)
    if prompt is not None:
        prompts[i0:i1] = [prompt] * (i1 - i0)
    texts, starts = shots(prompts)
    param = next(stage1.parameters())
    device, dtype = param.device, param.dtype
    cond, _ = text_encoder.encode(texts)
    uncond, _ = text_encoder.encode([negative_prompt] * len(texts))
    if cond.shape[-1] != stage1.config.text_dim:
        raise SemanticGenError(f"regenerate: the text encoder gives {cond.shape[-1]}-d embeddings but this stage 1 "
                               f"reads {stage1.config.text_dim}-d ones: use the text encoder it was trained with.")
    cond, uncond = cond.to(device, dtype), uncond.to(device, dtype)
    if len(texts) == 1:
        text, empty, velocity = cond[:1], uncond[:1], stage1.velocity
    else:
        text, empty = cond[None], uncond[None]

        def velocity(x, t, context):
            return stage1.velocity(x, t, context, shot_starts=starts)

    x0 = plan.tokens[None].to(device, torch.float32)  # the sampling state is fp32 whatever stage 1 runs in
    noise = initial_noise(tuple(x0.shape), opts.seed, device)
    span = torch.zeros((1, plan.grid[0], 1, 1, 1), dtype=torch.bool, device=device)
    span[:, i0:i1] = True

    def hold(x: torch.Tensor, sigma: float) -> torch.Tensor:
        known = (1.0 - sigma) * x0.float() + sigma * noise.float()
        return torch.where(span, x, known.to(x.dtype))

    weight = float(opts.alignment or 0.0) if aligner is not None else 0.0
    stop = float(opts.alignment_stop or 0.0)
    steer = alignment_steer(aligner, text, weight, starts, stop)
    out = denoise(velocity, noise, text, empty, opts, progress, should_stop, hold=hold, model_dtype=dtype,
                  steer=steer)
    tokens = plan.tokens.clone()
    tokens[i0:i1] = out[0, i0:i1].float().to(tokens.device)  # the held steps are the original tokens, bit for bit
    record = {"op": "regenerate", "start_s": start_s, "end_s": end_s, "prompt": prompt,
              "negative_prompt": negative_prompt or None, "seed": opts.seed, "steps": opts.steps,
              "sampler": opts.sampler, "guidance": opts.guidance, "shift": opts.shift,
              **({"alignment": weight, "alignment_stop": stop} if weight else {})}
    return _rebuild(plan, _steps_of(plan, range(plan.grid[0])), record, tokens=tokens, prompts=prompts)


# -- edit lists ------------------------------------------------------------------------------------


def _is_num(v):
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _is_int(v):
    return not isinstance(v, bool) and isinstance(v, int)


_KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "time": (_is_num, "a time in seconds"),
    "weight": (lambda v: _is_num(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "times": (lambda v: _is_int(v) and 1 <= v <= MAX_REPEAT, f"a whole number from 1 to {MAX_REPEAT}"),
    "mode": (lambda v: v in MODES, f"one of {', '.join(MODES)}"),
    "text": (lambda v: isinstance(v, str), "text"),
    "source": (lambda v: isinstance(v, str) and v != "", "the name of a plan ('self' or 'other')"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**64, "a whole number >= 0"),
    "steps": (lambda v: _is_int(v) and 1 <= v <= 1000, "a whole number from 1 to 1000"),
    "number": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    "sampler": (lambda v: v in ("euler", "unipc"), "euler or unipc"),
}

_RANGE = {"start_s": "time", "end_s": "time"}
# op -> (required arguments, optional arguments), each name -> kind
OPS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "cut": (dict(_RANGE), {}),
    "splice": ({"source": "source", "at_s": "time"}, dict(_RANGE)),
    "concatenate": ({"source": "source"}, {}),
    "move": ({**_RANGE, "to_s": "time"}, {}),
    "reverse": ({}, dict(_RANGE)),
    "repeat": ({}, {**_RANGE, "times": "times"}),
    "interpolate": ({}, {**_RANGE, "from_s": "time", "to_s": "time", "mode": "mode"}),
    "blend": ({"source": "source", "weight": "weight"}, {**_RANGE, "mode": "mode"}),
    "regenerate": ({}, {**_RANGE, "prompt": "text", "seed": "seed", "steps": "steps", "guidance": "number",
                        "shift": "number", "sampler": "sampler"}),
}
SAMPLING_KEYS = ("seed", "steps", "guidance", "shift", "sampler")


def _signature(op: str) -> str:
    required, optional = OPS[op]
    return ", ".join(list(required) + [f"[{name}]" for name in optional]) or "no arguments"


def parse_edits(edits: str | Sequence[dict] | None) -> list[dict]:
    """Check an edit list (JSON text or a list of dicts) without a plan: each edit is an object with a
    known ``op`` and that operation's arguments, of the right kinds. Returns the list (copied)."""
    if edits is None:
        return []
    if isinstance(edits, str):
        if not edits.strip():
            return []
        try:
            edits = json.loads(edits)
        except json.JSONDecodeError as e:
            raise SemanticGenError(f"the edit list is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
                                   'it must look like [{"op": "cut", "start_s": 1.0, "end_s": 2.0}].') from None
    if not isinstance(edits, (list, tuple)):
        raise SemanticGenError(f"the edit list must be a JSON list of edits, got {type(edits).__name__}.")
    out = []
    for k, edit in enumerate(edits, 1):
        where = f"edit {k} of {len(edits)}"
        if not isinstance(edit, dict):
            raise SemanticGenError(f'{where}: each edit must be an object such as {{"op": "reverse"}}, got {edit!r}.')
        op = edit.get("op")
        if op not in OPS:
            raise SemanticGenError(
                f"{where}: unknown operation {op!r}. Known operations: {', '.join(sorted(OPS))}. (A workflow saved by "
                "a newer ComfyUI-SemanticGen may use operations this version lacks: update the pack.)")
        required, optional = OPS[op]
        args = {key: value for key, value in edit.items() if key != "op"}
        unknown = sorted(set(args) - set(required) - set(optional))
        if unknown:
            raise SemanticGenError(f"{where} ({op}): unknown argument{'s' if len(unknown) > 1 else ''} "
                                   f"{', '.join(map(repr, unknown))}; {op} takes {_signature(op)}.")
        missing = [name for name in required if name not in args]
        if missing:
            raise SemanticGenError(f"{where} ({op}): missing argument{'s' if len(missing) > 1 else ''} "
                                   f"{', '.join(map(repr, missing))}; {op} takes {_signature(op)}.")
        for name, value in args.items():
            check, what = _KINDS[{**required, **optional}[name]]
            if value is None and name not in required:
                continue
            if not check(value):
                raise SemanticGenError(f"{where} ({op}): {name} must be {what}, got {value!r}.")
        out.append(copy.deepcopy(edit))
    return out


@dataclass
class EditContext:
    """What edits may need beyond the plan.

    ``sources``: plans an edit names as its ``source`` (besides ``"self"``, the plan as edited so far).
    ``stage1`` / ``text_encoder`` / ``opts`` (default ``SamplingOptions``) / ``negative_prompt`` / ``aligner``:
    for ``regenerate``; an edit's own seed, steps, guidance, shift and sampler override ``opts`` (whose
    ``alignment`` weighs the aligner's guidance).
    ``cache``: a mapping that keeps regenerated plans, keyed by ``cache_key`` (say which models, aligner and
    text), the plan before the edit and the edit, so a later run with the same prefix reuses them.
    ``preview``: show the edits without sampling (the editor's instant preview): a ``regenerate`` that is
    not in the cache holds its span as it was (its prompt applied) and its position in the edit list
    (0-based) is added to ``pending``; one in the cache comes back exactly as sampled.
    """

    sources: dict[str, SemanticPlan] = field(default_factory=dict)
    stage1: Any = None
    text_encoder: Any = None
    opts: Any = None
    negative_prompt: str = ""
    aligner: Any = None
    progress: Callable[[int, int, torch.Tensor], None] | None = None
    should_stop: Callable[[], bool] | None = None
    cache: MutableMapping | None = None
    cache_key: str = ""
    preview: bool = False
    pending: list[int] = field(default_factory=list)


def _source(name: str, plan: SemanticPlan, context: EditContext) -> SemanticPlan:
    if name == "self":
        return plan
    if name in context.sources and context.sources[name] is not None:
        return context.sources[name]
    known = ", ".join(["'self'"] + [repr(k) for k, v in context.sources.items() if v is not None])
    raise SemanticGenError(f"source {name!r} is not connected (available: {known}); connect a plan to the edit node's "
                           f"'{name}' input, or use 'self' for the plan being edited.")


def held(plan: SemanticPlan, start_s: float | None = None, end_s: float | None = None,
         prompt: str | None = None) -> SemanticPlan:
    """What a preview shows for a ``regenerate`` it does not sample: the span's tokens as they were, under its
    new prompt (a shot of its own, as ``regenerate`` makes it), recorded as pending."""
    i0, i1 = step_range(plan, start_s, end_s, "regenerate")
    prompts = step_prompts(plan)
    if prompt is not None:
        prompts[i0:i1] = [prompt] * (i1 - i0)
    record = {"op": "regenerate", "start_s": start_s, "end_s": end_s, "prompt": prompt, "pending": True}
    return _rebuild(plan, _steps_of(plan, range(plan.grid[0])), record, tokens=plan.tokens.clone(), prompts=prompts)


def _regenerate(plan: SemanticPlan, edit: dict, context: EditContext, position: int) -> SemanticPlan:
    from .sampling import SamplingOptions

    base = context.opts if context.opts is not None else SamplingOptions()
    opts = SamplingOptions(**{k: edit.get(k, getattr(base, k)) for k in SAMPLING_KEYS}, alignment=base.alignment,
                           alignment_stop=base.alignment_stop)
    key = None
    if context.cache is not None:
        key = (context.cache_key, plan_fingerprint(plan), json.dumps(edit, sort_keys=True),
               json.dumps([getattr(opts, k) for k in SAMPLING_KEYS] + [opts.alignment]), context.negative_prompt)
        if key in context.cache:
            return context.cache[key]
    if context.preview:
        context.pending.append(position)
        return held(plan, edit.get("start_s"), edit.get("end_s"), edit.get("prompt"))
    if context.stage1 is None or context.text_encoder is None:
        raise SemanticGenError("regenerate needs stage 1 and a text encoder: connect a stage-1 model and the "
                               "conditioning (and a text encoder for a new prompt) to the edit node.")
    out = regenerate(plan, edit.get("start_s"), edit.get("end_s"), context.stage1, context.text_encoder, opts,
                     prompt=edit.get("prompt"), negative_prompt=context.negative_prompt, progress=context.progress,
                     should_stop=context.should_stop, aligner=context.aligner)
    if key is not None:
        context.cache[key] = out
    return out


def apply_edit(plan: SemanticPlan, edit: dict, context: EditContext | None = None,
               position: int = 0) -> SemanticPlan:
    """Apply one checked edit (see ``parse_edits``); ``position``: its place in its edit list (0-based)."""
    context = context or EditContext()
    op, a = edit["op"], edit
    if op == "cut":
        return cut(plan, a["start_s"], a["end_s"])
    if op == "splice":
        return splice(plan, _source(a["source"], plan, context), a["at_s"], a.get("start_s"), a.get("end_s"))
    if op == "concatenate":
        return concatenate(plan, _source(a["source"], plan, context))
    if op == "move":
        return move(plan, a["start_s"], a["end_s"], a["to_s"])
    if op == "reverse":
        return reverse(plan, a.get("start_s"), a.get("end_s"))
    if op == "repeat":
        return repeat(plan, a.get("start_s"), a.get("end_s"), a.get("times") or 2)
    if op == "interpolate":
        return interpolate(plan, a.get("start_s"), a.get("end_s"), a.get("from_s"), a.get("to_s"),
                           a.get("mode") or "linear")
    if op == "blend":
        return blend(plan, _source(a["source"], plan, context), a["weight"], a.get("start_s"), a.get("end_s"),
                     a.get("mode") or "linear")
    if op == "regenerate":
        return _regenerate(plan, edit, context, position)
    raise SemanticGenError(f"unknown operation {op!r}; known operations: {', '.join(sorted(OPS))}.")


def apply_edits(plan: SemanticPlan, edits: str | Sequence[dict] | None,
                context: EditContext | None = None) -> SemanticPlan:
    """Apply an edit list (JSON text or list of dicts) in order; each edit's times refer to the plan as
    the edits before it left it. Errors name the edit (``edit 2 of 3 (cut): ...``)."""
    checked = parse_edits(edits)
    context = context or EditContext()
    for k, edit in enumerate(checked, 1):
        try:
            plan = apply_edit(plan, edit, context, k - 1)
        except SemanticGenError as e:
            raise SemanticGenError(f"edit {k} of {len(checked)} ({edit['op']}): {e}") from e
    return plan


# -- looking at a plan -----------------------------------------------------------------------------


@dataclass
class PCABasis:
    """Three principal directions of a plan's tokens and the range each is shown over (for RGB)."""

    mean: torch.Tensor        # [c]
    components: torch.Tensor  # [c, 3]
    lo: torch.Tensor          # [3]
    hi: torch.Tensor          # [3]


def pca_basis(tokens: torch.Tensor) -> PCABasis:
    """PCA of all tokens ``[..., c]`` (one basis for the whole plan, so colours mean the same at every
    step); each component is shown over its 2nd..98th percentile, signs fixed for stable colours."""
    x = tokens.detach().reshape(-1, tokens.shape[-1]).double().cpu()
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / max(1, x.shape[0] - 1)
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    comps = vectors.flip(-1)[:, :3]
    if comps.shape[1] < 3:
        comps = torch.cat([comps, torch.zeros(comps.shape[0], 3 - comps.shape[1], dtype=comps.dtype)], 1)
    signs = torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = centred @ comps
    lo, hi = torch.quantile(proj, 0.02, dim=0), torch.quantile(proj, 0.98, dim=0)
    return PCABasis(mean.float(), comps.float(), lo.float(), hi.float())


def pca_rgb(tokens: torch.Tensor, basis: PCABasis | None = None) -> torch.Tensor:
    """Tokens ``[T, h, w, c]`` -> colours ``[T, h, w, 3]`` in 0..1 (``basis`` defaults to their own)."""
    basis = basis or pca_basis(tokens)
    proj = (tokens.detach().float().cpu() - basis.mean) @ basis.components
    span = basis.hi - basis.lo
    rgb = torch.where(span > 1e-8, (proj - basis.lo) / torch.where(span > 1e-8, span, torch.ones_like(span)),
                      torch.full_like(proj, 0.5))
    return rgb.clamp(0, 1)
