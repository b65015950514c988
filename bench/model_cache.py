"""Benchmark: a second run of the same workflow loads no model again.

    python bench/model_cache.py [--workflow text_to_video] [--tiny] [--steps N]

Runs a shipped workflow twice in one process (as a ComfyUI server or the headless runner would) and
prints the model-load time and count of each run. Uses the embedded default when its weights are in
semanticgen_core/weights; otherwise (or with --tiny) random TINY-sized models written to a temp folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semanticgen import runner  # noqa: E402

LOADERS = {"SemanticGenStage1Loader": "stage1", "SemanticGenStage2Loader": "stage2", "SemanticGenVAELoader": "vae",
           "SemanticGenSemanticEncoderLoader": "semantic_encoder"}


def tiny_models(folder: Path) -> dict[str, str]:
    """Random TINY-sized SemanticGen files (text width 384, for the bundled MiniLM) in folder/semanticgen."""
    lib = lambda name: importlib.import_module(f"semanticgen_core.{name}")  # noqa: E731
    tiny = lib("presets").TINY
    preset = dataclasses.replace(tiny, name="tiny-minilm", text_encoder="minilm",
                                 stage1={**tiny.stage1, "text_dim": 384}, stage2={**tiny.stage2, "text_dim": 384})
    parts, save = preset.build(), lib("model_files").save_model
    out = folder / "semanticgen"
    out.mkdir(parents=True, exist_ok=True)
    save(out / "stage1.safetensors", "stage1", {"stage1": parts["stage1"]}, preset)
    save(out / "stage2.safetensors", "stage2", {"compressor": parts["compressor"], "stage2": parts["stage2"]}, preset)
    save(out / "semantic_encoder.safetensors", "semantic_encoder", {"encoder": parts["encoder"]}, preset)
    save(out / "vae.safetensors", "vae", {"vae": lib("vae").VideoVAE.from_config(preset.vae)}, preset)
    return {part: f"{part}.safetensors" for part in ("stage1", "stage2", "semantic_encoder", "vae")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflow", default="text_to_video")
    parser.add_argument("--tiny", action="store_true", help="use random tiny models even if the embedded ones exist")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps per stage (default 4: loads are the point)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    pack = runner.load_pack()
    from semanticgen_core import embedded

    have_embedded = all((embedded.WEIGHTS_DIR / f"{p}.safetensors").is_file() for p in embedded.PARTS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        api = runner.to_api(runner.load_workflow(args.workflow))
        sets = {}
        if args.tiny or not have_embedded:
            files = tiny_models(tmp / "models")
            sets = {f"{i}.model_name": files[LOADERS[n["class_type"]]] for i, n in api.items() if n["class_type"] in LOADERS}
            print(f"models: random TINY-sized files in {tmp / 'models'}"
                  + ("" if args.tiny else " (the embedded weights are not in semanticgen_core/weights yet)"))
        else:
            print("models: the embedded default")
        for i, n in api.items():
            if n["class_type"] in ("SemanticGenStage1Sample", "SemanticGenStage2Sample"):
                sets[f"{i}.steps"] = args.steps
        cache = pack.nodes.model_cache.CACHE
        for attempt in ("first", "second"):
            result = runner.run(api, sets=sets, models=tmp / "models", input=tmp / "input", output=tmp / "output")
            loaders = [r for r in result.runs if r.class_type.endswith("Loader")]
            print(f"{attempt} run: {result.loads} models loaded in {result.load_seconds:.2f} s "
                  f"(loader nodes {sum(r.seconds for r in loaders):.3f} s); whole run {result.seconds:.2f} s; "
                  f"cache holds {len(cache)} models, {cache.nbytes() / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
