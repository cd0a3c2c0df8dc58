"""Where the project is, so runs and their data resolve from any working folder.

A run records paths relative to the folder it was started in, the project root
(``data/sim/subject1.h5``, ``runs/demo/stage1/latest/encoder``); Jupyter starts a notebook's
kernel in the notebook's own folder (``notebooks/``). :func:`resolve` reads such a path against
the project root, which is ``$NEUROCINE_ROOT`` when set, else the nearest folder at or above the
working folder holding ``pyproject.toml`` or ``Makefile`` (a checkout), else the nearest holding
``runs/``, else the working folder itself.

A run or data file that is not there raises :class:`MissingRunError`, whose message names the
command that makes it (``make demo``, ``make sweep SWEEP=mask_ratio``); IPython shows it as that
one line instead of a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from neurocine.errors import CheckpointError

ROOT_ENV = "NEUROCINE_ROOT"
PROJECT_MARKERS = ("pyproject.toml", "Makefile")
RUNS_DIR = "runs"


class MissingRunError(CheckpointError):
    """A run, sweep or data file is not there; the message names the command that makes it."""

    def _render_traceback_(self) -> list[str]:
        # IPython prints these lines in place of the traceback (one line in the cell's output)
        return [f"{type(self).__name__}: {self}"]


def project_root(start: str | Path | None = None) -> Path:
    """The project root seen from ``start`` (default: the working folder).

    ``$NEUROCINE_ROOT`` wins when set; then the nearest folder at or above ``start`` with
    ``pyproject.toml`` or ``Makefile``; then the nearest with a ``runs/`` folder; else ``start``.
    """
    env = os.environ.get(ROOT_ENV)
    if env:
        return Path(env).expanduser().resolve()
    here = Path(start if start is not None else Path.cwd()).resolve()
    folders = [here, *here.parents]
    for markers in (PROJECT_MARKERS, (RUNS_DIR,)):
        for folder in folders:
            if any((folder / m).exists() for m in markers):
                return folder
    return here


def resolve(path: str | Path, root: Path | None = None) -> Path:
    """``path`` as is when absolute, else against ``root`` (default :func:`project_root`)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return (root if root is not None else project_root()) / path


def relative(path: str | Path, root: Path | None = None) -> str:
    """``path`` relative to the project root when it lies inside it (for printing)."""
    path = Path(path)
    root = root if root is not None else project_root()
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def making_command(path: str | Path) -> str:
    """The command that makes a run, sweep or data file at the project-relative ``path``.

    ``runs/demo/…`` → ``make demo``; ``runs/sweeps/<name>/…`` → ``make sweep SWEEP=<name>``;
    ``runs/stage1/…`` → ``make train-stage1`` (``stage2``: ``make train-stage2``);
    ``data/sim/…`` → ``make simulate``; anything else: ``neurocine train``.
    """
    parts = Path(path).parts
    if len(parts) >= 2 and parts[0] == RUNS_DIR:
        if parts[1] == "demo":
            return "make demo"
        if parts[1] == "sweeps" and len(parts) >= 3:
            return f"make sweep SWEEP={parts[2]}"
        if parts[1] in ("stage1", "stage2"):
            return f"make train-{parts[1]}"
    if parts[:2] == ("data", "sim"):
        return "make simulate"
    return "neurocine train stage1|stage2 --config …"


def require(
    path: str | Path, what: str, marker: str | None = None, root: Path | None = None
) -> Path:
    """Resolve ``path`` against ``root`` (default :func:`project_root`) and check it (or
    ``<path>/<marker>``) exists.

    Raises
    ------
    MissingRunError
        One line: what is missing, where, and the command that makes it.
    """
    root = root if root is not None else project_root()
    full = resolve(path, root)
    target = full / marker if marker else full
    if target.exists():
        return full
    shown = relative(full, root)
    reason = f"{what} not found" if not full.exists() else f"not a {what} (no {marker})"
    raise MissingRunError(
        f"{shown}: {reason} under the project root {root}; make it with `{making_command(shown)}`"
    )
