"""The HDF5 subject-file contract (docs/design.md §3): writer, reader and validator.

One file per subject::

    /                 attrs: schema_version, dataset, subject, tr_s, fps, frames_per_tr, created_by
    /voxels/index     int64   [V]
    /voxels/coords    float32 [V, 3]     MNI mm
    /voxels/roi       str     [V]
    optional: /voxels/signal bool [V] (simulated ground truth); /voxels attrs grid_shape int [3]
              + grid_affine float [4, 4] (volume data), n_grayordinates int (CIFTI columns)
    /<split>/fmri     float32 [T, V]     z-scored per run; test = mean over repeats
    /<split>/run      int32   [T]
    /<split>/frames   uint8   [T, F, H, W, 3]
    optional per split: caption str [T], label int32 [T], scene str [T],
                        fmri_clean float32 [T, V], clip_image / clip_text float16 [T, D]

Files are written under a temporary name and renamed when complete, so a crash or a failed
validation never leaves a half-written subject file behind.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from neurocine import __version__
from neurocine.errors import SchemaError
from neurocine.fileio import atomic_path

SCHEMA_VERSION = 1
SPLITS = ("train", "test")
ROOT_ATTRS = ("schema_version", "dataset", "subject", "tr_s", "fps", "frames_per_tr", "created_by")
STR = h5py.string_dtype("utf-8")

# name → (dtype kind, rank) for every per-split dataset the contract knows.
SPLIT_DATASETS: dict[str, tuple[str, int]] = {
    "fmri": ("f4", 2),
    "fmri_clean": ("f4", 2),
    "run": ("i4", 1),
    "frames": ("u1", 5),
    "caption": ("str", 1),
    "label": ("i4", 1),
    "scene": ("str", 1),
    "clip_image": ("f2", 2),
    "clip_text": ("f2", 2),
}
REQUIRED_SPLIT = ("fmri", "run")
EMBEDDINGS = ("clip_image", "clip_text")


def created_by() -> str:
    """Provenance string stored in ``/``: package version and the command line."""
    return f"neurocine {__version__}: {' '.join(sys.argv)}"


def _chunk_rows(row_bytes: int, target_bytes: int = 1 << 20) -> int:
    """Rows per chunk so a chunk is about ``target_bytes`` (one batch read = few chunks)."""
    return int(max(1, min(4096, target_bytes // max(row_bytes, 1))))


class SubjectWriter:
    """Append runs to a subject file split by split, then validate and rename it into place.

    Parameters
    ----------
    path : str or Path
        Final file name; data go to a temporary sibling until :meth:`close`.
    dataset, subject : str
        Provenance stored as root attributes.
    tr_s : float
        Repetition time in seconds.
    fps : float
        Frame rate of the stored clips.
    frames_per_tr : int
        Frames stored per TR (``F``); 0 when the file holds no frames.
    voxel_index : ndarray of shape (V,)
    voxel_coords : ndarray of shape (V, 3)
    voxel_roi : sequence of str of length V
    voxel_signal : ndarray of bool, shape (V,), optional
        Which voxels carry stimulus signal (known for simulated data only).
    voxel_grid : (shape, affine), optional
        The volume grid ``voxel_index`` indexes (flattened C-order) and its 4 × 4 affine.
    n_grayordinates : int, optional
        The CIFTI brain models' column count when ``voxel_index`` holds grayordinates.
    provenance : mapping of str to str, optional
        More root attributes saying how the data were made (the simulator stores its config).

    Examples
    --------
    >>> with SubjectWriter(path, dataset="sim", subject="1", tr_s=2.0, fps=3.0,
    ...                    frames_per_tr=6, voxel_index=idx, voxel_coords=xyz,
    ...                    voxel_roi=roi) as writer:
    ...     writer.append("train", fmri=f, run=r, frames=v, caption=c)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dataset: str,
        subject: str,
        tr_s: float,
        fps: float,
        frames_per_tr: int,
        voxel_index: np.ndarray,
        voxel_coords: np.ndarray,
        voxel_roi,
        voxel_signal: np.ndarray | None = None,
        voxel_grid: tuple[Sequence[int], np.ndarray] | None = None,
        n_grayordinates: int | None = None,
        provenance: Mapping[str, str] | None = None,
        compression: str = "lzf",
    ) -> None:
        self.path = Path(path)
        self.compression = compression
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._file = h5py.File(self._tmp, "w")
        self._closed = False
        attrs = self._file.attrs
        attrs["schema_version"] = SCHEMA_VERSION
        attrs["dataset"] = dataset
        attrs["subject"] = str(subject)
        attrs["tr_s"] = float(tr_s)
        attrs["fps"] = float(fps)
        attrs["frames_per_tr"] = int(frames_per_tr)
        attrs["created_by"] = created_by()
        for key, value in (provenance or {}).items():
            attrs[key] = str(value)
        index = np.asarray(voxel_index, dtype=np.int64)
        coords = np.asarray(voxel_coords, dtype=np.float32)
        roi = np.asarray([str(r) for r in voxel_roi], dtype=object)
        if coords.shape != (index.shape[0], 3) or roi.shape != index.shape:
            self.abort()
            raise SchemaError(
                f"{self.path}: /voxels: index {index.shape}, coords {coords.shape}, roi "
                f"{roi.shape} disagree (expected [V], [V, 3], [V])"
            )
        group = self._file.create_group("voxels")
        group.create_dataset("index", data=index)
        group.create_dataset("coords", data=coords)
        group.create_dataset("roi", data=roi, dtype=STR)
        self.n_voxels = int(index.shape[0])
        if voxel_signal is not None:
            signal = np.asarray(voxel_signal, dtype=bool)
            if signal.shape != index.shape:
                self.abort()
                raise SchemaError(
                    f"{self.path}: /voxels/signal: shape {signal.shape}, expected {index.shape}"
                )
            group.create_dataset("signal", data=signal)
        if voxel_grid is not None:
            shape, affine = voxel_grid
            group.attrs["grid_shape"] = np.asarray(shape, dtype=np.int64)
            group.attrs["grid_affine"] = np.asarray(affine, dtype=np.float64)
        if n_grayordinates is not None:
            group.attrs["n_grayordinates"] = int(n_grayordinates)

    def append(self, split: str, **arrays) -> None:
        """Append rows (one per TR) to ``/<split>/<name>`` for each named array.

        All arrays in one call must have the same number of rows; names are those of the
        contract (``fmri``, ``run``, ``frames``, ``caption``, ``label``, ``scene``,
        ``fmri_clean``, ``clip_image``, ``clip_text``).
        """
        if split not in SPLITS:
            raise SchemaError(f"{self.path}: unknown split '{split}' (expected one of {SPLITS})")
        lengths = {name: len(a) for name, a in arrays.items() if a is not None}
        if len(set(lengths.values())) > 1:
            raise SchemaError(f"{self.path}: /{split}: row counts differ in one append: {lengths}")
        group = self._file.require_group(split)
        for name, values in arrays.items():
            if values is None:
                continue
            if name not in SPLIT_DATASETS:
                raise SchemaError(f"{self.path}: /{split}/{name}: not a dataset of the contract")
            kind, rank = SPLIT_DATASETS[name]
            data = np.asarray(values, dtype=object if kind == "str" else kind)
            if data.ndim != rank:
                raise SchemaError(
                    f"{self.path}: /{split}/{name}: expected {rank} dims, got shape {data.shape}"
                )
            self._append_rows(group, name, data, kind)

    def _append_rows(self, group: h5py.Group, name: str, data: np.ndarray, kind: str) -> None:
        if name not in group:
            row_bytes = int(np.prod(data.shape[1:], dtype=np.int64)) * (
                8 if kind == "str" else data.dtype.itemsize
            )
            # Stage 2 reads clips in random order: one clip per compressed chunk, so a read
            # decompresses only its own clip (bench/data_pipeline.py); other rows ~1 MB chunks.
            rows = 1 if name == "frames" else _chunk_rows(row_bytes)
            chunks = (rows, *data.shape[1:])
            compress = self.compression if name == "frames" else None
            group.create_dataset(
                name,
                shape=(0, *data.shape[1:]),
                maxshape=(None, *data.shape[1:]),
                dtype=STR if kind == "str" else data.dtype,
                chunks=chunks,
                compression=compress,
            )
        dset = group[name]
        if dset.shape[1:] != data.shape[1:]:
            raise SchemaError(
                f"{self.path}: /{group.name.strip('/')}/{name}: row shape {data.shape[1:]} "
                f"does not match earlier rows {dset.shape[1:]}"
            )
        start = dset.shape[0]
        dset.resize(start + data.shape[0], axis=0)
        dset[start:] = data

    def close(self) -> Path:
        """Flush, validate, and rename the temporary file onto ``path``."""
        if self._closed:
            return self.path
        self._file.close()
        self._closed = True
        try:
            validate(self._tmp, display_name=str(self.path))
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; ``path`` is left as it was."""
        if not self._closed:
            self._file.close()
            self._closed = True
            self._atomic.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> SubjectWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_subject(
    path: str | Path,
    *,
    meta: Mapping[str, Any],
    voxels: Mapping[str, np.ndarray],
    splits: Mapping[str, Mapping[str, np.ndarray]],
) -> Path:
    """Write a whole subject file at once (small data; use :class:`SubjectWriter` to stream).

    ``meta`` holds ``dataset, subject, tr_s, fps, frames_per_tr``; ``voxels`` holds
    ``index, coords, roi``; ``splits[split]`` maps dataset names to arrays.
    """
    with SubjectWriter(
        path,
        voxel_index=voxels["index"],
        voxel_coords=voxels["coords"],
        voxel_roi=voxels["roi"],
        **meta,
    ) as writer:
        for split, arrays in splits.items():
            writer.append(split, **arrays)
    return Path(path)


@dataclass
class SplitSummary:
    """Sizes of one split."""

    n_trs: int
    n_runs: int
    frames: tuple[int, ...] | None
    embeddings: dict[str, int] = field(default_factory=dict)
    optional: list[str] = field(default_factory=list)


@dataclass
class SubjectSummary:
    """What ``neurocine validate`` prints."""

    path: str
    dataset: str
    subject: str
    tr_s: float
    fps: float
    frames_per_tr: int
    n_voxels: int
    splits: dict[str, SplitSummary]

    def lines(self) -> list[str]:
        out = [
            f"{self.path}: dataset={self.dataset} subject={self.subject} tr_s={self.tr_s:g} "
            f"fps={self.fps:g} frames_per_tr={self.frames_per_tr} V={self.n_voxels}"
        ]
        for name, s in self.splits.items():
            frames = "x".join(map(str, s.frames)) if s.frames else "none"
            emb = ", ".join(f"{k}[{d}]" for k, d in s.embeddings.items()) or "none"
            extra = ", ".join(s.optional) or "none"
            out.append(
                f"  {name}: T={s.n_trs} runs={s.n_runs} frames F×H×W={frames} "
                f"embeddings={emb} optional={extra}"
            )
        return out


def _problems(f: h5py.File, name: str) -> tuple[list[str], dict[str, SplitSummary]]:
    problems: list[str] = []
    summaries: dict[str, SplitSummary] = {}
    for key in ROOT_ATTRS:
        if key not in f.attrs:
            problems.append(f"{name}: /: missing attribute '{key}'")
    version = f.attrs.get("schema_version")
    if version is not None and int(version) != SCHEMA_VERSION:
        problems.append(
            f"{name}: /: schema_version {int(version)} is not supported "
            f"(this neurocine reads version {SCHEMA_VERSION})"
        )
        return problems, summaries
    n_voxels = None
    for key, rank in (("index", 1), ("coords", 2), ("roi", 1)):
        if f"voxels/{key}" not in f:
            problems.append(f"{name}: /voxels/{key}: missing dataset")
        elif f[f"voxels/{key}"].ndim != rank:
            problems.append(f"{name}: /voxels/{key}: expected {rank} dims")
    if "voxels/index" in f:
        n_voxels = f["voxels/index"].shape[0]
        if "voxels/signal" in f and f["voxels/signal"].shape != (n_voxels,):
            problems.append(
                f"{name}: /voxels/signal: shape {f['voxels/signal'].shape}, expected ({n_voxels},)"
            )
    splits = [s for s in SPLITS if s in f]
    if not splits:
        problems.append(f"{name}: no split group (expected /train and/or /test)")
    frames_per_tr = int(f.attrs.get("frames_per_tr", 0))
    for split in splits:
        group = f[split]
        for key in REQUIRED_SPLIT:
            if key not in group:
                problems.append(f"{name}: /{split}/{key}: missing dataset")
        if "fmri" not in group:
            continue
        n_trs = group["fmri"].shape[0]
        for key, dset in group.items():
            where = f"{name}: /{split}/{key}"
            if key not in SPLIT_DATASETS:
                problems.append(f"{where}: not a dataset of the contract")
                continue
            kind, rank = SPLIT_DATASETS[key]
            if dset.ndim != rank:
                problems.append(f"{where}: expected {rank} dims, got shape {dset.shape}")
                continue
            if kind == "str":
                if dset.dtype.kind not in ("O", "S", "U"):
                    problems.append(f"{where}: dtype {dset.dtype}, expected strings")
            elif dset.dtype != np.dtype(kind):
                problems.append(f"{where}: dtype {dset.dtype}, expected {np.dtype(kind)}")
            if dset.shape[0] != n_trs:
                problems.append(
                    f"{where}: {dset.shape[0]} rows, but /{split}/fmri has {n_trs} (one per TR)"
                )
            if key in ("fmri", "fmri_clean") and n_voxels is not None:
                if dset.shape[1] != n_voxels:
                    problems.append(
                        f"{where}: shape {dset.shape} has {dset.shape[1]} voxels, "
                        f"/voxels/index has {n_voxels}"
                    )
            if key == "frames" and (dset.shape[-1] != 3 or dset.shape[1] != frames_per_tr):
                problems.append(
                    f"{where}: shape {dset.shape}, expected [T, F={frames_per_tr}, H, W, 3]"
                )
        problems += _finite_problems(group["fmri"], f"{name}: /{split}/fmri")
        run = group["run"][()] if "run" in group and group["run"].ndim == 1 else np.zeros(0)
        summaries[split] = SplitSummary(
            n_trs=n_trs,
            n_runs=int(np.unique(run).size),
            frames=tuple(group["frames"].shape[1:4]) if "frames" in group else None,
            embeddings={k: group[k].shape[1] for k in EMBEDDINGS if k in group},
            optional=[k for k in ("caption", "label", "scene", "fmri_clean") if k in group],
        )
    return problems, summaries


def _finite_problems(dset: h5py.Dataset, where: str, block_rows: int = 1024) -> list[str]:
    """Scan ``dset`` in row blocks for NaN/inf without reading it whole."""
    if dset.dtype.kind != "f":
        return []
    for start in range(0, dset.shape[0], block_rows):
        block = dset[start : start + block_rows]
        bad = ~np.isfinite(block)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            return [f"{where}: non-finite value (NaN or inf) at row {start + row}, voxel {col}"]
    return []


def validate(path: str | Path, display_name: str | None = None) -> SubjectSummary:
    """Check a subject file against the contract.

    Parameters
    ----------
    path : str or Path
        The HDF5 file.
    display_name : str, optional
        Name used in messages (the final name when validating a temporary file).

    Returns
    -------
    SubjectSummary

    Raises
    ------
    SchemaError
        With one line per problem, each naming the file, the key and the offending shape.
    """
    name = display_name or str(path)
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{name}: file not found")
    if not h5py.is_hdf5(path):
        raise SchemaError(f"{name}: not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            problems, summaries = _problems(f, name)
            attrs = {k: f.attrs.get(k) for k in ROOT_ATTRS}
            n_voxels = f["voxels/index"].shape[0] if "voxels/index" in f else 0
    except OSError as exc:
        raise SchemaError(f"{name}: cannot read HDF5 ({exc})") from exc
    if problems:
        raise SchemaError("\n".join(problems))
    return SubjectSummary(
        path=name,
        dataset=str(attrs["dataset"]),
        subject=str(attrs["subject"]),
        tr_s=float(attrs["tr_s"]),
        fps=float(attrs["fps"]),
        frames_per_tr=int(attrs["frames_per_tr"]),
        n_voxels=int(n_voxels),
        splits=summaries,
    )


def open_subject(path: str | Path, mode: str = "r") -> h5py.File:
    """Open a validated subject file (``mode="r+"`` to add embeddings)."""
    validate(path)
    return h5py.File(path, mode)


def read_strings(dset: h5py.Dataset, index=slice(None)) -> list[str]:
    """Decode a string dataset (or a selection of it) to ``list[str]``."""
    values = dset.asstr()[index]
    return [str(v) for v in np.atleast_1d(values)]
