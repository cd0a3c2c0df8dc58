"""``neurocine simulate`` and ``neurocine validate``: make and check subject files."""

from __future__ import annotations

import argparse

from omegaconf import OmegaConf

from neurocine.config import SimulationConfig, merge_layer, parse_overrides


def _simulate(args: argparse.Namespace) -> int:
    from neurocine.data.simulate import simulate_subject

    cfg = merge_layer(
        OmegaConf.structured(SimulationConfig), parse_overrides(args.overrides), "overrides"
    )
    path = simulate_subject(cfg, args.out)
    print(f"wrote {path}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from neurocine.data.schema import validate

    for path in args.files:
        for line in validate(path).lines():
            print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="write the simulated fMRI–video dataset")
    p.add_argument("--out", required=True, help="output subject HDF5")
    p.add_argument("overrides", nargs="*", help="SimulationConfig key=value (e.g. snr=0.5)")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("validate", help="check subject HDF5 files against the data contract")
    p.add_argument("files", nargs="+")
    p.set_defaults(func=_validate)
