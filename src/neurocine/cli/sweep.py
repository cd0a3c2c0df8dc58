"""``neurocine sweep``: a grid of experiments over seeds from a sweep YAML."""

from __future__ import annotations

import argparse
import sys


def _sweep(args: argparse.Namespace) -> int:
    from neurocine.sweep import expand, jobs, load_spec, run_sweep

    if args.dry_run:
        spec = load_spec(args.file)
        for job in jobs(spec, expand(spec, args.file)):
            print(job.id)
        return 0
    result = run_sweep(
        args.file, workers=args.workers, progress=not args.no_progress, out_dir=args.out_dir
    )
    print(result.md_path.read_text())
    print(
        f"ran {len(result.ran)}, skipped {len(result.skipped)} finished, "
        f"failed {len(result.failed)} run(s)"
    )
    print(f"wrote {result.runs_csv_path}, {result.csv_path}, {result.md_path}, {result.plot_path}")
    if result.failed:
        first = next(r for r in result.records if r["status"] != "done")
        print(
            f"{len(result.failed)} run(s) failed; {first['id']}: {first['error']}", file=sys.stderr
        )
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of experiments over seeds from a sweep YAML (results.csv/.md, plots)",
        description="Validates every point against the config schema before running; runs "
        "already finished are skipped on a re-run; a failing run is recorded and the others go "
        "on (exit 1 when any failed).",
    )
    p.add_argument("file", help="sweep YAML (experiments/sweeps/<name>.yaml)")
    p.add_argument("--dry-run", action="store_true", help="validate and list the runs only")
    p.add_argument("--out-dir", default=None, help="replaces the sweep file's out_dir")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs at once (local: processes with cores/N threads each, GPU k for worker k; "
        "submitit launchers: jobs in flight; default 1 / all)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_sweep)
