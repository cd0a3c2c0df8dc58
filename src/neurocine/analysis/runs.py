"""Read runs and sweeps for notebooks: config, CSV logs, metrics, reconstructions.

Notebooks read runs through these functions only (docs/design.md §9). Relative paths, given or
recorded in a run (``runs/demo/stage2/latest``, ``data.path``), resolve against the project root
(:mod:`neurocine.analysis.paths`), so a kernel started in ``notebooks/`` finds them; a run that is
not there raises one line naming the command that makes it. Tables come back as a
``pandas.DataFrame`` when pandas is installed (it is not a dependency of neurocine), otherwise
as a dict of float arrays (one per column, NaN where a row has no value): pass
``as_frame=False`` to always get the dict.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from omegaconf import DictConfig, OmegaConf

from neurocine.analysis import paths
from neurocine.config import load_saved_config
from neurocine.errors import CheckpointError

HAS_PANDAS = find_spec("pandas") is not None
RECONSTRUCTIONS = "reconstructions.h5"  # written by neurocine reconstruct
SAMPLES_DIR = "samples"  # <run>/samples/: where the demo and sweeps reconstruct
ORACLE = "oracle.h5"  # the oracle's samples, cached by neurocine evaluate
CLIP_ORACLE = "clip_oracle.h5"  # the CLIP oracle's samples, cached likewise


def read_reconstructions(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(frames uint8 [N, F, H, W, 3], index int64 [N], attributes)`` of a reconstructions file."""
    try:
        with h5py.File(path, "r") as f:
            if "frames" not in f or "index" not in f:
                raise CheckpointError(
                    f"{path}: expected /frames and /index (neurocine reconstruct)"
                )
            frames, index = f["frames"][()], f["index"][()].astype(np.int64)
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read reconstructions ({exc})") from exc
    if frames.ndim != 5 or frames.shape[0] != index.shape[0] or frames.dtype != np.uint8:
        raise CheckpointError(
            f"{path}: /frames {frames.shape} {frames.dtype} and /index {index.shape} do not match "
            "(expected uint8 [N, F, H, W, 3] and [N])"
        )
    if frames.shape[0] == 0:
        raise CheckpointError(f"{path}: holds no reconstructions")
    return frames, index, attrs


def read_csv_table(path: str | Path, as_frame: bool | None = None):
    """A CSV of numbers (Lightning's ``metrics.csv``, a sweep's ``results.csv``); a relative
    ``path`` is read against the project root.

    Parameters
    ----------
    path : str or Path
    as_frame : bool, optional
        True: a DataFrame (needs pandas); False: ``dict[str, ndarray]`` (non-numbers kept as
        object arrays); None: a DataFrame when pandas is installed.
    """
    path = paths.resolve(path)  # a relative path: against the project root
    if not path.is_file():
        raise CheckpointError(f"{path}: no such CSV file")
    if as_frame is None:
        as_frame = HAS_PANDAS
    if as_frame:
        import pandas as pd

        return pd.read_csv(path)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        names = reader.fieldnames or []
    table: dict[str, np.ndarray] = {}
    for name in names:
        cells = [r.get(name) for r in rows]
        try:
            table[name] = np.array([float(c) if c not in ("", None) else np.nan for c in cells])
        except ValueError:
            table[name] = np.array(cells, dtype=object)
    return table


def csv_logs(run_dir: str | Path) -> list[Path]:
    """A run's CSV logs in time order: ``logs/metrics-0.csv``, ``-1``, …, ``logs/metrics.csv``.

    A resumed run keeps one file per training segment (the driver rotates the log before it
    resumes); a run trained in one go has only ``metrics.csv``.
    """
    logs = Path(run_dir) / "logs"
    segments = []
    for path in logs.glob("metrics-*.csv"):
        suffix = path.stem.split("-", 1)[1]
        if suffix.isdigit():
            segments.append((int(suffix), path))
    out = [path for _, path in sorted(segments)]
    if (logs / "metrics.csv").is_file():
        out.append(logs / "metrics.csv")
    return out


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def final_metrics(run_dir: str | Path) -> dict[str, float]:
    """The last logged value of every numeric column of a run's CSV logs (all segments)."""
    last: dict[str, float] = {}
    for path in csv_logs(run_dir):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                for key, text in row.items():
                    value = _number(text)
                    if key not in ("epoch", "step") and value is not None:
                        last[key] = value
    return last


def read_run_log(run_dir: str | Path, as_frame: bool | None = None):
    """All CSV log segments of a run, concatenated in time order (see :func:`read_csv_table`)."""
    paths = csv_logs(run_dir)
    if not paths:
        raise CheckpointError(f"{run_dir}: no logs/metrics.csv")
    if as_frame is None:
        as_frame = HAS_PANDAS
    tables = [read_csv_table(p, as_frame) for p in paths]
    if as_frame:
        import pandas as pd

        return pd.concat(tables, ignore_index=True)
    names = list(dict.fromkeys(k for t in tables for k in t))
    out = {}
    for name in names:
        parts = [
            t[name] if name in t else np.full(len(next(iter(t.values()))), np.nan) for t in tables
        ]
        out[name] = np.concatenate(parts)
    return out


def curves(
    table, columns: list[str] | None = None, x: str = "step"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{column: (x values, values)}`` with the rows where the column has a value.

    ``table`` is what :func:`read_csv_table` returned for a ``metrics.csv``; by default the
    columns whose name contains ``loss``; ``x``: ``step`` or ``epoch``.
    """
    names = list(table.keys()) if isinstance(table, dict) else list(table.columns)
    if columns is None:
        columns = [c for c in names if "loss" in c]
    steps = np.asarray(table[x], dtype=float)
    out = {}
    for name in columns:
        values = np.asarray(table[name], dtype=float)
        ok = ~np.isnan(values)
        out[name] = (steps[ok], values[ok])
    return out


@dataclass
class Reconstructions:
    """A run's reconstructions with their ground truth (and the oracles', when evaluated)."""

    frames: np.ndarray  # uint8 [N, F, H, W, 3]
    truth: np.ndarray  # uint8 [N, F, H, W, 3]
    index: np.ndarray  # int64 [N] clip rows in the split's HDF5 group
    split: str
    fps: float
    oracle: np.ndarray | None = None  # stage 2 on the noise-free fMRI
    videos: list[Path] | None = None  # mp4/gif per clip, when written
    clip_oracle: np.ndarray | None = None  # stage 2 on the true CLIP image embeddings


# config keys holding paths that a run records relative to the project root
PATH_KEYS = ("data.path", "stage2.encoder_ckpt")


class Run:
    """One run directory (``runs/<name>/<timestamp>``; ``latest`` links are followed).

    A relative ``path`` is read against the project root (:func:`paths.project_root`), the
    relative paths the run recorded against the project the run lies in.

    Raises
    ------
    MissingRunError
        No run there: one line naming the command that makes it (``make demo``, …).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = paths.require(path, "run", "config.yaml").resolve()
        self.root = paths.project_root(self.path)

    def __repr__(self) -> str:
        return f"Run({paths.relative(self.path, self.root)!r}, stage={self.stage!r})"

    @cached_property
    def config(self) -> DictConfig:
        """The config the run was trained with, its relative paths (:data:`PATH_KEYS`) resolved
        against the project root."""
        cfg = load_saved_config(self.path / "config.yaml")
        for key in PATH_KEYS:
            value = OmegaConf.select(cfg, key)
            if value is not None:
                OmegaConf.update(cfg, key, str(paths.resolve(value, self.root)))
        return cfg

    @property
    def data_path(self) -> Path:
        """The subject file the run read (``data.path``, resolved); raises one line when absent."""
        return paths.require(self.config.data.path, "data file", root=self.root)

    def stage1_run(self) -> Run | None:
        """The stage-1 run whose encoder a stage-2 run started from (None for stage 1 or when it
        is not a run directory)."""
        ckpt = OmegaConf.select(self.config, "stage2.encoder_ckpt")
        if self.stage != "stage2" or not ckpt:
            return None
        folder = Path(ckpt)
        for candidate in (folder, *folder.parents[:2]):
            if (candidate / "config.yaml").is_file():
                return Run(candidate)
        return None

    @property
    def stage(self) -> str:
        return str(self.config.stage)

    @property
    def samples_dir(self) -> Path:
        return self.path / SAMPLES_DIR

    def log(self, as_frame: bool | None = None):
        """The CSV log (all segments of ``logs/metrics*.csv``): DataFrame or dict of arrays."""
        return read_run_log(self.path, as_frame)

    def loss_curves(self, x: str = "step") -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{"train/loss_step": (steps, values), "val/loss": …}`` (``x="epoch"``: by epoch)."""
        return curves(self.log(as_frame=False), x=x)

    def retrieval_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Stage 1's validation retrieval by epoch: ``{"val/top1_50way": (epochs, values), …}``
        (the ``val/top*`` columns of the log)."""
        table = self.log(as_frame=False)
        return curves(table, [c for c in table if c.startswith("val/top")], x="epoch")

    def final_metrics(self) -> dict[str, float]:
        """The last logged value of every column."""
        return final_metrics(self.path)

    def evaluation(self) -> dict[str, Any] | None:
        """``metrics.json`` of ``neurocine evaluate`` (None before evaluation)."""
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def evaluation_table(self) -> str | None:
        """The markdown table of ``metrics.md`` (None before evaluation)."""
        path = self.path / "metrics.md"
        return path.read_text() if path.is_file() else None

    def encoder_dir(self) -> Path | None:
        """The trained fMRI encoder: ``encoder/`` (stage 1) or ``model/encoder/`` (stage 2)."""
        for candidate in (self.path / "encoder", self.path / "model" / "encoder"):
            if (candidate / "config.json").is_file():
                return candidate
        return None

    def reconstructions(self) -> Reconstructions | None:
        """The reconstructions in ``samples/`` with their ground truth (None when absent)."""
        h5_path = self.samples_dir / RECONSTRUCTIONS
        if not h5_path.is_file():
            return None
        frames, index, attrs = read_reconstructions(h5_path)
        split = str(attrs.get("split", "test"))
        group = str(attrs.get("h5_group", "train" if split == "val" else split))
        recorded = attrs.get("data_path", self.config.data.path)
        data_path = paths.require(recorded, "data file", root=self.root)
        order = np.argsort(index)
        with h5py.File(data_path, "r") as f:
            sorted_truth = f[f"{group}/frames"][index[order]]
        truth = np.empty_like(sorted_truth)
        truth[order] = sorted_truth
        videos = sorted((self.samples_dir / "videos").glob("*.gif")) or None
        return Reconstructions(
            frames, truth, index, split, float(attrs.get("fps", 1.0)),
            self._oracle(ORACLE, index), videos, self._oracle(CLIP_ORACLE, index),
        )  # fmt: skip

    def _oracle(self, name: str, index: np.ndarray) -> np.ndarray | None:
        """The cached oracle samples ``name`` when ``neurocine evaluate`` made them for these
        very clips (None otherwise)."""
        if not (self.samples_dir / name).is_file():
            return None
        frames, oracle_index, _ = read_reconstructions(self.samples_dir / name)
        return frames if np.array_equal(oracle_index, index) else None


def load_run(path: str | Path) -> Run:
    """Open a run directory (``runs/demo/stage2/latest`` works from any folder of the project)."""
    return Run(path)


def latest_run(runs_dir: str | Path, name: str) -> Run:
    """The run ``<runs_dir>/<name>/latest`` points at."""
    return Run(Path(runs_dir) / name / "latest")


def comparison_rows(recon: Reconstructions, n: int = 8) -> tuple[list[np.ndarray], list[str]]:
    """``n`` evenly spaced clips of ground truth, reconstruction (and the oracles), with row names.

    Neighbouring test clips often show the same scene, so the clips are spread over all the
    reconstructed ones rather than taken from the start.
    """
    count = len(recon.frames)
    pick = np.unique(np.round(np.linspace(0, count - 1, min(n, count))).astype(int))
    rows, names = [recon.truth[pick], recon.frames[pick]], ["ground truth", "NeuroCine"]
    for frames, name in ((recon.oracle, "oracle"), (recon.clip_oracle, "CLIP oracle")):
        if frames is not None:
            rows.append(frames[pick])
            names.append(name)
    return rows, names


def sweep_points(path: str | Path) -> list[dict[str, Any]]:
    """Finished runs (point × seed) of a sweep folder.

    Each is ``{"id", "point", "values", "seed", "metrics", "runs": {stage: Run}}``.
    """
    out = []
    for done in sorted(paths.require(path, "sweep").glob("points/*/seed=*/done.json")):
        record = json.loads(done.read_text())
        record["runs"] = {stage: Run(p) for stage, p in record.get("runs", {}).items()}
        out.append(record)
    return out


def load_sweep(path: str | Path, as_frame: bool | None = None):
    """A sweep's ``results.csv`` (its folder or the file), DataFrame or dict of arrays."""
    path = paths.resolve(path)
    if path.suffix != ".csv":
        path = paths.require(path, "sweep", "results.csv") / "results.csv"
    return read_csv_table(path, as_frame)


def sweep_spec(path: str | Path) -> DictConfig:
    """The validated spec a sweep folder was run with (``sweep.yaml``, read-only).

    The sweep runner writes the spec after validating it, every field filled in, so it is read
    back as it is (struct mode: a misspelt key raises).
    """
    path = paths.resolve(path)
    spec_path = path if path.suffix in (".yaml", ".yml") else path / "sweep.yaml"
    if not spec_path.is_file():
        spec_path = paths.require(spec_path.parent, "sweep", "sweep.yaml") / "sweep.yaml"
    spec = OmegaConf.load(spec_path)
    if not isinstance(spec, DictConfig):
        raise CheckpointError(f"{spec_path}: not a sweep spec (a mapping of keys)")
    OmegaConf.set_struct(spec, True)
    return spec
