"""Cached training data for the two stages: world clips encoded once by the frozen models.

Each clip of the procedural world is stored as its normalised VAE latents, its semantic-encoder
features and its caption's text embedding (fp16), in shards of ``SHARD`` clips. Encoding is the
expensive part on CPU, so it happens once; shards are written atomically and a rerun skips finished
ones, so an interrupted build resumes. The cache records which VAE and encoder made it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ..checkpoints import save_file_atomic
from semanticgen_world.world import sample_clip  # replaced by the feature cache in the next commit
from ..errors import SemanticGenError, run_command
from ..model_files import load_model
from ..presets import EMBEDDED
from ..text_encoders import MiniLMTextEncoder
from ..vae import VideoVAE

SHARD = 250
SECONDS, FPS, SIZE = 4, 8.0, 64
NUM_FRAMES = int(SECONDS * FPS) + 1  # 4k+1 for the VAE


def file_id(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@torch.no_grad()
def encode_shard(index: int, vae: VideoVAE, encoder, text_encoder, first_seed: int,
                 shard: int = SHARD) -> dict[str, torch.Tensor]:
    seeds = [first_seed + index * shard + i for i in range(shard)]
    clips = [sample_clip(seed, NUM_FRAMES, SIZE, SIZE, FPS) for seed in seeds]
    frames = torch.from_numpy(np.stack([c.frames for c in clips])).float() / 255  # [N, T, H, W, 3]
    latents = []
    for batch in frames.split(25):
        mean = vae.moments(batch.permute(0, 4, 1, 2, 3) * 2 - 1).chunk(2, dim=1)[0]
        latents.append(vae.normalize(mean))
    features = torch.stack([encoder.encode(f, FPS) for f in frames])
    text, _ = text_encoder.encode([c.caption for c in clips])
    return {"latents": torch.cat(latents).half(), "features": features.half(), "text": text.half(),
            "seeds": torch.tensor(seeds)}


def build(cache: Path, vae_path: Path, encoder_path: Path, num_clips: int, first_seed: int = 0,
          shard: int = SHARD) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    made_by = {"vae": file_id(vae_path), "encoder": file_id(encoder_path), "first_seed": first_seed, "shard": shard}
    manifest = cache / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()) != made_by:
        raise SemanticGenError(f"{cache} was built with other models or seeds ({manifest.read_text()}); "
                               "delete it or pass another --cache folder")
    manifest.write_text(json.dumps(made_by))
    vae = VideoVAE.from_pretrained(vae_path)
    encoder = load_model(encoder_path, "semantic_encoder").modules["encoder"]
    text_encoder = MiniLMTextEncoder.from_pretrained()
    for index in range(-(-num_clips // shard)):
        path = cache / f"shard_{index:04d}.safetensors"
        if path.is_file():
            continue
        save_file_atomic(encode_shard(index, vae, encoder, text_encoder, first_seed, shard), path)
        print(f"cached {path} ({(index + 1) * shard} clips)", flush=True)


class ClipCache:
    """All cached shards in memory (fp16); ``batch(idx)`` returns float32 tensors."""

    def __init__(self, cache: Path):
        shards = sorted(Path(cache).glob("shard_*.safetensors"))
        if not shards:
            raise SemanticGenError(f"no cached clips in {cache}: build them with "
                                   f"`python -m semanticgen_core.recipes.dataset --cache {cache} ...`")
        parts: dict[str, list[torch.Tensor]] = {}
        for shard in shards:
            with safe_open(str(shard), "pt") as f:
                for key in f.keys():
                    parts.setdefault(key, []).append(f.get_tensor(key))
        self.data = {k: torch.cat(v) for k, v in parts.items()}
        self.made_by = json.loads((Path(cache) / "manifest.json").read_text())

    def __len__(self) -> int:
        return len(self.data["seeds"])

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[idx].float() for k, v in self.data.items() if k != "seeds"}


def empty_text() -> torch.Tensor:
    """The unconditional (empty-prompt) embedding used for classifier-free guidance."""
    return MiniLMTextEncoder.from_pretrained().encode([""])[0]


def main() -> None:
    p = argparse.ArgumentParser(description="Encode world clips once for stage-1/stage-2 training.")
    p.add_argument("--cache", type=Path, default=Path("runs/cache"))
    p.add_argument("--vae", type=Path, required=True)
    p.add_argument("--encoder", type=Path, required=True)
    p.add_argument("--clips", type=int, default=4000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    build(a.cache, a.vae, a.encoder, a.clips)
    print(f"{len(ClipCache(a.cache))} clips cached for {EMBEDDED.name}")


if __name__ == "__main__":
    run_command(main)
