"""neurocine.analysis.paths: the project root from any folder, one-line missing runs; scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurocine.analysis import paths, runs, scores
from neurocine.analysis.paths import MissingRunError
from neurocine.errors import CheckpointError


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "runs" / "sweeps" / "x" / "points").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    return root


def test_the_root_is_found_from_a_subfolder(project, monkeypatch):
    monkeypatch.chdir(project / "notebooks")
    assert paths.project_root() == project.resolve()
    assert paths.resolve("data/sim/subject1.h5") == project.resolve() / "data/sim/subject1.h5"
    # a project marker wins over a nearer folder that holds runs/ (a sweep's points)
    assert paths.project_root(project / "runs" / "sweeps" / "x" / "points") == project.resolve()


def test_without_a_checkout_the_folder_holding_runs_is_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ROOT_ENV, raising=False)
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    assert paths.project_root(tmp_path / "runs" / "demo") == tmp_path.resolve()


def test_neurocine_root_overrides_the_walk(project, tmp_path, monkeypatch):
    monkeypatch.chdir(project / "notebooks")
    monkeypatch.setenv(paths.ROOT_ENV, str(tmp_path))
    assert paths.project_root() == tmp_path.resolve()
    assert paths.resolve("/abs/file.h5") == Path("/abs/file.h5")


@pytest.mark.parametrize(
    ("path", "command"),
    [
        ("runs/demo/stage2/latest", "make demo"),
        ("runs/sweeps/interp_ratio", "make sweep SWEEP=interp_ratio"),
        ("runs/stage1/latest", "make train-stage1"),
        ("data/sim/subject1.h5", "make simulate"),
    ],
)
def test_the_command_that_makes_a_path(path, command):
    assert paths.making_command(path) == command


def test_a_missing_run_is_one_line_naming_the_command(project, monkeypatch):
    monkeypatch.chdir(project / "notebooks")
    with pytest.raises(MissingRunError) as info:
        runs.load_run("runs/demo/stage2/latest")
    message = str(info.value)
    assert "\n" not in message and message.startswith("runs/demo/stage2/latest: run not found")
    assert message.endswith("make it with `make demo`")
    assert info.value._render_traceback_() == [f"MissingRunError: {message}"]
    (project / "runs" / "demo" / "stage2" / "latest").mkdir(parents=True)
    with pytest.raises(MissingRunError, match="not a run .no config.yaml.*`make demo`"):
        runs.load_run("runs/demo/stage2/latest")
    with pytest.raises(MissingRunError, match="sweep not found.*`make sweep SWEEP=mask_ratio`"):
        runs.load_sweep("runs/sweeps/mask_ratio")


def test_tables_named_relative_to_the_root_are_read_from_a_subfolder(project, monkeypatch):
    (project / "runs" / "sweeps" / "x" / "results_runs.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(project / "notebooks")
    table = runs.read_csv_table("runs/sweeps/x/results_runs.csv", as_frame=False)
    assert table["b"].tolist() == [2.0]


def test_scores_rank_clips_and_tabulate_the_paired_gaps():
    evaluation = {
        "clip_rows": [10, 11, 12, 13],
        "per_clip": {"neurocine": {"video_2way": [0.5, None, 0.9, 0.1], "ssim": [0, 0, 0, 0]}},
        "labels": {"mean_frame": "mean training frame"},
        "paired": {"mean_frame": {"ssim": {"diff": 0.3, "se": 0.1, "n": 4, "groups": 2}}},
    }
    assert scores.default_metric(evaluation) == "video_2way"
    best, worst = scores.ranked_clips(evaluation, "video_2way", n=1)
    assert best == [(12, 0.9)] and worst == [(13, 0.1)]  # the clip without a score left out
    table = scores.gaps_markdown(scores.paired_gaps(evaluation))
    assert "| NeuroCine minus | mean training frame |" in table
    assert "| ssim | **+0.300 ± 0.100** |" in table  # beyond 2 SE: bold
    with pytest.raises(CheckpointError, match="no per-clip 'psnr' for 'neurocine'"):
        scores.per_clip(evaluation, "psnr")
