"""``neurocine demo``: the whole pipeline on the simulated data, end to end (``make demo``).

Steps (data, embeddings and the evaluator are reused when they already exist):

1. simulate ``data.path`` from ``cfg.simulate`` when the file is missing;
2. embed it with ``cfg.clip`` (CLIP image/text targets);
3. train the evaluator (the n-way classifier of simulated data) when it is missing;
4. train stage 1 → ``runs/<name>/stage1/<timestamp>/`` (the encoder);
5. train stage 2 with ``stage2.encoder_ckpt`` = that run's encoder → ``runs/<name>/stage2/…``;
6. reconstruct ``evaluation.reconstruct_limit`` test clips into the stage-2 run's ``samples/``;
7. evaluate them beside the baselines (mean frame, ridge, oracle) → ``metrics.json``/``.md``;

then print the table, the step timings, and where the grids are: ``samples/grid.png``
(ground truth above each reconstruction, frame by frame) and ``samples/grid.gif`` (animated:
ground truth, NeuroCine and the oracle in rows, one clip per column). Wall and CPU seconds
(summed over threads) of every step go to ``<stage-2 run>/demo.json``.

The demo YAML (:class:`DemoSpec`) names the two shipped experiments and the overrides that size
them for a 2-core laptop; ``key=value`` arguments on the command line apply to both stages::

    stage1: experiments/stage1.yaml
    stage2: experiments/stage2.yaml
    overrides: [clip.preset=tiny, evaluation.reconstruct_limit=null]    # both stages
    stage1_overrides: []
    stage2_overrides: [sampling.steps=10]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from neurocine.analysis.runs import comparison_rows, load_run
from neurocine.config import load_config, merge_layer
from neurocine.data.simulate import check_simulated_with, simulate_subject
from neurocine.embedding import embed_subject
from neurocine.errors import ConfigError
from neurocine.evaluation import SAMPLES_DIR, evaluate_run
from neurocine.evaluator import ensure_evaluator
from neurocine.fileio import atomic_path
from neurocine.media import grid_frames, write_gif
from neurocine.reconstruct import reconstruct
from neurocine.sweep import with_values
from neurocine.training import fit


@dataclass
class DemoSpec:
    """The schema of ``experiments/demo.yaml`` (module docstring)."""

    name: str = "demo"  # runs go to <runs_dir>/<name>/stage1|stage2/<timestamp>
    stage1: str = "experiments/stage1.yaml"
    stage2: str = "experiments/stage2.yaml"
    overrides: list[str] = field(default_factory=list)
    stage1_overrides: list[str] = field(default_factory=list)
    stage2_overrides: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    """What :func:`run_demo` made."""

    stage1_run: Path
    stage2_run: Path
    table: str
    metrics_path: Path
    grid_png: Path | None
    grid_gif: Path | None
    seconds: dict[str, float] = field(default_factory=dict)


def load_demo_spec(path: str | Path) -> DictConfig:
    """Read and validate a demo YAML against :class:`DemoSpec`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: demo file not found")
    try:
        layer = OmegaConf.load(path)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML: {first}") from exc
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of demo keys at the top level")
    return merge_layer(OmegaConf.structured(DemoSpec), layer, str(path))


def stage_configs(spec: DictConfig, overrides: Sequence[str] = ()) -> tuple[DictConfig, DictConfig]:
    """Both stages' validated configs, runs under ``<runs_dir>/<spec.name>/stage1|stage2``."""
    out = []
    for stage in ("stage1", "stage2"):
        tokens = [*spec.overrides, *spec[f"{stage}_overrides"], *overrides, f"stage={stage}"]
        cfg = load_config(spec[stage], tokens)
        out.append(with_values(cfg, name=stage, runs_dir=f"{cfg.runs_dir}/{spec.name}"))
    if out[0].data.path != out[1].data.path:
        raise ConfigError(
            f"demo: stage 1 reads {out[0].data.path} but stage 2 reads {out[1].data.path}"
        )
    return out[0], out[1]


def run_demo(
    config: str | Path = "experiments/demo.yaml",
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo pipeline (module docstring) and return where everything is."""
    seconds: dict[str, float] = {}
    cpu_seconds: dict[str, float] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    marks = [started, cpu_started]

    def step(name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        seconds[name] = round(now - marks[0], 1)
        cpu_seconds[name] = round(cpu - marks[1], 1)
        marks[:] = [now, cpu]
        log(f"[demo] {name}: {seconds[name]:.1f} s (CPU {cpu_seconds[name]:.1f} s)")

    cfg1, cfg2 = stage_configs(load_demo_spec(config), overrides)  # validated before running
    data = Path(cfg1.data.path)
    if data.is_file():
        check_simulated_with(data, cfg1.simulate)
        log(f"[demo] 1/7 {data} exists: not re-simulated")
    else:
        log(f"[demo] 1/7 simulating {data}")
        simulate_subject(cfg1.simulate, data)
    step("simulate")
    log("[demo] 2/7 CLIP embeddings")
    for line in embed_subject(data, cfg1, force=False, progress=progress).lines():
        log(f"  {line}")
    step("embed")
    log("[demo] 3/7 the evaluator (n-way classifier of the simulated categories)")
    ev = cfg2.evaluation
    ensure_evaluator(data, ev.evaluator, ev.evaluator_dir, progress=progress)
    step("evaluator")
    log("[demo] 4/7 stage 1: contrastive fMRI encoder")
    run1 = fit(cfg1)
    step("stage1")
    log("[demo] 5/7 stage 2: video diffusion conditioned on the stage-1 encoder")
    run2 = fit(with_values(cfg2, **{"stage2.encoder_ckpt": str(run1 / "encoder")}))
    step("stage2")
    log(f"[demo] 6/7 reconstruct {ev.reconstruct_limit or 'all'} test clips")
    samples = run2 / SAMPLES_DIR
    reconstruct(run2, samples, limit=ev.reconstruct_limit, progress=progress)
    step("reconstruct")
    log("[demo] 7/7 evaluate: NeuroCine vs baselines")
    evaluation = evaluate_run(run2, progress=progress)
    step("evaluate")
    recon = load_run(run2).reconstructions()
    grid_gif = None
    names: list[str] = []
    if recon is not None:
        rows, names = comparison_rows(recon, n=8)
        grid_gif = write_gif(samples / "grid.gif", grid_frames(rows), recon.fps)
    grid_png = samples / "grid.png" if (samples / "grid.png").is_file() else None
    seconds["total"] = round(time.perf_counter() - started, 1)
    cpu_seconds["total"] = round(time.process_time() - cpu_started, 1)
    with atomic_path(run2 / "demo.json") as tmp:
        record = {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "stage1_run": str(run1),
            "stage2_run": str(run2),
        }
        tmp.write_text(json.dumps(record, indent=2))
    log("")
    log(evaluation.table)
    log(f"stage 1 run: {run1}\nstage 2 run: {run2}")
    if grid_gif is not None:
        log(f"grid (animated; rows: {' / '.join(names)}): {grid_gif}")
    if grid_png is not None:
        log(f"grid (frames; ground truth above reconstruction): {grid_png}")
    log("timings (s): " + ", ".join(f"{k} {v:g}" for k, v in seconds.items()))
    return DemoResult(
        run1, run2, evaluation.table, evaluation.json_path, grid_png, grid_gif, seconds
    )
