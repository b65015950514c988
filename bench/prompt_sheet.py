"""Contact sheet of the embedded default's text-to-video: one row per prompt (every 4th frame of a 4 s
clip), each with the independent detector's verdict, so anyone can look at what the model draws.

    python bench/prompt_sheet.py --out docs/img/text_to_video.png
    python bench/prompt_sheet.py --no-fixed --heldout 8 --wording both --out docs/img/wording_sheet.png \
        [--first K] [--stage1 FILE] [--stage2 FILE]

The prompts are ``evaluation.FIXED_PROMPTS`` (also judged by ``tests/test_embedded.py``; ``--no-fixed``
leaves them out) and a few held-out world scenes, worded as the caption template, as the paraphrase set
kept out of training (``--wording paraphrase``), or both, one row under the other at the same seed
(``--wording both``), from the ``--first``-th held-out scene on; each row is labelled with the prompt and
what the detector judged right (colour, shape, motion). ``--candidates N``: each row is the video best of N keeps (``SemanticGenPipeline.best_of``, as
``generate --candidates N``), labelled with its seed. The model's sampling defaults, as the first command
uses them; ``--stage1``/``--stage2 FILE`` draw a candidate's rows instead of the shipped files'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semanticgen_world import evaluation  # noqa: E402
from semanticgen_core.checkpoints import write_atomic  # noqa: E402
from semanticgen_core.errors import run_command  # noqa: E402
from semanticgen_core.pipeline import SemanticGenPipeline  # noqa: E402
from semanticgen_core.sampling import SamplingOptions  # noqa: E402

SCALE = 2  # 64x64 frames drawn at 128x128 so the objects can be seen


def verdict(judgement: dict) -> str:
    """``colour ok, shape X, motion ok`` for the prompt's first object (X: the detector saw something else)."""
    obj = judgement["objects"][0]
    seen = obj["detected"] or {}
    marks = []
    for key, label in (("color", "colour"), ("shape", "shape"), ("motion", "motion")):
        if obj[key] is not None:
            marks.append(f"{label} " + ("ok" if obj[key] else f"X ({seen.get(key)})"))
    return ", ".join(marks)


def labelled_row(frames: np.ndarray, text: str) -> np.ndarray:
    strip = np.concatenate([cv2.resize(f, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
                            for f in frames[::4]], axis=1)
    label = np.full((22, strip.shape[1], 3), 255, np.uint8)
    cv2.putText(label, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([label, strip])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/img/text_to_video.png"))
    p.add_argument("--fixed", action=argparse.BooleanOptionalAction, default=True,
                   help="start with evaluation.FIXED_PROMPTS")
    p.add_argument("--heldout", type=int, default=6, help="held-out world scenes after the fixed prompts")
    p.add_argument("--first", type=int, default=0, help="skip this many held-out scenes (as eval --first)")
    p.add_argument("--wording", choices=[*evaluation.WORDINGS, "both"], default="template",
                   help="how the held-out scenes are worded (both: each scene's template, then its paraphrase)")
    p.add_argument("--steps", type=int, help="denoising steps of each stage (default: the model's)")
    p.add_argument("--stage1", type=Path, help="a stage-1 file in place of the embedded default's")
    p.add_argument("--stage2", type=Path, help="a stage-2 file in place of the embedded default's")
    p.add_argument("--candidates", type=int, default=1, help="best of N videos by the aligner (default 1)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    pipe = SemanticGenPipeline.embedded(stage1=a.stage1, stage2=a.stage2, with_encoder=a.candidates > 1)
    d = pipe.preset.defaults
    wordings = evaluation.WORDINGS if a.wording == "both" else (a.wording,)
    prompts = list(enumerate(evaluation.FIXED_PROMPTS if a.fixed else []))
    start = evaluation.world.HELDOUT_SEED_START + a.first
    worded = zip(*(evaluation.heldout_prompts(a.heldout, start, wording=w) for w in wordings))  # a scene's wordings together
    prompts += [(len(prompts) + i, prompt) for i, scene in enumerate(worded) for prompt in scene]
    rows = []
    for seed, prompt in prompts:
        opts = SamplingOptions(steps=a.steps or d["steps"], guidance=float(d["guidance"]), seed=seed)
        size = (evaluation.CLIP_FRAMES, d["fps"], d["height"], d["width"])
        if a.candidates > 1:
            best, _ = pipe.best_of(prompt, *size, opts, a.candidates)
            frames, seed = best.frames, best.seed
        else:
            frames = pipe(prompt, *size, opts)
        video = evaluation.as_uint8_frames(frames)
        text = f"{prompt}  [seed {seed}: {verdict(evaluation.judge(video, prompt))}]"
        print(text, flush=True)
        rows.append(labelled_row(video, text))
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 9])
    write_atomic(a.out, png.tobytes())
    print(f"wrote {a.out}")


if __name__ == "__main__":
    run_command(main)
