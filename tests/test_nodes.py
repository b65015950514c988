"""Node contract tests: every node's interface, the loaders' lists and errors, the shared model cache,
the LATENT convention, and the video / plan nodes, all without ComfyUI."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
CUSTOM_TYPES = {"SEMANTICGEN_TEXT_ENCODER", "SEMANTICGEN_STAGE1", "SEMANTICGEN_STAGE2", "SEMANTICGEN_VAE",
                "SEMANTICGEN_ENCODER", "SEMANTICGEN_ALIGNER", "SEMANTICGEN_CONDITIONING", "SEMANTIC_PLAN"}
CORE_TYPES = {"IMAGE", "LATENT"}


def all_nodes():
    from semanticgen.runner import load_pack

    return sorted(load_pack().NODE_CLASS_MAPPINGS.items())


@pytest.mark.parametrize("node_id,cls", all_nodes(), ids=[k for k, _ in all_nodes()])
def test_node_contract(pack, node_id, cls):
    assert node_id.startswith("SemanticGen") and node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
    assert pack.NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("SemanticGen ")
    assert cls.CATEGORY.startswith("SemanticGen/")
    assert isinstance(cls.DESCRIPTION, str) and cls.DESCRIPTION
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    for name, entry in {**spec["required"], **spec.get("optional", {})}.items():
        kind, options = entry[0], entry[1]
        assert isinstance(kind, list) or kind in WIDGETS | CUSTOM_TYPES | CORE_TYPES, (node_id, name, kind)
        assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        if isinstance(kind, list):
            assert kind and options.get("default", kind[0]) in kind
        elif kind in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"], (node_id, name)
    assert isinstance(cls.RETURN_TYPES, tuple)
    assert all(t in CUSTOM_TYPES | CORE_TYPES | {"FLOAT", "INT", "STRING"} for t in cls.RETURN_TYPES)
    if cls.RETURN_TYPES:
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    else:
        assert cls.OUTPUT_NODE, f"{node_id} returns nothing, so it must be an output node"
    function = getattr(cls, cls.FUNCTION)
    params = inspect.signature(function).parameters
    declared = set(spec["required"]) | set(spec.get("optional", {}))
    assert declared <= set(params), f"{node_id}.{cls.FUNCTION} does not take {declared - set(params)}"
    if hasattr(cls, "VALIDATE_INPUTS"):
        assert set(inspect.signature(cls.VALIDATE_INPUTS).parameters) <= declared


def test_node_list_and_categories(pack):
    ids = set(pack.NODE_CLASS_MAPPINGS)
    assert ids == {
        "SemanticGenTextEncoderLoader", "SemanticGenStage1Loader", "SemanticGenStage2Loader", "SemanticGenVAELoader",
        "SemanticGenSemanticEncoderLoader", "SemanticGenAlignerLoader", "SemanticGenTextEncode", "SemanticGenStage1Sample",
        "SemanticGenStage2Sample", "SemanticGenBestOfN", "SemanticGenVAEDecode", "SemanticGenDecodeToVideo", "SemanticGenSemanticEncode",
        "SemanticGenSavePlan", "SemanticGenLoadPlan", "SemanticGenLoadVideo", "SemanticGenSaveVideo",
        "SemanticGenEditPlan", "SemanticGenPlanPreview"}
    assert pack.WEB_DIRECTORY == "./web"


def test_importing_the_pack_is_light():
    """ComfyUI imports every pack at start-up: ours must not pull in diffusers/transformers then."""
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from semanticgen.runner import load_pack
        pack = load_pack()
        for cls in pack.NODE_CLASS_MAPPINGS.values():
            cls.INPUT_TYPES()
        heavy = [m for m in ("diffusers", "transformers", "cv2") if m in sys.modules]
        assert "nodes" not in sys.modules, "the pack's nodes/ must not become a top-level module"
        print("heavy:", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "heavy: []" in out.stdout


# -- loaders ---------------------------------------------------------------------------------------


def test_loaders_list_embedded_first_then_files_of_their_kind(pack, tiny_models):
    m = pack.NODE_CLASS_MAPPINGS
    choices = {k: m[k].INPUT_TYPES()["required"]["model_name"][0] for k in m if k.endswith("Loader")}
    assert all(c[0] == "embedded" for c in choices.values())
    assert choices["SemanticGenStage1Loader"] == ["embedded", tiny_models["stage1"]]
    assert choices["SemanticGenStage2Loader"] == ["embedded", tiny_models["stage2"]]
    assert choices["SemanticGenVAELoader"] == ["embedded", tiny_models["vae"]]
    assert choices["SemanticGenSemanticEncoderLoader"] == ["embedded", tiny_models["semantic_encoder"]]


def test_missing_file_names_the_file_and_its_folder(pack, tiny_models):
    message = pack.NODE_CLASS_MAPPINGS["SemanticGenVAELoader"].VALIDATE_INPUTS("wan_2.1_vae.safetensors")
    assert "wan_2.1_vae.safetensors" in message and "models/vae" in message and "refresh" in message
    message = pack.NODE_CLASS_MAPPINGS["SemanticGenStage1Loader"].VALIDATE_INPUTS("plan.safetensors")
    assert "models/semanticgen" in message and str(tiny_models["dir"] / "semanticgen") in message


def test_embedded_without_weights_is_a_clear_error(pack, tiny_models, tmp_path, monkeypatch):
    from semanticgen_core import embedded
    from semanticgen_core.errors import CheckpointError

    monkeypatch.setattr(embedded, "WEIGHTS_DIR", tmp_path)
    loader = pack.NODE_CLASS_MAPPINGS["SemanticGenStage2Loader"]
    message = loader.VALIDATE_INPUTS("embedded")
    assert "embedded default's stage2 weights are missing" in message and str(tmp_path) in message
    with pytest.raises(CheckpointError, match="stage2 weights are missing"):
        loader().load("embedded", "auto")


def test_loaders_return_cached_models(pack, tiny_models):
    cache = pack.nodes.model_cache.CACHE
    loader = pack.NODE_CLASS_MAPPINGS["SemanticGenStage1Loader"]()
    (first,) = loader.load(tiny_models["stage1"], "fp32")
    loads = cache.loads
    (again,) = loader.load(tiny_models["stage1"], "fp32")
    assert again is first and cache.loads == loads
    assert first.kind == "stage1" and first.preset.name == "tiny-minilm" and first["stage1"] is not None
    (half,) = loader.load(tiny_models["stage1"], "bf16")  # another dtype is another model
    assert half is not first and next(half.part.parameters()).dtype == torch.bfloat16


def wan_dit_file(path: Path) -> Path:
    """A tiny Wan2.1 DiT in a single file (diffusers layout), as a stand-in for a real one."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    torch.manual_seed(3)
    dit = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=16,
                                out_channels=16, text_dim=384, freq_dim=32, ffn_dim=32, num_layers=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, path)
    return path


def test_stage2_loader_takes_a_wan_dit_and_says_its_plan_layers_are_untrained(pack, tiny_models, caplog):
    wan_dit_file(tiny_models["dir"] / "diffusion_models" / "wan_tiny.safetensors")
    loader = pack.NODE_CLASS_MAPPINGS["SemanticGenStage2Loader"]
    assert "wan_tiny.safetensors" in loader.INPUT_TYPES()["required"]["model_name"][0]
    assert "never trained" in loader.INPUT_TYPES()["required"]["model_name"][1]["tooltip"]
    with caplog.at_level("WARNING", logger="SemanticGen"):
        (model,) = loader().load("wan_tiny.safetensors", "fp32")
    assert "never trained" in caplog.text and "full attention, no plan" in model.info["warning"]
    assert model["compressor"] is None and model["stage2"].config.semantic_dim == 8
    assert model.info["plain_wan"] and model["stage2"].config.window_frames is None  # never windowed
    # Taking a plan from a video needs the (missing) compressor: said plainly.
    encode = pack.NODE_CLASS_MAPPINGS["SemanticGenSemanticEncode"]()
    with pytest.raises(ValueError, match="Plan from Video: input 'stage2' .* no trained compressor"):
        encode.encode(None, model, torch.zeros(5, 64, 64, 3), 8.0)


def test_a_plain_wan_file_renders_as_plain_wan(pack, tiny_models, caplog):
    """A Wan2.1 DiT in the stage-2 loader renders exactly as Wan2.1 text-to-video: every model call is Wan's own
    forward (full attention, no plan tokens), and the node says so; a window is refused, never applied."""
    from diffusers import WanTransformer3DModel
    from safetensors.torch import load_file

    from semanticgen_core.pipeline import latent_frames
    from semanticgen_core.plan import SemanticPlan, Segment
    from semanticgen_core.sampling import SamplingOptions, denoise, initial_noise

    path = wan_dit_file(tiny_models["dir"] / "diffusion_models" / "wan_tiny.safetensors")
    wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=16,
                                out_channels=16, text_dim=384, freq_dim=32, ffn_dim=32, num_layers=1).eval()
    wan.load_state_dict(load_file(path))
    (stage2,) = pack.NODE_CLASS_MAPPINGS["SemanticGenStage2Loader"]().load("wan_tiny.safetensors", "fp32")
    (te,) = pack.NODE_CLASS_MAPPINGS["SemanticGenTextEncoderLoader"]().load("embedded", "auto")
    (cond,) = pack.NODE_CLASS_MAPPINGS["SemanticGenTextEncode"]().encode(te, "a red circle bouncing", "")
    # any plan: its tokens (here even of another width) are not used, only its size, length and rate
    plan = SemanticPlan(tokens=torch.randn(2, 4, 4, 3), fps=2.0, video_fps=8.0, num_frames=9, height=32, width=48,
                        segments=[Segment(0.0, 9 / 8, "ignored")], encoder="test", compressor="other")
    calls = []
    dit = stage2["stage2"]
    original = dit.forward

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    dit.forward = spy
    node = pack.NODE_CLASS_MAPPINGS["SemanticGenStage2Sample"]()
    try:
        with caplog.at_level("WARNING", logger="SemanticGen"):
            out = node.sample(stage2, plan, cond, 5, 3, 2.0, 3.0, "euler", -1)
        with pytest.raises(ValueError, match=r"Stage 2: Render Plan: window_frames 4 needs a SemanticGen stage-2 "
                                             r"file.*set window_frames to -1 or 0"):
            node.sample(stage2, plan, cond, 5, 3, 2.0, 3.0, "euler", 4)
    finally:
        del dit.forward
    assert len(calls) == 3 and all(c.get("semantic_tokens") is None and c["window_frames"] is None for c in calls)
    (note,) = out["ui"]["text"]
    assert "plain Wan2.1 DiT" in note and "full attention and no plan" in note and "no plan" in caplog.text
    (latent,) = out["result"]
    opts = SamplingOptions(steps=3, guidance=2.0, shift=3.0, seed=5)
    noise = initial_noise((1, 16, latent_frames(9), 4, 6), 5)
    with torch.no_grad():
        want = denoise(lambda x, t, c: wan(x, t, c).sample, noise, cond.cond, cond.uncond, opts)
    torch.testing.assert_close(pack.nodes.latent_format.from_comfy(latent["samples"]), want, rtol=1e-5, atol=1e-5)
    assert latent["semanticgen_num_frames"] == 9


def test_a_size_off_the_16_pixel_grid_stops_at_the_first_node_that_takes_it(pack, tiny_models, tiny_sets):
    from semanticgen import runner

    stage1 = pack.NODE_CLASS_MAPPINGS["SemanticGenStage1Sample"]
    message = stage1.VALIDATE_INPUTS(width=72, height=64)
    assert message == ("SemanticGen Stage 1: Plan from Text: width 72 is not a multiple of 16 (the VAE's 8x stride "
                       "times stage 2's 2x2 patches): use 64 or 80.")
    assert stage1.VALIDATE_INPUTS(width=64, height=64) is True and stage1.VALIDATE_INPUTS() is True
    assert "height 8 is below the minimum 16" in stage1.VALIDATE_INPUTS(width=64, height=8)
    (s1,) = pack.NODE_CLASS_MAPPINGS["SemanticGenStage1Loader"]().load(tiny_models["stage1"], "auto")
    with pytest.raises(ValueError, match="Plan from Text: height 40 is not a multiple of 16.*use 32 or 48"):
        stage1().sample(s1, None, 64, 40, 9, 8.0, 0, 1, 1.0, 3.0, "euler")  # a linked value: checked when it runs
    # headless: refused by validation, before any model is loaded
    api = runner.to_api(runner.load_workflow("text_to_video"))
    sets = {**tiny_sets(api, tiny_models), "Stage 1: plan.width": 72}
    loads = pack.nodes.model_cache.CACHE.loads
    with pytest.raises(runner.WorkflowError, match=r"node 8 'Stage 1: plan' \(SemanticGenStage1Sample\): SemanticGen "
                                                   r"Stage 1: Plan from Text: width 72 is not a multiple of 16.*use 64 or 80"):
        runner.run("text_to_video", sets=sets)
    assert pack.nodes.model_cache.CACHE.loads == loads
    load_video = pack.NODE_CLASS_MAPPINGS["SemanticGenLoadVideo"]
    assert "SemanticGen Load Video: width 72 is not a multiple of 16" in load_video.VALIDATE_INPUTS(
        "semanticgen_example.mp4", 72, 0)
    assert load_video.VALIDATE_INPUTS("semanticgen_example.mp4", 0, 0) is True
    with pytest.raises(ValueError, match="Load Video: height 20 is not a multiple of 16.*use 16 or 32"):
        load_video().load("semanticgen_example.mp4", 0.0, 64, 20, 3)
    (stage2,) = pack.NODE_CLASS_MAPPINGS["SemanticGenStage2Loader"]().load(tiny_models["stage2"], "auto")
    with pytest.raises(ValueError, match="Plan from Video: images' width 72 is not a multiple of 16.*use 64 or 80.*"
                                         "Load Video's width and height"):
        pack.NODE_CLASS_MAPPINGS["SemanticGenSemanticEncode"]().encode(None, stage2, torch.zeros(5, 64, 72, 3), 8.0)


# -- model cache ------------------------------------------------------------------------------------


def test_model_cache_keys_by_file_version_and_evicts_least_recently_used(pack, tmp_path):
    cache_mod = pack.nodes.model_cache
    cache = cache_mod.ModelCache(budget_bytes=2 * 4 * 1000 + 100)  # room for two 1000-float models
    files = [tmp_path / f"{i}.bin" for i in range(3)]
    for f in files:
        f.write_bytes(b"x")

    def loader():
        return {"m": torch.nn.Linear(1000, 1, bias=False)}, None, {}

    a = cache.get("k", "a", files[0], torch.float32, loader)
    b = cache.get("k", "b", files[1], torch.float32, loader)
    assert cache.get("k", "a", files[0], torch.float32, loader) is a and cache.loads == 2  # a is now recent
    cache.get("k", "c", files[2], torch.float32, loader)  # over budget: b (least recent) goes
    assert len(cache) == 2 and cache.get("k", "a", files[0], torch.float32, loader) is a and cache.loads == 3
    assert cache.get("k", "b", files[1], torch.float32, loader) is not b and cache.loads == 4
    files[0].write_bytes(b"changed")  # a new file version is loaded again, the stale one dropped
    assert cache.get("k", "a", files[0], torch.float32, loader) is not a and cache.loads == 5


# -- text, latents ----------------------------------------------------------------------------------


def test_text_encode_and_a_clear_width_mismatch(pack, tiny_models):
    (te,) = pack.NODE_CLASS_MAPPINGS["SemanticGenTextEncoderLoader"]().load("embedded", "auto")
    (cond,) = pack.NODE_CLASS_MAPPINGS["SemanticGenTextEncode"]().encode(te, "a red circle bouncing", "")
    assert cond.cond.shape == cond.uncond.shape == (1, 32, 384) and cond.prompt == "a red circle bouncing"
    with pytest.raises(ValueError, match="expects 4096-d text embeddings.*umT5.*all-MiniLM-L6-v2 \\(384-d\\)"):
        cond.check(4096, "stage 2 (wan)")


def test_latent_is_raw_like_core_wan(pack):
    from comfyui_semanticgen.nodes import latent_format

    z = torch.randn(1, 16, 3, 4, 4)
    raw = latent_format.to_comfy(z)
    torch.testing.assert_close(latent_format.from_comfy(raw), z)
    # comfy/latent_formats.py Wan21.process_out: latent * latents_std + latents_mean (channel 0, channel 15)
    torch.testing.assert_close(raw[0, 0], z[0, 0] * 2.8184 - 0.7571)
    torch.testing.assert_close(raw[0, 15], z[0, 15] * 1.9160 - 0.2921)


# -- video and plans --------------------------------------------------------------------------------


def write_test_video(path: Path, frames: int, fps: float, size=(48, 80)) -> None:
    import cv2

    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(frames):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[:, : (i + 1) * w // frames] = (0, 0, 255)  # red bar growing to the right (BGR)
        writer.write(frame)
    writer.release()


def test_load_video_resamples_resizes_and_limits(pack, tiny_models):
    path = tiny_models["root"] / "input" / "bar.mp4"
    write_test_video(path, frames=20, fps=16.0)
    node = pack.NODE_CLASS_MAPPINGS["SemanticGenLoadVideo"]
    assert "bar.mp4" in node.INPUT_TYPES()["required"]["video"][0]
    assert "semanticgen_example.mp4" in node.INPUT_TYPES()["required"]["video"][0]
    frames, fps, count = node().load("bar.mp4", force_rate=8.0, width=64, height=64, max_frames=0)
    assert frames.shape == (10, 64, 64, 3) and fps == 8.0 and count == 10
    assert frames.dtype == torch.float32 and 0 <= frames.min() and frames.max() <= 1
    assert frames[..., 0].mean() > frames[..., 2].mean()  # red stays red (BGR -> RGB)
    frames, fps, count = node().load("bar.mp4", 0.0, 0, 0, 5)
    assert frames.shape == (5, 48, 80, 3) and fps == 16.0
    assert "not found" in node.VALIDATE_INPUTS("missing.mp4") and "input folder" in node.VALIDATE_INPUTS("missing.mp4")


def test_save_video_writes_a_readable_mp4_with_a_preview(pack, tiny_models):
    import cv2

    frames = torch.rand(9, 64, 48, 3)
    ui = pack.NODE_CLASS_MAPPINGS["SemanticGenSaveVideo"]().save(frames, 8.0, "tests/clip", "vp9")["ui"]
    item = ui["images"][0]
    assert item["subfolder"] == "tests" and item["type"] == "output" and ui["animated"] == [True]
    path = pack.nodes.comfy.output_dir() / item["subfolder"] / item["filename"]
    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 9 and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 48
    second = pack.NODE_CLASS_MAPPINGS["SemanticGenSaveVideo"]().save(frames, 8.0, "tests/clip", "mp4v")["ui"]
    assert second["images"][0]["filename"] == "clip_00002.mp4"
    with pytest.raises(ValueError, match="outside the output folder"):
        pack.NODE_CLASS_MAPPINGS["SemanticGenSaveVideo"]().save(frames, 8.0, "../escape", "vp9")


def test_save_and_load_plan_round_trip(pack, tiny_models):
    from semanticgen_core.plan import SemanticPlan, Segment

    plan = SemanticPlan(tokens=torch.randn(2, 4, 4, 8), fps=2.0, video_fps=8.0, num_frames=9, height=64, width=64,
                        segments=[Segment(0.0, 9 / 8, "a star")], encoder="test", compressor="tiny-minilm")
    out = pack.NODE_CLASS_MAPPINGS["SemanticGenSavePlan"]().save(plan, "plans/p")
    (relative,) = out["result"]
    assert relative == "plans/p_00001.safetensors" and out["ui"]["text"] == [relative]
    load = pack.NODE_CLASS_MAPPINGS["SemanticGenLoadPlan"]
    assert load.VALIDATE_INPUTS(relative) is True and load.VALIDATE_INPUTS(None) is True
    (loaded,) = load().load(relative)
    assert loaded == plan
    message = load.VALIDATE_INPUTS("plans/none.safetensors")
    assert "not found" in message and "Save Plan" in message


def test_stage2_rejects_a_plan_of_another_width(pack, tiny_models):
    from semanticgen_core.plan import SemanticPlan

    (stage2,) = pack.NODE_CLASS_MAPPINGS["SemanticGenStage2Loader"]().load(tiny_models["stage2"], "auto")
    (te,) = pack.NODE_CLASS_MAPPINGS["SemanticGenTextEncoderLoader"]().load("embedded", "auto")
    (cond,) = pack.NODE_CLASS_MAPPINGS["SemanticGenTextEncode"]().encode(te, "a star", "")
    plan = SemanticPlan(tokens=torch.randn(2, 4, 4, 3), fps=2.0, video_fps=8.0, num_frames=9, height=64, width=64,
                        segments=[], encoder="other", compressor="other")
    with pytest.raises(ValueError, match="3-channel tokens .* renders 8-channel plans"):
        pack.NODE_CLASS_MAPPINGS["SemanticGenStage2Sample"]().sample(stage2, plan, cond, 0, 1, 1.0, 3.0, "euler", -1)


def test_the_library_has_one_import_identity(pack, tiny_models, tiny_sets):
    """The nodes, the runner and the tests share ``semanticgen_core``: an error a node raises is the class
    callers catch, and no second copy of the library is loaded under the pack's name."""
    import sys

    import semanticgen_core.errors
    from semanticgen import runner

    api = runner.to_api(runner.load_workflow("text_to_video"))
    runner.run("text_to_video", sets=tiny_sets(api, tiny_models))
    assert not [m for m in sys.modules if m.startswith(f"{pack.__name__}.semanticgen_core")]
    assert pack.nodes.text.SemanticGenError is semanticgen_core.errors.SemanticGenError


def test_stage1_steers_with_a_connected_aligner_and_old_workflows_keep_its_default(pack, tiny_models, caplog):
    import json
    import logging

    from semanticgen import runner
    from semanticgen_core.model_files import save_model
    from semanticgen_core.plan_alignment import PlanTextAligner
    from semanticgen_core.presets import EMBEDDED

    nodes = pack.NODE_CLASS_MAPPINGS
    (s1,) = nodes["SemanticGenStage1Loader"]().load("embedded", "auto")
    (aligner,) = nodes["SemanticGenAlignerLoader"]().load("embedded", "auto")
    (te,) = nodes["SemanticGenTextEncoderLoader"]().load("embedded", "auto")
    (cond,) = nodes["SemanticGenTextEncode"]().encode(te, "a red circle moving from left to right over blue stripes", "")
    stage1 = nodes["SemanticGenStage1Sample"]()

    def plan(**extra):
        return stage1.sample(s1, cond, 64, 64, 33, 8.0, 3, 6, 2.5, 3.0, "euler", **extra)[0].tokens

    plain, off, steered = plan(), plan(aligner=aligner, alignment=0.0), plan(aligner=aligner, alignment=100.0)
    assert torch.equal(plain, off) and not torch.allclose(plain, steered, atol=1e-3)
    # the widget's -1 is the model's stop (0.75: the first steps only); 0 steers every step
    assert torch.equal(plan(aligner=aligner, alignment=100.0, alignment_stop=0.75), steered)
    assert not torch.allclose(plan(aligner=aligner, alignment=100.0, alignment_stop=0.0), steered, atol=1e-3)
    text = te["text_encoder"].encode([cond.prompt])[0]
    with torch.no_grad():  # steered toward its prompt: the aligner scores it higher
        assert aligner["aligner"].score(text, steered[None]) > aligner["aligner"].score(text, plain[None])
    # The edit node's regenerations sample as Stage 1 does: regenerating the whole plan with its seed and steps
    # gives Stage 1's plan, steered with the aligner connected and plain without.
    edit = nodes["SemanticGenEditPlan"]()
    base = stage1.sample(s1, cond, 64, 64, 33, 8.0, 3, 6, 2.5, 3.0, "euler")[0]
    regen = json.dumps([{"op": "regenerate", "seed": 3, "steps": 6}])
    again, same = edit.edit(base, regen, stage1=s1, conditioning=cond)["result"]
    again_steered, _ = edit.edit(base, regen, stage1=s1, conditioning=cond, aligner=aligner)["result"]
    assert same is cond  # the plan keeps its prompt: stage 2 gets the conditioning as it came
    torch.testing.assert_close(again.tokens, plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(again_steered.tokens, steered, rtol=0, atol=1e-4)
    assert again_steered.history[-1]["alignment"] == 100.0 and "alignment" not in again.history[-1]
    assert again_steered.history[-1]["alignment_stop"] == 0.75  # the model's, as Stage 1 samples
    # An aligner of other plans (another preset, or other widths) is not used: the run goes on unguided.
    other = tiny_models["dir"] / "semanticgen" / "aligner_16.safetensors"
    save_model(other, "aligner", {"aligner": PlanTextAligner(text_dim=16)}, EMBEDDED)
    (wrong,) = nodes["SemanticGenAlignerLoader"]().load(other.name, "auto")
    (tiny,) = nodes["SemanticGenStage1Loader"]().load(tiny_models["stage1"], "auto")
    with caplog.at_level(logging.WARNING, logger="SemanticGen"):
        assert torch.equal(plan(aligner=wrong), plain)
        unguided = stage1.sample(tiny, cond, 64, 64, 9, 8.0, 0, 2, 1.0, 3.0, "euler")[0].tokens
        assert torch.equal(stage1.sample(tiny, cond, 64, 64, 9, 8.0, 0, 2, 1.0, 3.0, "euler", aligner=aligner)[0].tokens,
                           unguided)
    assert caplog.text.count("sampled without alignment guidance") == 2
    assert "the aligner aligner_16.safetensors (embedded plans, 16-d text) does not fit stage 1 embedded" in caplog.text
    assert "the aligner embedded (embedded plans, 384-d text) does not fit stage 1 tiny_stage1.safetensors " \
           "(tiny-minilm plans" in caplog.text
    # Workflows saved before Stage 1 had its alignment widgets load, with the widgets' defaults.
    wf = json.loads((ROOT / "workflows" / "text_to_video.json").read_text())
    node = next(n for n in wf["nodes"] if n["type"] == "SemanticGenStage1Sample")
    assert node["widgets_values"][-2:] == [100.0, -1.0]  # alignment, and where it stops: the model's
    node["widgets_values"] = node["widgets_values"][:-1]  # before alignment_stop (session 18)
    inputs = runner.to_api(wf)[str(node["id"])]["inputs"]
    assert "alignment_stop" not in inputs and inputs["alignment"] == 100.0
    node["widgets_values"] = node["widgets_values"][:-1]  # before the alignment weight
    inputs = runner.to_api(wf)[str(node["id"])]["inputs"]
    assert "alignment" not in inputs and inputs["aligner"][0] and inputs["steps"] == 10
    node["widgets_values"] = node["widgets_values"][:-1]
    with pytest.raises(runner.WorkflowError, match="has 9 widget values but SemanticGenStage1Sample takes 12"):
        runner.to_api(wf)
