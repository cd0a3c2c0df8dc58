"""Figures of a seeded sweep: the metric with ± 1 SE error bars, and a two-key heatmap.

Both take the per-point table (``results.csv`` read by :func:`neurocine.analysis.runs.load_sweep`,
a DataFrame or a dict of arrays, or the rows :func:`neurocine.sweep_stats.summarize` returns
turned into columns) and draw on a matplotlib ``Axes``; the runner saves them as ``plot.png`` and
``heatmap.png``, ``notebooks/compare_sweep.ipynb`` shows them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _column(table: Mapping[str, Any], name: str) -> list:
    return list(np.asarray(table[name], dtype=object))


def _number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _label(value: Any, sep: str = ", ") -> str:
    if isinstance(value, dict):
        return sep.join(f"{k}={_label(v)}" for k, v in value.items())
    return f"{value:g}" if _number(value) else str(value)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _ordered(values: Sequence[Any]) -> list:
    unique: list = []
    for value in values:
        if value not in unique:
            unique.append(value)
    return sorted(unique) if all(_number(v) for v in unique) else unique


def errorbar_plot(table: Mapping[str, Any], keys: Sequence[str], metric: str, ax) -> None:
    """``metric`` (mean ± 1 SE) against ``keys[0]``; one line per combination of the others,
    shifted sideways by a hair so that their error bars do not hide each other."""
    x_key, others = keys[0], list(keys[1:])
    xs_all = _column(table, x_key)
    numeric = all(_number(v) for v in xs_all)
    ticks = _ordered(xs_all)
    means = [_float(v) for v in _column(table, metric)]
    ses = [_float(v) for v in _column(table, f"{metric}_se")] if f"{metric}_se" in table else None
    groups: dict[str, list[int]] = {}
    for i in range(len(xs_all)):
        label = ", ".join(f"{k}={_label(table[k][i])}" for k in others) or metric
        groups.setdefault(label, []).append(i)
    span = (max(ticks) - min(ticks) or 1.0) if numeric else 1.0
    for j, (label, rows) in enumerate(groups.items()):
        rows = [i for i in rows if math.isfinite(means[i])]
        rows.sort(key=lambda i: ticks.index(xs_all[i]))
        dodge = (j - (len(groups) - 1) / 2) * 0.015 * span  # error bars side by side
        x = [(xs_all[i] if numeric else ticks.index(xs_all[i])) + dodge for i in rows]
        err = [ses[i] if math.isfinite(ses[i]) else 0.0 for i in rows] if ses else None
        ax.errorbar(x, [means[i] for i in rows], yerr=err, marker="o", capsize=3, label=label)
    if not numeric:
        ax.set_xticks(range(len(ticks)), [_label(v) for v in ticks])
    ax.set_xlabel(x_key)
    ax.set_ylabel(f"{metric} (mean ± 1 SE)")
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize="small")


def heatmap(table: Mapping[str, Any], keys: Sequence[str], metric: str, ax) -> None:
    """The mean of ``metric`` over ``keys[0]`` (columns) × ``keys[1]`` (rows), "mean ± SE" in
    each cell (empty cells: no finished seed)."""
    if len(keys) != 2:
        raise ValueError(f"heatmap: needs two grid keys, got {list(keys)}")
    x_key, y_key = keys
    xs, ys = _column(table, x_key), _column(table, y_key)
    cols, rows = _ordered(xs), _ordered(ys)
    grid = np.full((len(rows), len(cols)), np.nan)
    se = np.full_like(grid, np.nan)
    means = _column(table, metric)
    ses = _column(table, f"{metric}_se") if f"{metric}_se" in table else [math.nan] * len(xs)
    for i in range(len(xs)):
        r, c = rows.index(ys[i]), cols.index(xs[i])
        grid[r, c], se[r, c] = _float(means[i]), _float(ses[i])
    image = ax.imshow(grid, cmap="viridis", origin="lower", aspect="auto")
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for r in range(len(rows)):
        for c in range(len(cols)):
            if not math.isfinite(grid[r, c]):
                continue
            text = f"{grid[r, c]:.3f}" + (f"\n± {se[r, c]:.3f}" if math.isfinite(se[r, c]) else "")
            color = "black" if grid[r, c] > middle else "white"
            ax.text(c, r, text, ha="center", va="center", fontsize="small", color=color)
    ax.set_xticks(range(len(cols)), [_label(v, "\n") for v in cols])
    ax.set_yticks(range(len(rows)), [_label(v, "\n") for v in rows])
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.figure.colorbar(image, ax=ax, label=f"{metric} (mean)")
