"""The ``neurocine`` command: parses arguments and calls library functions.

Each sub-module registers its sub-commands; a :class:`~neurocine.errors.NeuroCineError` is
printed as one line (``neurocine: error: …``) with exit status 2, a traceback only with
``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NoReturn

from neurocine import __version__
from neurocine.config import ConfigWarning
from neurocine.errors import NeuroCineError

# Modules under neurocine.cli that define ``register(subparsers)``.
COMMAND_MODULES = (
    "data",
    "train",
    "embed",
    "preprocess",
    "pretrain",
    "reconstruct",
    "evaluate",
    "evaluator",
    "sweep",
    "demo",
    "runs",
    "brain_map",
    "pipeline",
)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (``neurocine: error: …``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"neurocine: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="neurocine", description="Decode watched videos from fMRI (NeuroCine)."
    )
    parser.add_argument("--version", action="version", version=f"neurocine {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"neurocine.cli.{name}").register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Config warnings as one line (``neurocine: warning: …``), others as Python shows them."""
    if issubclass(category, ConfigWarning):
        print(f"neurocine: warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neurocine`` console script; returns the exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warnings.showwarning = _show_warning
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # ``key=value`` overrides may follow options (``--config X a=1``), which argparse alone
    # cannot split once the positional list has matched; anything else is an error.
    if extra and hasattr(args, "overrides") and not any(e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        result = args.func(args)
    except NeuroCineError as exc:
        if args.debug:
            traceback.print_exc()
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"neurocine: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neurocine: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen input: still one line unless --debug
        if args.debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"neurocine: error: unexpected {type(exc).__name__}: {first} (--debug for details)",
            file=sys.stderr,
        )
        return 1
    return int(result or 0)
