"""``neurocine sweep FILE``: a grid of experiments over seeds, tabulated (docs/design.md §8).

A sweep YAML (validated against :class:`SweepSpec`; unknown keys are errors)::

    base: experiments/stage1.yaml        # the experiment every point starts from
    base_stage2: experiments/stage2.yaml # stages [stage1, stage2]: stage 2's experiment
    stages: [stage1]                     # or [stage1, stage2]
    metric: val/top1_50way               # what the verdicts and plots are about
    sweep:                               # the grid: every combination of these values
      data.augment.mask_ratio: [0.0, 0.25, 0.5, 0.75]
    seeds: [0, 1, 2]                     # every point once per seed (replaces `seed`)
    reference: {data.augment.mask_ratio: 0.0}  # paired differences to this point (keys left
                                         # out: one reference per value of theirs)
    overrides: [trainer.max_epochs=5]    # key=value applied to every point first
    launcher: {name: local}              # local | submitit_local | slurm (see LauncherSpec)

Before anything runs, every point's config is composed (``base`` ← ``overrides`` ← the point's
values) and validated against :class:`~neurocine.config.ExperimentConfig`, and ``seeds``,
``reference`` and ``launcher`` are checked: a bad value fails the whole sweep with the key named.

Each run (a point and a seed) trains stage 1 (and stage 2 with ``stage2.encoder_ckpt`` = that
stage-1 run's encoder, then reconstructs ``evaluation.reconstruct_limit`` clips of
``evaluation.split`` and evaluates them). Stage-1 runs are shared between runs whose stage-1 config
(seed included) is the same: a ``stage2.noise.ratio`` sweep trains stage 1 once per seed. All
stage-1 runs are trained first, then all stage-2 runs; ``--workers N`` runs N of them at once in
separate processes (each with cores ÷ N torch threads; with ``trainer.accelerator=gpu`` worker k
uses GPU k), a submitit launcher submits each as a job. Metrics of a run: the last logged value of
every column of the stage-1 CSV log (``val/top1_50way``, …), the stage-2 log's columns prefixed
``stage2:``, and with stage 2 the evaluation rows (``neurocine/ssim``, ``ridge/video_50way``, … see
:func:`neurocine.evaluation.flat_metrics`).

Outputs, in ``<out_dir>/<name>/`` (default ``runs/sweeps/<file stem>/``)::

    sweep.yaml                             the validated spec
    points/<key=value,…>/seed=<s>/done.json   a finished run: values, seed, metrics, run folders
    points/<key=value,…>/seed=<s>/failed.json a failed run: its one-line error
    points/<key=value,…>/seed=<s>/stage2/     its stage-2 run (with samples/ and metrics.json)
    stage1/<config hash>/                  stage-1 runs (+ done.json), shared by identical configs
    results_runs.csv                       one row per point and seed (every metric)
    results.csv, results.md                one row per point: n, mean and SE of every metric,
                                           paired differences to the reference, verdict
    plot.png, heatmap.png                  mean ± 1 SE vs. the first key; two keys: a heatmap

A run is finished when its ``done.json`` exists and names the same point and seed; a re-run
skips it (and a finished stage-1 run), so an interrupted sweep continues where it stopped; a
failed run is tried again. The statistics are :mod:`neurocine.sweep_stats`, the figures
:mod:`neurocine.sweep_plots`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import MISSING, DictConfig, OmegaConf

from neurocine.analysis.runs import final_metrics
from neurocine.config import check_config, load_config, merge_layer, require
from neurocine.errors import ConfigError
from neurocine.evaluation import SAMPLES_DIR, evaluate_run, flat_metrics
from neurocine.fileio import atomic_path
from neurocine.reconstruct import reconstruct
from neurocine.sweep_plots import errorbar_plot, heatmap
from neurocine.sweep_stats import best_vs_runner_up, summarize
from neurocine.training import fit

STAGES = ("stage1", "stage2")
EVAL_ROWS = ("neurocine", "mean_frame", "ridge", "oracle")
# Sections that stage-1 training never reads: left out of the hash that shares stage-1 runs.
NOT_STAGE1 = ("name", "stage", "runs_dir", "ckpt_path", "unet", "stage2", "sampling", "evaluation")


LAUNCHERS = ("local", "submitit_local", "slurm")


@dataclass
class LauncherSpec:
    """How the runs are started: ``local`` processes, or submitit jobs (``submitit_local``:
    submitit's local executor, real subprocesses without a cluster; ``slurm``: SLURM jobs)."""

    name: str = "local"
    folder: str | None = None  # submitit's job files and logs (None: <sweep folder>/submitit)
    partition: str | None = None  # slurm: the partition (None: the cluster's default)
    time_min: int = 60  # submitit: each job's time limit in minutes
    gpus_per_job: int = 0
    cpus_per_job: int = 1  # also the job's torch threads
    mem_gb: float | None = None
    slurm_additional: dict[str, Any] = field(default_factory=dict)  # e.g. {account: abc}


@dataclass
class SweepSpec:
    """The schema of a sweep YAML (module docstring)."""

    base: str = MISSING
    sweep: dict[str, list[Any]] = MISSING
    stages: list[str] = field(default_factory=lambda: ["stage1"])
    base_stage2: str | None = None  # stage 2's experiment; None: ``base`` serves both stages
    metric: str = "val/top1_50way"
    mode: str = "max"  # max | min: which direction of ``metric`` is better
    seeds: list[int] | None = None  # None: one run per point with the experiment's own seed
    reference: dict[str, Any] | None = None  # grid values of the point differences are paired to
    overrides: list[str] = field(default_factory=list)
    name: str | None = None  # None: the file's stem
    out_dir: str = "runs/sweeps"
    launcher: LauncherSpec = field(default_factory=LauncherSpec)


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
    if isinstance(value, dict):
        return "[" + ",".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "]"
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
    _check_seeds(spec, path)
    _check_reference(spec, path)
    _check_launcher(spec.launcher, path)
    with open_dict(spec):
        spec.name = spec.name or path.stem
    return spec


def _check_seeds(spec: DictConfig, path: Path) -> None:
    if spec.seeds is None:
        return
    seeds = list(spec.seeds)
    if not seeds:
        raise ConfigError(f"{path}: key 'seeds': empty list (omit it for the experiment's seed)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{path}: key 'seeds': {seeds} repeats a seed")
    if "seed" in spec.sweep:
        raise ConfigError(f"{path}: key 'seeds' and grid key 'seed': give seeds in one place")


def _check_reference(spec: DictConfig, path: Path) -> None:
    if spec.reference is None:
        return
    keys, given = list(spec.sweep.keys()), list(spec.reference.keys())
    unknown = [k for k in given if k not in keys]
    if not given or unknown:
        raise ConfigError(
            f"{path}: key 'reference': {unknown or 'no keys'}: name values of grid keys {keys}"
        )
    grid = cast(dict[str, Any], OmegaConf.to_container(spec.sweep))
    reference = cast(dict[str, Any], OmegaConf.to_container(spec.reference))
    with open_dict(spec):
        for key in given:
            match = [v for v in grid[key] if v == reference[key]]
            if not match:
                raise ConfigError(
                    f"{path}: reference '{key}: {_fmt(reference[key])}' is not one of the grid's "
                    f"values {_fmt(grid[key])}"
                )
            spec.reference[key] = match[0]  # the grid's own spelling (0 → 0.0)


def _check_launcher(launcher: DictConfig, path: Path) -> None:
    if launcher.name not in LAUNCHERS:
        raise ConfigError(
            f"{path}: launcher.name '{launcher.name}': expected one of {', '.join(LAUNCHERS)}"
        )
    for key, low in (("time_min", 1), ("gpus_per_job", 0), ("cpus_per_job", 1)):
        if launcher[key] < low:
            raise ConfigError(f"{path}: launcher.{key}={launcher[key]}: must be ≥ {low}")
    if launcher.mem_gb is not None and launcher.mem_gb <= 0:
        raise ConfigError(f"{path}: launcher.mem_gb={launcher.mem_gb}: must be > 0")


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


@dataclass
class Job:
    """One run of a sweep: a grid point with one seed (its stage configs carry the seed)."""

    point: Point
    seed: int
    configs: dict[str, DictConfig]

    @property
    def id(self) -> str:
        return f"{self.point.id}/seed={self.seed}"


def jobs(spec: DictConfig, points: Sequence[Point]) -> list[Job]:
    """Every point × seed (``spec.seeds``; None: the point's own ``seed``), point-major."""
    out = []
    for point in points:
        seeds = list(spec.seeds) if spec.seeds is not None else [point.configs["stage1"].seed]
        for seed in seeds:
            configs = {
                stage: with_values(cfg, seed=int(seed)) for stage, cfg in point.configs.items()
            }
            out.append(Job(point, int(seed), configs))
    return out


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
    data = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    for key in NOT_STAGE1:
        data.pop(key, None)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def with_values(cfg: DictConfig, **values: Any) -> DictConfig:
    """``cfg`` with dotted ``key=value`` settings merged in (validated like a sweep point)."""
    return merge_layer(cfg, _point_layer(values), "sweep")


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` — how a failed run is recorded."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# --- one run of one stage, in whatever process the launcher gives it ---------------------------


@dataclass
class Task:
    """Train one stage of one run into ``folder`` (picklable: it travels to workers and jobs)."""

    kind: str  # stage1 | stage2
    label: str
    cfg: DictConfig
    folder: str
    encoder_run: str | None = None  # stage 2: the stage-1 run whose encoder it starts from
    progress: bool = False


_WORKER: dict[str, int] = {}  # this process's worker slot and thread budget (pool workers)


def _init_worker(slots: Any, threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    _WORKER.update(slot=int(slots.get()), threads=threads)


def finished(folder: Path) -> dict | None:
    """A task's ``done.json`` when its run directory still exists, else None."""
    done = _read_json(folder / "done.json")
    return done if done and Path(done.get("run", "")).is_dir() else None


def run_task(task: Task, threads: int | None = None) -> dict[str, Any]:
    """Run ``task``; write ``<folder>/<kind>/done.json`` (run, metrics, seconds) or
    ``failed.json`` (error) beside the stage's run directories.

    Returns that record with ``ok``. Exceptions are caught: a failing run does not stop others.
    """
    import torch

    threads = threads or _WORKER.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    folder = Path(task.folder)
    marks = folder / task.kind
    marks.mkdir(parents=True, exist_ok=True)
    (marks / "failed.json").unlink(missing_ok=True)
    cfg = task.cfg
    if "slot" in _WORKER and cfg.trainer.accelerator == "gpu":
        cfg = with_values(cfg, **{"trainer.devices": [_WORKER["slot"]]})
    started = time.perf_counter()
    try:
        if task.kind == "stage1":
            run, metrics = _train_stage1(cfg, folder)
        else:
            run, metrics = _run_stage2(cfg, Path(str(task.encoder_run)), folder, task.progress)
    except Exception as exc:  # noqa: BLE001 - recorded as the run's one-line error
        record = {"ok": False, "error": one_line(exc)}
        _write_json(marks / "failed.json", record)
        return record
    record = {"run": str(run), "metrics": metrics, "seconds": time.perf_counter() - started}
    _write_json(marks / "done.json", record)
    return {"ok": True, **record}


def _train_stage1(cfg: DictConfig, folder: Path) -> tuple[Path, dict]:

    run = fit(with_values(cfg, name="stage1", runs_dir=str(folder)))
    return run, final_metrics(run)


def _run_stage2(
    cfg: DictConfig, encoder_run: Path, folder: Path, progress: bool
) -> tuple[Path, dict]:

    encoder = str(encoder_run / "encoder")
    cfg = with_values(cfg, name="stage2", runs_dir=str(folder), **{"stage2.encoder_ckpt": encoder})
    run = fit(cfg)
    limit = cfg.evaluation.reconstruct_limit
    split = str(cfg.evaluation.split)
    reconstruct(run, run / SAMPLES_DIR, split=split, limit=limit, progress=progress, videos=False)
    evaluation = evaluate_run(run, progress=progress)
    metrics = {f"stage2:{k}": v for k, v in final_metrics(run).items()}
    metrics.update(flat_metrics(evaluation.result))
    return run, metrics


# --- launchers: run a list of tasks, at most `workers` at once --------------------------------


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0))


def execute(
    tasks: Sequence[Task],
    launcher: DictConfig,
    workers: int | None,
    root: Path,
    log: Callable[[str], None],
    on_done: Callable[[int, dict], None] = lambda i, record: None,
) -> list[dict[str, Any]]:
    """Run ``tasks`` with ``launcher``; their records (see :func:`run_task`) in task order.

    ``on_done(index, record)`` is called in this process as each task ends.
    """
    if not tasks:
        return []
    started = time.perf_counter()
    index = {id(task): i for i, task in enumerate(tasks)}

    def report(task: Task, record: dict) -> None:
        state = f"done, {record['seconds']:.0f} s" if record["ok"] else f"FAILED: {record['error']}"
        log(f"  {task.label} ({task.kind}): {state} [{time.perf_counter() - started:.0f} s]")
        on_done(index[id(task)], record)

    if launcher.name == "local":
        n = workers or 1
        if n == 1:
            out = []
            for task in tasks:
                out.append(run_task(task))
                report(task, out[-1])
            return out
        return _run_pool(tasks, n, report)
    return _run_submitit(tasks, launcher, workers, root, report)


def _run_pool(tasks: Sequence[Task], n: int, report: Callable) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    slots = ctx.Queue()
    for k in range(n):
        slots.put(k)
    threads = max(1, cores() // n)
    out: list[dict] = [{}] * len(tasks)
    with ProcessPoolExecutor(
        n, mp_context=ctx, initializer=_init_worker, initargs=(slots, threads)
    ) as pool:
        futures = {pool.submit(run_task, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                out[i] = future.result()
            except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                out[i] = {"ok": False, "error": one_line(exc)}
            report(tasks[i], out[i])
    return out


def make_executor(launcher: DictConfig, root: Path):
    """A ``submitit.AutoExecutor`` for ``launcher`` (``slurm`` or ``submitit_local``).

    Jobs' files and logs go to ``launcher.folder`` (default ``<root>/submitit``), one folder per
    job id.
    """
    import submitit

    folder = Path(launcher.folder) if launcher.folder else root / "submitit"
    cluster = "slurm" if launcher.name == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    params: dict[str, Any] = {
        "name": f"sweep-{root.name}",
        "timeout_min": int(launcher.time_min),
        "gpus_per_node": int(launcher.gpus_per_job),
        "cpus_per_task": int(launcher.cpus_per_job),
    }
    if launcher.mem_gb is not None:
        params["mem_gb"] = float(launcher.mem_gb)
    if launcher.partition:
        params["slurm_partition"] = str(launcher.partition)
    if launcher.slurm_additional:
        params["slurm_additional_parameters"] = OmegaConf.to_container(launcher.slurm_additional)
    executor.update_parameters(**params)
    return executor


def _run_submitit(
    tasks: Sequence[Task],
    launcher: DictConfig,
    workers: int | None,
    root: Path,
    report: Callable,
) -> list[dict]:
    executor = make_executor(launcher, root)
    limit = workers or len(tasks)
    pending = list(range(len(tasks)))
    running: dict[int, Any] = {}
    out: list[dict] = [{}] * len(tasks)
    while pending or running:
        while pending and len(running) < limit:
            i = pending.pop(0)
            running[i] = executor.submit(run_task, tasks[i], int(launcher.cpus_per_job))
        for i, job in list(running.items()):
            if job.done():
                try:
                    out[i] = job.result()
                except Exception as exc:  # noqa: BLE001 - the job itself died (time limit, …)
                    out[i] = {"ok": False, "error": one_line(exc)}
                del running[i]
                report(tasks[i], out[i])
        time.sleep(0.5)
    return out


# --- the sweep ---------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced."""

    out_dir: Path
    records: list[dict[str, Any]]  # one per run (point × seed), done or failed
    rows: list[dict[str, Any]]  # one per point (see neurocine.sweep_stats.summarize)
    ran: list[str]
    skipped: list[str]
    failed: list[str]
    runs_csv_path: Path
    csv_path: Path
    md_path: Path
    plot_path: Path
    heatmap_path: Path | None


def run_sweep(
    path: str | Path,
    workers: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    out_dir: str | Path | None = None,
) -> SweepResult:
    """Validate every run, run the unfinished ones, and write the tables and the plots.

    ``workers``: runs at once (local: processes, default 1; submitit: jobs in flight, default
    all). ``out_dir``: replaces the spec's ``out_dir``.
    """
    spec = load_spec(path)
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers {workers}: must be ≥ 1")
    if out_dir is not None:
        spec.out_dir = str(out_dir)
    points = expand(spec, str(path))
    all_jobs = jobs(spec, points)
    root = Path(spec.out_dir) / str(spec.name)
    if spec.launcher.name == "local" and (workers or 1) > 1:
        _check_gpus(all_jobs, int(workers or 1))
    if spec.launcher.name != "local":
        try:
            make_executor(spec.launcher, root)  # slurm: is this a cluster (srun on PATH)?
        except RuntimeError as exc:
            raise ConfigError(f"{path}: launcher.name '{spec.launcher.name}': {exc}") from exc
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(root / "sweep.yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(spec))
    records: dict[str, dict] = {}
    todo = []
    for job in all_jobs:
        done = _read_json(root / "points" / job.id / "done.json")
        if done and done.get("id") == job.id:
            records[job.id] = done
        else:
            todo.append(job)
    skipped = [j.id for j in all_jobs if j.id in records]
    log(f"sweep {spec.name}: {len(all_jobs)} run(s), {len(skipped)} finished earlier")

    # Stage 1 first (each distinct config once), then stage 2; a run's done.json is written
    # as soon as its last stage finishes, so a killed sweep loses only the runs in flight.
    stage1: dict[str, dict] = {}  # config hash → the record of its stage-1 run
    tasks1: dict[str, Task] = {}
    users: dict[str, list[Job]] = {}  # config hash → the runs that share it
    for job in todo:
        digest = stage1_hash(job.configs["stage1"])
        users.setdefault(digest, []).append(job)
        folder = root / "stage1" / digest
        done = finished(folder / "stage1")
        if done:
            stage1[digest] = {"ok": True, **done}
        elif digest not in tasks1:
            tasks1[digest] = Task("stage1", job.id, job.configs["stage1"], str(folder))

    def stage1_done(digest: str, record: dict) -> None:
        stage1[digest] = record
        if "stage2" not in spec.stages or not record["ok"]:
            for job in users[digest]:
                records[job.id] = _collect(root, spec, job, record)

    log(f"stage 1: {len(tasks1)} run(s) to train")
    for digest in [d for d in users if d in stage1 and d not in tasks1]:
        stage1_done(digest, stage1[digest])
    execute(list(tasks1.values()), spec.launcher, workers, root, log,
            lambda i, record: stage1_done(list(tasks1)[i], record))  # fmt: skip
    if "stage2" in spec.stages:
        tasks2: dict[str, tuple[Job, Task]] = {}
        for job in todo:
            if job.id in records:  # its stage 1 failed
                continue
            first = stage1[stage1_hash(job.configs["stage1"])]
            folder = root / "points" / job.id
            if finished(folder / "stage2"):
                records[job.id] = _collect(root, spec, job, first)
            else:
                task = Task("stage2", job.id, job.configs["stage2"], str(folder), first["run"],
                            progress)  # fmt: skip
                tasks2[job.id] = (job, task)

        def stage2_done(i: int, record: dict) -> None:
            job = list(tasks2.values())[i][0]
            records[job.id] = (
                _collect(root, spec, job, stage1[stage1_hash(job.configs["stage1"])])
                if record["ok"]
                else _failed(root, job, f"stage 2: {record['error']}")
            )

        log(f"stage 2: {len(tasks2)} run(s) to train")
        execute([t for _, t in tasks2.values()], spec.launcher, workers, root, log, stage2_done)
    ordered = [records[j.id] for j in all_jobs]
    failed = [r["id"] for r in ordered if r["status"] != "done"]
    ran = [j.id for j in todo if j.id not in failed]
    tables = write_tables(root, spec, ordered)
    plots = write_plots(root, spec, tables["rows"])
    return SweepResult(
        root, ordered, tables["rows"], ran, skipped, failed,
        tables["runs_csv"], tables["csv"], tables["md"], *plots,
    )  # fmt: skip


def _check_gpus(all_jobs: Sequence[Job], workers: int) -> None:
    """With ``trainer.accelerator=gpu`` worker k uses GPU k: there must be ``workers`` GPUs."""
    if not any(c.trainer.accelerator == "gpu" for j in all_jobs for c in j.configs.values()):
        return
    import torch

    count = torch.cuda.device_count()
    if workers > count:
        raise ConfigError(
            f"--workers {workers} with trainer.accelerator=gpu: worker k uses GPU k, and "
            f"{count} GPU(s) are visible"
        )


def _failed(root: Path, job: Job, error: str) -> dict:
    record = {
        "id": job.id,
        "point": job.point.id,
        "values": job.point.values,
        "seed": job.seed,
        "status": "failed",
        "error": error,
    }
    _write_json(root / "points" / job.id / "failed.json", record)
    return record


def _collect(root: Path, spec: DictConfig, job: Job, first: dict) -> dict:
    """The run's record from its stage results: ``done.json``, or ``failed.json`` with why."""
    if "run" not in first:
        return _failed(root, job, f"stage 1: {first['error']}")
    metrics, runs, seconds = dict(first["metrics"]), {"stage1": first["run"]}, first["seconds"]
    if "stage2" in spec.stages:
        second = finished(root / "points" / job.id / "stage2") or {}
        if "run" not in second:
            return _failed(root, job, "stage 2: no finished run")
        metrics.update(second["metrics"])
        runs["stage2"] = second["run"]
        seconds += second["seconds"]
    if spec.metric not in metrics:
        error = f"metric '{spec.metric}' was not produced; available: {', '.join(sorted(metrics))}"
        return _failed(root, job, error)
    record = {
        "id": job.id,
        "point": job.point.id,
        "values": job.point.values,
        "seed": job.seed,
        "status": "done",
        "metrics": metrics,
        "runs": runs,
        "seconds": round(seconds, 1),
    }
    (root / "points" / job.id / "failed.json").unlink(missing_ok=True)
    _write_json(root / "points" / job.id / "done.json", record)
    return record


# --- tables and plots --------------------------------------------------------------------------


def _metric_names(spec: DictConfig, records: Sequence[dict]) -> list[str]:
    names = sorted({k for r in records for k in r.get("metrics", {})} - {spec.metric})
    return [spec.metric, *names]


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return path


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def _pm(mean: float, se: float, sign: str = "") -> str:
    if not math.isfinite(mean):
        return "–"
    text = format(mean, f"{sign}.3g")
    return f"{text} ± {se:.2g}" if math.isfinite(se) else text


def write_tables(root: Path, spec: DictConfig, records: Sequence[dict]) -> dict[str, Any]:
    """``results_runs.csv`` (one row per run), ``results.csv`` and ``results.md`` (per point).

    Returns ``{"rows": per-point rows, "runs_csv", "csv", "md": paths}``.
    """
    keys = list(spec.sweep.keys())
    seed_col = [] if "seed" in keys else ["seed"]
    metrics = _metric_names(spec, records)
    runs_csv = _csv(
        root / "results_runs.csv",
        ["point", *keys, *seed_col, "status", *metrics, "seconds", "error"],
        [
            [r["point"], *(_fmt(r["values"][k]) for k in keys), *([r["seed"]] if seed_col else [])]
            + [r["status"], *(r.get("metrics", {}).get(m, "") for m in metrics)]
            + [r.get("seconds", ""), r.get("error", "")]
            for r in records
        ],
    )
    reference = (
        cast(dict[str, Any], OmegaConf.to_container(spec.reference))
        if spec.reference is not None
        else None
    )
    rows = summarize(records, keys, metrics, spec.metric, spec.mode, reference)
    stats = [c for m in metrics for c in (m, f"{m}_se")]
    if reference is not None:
        stats += [c for m in metrics for c in (f"{m}_diff", f"{m}_diff_se")] + ["verdict"]
    csv_path = _csv(
        root / "results.csv",
        ["point", *keys, "n", "failed", *stats, "error"],
        [
            [point_id({k: row[k] for k in keys}), *(_fmt(row[k]) for k in keys)]
            + [row["n"], row["failed"], *(_cell(row[c]) for c in stats), row["error"]]
            for row in rows
        ],
    )
    best = best_vs_runner_up(records, keys, spec.metric, spec.mode)
    seeds = sorted({r["seed"] for r in records})
    lines = [
        f"Sweep `{spec.name}` ({' + '.join(spec.stages)}; base {spec.base}); `{spec.metric}` "
        f"({'higher' if spec.mode == 'max' else 'lower'} is better): mean ± SE over seeds "
        f"{seeds} (SE = sd/√n).",
        "",
    ]
    header = [*keys, "n", spec.metric]
    if reference is not None:
        ref = ", ".join(f"{k}={_fmt(v)}" for k, v in reference.items())
        lines[0] += f" Δ: the difference to the reference ({ref}), paired by seed."
        header += ["Δ (paired)", "verdict"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(keys) + "---:|" * 2]
    lines[-1] += "---:|---|" if reference is not None else ""
    for row in rows:
        cell = _pm(row[spec.metric], row[f"{spec.metric}_se"])
        if best and best["beyond_noise"] and all(row[k] == best["best"][k] for k in keys):
            cell = f"**{cell}**"
        if row["n"] == 0:
            cell = f"failed: {row['error']}"
        cells = [*(_fmt(row[k]) for k in keys), str(row["n"]), cell]
        if reference is not None:
            diff = _pm(row[f"{spec.metric}_diff"], row[f"{spec.metric}_diff_se"], "+")
            cells += [diff if row["verdict"] != "reference" else "–", row["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if best is None:
        lines.append("Fewer than two points finished: no best point.")
    else:
        name = ", ".join(f"{k}={_fmt(v)}" for k, v in best["best"].items())
        second = ", ".join(f"{k}={_fmt(v)}" for k, v in best["runner_up"].items())
        gap = f"{_pm(best['diff'], best['se'], '+')}, paired over {best['n']} seed(s)"
        lines.append(
            f"Best ({name}, **bold**) is ahead of the runner-up ({second}) beyond noise: {gap}."
            if best["beyond_noise"]
            else f"No point is ahead of the runner-up beyond noise (best {name} − runner-up "
            f"{second}: {gap}); none is marked."
        )
    failed = [r for r in records if r["status"] != "done"]
    if failed:
        lines.append(f"Failed runs: {len(failed)} (errors in results_runs.csv).")
    md_path = root / "results.md"
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return {"rows": rows, "runs_csv": runs_csv, "csv": csv_path, "md": md_path}


def _columns(rows: Sequence[dict]) -> dict[str, list]:
    return {k: [r.get(k) for r in rows] for k in (rows[0] if rows else {})}


def write_plots(root: Path, spec: DictConfig, rows: Sequence[dict]) -> tuple[Path, Path | None]:
    """``plot.png`` (mean ± 1 SE vs. the first key) and, with two keys, ``heatmap.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(spec.sweep.keys())
    table = _columns(rows)
    paths = [root / "plot.png", root / "heatmap.png" if len(keys) == 2 else None]
    for path, draw in zip(paths, (errorbar_plot, heatmap), strict=True):
        if path is None:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
        draw(table, keys, spec.metric, ax)
        ax.set_title(f"sweep {spec.name}")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
    if paths[1] is None:
        (root / "heatmap.png").unlink(missing_ok=True)
    return root / "plot.png", paths[1]
