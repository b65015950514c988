"""Train the embedded default's VAE (Wan2.1's layout, shrunk) from scratch on the procedural world, on CPU.

    python -m semanticgen_world.recipes.train_vae --out runs/vae [--steps N] [--minutes M] [--batch 4]
                                                 [--frames 9] [--threads 1]
    python -m semanticgen_world.recipes.train_vae --out runs/vae --eval

Clips are rendered on the fly from training seeds (< 1_000_000) drawn from the run's seed and the step
number alone, so a resumed run continues the same stream and ``--workers`` processes can render batches
ahead of a GPU (``--device cuda``); a worker that dies ends the run at once with an error that names it
(the checkpoint is saved: run again to resume). Loss: L1 + MSE, plus L1 on differences
along time, height and width (keeps edges, textures and motion sharp without a GAN or LPIPS), plus a
tiny KL. L1 and MSE weigh the pixels of objects (and a one-pixel rim, from the world's label maps)
``--object-weight`` times more: objects cover a few percent of a frame, and without it a small VAE
spends its capacity on background texture first and draws objects as blurs of the wrong colour. ``last.pt`` (for resuming) and ``vae.safetensors`` (the model, with per-channel latent statistics
measured on held-out clips) are written every ``--save-every`` steps, at the end, and on Ctrl-C/SIGTERM.
A run resumes from ``last.pt``, or from the weights in ``vae.safetensors`` with a fresh optimizer.

``--decoder-only`` freezes the encoder and trains the decoder alone: the latents stay bit-for-bit the same,
so a latent cache and the stages trained on it stay valid while the decoder's colours and edges improve
(the same move as Stable Diffusion's fine-tuned VAE decoders). With ``--decoder-base-dim`` the run starts
from a fresh decoder of that width instead (Wan2.2's VAE is also wider in its decoder than its encoder).

Clips of 17 frames (five latent frames) by default: trained on 9 frames only (three latent frames), the
decoder's colours drift from the fourth latent frame on, and generated clips have nine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

import torch.nn.functional as F

from semanticgen_core.errors import CheckpointError, SemanticGenError, run_command
from semanticgen_core.model_files import read_metadata
from semanticgen_core.trainer import lr_factor
from semanticgen_core.vae import VideoVAE, tiny_vae_config

from ..world import HELDOUT_SEED_START, label_maps, sample_clip
from .loop import Run

FPS = 8.0
GRAD_WEIGHT = 0.5  # difference (edge/motion) term, relative to L1 + MSE
WARMUP = 200  # steps of linear learning-rate warm-up
TWO_SHOT_FRACTION = 0.25  # clips with a hard cut, as in multi-shot videos
EVAL_SEEDS = range(HELDOUT_SEED_START, HELDOUT_SEED_START + 32)  # --eval
PROBE_SEEDS = range(HELDOUT_SEED_START + 1000, HELDOUT_SEED_START + 1004)  # PSNR while training
STATS_SEEDS = range(HELDOUT_SEED_START + 2000, HELDOUT_SEED_START + 2008)  # latent mean/std at export


def clip_batch(seeds: Sequence[int], frames: int, size: int = 64, shots: Sequence[int] | None = None,
               object_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Render clips as a batch ``[B, 3, T, H, W]`` in -1..1, with per-pixel loss weights ``[B, 1, T, H, W]``
    (``object_weight`` on objects and their rim, 1 elsewhere)."""
    shots = shots or [1] * len(seeds)
    clips = [sample_clip(int(s), frames, size, size, FPS, num_shots=min(int(n), frames))
             for s, n in zip(seeds, shots)]  # a single frame has no cut
    x = torch.from_numpy(np.stack([c.frames for c in clips])).float() / 127.5 - 1
    objects = torch.from_numpy(np.stack([label_maps(c.shots, size, size)["object"] >= 0 for c in clips]))
    rim = F.max_pool2d(objects.float(), 3, stride=1, padding=1)  # [B, T, H, W]
    return x.permute(0, 4, 1, 2, 3).contiguous(), (1 + (object_weight - 1) * rim)[:, None]


def step_batch(step: int, batch: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """The training seeds and shot counts of step ``step``: a function of the run's seed and the step alone."""
    g = torch.Generator().manual_seed((seed << 32) + step)
    seeds = torch.randint(0, HELDOUT_SEED_START, (batch,), generator=g).tolist()
    return seeds, (1 + (torch.rand(batch, generator=g) < TWO_SHOT_FRACTION).long()).tolist()


def _render(step: int, batch: int, frames: int, size: int, object_weight: float, seed: int):
    seeds, shots = step_batch(step, batch, seed)
    return clip_batch(seeds, frames, size, shots, object_weight)


def _serve(conn, *params) -> None:
    """A worker process: render the steps its parent sends, until the parent closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops us
    try:
        while True:
            conn.send(tuple(t.numpy() for t in _render(conn.recv(), *params)))  # plain arrays, no shared memory
    except (EOFError, BrokenPipeError):
        pass


def _how_it_ended(process: multiprocessing.Process) -> str:
    process.join(timeout=5)
    code = process.exitcode
    if code is None:
        return "closed its pipe"
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"


def batches(first: int, batch: int, frames: int, size: int, object_weight: float, seed: int = 0,
            workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``clip_batch`` of steps ``first, first + 1, ...``; ``workers`` processes render two batches each
    ahead (0: rendered here, when asked for).

    Worker ``k`` renders every ``workers``-th step over a pipe of its own, so it shares no lock with the others
    and its death is an end of file here: a ``SemanticGenError`` that names it, at once (a
    ``multiprocessing.Pool`` replaces a dead worker and waits forever for its lost batch, and its
    ``terminate()`` deadlocks on a queue lock held by a worker it killed mid-write)."""
    params = (batch, frames, size, object_weight, seed)
    if workers == 0:
        for step in itertools.count(first):
            yield _render(step, *params)
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
    conns, procs = [], []
    try:
        for k in range(workers):
            conn, theirs = ctx.Pipe()
            conns.append(conn)
            process = ctx.Process(target=_serve, args=(theirs, *params), name=f"clip worker {k}", daemon=True)
            process.start()
            procs.append(process)
            theirs.close()  # the worker holds the only other end
        ahead = 2 * workers
        for step in range(first, first + ahead):
            conns[(step - first) % workers].send(step)
        for step in itertools.count(first):
            k = (step - first) % workers
            try:
                x, weight = conns[k].recv()
                conns[k].send(step + ahead)
            except (EOFError, OSError):  # OSError: it died mid-message, or before reading its next step
                raise SemanticGenError(
                    f"{procs[k].name} (pid {procs[k].pid}), rendering the clips of step {step}, "
                    f"{_how_it_ended(procs[k])}: training stops here, with its checkpoint saved; run it again to "
                    "resume") from None
            yield torch.from_numpy(x), torch.from_numpy(weight)
    finally:  # our own children, not yet reaped (so their pids are still theirs), hold no lock we need
        for conn in conns:
            conn.close()
        for process in procs:
            process.kill()
            process.join()


def losses(vae: VideoVAE, x: torch.Tensor, kl_weight: float, weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Training losses of a batch; ``loss`` is their weighted sum. ``weight``: per-pixel weights of L1/MSE.

    The KL is summed over latent elements and divided by the number of pixel values, so ``kl_weight``
    has the usual meaning of image/video VAEs (e.g. 1e-6) next to a per-pixel reconstruction loss.
    """
    mean, logvar = vae.moments(x).chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)
    rec = vae.decode_raw(mean + torch.randn_like(mean) * torch.exp(0.5 * logvar))
    err = rec - x
    w = torch.ones_like(x[:, :1]) if weight is None else weight
    w = w / w.mean()
    parts = {"l1": (err.abs() * w).mean(), "mse": (err.pow(2) * w).mean(),
             # edges in time (when there is more than one frame), height and width
             "grad": torch.stack([(rec.diff(dim=d) - x.diff(dim=d)).abs().mean()
                                  for d in (2, 3, 4) if x.shape[d] > 1]).mean(),
             "kl": 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum() / x.numel()}
    parts["loss"] = parts["l1"] + parts["mse"] + GRAD_WEIGHT * parts["grad"] + kl_weight * parts["kl"]
    return parts


def train_step(vae: VideoVAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, kl_weight: float,
               weight: torch.Tensor | None = None) -> dict[str, float]:
    vae.train()
    parts = losses(vae, x, kl_weight, weight)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
    optimizer.step()
    return {k: v.item() for k, v in parts.items()}


@torch.no_grad()
def psnr(vae: VideoVAE, x: torch.Tensor) -> float:
    """Mean PSNR (dB, frames in 0..1) of deterministic reconstructions of a batch."""
    vae.eval()
    mean, _ = vae.moments(x).chunk(2, dim=1)
    rec = vae.decode_raw(mean).clamp(-1, 1)
    mse = ((rec - x) / 2).pow(2).flatten(1).mean(1)
    return float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())


@torch.no_grad()
def latent_stats(vae: VideoVAE, x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the posterior means of a batch (Wan normalises latents with them)."""
    vae.eval()
    mean, _ = vae.moments(x).chunk(2, dim=1)
    per_channel = mean.transpose(0, 1).flatten(1)
    return per_channel.mean(1).tolist(), per_channel.std(1).clamp_min(1e-6).tolist()


def decoder_width(vae: VideoVAE) -> int:
    return vae.config.get("decoder_base_dim") or vae.config["base_dim"]


def with_fresh_decoder(vae: VideoVAE, base_dim: int) -> VideoVAE:
    """``vae``'s encoder (weights and latent statistics) with a new, untrained decoder ``base_dim`` wide."""
    config = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    new = VideoVAE.from_config({**config, "decoder_base_dim": base_dim})
    for part in ("encoder", "quant_conv"):
        getattr(new.wan, part).load_state_dict(getattr(vae.wan, part).state_dict())
    return new


def _resume_or_build(out: Path, config: dict | None, decoder_base_dim: int | None = None) -> tuple[VideoVAE, dict]:
    """The model to train and, when it comes from an exported file only, that file's training info."""
    config_file = out / "config.json"
    if (out / "last.pt").is_file():
        if not config_file.is_file():
            raise CheckpointError(f"{out / 'last.pt'} exists but {config_file} (its architecture) is missing")
        vae = VideoVAE.from_config(json.loads(config_file.read_text()))
        if decoder_base_dim and decoder_base_dim != decoder_width(vae):
            raise SemanticGenError(f"{out} holds a run whose decoder is {decoder_width(vae)} wide, not "
                                   f"{decoder_base_dim}: give another --out for a decoder of another width")
        return vae, {}
    if (out / "vae.safetensors").is_file():
        vae = VideoVAE.from_pretrained(out / "vae.safetensors")
        info = json.loads(read_metadata(out / "vae.safetensors").get("info", "{}"))
        print(f"no last.pt: resuming from the weights in {out / 'vae.safetensors'} (step {info.get('steps', 0)}) "
              "with a fresh optimizer", flush=True)
        if decoder_base_dim and decoder_base_dim != decoder_width(vae):
            vae = with_fresh_decoder(vae, decoder_base_dim)
            print(f"  its encoder, with a fresh decoder {decoder_base_dim} wide", flush=True)
        return vae, info
    if decoder_base_dim:
        raise SemanticGenError(f"--decoder-base-dim starts from a trained VAE's encoder: copy the VAE file to "
                               f"{out / 'vae.safetensors'} first")
    return VideoVAE.from_config(config or tiny_vae_config()), {}


def train(out: str | Path, steps: int | None = None, minutes: float | None = None, batch: int = 2,
          frames: int = 17, size: int = 64, lr: float = 1e-3, kl_weight: float = 1e-6, object_weight: float = 4.0,
          save_every: int = 200, log_every: int = 25, eval_every: int = 200, seed: int = 0,
          config: dict | None = None, decoder_only: bool = False, decoder_base_dim: int | None = None,
          device: str = "cpu", workers: int = 0, export_dtype: torch.dtype = torch.float32) -> VideoVAE:
    """Train until ``steps`` (counted over all sessions) or ``minutes`` (this session) or a signal.

    ``config`` (default ``tiny_vae_config()``) is used only by a fresh run; a resumed one keeps its own.
    ``decoder_base_dim`` (decoder-only runs): a fresh decoder of that width on the file's encoder.
    """
    if frames % 4 != 1:
        raise SemanticGenError(f"--frames must be 4k+1 (Wan's VAE), got {frames}")
    out = Path(out)
    frozen_file = out / "encoder_frozen_from.json"  # the step a decoder-only run started from
    decoder_only = decoder_only or frozen_file.is_file()  # a decoder-only run folder stays decoder-only
    if decoder_base_dim and not decoder_only:
        raise SemanticGenError("--decoder-base-dim needs --decoder-only: a new decoder is trained on a frozen "
                               "encoder, so the latents (and caches and stages) stay as they are")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)  # initial weights and posterior noise
    vae, info = _resume_or_build(out, config, decoder_base_dim)
    vae.to(device)
    (out / "config.json").write_text(json.dumps({k: v for k, v in vae.config.items() if not k.startswith("_")}))
    if decoder_only:  # the encoder and its latent projection keep their weights, so the latents do not move
        for part in (vae.wan.encoder, vae.wan.quant_conv):
            part.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99),
                                  weight_decay=0.0)
    run = Run(out, {"vae": vae}, optimizer, seed=seed + info.get("steps", 0), save_every=save_every)
    if info:
        run.step, run.elapsed = info.get("steps", 0), 60 * info.get("minutes", 0.0)
    if decoder_only and not frozen_file.is_file():
        frozen_file.write_text(json.dumps(run.step))
    frozen_from = json.loads(frozen_file.read_text()) if frozen_file.is_file() else None
    n_params = sum(p.numel() for p in vae.parameters())
    print(f"VAE: {n_params / 1e6:.2f}M parameters; batch {batch} x {frames}x{size}x{size}; from step {run.step}",
          flush=True)
    probe, stats_batch = (clip_batch(seeds, frames, size)[0].to(device) for seeds in (PROBE_SEEDS, STATS_SEEDS))

    def export() -> None:
        if not decoder_only:  # a frozen encoder keeps its statistics
            vae.set_latent_stats(*latent_stats(vae, stats_batch))
        vae.save(out / "vae.safetensors", dtype=export_dtype, info={
            "steps": run.step, "minutes": round(run.elapsed / 60, 2), "probe_psnr": round(psnr(vae, probe), 3),
            "batch": batch, "object_weight": object_weight,
            **({"encoder_frozen_from": frozen_from} if frozen_from is not None else {}),
            "data": f"procedural world, training seeds < {HELDOUT_SEED_START}, "
                    f"{frames} frames of {size}x{size} at {FPS:g} fps"})

    tick, tick_step = time.monotonic(), run.step
    fresh_from = info.get("steps", 0)  # the optimizer's first step: warm up from there
    steps_run, stream = run.steps(steps, minutes, on_save=export), batches(run.step, batch, frames, size,
                                                                         object_weight, seed, workers)
    try:
        for step, (x, weight) in zip(steps_run, stream):
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(step - fresh_from, WARMUP, None, 0)
            parts = train_step(vae, optimizer, x.to(device), kl_weight, weight.to(device))
            if step % eval_every == 0:
                parts["probe_psnr"] = psnr(vae, probe)
            if step % log_every == 0 or "probe_psnr" in parts:
                now = time.monotonic()
                parts["steps_per_s"] = (step + 1 - tick_step) / max(now - tick, 1e-9)
                tick, tick_step = now, step + 1
                run.log(**parts)
    finally:
        stream.close()  # stops the workers
        steps_run.close()  # saves last.pt, also when a worker died: the step it did not render comes next
    return vae


def evaluate(path: str | Path, frames: int = 17, size: int = 64) -> tuple[list[float], list[float]]:
    """PSNR (dB) of each held-out clip through the public encode/decode, and of each frame index over all
    of them (a decoder trained on shorter clips drifts in the frames past its training length)."""
    vae = VideoVAE.from_pretrained(path)
    errors = []
    for seed in EVAL_SEEDS:
        video = torch.from_numpy(sample_clip(seed, frames, size, size, FPS).frames).float() / 255
        latents, n = vae.encode(video, pad=True)
        errors.append((vae.decode(latents, num_frames=n) - video).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10))
    mse = torch.stack(errors)  # [clips, frames]
    return (-10 * torch.log10(mse.mean(1))).tolist(), (-10 * torch.log10(mse.mean(0))).tolist()


def latent_frame_groups(values: Sequence[float]) -> str:
    """Per-frame figures averaged per latent frame (frame 0, then 4 frames each), as ``frames: value``."""
    groups = [(0, 1)] + [(s, min(s + 4, len(values))) for s in range(1, len(values), 4)]
    return ", ".join(f"{a}-{b - 1}: {np.mean(values[a:b]):.1f}" if b - a > 1 else f"{a}: {values[a]:.1f}"
                     for a, b in groups)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/vae", help="run folder: last.pt, vae.safetensors, log.jsonl")
    p.add_argument("--steps", type=int, help="stop at this total step count (default: no limit)")
    p.add_argument("--minutes", type=float, help="stop after this many minutes of wall time in this session")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=17, help="frames per clip, 4k+1 (training and --eval)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--object-weight", type=float, default=4.0, help="loss weight of object pixels (1: none)")
    p.add_argument("--kl", type=float, default=1e-6, help="KL weight")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--eval-every", type=int, default=200, help="PSNR on a fixed held-out batch every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--decoder-only", action="store_true",
                   help="freeze the encoder (latents, caches and stages stay valid) and train the decoder")
    p.add_argument("--decoder-base-dim", type=int,
                   help="with --decoder-only: start from a fresh decoder this wide (the encoder's is 8)")
    p.add_argument("--device", default="cpu", help="cpu, or cuda for a GPU")
    p.add_argument("--workers", type=int, default=0, help="processes rendering clips ahead (0: none)")
    p.add_argument("--export-dtype", choices=("float32", "float16"), default="float32",
                   help="precision of vae.safetensors (training state stays float32)")
    p.add_argument("--eval", action="store_true",
                   help="print reconstruction PSNR on 32 held-out clips of --frames frames, overall and per latent "
                        "frame, and exit")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.eval:
        scores, by_frame = evaluate(Path(args.out) / "vae.safetensors", args.frames)
        print(f"PSNR on {len(scores)} held-out clips ({args.frames}x64x64): mean {np.mean(scores):.2f} dB, "
              f"min {np.min(scores):.2f}, max {np.max(scores):.2f}")
        print(f"by frame (dB over all clips): {latent_frame_groups(by_frame)}")
        return
    train(args.out, args.steps, args.minutes, args.batch, args.frames, lr=args.lr, kl_weight=args.kl,
          object_weight=args.object_weight,
          save_every=args.save_every, log_every=args.log_every, eval_every=args.eval_every, seed=args.seed,
          decoder_only=args.decoder_only, decoder_base_dim=args.decoder_base_dim, device=args.device,
          workers=args.workers, export_dtype=getattr(torch, args.export_dtype))


if __name__ == "__main__":
    run_command(main)
