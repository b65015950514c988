"""The whole chain on tiny random models: text -> plan -> latents -> frames, and video -> plan."""

import pytest
import torch

from semanticgen_world.world import sample_clip
from semanticgen_core.errors import Interrupted, SemanticGenError
from semanticgen_core.model_files import load_model, save_model
from semanticgen_core.pipeline import SemanticGenPipeline
from semanticgen_core.plan import SemanticPlan
from semanticgen_core.presets import TINY
from semanticgen_core.sampling import SamplingOptions
from semanticgen_core.vae import VideoVAE, tiny_vae_config


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny random parts written as SemanticGen model files, as the recipes write them."""
    out = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = TINY.build()
    m["stage2"].semantic_gate.data.fill_(0.5)  # an open gate: the plan reaches the video
    save_model(out / "stage1.safetensors", "stage1", {"stage1": m["stage1"]}, TINY)
    save_model(out / "stage2.safetensors", "stage2", {"compressor": m["compressor"], "stage2": m["stage2"]}, TINY)
    save_model(out / "encoder.safetensors", "semantic_encoder", {"encoder": m["encoder"]}, TINY)
    VideoVAE.from_config(tiny_vae_config()).save(out / "vae.safetensors")
    return out


@pytest.fixture(scope="module")
def pipe(files):
    return SemanticGenPipeline.from_files(files / "stage1.safetensors", files / "stage2.safetensors",
                                          files / "vae.safetensors", files / "encoder.safetensors")


OPTS = dict(steps=3, guidance=2.0)


def test_text_to_video_is_reproducible_by_seed(pipe):
    a = pipe("a red circle moving from left to right", num_frames=9, fps=8, opts=SamplingOptions(seed=1, **OPTS))
    b = pipe("a red circle moving from left to right", num_frames=9, fps=8, opts=SamplingOptions(seed=1, **OPTS))
    c = pipe("a red circle moving from left to right", num_frames=9, fps=8, opts=SamplingOptions(seed=2, **OPTS))
    assert a.shape == (9, 64, 64, 3) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 1e-3


def test_plan_grid_matches_the_encoder_and_prompts_change_the_plan(pipe):
    opts = SamplingOptions(seed=5, **OPTS)
    plan = pipe.generate_plan("a blue star growing", 33, 8.0, 64, 64, opts)
    assert plan.grid == pipe.semantic_encoder.grid_shape(33, 64, 64, 8.0) == (5, 4, 4)  # 4 s sampled at 2 fps: 9 frames -> 5 temporal patches
    assert plan.segments[0].prompt == "a blue star growing" and plan.seed == 5
    other = pipe.generate_plan("a green square moving up", 33, 8.0, 64, 64, opts)
    assert (plan.tokens - other.tokens).abs().max() > 1e-4


def test_video_to_plan_to_video(pipe, tmp_path):
    clip = sample_clip(3, 17, 64, 64, 8.0)
    frames = torch.from_numpy(clip.frames).float() / 255
    plan = pipe.encode_video(frames, 8.0, prompt=clip.caption)
    mean, _ = pipe.compressor(pipe.semantic_encoder.encode(frames, 8.0))
    assert torch.equal(plan.tokens, mean)  # the compressor's mean, deterministically
    plan.save(tmp_path / "p.safetensors")
    loaded = SemanticPlan.load(tmp_path / "p.safetensors")
    opts = SamplingOptions(seed=0, **OPTS)
    latents = pipe.render_latents(loaded, opts)
    assert latents.shape == (1, 16, 5, 8, 8)
    assert torch.equal(latents, pipe.render_latents(plan, opts))
    # The plan conditions stage 2: another plan gives other latents from the same noise.
    loaded.tokens = loaded.tokens.flip(0)
    assert (pipe.render_latents(loaded, opts) - latents).abs().max() > 1e-4
    assert pipe.decode(latents, 17).shape == (17, 64, 64, 3)


def test_interrupt_stops_sampling_and_the_pipeline_stays_usable(pipe):
    calls = []
    with pytest.raises(Interrupted):
        pipe("a red circle", num_frames=9, opts=SamplingOptions(seed=0, **OPTS),
             should_stop=lambda: calls.append(1) or len(calls) > 1)
    assert pipe("a red circle", num_frames=9, opts=SamplingOptions(seed=0, **OPTS)).shape[0] == 9


def test_bad_inputs_are_named(pipe, files):
    plan = pipe.generate_plan("a red circle", 9, 8.0, 64, 64, SamplingOptions(seed=0, **OPTS))
    plan.tokens = plan.tokens[..., :4]
    with pytest.raises(SemanticGenError, match="4 channels per token but this stage-2 model expects 8"):
        pipe.render_latents(plan, SamplingOptions(**OPTS))
    with pytest.raises(SemanticGenError, match="holds a SemanticGen 'stage1' model, not 'stage2'"):
        load_model(files / "stage1.safetensors", "stage2")
    no_stage1 = SemanticGenPipeline.from_files(None, files / "stage2.safetensors", None)
    with pytest.raises(SemanticGenError, match="no stage1 loaded"):
        no_stage1.generate_plan("x", 9, 8.0, 64, 64, SamplingOptions())


def test_multi_shot_prompt_conditions_each_span(pipe):
    opts = SamplingOptions(seed=4, **OPTS)
    prompt = "0-2 s: a red circle moving up; 2-4.125 s: a blue square shrinking"
    plan = pipe.generate_plan(prompt, 33, 8.0, 64, 64, opts)
    assert [(s.start_s, s.end_s, s.prompt) for s in plan.segments] == \
        [(0.0, 2.0, "a red circle moving up"), (2.0, 4.125, "a blue square shrinking")]
    # The same text for both shots is the single-prompt plan; another second shot changes the plan.
    same = pipe.generate_plan("0-2 s: a red circle moving up; 2-4.125 s: a red circle moving up", 33, 8.0, 64, 64, opts)
    single = pipe.generate_plan("a red circle moving up", 33, 8.0, 64, 64, opts)
    torch.testing.assert_close(same.tokens, single.tokens, atol=1e-5, rtol=1e-5)
    assert (plan.tokens - single.tokens).abs().max() > 1e-4
    latents = pipe.render_latents(plan, opts)
    assert latents.shape == (1, 16, 9, 8, 8)
    cond, uncond = pipe.shot_text(plan.segments)
    assert cond.shape[:2] == (1, 2) and uncond.shape == cond.shape
    with pytest.raises(SemanticGenError, match="hold 2 shot\\(s\\) but the prompt has 1"):
        pipe.generate_plan("a red circle", 33, 8.0, 64, 64, opts, text_embeddings=(cond, uncond))


def test_a_bf16_pipeline_runs_its_models_in_bf16_and_samples_in_float32(pipe, files):
    """As diffusers' Wan pipeline: the transformer runs in bf16, the sampling state stays float32."""
    bf16 = SemanticGenPipeline.from_files(files / "stage1.safetensors", files / "stage2.safetensors", None,
                                          dtype=torch.bfloat16)
    seen, states = [], []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((type(m).__name__, args[0].dtype)))
             for m in (bf16.stage1, bf16.stage2)]
    try:
        opts = SamplingOptions(seed=3, steps=4, guidance=2.0)
        progress = lambda i, n, x: states.append(x.dtype)  # noqa: E731
        plan = bf16.generate_plan("a red circle moving up", 9, 8.0, 64, 64, opts, progress)
        latents = bf16.render_latents(plan, opts, progress=progress)
    finally:
        for h in hooks:
            h.remove()
    assert {dtype for _, dtype in seen} == {torch.bfloat16}
    assert {name for name, _ in seen} == {"SemanticDiT", "LatentDiT"}
    assert set(states) == {torch.float32} and len(states) == 8 and latents.dtype == torch.float32
    # Close to the float32 pipeline: the difference is the models' bf16 arithmetic only.
    ref_plan = pipe.generate_plan("a red circle moving up", 9, 8.0, 64, 64, opts)
    ref = pipe.render_latents(ref_plan, opts)
    print(f"bf16 vs float32: plan {(plan.tokens - ref_plan.tokens).abs().max():.4f}, "
          f"latents {(latents - ref).abs().max():.4f}")
    torch.testing.assert_close(plan.tokens, ref_plan.tokens, atol=0.05, rtol=0)
    torch.testing.assert_close(latents, ref, atol=0.05, rtol=0)


def test_plan_noise_renders_the_plan_as_training_noised_it(pipe):
    clip = sample_clip(4, 17, 64, 64, 8.0)
    plan = pipe.encode_video(torch.from_numpy(clip.frames).float() / 255, 8.0, prompt=clip.caption)
    opts = SamplingOptions(seed=0, **OPTS)
    clean = pipe.render_latents(plan, opts)
    assert torch.equal(clean, pipe.render_latents(plan, opts, plan_noise=0.0))  # the default: no noise
    noised = pipe.render_latents(plan, opts, plan_noise=0.3)
    assert torch.equal(noised, pipe.render_latents(plan, opts, plan_noise=0.3))  # seeded
    assert (noised - clean).abs().max() > 1e-4
    with pytest.raises(SemanticGenError, match="plan_noise"):
        pipe.render_latents(plan, opts, plan_noise=1.5)
