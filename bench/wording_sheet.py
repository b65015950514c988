"""Contact sheet of the same held-out scenes prompted in both wordings: per scene, the template caption's
clip and the paraphrase's (``semanticgen_world/wording.py``), each row every 4th frame of a 4 s clip,
labelled with the prompt and the detector's verdict on its first object.

    python bench/wording_sheet.py --scenes 6 --out runs/wording_sheet.png [--stage1 FILE --stage2 FILE]

Both rows of a scene use the same sampling seed, so they differ only by the prompt's wording.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.prompt_sheet import labelled_row, verdict  # noqa: E402
from semanticgen_core.checkpoints import write_atomic  # noqa: E402
from semanticgen_core.errors import run_command  # noqa: E402
from semanticgen_core.pipeline import SemanticGenPipeline  # noqa: E402
from semanticgen_core.sampling import SamplingOptions  # noqa: E402
from semanticgen_world import evaluation  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/wording_sheet.png"))
    p.add_argument("--scenes", type=int, default=6, help="held-out scenes (world seeds from the first held-out one)")
    p.add_argument("--first", type=int, default=0, help="skip this many held-out scenes")
    p.add_argument("--stage1", type=Path, help="a stage-1 file in place of the embedded default's")
    p.add_argument("--stage2", type=Path, help="a stage-2 file in place of the embedded default's")
    p.add_argument("--steps", type=int, default=20, help="denoising steps of each stage")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    pipe = SemanticGenPipeline.embedded(stage1=a.stage1, stage2=a.stage2)
    d = pipe.preset.defaults
    clips = evaluation.heldout_clips(a.scenes, evaluation.world.HELDOUT_SEED_START + a.first)
    rows = []
    for seed, clip in enumerate(clips):
        for wording in evaluation.WORDINGS:
            prompt = evaluation.prompt_of(clip, wording)
            opts = SamplingOptions(steps=a.steps, guidance=float(d["guidance"]), seed=seed)
            frames = evaluation.as_uint8_frames(pipe(prompt, 33, float(d["fps"]), int(d["height"]), int(d["width"]), opts))
            label = f"{prompt}  [{verdict(evaluation.judge(frames, prompt))}]"
            rows.append(labelled_row(frames, label))
            print(label, flush=True)
    sheet = np.concatenate(rows)
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(a.out, png.tobytes())
    print(f"wrote {a.out}")


if __name__ == "__main__":
    run_command(main)
