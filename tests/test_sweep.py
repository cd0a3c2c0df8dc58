"""``neurocine sweep``: grid expansion, validation before running, tables, plot, re-run skips."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from factories import write_tiny_subject
from PIL import Image

from neurocine.analysis.runs import read_run_log, sweep_spec
from neurocine.cli import main
from neurocine.errors import CheckpointError, ConfigError
from neurocine.sweep import expand, final_metrics, load_spec, point_id, run_sweep

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


def test_two_point_sweep_writes_table_and_plot_and_rerun_skips(experiment, tmp_path, capsys):
    spec = write_sweep(
        tmp_path / "mask.yaml",
        f"""
base: {experiment}
stages: [stage1]
metric: val/top1_50way
sweep:
  data.augment.mask_ratio: [0.0, 0.5]
overrides: [seed=3]
out_dir: {tmp_path / "out"}
""",
    )
    result = run_sweep(spec, progress=False, log=lambda _: None)
    root = tmp_path / "out" / "mask"
    assert result.out_dir == root and len(result.ran) == 2 and not result.skipped
    with (root / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["data.augment.mask_ratio"] for r in rows] == ["0", "0.5"]
    assert all(0.0 <= float(r["val/top1_50way"]) <= 1.0 for r in rows)
    assert "val/loss" in rows[0]  # every logged metric, not only the swept one
    md = (root / "results.md").read_text()
    assert "| data.augment.mask_ratio | val/top1_50way |" in md
    best = max(float(r["val/top1_50way"]) for r in rows)
    assert f"**{best:.4g}**" in md  # the best value is marked
    assert Image.open(root / "plot.png").format == "PNG"
    runs = runs_in(root / "stage1")
    assert len(runs) == 2
    # Each point trained with its own value, on top of the sweep's overrides.
    for run in runs:
        text = (run / "config.yaml").read_text()
        assert "seed: 3" in text
    masks = sorted(
        json.loads((root / "points" / pid / "done.json").read_text())["values"][
            "data.augment.mask_ratio"
        ]
        for pid in ("data.augment.mask_ratio=0", "data.augment.mask_ratio=0.5")
    )
    assert masks == [0.0, 0.5]
    # A re-run skips both points and trains nothing.
    assert main(["sweep", str(spec), "--no-progress"]) == 0
    assert "ran 0, skipped 2" in capsys.readouterr().out
    assert runs_in(root / "stage1") == runs


def test_points_with_the_same_stage1_config_share_one_run(experiment, tmp_path):
    spec = write_sweep(
        tmp_path / "share.yaml",
        f"""
base: {experiment}
sweep: {{sampling.steps: [2, 3]}}
out_dir: {tmp_path / "out"}
""",
    )
    result = run_sweep(spec, progress=False, log=lambda _: None)
    assert len(result.ran) == 2
    assert len(runs_in(tmp_path / "out" / "share" / "stage1")) == 1
    assert result.rows[0]["metrics"] == result.rows[1]["metrics"]


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
    ],
)
def test_bad_sweep_files_are_config_errors(experiment, tmp_path, body, message):
    spec = write_sweep(tmp_path / "bad.yaml", f"base: {experiment}\n{body}\n")
    with pytest.raises(ConfigError, match=message):
        expand(load_spec(spec), str(spec))


def test_shipped_sweeps_expand_and_validate():
    for name, n_points in (("mask_ratio", 4), ("interp_ratio", 4), ("noise_ratio", 4)):
        path = REPO / "experiments" / "sweeps" / f"{name}.yaml"
        points = expand(load_spec(path), str(path))
        assert len(points) == n_points
        assert all(p.configs["stage1"].stage == "stage1" for p in points)


def test_dry_run_lists_the_points(experiment, tmp_path, capsys):
    spec = write_sweep(
        tmp_path / "grid.yaml",
        f"base: {experiment}\nsweep: {{seed: [1, 2], data.augment.interp_ratio: [0.5]}}\n",
    )
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    assert capsys.readouterr().out.split() == [
        "seed=1,data.augment.interp_ratio=0.5",
        "seed=2,data.augment.interp_ratio=0.5",
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


def test_a_sweep_spec_that_is_not_a_mapping_is_refused(tmp_path):
    (tmp_path / "sweep.yaml").write_text("- seed\n- data.augment.mask_ratio\n")
    with pytest.raises(CheckpointError, match="sweep.yaml: not a sweep spec"):
        sweep_spec(tmp_path)


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
    assert len(runs_in(root / "stage1")) == 1  # ρ does not change stage 1: trained once
    for row in result.rows:
        assert {"neurocine/ssim", "mean_frame/ssim", "stage2:val/loss"} <= set(row["metrics"])
        run2 = Path(row["runs"]["stage2"])
        assert (run2 / "metrics.json").is_file()
        assert f"ratio: {row['values']['stage2.noise.ratio']}" in (run2 / "config.yaml").read_text()
