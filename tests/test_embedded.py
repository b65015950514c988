"""The shipped embedded default: every part loads strictly and the whole chain makes a video."""

import pytest
import torch

from semanticgen_core import embedded
from semanticgen_core.model_files import load_model, read_metadata
from semanticgen_core.pipeline import SemanticGenPipeline
from semanticgen_core.sampling import SamplingOptions


@pytest.mark.parametrize("part", embedded.PARTS)
def test_shipped_part_loads_with_every_key(part):
    path = embedded.weights_path(part)
    loaded = load_model(path, part)   # strict: a missing, extra or misshapen key raises
    assert loaded.preset.name == "embedded"
    assert read_metadata(path)["kind"] == part
    assert loaded.info.get("steps", 0) > 0  # trained, with its record


def test_shipped_weights_fit_the_budget():
    files = list(embedded.weights_path("vae").parent.glob("*.safetensors"))  # the baseline included
    total = sum(f.stat().st_size for f in files)
    assert len(files) >= len(embedded.PARTS) and total <= 25 * 2**20, f"{total / 2**20:.1f} MB"


def test_embedded_pipeline_makes_a_video():
    pipe = SemanticGenPipeline.embedded()
    frames = pipe("a red circle moving from left to right over blue stripes", num_frames=17,
                  opts=SamplingOptions(steps=4, guidance=4.0, seed=0))
    assert frames.shape == (17, 64, 64, 3)
    assert frames.std() > 0.02  # not a flat frame
    assert (frames[1:] - frames[:-1]).abs().mean() < 0.2  # and not noise: consecutive frames agree


def test_shipped_model_draws_the_prompted_colour_in_most_prompts():
    """The detector (opencv, independent of the model) finds the prompt's colour in most clips made as the
    README's first command makes them (4 s, the model's steps and guidance), two seeds a prompt."""
    from semanticgen_world.evaluation import FIXED_PROMPTS, judge

    pipe = SemanticGenPipeline.embedded()
    d = pipe.preset.defaults
    right = []
    for seed, prompt in enumerate(FIXED_PROMPTS * 2):
        frames = pipe(prompt, opts=SamplingOptions(steps=d["steps"], guidance=d["guidance"], seed=seed))
        right.append(bool(judge(frames, prompt)["objects"][0]["color"]))
    print("colour right:", right)  # measured: 10 of 12 (the blue star over orange stripes misses both times)
    assert sum(right) > len(right) / 2, right


def _one_object_scenes_judged(wording: str, n: int = 12) -> list[tuple[bool, bool]]:
    """(colour right, motion right) for the first ``n`` one-object scenes of the evaluation's held-out prompts,
    each made as ``python -m semanticgen eval --prompts 100 --seed 0 [--wording paraphrase]`` makes it (the
    scene's index in that list is its seed), so the figures are that command's per-prompt judgements."""
    from semanticgen_world.evaluation import heldout_clips, judge, prompt_of

    pipe = SemanticGenPipeline.embedded()
    d = pipe.preset.defaults
    scenes = [(seed, clip) for seed, clip in enumerate(heldout_clips(40, size=16)) if len(clip.shots[0].objects) == 1]
    out = []
    for seed, clip in scenes[:n]:
        prompt = prompt_of(clip, wording)
        frames = pipe(prompt, opts=SamplingOptions(steps=d["steps"], guidance=d["guidance"], seed=seed))
        first = judge(frames, prompt)["objects"][0]
        out.append((bool(first["color"]), bool(first["motion"])))
    return out


def test_shipped_model_gets_colour_and_motion_of_one_object_scenes_in_most_clips():
    """Held-out scenes of one object in the caption template's words: the detector finds the colour and the
    motion (direction, growing, bouncing...) both right in most clips. Scenes of two objects are left out:
    there the shipped model mostly loses the motion (MODEL_CARD.md, "By the number of objects")."""
    judged = _one_object_scenes_judged("template")
    print("template (colour, motion):", judged)  # measured: colour 12 of 12, motion 11, both 11
    assert sum(c for c, _ in judged) >= 9, judged
    assert sum(c and m for c, m in judged) > len(judged) / 2, judged


@pytest.mark.xfail(strict=True, reason="the issue's target, not met: worded as the held-out paraphrases, the same "
                   "scenes get colour and motion both right in 2 of 12 clips (colour 3, motion 3): MiniLM does not "
                   "place held-out synonyms (amethyst, sapphire, pearl) near their colours (MODEL_CARD.md, Free "
                   "wording)")
def test_shipped_model_gets_colour_and_motion_of_paraphrased_scenes_in_most_clips():
    judged = _one_object_scenes_judged("paraphrase")
    print("paraphrase (colour, motion):", judged)
    assert sum(c and m for c, m in judged) > len(judged) / 2, judged


@pytest.mark.xfail(strict=True, reason="regression of the stage 1 shipped in session 4 (10,500 steps): another prompt "
                   "for shot 2 moves shot 1's plan too (own/other change 1.6-1.9 over seeds 0, 1, 3; the 4,910-step "
                   "stage 1 had 4-8), though it draws the prompted colour more often (8 of 12 fixed clips, against 5; "
                   "session 5's stage 2 and VAE on top: 10 of 12)")
@torch.no_grad()
def test_one_shots_prompt_changes_mostly_its_own_span_of_the_plan():
    """Stage 1 has full attention across shots, so another prompt for shot 2 may touch shot 1, but the
    trained model keeps the change inside the shot it belongs to."""
    pipe = SemanticGenPipeline.embedded()
    opts = SamplingOptions(steps=10, guidance=4.0, seed=3)
    a = pipe.generate_plan("0-4 s: a red circle moving up; 4-8 s: a blue square moving down", 65, 8.0, 64, 64, opts)
    b = pipe.generate_plan("0-4 s: a red circle moving up; 4-8 s: a yellow star growing", 65, 8.0, 64, 64, opts)
    change = (a.tokens - b.tokens).pow(2).mean(dim=(1, 2, 3)).sqrt()   # per plan step
    cut = a.tokens.shape[0] // 2
    own, other = change[cut + 1:].mean(), change[:cut - 1].mean()  # one step off the cut each side
    print(f"plan change per step: own shot {own:.3f}, other shot {other:.3f}")
    assert own > 3 * other


@torch.no_grad()
def test_one_shots_prompt_changes_mostly_its_own_frames_of_the_video():
    """What a user sees of shot locality: with another prompt for shot 2, shot 2's frames change several
    times more than shot 1's, and shot 1 keeps its prompted colour (judged by the opencv detector)."""
    from semanticgen_world.evaluation import judge

    pipe = SemanticGenPipeline.embedded()
    opts = SamplingOptions(steps=10, guidance=pipe.preset.defaults["guidance"], seed=3)
    a = pipe("0-4 s: a red circle moving up; 4-8 s: a blue square moving down", 65, 8.0, 64, 64, opts)
    b = pipe("0-4 s: a red circle moving up; 4-8 s: a yellow star growing", 65, 8.0, 64, 64, opts)
    change = (a - b).abs().mean(dim=(1, 2, 3))  # per frame; the cut is at frame 32
    own, other = change[33:].mean(), change[:31].mean()
    print(f"frame change: own shot {own:.3f}, other shot {other:.3f}")  # measured: 0.158 and 0.062
    assert own > 2 * other
    for video in (a, b):
        assert judge(video[:32], "a red circle moving up")["objects"][0]["color"]
