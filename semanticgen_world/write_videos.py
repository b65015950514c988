"""Write procedural-world clips as a folder of captioned videos (``world_<seed>.mp4`` + ``world_<seed>.txt``).

    python -m semanticgen_world.write_videos --out DIR --clips N [--first-seed 0] [--seconds 4] [--fps 8] [--size 64]

The folder is a real-video dataset for ``semanticgen_core.video_data`` (and the trainer): what is on
screen and its caption are known. Files already there are kept, so an interrupted run can be resumed.
"""

from __future__ import annotations

import argparse

from semanticgen_core.errors import run_command

from .world_source import write_videos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m semanticgen_world.write_videos",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the videos and captions into")
    parser.add_argument("--clips", type=int, required=True, help="number of videos (one per seed)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first video (default 0)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each video (default 4)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate (default 8)")
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels (default 64)")
    args = parser.parse_args(argv)
    written = write_videos(args.out, args.clips, seconds=args.seconds, fps=args.fps, height=args.size,
                           width=args.size, first_seed=args.first_seed)
    videos = sum(p.suffix == ".mp4" for p in written)
    print(f"wrote {videos} videos ({len(written)} files) to {args.out}; "
          f"{args.clips - videos} of {args.clips} were already there")
    return 0


if __name__ == "__main__":
    run_command(main)
