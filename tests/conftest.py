import os
import sys
from pathlib import Path

import pytest
import torch

from semanticgen_core.shots import split_shots

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: the tests' models are tiny, and on a busy 2-core machine threads only contend.
torch.set_num_threads(1)


@pytest.fixture
def shared_dir():
    """../shared beside the checkout (design data, ComfyUI facts); a user's clone has none."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside this checkout")
    return SHARED


# -- the ComfyUI node pack (tests/test_nodes.py, test_workflows.py, test_comfyui_integration.py) --------

PACK_NAME = "comfyui_semanticgen"


@pytest.fixture(scope="session")
def pack():
    """The node pack imported as ComfyUI imports a custom-node folder: the repo root as a package, under a
    fixed name (``comfyui_semanticgen``), never with ``nodes`` as a top-level module (ComfyUI has its own).
    The headless runner imports it the same way (``semanticgen.runner.load_pack``)."""
    from semanticgen.runner import load_pack

    module = load_pack(ROOT)
    assert module.__name__ == PACK_NAME
    return module


def _tiny_preset():
    import dataclasses

    from semanticgen_core.presets import TINY

    # TINY's sizes, with text width 384 so the bundled all-MiniLM-L6-v2 ("embedded" text encoder) drives it.
    return dataclasses.replace(TINY, name="tiny-minilm", text_encoder="minilm",
                               stage1={**TINY.stage1, "text_dim": 384}, stage2={**TINY.stage2, "text_dim": 384})


TINY_FILES = {"stage1": "tiny_stage1.safetensors", "stage2": "tiny_stage2.safetensors",
              "vae": "tiny_vae.safetensors", "semantic_encoder": "tiny_encoder.safetensors",
              "aligner": "tiny_aligner.safetensors"}


def write_tiny_models(models_dir: Path) -> dict[str, str]:
    """Random TINY-sized SemanticGen files in ``models_dir/semanticgen`` (ComfyUI's layout)."""
    from semanticgen_core.model_files import save_model
    from semanticgen_core.plan_alignment import PlanTextAligner
    from semanticgen_core.vae import VideoVAE

    preset = _tiny_preset()
    folder = models_dir / "semanticgen"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    parts = preset.build()
    save_model(folder / TINY_FILES["stage1"], "stage1", {"stage1": parts["stage1"]}, preset)
    save_model(folder / TINY_FILES["stage2"], "stage2", {"compressor": parts["compressor"], "stage2": parts["stage2"]},
               preset)
    save_model(folder / TINY_FILES["semantic_encoder"], "semantic_encoder", {"encoder": parts["encoder"]}, preset)
    save_model(folder / TINY_FILES["vae"], "vae", {"vae": VideoVAE.from_config(preset.vae)}, preset)
    aligner = PlanTextAligner(text_dim=preset.stage1["text_dim"], plan_dim=parts["stage1"].config.in_channels)
    save_model(folder / TINY_FILES["aligner"], "aligner", {"aligner": aligner}, preset)
    return dict(TINY_FILES)


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory):
    """A ComfyUI-style folder tree with tiny random SemanticGen files, written once per session."""
    root = tmp_path_factory.mktemp("comfy")
    names = write_tiny_models(root / "models")
    (root / "input").mkdir()
    return {"dir": root / "models", "root": root, **names}


@pytest.fixture
def tiny_models(pack, tiny_model_files):
    """Point the pack's folders (models, input, output) at the tiny files; re-applied for every test, since
    a headless run may point them elsewhere. Returns {"dir": models dir, part: file name}."""
    root = tiny_model_files["root"]
    pack.nodes.comfy.configure(models=root / "models", input=root / "input", output=root / "output",
                               temp=root / "temp")
    return tiny_model_files


def tiny_overrides(api: dict, files: dict, steps: int = 2, frames: int = 9) -> dict:
    """--set style overrides that point a workflow's loaders at the tiny files and keep it short (an aligner
    loader only when ``files`` has an aligner: without one the workflow's embedded aligner stays, unused)."""
    loaders = {"SemanticGenStage1Loader": "stage1", "SemanticGenStage2Loader": "stage2",
               "SemanticGenVAELoader": "vae", "SemanticGenSemanticEncoderLoader": "semantic_encoder",
               "SemanticGenAlignerLoader": "aligner"}
    sets = {}
    prompts = [n["inputs"]["prompt"] for n in api.values() if n["class_type"] == "SemanticGenTextEncode"]
    timed_end = max((shots[-1][1] for p in prompts if (shots := split_shots(p))), default=None)
    for node_id, node in api.items():
        kind = node["class_type"]
        if kind in loaders:
            if loaders[kind] in files or kind != "SemanticGenAlignerLoader":
                sets[f"{node_id}.model_name"] = files[loaders[kind]]
        elif kind in ("SemanticGenStage1Sample", "SemanticGenStage2Sample", "SemanticGenBestOfN"):
            sets[f"{node_id}.steps"] = steps
            if kind == "SemanticGenBestOfN":
                sets[f"{node_id}.candidates"] = 2
            if kind != "SemanticGenStage2Sample":
                sets[f"{node_id}.length"] = frames
                if timed_end:  # keep every shot of a timed prompt: the same seconds at 1 fps
                    sets[f"{node_id}.fps"] = 1.0
                    sets[f"{node_id}.length"] = int(timed_end) + 1
        elif kind == "SemanticGenLoadVideo":
            sets[f"{node_id}.max_frames"] = frames
    return sets


@pytest.fixture(scope="session")
def tiny_sets():
    """``tiny_overrides`` as a fixture (tests import nothing from conftest)."""
    return tiny_overrides


@pytest.fixture(scope="session")
def tiny_world_cache(tmp_path_factory):
    """A feature cache of 4 world clips (the embedded preset's geometry: 33 frames, 64x64 at 8 fps) made by a
    tiny random VAE and semantic encoder: {"cache": folder, "vae": VAE file}."""
    from semanticgen_core.model_files import save_model
    from semanticgen_core.presets import EMBEDDED, TINY
    from semanticgen_core.vae import VideoVAE, tiny_vae_config
    from semanticgen_world import cache

    root = tmp_path_factory.mktemp("clips")
    torch.manual_seed(0)
    save_model(root / "enc.safetensors", "semantic_encoder", {"encoder": TINY.build()["encoder"]}, EMBEDDED)
    VideoVAE.from_config(tiny_vae_config()).save(root / "vae.safetensors")
    cache.main(["--out", str(root / "cache"), "--clips", "4", "--items-per-shard", "2", "--vae",
                str(root / "vae.safetensors"), "--encoder", str(root / "enc.safetensors")])
    return {"cache": root / "cache", "vae": root / "vae.safetensors"}


@pytest.fixture(scope="session")
def tiny_pipe(tmp_path_factory):
    """A pipeline of tiny random models with every part (encoder and baseline included), from files."""
    from semanticgen_core.latent_dit import LatentDiT
    from semanticgen_core.model_files import save_model
    from semanticgen_core.pipeline import SemanticGenPipeline
    from semanticgen_core.presets import TINY
    from semanticgen_core.vae import VideoVAE, tiny_vae_config

    out = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    m = TINY.build()
    save_model(out / "stage1.safetensors", "stage1", {"stage1": m["stage1"]}, TINY)
    save_model(out / "stage2.safetensors", "stage2", {"compressor": m["compressor"], "stage2": m["stage2"]}, TINY)
    save_model(out / "encoder.safetensors", "semantic_encoder", {"encoder": m["encoder"]}, TINY)
    save_model(out / "baseline.safetensors", "baseline", {"baseline": LatentDiT(**TINY.stage2)}, TINY)
    VideoVAE.from_config(tiny_vae_config()).save(out / "vae.safetensors")
    return SemanticGenPipeline.from_files(out / "stage1.safetensors", out / "stage2.safetensors",
                                          out / "vae.safetensors", out / "encoder.safetensors",
                                          baseline=out / "baseline.safetensors")
