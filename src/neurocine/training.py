"""The training driver behind ``neurocine train``: run directory, DataModule, Trainer, export.

A run lives in ``runs/<name>/<timestamp>/`` (DESIGN.md §9) with ``config.yaml`` (the resolved
config), ``environment.json`` (package versions, git commit, argv), ``checkpoints/``
(``last.ckpt`` and the best by the module's monitored metric), ``logs/`` (CSV, and TensorBoard
when installed) and whatever the module exports (stage 1: ``encoder/``).
``runs/<name>/latest`` points at the newest run, so ``ckpt_path=last`` resumes it and stage 2's
``encoder_ckpt`` can name ``runs/stage1/latest/encoder``.

DDP (``trainer.devices=2 trainer.strategy=ddp``) re-launches the command in child processes;
they find the run directory chosen by rank 0 in ``NEUROCINE_RUN_DIR``.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from neurocine.config import save_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.errors import CheckpointError, ConfigError

STAGES = ("stage1", "stage2")
RUN_DIR_ENV = "NEUROCINE_RUN_DIR"
PACKAGES = ("neurocine", "torch", "lightning", "diffusers", "transformers", "numpy", "h5py")


def is_launcher_process() -> bool:
    """True in the process that started the run (not in a DDP child it re-launched)."""
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


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


def latest_run(runs_dir: str | Path, name: str) -> Path:
    """The run that ``runs/<name>/latest`` points at."""
    link = Path(runs_dir) / name / "latest"
    if not link.exists():
        raise CheckpointError(f"{link}: no previous run of experiment '{name}' to resume")
    return link.resolve()


def mark_latest(run_dir: Path) -> None:
    """Point ``runs/<name>/latest`` at ``run_dir`` (replace the link atomically)."""
    link = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.tmp-{os.getpid()}"
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    tmp.replace(link)


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
        run_dir = Path(inherited) if inherited else latest_run(cfg.runs_dir, cfg.name)
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
    return new_run_dir(cfg.runs_dir, cfg.name), None


class RNGStateCallback(L.Callback):
    """Save and restore the global torch RNG (dropout, diffusion timesteps) with checkpoints.

    Lightning restores the model, optimizers, loops and the DataModule's state but not the
    process RNG; without this a resumed run draws different dropout masks than an
    uninterrupted one and its final metrics differ.
    """

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["neurocine_rng"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        state = checkpoint.get("neurocine_rng")
        if state is not None:
            torch.set_rng_state(state["torch"])


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list, monitor) -> L.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` with NeuroCine's checkpoints and loggers."""
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        save_last=True,
        monitor=monitor[0] if monitor else None,
        mode=monitor[1] if monitor else "min",
        save_top_k=1,
    )
    loggers = [CSVLogger(run_dir, name="logs", version="")]
    if find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="logs", version="", default_hp_metric=False))
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    return L.Trainer(
        default_root_dir=run_dir,
        callbacks=[checkpoint, RNGStateCallback(), *callbacks],
        logger=loggers,
        **kwargs,
    )


def fit(cfg: DictConfig) -> Path:
    """Train ``cfg.stage`` and return the run directory.

    Parameters
    ----------
    cfg : DictConfig
        A validated experiment config (:func:`neurocine.config.load_config`).
    """
    stage = cfg.stage
    if stage not in STAGES:
        raise ConfigError(f"key 'stage': '{stage}' is not one of {STAGES}")
    # Data and model are checked before the run directory exists: bad input writes nothing.
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = FMRIVideoDataModule(cfg, read_frames=stage == "stage2", augment=stage == "stage1")
    datamodule.setup("fit")
    lit = importlib.import_module(f"neurocine.lit.{stage}")
    module = lit.build_module(cfg, datamodule)
    callbacks = lit.build_callbacks(cfg) if hasattr(lit, "build_callbacks") else []
    run_dir, ckpt_path = resolve_run(cfg)
    os.environ[RUN_DIR_ENV] = str(run_dir)
    if is_launcher_process():
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "environment.json").write_text(json.dumps(environment(), indent=2))
    monitor = getattr(module, "checkpoint_monitor", None)
    trainer = build_trainer(cfg, run_dir, callbacks, monitor)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    if trainer.is_global_zero:
        if hasattr(module, "export"):
            module.export(run_dir)
        mark_latest(run_dir)
    return run_dir
