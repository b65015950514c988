"""From a folder of real video files to model files the nodes run: the feature cache and the trainer, on CPU.

Tiny random frozen models (the tiny preset's VAE and semantic encoder, the bundled MiniLM) encode real mp4
files written by OpenCV; the trainer trains a few steps and exports; the exported files run through the
text-to-video workflow headless. Distributed runs use torchrun with gloo on two CPU processes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from semanticgen_core import feature_cache
from semanticgen_core.errors import SemanticGenError
from semanticgen_core.feature_cache import FeatureCache, FrozenModels, clip_spec
from semanticgen_core.model_files import load_model, save_model
from semanticgen_core.presets import TINY
from semanticgen_core.trainer import main as train
from semanticgen_core.vae import VideoVAE, tiny_vae_config
from semanticgen_core.video_data import VideoFolder, read_clips
from semanticgen_world.world_source import write_videos

ROOT = Path(__file__).resolve().parents[1]
SECONDS = 1.0  # the tiny preset's clips: 9 frames at 8 fps, 64x64


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Five world clips as mp4 + caption (at 12 fps and 96x80, so the cache resamples and crops), 2.5 seconds
    each (two clips apiece), plus a corrupt file and a video without a caption."""
    folder = tmp_path_factory.mktemp("videos")
    write_videos(folder, 6, seconds=2.5, fps=12.0, height=80, width=96)
    (folder / "world_5.txt").unlink()  # uncaptioned
    (folder / "broken.mp4").write_bytes(os.urandom(4096))
    (folder / "broken.txt").write_text("a red circle\n")
    return folder


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """The tiny preset's frozen models as files: a VAE and a semantic encoder (random, seeded)."""
    folder = tmp_path_factory.mktemp("frozen")
    torch.manual_seed(0)
    VideoVAE.from_config(tiny_vae_config()).save(folder / "vae.safetensors")
    save_model(folder / "encoder.safetensors", "semantic_encoder", {"encoder": TINY.build()["encoder"]}, TINY)
    return {"vae": folder / "vae.safetensors", "encoder": folder / "encoder.safetensors"}


def cache_args(videos, frozen, out, *extra):
    return ["--videos", str(videos), "--out", str(out), "--preset", "tiny", "--vae", str(frozen["vae"]),
            "--encoder", str(frozen["encoder"]), "--seconds", str(SECONDS), "--items-per-shard", "2", *extra]


@pytest.fixture(scope="module")
def cache(videos, frozen, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "cache"
    feature_cache.main(cache_args(videos, frozen, out))
    return out


def test_the_cache_holds_every_readable_clip_encoded_by_the_frozen_models(cache, videos, frozen, capsys):
    data = FeatureCache(cache)
    assert len(data) == 10  # 5 videos x 2 s at 8 fps: two 9-frame clips each; broken and uncaptioned skipped
    record = json.loads((cache / "cache.json").read_text())
    assert data.preset.name == "tiny" and data.preset.plan_grid(9, 8.0, 64, 64) == TINY.plan_grid(9, 8.0, 64, 64)
    assert record["made_by"]["vae"]["file"] == "vae.safetensors"
    assert record["clip"] == {"num_frames": 9, "fps": 8.0, "height": 64, "width": 64}
    skipped = [json.loads(feature_cache.safe_open(str(p), "pt").metadata()["skipped"])
               for p in sorted(cache.glob("shard_*"))]
    assert any("broken.mp4" in line for lines in skipped for line in lines)

    # row 0 is the first clip of the first video (sorted by name), encoded by the same models
    spec = clip_spec(TINY, SECONDS)
    models = FrozenModels.load(TINY, frozen["vae"], frozen["encoder"])
    items = VideoFolder(videos, spec).items
    assert [i.path.name for i in items[:2]] == ["broken.mp4", "world_0.mp4"]
    first = read_clips(items[1], spec)[0]
    expected = models.encode([first], spec.fps)
    row = data[0]
    torch.testing.assert_close(row["latents"], expected["latents"][0].float(), rtol=0, atol=0)
    torch.testing.assert_close(row["features"], expected["features"][0].float(), rtol=0, atol=0)
    text, _ = models.text.encode([first.caption])
    assert row["text"].shape == text[0].shape  # padded back to the text encoder's length
    torch.testing.assert_close(row["text"], text[0].to(torch.bfloat16).float(), rtol=0, atol=0)
    torch.testing.assert_close(data.empty_text, models.text.encode([""])[0][0].to(torch.bfloat16).float(),
                               rtol=0, atol=0)


def test_a_cache_resumes_splits_over_ranks_and_refuses_other_models(cache, videos, frozen, tmp_path, monkeypatch,
                                                                     capsys):
    # Rerun: every shard is there, nothing is encoded again.
    before = {p.name: p.stat().st_mtime_ns for p in cache.glob("shard_*")}
    feature_cache.main(cache_args(videos, frozen, cache))
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("shard_*")} == before
    assert "wrote 0 shards" in capsys.readouterr().out

    # Two ranks (as torchrun would run them) write alternate shards: together, the one-process cache.
    split = tmp_path / "split"
    for rank in (0, 1):
        monkeypatch.setattr(feature_cache.dist, "rank", lambda r=rank: r)
        monkeypatch.setattr(feature_cache.dist, "world_size", lambda: 2)
        feature_cache.main(cache_args(videos, frozen, split))
        if rank == 0:
            assert sorted(p.name for p in split.glob("shard_*")) == ["shard_00000.safetensors", "shard_00002.safetensors"]
    for shard in sorted(cache.glob("shard_*")):
        a, b = load_file(shard), load_file(split / shard.name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), shard.name
    monkeypatch.undo()

    # Another VAE: refused, by name.
    other = tmp_path / "other_vae.safetensors"
    torch.manual_seed(1)
    VideoVAE.from_config(tiny_vae_config()).save(other)
    with pytest.raises(SemanticGenError, match=r"vae: the cache was made by vae\.safetensors.*other_vae\.safetensors"):
        feature_cache.main(cache_args(videos, {**frozen, "vae": other}, cache))
    # A preset whose sampling defaults changed since makes the same data: the build resumes; a window does not.
    record = json.loads((cache / "cache.json").read_text())
    later = json.loads(json.dumps(record))
    later["preset"]["defaults"].update(steps=7, guidance=9.0)
    feature_cache._check_same(cache, record, later)
    later["preset"]["defaults"]["window_frames"] = 3
    with pytest.raises(SemanticGenError, match="was made differently: preset: the cache has"):
        feature_cache._check_same(cache, record, later)


def test_bad_datasets_and_caches_get_clear_errors(frozen, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SemanticGenError, match="no video files"):
        feature_cache.main(cache_args(empty, frozen, tmp_path / "c1"))
    manifest = tmp_path / "list.jsonl"
    manifest.write_text('{"path": "a.mp4", "caption": "x"}\nnot json\n')
    with pytest.raises(SemanticGenError, match="line 2"):
        feature_cache.main(cache_args(manifest, frozen, tmp_path / "c2"))
    with pytest.raises(SemanticGenError, match="not a feature cache"):
        train(["stage2", "--cache", str(tmp_path), "--out", str(tmp_path / "run"), "--steps", "1"])


def test_a_manifest_gives_a_video_several_captions(videos, frozen, tmp_path):
    """A .jsonl manifest's caption may be a list: every clip of that video keeps them all (the trainer draws
    one per sample); the other videos keep one."""
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": str(videos / "world_0.mp4"), "caption": ["a red thing", "", "a ball"]})
                        + "\n" + json.dumps({"path": str(videos / "world_1.mp4"), "caption": "one caption"}) + "\n")
    feature_cache.main(cache_args(manifest, frozen, tmp_path / "cache"))
    data = FeatureCache(tmp_path / "cache")
    assert [data.captions(i) for i in range(len(data))] == [2, 2, 1, 1]  # two clips a video; empty captions dropped
    models = FrozenModels.load(TINY, frozen["vae"], frozen["encoder"])
    text, _ = models.text.encode(["a red thing", "a ball", "one caption"])
    for (row, caption), expected in zip([(1, 0), (1, 1), (2, 0)], text):
        torch.testing.assert_close(data.get(row, caption)["text"], expected.to(torch.bfloat16).float(), rtol=0, atol=0)


def stage2_args(cache, out, steps, *extra):
    return ["stage2", "--cache", str(cache), "--out", str(out), "--steps", str(steps), "--batch", "4",
            "--warmup", "2", "--log-every", "1", "--lr", "1e-3", *extra]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


def test_train_export_and_render_through_the_nodes(cache, frozen, tmp_path, pack, tiny_sets, capsys):
    from semanticgen import runner

    s2 = train(stage2_args(cache, tmp_path / "s2", 3, "--ema", "0.9"))
    s1 = train(["stage1", "--cache", str(cache), "--out", str(tmp_path / "s1"), "--steps", "2", "--batch", "4",
                "--max-shots", "2", "--stage2", str(s2)])
    base = train(["baseline", "--cache", str(cache), "--out", str(tmp_path / "base"), "--steps", "2", "--batch", "2",
                  "--init", str(s2), "--lr", "0", "--export-dtype", "float16"])
    log = [json.loads(line) for line in (tmp_path / "s2" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in log)
    assert {"flow", "kl", "grad_norm", "samples_per_s", "memory_gb"} <= log[0].keys()

    info = load_model(s2, "stage2").info
    assert info["steps"] == 3 and info["world_size"] == 1 and info["ema"] == 0.9 and info["clips"] == 10
    assert info["data"]["made_by"]["vae"]["file"] == "vae.safetensors" and "cpu_hours" in info
    # The export is the average, not the last weights.
    raw = weights(train(stage2_args(cache, tmp_path / "raw", 3)))
    assert not torch.allclose(raw["stage2.proj_out.weight"], weights(s2)["stage2.proj_out.weight"])
    stage1 = load_model(s1, "stage1")
    assert stage1.info["steps"] == 2 and stage1.info["stage2"] == "stage2.safetensors"
    assert "init_record" not in stage1.info and load_model(base, "baseline").info["init_record"] == info  # continued
    # --lr 0 from the stage-2 file: the baseline keeps its DiT (float16 export)
    torch.testing.assert_close(load_model(base, "baseline").modules["baseline"].proj_out.weight,
                               load_model(s2, "stage2").modules["stage2"].proj_out.weight, rtol=1e-3, atol=1e-3)

    # The exported files through the text-to-video workflow, as a user runs them.
    models = tmp_path / "models" / "semanticgen"
    models.mkdir(parents=True)
    for src in (s1, s2):
        (models / src.name).write_bytes(src.read_bytes())
    (models / "vae.safetensors").write_bytes(frozen["vae"].read_bytes())
    (models / "encoder.safetensors").write_bytes(frozen["encoder"].read_bytes())
    pack.nodes.comfy.configure(models=tmp_path / "models", input=tmp_path / "input", output=tmp_path / "output",
                               temp=tmp_path / "temp")
    api = runner.to_api(runner.load_workflow("text_to_video"))
    files = {"stage1": "stage1.safetensors", "stage2": "stage2.safetensors", "vae": "vae.safetensors",
             "semantic_encoder": "encoder.safetensors"}
    result = runner.run("text_to_video", sets=tiny_sets(api, files))
    videos = [p for p in result.files if str(p).endswith(".mp4")]
    assert videos and cv2.VideoCapture(str(videos[0])).get(cv2.CAP_PROP_FRAME_COUNT) == 9


def torchrun(nproc: int, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """torchrun in a process group of its own, all of it killed if it outlives ``timeout``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "-m", "semanticgen_core.trainer", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_give_the_weights_of_one(cache, tmp_path, parallel):
    one = train(stage2_args(cache, tmp_path / "one", 3, "--accum", "2", "--ema", "0.5"))
    # FSDP also accumulates (2 micro-steps of 1 clip a rank), synchronising the last one only
    accum = ["--accum", "2"] if parallel == "fsdp" else []
    done = torchrun(2, stage2_args(cache, tmp_path / "two", 3, "--parallel", parallel, "--ema", "0.5", *accum))
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = weights(one), weights(tmp_path / "two" / "stage2.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    moved = weights(train(stage2_args(cache, tmp_path / "moved", 3, "--seed", "1")))
    assert not torch.allclose(moved["stage2.proj_out.weight"], a["stage2.proj_out.weight"])  # the check can fail
    assert load_model(tmp_path / "two" / "stage2.safetensors", "stage2").info["world_size"] == 2


def test_a_run_killed_mid_way_resumes_to_the_same_weights(cache, tmp_path, capsys):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "killed.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "semanticgen_core.trainer",
                                 *stage2_args(cache, tmp_path / "killed", 10_000, "--save-every", "2", "--ema", "0.9")],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    try:
        while not (latest.is_file() and latest.read_text() >= "step_0000004") and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
    finally:
        proc.kill()  # SIGKILL: no chance to save
        proc.wait(timeout=30)
    assert latest.is_file(), log.read_text()[-3000:]
    stopped_at = int(latest.read_text().split("_")[1])
    assert 4 <= stopped_at < 10_000
    total = stopped_at + 3
    resumed = train(stage2_args(cache, tmp_path / "killed", total, "--save-every", "2", "--ema", "0.9"))
    assert f"at step {stopped_at} " in capsys.readouterr().out  # resumed, not started again
    assert not list((tmp_path / "killed" / "checkpoints").glob("*.tmp"))  # a half-written checkpoint is gone
    straight = train(stage2_args(cache, tmp_path / "straight", total, "--save-every", "2", "--ema", "0.9"))
    a, b = weights(resumed), weights(straight)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_model(resumed, "stage2").info["steps"] == total


def test_the_files_users_have_cache_and_stage2_starts_from_wan(videos, tmp_path):
    """Scaled-down models in the layouts of the real ones: Wan2.1's VAE and T2V DiT as single files with the
    original key names (ComfyUI's models/vae and models/diffusion_models), a full Qwen2.5-VL checkpoint
    folder (config.json, the tower under visual.*), umT5 as one file with its tokenizer folder beside it."""
    from test_real_layouts import FILES, QWEN, write_real_layouts

    from semanticgen_core.feature_cache import build
    from semanticgen_core.latent_dit import LatentDiT

    layouts = write_real_layouts(tmp_path / "comfy")
    files, preset, wan = layouts["models"], layouts["preset"], layouts["wan"]
    wan_dit = files / "diffusion_models" / FILES["wan_dit"]
    models = FrozenModels.load(preset, files / "vae" / FILES["vae"], files / "clip_vision" / QWEN,
                               files / "text_encoders" / FILES["text_encoder"])
    spec = clip_spec(preset, SECONDS)
    build(VideoFolder(videos, spec), tmp_path / "cache", preset, models, spec, items_per_shard=3)
    cache = FeatureCache(tmp_path / "cache")
    assert len(cache) == 10 and cache[0]["text"].shape == (512, 16) and cache[0]["features"].shape[-1] == 64
    assert cache.record["made_by"]["text_encoder"]["file"] == "umt5_xxl_fp16.safetensors"

    # stage 2 from the Wan file: with a learning rate of 0 the export is Wan itself, plan layers at their
    # identity start (a closed gate): given any plan it predicts what plain Wan predicts
    out = train(["stage2", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "s2"), "--steps", "1",
                 "--batch", "2", "--lr", "0", "--init-wan", str(wan_dit)])
    stage2 = load_model(out, "stage2").modules["stage2"]
    assert isinstance(stage2, LatentDiT) and torch.equal(stage2.semantic_gate, torch.zeros_like(stage2.semantic_gate))
    x, t, text = torch.randn(1, 16, 3, 8, 8), torch.tensor([700.0]), torch.randn(1, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(stage2(x, t, text, semantic_tokens=torch.randn(1, 2, 2, 2, 8)).sample,
                                   wan(x, t, text).sample)
    assert load_model(out, "stage2").info["init"] == "wan2.1_t2v_1.3B_fp16.safetensors"
    trained = train(["stage2", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "s2b"), "--steps", "2",
                     "--batch", "2", "--lr", "1e-2", "--warmup", "1",
                     "--init-wan", str(wan_dit)])
    assert load_model(trained, "stage2").modules["stage2"].semantic_gate.abs().sum() > 0  # the gate opens


def test_the_aligner_trains_in_contrastive_groups_and_two_processes_give_one_process_weights(cache, tmp_path):
    s2 = train(stage2_args(cache, tmp_path / "s2", 2))

    def args(out, *extra):
        return ["aligner", "--cache", str(cache), "--out", str(out), "--steps", "3", "--batch", "4", "--align-group",
                "2", "--align-grid", "2", "2", "--warmup", "1", "--lr", "1e-2", "--stage2", str(s2), *extra]

    one = train(args(tmp_path / "one"))
    log = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    assert all(0 <= r["order"] <= 1 and r["loss"] > 0 for r in log)
    model = load_model(one, "aligner")
    assert model.info["group"] == 2 and model.modules["aligner"].config.grid == [2, 2]
    done = torchrun(2, args(tmp_path / "two"))  # each process takes one group of 2 clips
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = weights(one), weights(tmp_path / "two" / "aligner.safetensors")
    for key in a:  # atol 1e-4 (steps move weights by ~1e-2): the pooling's key bias has no gradient in exact
        # arithmetic (softmax ignores a shift), so Adam steps it on rounding noise, which differs with the sum order
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4, msg=key)
    moved = weights(train(args(tmp_path / "moved", "--align-group", "4")))  # other groups, other negatives
    assert not torch.allclose(moved["aligner.plan_head.0.weight"], a["aligner.plan_head.0.weight"])
    with pytest.raises(SemanticGenError, match="--align-group"):
        train(args(tmp_path / "bad", "--align-group", "3"))
