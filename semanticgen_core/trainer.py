"""One trainer for SemanticGen's models, on torch.distributed: one process, or ``torchrun`` on many GPUs.

    python -m semanticgen_core.trainer stage2   --cache CACHE --out runs/stage2 [--init-wan WAN2.1_DIT]
    python -m semanticgen_core.trainer stage1   --cache CACHE --out runs/stage1 --stage2 runs/stage2/stage2.safetensors
    python -m semanticgen_core.trainer baseline --cache CACHE --out runs/baseline [--init FILE]
    python -m semanticgen_core.trainer preview  --cache CACHE --out runs/preview --stage2 runs/stage2/stage2.safetensors
    python -m semanticgen_core.trainer aligner  --cache CACHE --out runs/aligner --stage2 runs/stage2/stage2.safetensors
    torchrun --nproc-per-node 8 -m semanticgen_core.trainer stage2 ... --parallel fsdp --checkpointing

The three tasks are the paper's training order: (a) the compressor with stage 2 (from Wan2.1's DiT, its plan
layers at their identity start), (b) stage 1 on the frozen compressor's plans, and (c) the single-stage
baseline the claims are measured against; (d) the plan-preview decoder (``plan_preview.py``) that draws
the frozen compressor's plans as small frames for the editor; and (e) the aligner of stage 1's alignment
guidance (``plan_alignment.py``), contrastive on the frozen compressor's plans. Each reads a feature cache (``feature_cache.py``), never the
frozen models.

What makes a run reproducible and scalable:

* **The global batch is a function of the step.** Step ``s`` takes positions ``[s B, (s+1) B)`` of an
  endless sequence of seeded epoch permutations; rank ``r`` takes its contiguous share and splits it into
  ``--accum`` micro-batches; every random draw of a sample is keyed by (seed, step, position)
  (``training.SampleNoise``). So 2 processes give the weights of 1 with the same global batch, and a
  resumed run continues exactly: the checkpoint holds only weights, optimizer, averages, the step and the
  time trained.
* **The engines are torch's own:** DDP, or FSDP2 (``fully_shard`` per transformer block, then the rest);
  bf16 autocast over fp32 master weights on GPUs; activation checkpointing per block; gradient
  accumulation without synchronising the inner micro-steps.
* **Checkpoints** are torch.distributed.checkpoint folders (sharded, re-shardable to another world size),
  written under a temporary name and renamed once complete; ``latest`` names the newest. SIGTERM/SIGINT
  (and ``--minutes``) stop every rank at the same step, with a checkpoint; a second signal aborts at once.
* **Export** writes the self-describing model file the nodes load (EMA weights when ``--ema``), with the
  training record in its metadata: data, steps, world size, device hours.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import resource
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)

from . import distributed as dist
from .checkpoints import load_into, write_atomic
from .compressor import SemanticCompressor
from .errors import SemanticGenError, run_command
from .feature_cache import FeatureCache
from .latent_dit import LatentDiT
from .model_files import load_model, read_metadata, save_states
from .plan_sources import SOURCES, plan_features, plan_preset
from .presets import PRESETS, Preset
from .semantic_dit import SemanticDiT
from .training import SampleNoise, alignment_loss, baseline_loss, stage1_loss, stage2_loss

Batch = dict[str, torch.Tensor]


# -- the tasks -----------------------------------------------------------------------------------------


@dataclass
class Task:
    """What one training run optimises: the modules it trains (and exports as ``kind``), and its loss of a
    micro-batch ``loss(batch, noise, step, step_generator)``."""

    kind: str
    trained: dict[str, torch.nn.Module]
    loss: Callable[[Batch, SampleNoise, int, torch.Generator], dict[str, torch.Tensor]]
    preset: Preset
    info: dict
    blocks: list[torch.nn.Module]  # transformer blocks: FSDP units and checkpointing boundaries
    group: int = 1                 # samples that make one training example (stage 1 strings clips into shots)


def fresh_size(config: dict, args, what: str) -> dict:
    """A preset's DiT config at ``--width`` / ``--layers`` when given: heads of the preset's head size, the
    feed-forward at the preset's ratio to the width."""
    config = dict(config)
    if args.width:
        head = config["attention_head_dim"]
        if args.width % head:
            raise SemanticGenError(f"--width {args.width} must be a multiple of {what}'s attention head size, {head}")
        ratio = config["ffn_dim"] / (config["num_attention_heads"] * head)
        config.update(num_attention_heads=args.width // head, ffn_dim=round(ratio * args.width))
    if args.layers:
        config["num_layers"] = args.layers
    return config


def sampling_source(args, preset: Preset) -> Preset:
    """Whose sampling defaults (steps, guidance, ...) the trained file carries: the file it continues (they were
    chosen for that model), else this code's preset of the cache's name. A cache's own are whatever they were
    when it was built (a continuation of the 10-step embedded default on an older cache came out with 20)."""
    if args.init:
        return Preset.from_dict(json.loads(read_metadata(args.init)["preset"]))
    return PRESETS.get(preset.name, preset)


def stage2_task(args, preset: Preset) -> Task:
    plan_from = args.plan_from
    if args.compressor:  # an existing stage 2's compressor, so the plans (and a stage 1 made for them) stay
        start = load_model(args.compressor, "stage2")
        compressor = start.modules["compressor"].float()
        plan_from = start.info.get("plan_from", "encoder")
        preset = plan_preset(preset, compressor.config.out_dim)
    else:
        preset = plan_preset(preset, args.plan_dim)
        compressor = SemanticCompressor(**preset.compressor)
    window = stage2_window(preset) if args.window_frames is None else args.window_frames or None
    if args.init_wan:
        stage2 = LatentDiT.from_wan(args.init_wan, semantic_dim=args.plan_dim, window_frames=window)
    else:
        stage2 = LatentDiT(**{**fresh_size(preset.stage2, args, "stage 2"), "window_frames": window,
                              "plan_attention": args.plan_attention})
    if args.init:
        start = load_model(args.init, "stage2").modules
        compressor, stage2 = start["compressor"].float(), start["stage2"].float()
        preset = plan_preset(preset, compressor.config.out_dim)  # the file's plan width, whatever --plan-dim says
        if args.plan_attention == "joint" and stage2.config.plan_attention == "gated":
            # a gated stage 2 continued with joint attention: every weight kept but the gate
            joint = LatentDiT(**{**{k: v for k, v in stage2.config.items() if not k.startswith("_")},
                                 "plan_attention": "joint"})
            load_into(joint, {k: v for k, v in stage2.state_dict().items() if k != "semantic_gate"},
                      f"stage 2 from {args.init}")
            stage2 = joint
        if args.window_frames is not None:  # no weight depends on the window: the same model, trained in others
            stage2.register_to_config(window_frames=window)
    compressor.requires_grad_(not args.freeze_compressor)

    def loss(batch, noise, step, step_gen):
        window = stage2.config.window_frames  # borders anywhere, as sampling moves them
        offset = float(torch.randint(int(window), (1,), generator=step_gen)) if window else 0.0
        return stage2_loss(compressor, stage2, batch["latents"], plan_features(batch, plan_from), batch["text"],
                           batch["empty_text"], noise, kl_weight=args.kl * min(1.0, step / max(1, args.kl_warmup)),
                           plan_noise=args.plan_noise, window_offset=offset, coverage=batch.get("coverage"),
                           object_weight=args.object_weight, flow_shift=args.flow_shift)

    return Task("stage2", {"compressor": compressor, "stage2": stage2}, loss, preset,
                {"objective": "rectified flow on VAE latents given the plan (noised) + text; KL on the compressor",
                 "kl_weight": args.kl, "kl_warmup": args.kl_warmup, "plan_noise": args.plan_noise,
                 **({"object_weight": args.object_weight} if args.object_weight != 1 else {}),
                 "plan_from": plan_from, "init": Path(args.init_wan or args.init or "random").name,
                 **({"compressor": Path(args.compressor).name} if args.compressor else {})},
                list(stage2.blocks))


def frozen_plans(args, preset: Preset, what: str):
    """The plans a trained stage 2's compressor makes (stage 1 and the preview decoder learn from them):
    ``(plans(batch, noise), plan_from, the preset at the compressor's plan width)``."""
    if not args.stage2:
        raise SemanticGenError(f"{what} learns from the plans of a trained stage 2's compressor: pass --stage2 FILE")
    stage2_file = load_model(args.stage2, "stage2")
    compressor = stage2_file.modules["compressor"].float().requires_grad_(False).to(dist.device())
    plan_from = stage2_file.info.get("plan_from", "encoder")  # files from before the option: the encoder

    @torch.no_grad()
    def plans(batch: Batch, noise: SampleNoise) -> torch.Tensor:
        mean, logvar = compressor(plan_features(batch, plan_from))
        return compressor.sample(mean, logvar, eps=noise.normal("plan_sample", mean.shape[1:]).to(mean))

    return plans, plan_from, plan_preset(preset, compressor.config.out_dim)


def stage2_window(preset: Preset) -> int | None:
    """The window (latent frames) stage 2 trains in: the shifted windows it samples long videos with, the
    preset's stage-2 window, else its sampling default; None (or 0) for full attention."""
    return preset.stage2.get("window_frames", preset.defaults.get("window_frames")) or None


def stage1_task(args, preset: Preset) -> Task:
    plans, plan_from, preset = frozen_plans(args, preset, "stage 1")
    stage1 = load_model(args.init, "stage1").modules["stage1"].float() if args.init else \
        SemanticDiT(**fresh_size(preset.stage1, args, "stage 1"))
    shots = [2 ** i for i in range(args.max_shots.bit_length()) if 2 ** i <= args.max_shots]

    def loss(batch, noise, step, step_gen):
        plan = plans(batch, noise)
        k = shots[int(torch.randint(len(shots), (1,), generator=step_gen))]
        plan, text, starts = string_shots(plan, batch["text"], k)
        return stage1_loss(stage1, plan, text, batch["empty_text"], noise.grouped(k), shot_starts=starts,
                           flow_shift=args.flow_shift)

    return Task("stage1", {"stage1": stage1}, loss, preset,
                {"objective": "rectified flow on compressed plans (sampled) given text; clips strung into plans of "
                              f"{', '.join(map(str, shots))} shots", "stage2": Path(args.stage2).name,
                 "plan_from": plan_from, "init": Path(args.init or "random").name},
                list(stage1.blocks), group=args.max_shots)


def baseline_task(args, preset: Preset) -> Task:
    model = LatentDiT(**{**fresh_size(preset.stage2, args, "the baseline"), "window_frames": None})
    if args.init:  # a stage-2 file's DiT (its plan layers unused), or a baseline to continue
        kind = read_metadata(args.init).get("kind")
        if kind not in ("stage2", "baseline"):
            raise SemanticGenError(f"--init {args.init} holds a {kind!r} model: the baseline starts from a stage-2 "
                                   "or baseline file")
        load_into(model, load_model(args.init, kind).modules[kind].state_dict(), f"baseline from {args.init}")
    elif args.init_wan:
        model = LatentDiT.from_wan(args.init_wan, window_frames=None)
    model.semantic_proj.requires_grad_(False)  # text only: the plan layers get no gradient
    model.semantic_gate.requires_grad_(False)

    def loss(batch, noise, step, step_gen):
        return baseline_loss(model, batch["latents"], batch["text"], batch["empty_text"], noise,
                             flow_shift=args.flow_shift)

    return Task("baseline", {"baseline": model}, loss, preset,
                {"objective": "rectified flow on VAE latents given the text only (single-stage baseline)",
                 "init": Path(args.init or args.init_wan or "random").name}, list(model.blocks))


def preview_task(args, preset: Preset) -> Task:
    """The plan-preview decoder: plans sampled from a stage-2 file's frozen compressor (as stage 1 sees them)
    -> each plan step's thumbnail in the cache (L1 + MSE on RGB in 0..1, objects weighted up)."""
    from .plan_preview import PlanPreviewDecoder

    plans, plan_from, preset = frozen_plans(args, preset, "the preview decoder")
    if args.init:
        decoder = load_model(args.init, "preview").modules["preview"].float()
    else:
        decoder = PlanPreviewDecoder(in_dim=preset.compressor["out_dim"], width=args.preview_width,
                                     scale=args.preview_scale)

    def loss(batch, noise, step, step_gen):
        plan = plans(batch, noise)
        target = batch["thumbs"].float() / 255
        if target.shape[2:4] != (plan.shape[2] * decoder.config.scale, plan.shape[3] * decoder.config.scale):
            target = torch.nn.functional.interpolate(  # the cache's thumbnails at another scale than the decoder's
                target.flatten(0, 1).permute(0, 3, 1, 2), size=tuple(s * decoder.config.scale for s in plan.shape[2:4]),
                mode="bilinear", antialias=True, align_corners=False).permute(0, 2, 3, 1).unflatten(0, target.shape[:2])
        frames = decoder(plan)
        # Objects are small and differ from the frame's typical colour: pixels far from the frame's median
        # colour weigh up to 1 + --preview-contrast times more, so a small object is not averaged away.
        median = target.flatten(2, 3).median(dim=2).values[:, :, None, None]
        weight = 1 + args.preview_contrast * ((target - median).abs().sum(-1, keepdim=True) / 0.3).clamp(max=1)
        weight = weight / weight.mean()
        l1, mse = ((frames - target).abs() * weight).mean(), ((frames - target).square() * weight).mean()
        return {"loss": l1 + mse, "l1": l1, "mse": mse}

    return Task("preview", {"preview": decoder}, loss, preset,
                {"objective": "L1 + MSE of each plan step's drawn frame against the middle frame of its temporal "
                              "patch (the cache's thumbnails), on plans sampled from the frozen compressor; pixels "
                              "far from their frame's median colour weigh up to 1 + preview_contrast times more",
                 "preview_contrast": args.preview_contrast,
                 "stage2": Path(args.stage2).name, "compressor": preset.name, "plan_from": plan_from,
                 "init": Path(args.init or "random").name}, [])


def aligner_task(args, preset: Preset) -> Task:
    """The aligner of alignment guidance: prompts against plans sampled from a stage-2 file's frozen
    compressor (as stage 1 sees them) and their time reversals, in groups of ``--align-group`` clips."""
    from .plan_alignment import PlanTextAligner

    plans, plan_from, preset = frozen_plans(args, preset, "the aligner")
    if args.init:
        aligner = load_model(args.init, "aligner").modules["aligner"].float()
    else:
        aligner = PlanTextAligner(text_dim=preset.stage1["text_dim"], plan_dim=preset.compressor["out_dim"],
                                  grid=args.align_grid)

    def loss(batch, noise, step, step_gen):
        return alignment_loss(aligner, plans(batch, noise), batch["text"], args.align_group)

    return Task("aligner", {"aligner": aligner}, loss, preset,
                {"objective": "symmetric InfoNCE of prompts against plans sampled from the frozen compressor, the "
                              "group's plans played backwards as extra negatives", "group": args.align_group,
                 "stage2": Path(args.stage2).name, "compressor": preset.name, "plan_from": plan_from,
                 "init": Path(args.init or "random").name}, [], group=args.align_group)


TASKS = {"stage2": stage2_task, "stage1": stage1_task, "baseline": baseline_task, "preview": preview_task,
         "aligner": aligner_task}


def string_shots(plan: torch.Tensor, text: torch.Tensor, k: int):
    """``B`` one-shot plans ``[B, T, h, w, c]`` with texts ``[B, L, D]`` -> ``B // k`` plans of ``k`` shots
    ``[B // k, k T, h, w, c]``, per-shot texts ``[B // k, k, L, D]`` and the shots' start times in plan steps
    (None for one shot). Long plans: the cache holds short clips, but stage 1 plans up to a minute with full
    attention, so it sees cuts, per-shot prompts and distances of up to ``k`` clip lengths."""
    if k == 1:
        return plan, text, None
    b, t = plan.shape[:2]
    n = b // k * k
    plan = plan[:n].unflatten(0, (-1, k)).flatten(1, 2)
    starts = [float("-inf")] + [i * t - 0.5 for i in range(1, k)]  # shots.shot_starts' convention
    return plan, text[:n].unflatten(0, (-1, k)), starts


# -- the data: a global batch per step -------------------------------------------------------------------


class StepBatches(torch.utils.data.Sampler):
    """For steps ``first..last-1``: this rank's micro-batches, each a list of ``(cache index, position)``.
    Position ``p`` of the run is clip ``perm_e[p mod N]`` of epoch ``e = p // N``'s seeded permutation."""

    def __init__(self, size: int, batch: int, accum: int, seed: int, first: int, last: int | None):
        self.size, self.batch, self.accum, self.seed, self.first, self.last = size, batch, accum, seed, first, last
        self.share = batch // dist.world_size()
        self._perm: tuple[int, torch.Tensor] | None = None

    def _clip(self, position: int) -> int:
        epoch = position // self.size
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(self.size, generator=torch.Generator().manual_seed(
                self.seed * 1_000_003 + epoch)))
        return int(self._perm[1][position % self.size])

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        micro = self.share // self.accum
        for step in itertools.count(self.first) if self.last is None else range(self.first, self.last):
            start = step * self.batch + dist.rank() * self.share
            for m in range(self.accum):
                positions = range(start + m * micro, start + (m + 1) * micro)
                yield [(self._clip(p), p) for p in positions]

    def __len__(self) -> int:
        return sys.maxsize if self.last is None else (self.last - self.first) * self.accum


class CacheRows(torch.utils.data.Dataset):
    """Position ``p`` of the run reads its clip with one of the clip's captions, drawn with the key
    ``(seed, step, p)`` of the sample's other draws (``micro_loss``): the same choice on any number of
    processes, and again on resuming."""

    def __init__(self, cache: FeatureCache, seed: int, batch: int):
        self.cache, self.seed, self.batch = cache, seed, batch

    def __len__(self) -> int:
        return len(self.cache)

    def caption(self, index: int, position: int) -> int:
        count = self.cache.captions(index)
        if count == 1:
            return 0
        draw = SampleNoise([(self.seed, position // self.batch, position)]).uniform("caption")
        return int(draw[0] * count)

    def __getitem__(self, key: tuple[int, int]) -> Batch:
        index, position = key
        return {**self.cache.get(index, self.caption(index, position)), "position": torch.tensor(position)}


# -- the run -------------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, args, task: Task, cache: FeatureCache):
        self.args, self.task, self.cache = args, task, cache
        self.device = dist.device()
        self.out = Path(args.out)
        self.step, self.elapsed = 0, 0.0
        world = dist.world_size()
        if args.batch % (world * args.accum) or (args.batch // (world * args.accum)) % task.group:
            raise SemanticGenError(
                f"--batch {args.batch} must split evenly over {world} processes x --accum {args.accum} micro-steps"
                + (f" into micro-batches that are multiples of {task.group} (--max-shots or --align-group)"
                   if task.group > 1 else ""))
        self.model = torch.nn.ModuleDict(task.trained).to(self.device).train()
        if args.checkpointing:
            for module in task.trained.values():
                if getattr(module, "_supports_gradient_checkpointing", False):  # the compressor has none
                    module.enable_gradient_checkpointing()
        self.engine = self._wrap()  # FSDP swaps the parameters for sharded ones: collect them after
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01,
                                           foreach=True)
        self.ema = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad} \
            if args.ema else {}
        self.empty_text = cache.empty_text.to(self.device)
        self.resume()

    def _wrap(self) -> torch.nn.Module:
        """DDP over the whole step, or FSDP2 per block then each trained model (each is called as a module,
        so its hooks gather its parameters); in one process, the step as it is."""
        if self.args.parallel == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            if not dist.active():
                raise SemanticGenError("--parallel fsdp shards over processes: launch with torchrun")
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
                if self.autocast else MixedPrecisionPolicy()
            for block in self.task.blocks:
                fully_shard(block, mp_policy=policy)
            for module in self.task.trained.values():
                fully_shard(module, mp_policy=policy)
            return self.model
        if dist.active():
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(_Step(self), device_ids=[self.device] if self.device.type == "cuda" else None)
        return _Step(self)

    @property
    def autocast(self) -> bool:
        return self.device.type == "cuda" and self.args.precision == "bf16"

    # -- checkpoints --
    def _state(self) -> dict:
        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optim": optim_state, "ema": dict(self.ema),
                "progress": {"step": torch.tensor(self.step), "elapsed": torch.tensor(self.elapsed)}}

    def save(self) -> None:
        ckpt = self.out / "checkpoints"
        final, tmp = ckpt / f"step_{self.step:07d}", ckpt / f"step_{self.step:07d}.tmp"
        if final.is_dir():
            return
        if dist.is_main():  # what a killed run left half-written
            for stale in ckpt.glob("*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        dist.barrier()
        dcp.save(self._state(), checkpoint_id=str(tmp), no_dist=not dist.active())
        dist.barrier()
        if dist.is_main():
            tmp.rename(final)
            write_atomic(ckpt / "latest", final.name.encode())
            done = sorted((p for p in ckpt.glob("step_*") if p.suffix != ".tmp"), key=lambda p: int(p.name[5:]))
            for old in done[:-self.args.keep]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()

    def resume(self) -> None:
        latest = self.out / "checkpoints" / "latest"
        if not latest.is_file():
            return
        folder = latest.parent / latest.read_text().strip()
        state = self._state()
        try:
            dcp.load(state, checkpoint_id=str(folder), no_dist=not dist.active())
        except Exception as e:  # noqa: BLE001 - any reader error means the same thing to the user
            raise SemanticGenError(f"cannot resume from {folder}: {e}. It was written by another task, model size, "
                                   "version, or with --ema switched the other way; use a new --out folder") from e
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        for name, value in state["ema"].items():
            self.ema[name].copy_(value)
        self.step, self.elapsed = int(state["progress"]["step"]), float(state["progress"]["elapsed"])
        if dist.is_main():
            print(f"resumed {folder} at step {self.step} ({self.elapsed / 60:.1f} min trained)", flush=True)

    # -- export --
    def export(self) -> Path:
        """Write ``OUT/<kind>.safetensors`` (every rank takes part in gathering; rank 0 writes)."""
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.model, options=full)
        for name, value in self.ema.items():  # every rank: gathering a sharded average is a collective
            value = value.full_tensor() if hasattr(value, "full_tensor") else value
            state[name] = value.detach().cpu()
        path = self.out / f"{self.task.kind}.safetensors"
        if dist.is_main():
            states = {n: {k[len(n) + 1:]: v for k, v in state.items() if k.startswith(n + ".")} for n in self.task.trained}
            hours = self.elapsed / 3600 * dist.world_size()
            info = {**self.task.info, "steps": self.step, "batch": self.args.batch, "lr": self.args.lr,
                    "ema": self.args.ema, **({"flow_shift": self.args.flow_shift} if self.args.flow_shift != 1 else {}),
                    "world_size": dist.world_size(), "device": self.device.type,
                    f"{'gpu' if self.device.type == 'cuda' else 'cpu'}_hours": round(hours, 4),
                    "wall_minutes": round(self.elapsed / 60, 2), "clips": len(self.cache),
                    "data": {"cache": ", ".join(f.name for f in self.cache.folders), "preset": self.cache.preset.name,
                             **{k: self.cache.record[k] for k in ("made_by", "clip")}, "source": self.cache.source}}
            if self.args.init:  # a continued model keeps the record of what it was continued from
                info["init_record"] = json.loads(read_metadata(self.args.init).get("info", "{}"))
            configs = {n: dict(m.config) for n, m in self.task.trained.items()}
            save_states(path, self.task.kind, states, configs, self.task.preset, info,
                        dtype=getattr(torch, self.args.export_dtype))
        dist.barrier()
        return path

    # -- the loop --
    def lr(self, step: int) -> float:
        return self.args.lr * lr_factor(step, self.args.warmup, self.args.steps, self.args.decay_steps)

    def micro_loss(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """The task's loss of one micro-batch (what DDP's wrapped forward runs)."""
        positions = batch.pop("position").tolist()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch["empty_text"] = self.empty_text
        noise = SampleNoise([(self.args.seed, step, p) for p in positions], self.device)
        step_gen = torch.Generator().manual_seed(self.args.seed * 7_919 + step)
        with torch.autocast("cuda", torch.bfloat16, enabled=self.autocast):
            return self.task.loss(batch, noise, step, step_gen)

    def run(self) -> Path:
        args = self.args
        stop = {"signal": False}

        def request_stop(signum, frame):  # the first signal stops at the step's end, with a checkpoint
            if stop["signal"]:
                raise KeyboardInterrupt  # the second aborts at once (a stuck worker or collective)
            stop["signal"] = True
            if dist.is_main():
                print(f"\n{signal.Signals(signum).name}: stopping after this step (again to abort)", flush=True)

        handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        loader = torch.utils.data.DataLoader(
            CacheRows(self.cache, args.seed, args.batch),
            batch_sampler=StepBatches(len(self.cache), args.batch, args.accum, args.seed, self.step, args.steps),
            num_workers=args.workers, timeout=300 if args.workers else 0, pin_memory=self.device.type == "cuda",
            persistent_workers=False)
        micro = iter(loader)
        started, last_log = time.monotonic(), (time.monotonic(), self.step)
        progress = _progress(args.steps, self.step, dist.is_main())
        sums: dict[str, float] = {}
        try:
            while args.steps is None or self.step < args.steps:
                tick = time.monotonic()
                losses = self.train_step(micro)
                self.elapsed += time.monotonic() - tick
                progress.update(1)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                if self.step % args.log_every == 0 or self.step == args.steps:
                    last_log = self._log(sums, last_log)
                    sums = {}
                minutes_up = args.minutes is not None and time.monotonic() - started > 60 * args.minutes
                wants_stop = dist.all_reduce(torch.tensor(float(stop["signal"] or minutes_up), device=self.device),
                                             "max")
                if wants_stop or self.step == args.steps:
                    break
                if self.step % args.save_every == 0:
                    self.save()
                    self.export()
        finally:
            progress.close()
            for s, handler in handlers.items():
                signal.signal(s, handler)
        self.save()
        return self.export()

    def train_step(self, micro: Iterator[Batch]) -> dict[str, float]:
        """One optimiser step: learning rate, forward/backward over ``--accum`` micro-batches, AdamW, EMA."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.step)
        losses = self._step(micro)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._update_ema()
        self.step += 1
        return losses

    def _step(self, micro: Iterator[Batch]) -> dict[str, float]:
        """One optimiser step's forward/backward over ``--accum`` micro-batches; gradients synchronised once."""
        totals: dict[str, float] = {}
        for m in range(self.args.accum):
            last = m == self.args.accum - 1
            sync = _sync(self.engine, self.task.trained, last)
            with sync:
                losses = self.engine(next(micro), self.step) if self.engine is not self.model else \
                    self.micro_loss(next(micro), self.step)
                (losses["loss"] / self.args.accum).backward()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / self.args.accum
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.args.clip)
        totals["grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        return totals

    @torch.no_grad()
    def _update_ema(self) -> None:
        if not self.ema:
            return
        decay = min(self.args.ema, (1 + self.step) / (10 + self.step))  # a short run still averages
        for name, p in self.model.named_parameters():
            if name in self.ema:
                self.ema[name].lerp_(p.detach(), 1 - decay)

    def _log(self, sums: dict[str, float], last: tuple[float, int]) -> tuple[float, int]:
        now, steps = time.monotonic(), self.step - last[1]
        keys = sorted(sums)
        means = dist.all_reduce(torch.tensor([sums[k] / max(1, steps) for k in keys], device=self.device), "mean")
        seconds = max(now - last[0], 1e-9)
        record = {"step": self.step, "minutes": round(self.elapsed / 60, 3), "lr": self.lr(self.step - 1),
                  **{k: round(float(v), 6) for k, v in zip(keys, means)},
                  "samples_per_s": round(steps * self.args.batch / seconds, 3),
                  "memory_gb": round(peak_memory_gb(self.device), 3)}
        if dist.is_main():
            print(" ".join(f"{k}={v}" for k, v in record.items()), flush=True)
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        return now, self.step


class _Step(torch.nn.Module):
    """The trained modules with the loss as ``forward``, so DDP wraps one module whose forward is a step."""

    def __init__(self, trainer: Trainer):
        super().__init__()
        self.model = trainer.model
        self._trainer = [trainer]  # not a submodule

    def forward(self, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        return self._trainer[0].micro_loss(batch, step)


def _sync(engine: torch.nn.Module, trained: dict[str, torch.nn.Module], last: bool):
    """Synchronise gradients only on the last micro-step of an accumulated step: DDP's ``no_sync``, or
    FSDP2's switch on each sharded model (it reaches the blocks sharded inside it)."""
    if hasattr(engine, "no_sync") and not last:
        return engine.no_sync()
    for module in trained.values():
        if hasattr(module, "set_requires_gradient_sync"):
            module.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory of this process: allocated on the GPU, or resident in RAM (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _progress(total: int | None, done: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, disable=not show, unit="step", dynamic_ncols=True)


def lr_factor(step: int, warmup: int, total: int | None, decay_steps: int) -> float:
    """Linear warm-up over ``warmup`` steps, constant, then a linear fall to 0 over the last ``decay_steps``
    of ``total``."""
    factor = min(1.0, (step + 1) / max(1, warmup))
    return factor * min(1.0, (total - step) / decay_steps) if decay_steps else factor


# -- command -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--cache", type=Path, nargs="+", required=True,
                   help="a feature cache (python -m semanticgen_core.feature_cache), or several built alike")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoints/, log.jsonl, the exported model")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps in all (a rerun continues up to it)")
    p.add_argument("--minutes", type=float, default=None, help="stop (with a checkpoint) after this much wall time")
    p.add_argument("--batch", type=int, default=16, help="global batch: clips a step over all processes")
    p.add_argument("--accum", type=int, default=1, help="micro-steps a step (gradient accumulation)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--decay-steps", type=int, default=0, help="linear fall of the learning rate to 0 over the last N of --steps")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the exported weights (0: the raw weights)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flow-shift", type=float, default=1.0,
                   help="stage 1, stage 2, the baseline: training timesteps moved toward noise as sampling's schedule "
                        "of that shift moves them (1: the logit-normal as it is)")
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp",
                   help="under torchrun: replicate (DDP) or shard per block (FSDP2)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast on GPUs (fp32 on CPUs)")
    p.add_argument("--checkpointing", action="store_true", help="recompute each block's activations in backward")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes reading the cache")
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--threads", type=int, default=None, help="CPU threads a process")
    p.add_argument("--export-dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--init", type=Path, help="start from a SemanticGen file (continue a stage; the baseline: a "
                                                 "stage-2 file)")
    start.add_argument("--init-wan", type=Path, help="stage 2 / baseline: start from Wan2.1-T2V weights (diffusers "
                                                     "folder or the single file in ComfyUI's models/diffusion_models)")
    size = p.add_argument_group("a fresh DiT's size (stage 1, stage 2, the baseline; default: the preset's)")
    size.add_argument("--width", type=int, help="model width: attention heads of the preset's head size")
    size.add_argument("--layers", type=int, help="transformer blocks")
    s2 = p.add_argument_group("stage 2")
    s2.add_argument("--kl", type=float, default=1e-4, help="KL weight of the compressor")
    s2.add_argument("--kl-warmup", type=int, default=1000,
                    help="steps over which the KL weight ramps up from 0: stage 2's plan gate starts closed, so early "
                         "on the KL is the compressor's only gradient and would collapse it to the prior")
    s2.add_argument("--plan-noise", type=float, default=0.3, help="max noise level of the plan augmentation")
    s2.add_argument("--plan-from", choices=SOURCES, default="encoder",
                    help="compress the encoder's features (the paper) or the VAE latents (its Fig. 9 ablation)")
    s2.add_argument("--plan-dim", type=int, default=8, help="channels of the plan (the compressor's output)")
    s2.add_argument("--freeze-compressor", action="store_true",
                    help="train the DiT alone, so a stage 1 trained on the compressor's plans stays valid")
    s2.add_argument("--compressor", type=Path,
                    help="start from this stage-2 file's compressor and a fresh DiT (with --freeze-compressor: a "
                         "new stage 2, of another size or attention, for the plans an existing stage 1 makes)")
    s2.add_argument("--window-frames", type=int,
                    help="attention window in latent frames that stage 2 trains and then samples in (0: full "
                         "attention; default: the preset's, or the --init file's)")
    s2.add_argument("--object-weight", type=float, default=1.0,
                    help="weigh the flow error of latent tokens on objects up to this many times a background "
                         "token's (needs a cache whose source marks objects, as the world does)")
    s2.add_argument("--plan-attention", choices=("gated", "joint"), default="gated",
                    help="attention to the plan: its own softmax times a gate that starts closed (the exact start "
                         "from Wan), or one softmax over video and plan keys (a stage 2 from scratch; with --init, "
                         "a gated file continued without its gate)")
    s1 = p.add_argument_group("stage 1")
    s1.add_argument("--stage2", type=Path, help="the trained stage-2 file whose compressor makes the plans")
    s1.add_argument("--max-shots", type=int, default=8, help="longest training plan, in cached clips (a power of 2)")
    pv = p.add_argument_group("preview (the plan-preview decoder; also takes --stage2)")
    pv.add_argument("--preview-width", type=int, default=48, help="channels of the preview decoder's convolutions")
    pv.add_argument("--preview-contrast", type=float, default=4.0,
                    help="extra loss weight of pixels far from their frame's median colour (objects), 0: plain")
    pv.add_argument("--preview-scale", type=int, default=4, help="pixels drawn per plan token on each side (a power of 2)")
    al = p.add_argument_group("aligner (alignment guidance of stage 1; also takes --stage2)")
    al.add_argument("--align-group", type=int, default=16,
                    help="clips a contrastive group: each prompt is told its plan apart from the group's others and "
                         "from their time reversals (the global batch is a multiple of it on each process)")
    al.add_argument("--align-grid", type=int, nargs=2, default=(4, 4), metavar=("H", "W"),
                    help="cells the aligner pools a plan to (the embedded default's plans are 4x4)")
    return p


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    if args.decay_steps and args.steps is None:
        raise SemanticGenError("--decay-steps needs --steps: the cool-down ends at that step")
    if args.max_shots & (args.max_shots - 1):
        raise SemanticGenError(f"--max-shots must be a power of 2, got {args.max_shots}")
    fresh = [name for name, given in (("--width", args.width), ("--layers", args.layers),
                                      ("--compressor", args.compressor)) if given]
    if fresh and (args.init or args.init_wan):
        raise SemanticGenError(f"{', '.join(fresh)} shape a fresh model; --init and --init-wan start from a file "
                               "that has its own (drop one or the other)")
    if args.init_wan and args.plan_attention != "gated":
        raise SemanticGenError("--init-wan keeps the gated plan attention: its closed gate is what makes the start "
                               "exactly Wan's (--plan-attention joint is for a stage 2 from scratch or --init)")
    if (args.compressor or args.plan_attention != "gated" or args.window_frames is not None) and args.task != "stage2":
        raise SemanticGenError("--compressor, --plan-attention and --window-frames are stage 2's options")
    if args.object_weight != 1 and args.task != "stage2":
        raise SemanticGenError("--object-weight is stage 2's option")
    if args.flow_shift != 1 and args.task not in ("stage1", "stage2", "baseline"):
        raise SemanticGenError("--flow-shift is an option of the flow tasks: stage1, stage2 and baseline")
    if args.flow_shift <= 0:
        raise SemanticGenError(f"--flow-shift must be above 0 (1 leaves the timesteps as they are), got {args.flow_shift}")
    if args.object_weight < 1:
        raise SemanticGenError(f"--object-weight must be 1 (no weighting) or more, got {args.object_weight}")
    if args.window_frames is not None and args.window_frames < 0:
        raise SemanticGenError(f"--window-frames must be 0 (full attention) or more, got {args.window_frames}")
    if args.keep < 1:
        raise SemanticGenError(f"--keep must be at least 1 (the checkpoint a rerun resumes from), got {args.keep}")
    if args.threads:
        torch.set_num_threads(args.threads)
    dist.init()
    try:
        with warnings.catch_warnings():
            # one process writes checkpoints the same way (no need to say so); the objectives never change a
            # model's output in place, which is all FSDP2's view warning is about
            warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
            warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
            cache = FeatureCache(*args.cache)
            if args.task == "preview" and not cache.has_thumbnails:
                raise SemanticGenError(
                    f"the preview task learns to draw the cache's thumbnails, but {cache.folder} is a version-"
                    f"{cache.record.get('version', 1)} cache without them: build the cache again (in a new folder) "
                    "with this version of `python -m semanticgen_core.feature_cache` or `semanticgen_world.cache`")
            if args.object_weight != 1 and not cache.has_coverage:
                raise SemanticGenError(
                    f"--object-weight needs each clip's object coverage, which {', '.join(map(str, cache.without_coverage))} "
                    "does not hold: its data source does not mark objects (a folder of videos), or it was built before "
                    "the cache stored them (build it again in a new folder). Drop --object-weight to train on it")
            torch.manual_seed(args.seed)  # fresh weights: the same on every rank, and in every run of a seed
            task = TASKS[args.task](args, cache.preset)
            task = replace(task, preset=task.preset.sampling_from(sampling_source(args, cache.preset)))
            args.out.mkdir(parents=True, exist_ok=True)
            trainer = Trainer(args, task, cache)
            path = trainer.run()
        if dist.is_main():
            print(f"wrote {path} (step {trainer.step})", flush=True)
        return path
    finally:
        dist.shutdown()


if __name__ == "__main__":
    run_command(main)
