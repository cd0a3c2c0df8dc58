"""Finding what to evaluate: a run's reconstructions, the run they came from, and the clips
paired with their ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from omegaconf import OmegaConf

from neurocine.analysis.runs import RECONSTRUCTIONS, SAMPLES_DIR
from neurocine.errors import CheckpointError


@dataclass
class RunSamples:
    """Where a run's reconstructions and its config are."""

    run_dir: Path
    samples_dir: Path
    h5_path: Path


@dataclass
class PairedClips:
    """The reconstructed clips with their ground truth and fMRI, in the reconstructions' order."""

    split: str
    pred: np.ndarray  # uint8 [N, F, H, W, 3]
    rows: np.ndarray  # int64 [N]: clip rows in the split's HDF5 group
    truth: np.ndarray  # uint8 [N, F, H, W, 3]
    fmri: np.ndarray  # [N, W, V]
    fmri_clean: np.ndarray | None  # [N, W, V] when the oracle is asked for and the data have it
    clip_image: np.ndarray | None  # [N, D]: the clips' CLIP image embeddings, when embedded
    keep: np.ndarray  # bool [N]: the clips scored (those spanning a scene cut are left out)
    scenes: list[str] | None  # scene id of each kept clip, when the data have scene ids


def find_reconstructions(path: str | Path) -> RunSamples:
    """Resolve a run directory or a reconstruction folder (:mod:`neurocine.evaluation`).

    Raises
    ------
    CheckpointError
        When there is no ``reconstructions.h5`` (with the command that makes it).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run directory")
    if (path / RECONSTRUCTIONS).is_file():
        with h5py.File(path / RECONSTRUCTIONS, "r") as f:
            run = f.attrs.get("run")
        if run is None or not (Path(str(run)) / "config.yaml").is_file():
            raise CheckpointError(
                f"{path / RECONSTRUCTIONS}: its 'run' attribute {run!r} is not a run directory"
            )
        return RunSamples(Path(str(run)), path, path / RECONSTRUCTIONS)
    if not (path / "config.yaml").is_file():
        raise CheckpointError(f"{path}: no config.yaml and no {RECONSTRUCTIONS}: not a run")
    h5_path = path / SAMPLES_DIR / RECONSTRUCTIONS
    if (
        not h5_path.is_file()
        and OmegaConf.select(OmegaConf.load(path / "config.yaml"), "stage") == "stage1"
    ):
        raise CheckpointError(
            f"{path}: a stage-1 run has no reconstructions: train stage 2 on its encoder "
            f"(stage2.encoder_ckpt={path / 'encoder'}), then reconstruct and evaluate that run"
        )
    if not h5_path.is_file():
        raise CheckpointError(
            f"{path}: no reconstructions ({SAMPLES_DIR}/{RECONSTRUCTIONS}); make them first with "
            f"`neurocine reconstruct --run {path} --out {path / SAMPLES_DIR}`"
        )
    return RunSamples(path.resolve(), path / SAMPLES_DIR, h5_path)
