"""The training driver behind ``neurocine train``: run directory, DataModule, Trainer, export.

A run lives in ``runs/<name>/<timestamp>/`` (docs/design.md §9) with ``config.yaml`` (the resolved
config), ``environment.json`` (package versions, git commit, argv), ``checkpoints/``
(``last.ckpt`` and the best by the module's monitored metric), ``logs/`` (CSV, and TensorBoard
when installed) and whatever the module exports (stage 1: ``encoder/``).
``status.json`` says whether it is running, finished, failed or interrupted
(:mod:`neurocine.run_status`). ``runs/<name>/latest`` points at the run that finished last, so
stage 2's ``encoder_ckpt`` can name ``runs/stage1/latest/encoder``; ``ckpt_path=last`` resumes
the newest interrupted or finished run.

DDP (``trainer.devices=2 trainer.strategy=ddp``) re-launches the command in child processes;
they find the run directory chosen by rank 0 in ``NEUROCINE_RUN_DIR``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from neurocine.config import check_config, save_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.errors import CheckpointError, ConfigError, NeuroCineError
from neurocine.fileio import atomic_path
from neurocine.run_status import list_runs, resumable_run, write_status

STAGES = ("stage1", "stage2")
RUN_DIR_ENV = "NEUROCINE_RUN_DIR"
CHECKPOINT_FORMAT = 1
PACKAGES = ("neurocine", "torch", "lightning", "diffusers", "transformers", "numpy", "h5py")


def is_launcher_process() -> bool:
    """True in the global rank-0 process (not in a DDP child, nor on another node)."""
    return all(int(os.environ.get(k, 0)) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """``runs/<name>/<YYYYmmdd-HHMMSS>[-k]``, created empty."""
    base = Path(runs_dir) / name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        candidate = base / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"{base}: cannot create a new run directory")


def mark_latest(run_dir: Path) -> None:
    """Point ``runs/<name>/latest`` at ``run_dir`` (replace the link atomically)."""
    link = run_dir.parent / "latest"
    with atomic_path(link) as tmp:
        tmp.symlink_to(run_dir.name)


def unmark_latest(run_dir: Path) -> None:
    """If ``latest`` points at ``run_dir`` (a resumed run that did not finish), point it at the
    newest other finished run, or remove it."""
    link = run_dir.parent / "latest"
    if not link.is_symlink() or link.resolve() != run_dir.resolve():
        return
    finished = [
        r.path
        for r in list_runs(run_dir.parent)
        if r.state == "finished" and r.path.parent == run_dir.parent
    ]
    if finished:
        mark_latest(finished[-1])
    else:
        link.unlink()


def environment() -> dict:
    """Versions, git commit and command line, recorded with every run."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "argv": sys.argv,
        "versions": versions,
        "git_commit": commit or None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def resolve_run(cfg: DictConfig) -> tuple[Path, str | None]:
    """The run directory and the checkpoint to resume from (None for a fresh run)."""
    inherited = os.environ.get(RUN_DIR_ENV)
    ckpt = cfg.ckpt_path
    if ckpt == "last":
        run_dir = Path(inherited) if inherited else resumable_run(cfg.runs_dir, cfg.name)
        path = run_dir / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise CheckpointError(f"{path}: no last.ckpt to resume from")
        return run_dir, str(path)
    if ckpt is not None:
        path = Path(ckpt)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        return path.resolve().parent.parent, str(path)
    if inherited:
        return Path(inherited), None
    if not is_launcher_process():
        # Another node of a torchrun/SLURM job: rank 0 owns the run directory and Lightning
        # broadcasts its checkpoint path; this rank writes nothing of its own.
        return Path(cfg.runs_dir) / cfg.name / f".rank{os.environ.get('RANK', '?')}", None
    return new_run_dir(cfg.runs_dir, cfg.name), None


class RunStateCallback(L.Callback):
    """Stamp checkpoints with their stage and keep the global torch RNG in them.

    Lightning restores the model, optimizers, loops and the DataModule's state but not the
    process RNG (dropout, diffusion timesteps); without it a resumed run draws differently from
    an uninterrupted one. The stage stamp lets :func:`check_checkpoint` refuse a checkpoint of
    the other stage before anything is loaded.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["neurocine"] = {
            "stage": self.stage,
            "format": CHECKPOINT_FORMAT,
            "torch_rng": torch.get_rng_state(),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get("neurocine")
        if state is not None:
            torch.set_rng_state(state["torch_rng"])


def check_checkpoint(path: str | Path, stage: str) -> None:
    """Refuse, with one line, a checkpoint that is truncated, foreign, newer, or of another stage.

    Loads with ``weights_only=True`` (no code from the file runs) and ``mmap=True`` (tensors are
    not read), so the check is cheap even for large checkpoints.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated zip, pickle with code, not a torch file …
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:200]})") from exc
    stamp = checkpoint.get("neurocine") if isinstance(checkpoint, dict) else None
    if not isinstance(stamp, dict):
        raise CheckpointError(f"{path}: not a neurocine training checkpoint")
    if int(stamp.get("format", 0)) > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {stamp.get('format')} is newer than this neurocine "
            f"({CHECKPOINT_FORMAT}); upgrade neurocine"
        )
    if stamp.get("stage") != stage:
        raise CheckpointError(f"{path}: a {stamp.get('stage')} checkpoint, cannot resume {stage}")


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list, monitor) -> L.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` with NeuroCine's checkpoints and loggers."""
    directory = run_dir / "checkpoints"
    # Lightning ≥ 2.6 writes ``save_last`` only when a top-k checkpoint was written at the same
    # step, so a run whose metric stops improving would resume from a stale last.ckpt. A
    # separate monitor-less callback rewrites last.ckpt at every epoch end instead; it comes
    # after the "best" callback so that last.ckpt carries that callback's updated state.
    checkpoints = [
        ModelCheckpoint(
            dirpath=directory, filename="last", save_top_k=1, enable_version_counter=False
        )
    ]
    if monitor:
        best = ModelCheckpoint(
            dirpath=directory, filename="best", monitor=monitor[0], mode=monitor[1], save_top_k=1
        )
        checkpoints.insert(0, best)
    loggers = [CSVLogger(run_dir, name="logs", version="")]
    if find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="logs", version="", default_hp_metric=False))
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    return L.Trainer(
        default_root_dir=run_dir,
        callbacks=[*checkpoints, RunStateCallback(cfg.stage), *callbacks],
        logger=loggers,
        **kwargs,
    )


def rotate_csv_log(run_dir: Path) -> Path | None:
    """Move ``logs/metrics.csv`` to ``logs/metrics-<k>.csv`` before a resumed fit.

    Lightning's CSV logger rewrites its file from memory when new columns appear, which would
    drop the rows of the interrupted segment; each segment keeps its own file instead and
    ``logs/metrics.csv`` is always the newest (``neurocine.analysis`` reads them in order).
    """
    current = run_dir / "logs" / "metrics.csv"
    if not current.is_file():
        return None
    k = len(list(current.parent.glob("metrics-*.csv")))
    target = current.with_name(f"metrics-{k}.csv")
    current.replace(target)
    return target


@contextmanager
def _run_dir_for_children(run_dir: Path):
    """Expose ``run_dir`` to processes that DDP launches during ``trainer.fit``, then restore."""
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def build_system(cfg: DictConfig) -> tuple[FMRIVideoDataModule, L.LightningModule, list]:
    """Seed, then the set-up DataModule, the stage's module and its callbacks for ``cfg``.

    What :func:`fit` trains; benchmarks build the same system to time its steps.
    """
    stage = cfg.stage
    if stage not in STAGES:
        raise ConfigError(f"key 'stage': '{stage}' is not one of {STAGES}")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = FMRIVideoDataModule(cfg, read_frames=stage == "stage2", augment=stage == "stage1")
    datamodule.setup("fit")
    lit = importlib.import_module(f"neurocine.lit.{stage}")
    module = lit.build_module(cfg, datamodule)
    callbacks = lit.build_callbacks(cfg) if hasattr(lit, "build_callbacks") else []
    return datamodule, module, callbacks


def fit(cfg: DictConfig) -> Path:
    """Train ``cfg.stage`` and return the run directory.

    The config, the data, the models, a checkpoint to resume and the Trainer's arguments are all
    checked before a new run directory is kept: bad input leaves nothing behind. From then on
    the run's ``status.json`` says ``running``, then ``finished``, ``failed`` (with the error)
    or ``interrupted`` (:mod:`neurocine.run_status`); ``latest`` moves only to a finished run.

    Parameters
    ----------
    cfg : DictConfig
        An experiment config (:func:`neurocine.config.load_config`); checked again here, so a
        config changed in code gets the same checks.
    """
    check_config(cfg)
    stage = cfg.stage
    launcher = is_launcher_process()
    with _reworded(f"setting up {stage}"):
        datamodule, module, callbacks = build_system(cfg)
    run_dir, ckpt_path = resolve_run(cfg)
    new = launcher and ckpt_path is None and RUN_DIR_ENV not in os.environ
    try:  # until the fit starts, a new run's directory is still empty: remove it on an error
        if ckpt_path is not None:
            check_checkpoint(ckpt_path, stage)
        t = cfg.trainer
        keys = ", ".join(
            f"trainer.{k}={t[k]}" for k in ("accelerator", "devices", "strategy", "precision")
        )
        with _reworded(keys):
            monitor = getattr(module, "checkpoint_monitor", None)
            trainer = build_trainer(cfg, run_dir, callbacks, monitor)
        check_batches(cfg, datamodule, trainer.world_size)
    except BaseException:
        if new:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if launcher:
        if ckpt_path is not None:
            rotate_csv_log(run_dir)
        save_config(cfg, run_dir / "config.yaml")
        with atomic_path(run_dir / "environment.json") as tmp:
            tmp.write_text(json.dumps(environment(), indent=2))
        write_status(run_dir, "running")
    try:
        with _run_dir_for_children(run_dir), warnings.catch_warnings():
            if stage == "stage2":  # its frozen parts are in eval mode on purpose (module.train)
                warnings.filterwarnings(
                    "ignore", r"Found \d+ module\(s\) in eval mode", UserWarning
                )
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        if trainer.is_global_zero and hasattr(module, "export"):
            if getattr(module, "export_checkpoint", "last") == "best":
                restore_best(trainer, module, run_dir)
            module.export(run_dir)
    except BaseException as exc:
        if launcher:
            if isinstance(exc, KeyboardInterrupt | SystemExit):  # Lightning: Ctrl-C → exit(1)
                sigterm = type(exc).__name__ == "SIGTERMException"
                write_status(
                    run_dir, "interrupted", f"stopped by {'SIGTERM' if sigterm else 'Ctrl-C'}"
                )
            else:
                write_status(run_dir, "failed", one_line(exc))
            unmark_latest(run_dir)
        raise
    if launcher:
        write_status(run_dir, "finished")
        mark_latest(run_dir)
    return run_dir


def check_batches(cfg: DictConfig, datamodule: FMRIVideoDataModule, world_size: int) -> None:
    """Refuse a batch size that leaves a DDP process without a single training batch.

    ``data.batch_size`` is per process; each of the ``world_size`` processes gets its share of
    the training windows, and full batches only (``drop_last``) once there are enough windows
    for one batch in all.
    """
    n = len(datamodule.datasets["train"])
    batch = int(cfg.data.batch_size)
    if world_size > 1 and -(-n // world_size) < batch <= n:
        raise ConfigError(
            f"data.batch_size={batch} with {world_size} processes (trainer.devices × "
            f"trainer.num_nodes): each gets {-(-n // world_size)} of the {n} training windows, "
            f"less than one batch; set data.batch_size ≤ {n // world_size}"
        )


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (the message alone for project errors)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, NeuroCineError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def _reworded(context: str):
    """Re-raise a library's error during set-up as a ConfigError that says what was set up."""
    try:
        yield
    except NeuroCineError:
        raise
    except Exception as exc:
        raise ConfigError(f"{context}: {one_line(exc)}") from exc


def restore_best(trainer: L.Trainer, module: L.LightningModule, run_dir: Path) -> dict | None:
    """Load the weights of the best checkpoint into ``module`` before it is exported.

    The best checkpoint is the one the ``best`` ModelCheckpoint kept by the module's
    ``checkpoint_monitor``. What was restored (epoch, metric, score) goes to
    ``<run_dir>/export.json``; a run without a best checkpoint (no monitor, or no validation
    epoch) exports its last weights and records that.
    """
    best = next(
        (c for c in trainer.checkpoint_callbacks if getattr(c, "filename", None) == "best"), None
    )
    path = Path(best.best_model_path) if best is not None and best.best_model_path else None
    if path is None or not path.is_file():
        info = {"checkpoint": "last", "reason": "no best checkpoint was written"}
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(checkpoint["state_dict"])
        score = best.best_model_score
        info = {
            "checkpoint": "best",
            "epoch": int(checkpoint["epoch"]),
            "monitor": best.monitor,
            "score": None if score is None else float(score),
        }
    with atomic_path(run_dir / "export.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return info
