"""``neurocine brain-map --run RUN --out DIR``: where on the cortex a run's encoder looks."""

from __future__ import annotations

import argparse

from neurocine.analysis.attribution import METHODS


def _brain_map(args: argparse.Namespace) -> int:
    from neurocine.analysis.brain_maps import write_brain_maps
    from neurocine.analysis.runs import load_run

    result = write_brain_maps(
        load_run(args.run),
        args.out,
        methods=tuple(args.method or METHODS),
        split=args.split,
        n_windows=args.windows,
        mesh=args.mesh,
    )
    for method, seconds in result.seconds.items():
        auc = f", signal-vs-noise AUC {result.auc[method]:.3f}" if result.auc else ""
        print(f"{method}: {seconds:.1f} s{auc}")
    print(f"wrote {len(result.files)} files under {result.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "brain-map",
        help="per-voxel importance maps of a run's fMRI encoder (NIfTI, CIFTI, surfaces, table)",
        description="Attribute a stage-1 (or stage-2) run's contrastive score to voxels with "
        f"each method ({', '.join(METHODS)}) on the test windows (activation_pattern: each "
        "voxel's covariance with the encoder's embedding, Haufe et al. 2014), and write per "
        "method: the map "
        "(map.npy), a region table (regions.md), fs_LR 32k surface views (surface.png, "
        "surface.html), a NIfTI image and slice / glass-brain PNGs for volume data, a CIFTI "
        "dscalar for HCP grayordinates; summary.json holds timings and, for simulated data, "
        "each method's ROC AUC of signal vs noise voxels.",
    )
    p.add_argument("--run", required=True, help="run directory (runs/<name>/<timestamp>)")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    p.add_argument(
        "--method", action="append", choices=METHODS, help="repeatable; default: every method"
    )
    p.add_argument("--split", default="test", help="split whose windows are attributed")
    p.add_argument("--windows", type=int, default=None, help="first N windows (default: all)")
    p.add_argument(
        "--mesh", default="inflated", help="fs_LR 32k mesh: inflated, very_inflated, midthickness"
    )
    p.set_defaults(func=_brain_map)
