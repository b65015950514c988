"""bench/stage1_fit.py: stage 1's flow loss by the objects of each clip's scene, on a cache of world clips."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import stage1_fit  # noqa: E402
from semanticgen_core.embedded import weights_path  # noqa: E402
from semanticgen_core.errors import SemanticGenError  # noqa: E402
from semanticgen_core.feature_cache import FeatureCache  # noqa: E402
from semanticgen_core.model_files import load_model  # noqa: E402
from semanticgen_core.semantic_dit import SemanticDiT  # noqa: E402
from semanticgen_world import cache as world_cache, world  # noqa: E402


def test_the_trained_stage_one_scores_below_an_untrained_one_on_every_group_and_level(tmp_path, capsys):
    folder = tmp_path / "cache"  # 6 clips it trained on, encoded by the shipped encoder and VAE, as its cache was
    world_cache.main(["--out", str(folder), "--clips", "6", "--items-per-shard", "6", "--vae", str(weights_path("vae")),
                      "--encoder", str(weights_path("semantic_encoder"))])
    cache = FeatureCache(folder)
    trained = load_model(weights_path("stage1"), "stage1").modules["stage1"].float().eval()
    torch.manual_seed(0)
    untrained = SemanticDiT(**{k: v for k, v in trained.config.items() if not k.startswith("_")}).eval()
    compressor = load_model(weights_path("stage2"), "stage2").modules["compressor"].float().eval()
    levels = (0.3, 0.9)
    got = stage1_fit.losses(trained, compressor, cache, 6, levels)
    base = stage1_fit.losses(untrained, compressor, cache, 6, levels)
    counts = [len(world.sample_clip_shots(seed, 33)[0].objects) for seed in range(6)]
    assert {k: len(v) for k, v in got.items()} == {n: counts.count(n) for n in set(counts)}
    for n, rows in got.items():
        for j in range(len(levels)):
            mean, untrained_mean = (sum(r[j] for r in rs) / len(rs) for rs in (rows, base[n]))
            assert mean < 0.9 * untrained_mean, (n, levels[j], mean, untrained_mean)

    stage1_fit.main(["--cache", str(folder), "--clips", "6", "--levels", "0.3", "0.9"])
    table = capsys.readouterr().out
    assert "| cache | objects | clips | loss at t = 0.3 | loss at t = 0.9 |" in table
    assert f"| {folder} | 1 | {counts.count(1)} |" in table


def test_a_clip_that_is_not_from_the_world_is_refused_by_name():
    with pytest.raises(SemanticGenError, match="'cat.mp4@0.00s' is not a world clip"):
        stage1_fit.object_count("cat.mp4@0.00s")
