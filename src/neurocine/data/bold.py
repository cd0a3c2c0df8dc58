"""Per-run BOLD handling shared by the converters: volume cuts, cleaning, repeat averaging."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nilearn import signal

from neurocine.errors import DataError


def volume_cut(n_volumes: int, cuts: Sequence, where: str) -> slice:
    """The kept volumes of a run of ``n_volumes`` under the rules ``cuts`` (``VolumeCut``\\ s).

    Raises
    ------
    DataError
        No rule for that length (naming ``where``, the file).
    """
    for cut in cuts:
        if cut.volumes == n_volumes:
            return slice(cut.drop_first, n_volumes - cut.drop_last)
    known = ", ".join(str(c.volumes) for c in cuts)
    raise DataError(f"{where}: {n_volumes} volumes, but volume_cuts has rules only for {known}")


def clean_run(
    bold: np.ndarray,
    *,
    tr_s: float,
    detrend: bool = True,
    standardize: str = "zscore_sample",
    high_pass: float | None = None,
    low_pass: float | None = None,
) -> np.ndarray:
    """Detrend / filter / standardise one run with ``nilearn.signal.clean``.

    Parameters
    ----------
    bold : ndarray of shape (n_trs, n_voxels)
    standardize : str, default="zscore_sample"
        nilearn's option; ``"none"`` leaves the scale alone.

    Returns
    -------
    ndarray of shape (n_trs, n_voxels), float32; constant voxels become 0.
    """
    out = signal.clean(
        bold,
        detrend=detrend,
        standardize=False if standardize == "none" else standardize,
        high_pass=high_pass,
        low_pass=low_pass,
        t_r=tr_s,
        filter="butterworth" if (high_pass or low_pass) else False,
    )
    return np.asarray(out, dtype=np.float32)


def zscore(x: np.ndarray) -> np.ndarray:
    """Column z-score (ddof=1, as nilearn's ``zscore_sample``); constant columns become 0."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1])
    return np.divide(x - mean, std, out=np.zeros_like(x), where=std > 0).astype(np.float32)


class RepeatMean:
    """Running mean of repeats of one segment (holds one ``[T, V]`` sum, not every repeat)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, x: np.ndarray, name: str) -> None:
        if self.total is None:
            self.total = np.zeros(x.shape, dtype=np.float64)
        elif x.shape != self.total.shape:
            raise DataError(
                f"{name}: {x.shape[0]} kept volumes × {x.shape[1]} columns, but the other repeats "
                f"of {self.where} have {self.total.shape[0]} × {self.total.shape[1]}"
            )
        self.total += x
        self.count += 1

    def mean(self, rezscore: bool) -> np.ndarray:
        if self.total is None:
            raise DataError(f"{self.where}: no repeat was added")
        out = (self.total / self.count).astype(np.float32)
        return zscore(out) if rezscore else out
