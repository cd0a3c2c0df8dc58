"""Paired statistics: the model minus each baseline, clip by clip, with cluster-robust errors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from neurocine.errors import DataError


def paired_differences(
    per_clip: dict[str, dict[str, np.ndarray]],
    model: str = "neurocine",
    groups: Sequence[str] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``model`` minus each other row, clip by clip: ``{row: {metric: {diff, se, n, groups}}}``.

    The standard error of the paired mean difference is what says whether ``model`` beats a
    baseline on these clips (the per-row spreads are much wider: both rows find the same clips
    easy or hard). Clips of one scene are not independent (overlapping windows of the same
    video), so with ``groups`` (a scene id per clip) it is the cluster-robust standard error
    over scenes, ``sqrt(G / (G - 1) · Σ_g (Σ_{i∈g} (d_i − d̄))²) / N``; without, the plain
    ``std(d, ddof=1) / sqrt(N)``. Clips whose difference is not finite (PSNR of a perfect
    clip) are left out; ``n`` says how many were used.
    """
    ours = per_clip[model]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row, metrics in per_clip.items():
        if row == model:
            continue
        out[row] = {}
        for key in (k for k in ours if k in metrics):
            a, b = np.asarray(ours[key], np.float64), np.asarray(metrics[key], np.float64)
            if a.shape != b.shape:
                raise DataError(f"per-clip {key}: {model} has {a.shape} clips, {row} {b.shape}")
            finite = np.isfinite(a - b)
            d = (a - b)[finite]
            g = np.arange(len(a))[finite] if groups is None else np.asarray(groups)[finite]
            labels, cluster = np.unique(g, return_inverse=True)
            if len(labels) < 2:
                continue
            sums = np.bincount(cluster, weights=d - d.mean())
            se = math.sqrt(len(labels) / (len(labels) - 1) * float((sums**2).sum())) / len(d)
            out[row][key] = {
                "diff": float(d.mean()),
                "se": se,
                "n": int(len(d)),
                "groups": int(len(labels)),
            }
    return out
