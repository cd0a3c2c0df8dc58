"""``neurocine train-evaluator``: the n-way classifier of simulated data."""

from __future__ import annotations

import argparse

from neurocine.cli.common import add_config_arguments


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


def register(sub: argparse._SubParsersAction) -> None:
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
