"""``neurocine preprocess {cc2017,nifti}``, ``neurocine import mindvideo``: raw data → HDF5.

Each command reads the ``preprocess:`` block of a data-module YAML (``--config``; trailing
``key=value`` overrides are relative to that block) and calls the library converter. Output is
written under a temporary name and renamed at the end; an error or an interrupt (Ctrl-C,
SIGTERM) leaves no output file.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the writer removes its temporary file."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _config_path(value: str) -> Path:
    from neurocine.config import resolve_data_module

    return resolve_data_module(value, None)


def _report(path: Path) -> None:
    from neurocine.data.schema import validate

    for line in validate(path).lines():
        print(line)


def _cc2017(args: argparse.Namespace) -> int:
    from neurocine.data.cc2017 import preprocess_cc2017
    from neurocine.data.preprocess_config import Cc2017Config, load_preprocess_config

    cfg = load_preprocess_config(Cc2017Config, _config_path(args.config), args.overrides)
    with _terminate_as_interrupt():
        path = preprocess_cc2017(
            cfg, args.root, args.subject, args.out, progress=not args.no_progress
        )
    _report(path)
    return 0


def _nifti(args: argparse.Namespace) -> int:
    from neurocine.data.nifti import preprocess_nifti
    from neurocine.data.preprocess_config import NiftiConfig, load_preprocess_config

    config = _config_path(args.config)
    cfg = load_preprocess_config(NiftiConfig, config, args.overrides)
    root = Path(args.root) if args.root else config.parent
    with _terminate_as_interrupt():
        path = preprocess_nifti(cfg, root, args.out, progress=not args.no_progress)
    _report(path)
    return 0


def _mindvideo(args: argparse.Namespace) -> int:
    from neurocine.data.mindvideo import import_mindvideo
    from neurocine.data.preprocess_config import MindVideoConfig, load_preprocess_config

    cfg = load_preprocess_config(MindVideoConfig, _config_path(args.config), args.overrides)
    with _terminate_as_interrupt():
        path = import_mindvideo(
            cfg, args.root, args.subject, args.out, progress=not args.no_progress
        )
    _report(path)
    return 0


def _common(p: argparse.ArgumentParser, config: str | None, config_help: str) -> None:
    p.add_argument("--out", required=True, help="subject HDF5 to write")
    p.add_argument("--config", default=config, required=config is None, help=config_help)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the preprocess: block")


def register(sub: argparse._SubParsersAction) -> None:
    pre = sub.add_parser("preprocess", help="convert a raw dataset to a subject HDF5")
    kinds = pre.add_subparsers(dest="dataset", required=True, metavar="DATASET")

    p = kinds.add_parser("cc2017", help="Wen et al. 2018 (Purdue release: CIFTI + mp4)")
    p.add_argument("--root", required=True, help="release folder (stimuli/, subjectN/)")
    p.add_argument("--subject", required=True, type=int, help="subject number N")
    _common(p, "cc2017", "data module name or YAML with a preprocess: block (default cc2017)")
    p.set_defaults(func=_cc2017)

    p = kinds.add_parser("nifti", help="4D NIfTI BOLD runs + one stimulus video per run")
    p.add_argument("--root", default=None, help="folder for relative paths (default: the YAML's)")
    _common(p, None, "YAML whose preprocess: block lists runs, videos and masker options")
    p.set_defaults(func=_nifti)

    imp = sub.add_parser("import", help="convert another project's preprocessed release")
    kinds = imp.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    p = kinds.add_parser("mindvideo", help="MinD-Video's cc2017 arrays (.npy)")
    p.add_argument(
        "--root",
        required=True,
        help="MinD-Video's data directory (with preprocessed/) or the folder of .npy arrays",
    )
    p.add_argument("--subject", required=True, help="subjectN (or N)")
    _common(p, "mindvideo", "data module name or YAML (default mindvideo)")
    p.set_defaults(func=_mindvideo)
