"""A run's per-clip scores and paired gaps, read from the ``metrics.json`` of ``neurocine
evaluate`` (its ``per_clip``, ``clip_rows`` and ``paired`` entries), for notebooks.

Only reads the dict: the numbers are the evaluation's (docs/design.md §9).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neurocine.errors import CheckpointError


def per_clip(evaluation: dict[str, Any], metric: str, row: str = "neurocine") -> np.ndarray:
    """``row``'s per-clip ``metric`` (float [N], NaN where not finite), in ``clip_rows`` order.

    Raises
    ------
    CheckpointError
        ``metrics.json`` holds no per-clip ``metric`` for ``row``; names the ones it has.
    """
    rows = evaluation.get("per_clip") or {}
    if metric not in rows.get(row, {}):
        have = sorted(rows.get(row, {}))
        raise CheckpointError(f"metrics.json: no per-clip '{metric}' for '{row}' (has {have})")
    return np.array([np.nan if v is None else v for v in rows[row][metric]], dtype=np.float64)


def default_metric(evaluation: dict[str, Any], row: str = "neurocine") -> str:
    """The largest video n-way when scored (``video_50way``), else SSIM."""
    keys = list((evaluation.get("per_clip") or {}).get(row, {}))
    ways = [k for k in keys if k.startswith("video_") and k.endswith("way")]
    if ways:
        return max(ways, key=lambda k: int(k[len("video_") : -len("way")]))
    return "ssim"


def ranked_clips(
    evaluation: dict[str, Any], metric: str, n: int = 3, row: str = "neurocine"
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """The ``n`` best and ``n`` worst clips by ``row``'s ``metric`` as ``(clip row, score)``.

    Clip rows are those of the split's HDF5 group (``Reconstructions.index``); ties keep the
    evaluation's order; clips without a finite score are left out.
    """
    scores = per_clip(evaluation, metric, row)
    clip_rows = np.asarray(evaluation["clip_rows"], dtype=np.int64)
    ok = np.flatnonzero(np.isfinite(scores))
    order = ok[np.argsort(-scores[ok], kind="stable")]
    pairs = [(int(clip_rows[i]), float(scores[i])) for i in order]
    n = min(n, len(pairs) // 2)
    return pairs[:n], pairs[len(pairs) - n :][::-1]


def paired_gaps(evaluation: dict[str, Any], model: str = "neurocine") -> list[dict[str, Any]]:
    """``model`` minus each baseline, per metric: ``{"baseline", "metric", "diff", "se", "n",
    "groups"}`` from ``metrics.json``'s ``paired`` (clip by clip, scene-clustered SE)."""
    labels = evaluation.get("labels", {})
    return [
        {"baseline": labels.get(row, row), "metric": metric, **stats}
        for row, metrics in (evaluation.get("paired") or {}).items()
        for metric, stats in metrics.items()
    ]


def gaps_markdown(gaps: list[dict[str, Any]], model: str = "NeuroCine") -> str:
    """A markdown table of :func:`paired_gaps`: one row per metric, one column per baseline,
    ``diff ± SE`` in each cell; a gap beyond 2 SE in bold."""
    if not gaps:
        return "*no paired differences (evaluated without baselines)*"
    metrics = list(dict.fromkeys(g["metric"] for g in gaps))
    baselines = list(dict.fromkeys(g["baseline"] for g in gaps))
    cell = {(g["baseline"], g["metric"]): g for g in gaps}
    lines = [
        f"| {model} minus | " + " | ".join(baselines) + " |",
        "|---|" + "---:|" * len(baselines),
    ]
    for metric in metrics:
        parts = []
        for base in baselines:
            g = cell.get((base, metric))
            if g is None:
                parts.append("")
                continue
            text = f"{g['diff']:+.3f} ± {g['se']:.3f}"
            parts.append(f"**{text}**" if abs(g["diff"]) > 2 * g["se"] else text)
        lines.append(f"| {metric} | " + " | ".join(parts) + " |")
    first = gaps[0]
    lines += [
        "",
        f"Paired over {first['n']} clips (SE clustered over {first['groups']} scenes); "
        "bold: beyond 2 SE.",
    ]
    return "\n".join(lines)
