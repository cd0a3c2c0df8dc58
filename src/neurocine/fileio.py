"""Atomic writes: a reader never sees a half-written file or model folder.

Every file and folder the package writes goes through :func:`atomic_path` (one file) or
:func:`atomic_dir` (a folder): the data go to a temporary sibling, which is renamed onto the
target only when writing succeeded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _remove(path: Path) -> None:
    """Remove a file or (possibly dangling) symlink if there is one."""
    if path.is_symlink() or path.exists():
        path.unlink()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    The block writes the file (or makes a symlink) at the yielded path; on an error it is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        _remove(tmp)


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``out``; it replaces ``out`` if the block succeeds.

    On an error inside the block the temporary folder is removed and ``out`` (if it existed) is
    left as it was. A single file goes through :func:`atomic_path` instead.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.replace(old)
        tmp.replace(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
