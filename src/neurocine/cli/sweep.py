"""``neurocine sweep``: a grid of experiments from a sweep YAML."""

from __future__ import annotations

import argparse


def _sweep(args: argparse.Namespace) -> int:
    from neurocine.sweep import expand, load_spec, run_sweep

    if args.dry_run:
        spec = load_spec(args.file)
        for point in expand(spec, args.file):
            print(point.id)
        return 0
    result = run_sweep(args.file, progress=not args.no_progress)
    print(result.md_path.read_text())
    print(f"ran {len(result.ran)}, skipped {len(result.skipped)} finished point(s)")
    print(f"wrote {result.csv_path}, {result.md_path} and {result.plot_path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of experiments from a sweep YAML (results.csv/.md, plot.png)",
        description="Validates every point against the config schema before running; points "
        "already finished are skipped on a re-run.",
    )
    p.add_argument("file", help="sweep YAML (experiments/sweeps/<name>.yaml)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the points only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_sweep)
