"""``neurocine pipeline``: a real dataset → preprocessed file → … → metrics table, resumable."""

from __future__ import annotations

import argparse


def _pipeline(args: argparse.Namespace) -> int:
    from neurocine.pipeline import run_pipeline

    result = run_pipeline(args.config, args.overrides, progress=not args.no_progress)
    print()
    print(result.table)
    print(f"stage 2 run (samples/, metrics.json, metrics.md): {result.stage2_run}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="data → embed → stage 1 → stage 2 → reconstruct → evaluate; skips finished steps",
        description="Runs the steps of a pipeline YAML (experiments/cc2017_subject1.yaml) whose "
        "outputs are not complete yet, printing each step's output folder; a rerun continues "
        "where the last one stopped. key=value arguments: source.*, models.*, name … change the "
        "pipeline spec, any other key applies to both stages.",
    )
    p.add_argument("--config", required=True, help="pipeline YAML (experiments/<name>.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key=value (source.root=DIR, models.clip=DIR, …)")
    p.set_defaults(func=_pipeline)
    register_rehearse(sub)


def _rehearse(args: argparse.Namespace) -> int:
    from neurocine.rehearsal.run import rehearse

    rehearse(args.out, args.config, args.overrides, progress=not args.no_progress)
    return 0


def register_rehearse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rehearse",
        help="the real cc2017 chain on generated data and random-weight models (wiring only)",
        description="Writes a miniature cc2017 release and random-weight CLIP / Stable "
        "Diffusion + AnimateDiff / ViT / VideoMAE directories under --out, then runs "
        "`neurocine pipeline` over them. Proves wiring, not quality.",
    )
    p.add_argument("--out", default="rehearsal", help="work folder (default rehearsal/)")
    p.add_argument("--config", default="experiments/rehearsal.yaml", help="pipeline YAML")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="key=value, as for neurocine pipeline")
    p.set_defaults(func=_rehearse)
