"""``neurocine train stage1|stage2``: train one NeuroCine stage from an experiment YAML."""

from __future__ import annotations

import argparse

from neurocine.cli.common import add_config_arguments
from neurocine.config import load_config


def _train(args: argparse.Namespace) -> int:
    overrides = [f"stage={args.stage}", *args.overrides]
    if args.resume:
        overrides.append("ckpt_path=last")
    cfg = load_config(args.config, overrides)  # checked before torch and Lightning load
    from neurocine.training import fit

    run_dir = fit(cfg)
    print(f"run directory: {run_dir}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train stage 1 (contrastive encoder) or stage 2 (diffusion)")
    p.add_argument("stage", choices=["stage1", "stage2"])
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest interrupted or finished run (ckpt_path=last)",
    )
    add_config_arguments(p)
    p.set_defaults(func=_train)
