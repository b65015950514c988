"""Does stage 2 follow its plan's motion? Inference-time levers, measured on real plans.

The setting of ``python -m semanticgen eval --reference plan``: each held-out world clip is encoded to its
plan (``pipeline.encode_video``: the semantic encoder, then the compressor's mean), stage 2 renders that
plan under the clip's caption, the VAE decodes it, and the independent detector
(``semanticgen_world/evaluation.py``) judges colour, shape and direction against the caption. The
configuration ``base`` is exactly that command's sampling (same plans, seeds and figures); every other
configuration changes one or two inference-time knobs (``noise`` is ``render_latents``' ``plan_noise``,
and ``eval --plan-noise``):

    steps=N shift=S guidance=G sampler=euler|unipc      sampling options (defaults: the preset's 20, 3, 2.5, euler)
    window=N|full  offset=cycle|fixed                    stage 2's time windows (default 4, the grid moving each step)
    noise=A        the plan noised to level A as in training ((1-A) plan + A eps, the model told 1000 A);
                   default: the preset's plan_noise (as eval)
    ts=A           only the model told the level A (the plan itself left clean)
    sample=1       the plan drawn from the compressor's posterior (mean + std eps: what training fed at A=0)
    plan=reverse|freeze|mean|zero                         the plan edited before rendering (a diagnosis):
                   reverse = steps played backwards (plan_ops.reverse), freeze = every step = step 0,
                   mean = every step = the plan's mean over time, zero = all zeros
    pcfg=W pneg=zero|freeze|mean|noised|none             guidance on the plan: v + W (v - v_neg), v_neg the
                   velocity with the text kept and the plan replaced (none: no plan tokens at all;
                   noised: the plan noised to 0.3, the most training saw)

Besides the detector's accuracies (over all prompt objects, as ``eval`` prints them) it measures how far
the rendered object moves along the plan's motion: for each prompt's first object whose ground-truth clip
travels at least 0.15 of the frame (the detector's ``MOVE``), ``gain`` = (rendered net travel . plan
travel) / |plan travel|^2, where the plan travel is the clip's, reversed for ``plan=reverse`` (1: follows
the plan fully, 0: stays put, -1: the opposite way); ``follow`` = the share of those objects that travel
at least 0.15 along it; ``travel`` = the mean |net travel| of every rendered first object; ``jumps`` =
per clip, the frames where that object leaps more than 0.08 of the frame or is missing where the clip
shows it (``jump_count``; the VAE alone scores about 2 on the first 40 prompts, for the detector's
flicker on small objects).

    python bench/plan_following.py --prompts 40 --configs base "noise=0.15" "pcfg=2,pneg=freeze" \
        [--first 0 --seed 0 --threads 1 --stage2 FILE --out runs/plan_following.json]

``--plan-travel`` instead asks whether the plans themselves carry the caption's direction, before any
stage 2: the clip's own plan and stage 1's plan for its caption (seed ``--seed + i``, the preset's
steps, guidance and alignment guidance, or ``--alignment`` and ``--alignment-stop``) are drawn by the plan-preview decoder (``plan_preview.py``, 16x16 a step, upsampled
to 64x64) and the same detector tracks the first object; for each caption whose first object travels
(rightward, leftward, up, down) it counts the plans whose object travels at least 0.15 of the frame that
way (chance: about 1 in 4), by direction; and, judged as the evaluation judges a video (``evaluation.judge``:
each object's colour track and its direction), every travelling object of the captions, by how many objects
the caption names:

    python bench/plan_following.py --prompts 80 --plan-travel [--stage1 FILE] [--alignment W] [--alignment-stop S]

A configuration is a comma-separated list of ``key=value`` (``base`` for none). Each configuration renders
``--prompts`` clips (about 1.3 s each on one CPU thread); the plans are encoded once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semanticgen_core import plan_ops  # noqa: E402
from semanticgen_core.pipeline import STREAM_WINDOWS, SemanticGenPipeline, latent_frames  # noqa: E402
from semanticgen_core.sampling import SamplingOptions, denoise, initial_noise  # noqa: E402
from semanticgen_core.shots import shot_starts  # noqa: E402
from semanticgen_world import evaluation as ev, world  # noqa: E402

KEYS = {"steps", "shift", "guidance", "sampler", "window", "offset", "noise", "ts", "sample", "plan", "pcfg", "pneg"}


def parse_config(text: str) -> dict:
    if text in ("", "base"):
        return {}
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in KEYS or not value:
            raise SystemExit(f"bad configuration part {part!r}: use key=value with key in {sorted(KEYS)}")
        out[key] = value
    return out


def edit_tokens(tokens: torch.Tensor, how: str) -> torch.Tensor:
    """Plan tokens ``[T_s, h, w, c]`` edited for a diagnosis (``reverse`` is done with plan_ops)."""
    if how == "freeze":
        return tokens[:1].expand_as(tokens).clone()
    if how == "mean":
        return tokens.mean(0, keepdim=True).expand_as(tokens).clone()
    if how == "zero":
        return torch.zeros_like(tokens)
    raise SystemExit(f"unknown plan edit {how!r}")


def render(pipe: SemanticGenPipeline, plan, std: torch.Tensor, cfg: dict, defaults: dict, seed: int) -> torch.Tensor:
    """Stage 2 on ``plan`` with the configuration's knobs; with none, exactly ``pipe.render_latents``."""
    stage2 = pipe.stage2
    opts = SamplingOptions(steps=int(cfg.get("steps", defaults["steps"])), sampler=cfg.get("sampler", "euler"),
                           shift=float(cfg.get("shift", 3.0)), guidance=float(cfg.get("guidance", defaults["guidance"])),
                           seed=seed)
    how = cfg.get("plan", "real")
    if how == "reverse":
        plan = plan_ops.reverse(plan)
    tokens = plan.tokens if how in ("real", "reverse") else edit_tokens(plan.tokens, how)
    gen = torch.Generator().manual_seed(10_000 + seed)
    if cfg.get("sample") == "1":
        tokens = tokens + std * torch.randn(tokens.shape, generator=gen)
    level = float(cfg.get("noise", defaults.get("plan_noise", 0.0)))  # as render_latents' plan_noise
    if level:
        tokens = (1 - level) * tokens + level * torch.randn(tokens.shape, generator=gen)
    level = float(cfg.get("ts", level))
    dtype = next(stage2.parameters()).dtype
    shape = (1, stage2.config.in_channels, latent_frames(plan.num_frames), plan.height // 8, plan.width // 8)
    noise = initial_noise(shape, opts.seed, pipe.device)
    text, empty = pipe.shot_text(plan.segments)
    starts = shot_starts(plan.segments, plan.duration_s, shape[2] // stage2.config.patch_size[0])
    sem = tokens[None].to(pipe.device, dtype)
    w = cfg.get("window", "-1")
    window = stage2.config.window_frames if w == "-1" else (None if w == "full" else int(w))
    stream = None if window is None else STREAM_WINDOWS * window
    fixed = cfg.get("offset", "cycle") == "fixed"
    pcfg = float(cfg.get("pcfg", 0.0))
    pneg = cfg.get("pneg", "freeze")
    if pneg == "noised":
        neg = (0.7 * tokens + 0.3 * torch.randn(tokens.shape, generator=gen))[None].to(pipe.device, dtype)
        neg_level = 0.3
    elif pneg == "none":
        neg, neg_level = None, 0.0
    else:
        neg, neg_level = edit_tokens(tokens, pneg)[None].to(pipe.device, dtype), level
    step = iter(range(opts.steps))
    guided = opts.guidance != 1.0

    def run(x, t, context, plan_tokens, plan_level, offset):
        return stage2(x, t, context,
                      semantic_tokens=None if plan_tokens is None else plan_tokens.expand(x.shape[0], *plan_tokens.shape[1:]),
                      semantic_timestep=torch.full_like(t, 1000 * plan_level), window_frames=window,
                      shot_starts=starts, stream_frames=stream, window_offset=offset).sample

    def velocity(x, t, context):
        offset = 0.0 if window is None or fixed else float(next(step) % window)
        v = run(x, t, context, sem, level, offset)
        if not pcfg:
            return v
        # plan guidance on the text-conditional half only: denoise mixes v_u + g (v_c' - v_u), so
        # v_c' = v_c + (W / g) (v_c - v_neg) adds W (v_c - v_neg) to the guided velocity
        n = x.shape[0] // 2 if guided else x.shape[0]
        v_neg = run(x[:n], t[:n], context[:n], neg, neg_level, offset)
        scale = pcfg / (opts.guidance if guided else 1.0)
        v_c = v[:n] + scale * (v[:n] - v_neg)
        return torch.cat([v_c, v[n:]]) if guided else v_c

    with torch.no_grad():
        return denoise(velocity, noise, text.to(dtype), empty.to(dtype), opts, model_dtype=dtype)


def travel(track) -> np.ndarray:
    """Net travel (dx, dy) of a track, as the detector fits it (fractions of the frame)."""
    path = np.array(track.path, np.float64)
    return np.array([ev._trend(path[:, 0], path[:, 1]), ev._trend(path[:, 0], path[:, 2])])


def jump_count(track, expected: int) -> int:
    """Frames where the track's centroid leaps more than ``JUMP`` of the frame from the frame before (world
    objects move at most ~0.02 a frame), plus frames missing against the ``expected`` number the
    ground-truth clip shows it in: teleports, flicker, lost objects. 0 on ground-truth clips."""
    if track is None:
        return expected
    path = np.array(track.path, np.float64)
    steps = np.hypot(*np.diff(path[:, 1:3], axis=0).T)
    return int((steps > JUMP).sum()) + max(0, expected - len(path))


JUMP = 0.08


def first_track(frames, color: str | None):
    tracks = ev.summarize(ev.detect(frames))["tracks"]
    return next((t for t in tracks if t.color == color), tracks[0] if tracks else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=40)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--configs", nargs="+", default=["base"])
    p.add_argument("--out", type=Path, help="JSON with every figure and judgement")
    p.add_argument("--plan-travel", action="store_true",
                   help="judge the plans (the clips' own and stage 1's) through the preview decoder instead")
    p.add_argument("--stage1", type=Path, help="with --plan-travel: this stage-1 file instead of the embedded one")
    p.add_argument("--stage2", type=Path, help="this stage-2 file (and its compressor) instead of the embedded one")
    p.add_argument("--alignment", type=float, default=None,
                   help="with --plan-travel: stage 1's alignment guidance (default: the model's; 0: off)")
    p.add_argument("--alignment-stop", type=float, default=None,
                   help="with --plan-travel: the noise level where that guidance stops (default: the model's; 0: "
                        "every step)")
    p.add_argument("--aligner", type=Path, help="with --plan-travel: this aligner file instead of the embedded one")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = {c: parse_config(c) for c in args.configs}

    pipe = SemanticGenPipeline.embedded(with_encoder=True, stage1=args.stage1, stage2=args.stage2, aligner=args.aligner)
    d = pipe.preset.defaults
    fps, size = float(d["fps"]), int(d["height"])
    clips = ev.heldout_clips(args.prompts, world.HELDOUT_SEED_START + args.first, 33, size, fps)
    if args.plan_travel:
        return plan_travel(pipe, clips, args.seed, args.alignment, args.alignment_stop)
    plans, stds, refs = [], [], []
    for clip in clips:
        frames = torch.from_numpy(ev.as_uint8_frames(clip.frames).astype("float32") / 255.0)
        plans.append(pipe.encode_video(frames, fps, clip.caption))
        with torch.no_grad():  # the compressor's posterior std, for sample=1
            feats = pipe.semantic_encoder.encode(frames, fps)
            _, logvar = pipe.compressor(feats.to(next(pipe.compressor.parameters()).dtype))
        stds.append((0.5 * logvar.float()).exp().cpu())
        target = world.parse_caption(clip.caption)[0]
        track = first_track(clip.frames, target["color"])
        refs.append((target["color"], travel(track), len(track.path)))

    results = {}
    for name, cfg in configs.items():
        t0 = time.time()
        judgements, gains, follows, travels, jumps = [], [], [], [], []
        for i, (clip, plan) in enumerate(zip(clips, plans)):
            seed = args.seed + i
            latents = render(pipe, plan, stds[i], cfg, d, seed)
            frames = pipe.decode(latents, plan.num_frames)
            j = ev.judge(frames, clip.caption)
            j["seed"] = seed
            color, ref, seen = refs[i]
            track = first_track(frames, color)
            got = np.zeros(2) if track is None else travel(track)
            j["travel"] = got.round(4).tolist()
            j["ref_travel"] = ref.round(4).tolist()
            j["path"] = None if track is None else track.path
            jumps.append(jump_count(track, seen))
            travels.append(float(np.hypot(*got)))
            want = -ref if cfg.get("plan") == "reverse" else ref
            if np.hypot(*want) >= ev.MOVE and cfg.get("plan") not in ("freeze", "mean", "zero"):
                along = float(got @ want / (want @ want))
                gains.append(along)
                follows.append(along * np.hypot(*want) >= ev.MOVE)
            judgements.append(j)
        agg = ev.aggregate(judgements)
        results[name] = {"config": cfg, "seconds": round(time.time() - t0, 1), "results": agg,
                         "gain": float(np.mean(gains)) if gains else None, "follow": [int(sum(follows)), len(follows)],
                         "travel": float(np.mean(travels)), "jumps": float(np.mean(jumps)),
                         "per_prompt": judgements}
        row(name, results[name])
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"command": " ".join(sys.argv), "prompts": args.prompts,
                                            "first": args.first, "seed": args.seed, "results": results}, indent=1))
    return 0


UNIT = {"rightward": (1.0, 0.0), "leftward": (-1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def drawn(decoder, plan, size: tuple[int, int]) -> np.ndarray:
    """A plan drawn by the preview decoder (16x16 a step) and upsampled to the clip's ``size``: uint8 ``[T, H, W, 3]``,
    what the detector reads."""
    import torch.nn.functional as F

    from semanticgen_core.plan_preview import preview_frames

    with torch.no_grad():
        small = preview_frames(decoder, plan.tokens).permute(0, 3, 1, 2)
    big = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    return (big.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()


def plan_travel(pipe: SemanticGenPipeline, clips, seed: int, alignment: float | None = None,
                alignment_stop: float | None = None) -> int:
    """``--plan-travel``: does the plan carry the caption's direction? (the module's docstring)"""
    from semanticgen_core.plan_preview import embedded_preview

    decoder = embedded_preview().modules["preview"]
    d = pipe.preset.defaults
    counts: dict[str, dict[str, list[int]]] = {"clip's own plan": {}, "stage 1's plan": {}}
    travelled: dict[str, list[float]] = {name: [] for name in counts}
    by_objects: dict[str, dict[int, list[int]]] = {name: {} for name in counts}  # objects the caption names -> [right, of]
    for i, clip in enumerate(clips):
        objects = world.parse_caption(clip.caption)
        target = objects[0]
        group = ev.DIRECTION_GROUP[target["motion"]]
        if not any(ev.DIRECTION_GROUP[o["motion"]] in UNIT for o in objects):
            continue
        frames = torch.from_numpy(ev.as_uint8_frames(clip.frames).astype("float32") / 255.0)
        opts = SamplingOptions(steps=int(d["steps"]), guidance=float(d["guidance"]), seed=seed + i, alignment=alignment,
                               alignment_stop=alignment_stop)
        plans = {"clip's own plan": pipe.encode_video(frames, clip.fps, clip.caption),
                 "stage 1's plan": pipe.generate_plan(clip.caption, clip.frames.shape[0], clip.fps, clip.frames.shape[1],
                                                      clip.frames.shape[2], opts)}
        for name, plan in plans.items():
            picture = drawn(decoder, plan, clip.frames.shape[1:3])
            # every travelling object, as the evaluation judges it (its colour's track, its direction)
            tally = by_objects[name].setdefault(len(objects), [0, 0])
            for o in ev.judge(picture, clip.caption)["objects"]:
                if ev.DIRECTION_GROUP[o["prompt"]["motion"]] in UNIT:
                    tally[0] += bool(o["motion"])
                    tally[1] += 1
            if group not in UNIT:
                continue
            track = first_track(picture, target["color"])
            got = np.zeros(2) if track is None else travel(track)
            travelled[name].append(float(np.hypot(*got)))
            c = counts[name].setdefault(group, [0, 0])
            c[0] += int(got @ np.array(UNIT[group]) >= ev.MOVE)
            c[1] += 1
    groups = sorted(next(iter(counts.values())))
    print(f"| plan | {' | '.join(groups)} | all | mean travel |")
    print("|---" * (len(groups) + 3) + "|")
    for name, by in counts.items():
        right, total = sum(c[0] for c in by.values()), sum(c[1] for c in by.values())
        print(f"| {name} | " + " | ".join(f"{by[g][0]}/{by[g][1]}" for g in groups)
              + f" | {right}/{total} ({right / max(1, total):.0%}) | {np.mean(travelled[name]):.2f} |")
    sizes = sorted(next(iter(by_objects.values())))
    names = " | ".join(f"{n} object" + "s" * (n > 1) for n in sizes)
    print(f"\nEvery travelling object judged by the detector, by the objects its caption names:\n\n| plan | {names} |")
    print("|---" * (len(sizes) + 1) + "|")
    for name, by in by_objects.items():
        print(f"| {name} | " + " | ".join(f"{by[n][0]}/{by[n][1]}" for n in sizes) + " |")
    return 0


HEADER = False


def row(name: str, r: dict) -> None:
    global HEADER
    if not HEADER:
        print(f"| {'configuration':<28} | direction | colour | shape | exact | gain | follow | travel | jumps | s |", flush=True)
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        HEADER = True
    o = r["results"]["objects"]

    def cell(k):
        return f"{o[k]['accuracy']:.0%} ({o[k]['correct']}/{o[k]['total']})"

    gain = "-" if r["gain"] is None else f"{r['gain']:+.2f}"
    follow = "-" if not r["follow"][1] else f"{r['follow'][0]}/{r['follow'][1]}"
    print(f"| {name:<28} | {cell('motion')} | {cell('color')} | {cell('shape')} | {cell('motion_exact')} | {gain} | "
          f"{follow} | {r['travel']:.2f} | {r['jumps']:.1f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
