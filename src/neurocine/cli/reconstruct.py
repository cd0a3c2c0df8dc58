"""``neurocine reconstruct --run DIR --out DIR``: videos from fMRI with a trained stage-2 run."""

from __future__ import annotations

import argparse


def _reconstruct(args: argparse.Namespace) -> int:
    from neurocine.reconstruct import reconstruct

    result = reconstruct(
        args.run,
        args.out,
        split=args.split,
        limit=args.limit,
        overrides=args.overrides,
        device=args.device,
        progress=not args.no_progress,
        videos=not args.no_videos,
    )
    print(
        f"{result.n_videos} reconstructions ({result.seconds_per_video:.2f} s/video) → "
        f"{result.h5_path}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="sample videos from fMRI with a stage-2 run (mp4, gif, grid PNG, reconstructions.h5)",
    )
    p.add_argument("--run", required=True, help="stage-2 run directory (e.g. runs/stage2/latest)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--limit", type=int, default=None, help="reconstruct only the first N samples")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-videos", action="store_true", help="write only reconstructions.h5")
    p.add_argument("overrides", nargs="*", help="key=value overrides (sampling.steps=50, …)")
    p.set_defaults(func=_reconstruct)
