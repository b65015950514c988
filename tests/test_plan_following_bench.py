"""bench/plan_following.py: its configurations, its travel and jump measures, and that ``base`` renders
exactly what ``eval --reference plan`` renders."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import plan_following as pf  # noqa: E402

from semanticgen_core.pipeline import SemanticGenPipeline  # noqa: E402
from semanticgen_core.sampling import SamplingOptions  # noqa: E402
from semanticgen_world import evaluation as ev, world  # noqa: E402


def test_configurations_parse_and_reject_unknown_keys():
    assert pf.parse_config("base") == {}
    assert pf.parse_config("noise=0.15,pcfg=2,pneg=mean") == {"noise": "0.15", "pcfg": "2", "pneg": "mean"}
    with pytest.raises(SystemExit):
        pf.parse_config("nosie=0.1")


def test_plan_edits_remove_motion():
    tokens = torch.randn(5, 4, 4, 8)
    for how in ("freeze", "mean"):
        edited = pf.edit_tokens(tokens, how)
        assert edited.shape == tokens.shape and torch.equal(edited[0], edited[-1])
    assert not pf.edit_tokens(tokens, "zero").any()


def test_travel_and_jumps_on_a_ground_truth_clip():
    clip = world.sample_clip(world.HELDOUT_SEED_START + 7, 33, 64, 64, 8.0)  # an orange circle right to left
    target = world.parse_caption(clip.caption)[0]
    track = pf.first_track(clip.frames, target["color"])
    dx, dy = pf.travel(track)
    assert target["motion"] == "right_to_left" and dx < -ev.MOVE and abs(dy) < 0.05
    assert pf.jump_count(track, len(track.path)) == 0
    teleport = SimpleNamespace(path=[[f, 0.2 if f < 10 else 0.7, 0.5, 0.01] for f in range(30)])
    assert pf.jump_count(teleport, 33) == 1 + 3  # one leap, three frames missing
    assert pf.jump_count(None, 33) == 33


def test_base_configuration_is_the_pipelines_stage_2():
    pipe = SemanticGenPipeline.embedded(with_encoder=True)
    clip = world.sample_clip(world.HELDOUT_SEED_START + 2, 33, 64, 64, 8.0)
    frames = torch.from_numpy(ev.as_uint8_frames(clip.frames).astype("float32") / 255.0)
    plan = pipe.encode_video(frames, 8.0, clip.caption)
    d = {**pipe.preset.defaults, "steps": 3}
    expected = pipe.render_latents(plan, SamplingOptions(steps=3, guidance=float(d["guidance"]), seed=5))
    assert torch.equal(pf.render(pipe, plan, torch.zeros(1), {}, d, 5), expected)
    reversed_ = pf.render(pipe, plan, torch.zeros(1), {"plan": "reverse"}, d, 5)
    assert not torch.equal(reversed_, expected)


def test_files_without_plan_noise_get_the_presets_default_and_their_own_value_wins():
    from semanticgen_core.presets import EMBEDDED, TINY, Preset

    old = {**EMBEDDED.to_dict(), "defaults": {k: v for k, v in EMBEDDED.defaults.items() if k != "plan_noise"}}
    assert Preset.from_dict(old).defaults["plan_noise"] == EMBEDDED.defaults["plan_noise"] == 0.3
    own = {**old, "defaults": {**old["defaults"], "plan_noise": 0.1}}
    assert Preset.from_dict(own).defaults["plan_noise"] == 0.1
    assert "plan_noise" not in Preset.from_dict(TINY.to_dict()).defaults  # only presets that name one
    assert SemanticGenPipeline.embedded().preset.defaults["plan_noise"] == 0.3  # the shipped files predate it


def test_plan_travel_judges_every_travelling_object_by_the_objects_its_caption_names(capsys):
    assert pf.main(["--prompts", "8", "--plan-travel"]) == 0
    table = capsys.readouterr().out.split("by the objects its caption names:")[1]
    rows = {line.split(" | ")[0].strip("| "): [tuple(map(int, cell.split("/"))) for cell in line.strip("| \n").split(" | ")[1:]]
            for line in table.strip().splitlines()[2:]}
    clips = ev.heldout_clips(8, world.HELDOUT_SEED_START, 33, 64, 8.0)
    travelling = {}  # objects the caption names -> its objects that travel left, right, up or down
    for clip in clips:
        objects = world.parse_caption(clip.caption)
        moving = sum(ev.DIRECTION_GROUP[o["motion"]] in pf.UNIT for o in objects)
        if moving:
            travelling[len(objects)] = travelling.get(len(objects), 0) + moving
    for name in ("clip's own plan", "stage 1's plan"):
        assert [total for _, total in rows[name]] == [travelling[n] for n in sorted(travelling)]
    # the clips' own plans carry their motion: drawn by the preview decoder, most of their objects travel the caption's way
    own = rows["clip's own plan"]
    assert sum(r for r, _ in own) > sum(t for _, t in own) / 2
