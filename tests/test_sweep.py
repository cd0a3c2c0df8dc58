"""``neurocine sweep``: grid × seeds, statistics, workers, submitit, failures, resume, bad specs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import write_tiny_subject
from PIL import Image

from neurocine.analysis.runs import read_run_log
from neurocine.cli import main
from neurocine.errors import ConfigError
from neurocine.sweep import (
    expand,
    final_metrics,
    jobs,
    load_spec,
    make_executor,
    point_id,
    run_sweep,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny stage-1 experiment YAML over a tiny subject with 60 validation windows (50-way)."""
    root = tmp_path_factory.mktemp("sweep")
    subject = write_tiny_subject(root / "tiny.h5", trs_per_run=60)
    path = root / "tiny_stage1.yaml"
    path.write_text(
        f"""
name: tiny
stage: stage1
data: {{path: {subject}, window: 2, lag_trs: 0, val_runs: 1, batch_size: 16}}
encoder: {{patch_size: 8, embed_dim: 12, depth: 1, num_heads: 3, out_tokens: 5, out_dim: 14}}
trainer:
  max_epochs: 1
  limit_train_batches: 2
  enable_progress_bar: false
  log_every_n_steps: 1
"""
    )
    return path


def write_sweep(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def runs_in(root: Path) -> list[Path]:
    return sorted({p.parent.resolve() for p in root.rglob("config.yaml")})


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_seeded_sweep_with_two_workers_tables_means_ses_and_paired_diffs(
    experiment, tmp_path, capsys
):
    spec = write_sweep(
        tmp_path / "mask.yaml",
        f"""
base: {experiment}
stages: [stage1]
metric: val/top1_50way
sweep:
  data.augment.mask_ratio: [0.0, 0.5]
seeds: [3, 4]
reference: {{data.augment.mask_ratio: 0}}
overrides: [trainer.max_epochs=2]
out_dir: {tmp_path / "out"}
""",
    )
    result = run_sweep(spec, workers=2, progress=False, log=lambda _: None)
    root = tmp_path / "out" / "mask"
    assert result.out_dir == root and len(result.ran) == 4 and not result.skipped
    assert not result.failed
    runs = read_csv(root / "results_runs.csv")
    assert [(r["data.augment.mask_ratio"], r["seed"]) for r in runs] == [
        ("0", "3"), ("0", "4"), ("0.5", "3"), ("0.5", "4")
    ]  # fmt: skip
    assert all(r["status"] == "done" and "val/loss" in r for r in runs)
    # Each run trained with its own value and its own seed, on top of the sweep's overrides.
    trained = runs_in(root / "stage1")
    assert len(trained) == 4
    configs = sorted((run / "config.yaml").read_text() for run in trained)
    assert sum("seed: 3" in c for c in configs) == 2 and sum("seed: 4" in c for c in configs) == 2
    assert all("max_epochs: 2" in c for c in configs)
    # The per-point table, recomputed here from the per-run table.
    table = read_csv(root / "results.csv")
    assert [r["data.augment.mask_ratio"] for r in table] == ["0", "0.5"]
    by = {
        (r["data.augment.mask_ratio"], int(r["seed"])): {
            m: float(r[m]) for m in ("val/top1_50way", "val/loss")
        }
        for r in runs
    }
    for row in table:
        mask = row["data.augment.mask_ratio"]
        assert row["n"] == "2" and row["failed"] == "0"
        for m in ("val/top1_50way", "val/loss"):
            x = np.array([by[(mask, s)][m] for s in (3, 4)])
            assert float(row[m]) == pytest.approx(x.mean())
            assert float(row[f"{m}_se"]) == pytest.approx(x.std(ddof=1) / np.sqrt(2))
            d = x - np.array([by[("0", s)][m] for s in (3, 4)])
            if mask == "0":
                assert float(row[f"{m}_diff"]) == 0.0
            else:
                assert float(row[f"{m}_diff"]) == pytest.approx(d.mean())
                assert float(row[f"{m}_diff_se"]) == pytest.approx(d.std(ddof=1) / np.sqrt(2))
    assert table[0]["verdict"] == "reference"
    d = np.array(
        [by[("0.5", s)]["val/top1_50way"] - by[("0", s)]["val/top1_50way"] for s in (3, 4)]
    )
    se = d.std(ddof=1) / np.sqrt(2)
    if abs(d.mean()) > 2 * se:
        word = "better" if d.mean() > 0 else "worse"
        assert table[1]["verdict"] == f"{word} by {abs(d.mean()):.3g} ± {se:.2g}"
    else:
        assert table[1]["verdict"] == "within noise"
    md = (root / "results.md").read_text()
    assert "| data.augment.mask_ratio | n | val/top1_50way |" in md
    assert "mean ± SE over seeds [3, 4]" in md
    assert Image.open(root / "plot.png").format == "PNG"
    assert not (root / "heatmap.png").exists()  # one grid key
    done = json.loads((root / "points" / "data.augment.mask_ratio=0.5" / "seed=4" / "done.json")
                      .read_text())  # fmt: skip
    assert done["values"] == {"data.augment.mask_ratio": 0.5} and done["seed"] == 4
    # A re-run skips every run and trains nothing.
    assert main(["sweep", str(spec), "--no-progress", "--workers", "2"]) == 0
    assert "ran 0, skipped 4 finished, failed 0" in capsys.readouterr().out
    assert runs_in(root / "stage1") == trained


def test_points_with_the_same_stage1_config_share_one_run_per_seed(experiment, tmp_path):
    spec = write_sweep(
        tmp_path / "share.yaml",
        f"""
base: {experiment}
sweep: {{sampling.steps: [2, 3]}}
seeds: [0, 1]
out_dir: {tmp_path / "out"}
""",
    )
    result = run_sweep(spec, progress=False, log=lambda _: None)
    assert len(result.ran) == 4
    assert len(runs_in(tmp_path / "out" / "share" / "stage1")) == 2  # one per seed
    metrics = {(r["values"]["sampling.steps"], r["seed"]): r["metrics"] for r in result.records}
    assert metrics[(2, 0)] == metrics[(3, 0)] and metrics[(2, 1)] == metrics[(3, 1)]
    # Identical runs: every paired difference is exactly 0.
    rows = {r["sampling.steps"]: r for r in result.rows}
    assert rows[3]["val/top1_50way"] == rows[2]["val/top1_50way"]


def test_two_key_grid_draws_a_heatmap_and_marks_only_a_best_beyond_noise(experiment, tmp_path):
    spec = write_sweep(
        tmp_path / "grid.yaml",
        f"""
base: {experiment}
sweep:
  data.augment.mask_ratio: [0.0, 0.5]
  data.augment.interp_ratio: [0.0, 0.5]
seeds: [0]
reference: {{data.augment.interp_ratio: 0.0}}
out_dir: {tmp_path / "out"}
""",
    )
    result = run_sweep(spec, progress=False, log=lambda _: None)
    assert Image.open(result.heatmap_path).format == "PNG"
    md = result.md_path.read_text()
    # One seed: no standard error, so no point is ahead beyond noise and none is bold.
    assert "none is marked" in md and "**" not in md.split("\n\n")[1]
    # A reference naming one of two keys: one reference per value of the other key.
    for row in result.rows:
        if row["data.augment.interp_ratio"] == 0.0:
            assert row["verdict"] == "reference"
        else:
            assert row["verdict"] == "no SE (1 paired seed)"


def test_submitit_local_launcher_runs_each_job_in_its_own_process(experiment, tmp_path):
    spec = write_sweep(
        tmp_path / "jobs.yaml",
        f"""
base: {experiment}
sweep: {{data.augment.mask_ratio: [0.0, 0.5]}}
seeds: [0]
launcher: {{name: submitit_local, time_min: 5}}
out_dir: {tmp_path / "out"}
""",
    )
    result = run_sweep(spec, workers=2, progress=False, log=lambda _: None)
    root = tmp_path / "out" / "jobs"
    assert len(result.ran) == 2 and not result.failed
    assert all(0.0 <= r["metrics"]["val/top1_50way"] <= 1.0 for r in result.records)
    # submitit's own job folders: a pickled result and a log per job.
    results = sorted((root / "submitit").glob("*/*_result.pkl"))
    assert len(results) == 2
    assert len(list((root / "submitit").glob("*/*_log.out"))) == 2
    assert len(runs_in(root / "stage1")) == 2


def test_slurm_launcher_writes_partition_time_and_gpus_into_the_sbatch_file(
    experiment, tmp_path, monkeypatch, capsys
):
    spec = write_sweep(
        tmp_path / "cluster.yaml",
        f"""
base: {experiment}
sweep: {{data.augment.mask_ratio: [0.0]}}
launcher:
  name: slurm
  partition: gpu
  time_min: 90
  gpus_per_job: 1
  cpus_per_job: 8
  slurm_additional: {{account: neuro}}
out_dir: {tmp_path / "out"}
""",
    )
    # No cluster here: a one-line error before anything runs.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "launcher.name 'slurm'" in err[0] and "srun" in err[0]
    assert not (tmp_path / "out").exists()
    # With srun on PATH (never called here), submitit renders the job's sbatch file.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    executor = make_executor(load_spec(spec).launcher, tmp_path / "out" / "cluster")
    text = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --account=neuro",
    ):
        assert line in text


def test_a_failing_point_is_recorded_and_the_others_finish(experiment, tmp_path, capsys):
    spec = write_sweep(
        tmp_path / "sizes.yaml",
        f"""
base: {experiment}
sweep: {{data.train_runs: [1, 9]}}
seeds: [0, 1]
out_dir: {tmp_path / "out"}
""",
    )
    assert main(["sweep", str(spec), "--no-progress"]) == 1
    err = capsys.readouterr().err
    # The last line names the first failed run and its error (above it: Lightning's own logs).
    last = err.strip().splitlines()[-1]
    assert "2 run(s) failed; data.train_runs=9/seed=0" in last and "data.train_runs=9" in last
    assert "Traceback" not in err
    root = tmp_path / "out" / "sizes"
    runs = read_csv(root / "results_runs.csv")
    assert [r["status"] for r in runs] == ["done", "done", "failed", "failed"]
    assert all("3 training runs" in r["error"] for r in runs[2:]) and "\n" not in runs[2]["error"]
    table = read_csv(root / "results.csv")
    assert [(r["n"], r["failed"]) for r in table] == [("2", "0"), ("0", "2")]
    assert (
        "| 9 | 0 | failed: stage 1: ConfigError: data.train_runs=9"
        in (root / "results.md").read_text()
    )
    failed = json.loads((root / "points" / "data.train_runs=9" / "seed=1" / "failed.json")
                        .read_text())  # fmt: skip
    assert "3 training runs" in failed["error"]
    # A re-run skips the finished runs and tries the failed ones again.
    assert main(["sweep", str(spec), "--no-progress"]) == 1
    assert "ran 0, skipped 2 finished, failed 2" in capsys.readouterr().out


def test_a_killed_sweep_resumes_where_it_stopped(experiment, tmp_path):
    spec = write_sweep(
        tmp_path / "resume.yaml",
        f"""
base: {experiment}
sweep: {{data.augment.mask_ratio: [0.0, 0.25, 0.5, 0.75]}}
seeds: [0]
out_dir: {tmp_path / "out"}
""",
    )
    root = tmp_path / "out" / "resume"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "neurocine", "sweep", str(spec), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first = root / "stage1"
    deadline = time.monotonic() + 240
    while len(list(first.glob("*/stage1/done.json"))) < 1 and time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.parent.name for p in first.glob("*/stage1/done.json")}
    assert 1 <= len(finished) < 4
    trained = runs_in(first)
    result = run_sweep(spec, progress=False, log=lambda _: None)
    assert not result.failed and len(result.records) == 4
    # Every stage-1 run that had finished is reused, not trained again.
    assert len(result.ran) == 4 - len(result.skipped)
    assert {p.parent.parent.name for p in first.glob("*/stage1/done.json")} >= finished
    for digest in finished:
        assert len(runs_in(first / digest)) == 1
    assert len(runs_in(first)) <= len(trained) + 4 - len(finished)


def test_unknown_key_fails_before_anything_runs(experiment, tmp_path, capsys):
    spec = write_sweep(
        tmp_path / "typo.yaml",
        f"""
base: {experiment}
sweep:
  data.augment.mask_ratio: [0.0]
  data.augment.mask_ratoi: [0.1]
out_dir: {tmp_path / "out"}
""",
    )
    with pytest.raises(ConfigError, match="mask_ratoi"):
        run_sweep(spec, progress=False, log=lambda _: None)
    assert not (tmp_path / "out").exists()
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.augment.mask_ratoi" in err[0] and "typo.yaml" in err[0]


def test_value_of_the_wrong_type_fails_before_the_first_point_runs(experiment, tmp_path):
    spec = write_sweep(
        tmp_path / "types.yaml",
        f"""
base: {experiment}
sweep: {{trainer.max_epochs: [1, many]}}
out_dir: {tmp_path / "out"}
""",
    )
    with pytest.raises(ConfigError, match="trainer.max_epochs") as info:
        run_sweep(spec, progress=False, log=lambda _: None)
    assert "many" in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("sweep: {seed: [1]}\nbogus: 1", "bogus"),
        ("sweep: {seed: [1]}\nstages: [stage2]", "stages"),
        ("sweep: {seed: [1]}\nstages: [stage2, stage1]", "stages"),
        ("sweep: {seed: []}", "empty list"),
        ("sweep: {seed: 1}", "sweep.seed"),
        ("sweep: {seed: [1]}\nmetric: neurocine/ssim", "needs stages"),
        ("stages: [stage1]", "sweep"),
        ("sweep: {seed: [1]}\nseeds: [0]", "seeds"),
        ("sweep: {data.window: [2]}\nseeds: []", "seeds"),
        ("sweep: {data.window: [2]}\nseeds: [0, 0]", "repeats"),
        ("sweep: {data.window: [2]}\nseeds: [one]", "seeds"),
        ("sweep: {data.window: [2]}\nreference: {data.lag_trs: 0}", "reference"),
        ("sweep: {data.window: [2]}\nreference: {data.window: 3}", "not one of"),
        ("sweep: {data.window: [2]}\nlauncher: {name: pbs}", "launcher.name"),
        ("sweep: {data.window: [2]}\nlauncher: {nme: slurm}", "nme"),
        ("sweep: {data.window: [2]}\nlauncher: {name: slurm, time_min: 0}", "time_min"),
    ],
)
def test_bad_sweep_files_are_config_errors(experiment, tmp_path, body, message):
    spec = write_sweep(tmp_path / "bad.yaml", f"base: {experiment}\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        expand(load_spec(spec), str(spec))


@pytest.mark.parametrize(
    ("name", "n_points"),
    [("mask_ratio", 4), ("interp_ratio", 4), ("noise_ratio", 4), ("mask_interp_grid", 4),
     ("augment_vs_data", 6)],
)  # fmt: skip
def test_shipped_sweeps_expand_and_validate(name, n_points):
    path = REPO / "experiments" / "sweeps" / f"{name}.yaml"
    spec = load_spec(path)
    points = expand(spec, str(path))
    assert len(points) == n_points and list(spec.seeds) == [0, 1, 2]
    assert spec.reference is not None
    assert all(p.configs["stage1"].stage == "stage1" for p in points)
    assert len(jobs(spec, points)) == 3 * n_points


def test_bad_launcher_or_workers_is_one_line_before_anything_runs(experiment, tmp_path, capsys):
    spec = write_sweep(
        tmp_path / "launch.yaml",
        f"base: {experiment}\nsweep: {{seed: [1]}}\nlauncher: {{name: pbs}}\n"
        f"out_dir: {tmp_path / 'out'}\n",
    )
    assert main(["sweep", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "launch.yaml" in err[0] and "launcher.name 'pbs'" in err[0]
    spec.write_text(spec.read_text().replace("{name: pbs}", "{name: local}"))
    assert main(["sweep", str(spec), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--workers 0" in err[0]
    # Worker k gets GPU k: more GPU workers than visible GPUs is refused.
    spec.write_text(spec.read_text() + "overrides: [trainer.accelerator=gpu]\n")
    n_gpus = torch.cuda.device_count()
    assert main(["sweep", str(spec), "--workers", str(max(2, n_gpus + 1))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{n_gpus} GPU(s) are visible" in err[0]
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_the_points(experiment, tmp_path, capsys):
    spec = write_sweep(
        tmp_path / "grid.yaml",
        f"base: {experiment}\nsweep: {{seed: [1, 2], data.augment.interp_ratio: [0.5]}}\n",
    )
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == [
        "seed=1,data.augment.interp_ratio=0.5/seed=1",
        "seed=2,data.augment.interp_ratio=0.5/seed=2",
    ]
    assert point_id({"a.b": "x/y", "c": None}) == "a.b=x_y,c=null"


def test_final_metrics_are_the_last_logged_values(tmp_path):
    log = tmp_path / "logs" / "metrics.csv"
    log.parent.mkdir()
    log.write_text(
        "epoch,step,train/loss,val/top1_50way\n0,4,2.5,\n0,4,,0.1\n1,9,1.5,\n1,9,,0.3\n2,14,1.0,\n"
    )
    assert final_metrics(tmp_path) == {"train/loss": 1.0, "val/top1_50way": 0.3}
    assert final_metrics(tmp_path / "nowhere") == {}
    # A resumed run: the driver rotated the first segment's log to metrics-0.csv.
    log.rename(log.with_name("metrics-0.csv"))
    log.write_text("epoch,step,train/loss,val/loss\n3,19,0.5,\n3,19,,0.7\n")
    assert final_metrics(tmp_path) == {"train/loss": 0.5, "val/top1_50way": 0.3, "val/loss": 0.7}
    table = read_run_log(tmp_path, as_frame=False)
    assert list(table["step"]) == [4, 4, 9, 9, 14, 19, 19]
    assert np.isnan(table["val/loss"][:5]).all() and table["val/loss"][6] == 0.7
    assert read_run_log(tmp_path, as_frame=True).shape == (7, 5)


@pytest.mark.slow
def test_stage1_and_stage2_sweep_evaluates_each_point(experiment, tmp_path):
    from stage2_helpers import TINY_UNET

    stage2 = tmp_path / "tiny_stage2.yaml"
    stage2.write_text(
        experiment.read_text().replace("stage: stage1", "stage: stage2")
        + "sampling: {steps: 2, batch_size: 8}\n"
    )
    spec = write_sweep(
        tmp_path / "noise.yaml",
        f"""
base: {experiment}
base_stage2: {stage2}
stages: [stage1, stage2]
metric: neurocine/ssim
sweep: {{stage2.noise.ratio: [0.0, 0.5]}}
seeds: [0, 1]
reference: {{stage2.noise.ratio: 0.0}}
overrides: {
            json.dumps(
                [
                    *TINY_UNET,
                    "evaluation.reconstruct_limit=4",
                    "evaluation.baselines=[mean_frame]",
                    "evaluation.evaluator.epochs=1",
                ]
            )
        }
out_dir: {tmp_path / "out"}
""",
    )
    result = run_sweep(spec, progress=False, log=lambda _: None)
    root = tmp_path / "out" / "noise"
    assert not result.failed
    assert len(runs_in(root / "stage1")) == 2  # ρ does not change stage 1: once per seed
    ssim = {(r["values"]["stage2.noise.ratio"], r["seed"]): r["metrics"]["neurocine/ssim"]
            for r in result.records}  # fmt: skip
    d = np.array([ssim[(0.5, s)] - ssim[(0.0, s)] for s in (0, 1)])
    assert result.rows[1]["neurocine/ssim_diff"] == pytest.approx(d.mean())
    assert result.rows[1]["neurocine/ssim_diff_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(2))
    for row in result.records:
        assert {"neurocine/ssim", "mean_frame/ssim", "stage2:val/loss"} <= set(row["metrics"])
        run2 = Path(row["runs"]["stage2"])
        assert (run2 / "metrics.json").is_file()
        assert f"ratio: {row['values']['stage2.noise.ratio']}" in (run2 / "config.yaml").read_text()
