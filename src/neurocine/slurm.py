"""SLURM preemption: save on the warning signal, requeue, and continue the same run on restart.

SLURM sends a signal some time before a job's limit when asked to (``sbatch --signal=USR1@90``).
Lightning's :class:`~lightning.fabric.plugins.environments.SLURMEnvironment` with
``auto_requeue=True`` handles it (``_SignalConnector._slurm_sigusr_handler_fn``): it writes
``<run_dir>/hpc_ckpt_<k>.ckpt`` (model, optimizers, loops, callbacks, the DataModule's state)
and calls ``scontrol requeue $SLURM_JOB_ID``; a failed requeue (no ``scontrol``, outside
SLURM) is logged as a warning and training goes on. SLURM then stops the job and later starts
the same command again with the same ``SLURM_JOB_ID``.

This module adds what Lightning leaves to the caller: the restarted command must continue the
*same* run directory. Rank 0 records its run directory as ``runs/<name>/.slurm-<job id>`` (a
link); a later start of that job finds it and resumes from the newest of its HPC checkpoint and
``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from neurocine.errors import ConfigError


def job_id() -> str | None:
    """``$SLURM_JOB_ID`` (``<array job>_<task>`` for array jobs), None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_signal(trainer: DictConfig) -> signal.Signals:
    """``trainer.requeue_signal`` (``"SIGUSR1"``/``"SIGUSR2"``, checked by the schema)."""
    return signal.Signals[str(trainer.requeue_signal)]


def cluster_plugins(trainer: DictConfig) -> list:
    """Trainer plugins: a SLURM environment that saves and requeues, when running under SLURM.

    ``trainer.slurm_requeue=false`` keeps Lightning's SLURM environment without auto-requeue.
    Outside SLURM (no ``SLURM_NTASKS``, or an interactive job) nothing is added.
    """
    if not SLURMEnvironment.detect():
        return []
    return [
        SLURMEnvironment(
            auto_requeue=bool(trainer.slurm_requeue), requeue_signal=requeue_signal(trainer)
        )
    ]


def _link(runs_dir: str | Path, name: str, job: str) -> Path:
    if not re.fullmatch(r"[0-9_]+", job):
        raise ConfigError(f"SLURM_JOB_ID '{job}': expected digits (and '_' for array jobs)")
    return Path(runs_dir) / name / f".slurm-{job}"


def record_run(run_dir: Path, runs_dir: str | Path, name: str) -> None:
    """Point ``runs/<name>/.slurm-<job id>`` at ``run_dir`` (no-op outside SLURM)."""
    job = job_id()
    if job is None:
        return
    link = _link(runs_dir, name, job)
    if link.is_symlink() and link.resolve() == run_dir.resolve():
        return
    tmp = link.with_name(f"{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(link)


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest (by modification time) of ``<run>/hpc_ckpt_<k>.ckpt`` (highest ``k``) and
    ``<run>/checkpoints/last.ckpt``; None when neither exists."""
    hpc = sorted(run_dir.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    existing = [p for p in [run_dir / "checkpoints" / "last.ckpt", *hpc[-1:]] if p.is_file()]
    return max(existing, key=lambda p: p.stat().st_mtime_ns) if existing else None


def requeued_run(runs_dir: str | Path, name: str) -> tuple[Path, str] | None:
    """The run directory and :func:`resume_checkpoint` of this SLURM job's earlier start."""
    job = job_id()
    if job is None:
        return None
    link = _link(runs_dir, name, job)
    if not link.is_symlink() or not link.exists():
        return None
    run_dir = link.resolve()
    checkpoint = resume_checkpoint(run_dir)
    return (run_dir, str(checkpoint)) if checkpoint is not None else None
