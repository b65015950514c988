"""Plan editing (semanticgen_core.plan_ops): every operation checked by value (which tokens land where,
frames, duration, segments, history), its bad inputs, regenerate's held steps, edit lists, and the edit
and preview nodes."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math

import pytest
import torch

from semanticgen_core import plan_ops as ops
from semanticgen_core.errors import SemanticGenError
from semanticgen_core.plan import Segment, SemanticPlan
from semanticgen_core.sampling import SamplingOptions, initial_noise, make_scheduler


def make_plan(steps=9, fps=2.0, video_fps=8.0, frames=33, grid=(2, 3), channels=4, segments=None, offset=0.0,
              compressor="c8", **kw) -> SemanticPlan:
    """Token ``[i, y, x, c] = offset + i + (y * w + x) / 100 + c / 1000``: each step's tokens name it."""
    h, w = grid
    base = torch.arange(steps, dtype=torch.float32)[:, None, None, None] + offset
    cell = (torch.arange(h * w, dtype=torch.float32).reshape(1, h, w, 1) / 100)
    chan = torch.arange(channels, dtype=torch.float32).reshape(1, 1, 1, channels) / 1000
    duration = frames / video_fps
    if segments is None:
        segments = [Segment(0.0, 2.0, "first"), Segment(2.0, duration, "second")]
    return SemanticPlan(tokens=(base + cell + chan).contiguous(), fps=fps, video_fps=video_fps, num_frames=frames,
                        height=8 * h, width=8 * w, segments=segments, encoder="enc", compressor=compressor, seed=5, **kw)


def order(plan: SemanticPlan, offset=0.0) -> list[float]:
    """The source step of each step (from the token values)."""
    return [round(v - offset, 3) for v in plan.tokens[:, 0, 0, 0].tolist()]


def segs(plan: SemanticPlan) -> list[tuple]:
    return [(s.start_s, s.end_s, s.prompt) for s in plan.segments]


# -- time base ---------------------------------------------------------------------------------------


def test_ranges_cover_the_steps_they_touch_and_points_snap_to_boundaries():
    p = make_plan()  # 9 steps of 0.5 s, 4.125 s: the last step is 0.125 s
    assert ops.step_range(p, 0.5, 1.5) == (1, 3)
    assert ops.step_range(p, 0.6, 1.4) == (1, 3)            # partly covered steps count
    assert ops.step_range(p, 0.1 * 3, 0.5 + 1e-9) == (0, 1)  # float noise does not add a step
    assert ops.step_range(p, 4.0, 4.125) == (8, 9) and ops.step_range(p) == (0, 9)
    assert ops.step_range(p, 3.9, p.duration_s) == (7, 9)
    assert [ops.boundary_at(p, t) for t in (0, 0.2, 0.3, 1.0, 4.0, 4.1, 4.125)] == [0, 0, 1, 2, 8, 8, 9]
    assert ops.step_times(p, 1, 3) == (0.5, 1.5) and ops.step_times(p, 7, 9) == (3.5, 4.125)
    assert ops.step_frames(p) == [4] * 8 + [1] and sum(ops.step_frames(p)) == 33
    assert ops.step_prompts(p) == ["first"] * 4 + ["second"] * 5


@pytest.mark.parametrize("args,message", [
    ((3.0, 9.0), r"cut: the range 3\.\.9 s is outside the plan, which covers 0\.\.4\.125 s \(9 steps of 0\.5 s\)"),
    ((-1.0, 1.0), r"outside the plan"),
    ((2.0, 2.0), r"the range 2\.\.2 s is empty"),
    ((2.0, 1.0), r"empty: start_s must be before end_s"),
    (("1", 2.0), r"start_s must be a time in seconds \(a number\), got '1'"),
    ((True, 2.0), r"start_s must be a time in seconds"),
    ((1.0, float("nan")), r"end_s must be a time in seconds"),
])
def test_bad_ranges_are_named(args, message):
    with pytest.raises(SemanticGenError, match=message):
        ops.cut(make_plan(), *args)


# -- rearranging -------------------------------------------------------------------------------------


def test_cut_removes_steps_frames_and_time():
    p = make_plan()
    q = ops.cut(p, 0.5, 1.5)
    assert order(q) == [0, 3, 4, 5, 6, 7, 8] and q.num_frames == 25 and q.duration_s == 3.125
    assert segs(q) == [(0.0, 1.0, "first"), (1.0, 3.125, "second")]
    assert q.history == [{"op": "cut", "start_s": 0.5, "end_s": 1.5}]
    assert p.grid[0] == 9 and p.history == []  # pure: the input is untouched
    tail = ops.cut(p, 3.0, p.duration_s)  # to the end: the video ends with the last kept step
    assert order(tail) == [0, 1, 2, 3, 4, 5] and tail.num_frames == 24 and segs(tail)[-1] == (2.0, 3.0, "second")
    head = ops.cut(p, 0, 2.0)
    assert order(head) == [4, 5, 6, 7, 8] and head.num_frames == 17 and segs(head) == [(0.0, 2.125, "second")]
    with pytest.raises(SemanticGenError, match=r"cut: removing 0\.\.4\.125 s would leave an empty plan"):
        ops.cut(p, 0, p.duration_s)


def test_move_forward_and_back():
    p = make_plan()
    fwd = ops.move(p, 0, 1.0, 3.0)  # steps 0-1 dropped at the boundary before step 6
    assert order(fwd) == [2, 3, 4, 5, 0, 1, 6, 7, 8] and fwd.num_frames == 33
    assert segs(fwd) == [(0.0, 1.0, "first"), (1.0, 2.0, "second"), (2.0, 3.0, "first"), (3.0, 4.125, "second")]
    back = ops.move(p, 3.0, 4.0, 0.5)
    assert order(back) == [0, 6, 7, 1, 2, 3, 4, 5, 8]
    to_end = ops.move(p, 0.0, 0.5, p.duration_s)
    assert order(to_end) == [1, 2, 3, 4, 5, 6, 7, 8, 0] and to_end.num_frames == 33
    assert order(ops.move(p, 1.0, 2.0, 1.0)) == list(range(9))  # onto its own start: unchanged
    assert fwd.history == [{"op": "move", "start_s": 0, "end_s": 1.0, "to_s": 3.0}]
    with pytest.raises(SemanticGenError, match=r"move: to_s=1\.5 s lies inside the moved range 1\.\.2\.5 s"):
        ops.move(p, 1.0, 2.5, 1.5)
    with pytest.raises(SemanticGenError, match=r"move: to_s=5 s is outside the plan"):
        ops.move(p, 1.0, 2.0, 5.0)


def test_reverse_keeps_the_length_and_carries_prompts():
    p = make_plan()
    whole = ops.reverse(p)
    assert order(whole) == list(range(8, -1, -1)) and whole.num_frames == 33 and whole.duration_s == p.duration_s
    assert segs(whole) == [(0.0, 2.5, "second"), (2.5, 4.125, "first")]
    part = ops.reverse(p, 0.5, 1.5)
    assert order(part) == [0, 2, 1, 3, 4, 5, 6, 7, 8]
    # steps of one prompt only: the segments are kept exactly, sub-step bounds included
    odd = make_plan(segments=[Segment(0.0, 1.3, "a"), Segment(1.3, 4.125, "b")])
    assert segs(ops.reverse(odd, 2.0, 4.0)) == [(0.0, 1.3, "a"), (1.3, 4.125, "b")]
    assert ops.reverse(p, 1.0, 2.0).history == [{"op": "reverse", "start_s": 1.0, "end_s": 2.0}]


def test_repeat_duplicates_a_range():
    p = make_plan()
    q = ops.repeat(p, 1.0, 2.0, times=3)
    assert order(q) == [0, 1, 2, 3, 2, 3, 2, 3, 4, 5, 6, 7, 8] and q.num_frames == 49
    assert segs(q) == [(0.0, 4.0, "first"), (4.0, 6.125, "second")]
    assert order(ops.repeat(p, 1.0, 2.0, times=1)) == list(range(9))
    assert q.history == [{"op": "repeat", "start_s": 1.0, "end_s": 2.0, "times": 3}]
    for bad in (0, 1001, 2.0, True):
        with pytest.raises(SemanticGenError, match="repeat: times must be a whole number from 1 to 1000"):
            ops.repeat(p, 1.0, 2.0, times=bad)


def test_splice_and_concatenate_take_steps_from_another_plan():
    p = make_plan()
    other = make_plan(steps=5, frames=17, offset=100.0, segments=[Segment(0.0, 2.125, "other")])
    q = ops.splice(p, other, at_s=1.0, start_s=0.5, end_s=1.5)
    assert order(q) == [0, 1, 101, 102, 2, 3, 4, 5, 6, 7, 8] and q.num_frames == 41
    assert segs(q) == [(0.0, 1.0, "first"), (1.0, 2.0, "other"), (2.0, 3.0, "first"), (3.0, 5.125, "second")]
    (record,) = q.history
    assert record["op"] == "splice" and record["at_s"] == 1.0 and record["source"]["steps"] == 5
    assert record["source"]["fingerprint"] == ops.plan_fingerprint(other)[:16]
    cat = ops.concatenate(p, other)
    assert order(cat) == list(range(9)) + [100, 101, 102, 103, 104]
    # p's short last step (1 frame) is now in the middle, where a step spans a whole 0.5 s: 33 + 17 -> 53
    assert cat.grid[0] == 14 and cat.num_frames == 53 and cat.duration_s == 6.625
    assert segs(cat)[-1] == (4.5, 6.625, "other")
    twice = ops.concatenate(p, p)
    assert twice.num_frames == 69 and order(twice) == list(range(9)) * 2
    with pytest.raises(SemanticGenError, match="concatenate: give at least one more plan"):
        ops.concatenate(p)


@pytest.mark.parametrize("other,message", [
    (dict(grid=(3, 3)), r"different grids: this one has 2x3 tokens of 4 channels, the other 3x3 tokens of 4"),
    (dict(channels=8), r"different grids: .* the other 2x3 tokens of 8 channels"),
    (dict(compressor="other"), r"different compressors \('c8' and 'other'"),
    (dict(fps=1.0, frames=65, steps=9), r"different fps \(2\.0 and 1\.0\)"),
    (dict(video_fps=16.0, frames=66), r"different video_fps"),
])
def test_plans_that_do_not_fit_together_are_refused(other, message):
    p = make_plan()
    q = make_plan(**other)
    for call in (lambda: ops.splice(p, q, 1.0), lambda: ops.concatenate(p, q), lambda: ops.blend(p, q, 0.5)):
        with pytest.raises(SemanticGenError, match=message):
            call()
    with pytest.raises(SemanticGenError, match="expected a SemanticPlan"):
        ops.concatenate(p, "plan.safetensors")


# -- mixing tokens -----------------------------------------------------------------------------------


def test_interpolate_bridges_the_neighbours():
    p = make_plan()
    x = p.tokens
    q = ops.interpolate(p, 1.0, 2.5)  # steps 2-4 become a transition from step 1 to step 5
    for k, w in zip((2, 3, 4), (0.25, 0.5, 0.75)):
        assert torch.allclose(q.tokens[k], (1 - w) * x[1] + w * x[5])
    assert torch.equal(q.tokens[:2], x[:2]) and torch.equal(q.tokens[5:], x[5:])
    assert q.num_frames == 33 and q.segments == p.segments
    edge = ops.interpolate(p, 0, 1.0)  # at the start: the first step is the first moment, kept
    assert torch.equal(edge.tokens[0], x[0]) and torch.allclose(edge.tokens[1], (x[0] + x[2]) / 2)
    moments = ops.interpolate(p, 1.0, 2.0, from_s=4.0, to_s=0.2)  # explicit moments: step 8 -> step 0
    assert torch.allclose(moments.tokens[2], 2 / 3 * x[8] + 1 / 3 * x[0], atol=1e-6)
    assert moments.history == [{"op": "interpolate", "start_s": 1.0, "end_s": 2.0, "from_s": 4.0, "to_s": 0.2,
                                "mode": "linear"}]
    with pytest.raises(SemanticGenError, match="interpolate: mode must be one of linear, slerp"):
        ops.interpolate(p, 1.0, 2.0, mode="cubic")


def test_slerp_turns_token_directions_at_constant_speed():
    a = torch.tensor([[1.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0]])
    mid = ops.slerp(a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5), 0.0]]), atol=1e-6)
    third = ops.slerp(a, b, 1 / 3)
    assert torch.allclose(third.norm(dim=-1), torch.ones(1)) and math.isclose(
        math.degrees(math.atan2(third[0, 1], third[0, 0])), 30.0, abs_tol=1e-4)
    assert torch.allclose(ops.slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: linear
    assert torch.allclose(ops.slerp(torch.zeros(1, 3), b, 0.25), 0.25 * b)  # zero: linear
    # in a plan: per token, over channels
    tokens = torch.nn.functional.normalize(torch.randn(5, 2, 2, 6, generator=torch.Generator().manual_seed(1)), dim=-1)
    p = SemanticPlan(tokens=tokens, fps=1.0, video_fps=8.0, num_frames=40, height=16, width=16,
                     segments=[Segment(0.0, 5.0, "x")], encoder="e", compressor="c")
    q = ops.interpolate(p, 1.0, 4.0, mode="slerp")
    assert torch.allclose(q.tokens[2], ops.slerp(tokens[0], tokens[4], 0.5), atol=1e-6)
    assert torch.allclose(q.tokens[1:4].norm(dim=-1), torch.ones(3, 2, 2), atol=1e-5)


def test_blend_mixes_two_plans_step_by_step():
    p = make_plan()
    other = make_plan(offset=100.0)
    q = ops.blend(p, other, 0.25, 1.0, 2.0)
    assert torch.allclose(q.tokens[2:4], 0.75 * p.tokens[2:4] + 0.25 * other.tokens[2:4])
    assert torch.equal(q.tokens[:2], p.tokens[:2]) and torch.equal(q.tokens[4:], p.tokens[4:])
    assert q.segments == p.segments and q.num_frames == 33
    assert q.history[0]["op"] == "blend" and q.history[0]["weight"] == 0.25
    assert torch.allclose(ops.blend(p, other, 1.0).tokens, other.tokens)
    short = make_plan(steps=3, frames=9, offset=100.0, segments=[])
    assert torch.allclose(ops.blend(p, short, 0.5, 0.0, 1.5).tokens[:3], (p.tokens[:3] + short.tokens) / 2)
    with pytest.raises(SemanticGenError, match=r"blend: the other plan has 3 steps \(1\.125 s\) but the range 1\.\.2 s "
                                               r"needs steps up to 4"):
        ops.blend(p, short, 0.5, 1.0, 2.0)
    with pytest.raises(SemanticGenError, match="blend: weight must be between 0 and 1, got 1.5"):
        ops.blend(p, other, 1.5)


# -- regenerate ---------------------------------------------------------------------------------------


class FakeText:
    """Deterministic embeddings per prompt (a text encoder's interface), counting what it encodes."""

    def __init__(self, dim: int):
        self.dim, self.seen = dim, []

    def encode(self, prompts):
        self.seen.append(list(prompts))
        rows = [torch.randn(1, 6, self.dim, generator=torch.Generator().manual_seed(sum(map(ord, p)) + 7))
                for p in prompts]
        return torch.cat(rows), None


@pytest.fixture(scope="module")
def stage1():
    from semanticgen_core.semantic_dit import SemanticDiT

    torch.manual_seed(0)
    return SemanticDiT(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16,
                       freq_dim=16, ffn_dim=32, num_layers=1).eval()


def test_regenerate_resamples_the_span_and_holds_the_rest_at_every_step(stage1, monkeypatch):
    p = make_plan()
    opts = SamplingOptions(steps=4, guidance=2.0, seed=3)
    seen = []
    velocity = stage1.velocity

    def spy(x, t, text, shot_starts=None):
        seen.append((x.clone(), shot_starts))
        return velocity(x, t, text, shot_starts)

    monkeypatch.setattr(stage1, "velocity", spy)
    q = ops.regenerate(p, 1.0, 2.0, stage1, FakeText(16), opts)
    assert torch.equal(q.tokens[:2], p.tokens[:2]) and torch.equal(q.tokens[4:], p.tokens[4:])  # held, bit for bit
    assert not torch.allclose(q.tokens[2:4], p.tokens[2:4])  # the span is new
    assert q.segments == p.segments and q.num_frames == 33
    # the held steps entered every model call re-noised to that step's level, with the sampler's own noise
    noise = initial_noise((1, *p.tokens.shape), opts.seed)
    sigmas = make_scheduler(opts).sigmas
    assert len(seen) == 4 and seen[0][1] == [0.0, 4.0]  # two shots (the plan's two prompts), guided batch of 2
    for (x, _), sigma in zip(seen, sigmas):
        held = (1 - sigma) * p.tokens + sigma * noise[0]
        assert torch.allclose(x[0, :2], held[:2], atol=1e-5) and torch.allclose(x[0, 4:], held[4:], atol=1e-5)
    assert q.history == [{"op": "regenerate", "start_s": 1.0, "end_s": 2.0, "seed": 3, "steps": 4, "sampler": "euler",
                          "guidance": 2.0, "shift": 3.0}]
    monkeypatch.undo()
    again = ops.regenerate(p, 1.0, 2.0, stage1, FakeText(16), opts)
    assert torch.equal(again.tokens, q.tokens)  # seeded
    other_seed = ops.regenerate(p, 1.0, 2.0, stage1, FakeText(16), SamplingOptions(steps=4, guidance=2.0, seed=4))
    assert not torch.equal(other_seed.tokens[2:4], q.tokens[2:4])


def test_regenerate_under_a_new_prompt_makes_it_a_shot(stage1, monkeypatch):
    p = make_plan(segments=[Segment(0.0, 4.125, "a red circle")])
    text = FakeText(16)
    starts = []
    velocity = stage1.velocity
    monkeypatch.setattr(stage1, "velocity", lambda x, t, c, shot_starts=None: (starts.append(shot_starts),
                                                                                 velocity(x, t, c, shot_starts))[1])
    q = ops.regenerate(p, 1.0, 2.0, stage1, text, SamplingOptions(steps=2, guidance=1.0), prompt="a blue star")
    assert segs(q) == [(0.0, 1.0, "a red circle"), (1.0, 2.0, "a blue star"), (2.0, 4.125, "a red circle")]
    assert text.seen[0] == ["a red circle", "a blue star", "a red circle"] and text.seen[1] == ["", "", ""]
    assert starts == [[0.0, 2.0, 4.0]] * 2
    assert q.history[0]["prompt"] == "a blue star"
    assert torch.equal(q.tokens[:2], p.tokens[:2]) and torch.equal(q.tokens[4:], p.tokens[4:])


def test_regenerate_steers_the_span_toward_its_prompt_with_an_aligner(stage1):
    """With an aligner and a weight, regenerate samples as stage 1 does with alignment guidance: the new span
    scores higher against its prompt, the held steps stay bit for bit, and weight 0 is no guidance at all."""
    from semanticgen_core.plan_alignment import PlanTextAligner

    torch.manual_seed(0)
    aligner = PlanTextAligner(text_dim=16, plan_dim=4, embed_dim=8, hidden_dim=16, num_heads=2, steps=4, grid=(2, 2))
    p = make_plan(segments=[Segment(0.0, 4.125, "a red circle")])

    def run(weight, with_aligner=True):
        return ops.regenerate(p, 1.0, 3.0, stage1, FakeText(16), SamplingOptions(steps=4, guidance=2.0, seed=3,
                                                                                 alignment=weight),
                              prompt="a blue star", aligner=aligner if with_aligner else None)

    plain = run(None, with_aligner=False)
    assert torch.equal(run(0.0).tokens, plain.tokens) and "alignment" not in plain.history[0]
    steered = run(5.0)  # (this random aligner overshoots by 50)
    assert torch.equal(steered.tokens[:2], p.tokens[:2]) and torch.equal(steered.tokens[6:], p.tokens[6:])
    assert steered.history[0]["alignment"] == 5.0
    text, _ = FakeText(16).encode(["a blue star"])
    with torch.no_grad():
        score = [aligner.score(text, q.tokens[None, 2:6]).item() for q in (plain, steered)]
    assert score[1] > score[0] + 0.5, score


def test_regenerate_refuses_what_cannot_work(stage1):
    opts = SamplingOptions(steps=1)
    with pytest.raises(SemanticGenError, match="this stage 1 writes 4-channel plans but the plan has 8 channels"):
        ops.regenerate(make_plan(channels=8), 0, 1, stage1, FakeText(16), opts)
    with pytest.raises(SemanticGenError, match="the text encoder gives 32-d embeddings but this stage 1 reads 16-d"):
        ops.regenerate(make_plan(), 0, 1, stage1, FakeText(32), opts)
    with pytest.raises(SemanticGenError, match="needs a text encoder"):
        ops.regenerate(make_plan(), 0, 1, stage1, None, opts)
    with pytest.raises(SemanticGenError, match="regenerate: the range 0\\.\\.9 s is outside the plan"):
        ops.regenerate(make_plan(), 0, 9, stage1, FakeText(16), opts)


# -- edit lists ---------------------------------------------------------------------------------------


def test_apply_edits_runs_a_json_list_in_order_and_records_it():
    p = make_plan()
    edits = [{"op": "cut", "start_s": 0.5, "end_s": 1.5}, {"op": "reverse"},
             {"op": "splice", "source": "self", "at_s": 0, "start_s": 2.5, "end_s": 3.125},
             {"op": "repeat", "start_s": 0, "end_s": 0.5}]
    q = ops.apply_edits(p, json.dumps(edits))
    # cut -> 0 3 4 5 6 7 8; reverse -> 8 7 6 5 4 3 0; splice steps 5-6 (3 0) at 0; repeat the first step
    assert order(q) == [3, 3, 0, 8, 7, 6, 5, 4, 3, 0]
    assert q.history == edits[:2] + [{**edits[2], "source": q.history[2]["source"]}] + [{**edits[3], "times": 2}]
    assert q.history[2]["source"]["steps"] == 7  # a splice records the plan it took steps from
    assert ops.apply_edits(p, "") == p and ops.apply_edits(p, "[]") == p and ops.apply_edits(p, None) == p
    other = make_plan(offset=100.0)
    both = ops.apply_edits(p, [{"op": "concatenate", "source": "other"}, {"op": "blend", "source": "other",
                                                                          "weight": 0.5, "end_s": 1.0}],
                           ops.EditContext(sources={"other": other}))
    assert both.grid[0] == 18 and torch.allclose(both.tokens[0], (p.tokens[0] + other.tokens[0]) / 2)


@pytest.mark.parametrize("edits,message", [
    ('[{"op": "explode", "start_s": 1}]',
     r"edit 1 of 1: unknown operation 'explode'\. Known operations: blend, concatenate, cut, interpolate, move, "
     r"regenerate, repeat, reverse, splice"),
    ([{"op": "reverse"}, {"start_s": 1}], r"edit 2 of 2: unknown operation None"),
    ([{"op": "cut", "start_s": 1}], r"edit 1 of 1 \(cut\): missing argument 'end_s'; cut takes start_s, end_s"),
    ([{"op": "move", "start_s": 1, "end_s": 2, "to": 3}],
     r"unknown argument 'to'; move takes start_s, end_s, to_s"),
    ([{"op": "repeat", "times": "twice"}], r"\(repeat\): times must be a whole number from 1 to 1000, got 'twice'"),
    ([{"op": "interpolate", "mode": "cubic"}], r"mode must be one of linear, slerp, got 'cubic'"),
    ([{"op": "blend", "source": "other"}], r"missing argument 'weight'"),
    ([{"op": "regenerate", "sampler": "ddim"}], r"sampler must be euler or unipc"),
    ('{"op": "cut"}', r"the edit list must be a JSON list of edits, got dict"),
    ('[{"op": "cut",]', r"the edit list is not valid JSON \(.* at line 1, column \d+\)"),
    ([3], r"edit 1 of 1: each edit must be an object"),
])
def test_bad_edit_lists_are_named(edits, message):
    with pytest.raises(SemanticGenError, match=message):
        ops.parse_edits(edits)
    with pytest.raises(SemanticGenError, match=message):
        ops.apply_edits(make_plan(), edits)


def test_edit_errors_at_apply_time_name_the_edit():
    p = make_plan()
    with pytest.raises(SemanticGenError, match=r"edit 2 of 2 \(cut\): cut: the range 3\.\.9 s is outside the plan"):
        ops.apply_edits(p, [{"op": "reverse"}, {"op": "cut", "start_s": 3, "end_s": 9}])
    with pytest.raises(SemanticGenError, match=r"edit 1 of 1 \(splice\): source 'other' is not connected "
                                               r"\(available: 'self'\); connect a plan to the edit node's 'other'"):
        ops.apply_edits(p, [{"op": "splice", "source": "other", "at_s": 0}])
    with pytest.raises(SemanticGenError, match=r"edit 1 of 1 \(regenerate\): regenerate needs stage 1 and a text "
                                               r"encoder"):
        ops.apply_edits(p, [{"op": "regenerate", "start_s": 0, "end_s": 1}])


def test_regenerated_spans_are_reused_from_the_cache(stage1, monkeypatch):
    p = make_plan()
    cache: dict = {}
    context = ops.EditContext(stage1=stage1, text_encoder=FakeText(16), opts=SamplingOptions(steps=2), cache=cache,
                              cache_key="models")
    first = ops.apply_edits(p, [{"op": "regenerate", "start_s": 1, "end_s": 2, "seed": 9}], context)
    assert len(cache) == 1
    calls = []
    velocity = stage1.velocity
    monkeypatch.setattr(stage1, "velocity", lambda *a, **k: (calls.append(1), velocity(*a, **k))[1])
    more = ops.apply_edits(p, [{"op": "regenerate", "start_s": 1, "end_s": 2, "seed": 9}, {"op": "reverse"}], context)
    assert not calls and torch.equal(more.tokens, ops.reverse(first).tokens)  # reused, not sampled again
    ops.apply_edits(p, [{"op": "regenerate", "start_s": 1, "end_s": 2, "seed": 10}], context)
    assert calls and len(cache) == 2  # another seed is another result


def test_a_preview_holds_new_regenerations_and_reuses_sampled_ones(stage1):
    p = make_plan()
    cache: dict = {}
    run = ops.EditContext(stage1=stage1, text_encoder=FakeText(16), opts=SamplingOptions(steps=2), cache=cache,
                          cache_key="models")
    regen = {"op": "regenerate", "start_s": 1, "end_s": 2, "prompt": "new", "seed": 9}
    sampled = ops.apply_edits(p, [regen, {"op": "reverse"}], run)
    assert run.pending == []
    # a preview samples nothing: what was sampled before comes back exactly, a new seed holds its span
    preview = ops.EditContext(cache=cache, cache_key="models", opts=SamplingOptions(steps=2), preview=True)
    assert torch.equal(ops.apply_edits(p, [regen, {"op": "reverse"}], preview).tokens, sampled.tokens)
    assert preview.pending == []
    preview = ops.EditContext(cache=cache, cache_key="models", opts=SamplingOptions(steps=2), preview=True)
    again = ops.apply_edits(p, [{"op": "cut", "start_s": 0, "end_s": 0.5}, {**regen, "seed": 10}], preview)
    assert preview.pending == [1] and len(cache) == 1
    assert order(again) == order(ops.cut(p, 0, 0.5))  # the span holds the tokens it had
    assert segs(again) == [(0.0, 1.0, "first"), (1.0, 2.0, "new"), (2.0, 3.625, "second")]
    assert again.history[-1] == {"op": "regenerate", "start_s": 1, "end_s": 2, "prompt": "new", "pending": True}


# -- looking at a plan --------------------------------------------------------------------------------


def test_pca_rgb_is_one_basis_for_the_whole_plan():
    torch.manual_seed(0)
    tokens = torch.randn(4, 3, 5, 8)
    rgb = ops.pca_rgb(tokens)
    assert rgb.shape == (4, 3, 5, 3) and rgb.min() >= 0 and rgb.max() <= 1 and rgb.std() > 0.1
    basis = ops.pca_basis(tokens)
    assert torch.equal(ops.pca_rgb(tokens[1:2], basis), rgb[1:2])  # a step's colours do not depend on the others
    assert torch.allclose(basis.components.T @ basis.components, torch.eye(3), atol=1e-5)
    assert torch.equal(ops.pca_rgb(torch.ones(2, 2, 2, 8)), torch.full((2, 2, 2, 3), 0.5))


# -- the nodes -----------------------------------------------------------------------------------------


def _node_modules(pack):
    """The pack's edit node and the library's plan module (one import identity: the nodes use this one)."""
    import semanticgen_core.plan

    return importlib.import_module(f"{pack.__name__}.nodes.edit"), semanticgen_core.plan


def test_edit_node_applies_its_widget_and_sends_thumbnails(pack, tiny_models):
    edit, plan_mod = _node_modules(pack)
    p = plan_mod.SemanticPlan(tokens=make_plan().tokens, fps=2.0, video_fps=8.0, num_frames=33, height=16, width=24,
                              segments=[plan_mod.Segment(0.0, 4.125, "x")], encoder="e", compressor="c8")
    out = edit.SemanticGenEditPlan().edit(p, '[{"op":"cut","start_s":0,"end_s":1}]')
    result, conditioning = out["result"]
    assert conditioning is None  # none came in: none goes on to stage 2
    assert result.grid[0] == 7 and result.history == [{"op": "cut", "start_s": 0, "end_s": 1}]
    (payload,) = out["ui"]["semanticgen_plan"]
    assert payload["edits"] == [{"op": "cut", "start_s": 0, "end_s": 1}]
    assert payload["input"]["steps"] == 9 and payload["output"]["steps"] == 7 and payload["other"] is None
    assert payload["input"]["strip"].startswith("data:image/png;base64,") and payload["input"]["grid"] == [9, 2, 3]
    json.dumps(out["ui"])  # goes to the browser as JSON
    assert "unknown operation 'wobble'" in edit.SemanticGenEditPlan.VALIDATE_INPUTS('[{"op": "wobble"}]')
    assert edit.SemanticGenEditPlan.VALIDATE_INPUTS("[]") is True
    with pytest.raises(ValueError, match=r"regenerates a span \(edit 2\): connect SemanticGen Load Stage 1"):
        edit.SemanticGenEditPlan().edit(p, '[{"op":"reverse"},{"op":"regenerate"}]')
    assert edit.format_edits([{"op": "reverse"}, {"op": "cut", "start_s": 1, "end_s": 2}]) == \
        '[\n  {"op":"reverse"},\n  {"op":"cut","start_s":1,"end_s":2}\n]'


def test_preview_node_shows_one_image_per_step(pack, tiny_models):
    edit, plan_mod = _node_modules(pack)
    p = plan_mod.SemanticPlan(tokens=torch.randn(3, 2, 3, 8), fps=1.0, video_fps=8.0, num_frames=17, height=16,
                              width=24, segments=[], encoder="e", compressor="c8")
    out = edit.SemanticGenPlanPreview().preview(p, size=64)
    (images,) = out["result"]
    assert images.shape == (3, 42, 63, 3) and images.min() >= 0 and images.max() <= 1  # blocks of 21 px
    assert torch.equal(images[:, :21, :21], images[:, :1, :1].expand(3, 21, 21, 3))  # one token, one block
    files = out["ui"]["images"]
    assert len(files) == 3 and all(f["type"] == "temp" for f in files)
    assert all((pack.nodes.comfy.temp_dir() / f["filename"]).is_file() for f in files)


@pytest.fixture
def sampled(pack, tiny_models):
    """Through the nodes: the tiny stage 1, the embedded text encoder, a conditioning and a plan sampled from it."""
    nodes = pack.nodes
    stage1 = nodes.loaders.SemanticGenStage1Loader().load(tiny_models["stage1"])[0]
    text_encoder = nodes.loaders.SemanticGenTextEncoderLoader().load("embedded")[0]
    (cond,) = nodes.text.SemanticGenTextEncode().encode(text_encoder, "a red circle moving right")
    (plan,) = nodes.sampling.SemanticGenStage1Sample().sample(stage1, cond, 64, 64, 33, 8.0, 0, 2, 1.0, 3.0, "euler")
    return stage1, text_encoder, cond, plan


def test_edit_node_regenerates_with_the_loaded_models_and_reuses_the_result(pack, sampled, monkeypatch):
    edit, plan_mod = _node_modules(pack)
    stage1, text_encoder, cond, plan = sampled
    node = edit.SemanticGenEditPlan()
    regen = {"op": "regenerate", "start_s": 1, "end_s": 3, "prompt": "a blue star", "seed": 4, "steps": 2}
    edit.REGENERATED.clear()
    out, shots = node.edit(plan, json.dumps([regen]), stage1=stage1, conditioning=cond,
                           text_encoder=text_encoder)["result"]
    assert torch.equal(out.tokens[:1], plan.tokens[:1]) and torch.equal(out.tokens[3:], plan.tokens[3:])
    assert not torch.allclose(out.tokens[1:3], plan.tokens[1:3])
    assert [s.prompt for s in out.segments] == ["a red circle moving right", "a blue star", "a red circle moving right"]
    # Stage 2 gets the edited plan's shots: the new prompt's embedding for the regenerated span, the wire's elsewhere
    assert shots.prompt == "0-1 s: a red circle moving right; 1-3 s: a blue star; 3-4.125 s: a red circle moving right"
    assert shots.cond.shape == (1, 3, *cond.cond.shape[1:]) and shots.uncond.shape == shots.cond.shape
    assert torch.equal(shots.cond[:, 0], cond.cond) and torch.equal(shots.cond[:, 2], cond.cond)
    assert torch.equal(shots.cond[:, 1], text_encoder["text_encoder"].encode(["a blue star"])[0])
    assert all(torch.equal(shots.uncond[:, k], cond.uncond) for k in range(3))
    from semanticgen_core.shots import parse_shots

    assert parse_shots(shots.prompt, out.duration_s) == out.segments
    assert len(edit.REGENERATED) == 1
    calls = []
    dit = stage1["stage1"]
    velocity = dit.velocity
    monkeypatch.setattr(dit, "velocity", lambda *a, **k: (calls.append(1), velocity(*a, **k))[1])
    more, _ = node.edit(plan, json.dumps([regen, {"op": "cut", "start_s": 3, "end_s": 4}]), stage1=stage1,
                        conditioning=cond, text_encoder=text_encoder)["result"]
    assert not calls and len(edit.REGENERATED) == 1  # the regenerated span came from the cache
    assert torch.equal(more.tokens[:3], out.tokens[:3])
    with pytest.raises(ValueError, match=r"the prompt 'a blue star' needs encoding, but the edit node has the "
                                         r"conditioning's prompt 'a red circle moving right' and no text encoder"):
        node.edit(plan, json.dumps([{**regen, "seed": 5}]), stage1=stage1, conditioning=cond)
    foreign = dataclasses.replace(plan, compressor="wan2.1-1.3b")
    with pytest.raises(ValueError, match=r"this plan lives in the space of compressor 'wan2.1-1.3b' but stage 1 "):
        node.edit(foreign, json.dumps([regen]), stage1=stage1, conditioning=cond)


def test_edit_nodes_conditioning_carries_another_plans_prompt_when_it_can_encode_it(pack, sampled, caplog):
    import logging

    edit, plan_mod = _node_modules(pack)
    stage1, text_encoder, cond, plan = sampled
    other = dataclasses.replace(plan, segments=[plan_mod.Segment(0.0, plan.duration_s, "a green square")])
    joined = json.dumps([{"op": "concatenate", "source": "other"}])
    with caplog.at_level(logging.WARNING):
        out, passed = edit.SemanticGenEditPlan().edit(plan, joined, other=other, conditioning=cond)["result"]
    assert [s.prompt for s in out.segments] == ["a red circle moving right", "a green square"]
    assert passed is cond and "prompts the conditioning does not hold ('a green square')" in caplog.text
    _, shots = edit.SemanticGenEditPlan().edit(plan, joined, other=other, conditioning=cond,
                                               text_encoder=text_encoder)["result"]
    from semanticgen_core.shots import parse_shots

    assert shots.prompt.endswith(" s: a green square") and parse_shots(shots.prompt, out.duration_s) == out.segments
    assert torch.equal(shots.cond[:, 1], text_encoder["text_encoder"].encode(["a green square"])[0])


def test_the_preview_route_applies_edits_to_the_nodes_last_plan_without_sampling(pack, sampled):
    """What the timeline asks after each edit (``POST /semanticgen/edit_plan/preview``): the node's last input
    plan with the edits applied, drawn exactly as the node itself would send it after a run."""
    edit, _ = _node_modules(pack)
    stage1, text_encoder, cond, plan = sampled
    node = edit.SemanticGenEditPlan()
    edit.PLANS.clear()
    status, body = edit.preview_request({"node_id": "7", "edits": []})
    assert status == 200 and body["input"] is None  # not a failed request: an answer without a plan
    assert "node 7 has not run in this workflow since the server started: run the workflow once" in body["error"]
    regen = {"op": "regenerate", "start_s": 1, "end_s": 3, "prompt": "a blue star", "seed": 4, "steps": 2}
    run = node.edit(plan, json.dumps([regen]), stage1=stage1, conditioning=cond, text_encoder=text_encoder,
                    unique_id="7")
    (executed,) = run["ui"]["semanticgen_plan"]
    assert executed["pending"] == []
    # cheap edits after the run: exactly the payload a run with those edits sends, with nothing sampled
    edits = [regen, {"op": "reverse"}, {"op": "cut", "start_s": 0, "end_s": 1}]
    status, body = edit.preview_request({"node_id": "7", "edits": edits})
    assert status == 200 and body["pending"] == [] and body["edits"] == edits
    rerun = node.edit(plan, json.dumps(edits), stage1=stage1, conditioning=cond, text_encoder=text_encoder)
    (want,) = rerun["ui"]["semanticgen_plan"]
    assert body["output"] == want["output"] and body["input"] == executed["input"]
    assert body["output"]["steps"] == plan.grid[0] - 1
    # a regeneration not sampled yet is pending; its span keeps its tokens; the prompt is shown
    status, body = edit.preview_request({"node_id": 7, "edits": json.dumps([{**regen, "seed": 99}])})
    assert status == 200 and body["pending"] == [0]
    held = edit.plan_payload(ops.held(plan, 1, 3, "a blue star"), ops.pca_basis(plan.tokens))
    assert body["output"] == held
    assert [s["prompt"] for s in body["output"]["segments"]] == ["a red circle moving right", "a blue star",
                                                                 "a red circle moving right"]
    # bad requests say what was wrong
    status, body = edit.preview_request({"node_id": "7", "edits": [{"op": "cut", "start_s": 0, "end_s": 99}]})
    assert status == 400 and body["error"].startswith("edit 1 of 1 (cut): cut: the range 0..99 s is outside the plan")
    status, body = edit.preview_request({"edits": []})
    assert status == 400 and "node_id" in body["error"]
    json.dumps(body)


def test_the_preview_route_keeps_each_workflows_node_apart(pack, tiny_models):
    """Node ids repeat across workflows: the route answers with the plan of the node in the asking workflow
    (the id the frontend sends with each prompt, which the node reads from extra_pnginfo), never another
    workflow's. A node ComfyUI served from its cache is the exception that proves it: the output reused is
    the latest run of that node id, so a workflow whose id changed since (opened again without a saved id)
    still fills on Run."""
    edit, plan_mod = _node_modules(pack)
    plan = plan_mod.SemanticPlan(tokens=make_plan().tokens, fps=2.0, video_fps=8.0, num_frames=33, height=16,
                                 width=24, segments=[plan_mod.Segment(0.0, 4.125, "x")], encoder="e", compressor="c8")
    node, cut = edit.SemanticGenEditPlan(), [{"op": "cut", "start_s": 0, "end_s": 1}]
    assert node.INPUT_TYPES()["hidden"] == {"unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"}
    edit.PLANS.clear()
    node.edit(plan, json.dumps(cut), unique_id="9", extra_pnginfo={"workflow": {"id": "wf-a", "nodes": []}})
    ask = lambda workflow, **kw: edit.preview_request({"workflow_id": workflow, "node_id": "9", "edits": cut, **kw})  # noqa: E731
    status, body = ask("wf-a")
    assert status == 200 and body["output"]["steps"] == 7
    status, body = ask("wf-b")  # another workflow's node 9, opened or edited: not wf-a's plan
    assert status == 200 and body["input"] is None and "has not run in this workflow" in body["error"]
    assert ask("")[1]["input"] is None  # nor a request without a workflow id
    assert ask("wf-b", cached=True, edits=[])[1]["input"] is None  # cached, but other edits: another run's output
    status, body = ask("wf-b", cached=True)  # served from ComfyUI's cache: wf-a's run made that output
    assert status == 200 and body["output"]["steps"] == 7
    assert ask("wf-b")[0] == 200  # and wf-b's previews find it from now on
    # a prompt queued without a workflow (the API format) is kept under "", apart from the workflows
    node.edit(plan, "[]", unique_id="9", extra_pnginfo=None)
    assert edit.preview_request({"node_id": "9", "edits": []})[0] == 200
    assert ask("wf-a")[1]["output"]["steps"] == 7
    assert edit.workflow_id({"workflow": {"id": None}}) == edit.workflow_id("junk") == ""


def test_the_preview_benchmark_times_each_edit_list(capsys, monkeypatch):
    import runpy
    import sys
    from pathlib import Path

    monkeypatch.setattr(sys, "argv", ["edit_preview.py", "--seconds", "8", "--runs", "1"])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "bench" / "edit_preview.py"), run_name="__main__")
    finally:  # the script sets its own thread count; later tests compare weights bit for bit across processes
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "plan: 17 steps of 4x4 tokens (8.1 s)" in out
    rows = [line for line in out.splitlines() if "(target 1000 ms:" in line]
    assert len(rows) == 4 and rows[-1].endswith("pending [0])") and rows[0].endswith("pending [])")
