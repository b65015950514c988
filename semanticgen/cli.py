"""Command line: run a ComfyUI workflow headless, or make a video from a prompt.

    python -m semanticgen run WORKFLOW.json [--set NODE.INPUT=VALUE ...] [--out DIR]
    python -m semanticgen generate "PROMPT" [--seconds S] [--seed N] [--steps N] [--guidance G] [--out FILE.mp4]
                                   [--candidates N] [--width W --height H --fps F] [--stage1 F --stage2 F --vae F --text-encoder F]
    python -m semanticgen api WORKFLOW.json         # print the API format (for POST /prompt)
    python -m semanticgen eval [--prompts 100] [--seed 0] [--steps N] [--guidance G] [--out eval.json] [--candidates N]
                               [--reference [vae|plan]] [--wording paraphrase] [--stage1 FILE --stage2 FILE --aligner FILE]

Outside ComfyUI, models are looked up in a ComfyUI-style models folder (--models, default
$SEMANTICGEN_MODELS_DIR, else $COMFYUI_DIR/models, else ./models): models/semanticgen, models/vae, ...
The embedded default needs none. Ctrl-C stops after the current step; a second Ctrl-C aborts.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from semanticgen_core import errors

from . import runner

UMT5_FILE = "umt5_xxl_fp16.safetensors"  # the text encoder of models built on Wan2.1


def _default_dir(env: str, sub: str, fallback: str) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env])
    if os.environ.get("COMFYUI_DIR"):
        return Path(os.environ["COMFYUI_DIR"]) / sub
    return Path(fallback)


@contextmanager
def _interruptible():
    """First Ctrl-C: ask the running node to stop at its next step. Second: abort at once."""
    comfy = runner.load_pack().nodes.comfy
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if comfy.interrupt_requested():
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        print("\ninterrupt: stopping after the current step (Ctrl-C again to abort)", file=sys.stderr)
        comfy.request_interrupt()

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _progress_printer(quiet: bool):
    comfy = runner.load_pack().nodes.comfy
    if quiet:
        return lambda: None

    def show(what: str, step: int, total: int) -> None:
        end = "\n" if step >= total else ""
        print(f"\r  {what}: {step}/{total}", end=end, file=sys.stderr, flush=True)

    return comfy.add_progress_listener(show)


def _report(result: runner.RunResult) -> None:
    """Time of each node and the total, on the current stdout."""
    width = max([len(r.title) for r in result.runs] + [10])
    for r in result.runs:
        print(f"  {r.title:<{width}}  {r.seconds:7.2f} s")
    print(f"  {'total':<{width}}  {result.seconds:7.2f} s  ({result.loads} model loads, {result.load_seconds:.2f} s)")


def _folders(args) -> dict:
    return dict(models=args.models or _default_dir("SEMANTICGEN_MODELS_DIR", "models", "models"),
                input=getattr(args, "input", None) or _default_dir("SEMANTICGEN_INPUT_DIR", "input", "input"))


def cmd_run(args) -> int:
    remove = _progress_printer(args.quiet)
    try:
        with _interruptible():
            result = runner.run(args.workflow, sets=args.set, output=args.out, **_folders(args))
    finally:
        remove()
    _report(result)
    for path in result.files:
        print(f"wrote {path}")
    return 0


def _stage_table(times: list[tuple[str, float]], loads: int, load_seconds: float) -> None:
    width = max([len(name) for name, _ in times] + [10])
    for name, seconds in times:
        print(f"  {name:<{width}}  {seconds:7.2f} s")
    total = sum(seconds for _, seconds in times)
    print(f"  {'total':<{width}}  {total:7.2f} s  ({loads} model loads, {load_seconds:.2f} s)")


ALIGNMENT_STOP_HELP = ("noise level (1: pure noise) below which alignment guidance stops: it steers the first steps, "
                       "where stage 1 settles which way things move (default: the model's, 0.75 for the embedded "
                       "default; 0: every step)")
def idle_cpus(samples: int = 3, stat: str = "/proc/stat") -> int | None:
    """CPUs not busy with other processes right now (Linux: the kernel's count of running processes, the
    fewest of a few samples), or None where that cannot be read."""
    try:
        cpus = len(os.sched_getaffinity(0))
        running = []
        for k in range(samples):
            with open(stat) as f:
                running += [int(line.split()[1]) for line in f if line.startswith("procs_running")]
            if k + 1 < samples:
                time.sleep(0.005)
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    return max(1, cpus - (min(running) - 1)) if running else None  # procs_running counts this process


def set_threads(args) -> None:
    """CPU threads for torch: --threads, else OMP_NUM_THREADS, else the CPUs idle at start. torch's default
    (every core) turns into a crawl when another process holds one: its threads wait on each other at every
    operation (beside one busy process on 2 cores, the first command took 16.7 s with 2 threads and 6.5 s with
    1: ``python bench/first_video.py --threads 2``, and without)."""
    if args.threads is not None and args.threads < 1:
        raise errors.SemanticGenError(f"--threads must be at least 1, got {args.threads}")
    threads = args.threads or (None if os.environ.get("OMP_NUM_THREADS") else idle_cpus())
    if threads:
        import torch

        torch.set_num_threads(threads)


def cmd_generate(args) -> int:
    times, loads, load_seconds, out = generate(args)
    _stage_table(times, loads, load_seconds)
    print(f"wrote {out}")
    return 0


def generate(args) -> tuple[list[tuple[str, float]], int, float, Path]:
    """``generate``'s work, without its table: (each stage's name and seconds, model loads, their seconds,
    the mp4). bench/first_video.py times the warm path (models in the cache) through it.

    Text -> mp4 through ``SemanticGenPipeline``: stage 1, stage 2, then the VAE decodes chunk by chunk into
    the file. Models are picked as in the loader nodes (``embedded`` or a file in the models folders) and go
    through the same model cache; a plain Wan2.1 DiT as stage 2 renders as plain Wan (``SemanticGenPipeline.plain_wan``)."""
    import torch
    from semanticgen_core.pipeline import SemanticGenPipeline, candidate_seeds
    from semanticgen_core.sampling import SamplingOptions
    from semanticgen_core.vae import decode_chunk, decode_steps, frames_for

    pack = runner.load_pack()
    nodes = pack.nodes
    comfy, loaders, sampling, cache = nodes.comfy, nodes.loaders, nodes.sampling, nodes.model_cache.CACHE
    comfy.configure(**_folders(args))
    comfy.clear_interrupt()
    out = Path(args.out).resolve()
    if out.suffix.lower() != ".mp4":
        raise errors.SemanticGenError(f"--out {args.out}: give an .mp4 file")
    if args.candidates < 1:
        raise errors.SemanticGenError(f"--candidates must be at least 1, got {args.candidates}")
    for name, value in (("--width", args.width), ("--height", args.height)):
        if value is not None:  # before anything loads
            sampling.check_size("semanticgen generate", **{name: value})
    times: list[tuple[str, float]] = []
    loads0, load_s0 = cache.loads, cache.load_seconds
    remove = _progress_printer(args.quiet)
    try:
        with _interruptible():
            t0 = time.perf_counter()
            (stage1,) = loaders.SemanticGenStage1Loader().load(args.stage1, args.dtype)
            (stage2,) = loaders.SemanticGenStage2Loader().load(args.stage2, args.dtype)
            (vae,) = loaders.SemanticGenVAELoader().load(args.vae, args.dtype)
            aligner_name = args.aligner or ("embedded" if args.stage1 == "embedded" else "none")
            if args.candidates > 1 and aligner_name == "none":
                raise errors.SemanticGenError("--candidates scores each video with the aligner: give --aligner FILE "
                                              "(the aligner trained for this stage 1), or use --candidates 1")
            aligner = None if aligner_name == "none" else loaders.SemanticGenAlignerLoader().load(aligner_name,
                                                                                                 args.dtype)[0]
            encoder = None
            if args.candidates > 1:  # reads each candidate back
                encoder_name = args.semantic_encoder or ("embedded" if args.stage2 == "embedded" else None)
                if encoder_name is None:
                    raise errors.SemanticGenError("--candidates reads each video back with the semantic encoder stage "
                                                  "2 was trained with: give --semantic-encoder FILE")
                (encoder,) = loaders.SemanticGenSemanticEncoderLoader().load(encoder_name, args.dtype)
            preset = stage1.preset
            text_name = args.text_encoder or ("embedded" if preset.text_encoder == "minilm" else UMT5_FILE)
            (text_encoder,) = loaders.SemanticGenTextEncoderLoader().load(text_name, args.dtype)
            d = preset.defaults
            fps = float(args.fps or d["fps"])
            width, height = int(args.width or d["width"]), int(args.height or d["height"])
            sampling.check_size("semanticgen generate", **{"--width": width, "--height": height})
            num_frames = frames_for(args.seconds, fps)
            steps = args.steps or int(d["steps"])
            guidance = float(d["guidance"]) if args.guidance is None else args.guidance
            if guidance < 1:
                raise errors.SemanticGenError(f"--guidance must be at least 1 (1: no guidance), got {guidance:g}")
            opts = SamplingOptions(steps=steps, guidance=guidance, seed=args.seed, alignment=args.alignment,
                                   alignment_stop=args.alignment_stop)
            te = text_encoder.ready()["text_encoder"]
            for model, key in ((stage1, "stage1"), (stage2, "stage2")):
                if model[key].config.text_dim != te.dim:
                    raise errors.SemanticGenError(
                        f"{model.name} reads {model[key].config.text_dim}-d text embeddings but the text encoder "
                        f"{text_name} gives {te.dim}-d ones: pick its text encoder with --text-encoder.")
            loaders.ready(stage1, stage2, vae, aligner, encoder)
            plain = stage2.name if stage2.info.get("plain_wan") else None
            if encoder is not None:  # best of N: an aligner that does not fit is an error, not a warning
                encoder, align = sampling.candidate_parts("semanticgen generate --candidates", stage1, stage2,
                                                          encoder, aligner)
            else:
                align = sampling.usable_aligner(aligner, stage1)
            pipe = SemanticGenPipeline(preset=preset, text_encoder=te, stage1=stage1["stage1"],
                                       compressor=stage2["compressor"], stage2=stage2["stage2"], vae=vae["vae"],
                                       name=preset.name, plain_wan=bool(plain), aligner=align,
                                       semantic_encoder=encoder)
            times.append(("load models", time.perf_counter() - t0))
            alignment, stop = pipe.alignment(args.alignment), pipe.alignment_stop(args.alignment_stop)
            seeds = (f"best of {args.candidates}, seeds {', '.join(map(str, candidate_seeds(args.seed, 2)))}, ..."
                     if args.candidates > 1 else f"seed {args.seed}")
            print(f"{num_frames} frames at {fps:g} fps, {seeds}: {width}x{height}, {steps} steps, guidance "
                  f"{guidance:g}" + (f", alignment {alignment:g} down to noise {stop:g}" if alignment else ""))
            if plain:
                print(f"  note: {sampling.PLAIN_WAN_NOTE.format(name=plain)}")

            tile, overlap = nodes.decode.tiling(height, width)  # as the decode nodes tile

            def decode(latents):  # chunk by chunk, lazily
                chunk = decode_chunk(latents.shape[2], height, width, next(pipe.vae.wan.parameters()).dtype, tile)
                progress = comfy.Progress("VAE decode", decode_steps(latents.shape[2], chunk))
                return pipe.vae.decode_iter(latents, num_frames=num_frames, chunk=chunk, progress=progress,
                                            should_stop=comfy.should_stop, tile=tile, overlap=overlap)

            out.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            if args.candidates > 1:
                best, scores = pipe.best_of(args.prompt, num_frames, fps, height, width, opts, args.candidates,
                                            decode=lambda latents: torch.cat(list(decode(latents))),
                                            progress=comfy.Progress, should_stop=comfy.should_stop)
                times.append((f"{args.candidates} candidates", time.perf_counter() - t0))
                print("  " + ", ".join(f"seed {seed}: {score:.2f}" for seed, score in scores)
                      + f" (the aligner's scores of the videos read back); kept seed {best.seed}")
                t0 = time.perf_counter()
                with nodes.video.VideoFileWriter(out, fps, args.codec) as writer:
                    writer.write(best.frames)
                times.append(("write mp4", time.perf_counter() - t0))
            else:
                plan = pipe.generate_plan(args.prompt, num_frames, fps, height, width, opts,
                                          progress=comfy.Progress("stage 1", steps), should_stop=comfy.should_stop)
                times.append(("Stage 1: plan", time.perf_counter() - t0))
                t0 = time.perf_counter()
                latents = pipe.render_latents(plan, opts, progress=comfy.Progress("stage 2", steps),
                                              should_stop=comfy.should_stop)
                times.append(("Stage 2: render", time.perf_counter() - t0))
                t0 = time.perf_counter()
                # the chunks go straight into the file (written beside it, renamed when complete)
                with nodes.video.VideoFileWriter(out, fps, args.codec) as writer:
                    for frames in decode(latents):
                        writer.write(frames)
                times.append(("VAE decode", time.perf_counter() - t0))
    finally:
        remove()
    return times, cache.loads - loads0, cache.load_seconds - load_s0, out


def cmd_api(args) -> int:
    api = runner.apply_sets(runner.to_api(runner.load_workflow(args.workflow)), args.set or [])
    json.dump(api, sys.stdout, indent=2)
    print()
    return 0


def _eval_table(results: dict, out=None) -> None:
    out = out or sys.stdout  # looked up now: the stream may be replaced after import (tests capture it)
    rows = [("colour", "color"), ("shape", "shape"), ("motion (direction)", "motion"),
            ("motion (exact label)", "motion_exact")]

    def cell(rate: dict) -> str:
        if not rate["total"]:
            return "-"
        return f"{rate['accuracy']:6.1%} ({rate['correct']}/{rate['total']})"

    counts = results.get("by_object_count", {})
    print(f"  {'':<20}  {'all prompt objects':<22}  {'first object':<22}"
          + "".join(f"  {f'{n}-object prompts':<22}" for n in counts), file=out)
    for title, key in rows:
        print(f"  {title:<20}  {cell(results['objects'][key]):<22}  {cell(results['first_object'][key]):<22}"
              + "".join(f"  {cell(by[key]):<22}" for by in counts.values()), file=out)
    print(f"  {'all three right':<20}  {cell(results['all_correct'])} prompts", file=out)
    print(f"  {'consistency':<20}  {results['consistency']:.3f}  (1 = smooth; shuffled frames ~0.1)", file=out)
    print(f"  {'stability':<20}  {results['stability']:.3f}  (main object's colour/shape agreement over frames)",
          file=out)


def cmd_eval(args) -> int:
    from semanticgen_core import embedded, pipeline, sampling
    from semanticgen_core.vae import VideoVAE, frames_for
    from semanticgen_world import evaluation as ev, world

    if args.prompts < 1:
        raise errors.SemanticGenError(f"--prompts must be at least 1, got {args.prompts}")
    if args.guidance is not None and args.guidance < 1:
        raise errors.SemanticGenError(f"--guidance must be at least 1 (1: no guidance), got {args.guidance:g}")
    started = time.time()
    pipe = None
    if args.candidates < 1:
        raise errors.SemanticGenError(f"--candidates must be at least 1, got {args.candidates}")
    if args.candidates > 1 and (args.reference or args.plan_noise is not None):
        raise errors.SemanticGenError("--candidates judges the video best of N keeps from the whole model: it takes "
                                      "no --reference or --plan-noise")
    if (args.stage1 or args.stage2 or args.aligner) and args.reference in ("clips", "vae"):
        raise errors.SemanticGenError(f"--reference {args.reference} judges ground-truth clips: it takes no "
                                      "--stage1/--stage2/--aligner files")
    if args.reference in (None, "plan"):  # names the missing file if weights are absent
        pipe = pipeline.SemanticGenPipeline.embedded(with_encoder=args.reference == "plan" or args.candidates > 1,
                                                     stage1=args.stage1,
                                                     stage2=args.stage2, aligner=args.aligner)
        d = pipe.preset.defaults
        fps, height, width = float(d["fps"]), int(d["height"]), int(d["width"])
    else:
        fps, height, width = ev.CLIP_FPS, ev.CLIP_SIZE, ev.CLIP_SIZE
    if height != width:
        raise errors.SemanticGenError(f"eval renders square reference clips; the model makes {height}x{width}")
    num_frames = frames_for(args.seconds, fps)
    start = world.HELDOUT_SEED_START + args.first
    clips = ev.heldout_clips(args.prompts, start, num_frames, height, fps)
    prompts = [ev.prompt_of(clip, args.wording) for clip in clips]
    progress = None if args.quiet else (
        lambda i, n: print(f"\r  eval: {i}/{n}", end="\n" if i >= n else "", file=sys.stderr, flush=True))
    steps, vae, recons, kept_seeds = None, None, None, []
    if args.reference == "vae":  # the ground truth through the VAE alone: the ceiling the stages can reach
        vae = VideoVAE.from_pretrained(args.vae or embedded.weights_path("vae"))
        recons = [ev.reconstruct(vae, c.frames) for c in clips]  # the PSNR below reuses them
        generate = ev.reference_generator([replace(c, frames=r) for c, r in zip(clips, recons)], args.wording)
    elif pipe is None:
        generate = ev.reference_generator(clips, args.wording)
    else:
        steps = args.steps or int(d["steps"])
        guidance = float(d["guidance"]) if args.guidance is None else args.guidance
        plan_noise = float(d.get("plan_noise", 0.0)) if args.plan_noise is None else args.plan_noise
        alignment, alignment_stop = pipe.alignment(args.alignment), pipe.alignment_stop(args.alignment_stop)
        ground_truth = ev.reference_generator(clips, args.wording)  # prompt -> its clip's frames

        def generate(prompt: str, seed: int):
            opts = sampling.SamplingOptions(steps=steps, guidance=guidance, seed=seed, alignment=alignment,
                                            alignment_stop=alignment_stop)
            if args.candidates > 1:
                best, _ = pipe.best_of(prompt, num_frames, fps, height, width, opts, args.candidates)
                kept_seeds.append(best.seed)
                return best.frames
            if args.reference != "plan":
                plan = pipe.generate_plan(prompt, num_frames, fps, height, width, opts)
            else:  # stage 2 alone, on the plan the encoder reads from the prompt's ground-truth clip
                import torch

                frames = torch.from_numpy(ev.as_uint8_frames(ground_truth(prompt, seed)).astype("float32") / 255.0)
                plan = pipe.encode_video(frames, fps, prompt)
            latents = pipe.render_latents(plan, opts, plan_noise=args.plan_noise)
            return pipe.decode(latents, num_frames)

    report = ev.evaluate(generate, prompts, args.seed, progress=progress)
    per_prompt = report.pop("per_prompt")
    for row, kept in zip(per_prompt, kept_seeds):  # best of N: the seed of the video judged
        row["kept_seed"] = kept
    psnr, psnr_skipped = None, None
    n_psnr = args.prompts if args.psnr_clips is None else args.psnr_clips
    if n_psnr > 0:
        if pipe is not None and args.vae is None:
            vae = pipe.vae
        if vae is None:
            try:
                from_file = args.vae or embedded.weights_path("vae")  # names the missing file
            except errors.CheckpointError as e:
                if args.psnr_clips is not None:  # asked for explicitly: fail
                    raise
                psnr_skipped = str(e)  # --reference needs no model; say why the PSNR is absent
            else:
                vae = VideoVAE.from_pretrained(from_file)
        if vae is not None:
            psnr_clips = clips[:n_psnr] if n_psnr <= len(clips) else \
                ev.heldout_clips(n_psnr, start, num_frames, height, fps)
            psnr = ev.vae_psnr(vae, psnr_clips, recons[:n_psnr] if recons and n_psnr <= len(recons) else None)
            psnr["vae"] = str(args.vae) if args.vae else "embedded"
    mode = {"clips": "reference (ground-truth world clips: the detector's ceiling)",
            "vae": "reference through the VAE (ground-truth clips encoded and decoded: the stages' ceiling)",
            "plan": "stage 2 on ground-truth plans (the clips' own plans rendered: stage 2 apart from stage 1)",
            None: "embedded model"}[args.reference]
    print(f"{mode}: {len(prompts)} held-out prompts (world seeds {start}..{start + len(prompts) - 1}, "
          f"{args.wording} wording), "
          f"{num_frames} frames at {fps:g} fps"
          + (f", {steps} steps, guidance {guidance:g}, plan noise {plan_noise:g}, alignment {alignment:g}"
             + (f" down to noise {alignment_stop:g}" if alignment else "") + f", seeds {args.seed}.."
             + (f", best of {args.candidates} by the aligner" if args.candidates > 1 else "") if steps else ""))
    _eval_table(report)
    if psnr is not None:
        print(f"  {'VAE PSNR':<20}  {psnr['psnr']:.2f} dB  (mean over {psnr['clips']} held-out clips, "
              f"{psnr['vae']} VAE)")
    elif psnr_skipped:
        print(f"  {'VAE PSNR':<20}  skipped: {psnr_skipped}")
    seconds = time.time() - started
    print(f"  {'time':<20}  {seconds:.1f} s")
    if args.out:
        record = {
            "command": "python -m semanticgen " + shlex.join(args.argv),
            "mode": {"clips": "reference", "vae": "reference-vae", "plan": "reference-plan",
                     None: "model"}[args.reference],
            "model": None if pipe is None else pipe.name,
            "wording": args.wording,
            "stage_files": {k: str(v) for k, v in (("stage1", args.stage1), ("stage2", args.stage2)) if v},
            "heldout_seeds": [start, start + len(prompts) - 1],
            "num_frames": num_frames, "fps": fps, "height": height, "width": width,
            "steps": steps, "guidance": None if pipe is None else guidance,
            "plan_noise": None if pipe is None else plan_noise,
            "alignment": None if pipe is None else alignment,
            "alignment_stop": None if pipe is None else alignment_stop, "seed": args.seed,
            "candidates": args.candidates,
            "seconds": round(seconds, 1),
            "results": report, "vae_psnr": psnr, **({"vae_psnr_skipped": psnr_skipped} if psnr_skipped else {}),
            "per_prompt": per_prompt,
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m semanticgen", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def threads(p):  # read by main() (set_threads)
        p.add_argument("--threads", type=int, help="CPU threads (default: $OMP_NUM_THREADS, else the CPUs idle at start)")

    def common(p):
        p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                       help="override an input (NODE: node id or title); repeatable")
        p.add_argument("--models", type=Path, help="ComfyUI-style models folder (models/semanticgen, models/vae, ...)")
        p.add_argument("--input", type=Path, help="input folder (videos for Load Video)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
        threads(p)

    p = sub.add_parser("run", help="run a workflow saved from ComfyUI (UI format 0.4, or API format)")
    p.add_argument("workflow", help="a .json file, or the name of a shipped workflow (text_to_video, ...)")
    p.add_argument("--out", type=Path, default=Path("output"), help="output folder (default ./output)")
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("generate", help="text -> video: stage 1, stage 2 and the VAE through SemanticGenPipeline",
                       description="Text -> mp4 with SemanticGenPipeline (no workflow): the models are picked as in the "
                                   "loader nodes, 'embedded' or a file name in the models folders. Size, frame rate, "
                                   "steps and guidance default to the stage-1 model's. Prints the time of each stage.")
    p.add_argument("prompt", help="what the video shows; several shots as '0-8 s: ...; 8-20 s: ...'")
    p.add_argument("--seconds", type=float, default=4.0, help="video length (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="denoising steps of both stages (default: the model's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance of both stages (default: the model's)")
    p.add_argument("--width", type=int, help="video width, a multiple of 16 (default: the model's)")
    p.add_argument("--height", type=int, help="video height, a multiple of 16 (default: the model's)")
    p.add_argument("--fps", type=float, help="frame rate (default: the model's)")
    p.add_argument("--stage1", default="embedded", help="stage-1 file in models/semanticgen (default embedded)")
    p.add_argument("--stage2", default="embedded", help="stage-2 file in models/semanticgen, or a Wan2.1 DiT in "
                                                        "models/diffusion_models (default embedded)")
    p.add_argument("--vae", default="embedded", help="VAE file in models/semanticgen or models/vae (default embedded)")
    p.add_argument("--aligner", help="aligner of stage 1's alignment guidance, a file in models/semanticgen, or none "
                                     "(default: embedded with the embedded stage 1, else none)")
    p.add_argument("--alignment", type=float, help="alignment guidance weight (default: the stage-1 model's, 100 for "
                                                    "the embedded default, none for others: give it; 0: off)")
    p.add_argument("--alignment-stop", type=float, help=ALIGNMENT_STOP_HELP)
    p.add_argument("--candidates", type=int, default=1,
                   help="make this many videos (seeds SEED, SEED+1000, ...), read each back with the semantic encoder "
                        "and keep the one the aligner scores as following the prompt best; prints the kept seed, "
                        "which alone makes it again (default 1; N times the time)")
    p.add_argument("--semantic-encoder", help="semantic encoder that reads --candidates back: a file in "
                                              "models/semanticgen or models/clip_vision (default: embedded with the "
                                              "embedded stage 2)")
    p.add_argument("--text-encoder", help=f"text encoder: embedded, or {UMT5_FILE} in models/text_encoders "
                                          "(default: the one the stage-1 model was trained with)")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="weight precision (default auto: fp32 on the CPU, bf16 or fp16 on a GPU)")
    p.add_argument("--codec", default="vp9", choices=["vp9", "mp4v"], help="video codec (default vp9)")
    p.add_argument("--out", default="semanticgen.mp4", help="the .mp4 to write (default semanticgen.mp4)")
    p.add_argument("--models", type=Path, help="ComfyUI-style models folder (models/semanticgen, models/vae, ...)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    threads(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="judge the embedded default on held-out prompts with an independent detector",
                       description="Generate a clip per held-out world prompt with the embedded default and judge "
                                   "it with an OpenCV colour/shape detector (docs/evaluation.md): colour, shape and "
                                   "motion accuracy, frame-to-frame consistency, and the VAE's reconstruction PSNR.")
    p.add_argument("--prompts", type=int, default=100, help="held-out prompts to judge (default 100)")
    p.add_argument("--first", type=int, default=0,
                   help="skip this many held-out world seeds (default 0: start at the first held-out seed)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the first prompt; prompt i uses seed+i")
    p.add_argument("--steps", type=int, help="denoising steps of both stages (default: the model's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance of both stages (default: the model's)")
    p.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4)")
    p.add_argument("--plan-noise", type=float, help="stage 2 renders the plan noised to this level, as it was "
                                                     "trained (default: the model's; 0: the plan as it is)")
    p.add_argument("--alignment", type=float, help="stage 1's alignment guidance with the embedded aligner "
                                                    "(default: the model's; 0: off)")
    p.add_argument("--alignment-stop", type=float, help=ALIGNMENT_STOP_HELP)
    p.add_argument("--candidates", type=int, default=1,
                   help="judge the video best of N keeps (as generate --candidates: candidate k of a prompt at its "
                        "seed + 1000 k, the one the aligner scores highest read back; default 1)")
    p.add_argument("--reference", nargs="?", const="clips", choices=["clips", "vae", "plan"],
                   help="judge the ground-truth world clips instead of generated ones (the detector's own "
                        "accuracy; needs no model); '--reference vae': those clips encoded and decoded by the "
                        "VAE (--vae or the embedded default's), the most the stages can reach; '--reference plan': "
                        "stage 2 rendering the plans the semantic encoder reads from those clips (stage 2 "
                        "apart from stage 1)")
    p.add_argument("--psnr-clips", type=int, default=None,
                   help="held-out clips for the VAE's PSNR (default: as many as --prompts; 0 skips it)")
    p.add_argument("--vae", type=Path, help="VAE file for the PSNR and '--reference vae' (default: the embedded "
                                             "default's)")
    p.add_argument("--wording", choices=["template", "paraphrase"], default="template",
                   help="prompts in the world's caption template (default), or paraphrased in a wording kept out "
                        "of training (other words for colours, shapes, motions and backdrops, other sentence "
                        "shapes: semanticgen_world/wording.py)")
    p.add_argument("--stage1", type=Path, help="judge this stage-1 file instead of the embedded default's")
    p.add_argument("--stage2", type=Path, help="judge this stage-2 file instead of the embedded default's")
    p.add_argument("--aligner", type=Path, help="stage 1's alignment guidance with this aligner file instead of the "
                                                 "embedded default's")
    p.add_argument("--out", help="write the figures, every judgement and the command line to this .json")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    threads(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("api", help="print a workflow in the API format (what POST /prompt takes)")
    p.add_argument("workflow")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE")
    p.set_defaults(func=cmd_api)
    return parser


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """The command line. ``own_process``: the process is this command's alone (``python -m semanticgen``), so
    without --threads it takes the CPUs idle at start; called in-process, only --threads changes torch's."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if "threads" in args and (own_process or args.threads is not None):
            set_threads(args)
        return args.func(args)
    except (runner.WorkflowError, runner.NodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001
        if isinstance(e, errors.Interrupted):
            print(f"stopped: {e}", file=sys.stderr)
            return 130
        if isinstance(e, errors.SemanticGenError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
