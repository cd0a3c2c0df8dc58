"""``neurocine evaluate``, ``train-evaluator``, ``sweep`` and ``demo``: results of runs."""

from __future__ import annotations

import argparse
import sys

from neurocine.cli.common import add_config_arguments


def _evaluate(args: argparse.Namespace) -> int:
    from neurocine.evaluation import evaluate_run

    evaluation = evaluate_run(
        args.run, args.overrides, out_dir=args.out, progress=not args.no_progress
    )
    print(evaluation.table)
    print(f"wrote {evaluation.json_path} and {evaluation.md_path}")
    return 0


def _train_evaluator(args: argparse.Namespace) -> int:
    from neurocine.config import load_config
    from neurocine.evaluator import train_evaluator

    cfg = load_config(args.config, args.overrides)
    out = args.out or cfg.evaluation.evaluator_dir
    report = train_evaluator(
        cfg.data.path, cfg.evaluation.evaluator, out, progress=not args.no_progress
    )
    for line in report.lines():
        print(line)
    return 0


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


def _demo(args: argparse.Namespace) -> int:
    from neurocine.demo import run_demo

    run_demo(args.config, args.overrides, progress=not args.no_progress)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a stage-2 run's reconstructions beside the baselines (metrics.json + table)",
        description="Rows: NeuroCine, the mean training frame, ridge fMRI → pixels and the "
        "oracle (stage 2 on fmri_clean). Metrics: SSIM, PSNR, frame/video-based n-way top-1, "
        "CLIP similarity. Reads RUN/samples/reconstructions.h5 (neurocine reconstruct --run RUN "
        "--out RUN/samples) or a reconstruction folder; writes metrics.json and metrics.md.",
    )
    p.add_argument("--run", required=True, help="stage-2 run directory or reconstruction folder")
    p.add_argument("--out", default=None, help="output folder (default: the run directory)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key=value (evaluation.baselines=[mean_frame], …)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "train-evaluator",
        help="train the small frame/video classifier of simulated data (n-way metrics)",
        description="Trains on the ground-truth training clips and labels of data.path and "
        "saves it to <data.path>.evaluator/ (or evaluation.evaluator_dir / --out).",
    )
    p.add_argument("--out", default=None, help="output folder (default: <data.path>.evaluator)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p)
    p.set_defaults(func=_train_evaluator)

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

    p = sub.add_parser(
        "demo",
        help="simulate → embed → stage 1 → stage 2 → reconstruct → evaluate, end to end",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(p, default="experiments/demo.yaml")
    p.set_defaults(func=_demo)
