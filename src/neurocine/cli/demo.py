"""``neurocine demo``: simulate → embed → stage 1 → stage 2 → reconstruct → evaluate."""

from __future__ import annotations

import argparse

from neurocine.cli.common import add_config_arguments


def _demo(args: argparse.Namespace) -> int:
    from neurocine.demo import run_demo

    run_demo(args.config, args.overrides, progress=not args.no_progress)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate → embed → stage 1 → stage 2 → reconstruct → evaluate, end to end",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(p, default="experiments/demo.yaml")
    p.set_defaults(func=_demo)
