"""Contact sheet of plans: held-out world scenes, each as the clip, the clip's own plan and stage 1's plan for
its caption, the plans drawn by the plan-preview decoder (``plan_preview.py``, what the plan editor shows),
frames 0, 8, 16, 24 and 32 of each side by side, one scene a row. It shows what stage 1 plans against what
the semantic encoder reads from a real clip, before stage 2 renders anything.

    python bench/plan_sheet.py --objects 2 --rows 8 --out docs/img/two_object_plans.jpg

Scenes are the evaluation's held-out prompts (``evaluation.heldout_clips``) whose captions name ``--objects``
objects, in order; stage 1 samples with the model's defaults and the evaluation's seed for that prompt (its
index), so a row shows the plan ``python -m semanticgen eval --prompts 100 --seed 0`` renders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semanticgen_core.checkpoints import write_atomic  # noqa: E402
from semanticgen_core.errors import SemanticGenError, run_command  # noqa: E402
from semanticgen_core.pipeline import SemanticGenPipeline  # noqa: E402
from semanticgen_core.plan_preview import embedded_preview  # noqa: E402
from semanticgen_core.sampling import SamplingOptions  # noqa: E402
from semanticgen_world import evaluation as ev, world  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plan_following import drawn  # noqa: E402  (the plans drawn as --plan-travel judges them)

FRAMES = 5  # frames shown of each clip and plan, evenly spaced
SCALE = 2


def strip(frames: np.ndarray) -> np.ndarray:
    picks = [round(k * (len(frames) - 1) / (FRAMES - 1)) for k in range(FRAMES)]
    return np.concatenate([np.pad(frames[i], ((2, 2), (2, 2), (0, 0))) for i in picks], 1)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, choices=(1, 2), default=2, help="scenes whose captions name this many objects")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--stage1", type=Path, help="this stage-1 file instead of the embedded one")
    p.add_argument("--alignment", type=float, default=None, help="stage 1's alignment guidance (default: the model's)")
    p.add_argument("--alignment-stop", type=float, default=None,
                   help="the noise level where that guidance stops (default: the model's; 0: every step)")
    p.add_argument("--out", type=Path, default=Path("docs/img/two_object_plans.jpg"),
                   help="the sheet (.jpg or .png)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = SemanticGenPipeline.embedded(with_encoder=True, stage1=args.stage1)
    d = pipe.preset.defaults
    decoder = embedded_preview().modules["preview"]
    rows = []
    for i, clip in enumerate(ev.heldout_clips(100, world.HELDOUT_SEED_START, 33, int(d["height"]), float(d["fps"]))):
        if len(world.parse_caption(clip.caption)) != args.objects:
            continue
        frames = torch.from_numpy(ev.as_uint8_frames(clip.frames).astype("float32") / 255.0)
        own = pipe.encode_video(frames, clip.fps, clip.caption)
        opts = SamplingOptions(steps=int(d["steps"]), guidance=float(d["guidance"]), seed=i, alignment=args.alignment,
                               alignment_stop=args.alignment_stop)
        planned = pipe.generate_plan(clip.caption, clip.frames.shape[0], clip.fps, *clip.frames.shape[1:3], opts)
        gap = np.full((clip.frames.shape[1] + 4, 8, 3), 255, np.uint8)
        row = np.concatenate([strip(clip.frames), gap, strip(drawn(decoder, own, clip.frames.shape[1:3])), gap,
                              strip(drawn(decoder, planned, clip.frames.shape[1:3]))], 1)
        row = cv2.resize(row, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
        label = np.full((22, row.shape[1], 3), 255, np.uint8)
        cv2.putText(label, f"seed {i}: {clip.caption}", (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(np.concatenate([label, row]))
        print(f"{len(rows)}/{args.rows} {clip.caption}", flush=True)
        if len(rows) == args.rows:
            break
    width = rows[0].shape[1]
    head = np.full((26, width, 3), 255, np.uint8)
    for x, title in ((4, "the clip"), (width // 3 + 4, "its own plan (preview decoder)"),
                     (2 * width // 3 + 4, "stage 1's plan for its caption")):
        cv2.putText(head, title, (x, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    ok, image = cv2.imencode(args.out.suffix, cv2.cvtColor(np.concatenate([head, *rows]), cv2.COLOR_RGB2BGR),
                             [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise SemanticGenError(f"OpenCV cannot write a {args.out.suffix!r} image ({args.out}): use .jpg or .png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, image.tobytes())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_command(main)
