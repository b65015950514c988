"""Benchmark: one training step of stage 2 and of stage 1 under the real trainer, at a preset's full size.

    python bench/train_step.py [--preset wan2.1-1.3b] [--frames 81] [--height 480] [--width 832] [--batch 1]
                               [--steps 3] [--warmup-steps 1] [--max-seconds 420] [--json out.json] [--md out.md]
    python bench/train_step.py --device cpu --preset tiny --frames 17 --window-frames 2   # the test's size

Random weights of the preset's architectures, built on the device (no download: same shapes, same cost), and a
synthetic feature cache of the real row shapes (``latents [16, T', H/8, W/8]``, ``features [T_s, h, w, d]``,
``text [L, D]``), so each step is the trainer's own: ``trainer.stage2_task`` / ``stage1_task`` build the task,
``trainer.Trainer(args, task, cache)`` wraps it (bf16 autocast over fp32 master weights on a GPU, its
``--checkpointing``: activation checkpointing per block of the DiTs, AdamW), its DataLoader (``StepBatches`` over
``CacheRows``) feeds it, and a step is ``Trainer.train_step`` (what ``Trainer.run`` calls each step: learning
rate, forward/backward over the micro-batches, gradient clip, AdamW, EMA).

Tasks, in this order (the optional one last, so the budget goes to the required ones first):

* ``stage2``: the compressor and stage 2 (``LatentDiT``) exactly as the trainer builds them from the preset:
  attention in the shifted windows stage 2 samples long videos with (``stage2_task``: the preset's
  ``stage2["window_frames"]``, else its sampling default ``defaults["window_frames"]``: 8 latent frames for
  ``wan2.1-1.3b``, none for ``tiny``) and the trainer's random window offset per step. ``--window-frames N``
  sets the preset's stage-2 window (0: full attention), so that the trainer builds stage 2 with it.
* ``stage1``: ``SemanticDiT`` on the plans of a frozen compressor (read from a stage-2 file, as the trainer
  requires: the bench writes one with a random compressor of the preset's size), one clip per plan
  (``--max-shots 1``: the trainer's default strings up to 8 clips, which needs a batch that is a multiple of
  8); ``--stage1-batch`` sets its batch apart.
* ``stage2-full``: the comparison, stage 2 with full attention over video + plan tokens (the trainer's
  ``stage2_task`` on the preset with ``stage2["window_frames"] = None``, as stage 2 trained before it took
  windows); run only when the trainer's stage 2 is windowed (else it is the ``stage2`` row).

Per task: ``--warmup-steps`` untimed steps, then ``--steps`` timed steps (synchronised), each the trainer's
full optimiser step including fetching the micro-batch from the (in-memory) cache. Reported: mean step time,
peak memory (``torch.cuda.max_memory_allocated`` from before the models are built: weights, gradients, AdamW
states and activations), tokens per step (stage 2: video + plan tokens; stage 1: plan tokens; x batch),
tokens/s, model FLOPs per step, MFU, HFU and the GPU-hours 10k steps take on one GPU at that batch.

FLOPs are analytic (``bench/long_video.py``'s ``layer_flops``/``forward_flops``: matmuls, convolutions and
attention scores/values, a multiply-add = 2), per forward call as it actually ran (shapes, windows and window
offset read by forward hooks). **Model FLOPs** (for MFU) = forward + backward: for a trained model about
3 x forward (the backward is 2 x, 1 x for layers whose input needs no gradient: patch, text and timestep
embeddings; none for stage 2's plan tokens in the last block's feed-forward, whose output is unused), 1 x
forward for a frozen one (stage 1's compressor); activation checkpointing's recomputation is not counted.
**Hardware FLOPs** (for HFU) add the recomputed block forwards (about 4 x forward). Unless
``--no-count-flops``, one more step per task runs under ``torch.utils.flop_counter.FlopCounterMode`` and its
count is reported beside the hardware FLOPs of that same step (on a CPU attention runs through the math
kernel so that the counter sees it).

MFU/HFU are against the datasheet dense bf16 peak of the detected GPU (``PEAK_BF16_TFLOPS``; override with
``--peak-tflops``), and MFU also against a measured bf16 matmul rate (``--matmul-seconds``; 0 to skip).

Guards: a budget (``--max-seconds``, default 7 minutes) is checked before every task and step: timing stops
early (and says so) when the next step would pass it; a watchdog prints what finished and ends the process
(exit 3) should a step outlive the budget by 30 s; an out-of-memory error in a task is reported in its row and
the next task runs. ``--layers N`` shrinks both DiTs' depth: a smoke test of the real widths on a small machine.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import inspect
import json
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

from long_video import DiTShape, forward_flops, layer_flops  # noqa: E402
from semanticgen_core import distributed as dist  # noqa: E402
from semanticgen_core import trainer as tr  # noqa: E402
from semanticgen_core.attention import time_windows  # noqa: E402
from semanticgen_core.compressor import SemanticCompressor  # noqa: E402
from semanticgen_core.errors import SemanticGenError, run_command  # noqa: E402
from semanticgen_core.latent_dit import LatentDiT  # noqa: E402
from semanticgen_core.model_files import save_model  # noqa: E402
from semanticgen_core.pipeline import latent_frames  # noqa: E402
from semanticgen_core.plan_sources import plan_preset  # noqa: E402
from semanticgen_core.presets import PRESETS, TINY, Preset  # noqa: E402
from semanticgen_core.semantic_dit import SemanticDiT  # noqa: E402
from semanticgen_core.text_encoders import MiniLMTextEncoder, UMT5TextEncoder  # noqa: E402
from semanticgen_core.wan_blocks import cell_centres  # noqa: E402

TASK_ORDER = ("stage2", "stage1", "stage2-full")
GiB = 2 ** 30
STEPS_FOR_HOURS = 10_000
WATCHDOG_GRACE = 30.0  # seconds past --max-seconds before the watchdog ends a run stuck in a step
MATMUL_N = 8192
FLOP_CONVENTION = ("model = forward + backward (about 3 x forward for trained models: 2 x for the backward, "
                   "1 x where a layer's input needs no gradient; 1 x forward for frozen models); hardware = model + "
                   "the block forwards recomputed by activation checkpointing")

# Datasheet dense (no sparsity) bf16 tensor-core peaks, TFLOP/s; the first name found in the device name wins.
PEAK_BF16_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("GH200", 989.4, "GH200 datasheet, dense bf16"),
    ("H200", 989.4, "H200 datasheet, dense bf16"),
    ("H100 PCIe", 756.0, "H100 PCIe datasheet, dense bf16"),
    ("H100 NVL", 835.5, "H100 NVL datasheet, dense bf16"),
    ("H100", 989.4, "H100 SXM datasheet, dense bf16"),
    ("H800", 989.4, "H800 SXM datasheet, dense bf16"),
    ("B200", 2250.0, "B200 datasheet, dense bf16"),
    ("A100", 312.0, "A100 datasheet, dense bf16"),
    ("A800", 312.0, "A800 datasheet, dense bf16"),
    ("L40S", 362.1, "L40S datasheet, dense bf16"),
)


def datasheet_peak(name: str) -> tuple[float | None, str]:
    for key, tflops, source in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return tflops * 1e12, source
    return None, f"no datasheet peak known for {name!r} (pass --peak-tflops)"


# --------------------------------------------------------------------------- geometry and the synthetic cache


def text_length(preset: Preset) -> int:
    """Tokens a prompt is padded to by the preset's text encoder (the cache's ``text_max_length``)."""
    cls = UMT5TextEncoder if preset.text_encoder == "umt5-xxl" else MiniLMTextEncoder
    return int(inspect.signature(cls.from_pretrained).parameters["max_length"].default)


@dataclasses.dataclass(frozen=True)
class Geometry:
    frames: int
    fps: float
    height: int
    width: int
    latents: tuple[int, int, int, int]      # [C, T', H/8, W/8], a cache row's ``latents``
    features: tuple[int, int, int, int]     # [T_s, h, w, d], a cache row's ``features``
    text: tuple[int, int]                   # [L, D]
    video_tokens: int                       # stage 2's video tokens of one clip
    plan_tokens: int                        # plan tokens of one clip (stage 1's sequence, stage 2's in-context)

    @classmethod
    def of(cls, preset: Preset, frames: int, fps: float, height: int, width: int) -> Geometry:
        pt, ph, pw = preset.stage2["patch_size"]
        if height % (8 * ph) or width % (8 * pw):
            raise SemanticGenError(f"{width}x{height}: height and width must be multiples of {8 * ph} (the VAE's 8 x "
                                   "the patch)")
        t = latent_frames(frames)
        if t % pt:
            raise SemanticGenError(f"{frames} frames give {t} latent frames, not a multiple of the patch {pt}")
        t_s, h_s, w_s = preset.plan_grid(frames, fps, height, width)
        return cls(frames, fps, height, width, (preset.stage2["in_channels"], t, height // 8, width // 8),
                   (t_s, h_s, w_s, preset.compressor["in_dim"]), (text_length(preset), preset.stage2["text_dim"]),
                   t // pt * (height // 8 // ph) * (width // 8 // pw), t_s * h_s * w_s)


class SyntheticCache:
    """``FeatureCache``'s interface over random rows of the real shapes (stored in the cache's dtypes:
    latents float16, features and text bfloat16; read as float32, as ``FeatureCache`` returns them)."""

    def __init__(self, preset: Preset, geometry: Geometry, rows: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self._rows = [{"latents": torch.randn(geometry.latents, generator=g).half(),
                       "features": torch.randn(geometry.features, generator=g).bfloat16(),
                       "text": (0.2 * torch.randn(geometry.text, generator=g)).bfloat16()} for _ in range(rows)]
        self.empty_text = (0.2 * torch.randn(geometry.text, generator=g)).bfloat16().float()
        self.folder = Path("synthetic-cache")
        self.record = {"preset": preset.name, "made_by": {"bench": "bench/train_step.py (random rows)"},
                       "clip": {"num_frames": geometry.frames, "fps": geometry.fps, "height": geometry.height,
                                "width": geometry.width}, "source": "random", "text_max_length": geometry.text[0]}

    @property
    def preset(self) -> str:
        return self.record["preset"]

    def __len__(self) -> int:
        return len(self._rows)

    def captions(self, index: int) -> int:
        return 1

    def get(self, index: int, caption: int = 0) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in self._rows[index].items()}


# --------------------------------------------------------------------------- analytic FLOPs of what ran


def compressor_flops(config, tokens: int) -> int:
    """One forward of ``SemanticCompressor`` over ``tokens`` tokens (its Linear layers; the norm and GELU are
    elementwise and not counted)."""
    widths = [config["in_dim"]] + [config["hidden_dim"]] * (config["depth"] - 1) + [2 * config["out_dim"]]
    return 2 * tokens * sum(a * b for a, b in zip(widths, widths[1:]))


def stage2_layouts(grid_t: int, per_frame: int, plan_steps: int, per_step: int, window: int | None,
                   offset: float) -> list[list[int]]:
    """Token counts of stage 2's attention windows for ``[unshifted, shifted]`` layers, laid out by the
    library's ``time_windows`` exactly as ``LatentDiT.forward`` calls it (with the window offset)."""
    video = torch.arange(grid_t).repeat_interleave(per_frame).double()
    plan = cell_centres(plan_steps, grid_t).clamp(0, grid_t - 1).repeat_interleave(per_step) if plan_steps else None
    return [[(w.video.stop - w.video.start) + (w.semantic.stop - w.semantic.start)
             for w in time_windows(video, plan, window, shifted, offset)] for shifted in (False, True)]


def dit_flops(config, layouts: Sequence[Sequence[int]], n_video: int, n_plan: int, text_len: int) -> dict[str, int]:
    """One forward of a Wan-style DiT, batch 1: ``total``, the ``blocks``' share (what checkpointing recomputes)
    and ``attention`` (scores and values)."""
    shape = DiTShape.of(dict(config))
    blocks = sum(layer_flops(layouts[i % len(layouts)], shape.dim, shape.ffn_dim, text_len)["total"]
                 for i in range(shape.layers))
    f = forward_flops(shape, layouts, n_video, n_plan, text_len)
    return {"total": f["total"], "blocks": blocks, "attention": f["attention"]}


class FlopRecorder:
    """Forward hooks that note every call of the DiTs and compressors (shapes, windows, offset, whether it
    trains), so FLOPs and tokens are those of the step as it ran."""

    def __init__(self, dits: Sequence[torch.nn.Module]):
        self.calls: list[dict] = []
        self._handles = [m.register_forward_pre_hook(self._dit, with_kwargs=True) for m in dits]
        self._handles.append(torch.nn.modules.module.register_module_forward_pre_hook(self._any))

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @staticmethod
    def _trains(module: torch.nn.Module) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters())

    def _any(self, module, args):
        if isinstance(module, SemanticCompressor):  # the frozen one lives in stage 1's loss: a global hook sees it
            x, c = args[0], module.config  # [B, T_s, h, w, d]: counted over all B tokens at once
            tokens = x.numel() // x.shape[-1]
            first = 2 * tokens * c["in_dim"] * (c["hidden_dim"] if c["depth"] > 1 else 2 * c["out_dim"])
            self.calls.append({"kind": "compressor", "batch": 1, "tokens": tokens, "trains": self._trains(module),
                               "checkpointed": False, "forward": compressor_flops(c, tokens), "blocks": 0,
                               "attention": 0, "weight_only": 0 if x.requires_grad else first, "dead": 0})

    def _dit(self, module, args, kwargs):
        names = list(inspect.signature(module.forward).parameters)
        bound = {**dict(zip(names, args)), **kwargs}
        x, text = bound["hidden_states"], bound["encoder_hidden_states"]
        if text.ndim != 3:
            raise SemanticGenError("the FLOP count handles one prompt per sample (stage 1 with --max-shots 1)")
        c = module.config
        shape = DiTShape.of(dict(c))
        pt, ph, pw = c.patch_size
        b, _, t, h, w = x.shape
        grid_t, per_frame = t // pt, (h // ph) * (w // pw)
        n_video, n_plan, text_len, plan = grid_t * per_frame, 0, text.shape[1], None
        if isinstance(module, LatentDiT):
            plan = bound.get("semantic_tokens")
            t_s, per_step = (plan.shape[1], plan.shape[2] * plan.shape[3]) if plan is not None else (0, 0)
            n_plan = t_s * per_step
            window = bound.get("window_frames", -1)
            window = c.window_frames if window == -1 else window
            offset = float(bound.get("window_offset", 0.0))
            f = dit_flops(c, stage2_layouts(grid_t, per_frame, t_s, per_step, window, offset), n_video, n_plan,
                          text_len)
            kind, tokens, extra = "stage2", n_video + n_plan, {"video_tokens": n_video, "plan_tokens": n_plan,
                                                              "window": window, "offset": offset}
        else:  # SemanticDiT: patch 1x1x1, full attention over the plan
            f = dit_flops(c, [[n_video]], n_video, 0, text_len)
            kind, tokens, extra = "stage1", n_video, {"plan_tokens": n_video}
        # Layers whose input needs no gradient: their backward computes only the weight gradient (1 x forward).
        d = shape.dim
        weight_only = 2 * shape.freq_dim * d * (2 if n_plan else 1)  # timestep embedding's first Linear
        weight_only += 0 if x.requires_grad else 2 * n_video * shape.patch_in * d  # patch embedding
        weight_only += 0 if text.requires_grad else 2 * text_len * shape.text_dim * d  # text embedding's first Linear
        if plan is not None and not plan.requires_grad:
            weight_only += 2 * n_plan * shape.semantic_dim * d  # plan projection
        # The plan tokens leave the last block unused: its feed-forward over them gets no backward at all.
        dead = 4 * n_plan * d * shape.ffn_dim
        trains = self._trains(module)
        self.calls.append({"kind": kind, "batch": b, "tokens": tokens, "trains": trains,
                           "checkpointed": trains and bool(getattr(module, "gradient_checkpointing", False)),
                           "forward": f["total"], "blocks": f["blocks"], "attention": f["attention"],
                           "weight_only": weight_only, "dead": dead, **extra})

    def take(self) -> list[dict]:
        calls, self.calls = self.calls, []
        return calls


def step_flops(calls: Sequence[dict]) -> dict[str, int]:
    """FLOPs and tokens of one step's recorded calls:

    * ``model``: forward + backward. A frozen call is its forward; a trained one its forward and a backward of
      2 x forward (input and weight gradients), less what needs no input gradient (the layers that read
      the data, text and timestep: weight gradient only) and no backward at all for work whose output is
      unused (stage 2's plan tokens in the last block's feed-forward). About 3 x forward.
    * ``hardware``: ``model`` + the blocks' forward again, recomputed in backward under checkpointing.
    * ``tokens``: the trained DiTs' sequence lengths x batch.
    """
    model = hardware = tokens = 0
    for c in calls:
        fwd = c["forward"]
        work = fwd + (2 * fwd - c["weight_only"] - 2 * c["dead"] if c["trains"] else 0)
        model += work * c["batch"]
        hardware += (work + (c["blocks"] if c["checkpointed"] else 0)) * c["batch"]
        if c["kind"] != "compressor" and c["trains"]:
            tokens += c["tokens"] * c["batch"]
    return {"model": model, "hardware": hardware, "tokens": tokens}


# --------------------------------------------------------------------------- the trainer, its task, one step


@contextlib.contextmanager
def trainer_device(device: torch.device):
    """The trainer takes its device from ``distributed.device()`` (CUDA when present): here ``device``, so that
    ``--device cpu`` also holds on a GPU machine. Models are built under ``torch.device(device)`` so 1.3B
    parameters are initialised where they run (no slow CPU init)."""
    original = dist.device
    if device != original():
        dist.device = lambda: device
    try:
        with torch.device(device):
            yield
    finally:
        dist.device = original


def trainer_args(task: str, batch: int, steps: int, out: Path, precision: str, checkpointing: bool,
                 stage2_file: Path | None, seed: int):
    argv = [task, "--cache", "synthetic-cache", "--out", str(out), "--batch", str(batch), "--steps", str(steps),
            "--precision", precision, "--seed", str(seed), "--max-shots", "1", "--workers", "0"]
    if checkpointing:
        argv.append("--checkpointing")
    if stage2_file is not None:
        argv += ["--stage2", str(stage2_file)]
    return tr.build_parser().parse_args(argv)


def write_stage2_file(preset: Preset, path: Path, seed: int) -> Path:
    """The stage-2 file stage 1 reads its frozen compressor from: a random compressor of ``preset``'s size (its
    plan width as the stage-2 task's); the file's DiT is a tiny placeholder stage 1 never runs."""
    torch.manual_seed(seed)
    p = plan_preset(preset, tr.build_parser().get_default("plan_dim"))
    modules = {"compressor": SemanticCompressor(**p.compressor),
               "stage2": LatentDiT(**{**TINY.stage2, "semantic_dim": p.compressor["out_dim"]})}
    save_model(path, "stage2", modules, p, info={"plan_from": "encoder"})
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


class Budget:
    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.monotonic()

    def used(self) -> float:
        return time.monotonic() - self.start

    def allows(self, next_seconds: float) -> bool:
        return self.used() + next_seconds <= self.seconds


def build(task_kind: str, args, task_preset: Preset, cache, device: torch.device, seed: int, notes: list[str]):
    """The trainer's task and ``Trainer(args, task, cache)``, the models built on ``device`` (as the trainer's main
    does it, with fresh weights from the run's seed). Should building under ``torch.device(device)`` fail for a
    reason other than memory, the models are built on the CPU and moved, as the trainer itself would (slower)."""
    try:
        with trainer_device(device):
            torch.manual_seed(seed)
            task = tr.TASKS[task_kind](args, task_preset)
            return task, tr.Trainer(args, task, cache)
    except Exception as e:  # noqa: BLE001
        if device.type == "cpu" or _is_oom(e):
            raise
        notes.append(f"built on the CPU ({type(e).__name__} building on {device.type}: {str(e)[:120]})")
    gc.collect()
    torch.cuda.empty_cache()
    torch.manual_seed(seed)
    task = tr.TASKS[task_kind](args, task_preset)
    with trainer_device(device):
        return task, tr.Trainer(args, task, cache)


def run_task(name: str, preset: Preset, geometry: Geometry, opts, device: torch.device, budget: Budget,
             workdir: Path) -> dict:
    """Build ``name``'s task and trainer, run warm-up and timed steps; a row for the table (errors in it)."""
    batch = (opts.stage1_batch or opts.batch) if name == "stage1" else opts.batch
    row = {"task": name, "error": None, "notes": [], "step_s": [], "warmup_s": [], "batch": batch, "phase": "build"}
    if not budget.allows(0):
        row["error"] = f"skipped: the {opts.max_seconds:g} s budget was spent before it started"
        return row
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        _measure(row, name, preset, geometry, opts, device, budget, workdir)
    except Exception as e:  # noqa: BLE001 - a task that fails (above all: OOM) is reported, the next one runs
        if not _is_oom(e) and opts.raise_errors:
            raise
        message = str(e).splitlines()[0][:200] if str(e) else ""
        row["error"] = (f"out of memory during {row['phase']}" if _is_oom(e)
                        else f"failed during {row['phase']}: {type(e).__name__}: {message}")
        row["peak_memory_gib"] = tr.peak_memory_gb(device)
    finally:
        # _measure's frame (the trainer, its models and optimizer) is gone by now; the trainer and its _Step
        # wrapper refer to each other, so collect them before the next task measures its own peak
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _measure(row: dict, name: str, preset: Preset, geometry: Geometry, opts, device: torch.device, budget: Budget,
             workdir: Path) -> None:
    task_kind = "stage1" if name == "stage1" else "stage2"
    task_preset = preset
    if name == "stage2-full":  # the comparison: the trainer's stage 2 with full attention
        task_preset = dataclasses.replace(preset, stage2={**preset.stage2, "window_frames": None})
    stage2_file = write_stage2_file(preset, workdir / "stage2.safetensors", opts.seed) if task_kind == "stage1" \
        else None
    total_steps = opts.warmup_steps + opts.steps + (1 if opts.count_flops else 0)
    args = trainer_args(task_kind, row["batch"], total_steps, workdir / f"run-{name}", opts.precision,
                        opts.checkpointing, stage2_file, opts.seed)
    cache = SyntheticCache(preset, geometry, rows=row["batch"], seed=opts.seed)
    started = time.perf_counter()
    task, trainer = build(task_kind, args, task_preset, cache, device, opts.seed, row["notes"])
    _sync(device)
    row["build_s"] = time.perf_counter() - started
    row["trained_params_m"] = sum(p.numel() for p in trainer.params) / 1e6
    row["memory_after_build_gib"] = torch.cuda.memory_allocated(device) / GiB if device.type == "cuda" else None
    row["autocast_bf16"] = trainer.autocast
    dits = [m for m in task.trained.values() if isinstance(m, (LatentDiT, SemanticDiT))]
    row["checkpointing"] = all(getattr(m, "gradient_checkpointing", False) for m in dits)
    window = getattr(dits[0].config, "window_frames", None) if task_kind == "stage2" else None
    row["attention"] = f"windows of {window} latent frames" if window else "full"
    # the trainer's own data path (Trainer.run's DataLoader) over the synthetic rows
    loader = torch.utils.data.DataLoader(
        tr.CacheRows(cache, args.seed, args.batch), batch_sampler=tr.StepBatches(len(cache), args.batch, args.accum, args.seed, 0,
                                                          total_steps),
        num_workers=0, pin_memory=device.type == "cuda")
    micro = iter(loader)
    params = trainer.params
    sample = [params[i] for i in sorted({0, len(params) // 3, 2 * len(params) // 3, len(params) - 1})]
    before = [p.detach().clone() for p in sample]
    recorder = FlopRecorder(dits)
    try:
        def one_step() -> tuple[float, dict, list[dict]]:
            _sync(device)
            tick = time.perf_counter()
            losses = trainer.train_step(micro)
            _sync(device)
            return time.perf_counter() - tick, losses, recorder.take()

        estimate = 0.0
        row["phase"] = "warm-up"
        for _ in range(opts.warmup_steps):
            if not budget.allows(estimate):
                row["notes"].append(f"warm-up stopped after {len(row['warmup_s'])} step(s): budget")
                break
            seconds, losses, _ = one_step()
            row["warmup_s"].append(seconds)
            estimate = seconds
        row["phase"] = "timed steps"
        counts = []
        for _ in range(opts.steps):
            if not budget.allows(estimate):
                row["notes"].append(f"timed {len(row['step_s'])} of {opts.steps} steps: the {opts.max_seconds:g} s "
                                    "budget stopped it")
                break
            seconds, losses, calls = one_step()
            row["step_s"].append(seconds)
            counts.append(step_flops(calls))
            if task_kind == "stage2":
                row.setdefault("window_offsets", []).append([c["offset"] for c in calls if c["kind"] == "stage2"][0])
            estimate = seconds
        row["peak_memory_gib"] = tr.peak_memory_gb(device)
        if not row["step_s"]:
            row["error"] = "no timed step (budget)"
            return
        time_sum = sum(row["step_s"])
        row.update(
            losses={k: float(v) for k, v in losses.items()},
            step_mean_s=time_sum / len(row["step_s"]),
            tokens_per_step=counts[-1]["tokens"],
            tokens_per_s=sum(c["tokens"] for c in counts) / time_sum,
            model_flops_per_step=sum(c["model"] for c in counts) / len(counts),
            hardware_flops_per_step=sum(c["hardware"] for c in counts) / len(counts),
            achieved_tflops=sum(c["model"] for c in counts) / time_sum / 1e12,
            achieved_hw_tflops=sum(c["hardware"] for c in counts) / time_sum / 1e12,
            gpu_hours_10k=time_sum / len(row["step_s"]) * STEPS_FOR_HOURS / 3600)
        if opts.count_flops:
            row["phase"] = "FLOP count"
            if not budget.allows(estimate * 3):
                row["notes"].append("FLOP count skipped: budget")
            else:
                try:
                    row["flops_check"] = count_step(trainer, micro, recorder, device)
                except Exception as e:  # noqa: BLE001 - a failed check leaves the timing standing
                    if _is_oom(e):
                        raise
                    row["notes"].append(f"FLOP count failed: {type(e).__name__}: {str(e)[:120]}")
        # the step really updates the weights: AdamW's step count, and the sampled trained tensors that moved
        state = trainer.optimizer.state.get(params[0], {})
        row["optimizer_steps"] = int(state["step"]) if "step" in state else 0
        row["params_changed"] = sum(not torch.equal(a, p.detach()) for a, p in zip(before, sample)) / len(sample)
        row["phase"] = "done"
    finally:
        recorder.close()


def count_step(trainer: tr.Trainer, micro, recorder: FlopRecorder, device: torch.device) -> dict:
    """One more trainer step under torch's FlopCounterMode, beside the analytic count of that same step."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    # The CPU's fused attention kernel is invisible to the counter: the math kernel there (GPU kernels are counted).
    kernel = sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else contextlib.nullcontext()
    recorder.take()
    with kernel, FlopCounterMode(display=False) as counter:
        trainer.train_step(micro)
    f = step_flops(recorder.take())
    counted = counter.get_total_flops()
    return {"counted": counted, "analytic_hardware": f["hardware"], "analytic_model": f["model"],
            "ratio": counted / f["hardware"]}


# --------------------------------------------------------------------------- peaks, report


def measure_matmul_tflops(device: torch.device, seconds: float, n: int = MATMUL_N) -> float | None:
    """Achieved bf16 TFLOP/s of ``n x n`` matmuls for about ``seconds`` (a practical peak to set MFU beside)."""
    if device.type != "cuda" or seconds <= 0:
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize(device)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            a @ b
        count += 10
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    del a, b
    torch.cuda.empty_cache()
    return 2 * n ** 3 * count / elapsed / 1e12


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def markdown(report: dict) -> str:
    g, env = report["geometry"], report["environment"]
    peak = report["peak_flops"]
    depth = f" ({report['layers']} layers: --layers)" if report.get("layers") else ""
    unit, one = ("GPU", "1 GPU") if env["device"] == "cuda" else ("CPU", "this CPU")
    lines = [f"## Training step: {report['preset']}{depth} with random weights, {g['width']}x{g['height']}, "
             f"{g['frames']} frames at {g['fps']:g} fps, batch {report['batch']} -- {env['device_name']}", "",
             f"command: `{report['command']}`", "",
             f"torch {env['torch']}, CUDA {env['cuda'] or '-'}, {env['device']}; "
             f"{'bf16 autocast over fp32 weights' if report['bf16'] else 'fp32 (no autocast: CPU or --precision fp32)'}"
             f", activation checkpointing {'on' if report['checkpointing'] else 'off'}, AdamW; "
             f"cache rows: latents {g['latents']}, features {g['features']}, text {g['text']}", "",
             "| task | attention | tokens / step | step (s) | peak memory (GiB) | tokens/s | model TFLOP / step "
             f"| MFU | HFU | {unit}-h for 10k steps | note |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    if report.get("stopped"):
        lines.insert(2, f"**{report['stopped']}**\n")
    for r in report["rows"]:
        notes = "; ".join(r["notes"])
        if r["error"]:
            lines.append(f"| {r['task']} | {r.get('attention', '-')} | - | - | {_fmt(r.get('peak_memory_gib'), '.1f')} "
                         f"| - | - | - | - | - | {'; '.join(filter(None, [r['error'], notes]))} |")
            continue
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
        hfu = f"{r['hfu']:.1%}" if r.get("hfu") is not None else "-"
        spread = f" ({min(r['step_s']):.3f}-{max(r['step_s']):.3f})" if len(r["step_s"]) > 1 else ""
        lines.append(f"| {r['task']} | {r['attention']} | {r['tokens_per_step']:,} | {r['step_mean_s']:.3f}{spread} "
                     f"| {r['peak_memory_gib']:.1f} | {r['tokens_per_s']:,.0f} "
                     f"| {r['model_flops_per_step'] / 1e12:,.4g} "
                     f"| {mfu} | {hfu} | {r['gpu_hours_10k']:,.2f} ({one}, batch {r['batch']}) | {notes} |")
    lines += ["",
              f"Tokens / step: stage 2 = video tokens ({report['geometry']['video_tokens']:,} a clip) + plan tokens "
              f"({report['geometry']['plan_tokens']:,} a clip); stage 1 = plan tokens; x batch. Step = the trainer's "
              f"optimiser step (forward, backward, clip, AdamW), mean of the timed steps (min-max), after "
              f"{report['warmup_steps']} warm-up step(s). Peak memory: "
              + ("torch.cuda.max_memory_allocated from before the models were built." if env["device"] == "cuda"
                 else "the process's peak RSS (CPU: not per task)."),
              ("Attention: stage2 is stage 2 as the trainer builds it for this preset, in shifted windows of "
               f"{report['stage2_window']} latent frames (preset stage2 window_frames, else its sampling default; a "
               "random window offset per step); stage2-full is the same step with full attention, for comparison."
               if report.get("stage2_window") else
               "Attention: the trainer's stage 2 for this preset has no window (full attention); stage2-full would "
               "be the same row, so it is not run."),
              "Model FLOPs (analytic: matmuls, convolutions, attention scores and values, as the step ran) = "
              "forward + backward of the trained models (about 3 x forward) + forward of frozen ones; activation "
              "checkpointing's recomputation not counted -> MFU. HFU counts it too (the blocks: about 4 x forward). "
              + (f"Peak: {peak['datasheet'] / 1e12:,.1f} TFLOP/s ({peak['source']})." if peak["datasheet"]
                 else f"Peak: {peak['source']}; MFU not computed."),
              ]
    if peak.get("matmul"):
        lines.append(f"Measured bf16 matmul ({peak['matmul_n']}^3): {peak['matmul'] / 1e12:,.0f} TFLOP/s; MFU against "
                     "it: " + ", ".join(f"{r['task']} {r['mfu_vs_matmul']:.1%}" for r in report["rows"]
                                       if r.get("mfu_vs_matmul") is not None) + ".")
    checks = [r for r in report["rows"] if r.get("flops_check")]
    if checks:
        lines.append("FLOP check, one extra step under torch's FlopCounterMode against the analytic hardware FLOPs "
                     "of that step: " + ", ".join(f"{r['task']} {r['flops_check']['counted']:,} / "
                                                  f"{r['flops_check']['analytic_hardware']:,} = "
                                                  f"{r['flops_check']['ratio']:.3f}" for r in checks) + ".")
    lines.append(f"Wall time of the whole benchmark: {report['wall_s']:.1f} s (budget {report['max_seconds']:g} s).")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="wan2.1-1.3b")
    p.add_argument("--frames", type=int, default=81, help="video frames of a clip (4k+1)")
    p.add_argument("--fps", type=float, default=None, help="default: the preset's")
    p.add_argument("--height", type=int, default=None, help="default: the preset's (480 for wan2.1-1.3b)")
    p.add_argument("--width", type=int, default=None, help="default: the preset's (832 for wan2.1-1.3b)")
    p.add_argument("--batch", type=int, default=1, help="clips a step (one process)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per task")
    p.add_argument("--warmup-steps", type=int, default=1)
    p.add_argument("--tasks", nargs="+", choices=TASK_ORDER, default=list(TASK_ORDER))
    p.add_argument("--window-frames", type=int, default=None,
                   help="stage 2's training window in latent frames, set as the preset's stage-2 window_frames "
                        "(default: what the trainer takes for the preset, 8 for wan2.1-1.3b; 0: full attention)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when present")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="the trainer's --precision")
    p.add_argument("--no-checkpointing", dest="checkpointing", action="store_false",
                   help="without the trainer's --checkpointing (on by default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-seconds", type=float, default=420.0,
                   help="budget for the whole run: no step starts that would pass it (the last step's time is "
                        "the estimate)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: the GPU's datasheet)")
    p.add_argument("--matmul-seconds", type=float, default=3.0,
                   help="seconds of bf16 matmuls measuring a practical peak on a GPU (0: skip)")
    p.add_argument("--layers", type=int, default=None,
                   help="override both DiTs' depth (a smoke test of the real widths on a small machine; the "
                        "defaults are the preset's)")
    p.add_argument("--stage1-batch", type=int, default=None, help="stage 1's batch (default: --batch)")
    p.add_argument("--no-count-flops", dest="count_flops", action="store_false",
                   help="skip the extra step per task under torch's FlopCounterMode (the analytic count's check)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--raise-errors", action="store_true", help="raise a task's non-OOM error instead of reporting it")
    p.add_argument("--json", type=Path, help="write the report as JSON")
    p.add_argument("--md", type=Path, help="write the markdown table")
    return p


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    budget = Budget(opts.max_seconds)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SemanticGenError("--device cuda: no CUDA device is visible")
        device = torch.device("cuda", torch.cuda.current_device())
    preset = PRESETS[opts.preset]
    if opts.layers:
        preset = dataclasses.replace(preset, stage1={**preset.stage1, "num_layers": opts.layers},
                                     stage2={**preset.stage2, "num_layers": opts.layers})
    if opts.window_frames is not None:  # the trainer's stage2_task reads the preset's stage-2 window first
        preset = dataclasses.replace(preset, stage2={**preset.stage2, "window_frames": opts.window_frames or None})
    d = preset.defaults
    geometry = Geometry.of(preset, opts.frames, float(opts.fps or d["fps"]), int(opts.height or d["height"]),
                           int(opts.width or d["width"]))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    if opts.peak_tflops:
        peak, source = opts.peak_tflops * 1e12, "--peak-tflops"
    elif device.type == "cuda":
        peak, source = datasheet_peak(device_name)
    else:
        peak, source = None, "CPU: no peak (pass --peak-tflops)"
    command = "python bench/train_step.py" + (" " + shlex.join(argv) if argv else "")
    log = lambda msg: print(f"[train_step {budget.used():6.1f} s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"{device_name}; {opts.preset} {geometry.width}x{geometry.height}, {geometry.frames} frames: latents "
        f"{geometry.latents}, plan grid {geometry.features[:3]}")
    rows: list[dict] = []
    state = {"task": None, "matmul": None}

    def report(stopped: str | None = None) -> dict:
        matmul = state["matmul"]
        for row in rows:
            if not row["error"]:
                row["mfu"] = row["achieved_tflops"] * 1e12 / peak if peak else None
                row["hfu"] = row["achieved_hw_tflops"] * 1e12 / peak if peak else None
                row["mfu_vs_matmul"] = row["achieved_tflops"] / matmul if matmul else None
        return {"command": command, "preset": preset.name, "layers": opts.layers, "batch": opts.batch,
                "stage2_window": tr.stage2_window(preset),
                "warmup_steps": opts.warmup_steps,
                "steps": opts.steps, "bf16": device.type == "cuda" and opts.precision == "bf16",
                "checkpointing": opts.checkpointing, "max_seconds": opts.max_seconds,
                "geometry": dataclasses.asdict(geometry),
                "environment": {"device": device.type, "device_name": device_name, "torch": torch.__version__,
                                "cuda": torch.version.cuda, "python": platform.python_version()},
                "peak_flops": {"datasheet": peak, "source": source, "matmul": matmul * 1e12 if matmul else None,
                               "matmul_n": MATMUL_N},
                "flop_convention": FLOP_CONVENTION, "rows": list(rows), "stopped": stopped, "wall_s": budget.used()}

    def emit(rep: dict) -> None:
        text = markdown(rep)
        print(text, flush=True)
        if opts.json:
            opts.json.parent.mkdir(parents=True, exist_ok=True)
            opts.json.write_text(json.dumps(rep, indent=1, default=str) + "\n")
        if opts.md:
            opts.md.parent.mkdir(parents=True, exist_ok=True)
            opts.md.write_text(text + "\n")

    def watchdog() -> None:  # a step that never returns: report what finished, and end the process
        emit(report(f"stopped by the watchdog at {budget.used():.0f} s during {state['task'] or 'setup'} (a step "
                    f"outlived the {opts.max_seconds:g} s budget + {WATCHDOG_GRACE:g} s)"))
        sys.stderr.flush()
        os._exit(3)

    timer = threading.Timer(opts.max_seconds + WATCHDOG_GRACE, watchdog)
    timer.daemon = True
    timer.start()
    try:
        state["matmul"] = measure_matmul_tflops(device, opts.matmul_seconds)
        with tempfile.TemporaryDirectory(prefix="train_step_bench_") as tmp:
            for name in [t for t in TASK_ORDER if t in opts.tasks]:
                if name == "stage2-full" and not tr.stage2_window(preset):
                    log(f"{name}: skipped (the trainer's stage 2 has full attention already: the stage2 row)")
                    continue
                log(f"{name}: building and running ...")
                state["task"] = name
                row = run_task(name, preset, geometry, opts, device, budget, Path(tmp))
                log(f"{name}: " + (row["error"] or f"{row['step_mean_s']:.3f} s/step, peak "
                                                    f"{row['peak_memory_gib']:.2f} GiB, {row['achieved_tflops']:.2f} "
                                                    "model TFLOP/s"))
                rows.append(row)
        state["task"] = "the report"
        rep = report()
        emit(rep)
        return rep
    finally:
        timer.cancel()


if __name__ == "__main__":
    run_command(main)
