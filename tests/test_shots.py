"""Multi-shot prompts: parsing, errors, and where each shot starts on a model's time axis."""

import pytest
import torch

from semanticgen_core.errors import SemanticGenError
from semanticgen_core.plan import Segment
from semanticgen_core.shots import format_shots, parse_shots, shot_starts
from semanticgen_core.wan_blocks import shot_routing


def test_plain_prompt_is_one_shot_over_the_whole_video():
    assert parse_shots("a red circle bouncing", 4.125) == [Segment(0.0, 4.125, "a red circle bouncing")]


def test_timed_prompt_round_trips():
    prompt = "0-8 s: a red circle bouncing over blue stripes; 8-20 s: a large yellow star growing"
    segs = parse_shots(prompt, 20.0)
    assert segs == [Segment(0.0, 8.0, "a red circle bouncing over blue stripes"),
                    Segment(8.0, 20.0, "a large yellow star growing")]
    assert format_shots(segs) == prompt
    assert parse_shots(format_shots(segs), 20.0) == segs


@pytest.mark.parametrize("prompt, message", [
    ("0-8 s: a; 6-12 s: b", "shots overlap: 'b' starts at 6 s, before 'a' ends at 8 s"),
    ("0-8 s: a; a blue star", "shot 'a blue star' has no time range"),
    ("0-8 s: a; 8-30 s: b", "the shots run to 30 s but the video lasts 20 s"),
    ("5-2 s: a", "shot 'a' ends \\(2 s\\) before it starts \\(5 s\\)"),
])
def test_bad_shot_prompts_say_what_is_wrong(prompt, message):
    with pytest.raises(SemanticGenError, match=message):
        parse_shots(prompt, 20.0)


def test_shot_starts_route_tokens_to_their_shot():
    segs = parse_shots("0-2 s: a; 2-3 s: b; 3-4 s: c", 4.0)
    # 8 plan steps of 0.5 s: steps 0-3 are shot a, 4-5 shot b, 6-7 shot c.
    routing = shot_routing(torch.arange(8.0).double(), shot_starts(segs, 4.0, 8), 3)
    assert [(k, idx.tolist()) for k, idx in routing] == [(0, [0, 1, 2, 3]), (1, [4, 5]), (2, [6, 7])]
    assert shot_starts(parse_shots("one shot", 4.0), 4.0, 8) is None
