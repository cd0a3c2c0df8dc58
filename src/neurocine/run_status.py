"""What became of each training run: ``status.json``, ``neurocine runs list`` and ``runs clean``.

The training driver writes ``<run>/status.json`` when it starts (``running``, with its process id,
host and the process's start time) and again when the run ends: ``finished``, ``failed`` (an
error, with its one-line message) or ``interrupted`` (Ctrl-C, SIGTERM). A process killed with
SIGKILL cannot write; its run still says ``running``, and :func:`read_status` reads it as
``interrupted`` when the process is gone and a ``checkpoints/last.ckpt`` exists (``--resume``
continues it), ``failed`` when it died before its first checkpoint.

``runs/<name>/latest`` points at the run that finished last (docs/design.md §9); ``--resume``
(``ckpt_path=last``) continues the newest run that is interrupted or finished.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from neurocine.errors import CheckpointError
from neurocine.fileio import atomic_path

STATUS_FILE = "status.json"
STATES = ("running", "finished", "failed", "interrupted")
LAST_CKPT = Path("checkpoints") / "last.ckpt"


@dataclass(frozen=True)
class RunStatus:
    """One run directory and what became of it.

    Attributes
    ----------
    path : Path
    state : str
        One of :data:`STATES`, or ``unknown`` for a run written before ``status.json`` existed.
    error : str or None
        The one-line error of a failed run, or why an unfinished run stopped.
    resumable : bool
        It has a ``last.ckpt`` and is interrupted or finished (``--resume`` can continue it).
    started : str or None
        When the (last segment of the) run started, ISO 8601.
    """

    path: Path
    state: str
    error: str | None = None
    resumable: bool = False
    started: str | None = None


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` is still the process that wrote the status (not a reused id)."""
    if Path("/proc").is_dir():
        now = _process_start(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_status(run_dir: str | Path, state: str, error: str | None = None) -> None:
    """Record ``state`` (and, for a failure, its one-line ``error``) in ``run_dir/status.json``."""
    if state not in STATES:
        raise ValueError(f"run state '{state}': expected one of {STATES}")
    run_dir = Path(run_dir)
    previous = _read_json(run_dir / STATUS_FILE) or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record = {"state": state, "started": now if state == "running" else previous.get("started")}
    if state == "running":
        record.update(
            pid=os.getpid(), host=socket.gethostname(), pid_start=_process_start(os.getpid())
        )
    else:
        record["ended"] = now
    if error:
        record["error"] = error.strip().splitlines()[0][:500] if error.strip() else error
    with atomic_path(run_dir / STATUS_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=2))


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_status(run_dir: str | Path) -> RunStatus:
    """What became of ``run_dir`` (module docs); a dead ``running`` process is resolved here."""
    run_dir = Path(run_dir)
    has_ckpt = (run_dir / LAST_CKPT).is_file()
    record = _read_json(run_dir / STATUS_FILE)
    if record is None:
        return RunStatus(run_dir, "unknown", resumable=has_ckpt)
    state, error, started = record.get("state"), record.get("error"), record.get("started")
    if state == "running" and record.get("host") == socket.gethostname():
        pid = record.get("pid")
        if not isinstance(pid, int) or not _alive(pid, record.get("pid_start")):
            state = "interrupted" if has_ckpt else "failed"
            error = f"process {pid} ended without a word (killed?)" + (
                "" if has_ckpt else " before its first checkpoint"
            )
    resumable = has_ckpt and state in ("interrupted", "finished")
    return RunStatus(run_dir, str(state), error, resumable, started)


def is_run_dir(path: Path) -> bool:
    """A directory the training driver made (``config.yaml`` beside ``status.json`` or
    ``environment.json``)."""
    return (path / "config.yaml").is_file() and (
        (path / STATUS_FILE).is_file() or (path / "environment.json").is_file()
    )


def list_runs(runs_dir: str | Path, name: str | None = None) -> list[RunStatus]:
    """Every run under ``runs_dir`` (or under ``runs_dir/name``), oldest first per experiment."""
    root = Path(runs_dir) / name if name else Path(runs_dir)
    found = []
    for directory, subdirs, _ in os.walk(root):
        path = Path(directory)
        if is_run_dir(path):
            found.append(path)
            subdirs.clear()  # a run's own folders (samples/, encoder/) hold no runs
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "latest")
    return [read_status(path) for path in sorted(found)]


def latest_target(experiment_dir: Path) -> Path | None:
    """The run ``experiment_dir/latest`` points at, or None."""
    link = experiment_dir / "latest"
    return link.resolve() if link.exists() else None


def resumable_run(runs_dir: str | Path, name: str) -> Path:
    """The newest run of experiment ``name`` that ``--resume`` can continue.

    Interrupted or finished runs qualify (and runs from before ``status.json``), newest first by
    their timestamped name; failed and still-running ones do not.
    """
    base = Path(runs_dir) / name
    runs = [r for r in list_runs(base) if r.path.parent == base] if base.is_dir() else []
    for run in reversed(runs):
        if run.resumable:
            return run.path.resolve()
    skipped = [f"{r.path.name} ({r.state})" for r in runs]
    detail = f"; not resumable: {', '.join(skipped)}" if skipped else ""
    raise CheckpointError(
        f"{base}: no previous run of experiment '{name}' to resume (an interrupted or finished "
        f"run with checkpoints/last.ckpt){detail}; resume another one with ckpt_path=FILE"
    )


def clean_failed(
    runs_dir: str | Path, name: str | None = None, dry_run: bool = False
) -> list[Path]:
    """Remove the failed runs under ``runs_dir`` (never one that ``latest`` points at).

    Returns
    -------
    list of Path
        The run directories removed (or that would be, with ``dry_run``).
    """
    removed = []
    for run in list_runs(runs_dir, name):
        if run.state != "failed" or latest_target(run.path.parent) == run.path.resolve():
            continue
        removed.append(run.path)
        if not dry_run:
            shutil.rmtree(run.path)
    return removed
