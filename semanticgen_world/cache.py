"""Encode procedural-world clips into a feature cache, as ``feature_cache`` does for a folder of videos.

    python -m semanticgen_world.cache --out runs/cache --preset embedded --clips 4000 --captions 4 \
        --vae runs/vae/vae.safetensors --encoder semanticgen_core/weights/semantic_encoder.safetensors --seconds 4

The world is one data source among others: the same cache format, builder and trainer as real videos.
"""

from __future__ import annotations

from semanticgen_core import feature_cache
from semanticgen_core.errors import run_command

from .world_source import WorldSource


def main(argv: list[str] | None = None) -> None:
    p = feature_cache.arguments(__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, required=True, help="world clips (training seeds from --first-seed)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--captions", type=int, default=4,
                   help="captions per clip: the template caption, then training phrasings (semanticgen_world.wording)")
    p.add_argument("--objects", type=int, choices=(1, 2),
                   help="only scenes of this many objects (seeds from --first-seed whose scenes have another number "
                        "are passed over): more of the scenes a model gets least of")
    p.set_defaults(preset="embedded", seconds=4.0)
    args = p.parse_args(argv)
    feature_cache.run(args, lambda spec: WorldSource(args.clips, spec, args.first_seed, args.captions, args.objects))


if __name__ == "__main__":
    run_command(main)
