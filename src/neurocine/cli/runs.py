"""``neurocine runs list|clean``: what became of each training run (status.json)."""

from __future__ import annotations

import argparse


def _list(args: argparse.Namespace) -> int:
    from neurocine.run_status import latest_target, list_runs

    runs = list_runs(args.runs_dir, args.name)
    if not runs:
        print(f"{args.runs_dir}: no runs")
        return 0
    rows = [("experiment", "run", "status", "latest", "started", "detail")]
    for run in runs:
        latest = latest_target(run.path.parent) == run.path.resolve()
        detail = run.error or ""
        if run.state == "interrupted" and run.resumable:
            detail = f"resumable (--resume); {detail}".rstrip("; ")
        experiment = run.path.parent.relative_to(args.runs_dir).as_posix()
        rows.append(
            (experiment, run.path.name, run.state, "*" if latest else "", run.started or "", detail)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def _clean(args: argparse.Namespace) -> int:
    from neurocine.run_status import clean_failed

    removed = clean_failed(args.runs_dir, args.name, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        print(f"{verb} {path}")
    print(f"{verb} {len(removed)} failed run(s)")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", default=None, help="experiment (default: all under DIR)")
    p.add_argument("--runs-dir", default="runs", help="the runs_dir of the experiments (runs)")


def register(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser("runs", help="list training runs with their status, remove failed ones")
    kinds = runs.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = kinds.add_parser(
        "list",
        help="every run: experiment, run, status (running, finished, failed, interrupted)",
        description="A run whose process is gone without a word (SIGKILL, power loss) shows as "
        "interrupted when it has a last.ckpt (--resume continues it), else as failed. '*' "
        "marks the run that runs/<name>/latest points at.",
    )
    _common(p)
    p.set_defaults(func=_list)

    p = kinds.add_parser("clean", help="remove failed runs (--failed)")
    _common(p)
    p.add_argument("--failed", action="store_true", required=True, help="remove failed runs")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    p.set_defaults(func=_clean)
