"""``neurocine sweep FILE``: run a grid of experiments and tabulate one metric (docs/design.md §8).

A sweep YAML (validated against :class:`SweepSpec`; unknown keys are errors)::

    base: experiments/stage1.yaml        # the experiment every point starts from
    base_stage2: experiments/stage2.yaml # stages [stage1, stage2]: stage 2's experiment
    stages: [stage1]                     # or [stage1, stage2]
    metric: val/top1_50way               # what the table sorts on and the plot shows
    sweep:                               # the grid: every combination of these values
      data.augment.mask_ratio: [0.0, 0.25, 0.5, 0.75]
    overrides: [trainer.max_epochs=5]    # key=value applied to every point first

Before anything runs, every point's config is composed (``base`` ← ``overrides`` ← the point's
values) and validated against :class:`~neurocine.config.ExperimentConfig`: a grid key that the
schema does not have, or a value of the wrong type, fails the whole sweep with the key named.

Each point trains stage 1 (and stage 2 with ``stage2.encoder_ckpt`` = that stage-1 run's
encoder, then reconstructs ``evaluation.reconstruct_limit`` test clips and evaluates them).
Stage-1 runs are shared between points whose stage-1 config is the same (a
``stage2.noise.ratio`` sweep trains stage 1 once). Metrics of a point: the last logged value
of every column of the stage-1 CSV log (``val/top1_50way``, …), the stage-2 log's columns
prefixed ``stage2:``, and with stage 2 the evaluation rows (``neurocine/ssim``,
``ridge/video_50way``, … see :func:`neurocine.evaluation.flat_metrics`).

Outputs, in ``<out_dir>/<name>/`` (default ``runs/sweeps/<file stem>/``)::

    sweep.yaml                     the validated spec
    points/<key=value,…>/done.json a finished point: values, metrics, run directories
    points/<key=value,…>/stage2/   its stage-2 run (with samples/ and metrics.json)
    stage1/<config hash>/          stage-1 runs (+ done.json), shared by identical configs
    results.csv, results.md        one row per point
    plot.png                       metric vs. value (one line per combination of other keys)

A point is finished when its ``done.json`` exists and names the same values; a re-run skips it
(and a finished stage-1 run), so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from neurocine.analysis.runs import final_metrics
from neurocine.config import check_config, load_config, merge_layer, require
from neurocine.errors import ConfigError
from neurocine.fileio import atomic_path

STAGES = ("stage1", "stage2")
EVAL_ROWS = ("neurocine", "mean_frame", "ridge", "oracle")
# Sections that stage-1 training never reads: left out of the hash that shares stage-1 runs.
NOT_STAGE1 = ("name", "stage", "runs_dir", "ckpt_path", "unet", "stage2", "sampling", "evaluation")


@dataclass
class SweepSpec:
    """The schema of a sweep YAML (module docstring)."""

    base: str = MISSING
    sweep: dict[str, list[Any]] = MISSING
    stages: list[str] = field(default_factory=lambda: ["stage1"])
    base_stage2: str | None = None  # stage 2's experiment; None: ``base`` serves both stages
    metric: str = "val/top1_50way"
    mode: str = "max"  # max | min: which value of ``metric`` is best (marked in results.md)
    overrides: list[str] = field(default_factory=list)
    name: str | None = None  # None: the file's stem
    out_dir: str = "runs/sweeps"


@dataclass
class Point:
    """One grid point: its values and the validated configs of its stages."""

    values: dict[str, Any]
    configs: dict[str, DictConfig]

    @property
    def id(self) -> str:
        return point_id(self.values)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def point_id(values: dict[str, Any]) -> str:
    """``key=value,key=value``, safe as a folder name."""
    text = ",".join(f"{k}={_fmt(v)}" for k, v in values.items())
    return "".join(c if c.isalnum() or c in "=,._-[]" else "_" for c in text)


def load_spec(path: str | Path) -> DictConfig:
    """Read and validate a sweep YAML against :class:`SweepSpec`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    try:
        layer = OmegaConf.load(path)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML: {first}") from exc
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{path}: expected a mapping (base, sweep, stages, metric, …)")
    spec = merge_layer(OmegaConf.structured(SweepSpec), layer, str(path))
    require(spec, "base", "sweep")
    stages = list(spec.stages)
    if not stages or any(s not in STAGES for s in stages) or stages != sorted(set(stages)):
        raise ConfigError(f"{path}: stages {stages}: expected [stage1] or [stage1, stage2]")
    if stages == ["stage2"]:
        raise ConfigError(f"{path}: stages [stage2] alone: a sweep trains stage 1 first")
    if not spec.sweep:
        raise ConfigError(f"{path}: key 'sweep': no grid keys")
    for key, values in spec.sweep.items():
        if not values:
            raise ConfigError(f"{path}: sweep key '{key}': empty list of values")
    if spec.mode not in ("max", "min"):
        raise ConfigError(f"{path}: mode '{spec.mode}': expected max or min")
    if stages == ["stage1"] and str(spec.metric).split("/")[0] in EVAL_ROWS:
        raise ConfigError(
            f"{path}: metric '{spec.metric}' comes from `neurocine evaluate`: "
            "it needs stages [stage1, stage2]"
        )
    with open_dict(spec):
        spec.name = spec.name or path.stem
    return spec


def open_dict(cfg: DictConfig):
    from omegaconf import open_dict as _open_dict

    return _open_dict(cfg)


def _point_layer(values: dict[str, Any]) -> DictConfig:
    layer = OmegaConf.create()
    for key, value in values.items():
        OmegaConf.update(layer, key, value, force_add=True)
    return layer


def stage_config(
    experiment: str, stage: str, overrides: Sequence[str], values: dict[str, Any], source: str
) -> DictConfig:
    """One stage's config of a point: ``experiment`` ← overrides ← the point's values."""
    dm = {k: v for k, v in values.items() if k == "data_module"}
    rest = {k: v for k, v in values.items() if k != "data_module"}
    tokens = [*overrides, *(f"data_module={v}" for v in dm.values()), f"stage={stage}"]
    cfg = load_config(experiment, tokens)
    cfg = merge_layer(cfg, _point_layer(rest), f"{source}: {point_id(values)}")
    OmegaConf.set_struct(cfg, True)
    return check_config(cfg)


def expand(spec: DictConfig, source: str = "sweep") -> list[Point]:
    """Every grid point with its validated stage configs (raises before anything runs)."""
    keys = list(spec.sweep.keys())
    grids = [list(spec.sweep[k]) for k in keys]
    points = []
    for combo in itertools.product(*grids):
        values = {
            k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
            for k, v in zip(keys, combo, strict=True)
        }
        configs = {}
        for stage in spec.stages:
            experiment = spec.base
            if stage == "stage2" and spec.base_stage2:
                experiment = spec.base_stage2
            configs[stage] = stage_config(
                experiment, stage, list(spec.overrides), values, f"{source}: sweep"
            )
        points.append(Point(values, configs))
    ids = [p.id for p in points]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{source}: two grid points share a folder name; make the values unique")
    return points


# --- results of runs ---------------------------------------------------------------------------


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage1_hash(cfg: DictConfig) -> str:
    """12 hex digits of the stage-1-relevant part of a config (see :data:`NOT_STAGE1`)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_STAGE1:
        data.pop(key, None)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def with_values(cfg: DictConfig, **values: Any) -> DictConfig:
    """``cfg`` with dotted ``key=value`` settings merged in (validated like a sweep point)."""
    return merge_layer(cfg, _point_layer(values), "sweep")


# --- running -----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced."""

    out_dir: Path
    rows: list[dict[str, Any]]
    ran: list[str]
    skipped: list[str]
    csv_path: Path
    md_path: Path
    plot_path: Path | None


def _run_stage1(cfg: DictConfig, root: Path, log: Callable[[str], None]) -> tuple[Path, dict]:
    digest = stage1_hash(cfg)
    folder = root / "stage1" / digest
    done = _read_json(folder / "done.json")
    if done and Path(done["run"]).is_dir():
        log(f"  stage1: finished earlier ({done['run']})")
        return Path(done["run"]), done["metrics"]
    from neurocine.training import fit

    run = fit(with_values(cfg, name="stage1", runs_dir=str(folder)))
    metrics = final_metrics(run)
    _write_json(folder / "done.json", {"run": str(run), "metrics": metrics})
    return run, metrics


def _run_stage2(
    cfg: DictConfig, encoder_run: Path, folder: Path, progress: bool
) -> tuple[Path, dict]:
    from neurocine.evaluation import SAMPLES_DIR, evaluate_run, flat_metrics
    from neurocine.reconstruct import reconstruct
    from neurocine.training import fit

    encoder = str(encoder_run / "encoder")
    cfg = with_values(cfg, name="stage2", runs_dir=str(folder), **{"stage2.encoder_ckpt": encoder})
    run = fit(cfg)
    limit = cfg.evaluation.reconstruct_limit
    reconstruct(run, run / SAMPLES_DIR, limit=limit, progress=progress, videos=False)
    evaluation = evaluate_run(run, progress=progress)
    metrics = {f"stage2:{k}": v for k, v in final_metrics(run).items()}
    metrics.update(flat_metrics(evaluation.result))
    return run, metrics


def run_sweep(
    path: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Validate every point, run the unfinished ones, and write the table and the plot."""
    spec = load_spec(path)
    points = expand(spec, str(path))
    root = Path(spec.out_dir) / str(spec.name)
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "sweep.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(spec))
    rows, ran, skipped = [], [], []
    for i, point in enumerate(points, 1):
        folder = root / "points" / point.id
        done = _read_json(folder / "done.json")
        if done and done.get("id") == point.id:
            log(f"[{i}/{len(points)}] {point.id}: finished earlier, skipped")
            skipped.append(point.id)
            rows.append(done)
            continue
        log(f"[{i}/{len(points)}] {point.id}: running {' + '.join(spec.stages)}")
        started = time.perf_counter()
        run1, metrics = _run_stage1(point.configs["stage1"], root, log)
        runs = {"stage1": str(run1)}
        if "stage2" in spec.stages:
            run2, m2 = _run_stage2(point.configs["stage2"], run1, folder, progress)
            runs["stage2"] = str(run2)
            metrics = {**metrics, **m2}
        if spec.metric not in metrics:
            raise ConfigError(
                f"{path}: metric '{spec.metric}' was not produced; available: "
                + ", ".join(sorted(metrics))
            )
        record = {
            "id": point.id,
            "values": point.values,
            "metrics": metrics,
            "runs": runs,
            "seconds": round(time.perf_counter() - started, 1),
        }
        _write_json(folder / "done.json", record)
        rows.append(record)
        ran.append(point.id)
        log(f"  {spec.metric} = {metrics[spec.metric]:.4g}")
    csv_path, md_path = write_tables(root, spec, rows)
    plot_path = plot(root / "plot.png", spec, rows)
    return SweepResult(root, rows, ran, skipped, csv_path, md_path, plot_path)


# --- tables and plot ---------------------------------------------------------------------------


def _columns(spec: DictConfig, rows: list[dict]) -> list[str]:
    names = sorted({k for r in rows for k in r["metrics"]} - {spec.metric})
    return [spec.metric, *names]


def write_tables(root: Path, spec: DictConfig, rows: list[dict]) -> tuple[Path, Path]:
    """``results.csv`` (every metric) and ``results.md`` (the metric, best marked)."""
    keys = list(spec.sweep.keys())
    metrics = _columns(spec, rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["point", *keys, *metrics, "seconds"])
    for r in rows:
        writer.writerow(
            [r["id"], *(_fmt(r["values"][k]) for k in keys)]
            + [r["metrics"].get(m, "") for m in metrics]
            + [r.get("seconds", "")]
        )
    csv_path = root / "results.csv"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue())
    values = [r["metrics"].get(spec.metric) for r in rows]
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    best = (max if spec.mode == "max" else min)(finite) if finite else None
    lines = [
        f"Sweep `{spec.name}` ({' + '.join(spec.stages)}; base {spec.base}); "
        f"metric `{spec.metric}` ({spec.mode} is best, **bold**).",
        "",
        "| " + " | ".join([*keys, spec.metric]) + " |",
        "|" + "---|" * len(keys) + "---:|",
    ]
    for r, v in zip(rows, values, strict=True):
        cell = "–" if v is None else f"{v:.4g}"
        if v is not None and v == best:
            cell = f"**{cell}**"
        lines.append("| " + " | ".join([*(_fmt(r["values"][k]) for k in keys), cell]) + " |")
    md_path = root / "results.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def plot(path: Path, spec: DictConfig, rows: list[dict]) -> Path | None:
    """Metric vs. the first grid key; one line per combination of the other keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(spec.sweep.keys())
    x_key, others = keys[0], keys[1:]
    x_values = list(spec.sweep[x_key])
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in x_values)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    groups: dict[str, list[tuple[Any, float]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={_fmt(r['values'][k])}" for k in others) or spec.metric
        y = r["metrics"].get(spec.metric)
        if y is not None:
            groups.setdefault(label, []).append((r["values"][x_key], float(y)))
    for label, pts in groups.items():
        if numeric:
            pts = sorted(pts, key=lambda p: p[0])
            xs = [p[0] for p in pts]
        else:
            xs = [x_values.index(p[0]) if p[0] in x_values else 0 for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker="o", label=label)
    if not numeric:
        ax.set_xticks(range(len(x_values)), [_fmt(v) for v in x_values])
    ax.set_xlabel(x_key)
    ax.set_ylabel(spec.metric)
    ax.set_title(f"sweep {spec.name}")
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
