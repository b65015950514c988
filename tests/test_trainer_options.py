"""The trainer's options on a world feature cache: a frozen compressor with a cool-down, long multi-shot plans,
the plan's source and width (the paper's ablations), and errors from the command line."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

from semanticgen_core.compressor import SemanticCompressor
from semanticgen_core.errors import SemanticGenError
from semanticgen_core.feature_cache import FeatureCache
from semanticgen_core.model_files import load_model
from semanticgen_core.pipeline import SemanticGenPipeline
from semanticgen_core.plan_sources import latents_as_features, plan_preset
from semanticgen_core.presets import EMBEDDED
from semanticgen_core.sampling import SamplingOptions
from semanticgen_core.trainer import lr_factor, main as train, string_shots


def common(cache, out, steps, *extra):
    return ["--cache", str(cache), "--out", str(out), "--batch", "2", "--warmup", "1", "--steps", str(steps), *extra]


def test_stage2_continues_with_the_compressor_frozen_and_a_cool_down(tiny_world_cache, tmp_path):
    cache = tiny_world_cache["cache"]
    first = train(["stage2", *common(cache, tmp_path / "s2", 2)])
    before = load_model(first, "stage2").modules
    train(["stage2", *common(cache, tmp_path / "s2", 4, "--decay-steps", "3", "--freeze-compressor")])
    after = load_model(first, "stage2").modules
    for name, tensor in before["compressor"].state_dict().items():  # so a stage 1 trained on it stays valid
        assert torch.equal(tensor, after["compressor"].state_dict()[name]), name
    assert not torch.equal(before["stage2"].proj_out.weight, after["stage2"].proj_out.weight)
    # warm-up, constant, then down to 0 at the last step's end
    assert [lr_factor(s, 2, 10, 4) for s in (0, 1, 5, 6, 7, 9)] == [0.5, 1.0, 1.0, 1.0, 0.75, 0.25]
    with pytest.raises(SemanticGenError, match="--decay-steps needs --steps"):
        train(["stage2", "--cache", str(cache), "--out", str(tmp_path / "x"), "--decay-steps", "3"])


def test_stage1_strings_cached_clips_into_multi_shot_plans():
    from semanticgen_core.plan import Segment
    from semanticgen_core.shots import shot_starts

    plan, text = torch.randn(5, 9, 4, 4, 8), torch.randn(5, 32, 384)
    long, shots, starts = string_shots(plan, text, 2)
    assert long.shape == (2, 18, 4, 4, 8) and shots.shape == (2, 2, 32, 384)
    assert torch.equal(long[1, 9:], plan[3]) and torch.equal(shots[1, 1], text[3])   # clip 3 = 2nd shot of plan 1
    # the same shot boundaries as a real two-shot prompt over the same plan steps
    assert starts == shot_starts([Segment(0, 4, "a"), Segment(4, 8, "b")], 8.0, 18)
    assert string_shots(plan, text, 1)[2] is None


def test_vae_latents_as_plan_features_are_each_plan_cells_2x2_patch():
    latents = torch.randn(2, 16, 9, 8, 8)
    features = latents_as_features(latents)
    assert features.shape == (2, 9, 4, 4, 64)  # the encoder's plan grid and width
    b, t, i, j, c, p, q = 1, 5, 2, 3, 7, 1, 0
    assert features[b, t, i, j, c * 4 + p * 2 + q] == latents[b, c, t, 2 * i + p, 2 * j + q]
    assert plan_preset(EMBEDDED, 8) == EMBEDDED  # the default plan width is the embedded default itself


def test_plan_source_and_width_options_train_export_and_load(tiny_world_cache, tmp_path, monkeypatch):
    seen = []
    forward = SemanticCompressor.forward

    def spy(self, features):
        seen.append(features.detach().clone())
        return forward(self, features)

    monkeypatch.setattr(SemanticCompressor, "forward", spy)
    cache = tiny_world_cache["cache"]
    rows = [FeatureCache(cache)[i] for i in range(4)]
    features, patches = [r["features"] for r in rows], [latents_as_features(r["latents"][None])[0] for r in rows]

    def rows_of(inputs, source):  # every compressor input row is one cached clip's
        return bool(inputs) and all(any(torch.equal(row, s) for s in source) for x in inputs for row in x)

    enc = train(["stage2", *common(cache, tmp_path / "enc", 1)])
    assert rows_of(seen, features) and load_model(enc, "stage2").info["plan_from"] == "encoder"
    seen.clear()
    s2_file = train(["stage2", *common(cache, tmp_path / "s2", 1, "--plan-from", "vae", "--plan-dim", "16")])
    assert rows_of(seen, patches) and not rows_of(seen, features)
    s2 = load_model(s2_file, "stage2")
    assert s2.info["plan_from"] == "vae" and s2.modules["compressor"].config.out_dim == 16
    assert s2.modules["stage2"].config.semantic_dim == 16 and s2.preset.compressor["out_dim"] == 16

    seen.clear()  # stage 1 takes the plan source and width from the stage-2 file
    s1_file = train(["stage1", *common(cache, tmp_path / "s1", 1, "--stage2", str(s2_file), "--max-shots", "2")])
    assert rows_of(seen, patches)
    s1 = load_model(s1_file, "stage1")
    assert s1.info["plan_from"] == "vae" and s1.modules["stage1"].config.in_channels == 16
    assert s1.modules["stage1"].config.out_channels == 16 and s1.preset.stage1["in_channels"] == 16

    pipe = SemanticGenPipeline.from_files(s1_file, s2_file, tiny_world_cache["vae"])
    opts = SamplingOptions(steps=1, guidance=1.0)
    assert pipe.generate_plan("a red circle moving up", 9, 8.0, 64, 64, opts).tokens.shape[-1] == 16
    assert pipe("a red circle moving up", num_frames=9, opts=opts).shape == (9, 64, 64, 3)


def test_batch_sizes_that_do_not_split_are_refused(tiny_world_cache, tmp_path):
    with pytest.raises(SemanticGenError, match=r"--batch 3 must split evenly over 1 processes x --accum 2"):
        train(["stage2", *common(tiny_world_cache["cache"], tmp_path / "a", 1), "--batch", "3", "--accum", "2"])


def test_the_trainer_as_a_command_ends_a_bad_input_with_its_message_not_a_traceback(tmp_path):
    missing = tmp_path / "no-cache"
    done = subprocess.run([sys.executable, "-m", "semanticgen_core.trainer", "stage2", "--cache", str(missing),
                           "--out", str(tmp_path / "run"), "--steps", "1"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {missing} is not a feature cache") and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_dataloader_workers_read_the_same_batches(tiny_world_cache, tmp_path):
    from safetensors.torch import load_file

    cache = tiny_world_cache["cache"]
    a = load_file(train(["stage2", *common(cache, tmp_path / "w0", 2)]))
    b = load_file(train(["stage2", *common(cache, tmp_path / "w2", 2, "--workers", "2")]))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_fresh_stage2_of_another_size_and_joint_attention_on_an_existing_compressor_over_two_caches(
        tiny_world_cache, tmp_path):
    """What a longer run on a GPU trains: a wider, deeper stage 2 attending jointly to the plan, for the plans
    of an existing compressor (kept bit for bit, so the stage 1 made for them stays valid), on two caches built
    apart and read as one."""
    from semanticgen_world import cache as world_cache

    first = tiny_world_cache["cache"]
    second = tmp_path / "second"
    world_cache.main(["--out", str(second), "--clips", "2", "--first-seed", "10", "--items-per-shard", "2",
                      "--vae", str(tiny_world_cache["vae"]), "--encoder", str(first.parent / "enc.safetensors")])
    both = FeatureCache(first, second)
    assert len(both) == len(FeatureCache(first)) + 2
    assert both.sources[-2:] == ["world seed 10", "world seed 11"]
    assert torch.equal(both[len(both) - 1]["latents"], FeatureCache(second)[1]["latents"])

    old = train(["stage2", *common(first, tmp_path / "old", 1)])
    new = train(["stage2", "--cache", str(first), str(second), "--out", str(tmp_path / "new"), "--batch", "2",
                 "--warmup", "1", "--steps", "2", "--lr", "1e-2", "--compressor", str(old), "--freeze-compressor",
                 "--width", "64", "--layers", "3", "--plan-attention", "joint"])
    was, now = load_model(old, "stage2"), load_model(new, "stage2")
    for name, tensor in was.modules["compressor"].state_dict().items():
        assert torch.equal(tensor, now.modules["compressor"].state_dict()[name]), name
    dit, preset = now.modules["stage2"], EMBEDDED.stage2
    assert (dit.config.num_attention_heads, dit.config.num_layers) == (64 // preset["attention_head_dim"], 3)
    assert dit.config.ffn_dim == 64 * preset["ffn_dim"] // (preset["num_attention_heads"] * preset["attention_head_dim"])
    assert dit.config.plan_attention == "joint" and dit.semantic_gate is None
    assert now.info["compressor"] == "stage2.safetensors" and len(now.info["data"]["source"]) == 2
    assert now.info["data"]["cache"] == f"{first.name}, {second.name}"
    x, t, text = torch.randn(1, 16, 3, 8, 8), torch.tensor([500.0]), torch.randn(1, 5, 384)
    with torch.no_grad():  # no gate to open: the plan reaches the video from the first step
        a, b = (dit(x, t, text, semantic_tokens=torch.randn(1, 2, 4, 4, 8, generator=torch.Generator().manual_seed(s)))
                .sample for s in (0, 1))
    assert (a - b).abs().max() > 1e-3


def test_caches_that_differ_and_size_options_on_a_loaded_model_are_refused(tiny_world_cache, tmp_path):
    from semanticgen_core.model_files import save_model as save_semanticgen
    from semanticgen_core.presets import TINY
    from semanticgen_world import cache as world_cache

    first = tiny_world_cache["cache"]
    torch.manual_seed(1)
    other_encoder = tmp_path / "other_enc.safetensors"
    save_semanticgen(other_encoder, "semantic_encoder", {"encoder": TINY.build()["encoder"]}, EMBEDDED)
    other = tmp_path / "other"
    world_cache.main(["--out", str(other), "--clips", "2", "--first-seed", "10", "--items-per-shard", "2",
                      "--vae", str(tiny_world_cache["vae"]), "--encoder", str(other_encoder)])
    with pytest.raises(SemanticGenError, match=rf"the caches {first} and {other} cannot train together: their made_by"):
        FeatureCache(first, other)
    later = tmp_path / "later"  # the same data under a preset whose sampling defaults changed: one cache
    shutil.copytree(first, later)
    record = json.loads((later / "cache.json").read_text())
    record["preset"]["defaults"].update(steps=7, guidance=9.0, alignment=50.0)
    (later / "cache.json").write_text(json.dumps(record))
    assert len(FeatureCache(first, later)) == 2 * len(FeatureCache(first))
    record["preset"]["defaults"]["window_frames"] = 2  # stage 2 trains in the preset's window: not the same data
    (later / "cache.json").write_text(json.dumps(record))
    with pytest.raises(SemanticGenError, match=rf"the caches {first} and {later} cannot train together: their preset"):
        FeatureCache(first, later)
    old = train(["stage2", *common(first, tmp_path / "old", 1)])
    with pytest.raises(SemanticGenError, match="--width, --layers shape a fresh model; --init and --init-wan start"):
        train(["stage2", *common(first, tmp_path / "x", 1, "--init", str(old), "--width", "64", "--layers", "2")])
    with pytest.raises(SemanticGenError, match="--width 48 must be a multiple of stage 1's attention head size, 32"):
        train(["stage1", *common(first, tmp_path / "y", 1, "--stage2", str(old), "--width", "48")])
    joint = train(["stage2", *common(first, tmp_path / "joint", 1, "--init", str(old), "--plan-attention", "joint",
                                     "--lr", "0")])  # the gated file continued without its gate, unchanged
    was, now = load_model(old, "stage2").modules, load_model(joint, "stage2").modules
    assert now["stage2"].config.plan_attention == "joint" and now["stage2"].semantic_gate is None
    assert all(torch.equal(v, was["stage2"].state_dict()[k]) for k, v in now["stage2"].state_dict().items())
    full = train(["stage2", *common(first, tmp_path / "full", 1, "--init", str(old), "--window-frames", "0",
                                    "--lr", "0")])  # the same weights, trained and sampled with full attention
    now = load_model(full, "stage2").modules["stage2"]
    assert now.config.window_frames is None and was["stage2"].config.window_frames == 4
    assert all(torch.equal(v, was["stage2"].state_dict()[k]) for k, v in now.state_dict().items())
    with pytest.raises(SemanticGenError, match="--window-frames must be 0 .full attention. or more, got -2"):
        train(["stage2", *common(first, tmp_path / "w", 1, "--window-frames", "-2")])
    with pytest.raises(SemanticGenError, match="--compressor, --plan-attention and --window-frames are stage 2's options"):
        train(["stage1", *common(first, tmp_path / "z", 1, "--stage2", str(old), "--plan-attention", "joint")])


def test_a_trained_file_samples_as_the_model_it_continues_not_as_an_older_cache(tiny_world_cache, tmp_path):
    """Sampling defaults are not data: a continued file keeps the ones chosen for the model it continues, a fresh
    one gets this code's preset's, whatever the (older) cache recorded."""
    from dataclasses import replace

    from semanticgen_core.model_files import save_model
    from semanticgen_core.presets import PRESETS

    older = tmp_path / "older"  # a cache built while the preset sampled with other defaults
    shutil.copytree(tiny_world_cache["cache"], older)
    record = json.loads((older / "cache.json").read_text())
    record["preset"]["defaults"].update(steps=20, alignment=0.0)
    (older / "cache.json").write_text(json.dumps(record))
    now = PRESETS[record["preset"]["name"]].defaults
    fresh = load_model(train(["stage2", *common(older, tmp_path / "fresh", 1)]), "stage2")
    assert (fresh.preset.defaults["steps"], fresh.preset.defaults["alignment"]) == (now["steps"], now["alignment"])
    assert now["steps"] != 20 and now["alignment"] != 0.0
    tuned = tmp_path / "tuned.safetensors"
    save_model(tuned, "stage2", fresh.modules,
               replace(fresh.preset, defaults={**fresh.preset.defaults, "steps": 6, "guidance": 3.5}), fresh.info)
    continued = load_model(train(["stage2", *common(older, tmp_path / "continued", 1, "--init", str(tuned))]),
                           "stage2")
    assert (continued.preset.defaults["steps"], continued.preset.defaults["guidance"]) == (6, 3.5)
    assert continued.preset.defaults["window_frames"] == record["preset"]["defaults"]["window_frames"]


def test_token_coverage_pools_object_pixels_onto_the_causal_vae_latent_grid():
    from semanticgen_core.feature_cache import token_coverage

    mask = torch.zeros(9, 16, 16, dtype=torch.bool)  # 9 frames -> latent frames {0}, {1-4}, {5-8}; 8x8 pixels a token
    mask[0, :8, :8] = True  # frame 0 alone is latent frame 0
    mask[1:5, 8:, :8] = True  # the next four frames: latent frame 1, the token at row 1, column 0, fully covered
    mask[5:7, :4, 8:] = True  # half of frames 5-8, a half of the token's rows: a quarter covered
    cov = token_coverage(mask, (3, 2, 2))
    expected = torch.zeros(3, 2, 2)
    expected[0, 0, 0], expected[1, 1, 0], expected[2, 0, 1] = 1.0, 1.0, 0.25
    assert torch.equal(cov, expected)


def test_object_weight_weighs_the_flow_error_of_object_tokens_and_flow_shift_moves_timesteps_toward_noise(tiny_world_cache, tmp_path):
    """Stage 2's flow error on the latent tokens the world marks as object weighs ``--object-weight`` times more:
    the cache holds each row's coverage (its own clip's labels), the loss weighs each sample's tokens, and a
    cache whose source marks no objects is refused with what to do."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from semanticgen_core.feature_cache import token_coverage
    from semanticgen_core.training import SampleNoise, flow_matching_loss
    from semanticgen_world import world

    cache = FeatureCache(tiny_world_cache["cache"])
    assert cache.has_coverage
    for row in range(len(cache)):  # each row holds the coverage of its own clip
        shots = world.sample_clip_shots(int(cache.sources[row].split()[-1]), 33)
        labels = torch.from_numpy(world.label_maps(shots, 64, 64)["object"] >= 0)
        got = cache[row]["coverage"]
        torch.testing.assert_close(got, token_coverage(labels, got.shape), atol=1e-3, rtol=0)
        assert 0 < got.mean() < 0.5

    x0 = torch.zeros(2, 3, 2, 2, 2)
    noise = SampleNoise.seeded(0, 2)
    times = []
    flow_matching_loss(lambda x, t: times.append(t) or torch.zeros_like(x), x0, noise)
    flow_matching_loss(lambda x, t: times.append(t) or torch.zeros_like(x), x0, noise, shift=3.0)
    plain = times[0] / 1000  # shifted toward noise as sampling's schedule of shift 3: 3t / (1 + 2t)
    torch.testing.assert_close(times[1] / 1000, 3 * plain / (1 + 2 * plain))
    assert (times[1] > times[0]).all()
    perfect = flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, noise)  # predicts 0: error is eps^2
    weight = torch.ones(2, 2, 2, 2)
    assert torch.allclose(flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, noise, weight), perfect)
    eps = noise.normal("flow_eps", x0.shape[1:])
    weight[:, 0, 0, 0] = 5.0  # each sample's first token weighs 5: a weighted mean of the tokens' errors per sample
    error = eps.pow(2).mean(1)
    expected = ((error * weight).flatten(1).sum(1) / weight.flatten(1).sum(1)).mean()
    torch.testing.assert_close(flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, noise, weight), expected)

    folder = tiny_world_cache["cache"]
    plain = train(["stage2", *common(folder, tmp_path / "plain", 2)])
    weighted = train(["stage2", *common(folder, tmp_path / "weighted", 2, "--object-weight", "8")])
    a, b = load_model(plain, "stage2"), load_model(weighted, "stage2")
    assert b.info["object_weight"] == 8.0 and "object_weight" not in a.info
    assert not torch.equal(a.modules["stage2"].proj_out.weight, b.modules["stage2"].proj_out.weight)
    shifted = load_model(train(["stage2", *common(folder, tmp_path / "shifted", 2, "--flow-shift", "3")]), "stage2")
    assert shifted.info["flow_shift"] == 3.0 and "flow_shift" not in a.info
    assert not torch.equal(a.modules["stage2"].proj_out.weight, shifted.modules["stage2"].proj_out.weight)

    unmarked = tmp_path / "unmarked"  # a cache whose source marks no objects (a folder of videos)
    shutil.copytree(folder, unmarked)
    for shard in unmarked.glob("shard_*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys() if k != "coverage"}
            meta = f.metadata()
        save_file(tensors, str(shard), meta)
    assert not FeatureCache(unmarked).has_coverage and "coverage" not in FeatureCache(unmarked)[0]
    with pytest.raises(SemanticGenError, match=rf"--object-weight needs each clip's object coverage, which {unmarked} "
                                               "does not hold"):
        train(["stage2", *common(unmarked, tmp_path / "x", 1, "--object-weight", "8")])
    with pytest.raises(SemanticGenError, match="--flow-shift must be above 0"):
        train(["stage2", *common(folder, tmp_path / "z", 1, "--flow-shift", "0")])
    with pytest.raises(SemanticGenError, match="--flow-shift is an option of the flow tasks"):
        train(["preview", *common(folder, tmp_path / "v", 1, "--stage2", str(plain), "--flow-shift", "3")])
    with pytest.raises(SemanticGenError, match="--object-weight is stage 2's option"):
        train(["stage1", *common(folder, tmp_path / "y", 1, "--stage2", str(plain), "--object-weight", "8")])
