"""bench/claims.py: "steps to reach" on constructed curves, and the bench end to end on a tiny cache."""

import json

import cv2
import pytest

from bench import claims
from semanticgen_core.errors import SemanticGenError
from semanticgen_core.feature_cache import FeatureCache


def test_steps_to_reach_interpolates_the_first_crossing():
    xs, ys = [0, 100, 200, 300], [0.0, 0.25, 0.75, 0.5]
    assert claims.steps_to_reach(xs, ys, 0.125) == 50.0
    assert claims.steps_to_reach(xs, ys, 0.5) == 150.0     # the first crossing, not the last point's 0.5
    assert claims.steps_to_reach(xs, ys, 0.75) == 200.0
    assert claims.steps_to_reach(xs, ys, 0.0) == 0.0       # already there untrained
    assert claims.steps_to_reach(xs, ys, 0.8) is None      # never reached
    assert claims.checkpoint_steps(600, 5) == [0, 120, 240, 360, 480, 600]


def test_nearest_clip_matches_plans_of_the_caches_shape_only():
    import torch

    library = torch.stack([torch.full((4, 2, 2, 8), v) for v in (0.0, 1.0, 2.0)])
    assert claims.nearest_clip(library, torch.full((4, 2, 2, 8), 1.2)) == 1
    assert claims.nearest_clip(library, torch.full((4, 2, 2, 8), 5.0)) == 2
    with pytest.raises(SemanticGenError, match=r"plans of \(8, 2, 2, 8\) .* \(4, 2, 2, 8\): the cache holds clips of "
                                               "another length"):
        claims.nearest_clip(library, torch.zeros(8, 2, 2, 8))


def test_world_seeds_and_shot_limits():
    assert claims.world_seed("world seed 17") == 17
    assert claims.world_seed("clips/a.mp4 0.0-4.0 s") is None and claims.world_seed("world seed x") is None
    assert [claims.shot_limit(b) for b in (1, 2, 3, 4, 12, 16, 40)] == [1, 2, 1, 4, 4, 8, 8]


def test_refuses_caches_of_video_files_and_runs_of_the_removed_recipes(tmp_path):
    from types import SimpleNamespace

    assert claims.cache_seeds(SimpleNamespace(sources=["world seed 3", "world seed 1"], folder=tmp_path)) == [3, 1]
    videos = SimpleNamespace(sources=["world seed 3", "a.mp4 0.0-4.0 s"], folder=tmp_path)
    with pytest.raises(SemanticGenError, match=r"not world clips \('a.mp4 0.0-4.0 s'\).*semanticgen_world.cache"):
        claims.cache_seeds(videos)
    (tmp_path / "stage1").mkdir()
    (tmp_path / "stage1" / "last.pt").write_bytes(b"")
    with pytest.raises(SemanticGenError, match="removed CPU recipes"):
        claims._train("stage1", ["--cache", "c", "--out", str(tmp_path / "stage1")])


def _curve(steps, minutes, adherence, final_prompts):
    points = [{"step": s, "cpu_minutes": m, "adherence": a} for s, m, a in zip(steps, minutes, adherence)]
    points[-1]["per_prompt_adherence"] = final_prompts
    return points


def test_compare_reads_steps_to_reach_both_ways():
    curves = {"semantic-8": _curve([0, 100, 200], [1.0, 2.0, 3.0], [0.0, 0.5, 0.75], [1.0, 0.5]),
              "vae-8": _curve([0, 100, 200], [1.0, 3.0, 5.0], [0.0, 0.25, 0.5], [0.5, 0.5])}
    c = claims.compare("semantic-8", "vae-8", curves)
    assert c["a_reaches_b"] == {"step": 100.0, "cpu_minutes": 2.0}   # semantic reaches VAE's final 0.5
    assert c["b_reaches_b"] == {"step": 200.0, "cpu_minutes": 5.0}   # VAE itself got there at its end
    assert c["b_reaches_a"] == {"step": None, "cpu_minutes": None}   # VAE never reaches semantic's 0.75
    assert c["diff"] == 0.25 and c["diff_se"] == pytest.approx(0.25)
    text = claims.statements(c)
    assert text[0] == ("semantic-8 reached vae-8's final adherence 0.500 at step 100 (2.0 CPU min); vae-8 itself "
                       "first reached it at step 200 (5.0 CPU min): vae-8 needed 2.0x the steps.")
    assert text[1] == "vae-8 did not reach semantic-8's final adherence 0.750 within 200 steps (its best: 0.500)."
    assert "within 2 standard errors: not settled" in text[2]
    assert claims.statements(claims.compare("vae-8", "semantic-8", curves))[:2] == [text[1], text[0]]
    assert claims.verdict(c, "Claim").startswith("**Claim: not settled at this scale** (final adherence +0.250")
    c["diff_se"] = 0.1
    assert claims.verdict(c, "Claim").startswith("**Claim: held**")


def test_claims_end_to_end_on_a_tiny_cache(tiny_world_cache, tmp_path, monkeypatch):
    import semanticgen_core.embedded

    transfers = []
    monkeypatch.setattr(claims.plan_transfer, "main", lambda argv: transfers.append(argv))
    monkeypatch.setattr(semanticgen_core.embedded, "weights_path", lambda part: None)  # no shipped weights here
    out = tmp_path / "docs"
    argv = ["--cache", str(tiny_world_cache["cache"]), "--vae", str(tiny_world_cache["vae"]),
            "--runs", str(tmp_path / "runs"), "--variants", "semantic-8", "vae-8", "--s2-steps", "1",
            "--s1-steps", "2", "--checkpoints", "2", "--prompts", "2", "--sample-steps", "1", "--batch", "2",
            "--out", str(out)]
    record = claims.main(argv, log=lambda *_: None)
    assert list(record["variants"]) == ["semantic-8", "vae-8"] and transfers == [["--out", str(out), "--refs", "8"]]
    cache = FeatureCache(tiny_world_cache["cache"])
    seeds = {claims.world_seed(s) for s in cache.sources}
    assert len(seeds) == len(cache) == 4 and None not in seeds
    for name, r in record["variants"].items():
        assert [p["step"] for p in r["points"]] == [0, 1, 2]
        assert all(0 <= p["adherence"] <= 1 and len(p["report"]["per_prompt"]) == 2 for p in r["points"])
        # stage 1 alone: each prompt's plan matched to a cached clip, whose world seed is re-rendered and judged
        for p in r["points"]:
            assert 0 <= p["plan"]["adherence"] <= 1
            assert {j["nearest_seed"] for j in p["plan"]["report"]["per_prompt"]} <= seeds
        assert r["stage2_command"].startswith("python -m semanticgen_core.trainer stage2 --cache ")
        assert f"--plan-from {claims.VARIANTS[name].plan_from}" in r["stage2_command"]
        assert r["stage1_command"].startswith("python -m semanticgen_core.trainer stage1 --cache ")
        assert r["stage1_command"].endswith("--max-shots 2") and r["stage1_max_shots"] == 2  # batch 2
        assert r["clips"] == 4
    assert json.loads((out / "claims.json").read_text())["findings"] == record["findings"]
    md = (out / "claims.md").read_text()
    assert "semantic-8 vs vae-8" not in md and "img/convergence.png" in md
    assert "Convergence claim (semantic space beats VAE space), on stage 1's plans alone" in md
    assert md.count("| semantic-8 | ") == 4 and md.count("| vae-8 | ") == 4  # 3 checkpoints + the final row
    png = cv2.imread(str(out / "img" / "convergence.png"))
    assert png.shape == (2 * 320, 4 * 440, 3)  # convergence and compression rows, four panels each
    assert not list(out.rglob("*.tmp"))

    logged = []  # a rerun trains and evaluates nothing again
    claims.main(argv, log=logged.append)
    assert not [ln for ln in logged if ln.startswith(("semantic-8", "vae-8"))]  # "<variant>: stage ..." etc.
