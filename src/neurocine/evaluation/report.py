"""Rendering an evaluation: the markdown table, its notes, flat metrics and the written files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from neurocine.analysis.published import CC2017_MODULES, published_table
from neurocine.fileio import atomic_path

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
GROUND_TRUTH = "ground_truth"
LABELS = {
    "neurocine": "NeuroCine",
    "mean_frame": "mean training frame",
    "ridge": "ridge fMRI → pixels",
    "oracle": "oracle (fmri_clean)",
    "clip_oracle": "CLIP oracle (true image embedding)",
    GROUND_TRUTH: "ground truth (CLIP-pcc only)",
}


def paired_note(result: dict[str, Any], model: str = "neurocine") -> str | None:
    """One line: ``model`` minus each baseline on the largest n-way (video, frame) ± SE."""
    paired = result.get("paired") or {}
    keys = [k for k, _ in metric_columns(result["rows"]) if k.endswith("way")]
    largest = [
        max((k for k in keys if k.startswith(kind)), key=lambda k: int(k.split("_")[1][:-3]))
        for kind in ("video", "frame")
        if any(k.startswith(kind) for k in keys)
    ]
    labels = result.get("labels", LABELS)
    names = {key: key.replace("_", " ").replace("way", "-way") for key in largest}
    parts = [
        f"{labels.get(row, row)}: "
        + ", ".join(
            f"{names[key]} {d[key]['diff']:+.3f} ± {d[key]['se']:.3f}"
            for key in largest
            if key in d
        )
        for row, d in paired.items()
        if any(key in d for key in largest)
    ]
    if not parts:
        return None
    first: dict[str, Any] = next(iter(next(iter(paired.values())).values()), {})
    over = f" over {first['groups']} scenes" if first.get("groups", 0) < first.get("n", 0) else ""
    return (
        f"{labels.get(model, model)} minus each row, paired over the same clips and n-way draws "
        f"(mean ± standard error{over}): " + "; ".join(parts)
    )


def metric_columns(rows: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
    """``(key, header)`` of the table's columns, in order, for the metrics any row has."""
    keys = {k for metrics in rows.values() for k in metrics}
    columns = [("ssim", "SSIM ↑"), ("psnr", "PSNR dB ↑")]
    for kind in ("frame", "video"):
        ways = sorted(
            int(k.split("_")[1][:-3])
            for k in keys
            if k.startswith(f"{kind}_") and k.endswith("way")
        )
        for n in ways:
            columns += [(f"{kind}_{n}way", f"{n}-way {kind} ↑")]
            columns += [(f"{kind}_{n}way_strict", f"{n}-way {kind} strict ↑")]
    columns += [
        ("clip_similarity", "CLIP sim ↑"),
        ("clip_pcc", "CLIP-pcc"),
        ("clip_pcc_all", "CLIP-pcc all pairs"),
    ]
    return [(k, h) for k, h in columns if k in keys]


def markdown_table(result: dict[str, Any]) -> str:
    """The metrics table of a ``metrics.json`` dict, one row per model/baseline, plus notes."""
    rows = result["rows"]
    columns = metric_columns(rows)
    lines = [
        "| | " + " | ".join(h for _, h in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, metrics in rows.items():
        cells = []
        for key, _ in columns:
            value = metrics.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("–")
            elif key == "psnr":
                cells.append(f"{value:.2f}")
            else:
                cells.append(f"{value:.3f}")
        lines.append(
            f"| {result.get('labels', LABELS).get(name, name)} | " + " | ".join(cells) + " |"
        )
    chance = result.get("chance") or {}
    notes = []
    if chance:
        parts = ", ".join(f"{n}-way {v:.3f}" for n, v in chance.items())
        strict = ", ".join(f"{n}-way {v:.3f}" for n, v in result.get("chance_strict", {}).items())
        notes.append(
            f"n-way chance, MinD-Video's protocol (a trial counts when any of the ground truth's "
            f"top {result.get('k_true', 3)} classes wins): {parts}; strict (its top-1 class "
            f"only): {strict}"
        )
    notes.append(
        f"{result['n_clips']} {result['split']} clips scored "
        f"({result['n_excluded_scene_cut']} spanning a scene cut left out); "
        f"classifier: {result.get('classifier') or 'none'}; CLIP: {result.get('clip') or 'none'}"
    )
    if any("clip_pcc" in m for m in rows.values()):
        notes.append(
            f"CLIP-pcc: mean cosine of the CLIP image embeddings ({result.get('clip')}) of "
            "adjacent frames (NeuroClips); all pairs: of every two frames (NEURONS); a still "
            "video scores 1, so read it beside the ground truth's and the mean frame's"
        )
    if result.get("ssim_variant", "mindvideo") != "mindvideo":
        notes.append(f"SSIM: the {result['ssim_variant']} variant (evaluation.ssim)")
    paired = paired_note(result)
    if paired:
        notes.append(paired)
    notes += result.get("notes", [])
    table = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if result.get("data_module") in CC2017_MODULES and "neurocine" in rows:
        label = result.get("labels", LABELS).get("neurocine", "neurocine")
        table += "\n" + published_table(label, rows["neurocine"], result.get("protocol", {}))
    return table


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """``{"neurocine/ssim": …, "oracle/video_50way": …}`` from a ``metrics.json`` dict."""
    return {f"{row}/{k}": v for row, metrics in result["rows"].items() for k, v in metrics.items()}


def finite_json(value: Any) -> Any:
    """Strict JSON: non-finite floats (PSNR of identical clips) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


def write_report(out_dir: str | Path, result: dict[str, Any]) -> tuple[Path, Path, str]:
    """Write ``metrics.json`` (strict JSON) and ``metrics.md`` into ``out_dir`` (atomically).

    Returns the two paths and the markdown table.
    """
    out = Path(out_dir)
    table = markdown_table(result)
    with atomic_path(out / METRICS_JSON) as tmp:
        tmp.write_text(json.dumps(finite_json(result), indent=2, allow_nan=False))
    with atomic_path(out / METRICS_MD) as tmp:
        tmp.write_text(table)
    return out / METRICS_JSON, out / METRICS_MD, table
