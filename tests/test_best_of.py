"""Best of N videos by the aligner (``SemanticGenPipeline.best_of``): in the library, ``generate --candidates``,
``eval --candidates`` and the Best of N Videos node, on the shipped embedded default."""

import json

import pytest
import torch

from semanticgen_core.errors import SemanticGenError
from semanticgen_core.pipeline import SemanticGenPipeline, candidate_seeds
from semanticgen_core.plan_alignment import plan_score
from semanticgen_core.sampling import SamplingOptions
from semanticgen_world import evaluation as ev

PROMPT = "a red circle moving from left to right over blue stripes"
STEPS = 3  # a few steps keep it quick; the choice works the same at any


@pytest.fixture(scope="module")
def pipe():
    return SemanticGenPipeline.embedded(with_encoder=True)


def opts(pipe, seed):
    return SamplingOptions(steps=STEPS, guidance=pipe.preset.defaults["guidance"], seed=seed)


def test_a_video_read_back_scores_higher_under_its_own_direction(pipe):
    """The score best of N ranks by tells which way a finished video moves: held-out world clips read back score
    higher under their own caption than under it with the direction reversed."""
    flip = {"left to right": "right to left", "right to left": "left to right", "moving up": "moving down",
            "moving down": "moving up"}
    clips = [c for c in ev.heldout_clips(60) if any(k in c.caption for k in flip) and " and " not in c.caption][:5]
    assert len(clips) == 5
    for clip in clips:
        frames = torch.from_numpy(clip.frames).float() / 255
        key = next(k for k in flip if k in clip.caption)
        own = pipe.video_score(frames, clip.fps, clip.caption)
        assert own > pipe.video_score(frames, clip.fps, clip.caption.replace(key, flip[key])) + 0.5, clip.caption


def test_a_timed_prompt_scores_each_shot_against_its_own_text(pipe):
    clip = ev.heldout_clips(1)[0]
    frames = torch.from_numpy(clip.frames).float() / 255
    timed = "0-2 s: a blue star moving up; 2-4 s: a green square moving down"
    plan = pipe.encode_video(frames, clip.fps, timed)
    text = pipe.text_encoder.encode(["a blue star moving up", "a green square moving down"])[0]
    tokens = plan.tokens[None]
    # 33 frames at 8 fps read as 9 plan steps: the shot at 2 s of 4.125 s starts at step 3.9, so steps 0-3 are
    # the first shot's, as the DiTs route them
    assert plan.tokens.shape[0] == 9
    with torch.no_grad():
        by_hand = float(pipe.aligner.score(text[:1], tokens[:, :4]) + pipe.aligner.score(text[1:], tokens[:, 4:]))
        whole = float(pipe.aligner.score(text[:1], tokens))
        assert float(plan_score(pipe.aligner, text[None], tokens, [0.0, 3.9])) == pytest.approx(by_hand, abs=1e-4)
    assert pipe.video_score(frames, clip.fps, timed) == pytest.approx(by_hand, abs=1e-4)
    assert abs(by_hand - whole) > 0.1  # the split matters


def test_best_of_keeps_the_highest_scored_video_and_its_seed_makes_it_again(pipe):
    phases = []
    best, scores = pipe.best_of(PROMPT, 33, 8.0, 64, 64, opts(pipe, 7), 3, prepare=phases.append)
    assert [s for s, _ in scores] == candidate_seeds(7, 3) == [7, 1007, 2007]
    assert candidate_seeds(2 ** 64 - 1, 2) == [2 ** 64 - 1, 999]  # seeds a generator takes
    assert phases == ["generate", "read back"] * 3
    assert len({round(score, 3) for _, score in scores}) == 3  # three different videos
    assert best.score == max(score for _, score in scores) and best.seed == max(scores, key=lambda s: s[1])[0]
    again = pipe(PROMPT, opts=opts(pipe, best.seed))
    assert torch.equal(best.frames, again)
    assert best.plan.seed == best.seed and best.plan.segments[0].prompt == PROMPT
    assert pipe.video_score(again, 8.0, PROMPT) == pytest.approx(best.score, abs=1e-5)
    one, [(seed, score)] = pipe.best_of(PROMPT, 33, 8.0, 64, 64, opts(pipe, 7), 1)
    assert seed == 7 and torch.equal(one.frames, pipe(PROMPT, opts=opts(pipe, 7)))

    with pytest.raises(SemanticGenError, match="candidates must be at least 1, got 0"):
        pipe.best_of(PROMPT, 33, 8.0, 64, 64, opts(pipe, 7), 0)
    unread = SemanticGenPipeline.embedded()
    with pytest.raises(SemanticGenError, match="no semantic_encoder loaded"):
        unread.best_of(PROMPT, 33, 8.0, 64, 64, opts(pipe, 7), 2)


def test_generate_candidates_writes_the_kept_video_which_its_seed_alone_writes_again(tmp_path, capsys):
    import re

    from semanticgen.cli import main

    best = tmp_path / "best.mp4"
    assert main(["generate", PROMPT, "--seed", "7", "--steps", str(STEPS), "--candidates", "2", "-q",
                 "--out", str(best)]) == 0
    printed = capsys.readouterr().out
    assert "best of 2, seeds 7, 1007, ...: 64x64" in printed and "2 candidates" in printed
    kept = int(re.search(r"kept seed (\d+)", printed).group(1))
    scores = dict((int(s), float(v)) for s, v in re.findall(r"seed (\d+): (-?[\d.]+)", printed))
    assert set(scores) == {7, 1007} and kept == max(scores, key=scores.get)
    plain = tmp_path / "plain.mp4"
    assert main(["generate", PROMPT, "--seed", str(kept), "--steps", str(STEPS), "-q", "--out", str(plain)]) == 0
    assert best.read_bytes() == plain.read_bytes()

    assert main(["generate", PROMPT, "--candidates", "0", "--out", str(plain)]) == 2
    assert "--candidates must be at least 1, got 0" in capsys.readouterr().err
    assert main(["generate", PROMPT, "--candidates", "2", "--aligner", "none", "--out", str(plain)]) == 2
    assert "--candidates scores each video with the aligner: give --aligner FILE" in capsys.readouterr().err


def test_generate_candidates_asks_for_the_semantic_encoder_of_another_stage_2(pack, tiny_models, tmp_path, capsys):
    from semanticgen.cli import main

    args = ["generate", "a purple star", "--seconds", "1", "--steps", "2", "--candidates", "2", "--out",
            str(tmp_path / "x.mp4"), "--models", str(tiny_models["dir"]), "--stage1", tiny_models["stage1"], "--stage2",
            tiny_models["stage2"], "--vae", tiny_models["vae"]]
    assert main([*args, "--aligner", "embedded"]) == 2
    assert "give --semantic-encoder FILE" in capsys.readouterr().err
    assert main([*args, "--aligner", "embedded", "--semantic-encoder", tiny_models["semantic_encoder"]]) == 2
    assert ("semanticgen generate --candidates: the aligner embedded (embedded plans, 384-d text) does not fit "
            "stage 1 tiny_stage1.safetensors") in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_eval_candidates_judges_the_kept_video_and_records_its_seed(pipe, tmp_path, capsys):
    from semanticgen.cli import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--prompts", "2", "--seed", "3", "--steps", str(STEPS), "--candidates", "2", "--psnr-clips",
                 "0", "-q", "--out", str(out)]) == 0
    assert "best of 2 by the aligner" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert rec["candidates"] == 2 and len(rec["per_prompt"]) == 2
    for i, row in enumerate(rec["per_prompt"]):
        best, _ = pipe.best_of(row["prompt"], 33, 8.0, 64, 64, opts(pipe, 3 + i), 2)
        assert row["seed"] == 3 + i and row["kept_seed"] == best.seed
        judged = {k: v for k, v in row.items() if k not in ("seed", "kept_seed")}
        assert judged == json.loads(json.dumps(ev.judge(best.frames, row["prompt"])))
    assert main(["eval", "--candidates", "2", "--reference", "plan"]) == 2
    assert "--candidates judges the video best of N keeps" in capsys.readouterr().err


def test_best_of_node_returns_the_video_the_node_chain_makes_at_the_kept_seed(pack, tiny_models):
    nodes = pack.NODE_CLASS_MAPPINGS
    load = lambda key: nodes[key]().load("embedded", "auto")[0]  # noqa: E731
    stage1, stage2, vae, encoder, aligner, text = (load(f"SemanticGen{k}Loader") for k in (
        "Stage1", "Stage2", "VAE", "SemanticEncoder", "Aligner", "TextEncoder"))
    (cond,) = nodes["SemanticGenTextEncode"]().encode(text, PROMPT)
    out = nodes["SemanticGenBestOfN"]().generate(stage1, stage2, vae, encoder, aligner, cond, 64, 64, 33, 8.0, 7,
                                                 STEPS, 2.5, 3.0, "euler", 2)
    images, plan, seed = out["result"]
    (shown,) = out["ui"]["text"]
    assert seed in (7, 1007) and f"kept seed {seed}" in shown and "seed 1007: " in shown
    (again,) = nodes["SemanticGenStage1Sample"]().sample(stage1, cond, 64, 64, 33, 8.0, seed, STEPS, 2.5, 3.0, "euler",
                                                         aligner=aligner)
    assert torch.equal(again.tokens, plan.tokens)
    (latent,) = nodes["SemanticGenStage2Sample"]().sample(stage2, again, cond, seed, STEPS, 2.5, 3.0, "euler", -1)
    (frames,) = nodes["SemanticGenVAEDecode"]().decode(vae, latent, chunk=8)
    assert images.shape == (33, 64, 64, 3) and torch.equal(frames, images)

    tiny = nodes["SemanticGenStage1Loader"]().load(tiny_models["stage1"], "auto")[0]
    (tiny_cond,) = nodes["SemanticGenTextEncode"]().encode(text, PROMPT)
    with pytest.raises(SemanticGenError, match="SemanticGen Best of N Videos: the aligner embedded .* does not fit "
                                               "stage 1 tiny_stage1.safetensors"):
        nodes["SemanticGenBestOfN"]().generate(tiny, stage2, vae, encoder, aligner, tiny_cond, 64, 64, 33, 8.0, 7,
                                               STEPS, 2.5, 3.0, "euler", 2)
