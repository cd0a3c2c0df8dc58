"""Voxel selection: ROI index sets and Wen et al. (2018)'s reproducibility criterion.

Reproducibility (Wen, Shi, Zhang et al., Cereb. Cortex 2018): for every vertex and training
segment, the Pearson correlation between the responses of two repeats of that segment;
Fisher-z transformed; a one-sample t-test (one-sided, mean > 0) across segments; vertices whose
p-value passes ``p / n_candidates`` (Bonferroni) are kept, or the ``top_n`` largest t.
The statistic is fitted on training data only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from neurocine.errors import ConfigError, DataError


def repeat_correlation(repeats: list[np.ndarray]) -> np.ndarray:
    """Mean over repeat pairs of the per-column Pearson correlation.

    Parameters
    ----------
    repeats : list of ndarray of shape (n_trs, n_vertices)
        At least two responses to the same segment.

    Returns
    -------
    ndarray of shape (n_vertices,), float64; 0 where a column is constant.
    """
    if len(repeats) < 2:
        raise ValueError("repeat_correlation needs at least two repeats")
    centred = []
    for x in repeats:
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(axis=0)
        norm = np.sqrt((x * x).sum(axis=0))
        centred.append(np.divide(x, norm, out=np.zeros_like(x), where=norm > 0))
    total = np.zeros(centred[0].shape[1])
    pairs = 0
    for i in range(len(centred)):
        for k in range(i + 1, len(centred)):
            total += (centred[i] * centred[k]).sum(axis=0)
            pairs += 1
    return total / pairs


def fisher_z(r: np.ndarray) -> np.ndarray:
    """``arctanh(r)``, with ``r`` clipped to ±(1 − 1e-7) so perfect repeats stay finite."""
    return np.arctanh(np.clip(r, -1 + 1e-7, 1 - 1e-7))


def reproducibility_t(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided one-sample t-test of ``z`` (``[n_segments, n_vertices]``) against 0.

    Returns
    -------
    t, p : ndarray of shape (n_vertices,)
        NaN statistics (constant columns) become ``t = -inf``, ``p = 1``.
    """
    if z.shape[0] < 2:
        raise DataError(
            f"reproducibility needs ≥ 2 training segments with 2 repeats, got {z.shape[0]}"
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        res = stats.ttest_1samp(z, 0.0, axis=0, alternative="greater")
    t = np.where(np.isnan(res.statistic), -np.inf, res.statistic)
    p = np.where(np.isnan(res.pvalue), 1.0, res.pvalue)
    return t, p


def select_reproducible(
    t: np.ndarray, p: np.ndarray, *, p_threshold: float, top_n: int | None = None
) -> np.ndarray:
    """Positions (sorted) of the kept vertices: Bonferroni ``p < p_threshold / n`` or top ``n``."""
    if top_n is not None:
        if top_n > t.size:
            raise ConfigError(f"voxels.reproducibility.top_n={top_n} > {t.size} candidate vertices")
        return np.sort(np.argsort(-t, kind="stable")[:top_n])
    keep = np.flatnonzero(p < p_threshold / t.size)
    if keep.size == 0:
        raise DataError(
            f"no vertex passes the reproducibility test at p < {p_threshold:g} (Bonferroni over "
            f"{t.size}); best p = {p.min():.3g}. Use voxels.reproducibility.top_n or a larger p"
        )
    return keep


def read_index_file(path: str | Path) -> np.ndarray:
    """Grayordinate indices from a ``.npy`` or a whitespace-separated text file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: ROI file not found")
    try:
        values = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, ndmin=1)
    except Exception as exc:
        raise DataError(f"{path}: cannot read ROI indices ({exc})") from exc
    values = np.asarray(values).ravel()
    if values.size == 0 or np.any(values != np.round(values)) or values.min() < 0:
        raise DataError(f"{path}: expected non-negative integer grayordinate indices")
    return np.unique(values.astype(np.int64))


def match_names(labels: np.ndarray, names: list[str]) -> np.ndarray:
    """Boolean mask of ``labels`` equal to a name, or to ``L_<name>`` / ``R_<name>``."""
    wanted = set(names) | {f"{h}_{n}" for n in names for h in ("L", "R")}
    return np.isin(np.asarray(labels, dtype=object).astype(str), sorted(wanted))
