"""``neurocine evaluate``: score a run's reconstructions beside the baselines."""

from __future__ import annotations

import argparse


def _evaluate(args: argparse.Namespace) -> int:
    from neurocine.evaluation import evaluate_run

    evaluation = evaluate_run(
        args.run, args.overrides, out_dir=args.out, progress=not args.no_progress
    )
    print(evaluation.table)
    print(f"wrote {evaluation.json_path} and {evaluation.md_path}")
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
