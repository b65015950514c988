"""How much of a held-out wording can the text encoder's states carry at all? A probe reads the scene back.

    python bench/wording_probe.py [--scenes 4000] [--heldout 600] [--steps 2000] [--json FILE]

The stages read a prompt only through the frozen text encoder's token states (MiniLM for the embedded
default). This trains a small probe on those states, as the stages are trained: on training scenes worded in
the template and the training phrasings (``semanticgen_world/wording.py``), to name the backdrop's colour and
kind and each object's colour, shape, size word and motion (three queries cross-attending over the tokens,
the way the stages' cross-attention reads them). Then it reads held-out scenes, in the template and in the
held-out paraphrases. Whatever the probe cannot read back from a paraphrase, a stage trained the same way
cannot be expected to follow: it is the text encoder's ceiling, not the stages'. Object colours are split by
whether the paraphrase kept the colour's plain name ("a purple orb") or used a held-out synonym ("a lilac
orb"). About 4 min on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semanticgen_core.errors import run_command  # noqa: E402
from semanticgen_core.text_encoders import MiniLMTextEncoder  # noqa: E402
from semanticgen_world import evaluation as ev, wording, world  # noqa: E402

FRAMES = 33
SIZES = ("small", None, "large")
# (query, slot, classes): query 0 reads the backdrop and the object count, queries 1 and 2 the objects
SLOTS = [(0, "backdrop colour", world.BACKGROUND_COLORS), (0, "backdrop kind", world.BACKGROUNDS),
         (0, "objects", (0, 1, 2))] + [
    (k + 1, f"{what} {k + 1}", classes) for k in range(2) for what, classes in
    (("colour", world.OBJECT_COLORS), ("shape", world.SHAPES), ("size", SIZES), ("motion", world.MOTIONS))]


def _clip(seed: int) -> world.Clip:
    return world.Clip(np.zeros((1, 1, 1, 3), np.uint8), 8.0, world.sample_clip_shots(seed, FRAMES))


def labels(clip: world.Clip) -> list[int]:
    """The scene's class per slot (-100 for an object the scene does not have)."""
    shot = clip.shots[0]
    y = [world.BACKGROUND_COLORS.index(shot.background.color), world.BACKGROUNDS.index(shot.background.kind),
         len(shot.objects)]
    for k in range(2):
        o = shot.objects[k] if k < len(shot.objects) else None
        y += ([world.OBJECT_COLORS.index(o.color), world.SHAPES.index(o.shape), SIZES.index(world.size_word(o.size)),
               world.MOTIONS.index(o.motion)] if o else [-100] * 4)
    return y


class Probe(nn.Module):
    def __init__(self, text_dim: int, dim: int = 128) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim))
        self.queries = nn.Parameter(torch.randn(3, dim) * 0.02)
        layer = nn.TransformerDecoderLayer(dim, 4, 4 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, 2)
        self.heads = nn.ModuleList(nn.Linear(dim, len(classes)) for _, _, classes in SLOTS)

    def forward(self, text: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        x = self.decoder(self.queries.expand(len(text), -1, -1), self.inp(text), memory_key_padding_mask=~mask)
        return [head(x[:, q]) for (q, _, _), head in zip(SLOTS, self.heads)]


def encode(encoder: MiniLMTextEncoder, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [encoder.encode(prompts[i:i + 256]) for i in range(0, len(prompts), 256)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def read_back(probe: Probe, text, mask, y) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes [N, slots], which slots exist [N, slots])."""
    probe.eval()
    with torch.no_grad():
        pred = torch.stack([o.argmax(-1) for o in probe(text, mask)], 1)
    return pred, y != -100


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=4000, help="training scenes (default 4000)")
    p.add_argument("--captions", type=int, default=4, help="captions a training scene: the template + phrasings")
    p.add_argument("--heldout", type=int, default=600, help="held-out scenes read back (default 600)")
    p.add_argument("--steps", type=int, default=2000, help="probe training steps, batch 64 (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if min(args.scenes, args.captions, args.heldout, args.steps) < 1:
        p.error("--scenes, --captions, --heldout and --steps must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # a few training phrasings run one token past MiniLM's 32 and lose their last word (the model card)
    warnings.filterwarnings("ignore", message="Prompt .* reads only the first")
    encoder = MiniLMTextEncoder.from_pretrained()

    train = [(c, labels(clip)) for s in range(args.scenes) for clip in [_clip(s)]
             for c in wording.captions(clip, args.captions)]
    text, mask = encode(encoder, [c for c, _ in train])
    y = torch.tensor([lab for _, lab in train])
    probe = Probe(encoder.dim)
    opt = torch.optim.AdamW(probe.parameters(), 1e-3, weight_decay=0.01)
    for _ in range(args.steps):
        idx = torch.randint(len(y), (64,))
        loss = sum(F.cross_entropy(o, y[idx, j], ignore_index=-100) for j, o in enumerate(probe(text[idx], mask[idx])))
        opt.zero_grad()
        loss.backward()
        opt.step()

    clips = [_clip(world.HELDOUT_SEED_START + i) for i in range(args.heldout)]
    y = torch.tensor([labels(c) for c in clips])
    figures: dict[str, dict] = {}
    for name in ev.WORDINGS:
        prompts = [ev.prompt_of(c, name) for c in clips]
        pred, valid = read_back(probe, *encode(encoder, prompts), y)
        right = (pred == y) & valid
        rows = {slot: float(right[:, j].sum() / valid[:, j].sum()) for j, (_, slot, _) in enumerate(SLOTS)}
        rows["every slot of the scene"] = float(((pred == y) | ~valid).all(1).float().mean())
        # object colours, by whether the prompt kept the colour's plain name
        plain = {True: [0, 0], False: [0, 0]}
        for i, (clip, prompt) in enumerate(zip(clips, prompts)):
            for k, o in enumerate(clip.shots[0].objects):
                kept = re.search(rf"\b{o.color}\b", prompt) is not None
                plain[kept][0] += int(right[i, 3 + 4 * k])
                plain[kept][1] += 1
        rows["object colour, plain name"] = plain[True][0] / max(plain[True][1], 1)
        if plain[False][1]:
            rows["object colour, held-out synonym"] = plain[False][0] / plain[False][1]
        figures[name] = {"accuracy": rows, "objects": {"plain name": plain[True][1], "synonym": plain[False][1]}}

    command = "python bench/wording_probe.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{command.strip()}\nprobe on {encoder.name}'s token states, trained on {len(train)} captions of "
          f"{args.scenes} training scenes; read back from {args.heldout} held-out scenes")
    names = list(figures["template"]["accuracy"]) + ["object colour, held-out synonym"]
    print(f"  {'':<34}" + "".join(f"{n:>12}" for n in ev.WORDINGS))
    for row in dict.fromkeys(names):
        cells = [figures[n]["accuracy"].get(row) for n in ev.WORDINGS]
        print(f"  {row:<34}" + "".join(f"{'-' if v is None else f'{v:.1%}':>12}" for v in cells))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command.strip(), "text_encoder": encoder.name,
                                         "training_captions": len(train), **figures}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
