"""bench/text_sensitivity.py (how much stage 1's velocity moves when one phrase of the prompt is swapped) and
bench/prompt_seeds.py (one prompt judged over seeds), bench/wording_probe.py, bench/plan_sheet.py,
bench/video_candidates.py (the best of N videos by the aligner) and bench/compare_evals.py (two evaluations,
judgement by judgement)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import text_sensitivity as ts  # noqa: E402

from semanticgen_core.pipeline import SemanticGenPipeline, candidate_seeds  # noqa: E402
from semanticgen_world import evaluation as ev, world  # noqa: E402


def test_a_swap_that_changes_no_word_moves_nothing_and_the_colour_moves_the_shipped_stage_1(monkeypatch, capsys):
    pipe = SemanticGenPipeline.embedded()
    threads = torch.get_num_threads()
    monkeypatch.setattr(ts, "SWAPS", {**ts.SWAPS, "nothing": ("a hexagon", "a pentagon")})
    got = ts.sensitivities(pipe, ts.CAPTION, 2, (1000.0, 400.0))
    assert torch.get_num_threads() == threads
    for row in got.values():
        assert row["nothing"] == 0.0  # the caption has no such phrase: the same text, the same velocity
        assert row["colour"] > 0.05 and row["background"] > row["colour"]
        assert row["motion kind"] > 0.05
    ts.main(["--samples", "1"])
    assert "| 1000 |" in capsys.readouterr().out


def test_prompt_seeds_judges_each_seed_as_the_detector_does(capsys):
    import prompt_seeds

    from semanticgen_core.sampling import SamplingOptions
    from semanticgen_world.evaluation import judge

    prompt = "a large white circle growing on a plain green background"
    pipe = SemanticGenPipeline.embedded()
    got = prompt_seeds.judgements(pipe, prompt, range(3, 4), steps=3)
    frames = pipe(prompt, opts=SamplingOptions(steps=3, guidance=pipe.preset.defaults["guidance"], seed=3))
    judged = judge(frames, prompt)
    first = judged["objects"][0]
    assert got == {3: judged}
    prompt_seeds.main([prompt, "--seeds", "1", "--first", "3", "--steps", "3"])
    out = capsys.readouterr().out
    counts = ", ".join(f"{a} {int(bool(first[a]))}" for a in prompt_seeds.ASPECTS)
    assert f"seeds 3..3: {counts} of 1 right" in out
    assert f"3 {prompt_seeds.verdict(judged)}\n" in out  # each seed's line is the contact sheet's verdict


def test_prompt_seeds_mp4_judges_the_video_generate_writes(tmp_path):
    import prompt_seeds

    from nodes.video import read_video
    from semanticgen.cli import main
    from semanticgen_world.evaluation import judge

    prompt = "a red circle moving from left to right over blue stripes"
    out = tmp_path / "red.mp4"
    main(["generate", prompt, "--seed", "3", "--steps", "3", "--out", str(out)])
    written = judge(read_video(out)[0], prompt)
    pipe = SemanticGenPipeline.embedded()
    assert prompt_seeds.judgements(pipe, prompt, range(3, 4), steps=3, mp4=True) == {3: written}
    assert prompt_seeds.judgements(pipe, prompt, range(3, 4), steps=3) != {3: written}  # the codec changed the frames


def test_wording_probe_reads_the_template_back_and_loses_held_out_wording(tmp_path, capsys):
    """bench/wording_probe.py, small: a probe on MiniLM's states reads a held-out scene's backdrop kind from
    its template caption, and much less of it from the paraphrase (held-out backdrop words)."""
    import json

    import wording_probe

    threads = torch.get_num_threads()
    out = tmp_path / "probe.json"
    try:
        assert wording_probe.main(["--scenes", "200", "--heldout", "60", "--steps", "100", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert "probe on all-MiniLM-L6-v2's token states, trained on 800 captions of 200 training scenes" in text
    rec = json.loads(out.read_text())
    template, paraphrase = rec["template"]["accuracy"], rec["paraphrase"]["accuracy"]
    assert template["backdrop kind"] > 0.9 and paraphrase["backdrop kind"] < template["backdrop kind"] - 0.2
    assert rec["paraphrase"]["objects"]["synonym"] > 0 and "object colour, held-out synonym" in paraphrase
    assert rec["template"]["objects"]["synonym"] == 0  # the template names colours plainly


def test_plan_sheet_shows_the_clip_beside_its_own_and_stage_ones_plans(tmp_path):
    import cv2

    import plan_sheet

    out = tmp_path / "plans.png"
    plan_sheet.main(["--objects", "2", "--rows", "1", "--threads", "1", "--out", str(out)])
    sheet = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    cell, gap = 64 + 4, 8
    assert sheet.shape == (26 + 22 + 2 * cell, 2 * (3 * 5 * cell + 2 * gap), 3)
    # the first two-object held-out scene (prompt 4): its frame 0, drawn 2x, is the row's first picture
    clip = ev.heldout_clips(5, world.HELDOUT_SEED_START, 33, 64, 8.0)[4]
    assert len(world.parse_caption(clip.caption)) == 2
    top = 26 + 22 + 2 * 2
    np.testing.assert_array_equal(sheet[top:top + 128, 4:4 + 128], np.repeat(np.repeat(clip.frames[0], 2, 0), 2, 1))
    own = sheet[top:top + 128, 2 * (5 * cell + gap) + 4:][:, :128]  # the own plan's first frame: the same backdrop
    assert np.abs(own.reshape(-1, 3).mean(0) - clip.frames[0].reshape(-1, 3).mean(0)).max() < 40


def test_video_candidates_scores_videos_read_back_and_keeps_the_best(tmp_path, capsys):
    import json

    import video_candidates as vc

    # the pick, on numbers worked by hand
    rows = [[{"score": 1.0, "judgement": "a"}, {"score": 3.0, "judgement": "b"}, {"score": 2.0, "judgement": "c"}]]
    assert vc.best_of(rows, 1) == ["a"] and vc.best_of(rows, 2) == ["b"] and vc.best_of(rows, 3) == ["b"]

    # the aligner, reading a held-out clip back, prefers its caption to the same caption moving the other way
    pipe = SemanticGenPipeline.embedded(with_encoder=True)
    flip = {"left to right": "right to left", "right to left": "left to right", "moving up": "moving down",
            "moving down": "moving up"}
    preferred = 0
    clips = [c for c in ev.heldout_clips(40) if any(k in c.caption for k in flip) and " and " not in c.caption][:6]
    for clip in clips:
        plan = pipe.encode_video(torch.from_numpy(clip.frames).float() / 255, clip.fps).tokens[None]
        key = next(k for k in flip if k in clip.caption)
        texts = pipe.text_encoder.encode([clip.caption, clip.caption.replace(key, flip[key])])[0]
        with torch.no_grad():
            right, wrong = pipe.aligner.score(texts, plan.expand(2, *plan.shape[1:]))
        preferred += bool(right > wrong)
    assert len(clips) == 6 and preferred == 6

    out = tmp_path / "cands.json"
    threads = torch.get_num_threads()
    try:
        assert vc.main(["--prompts", "1", "--candidates", "2", "--threads", "1", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert "best of 1: colour" in printed and "against candidate 0: colour +" in printed
    rec = json.loads(out.read_text())
    first = rec["candidates"][0]
    assert [c["seed"] for c in first] == candidate_seeds(0, 2) == [0, 1000]
    assert first[0]["judgement"]["prompt"] == rec["prompts"][0] == ev.prompt_of(ev.heldout_clips(1)[0])


def test_compare_evals_counts_what_each_model_gets_right_and_pools_the_sets(tmp_path, capsys):
    import json

    import compare_evals

    from semanticgen_core.errors import SemanticGenError

    # the sign test, on numbers worked by hand
    assert ev.sign_test(0, 0) == 1.0 and ev.sign_test(5, 5) == 1.0
    assert abs(ev.sign_test(21, 10) - 0.0708) < 1e-3 and ev.sign_test(10, 0) < 0.002

    def run(name, prompts, judged):  # judged: per prompt, per object (colour, direction, shape)
        per_prompt = [{"prompt": p, "objects": [dict(zip(("color", "motion", "shape", "motion_exact"), (*o, o[1])))
                                                for o in objects], "consistency": 0.5, "stability": 0.5}
                      for p, objects in zip(prompts, judged)]
        path = tmp_path / name
        path.write_text(json.dumps({"wording": "template", "heldout_seeds": [7, 8], "per_prompt": per_prompt}))
        return str(path)

    one = ["a red circle moving up over blue stripes", "a cyan square and a green star over grey noise"]
    base = run("base.json", one, [[(1, 0, 0)], [(1, 1, 0), (0, 0, 1)]])
    other = run("other.json", one, [[(1, 1, 0)], [(0, 1, 1), (1, 1, 1)]])
    assert compare_evals.main([base, other]) == 0
    out = capsys.readouterr().out
    assert "(3 objects): colour 2 -> 2 (+1 -1, p 1.00); direction 1 -> 3 (+2 -0, p 0.50); shape 1 -> 2 (+1 -0" in out
    assert "pooled" not in out
    two = ["a white triangle growing on a plain green background"]
    base2, other2 = run("base2.json", two, [[(0, 0, 0)]]), run("other2.json", two, [[(1, 1, 0)]])
    compare_evals.main([base, other, base2, other2])
    assert "pooled over 2 sets (4 objects): colour 2 -> 3 (+2 -1, p 1.00); direction 1 -> 4 (+3 -0, p 0.25)" in \
        capsys.readouterr().out

    # evaluations of different prompts, an odd number of files, a file that is no evaluation: each says so
    for files, message in (([base, other2], "different prompts"), ([base], "in pairs"),
                           ([base, str(tmp_path)], "is not an evaluation's JSON")):
        with pytest.raises(SemanticGenError, match=message):
            compare_evals.main(files)
