"""The one-GPU recipe of the embedded default's stages (``semanticgen_world.recipes.gpu_stages``), on the CPU:
caches built by processes side by side and read as one, and a run's two parts equal to the one trainer command
it records."""

import shlex

import pytest
from safetensors.torch import load_file

from semanticgen_core.feature_cache import FeatureCache
from semanticgen_core.trainer import main as train
from semanticgen_world.recipes import gpu_stages


def test_caches_side_by_side_and_a_run_equal_to_its_recorded_command(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_stages, "RUNS", {"tiny": [
        "stage2", "--compressor", "{W}/stage2.safetensors", "--freeze-compressor", "--width", "32", "--layers", "1",
        "--plan-attention", "joint", "--batch", "2", "--lr", "1e-3", "--warmup", "2"]})
    monkeypatch.setattr(gpu_stages, "COMMON", ["--ema", "0.9", "--threads", "1", "--save-every", "1000000000",
                                               "--log-every", "1"])
    gpu_stages.main(["--out", str(tmp_path), "--minutes", "1.1", "--clips", "4", "--cache-procs", "2",
                     "--cache-minutes", "1", "--probe-minutes", "0.1", "--runs", "tiny"])
    caches = [tmp_path / "cache-0", tmp_path / "cache-1"]
    assert FeatureCache(*caches).sources == [f"world seed {s}" for s in range(4)]

    command = shlex.split((tmp_path / "tiny" / "command.txt").read_text())
    assert command[:3] == ["python", "-m", "semanticgen_core.trainer"]
    args = command[3:]
    steps, decay = int(args[args.index("--steps") + 1]), int(args[args.index("--decay-steps") + 1])
    end = int((tmp_path / "tiny" / "checkpoints" / "latest").read_text().strip()[len("step_"):])
    assert end == steps and 1 <= decay < steps, "the run stopped before its cool-down's end"
    args[args.index("--out") + 1] = str(tmp_path / "again")
    again = load_file(train(args))
    made = load_file(tmp_path / "tiny" / "stage2.safetensors")
    assert made.keys() == again.keys() and all((made[k] == again[k]).all() for k in made)


def test_a_recipe_whose_caches_all_fail_says_where_to_look(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_stages, "WEIGHTS", tmp_path / "no-weights")
    with pytest.raises(gpu_stages.SemanticGenError, match=rf"no feature cache completed .* see {tmp_path}/cache-\*\.log"):
        gpu_stages.main(["--out", str(tmp_path), "--minutes", "1", "--clips", "2", "--cache-procs", "2"])
