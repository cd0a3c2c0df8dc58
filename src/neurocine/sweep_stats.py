"""Statistics of a seeded sweep: means, standard errors, paired differences and verdicts.

Pure functions over the runs of a sweep (one record per grid point and seed, as in
``results_runs.csv``); no training code, so notebooks can import this without the runner.

A run record is a mapping ``{"values": {grid key: value}, "seed": int, "status": "done" |
"failed", "metrics": {name: float}, "error": str}``. The standard error of a mean over ``n``
seeds is the sample standard deviation (ddof 1) over √n; a paired difference is taken seed by
seed over the seeds both points finished, so seed-to-seed variation that both share cancels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NOISE_SE = 2.0  # a difference is "beyond noise" when |mean| > NOISE_SE standard errors


def mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error (sd with ddof 1 over √n; NaN when n < 2) and n of finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, 0
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(x.mean()), se, n


def paired_diff(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[float, float, int]:
    """Mean and standard error of ``a[seed] − b[seed]`` over the seeds both have."""
    seeds = sorted(set(a) & set(b))
    return mean_se([a[s] - b[s] for s in seeds])


def beyond_noise(diff: float, se: float) -> bool:
    """Whether a difference is more than :data:`NOISE_SE` standard errors away from 0."""
    return math.isfinite(diff) and math.isfinite(se) and abs(diff) > NOISE_SE * se


def verdict(diff: float, se: float, n: int, mode: str = "max") -> str:
    """``better by …`` / ``worse by …`` (beyond 2 SE), ``within noise``, or why none is given.

    ``mode`` says which direction is better: ``max`` (higher) or ``min`` (lower).
    """
    if n < 2 or not math.isfinite(se):
        return f"no SE ({n} paired seed{'s' if n != 1 else ''})"
    if not beyond_noise(diff, se):
        return "within noise"
    better = diff > 0 if mode == "max" else diff < 0
    return f"{'better' if better else 'worse'} by {abs(diff):.3g} ± {se:.2g}"


def _key(values: Mapping[str, Any], keys: Sequence[str]) -> tuple:
    return tuple(repr(values[k]) for k in keys)


def by_point(
    runs: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> dict[tuple, list[Mapping[str, Any]]]:
    """Runs grouped by their grid values (insertion order kept)."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault(_key(run["values"], keys), []).append(run)
    return groups


def _by_seed(group: Sequence[Mapping[str, Any]], metric: str) -> dict[int, float]:
    out = {}
    for run in group:
        value = run.get("metrics", {}).get(metric) if run.get("status") == "done" else None
        if value is not None and math.isfinite(float(value)):
            out[int(run["seed"])] = float(value)
    return out


def summarize(
    runs: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    metrics: Sequence[str],
    metric: str,
    mode: str = "max",
    reference: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per grid point: ``n``, ``failed``, ``<m>``, ``<m>_se`` for every metric.

    With ``reference`` (values of some or all grid keys): also ``<m>_diff`` and ``<m>_diff_se``,
    the paired difference of the point − its reference point (the point's values with those of
    ``reference`` put in: one reference for all, or one per value of the keys it leaves out),
    and ``verdict`` for ``metric``.
    """
    groups = by_point(runs, keys)
    rows = []
    for group in groups.values():
        ref_group = None
        if reference is not None:
            ref_group = groups.get(_key({**group[0]["values"], **reference}, keys))
        done = [r for r in group if r.get("status") == "done"]
        failed = [r for r in group if r.get("status") != "done"]
        row: dict[str, Any] = {k: group[0]["values"][k] for k in keys}
        row.update(n=len(done), failed=len(failed))
        row["error"] = failed[0].get("error", "") if failed else ""
        for m in metrics:
            row[m], row[f"{m}_se"], _ = mean_se(
                [float(r["metrics"][m]) for r in done if r["metrics"].get(m) is not None]
            )
            if reference is not None:
                theirs = _by_seed(ref_group, m) if ref_group is not None else {}
                diff, se, n = paired_diff(_by_seed(group, m), theirs)
                row[f"{m}_diff"], row[f"{m}_diff_se"] = diff, se
                if m == metric:
                    row["verdict"] = (
                        "reference" if group is ref_group else verdict(diff, se, n, mode)
                    )
        rows.append(row)
    return rows


def best_vs_runner_up(
    runs: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    metric: str,
    mode: str = "max",
) -> dict[str, Any] | None:
    """The best point by mean, the runner-up, and their paired difference.

    Returns ``{"best", "runner_up": grid values, "diff", "se", "n", "beyond_noise": bool}``,
    or None with fewer than two points that finished a seed.
    """
    groups = [g for g in by_point(runs, keys).values() if _by_seed(g, metric)]
    if len(groups) < 2:
        return None
    sign = 1.0 if mode == "max" else -1.0
    ranked = sorted(groups, key=lambda g: -sign * mean_se(list(_by_seed(g, metric).values()))[0])
    best, second = ranked[0], ranked[1]
    diff, se, n = paired_diff(_by_seed(best, metric), _by_seed(second, metric))
    return {
        "best": dict(best[0]["values"]),
        "runner_up": dict(second[0]["values"]),
        "diff": diff,
        "se": se,
        "n": n,
        "beyond_noise": beyond_noise(diff, se),
    }
