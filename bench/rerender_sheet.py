"""Contact sheet of the embedded default's stage 2 + VAE on held-out world clips.

For each clip, three rows of every 4th frame: the clip, its VAE reconstruction, and stage 2's render of
the plan encoded from the clip (semantic encoder + compressor), under the clip's own caption. It shows
how much of the picture the VAE and stage 2 each get right.

    python bench/rerender_sheet.py --out docs/img/embedded_rerender.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semanticgen_world.world import HELDOUT_SEED_START, sample_clip  # noqa: E402
from semanticgen_core.embedded import weights_path  # noqa: E402
from semanticgen_core.errors import run_command  # noqa: E402
from semanticgen_world.evaluation import as_uint8_frames  # noqa: E402
from semanticgen_core.pipeline import SemanticGenPipeline  # noqa: E402
from semanticgen_core.sampling import SamplingOptions  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("docs/img/embedded_rerender.png"))
    p.add_argument("--seeds", type=int, nargs="+", default=[HELDOUT_SEED_START + k for k in (3, 10, 21)])
    p.add_argument("--steps", type=int, help="stage 2's denoising steps (default: the model's)")
    a = p.parse_args()
    torch.set_num_threads(1)
    pipe = SemanticGenPipeline.from_files(None, weights_path("stage2"), weights_path("vae"),
                                          weights_path("semantic_encoder"))
    rows = []
    for seed in a.seeds:
        clip = sample_clip(seed, 33, 64, 64, 8.0)
        frames = torch.from_numpy(clip.frames).float() / 255
        plan = pipe.encode_video(frames, 8.0, prompt=clip.caption)
        opts = SamplingOptions(steps=a.steps or pipe.preset.defaults["steps"], guidance=pipe.preset.defaults["guidance"],
                               seed=0)
        render = pipe.decode(pipe.render_latents(plan, opts), 33)
        recon = pipe.vae.decode(pipe.vae.encode(frames)[0], 33)
        print(f"seed {seed}: {clip.caption}")
        for video in (clip.frames, as_uint8_frames(recon), as_uint8_frames(render)):
            rows.append(np.concatenate(list(video[::4]), axis=1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(a.out), cv2.cvtColor(np.concatenate(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {a.out}")


if __name__ == "__main__":
    run_command(main)
