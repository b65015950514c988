"""The stage recipes end to end on a tiny cache: encode clips once, train both stages, load the result."""

import pytest
import torch

from semanticgen_core.model_files import save_model
from semanticgen_core.pipeline import SemanticGenPipeline
from semanticgen_core.presets import EMBEDDED, TINY
from semanticgen_core.recipes import dataset, train_baseline, train_stage1, train_stage2
from semanticgen_core.recipes.dataset import ClipCache
from semanticgen_core.errors import SemanticGenError
from semanticgen_core.sampling import SamplingOptions
from semanticgen_core.vae import VideoVAE, tiny_vae_config


def test_cache_then_train_both_stages_then_generate(tmp_path, capsys):
    torch.manual_seed(0)
    assert TINY.encoder == EMBEDDED.encoder  # the tiny tower has the embedded one's layout and width
    save_model(tmp_path / "enc.safetensors", "semantic_encoder", {"encoder": TINY.build()["encoder"]}, EMBEDDED)
    VideoVAE.from_config(tiny_vae_config()).save(tmp_path / "vae.safetensors")
    cache = tmp_path / "cache"
    dataset.build(cache, tmp_path / "vae.safetensors", tmp_path / "enc.safetensors", num_clips=4, shard=2)
    clips = ClipCache(cache)
    assert len(clips) == 4 and clips.data["latents"].shape == (4, 16, 9, 8, 8)
    assert clips.data["features"].shape == (4, 9, 4, 4, 64)   # 33 frames sampled at 4 fps: 17 -> 9 plan steps
    assert clips.data["seeds"].tolist() == [0, 1, 2, 3]
    with pytest.raises(SemanticGenError, match="built with other models or seeds"):
        dataset.build(cache, tmp_path / "vae.safetensors", tmp_path / "enc.safetensors", num_clips=4, shard=2,
                      first_seed=10)

    common = ["--cache", str(cache), "--batch", "2", "--warmup", "1"]
    train_stage2.main([*common, "--out", str(tmp_path / "s2"), "--steps", "3"])
    train_stage2.main([*common, "--out", str(tmp_path / "s2"), "--steps", "4"])  # resumes at step 3
    assert "resumed" in capsys.readouterr().out
    train_stage1.main([*common, "--out", str(tmp_path / "s1"), "--steps", "2",
                       "--stage2", str(tmp_path / "s2" / "stage2.safetensors")])
    pipe = SemanticGenPipeline.from_files(tmp_path / "s1" / "stage1.safetensors", tmp_path / "s2" / "stage2.safetensors",
                                          tmp_path / "vae.safetensors")
    frames = pipe("a red circle moving up", num_frames=9, opts=SamplingOptions(steps=2, guidance=1.0))
    assert frames.shape == (9, 64, 64, 3)
    from semanticgen_core.model_files import load_model
    assert load_model(tmp_path / "s2" / "stage2.safetensors", "stage2").info["steps"] == 4

    # The single-stage baseline: same data and recipe, text only, full attention.
    train_baseline.main([*common, "--out", str(tmp_path / "base"), "--steps", "2", "--export-dtype", "float16",
                         "--init", str(tmp_path / "s2" / "stage2.safetensors"), "--lr", "0"])
    base = load_model(tmp_path / "base" / "baseline.safetensors", "baseline")
    assert base.info["steps"] == 2 and base.modules["baseline"].config.window_frames is None
    from safetensors import safe_open
    with safe_open(str(tmp_path / "base" / "baseline.safetensors"), "pt") as f:
        assert f.get_tensor("baseline.proj_out.weight").dtype == torch.float16
    # --init: the baseline starts from stage 2's DiT (lr 0 keeps it there, up to float16 rounding)
    stage2_dit = load_model(tmp_path / "s2" / "stage2.safetensors", "stage2").modules["stage2"]
    torch.testing.assert_close(base.modules["baseline"].proj_out.weight, stage2_dit.proj_out.weight,
                               rtol=1e-3, atol=1e-3)
    pipe = SemanticGenPipeline.from_files(None, None, tmp_path / "vae.safetensors",
                                          baseline=tmp_path / "base" / "baseline.safetensors")
    opts = SamplingOptions(steps=2, guidance=2.0)
    latents = pipe.render_baseline("a red circle moving up", 9, 8.0, 64, 64, opts)
    assert latents.shape == (1, 16, 3, 8, 8)
    assert torch.equal(latents, pipe.render_baseline("a red circle moving up", 9, 8.0, 64, 64, opts))
    assert not torch.equal(latents, pipe.render_baseline("a blue star moving down", 9, 8.0, 64, 64, opts))


def test_stage2_continues_with_the_compressor_frozen_and_a_cool_down(tiny_clip_cache, tmp_path):
    from semanticgen_core.model_files import load_model
    from semanticgen_world.recipes.loop import lr_factor

    common = ["--cache", str(tiny_clip_cache["cache"]), "--batch", "2", "--warmup", "1", "--out", str(tmp_path / "s2")]
    train_stage2.main([*common, "--steps", "2"])
    before = load_model(tmp_path / "s2" / "stage2.safetensors", "stage2").modules
    train_stage2.main([*common, "--steps", "4", "--decay-steps", "3", "--freeze-compressor"])
    after = load_model(tmp_path / "s2" / "stage2.safetensors", "stage2").modules
    for name, tensor in before["compressor"].state_dict().items():  # so a stage 1 trained on it stays valid
        assert torch.equal(tensor, after["compressor"].state_dict()[name]), name
    assert not torch.equal(before["stage2"].proj_out.weight, after["stage2"].proj_out.weight)
    # warm-up, constant, then down to 0 at the last step's end
    assert [lr_factor(s, 2, 10, 4) for s in (0, 1, 5, 6, 7, 9)] == [0.5, 1.0, 1.0, 1.0, 0.75, 0.25]
    with pytest.raises(SystemExit, match="--decay-steps needs --steps"):
        train_stage2.main([*common, "--decay-steps", "3", "--minutes", "1"])


def test_stage1_strings_cached_clips_into_multi_shot_plans():
    from semanticgen_core.plan import Segment
    from semanticgen_core.recipes.train_stage1 import string_shots
    from semanticgen_core.shots import shot_starts

    plan, text = torch.randn(5, 9, 4, 4, 8), torch.randn(5, 32, 384)
    long, shots, starts = string_shots(plan, text, 2)
    assert long.shape == (2, 18, 4, 4, 8) and shots.shape == (2, 2, 32, 384)
    assert torch.equal(long[1, 9:], plan[3]) and torch.equal(shots[1, 1], text[3])   # clip 3 = 2nd shot of plan 1
    # the same shot boundaries as a real two-shot prompt over the same plan steps
    assert starts == shot_starts([Segment(0, 4, "a"), Segment(4, 8, "b")], 8.0, 18)
    assert string_shots(plan, text, 1)[2] is None


def test_vae_latents_as_plan_features_are_each_plan_cells_2x2_patch():
    from semanticgen_core.recipes.plan_sources import latents_as_features, plan_preset

    latents = torch.randn(2, 16, 9, 8, 8)
    features = latents_as_features(latents)
    assert features.shape == (2, 9, 4, 4, 64)  # the encoder's plan grid and width
    b, t, i, j, c, p, q = 1, 5, 2, 3, 7, 1, 0
    assert features[b, t, i, j, c * 4 + p * 2 + q] == latents[b, c, t, 2 * i + p, 2 * j + q]
    assert plan_preset(8) == EMBEDDED  # the default plan width is the embedded default itself


def test_plan_source_and_width_options_train_export_and_load(tiny_clip_cache, tmp_path, monkeypatch):
    from semanticgen_core.compressor import SemanticCompressor
    from semanticgen_core.model_files import load_model
    from semanticgen_core.recipes.plan_sources import latents_as_features

    seen = []
    forward = SemanticCompressor.forward

    def spy(self, features):
        seen.append(features.detach().clone())
        return forward(self, features)

    monkeypatch.setattr(SemanticCompressor, "forward", spy)
    clips = ClipCache(tiny_clip_cache["cache"]).batch(torch.arange(4))

    def rows_of(inputs, source):  # every compressor input row is one cached clip's
        return bool(inputs) and all(any(torch.equal(row, s) for s in source) for x in inputs for row in x)

    common = ["--cache", str(tiny_clip_cache["cache"]), "--batch", "2", "--warmup", "1", "--steps", "1"]
    train_stage2.main([*common, "--out", str(tmp_path / "enc")])
    assert rows_of(seen, clips["features"]) and load_model(tmp_path / "enc" / "stage2.safetensors",
                                                           "stage2").info["plan_from"] == "encoder"
    seen.clear()
    train_stage2.main([*common, "--out", str(tmp_path / "s2"), "--plan-from", "vae", "--plan-dim", "16"])
    patches = latents_as_features(clips["latents"])
    assert rows_of(seen, patches) and not rows_of(seen, clips["features"])
    s2 = load_model(tmp_path / "s2" / "stage2.safetensors", "stage2")
    assert s2.info["plan_from"] == "vae" and s2.modules["compressor"].config.out_dim == 16
    assert s2.modules["stage2"].config.semantic_dim == 16 and s2.preset.compressor["out_dim"] == 16

    seen.clear()  # stage 1 takes the plan source and width from the stage-2 file
    train_stage1.main([*common, "--out", str(tmp_path / "s1"), "--stage2", str(tmp_path / "s2" / "stage2.safetensors")])
    assert rows_of(seen, patches)
    s1 = load_model(tmp_path / "s1" / "stage1.safetensors", "stage1")
    assert s1.info["plan_from"] == "vae" and s1.modules["stage1"].config.in_channels == 16
    assert s1.modules["stage1"].config.out_channels == 16 and s1.preset.stage1["in_channels"] == 16

    pipe = SemanticGenPipeline.from_files(tmp_path / "s1" / "stage1.safetensors",
                                          tmp_path / "s2" / "stage2.safetensors", tiny_clip_cache["vae"])
    opts = SamplingOptions(steps=1, guidance=1.0)
    assert pipe.generate_plan("a red circle moving up", 9, 8.0, 64, 64, opts).tokens.shape[-1] == 16
    assert pipe("a red circle moving up", num_frames=9, opts=opts).shape == (9, 64, 64, 3)


def test_a_recipe_run_as_a_command_ends_a_bad_input_with_its_message_not_a_traceback(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "no-cache"
    done = subprocess.run([sys.executable, "-m", "semanticgen_core.recipes.train_stage2", "--cache", str(missing),
                           "--out", str(tmp_path / "run"), "--steps", "1"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: no cached clips in {missing}") and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written
