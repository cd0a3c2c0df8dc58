"""bench/training_size.py: the per-size table, the verdicts and the shared-test-clips check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.common  # noqa: E402
import bench.demo_robustness  # noqa: E402
import bench.training_size  # noqa: E402
from bench.training_size import demo, main, same_test_clips, verdict  # noqa: E402


@pytest.mark.parametrize(
    ("diff", "word"), [(0.05, "ahead"), (-0.05, "behind"), (0.03, "within noise")]
)
def test_verdict_applies_the_two_standard_error_rule(diff, word):
    assert verdict({"diff": diff, "se": 0.016}) == f"{diff:+.3f} ± 0.016 ({word})"


def _subject(path: Path, frames: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["test/frames"] = frames
    return path


def test_other_test_clips_stop_the_comparison(tmp_path):
    frames = np.zeros((4, 2, 8, 8, 3), np.uint8)
    a = _subject(tmp_path / "a.h5", frames)
    same_test_clips([a, _subject(tmp_path / "b.h5", frames.copy())])
    c = _subject(tmp_path / "c.h5", frames + 1)
    with pytest.raises(SystemExit, match="c.h5: test/frames differ"):
        same_test_clips([a, c])


def _finished_demo(folder: Path, ridge_gap: float, score: float, runs: str = "runs") -> None:
    """What `neurocine demo` leaves behind, as far as the benchmark reads it."""
    _subject(folder / "subject1.h5", np.zeros((4, 2, 8, 8, 3), np.uint8))
    stage2 = folder / runs / "demo" / "stage2" / "20260101-000000"
    stage1 = folder / runs / "demo" / "stage1" / "20260101-000000"
    for run in (stage1, stage2):
        run.mkdir(parents=True)
        (run.parent / "latest").symlink_to(run.name)
    row = {"ssim": 0.2, "frame_50way": 0.1, "video_50way": 0.1, "clip_similarity": 0.3}
    gap = {"diff": ridge_gap, "se": 0.01, "n": 100, "groups": 30}
    clips = np.arange(100) % 2 * 0.2  # per-clip 50-way of ridge; NeuroCine's is ridge + gap
    metrics = {"n_clips": 100, "rows": {"neurocine": row, "ridge": row},
               "paired": {"ridge": {"video_50way": gap, "clip_similarity": gap}},
               "per_clip": {"neurocine": {"video_50way": (clips + ridge_gap).tolist()},
                            "ridge": {"video_50way": clips.tolist()}},
               "clip_scenes": [str(i // 4) for i in range(100)]}  # fmt: skip
    (stage2 / "metrics.json").write_text(json.dumps(metrics))
    (stage2 / "demo.json").write_text(json.dumps({"seconds": {"stage1": 50.0, "total": 300.0}}))
    (stage1 / "export.json").write_text(json.dumps({"score": score, "epoch": 7}))


def _finished_clip_oracle(folder: Path) -> None:
    folder.mkdir()
    row = {"ssim": 0.1, "frame_50way": 0.2, "video_50way": 0.25, "clip_similarity": 0.4}
    gap = {"diff": -0.1, "se": 0.01, "n": 100, "groups": 30}
    metrics = {"n_clips": 100, "rows": {"neurocine": row, "clip_oracle": row},
               "paired": {"clip_oracle": {"video_50way": gap}}}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))


def _no_retrieval(monkeypatch) -> None:
    # the fake runs have no encoder to score: a fixed retrieval per size
    def fixed(stage1_run: Path, path: Path) -> dict[str, float]:
        return {"stage1": 0.5 if "54" in str(path) else 0.2, "ridge": 0.25}

    monkeypatch.setattr(bench.training_size, "held_out_retrieval", fixed)


def test_main_reports_each_size_from_its_finished_demo(tmp_path, monkeypatch):
    _no_retrieval(monkeypatch)
    _finished_demo(tmp_path / "train12", -0.03, 0.11)
    _finished_demo(tmp_path / "train54", 0.05, 0.33)
    _finished_clip_oracle(tmp_path / "train54_clip_oracle")
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(sys, "argv", ["training_size", "--workdir", str(tmp_path)])
    assert main() == 0
    result = json.loads((tmp_path / "results" / "training_size.json").read_text())
    assert "12 runs -0.030 ± 0.010 (behind); 54 runs +0.050 ± 0.010 (ahead)" in result["notes"]
    assert "| 54 | 0.500 | 0.250 | 0.330 (7) | 50 | 300 |" in result["notes"]
    assert result["data"]["sizes"] == [12, 54]
    assert "54 training runs (4,320 TRs)" in result["table"]
    assert "| CLIP oracle (true image embedding) | 100 |" in result["table"]
    assert "The CLIP oracle scores 0.250 at 54 runs" in result["notes"]


def test_other_training_seeds_of_the_largest_size_get_a_seed_standard_error(tmp_path, monkeypatch):
    _no_retrieval(monkeypatch)
    _finished_demo(tmp_path / "train12", -0.03, 0.11)
    _finished_demo(tmp_path / "train54", 0.05, 0.33)
    _finished_demo(tmp_path / "train54", 0.03, 0.31, runs="runs_seed1")
    _finished_clip_oracle(tmp_path / "train54_clip_oracle")
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path / "results")
    argv = ["training_size", "--workdir", str(tmp_path), "--seeds", "0,1"]
    monkeypatch.setattr(sys, "argv", argv)
    assert main() == 0
    result = json.loads((tmp_path / "results" / "training_size.json").read_text())
    gap = result["data"]["over_seeds"]
    assert gap["per_seed"] == pytest.approx([0.05, 0.03])
    assert gap["diff"] == pytest.approx(0.04) and gap["se_seeds"] == pytest.approx(0.01)
    assert gap["beyond_noise"]  # 0.04 > 2 × 0.01, and the scene SE is 0 (a constant gap)
    assert "54 training runs (4,320 TRs), training seed 1" in result["table"]
    assert "Over 2 training seeds at 54 runs: video_50way +0.040 ± 0.010 (seeds)" in result["notes"]


def test_a_missing_size_or_seed_runs_the_demo_on_its_subject(tmp_path, monkeypatch):
    commands: list[list[str]] = []
    monkeypatch.setattr(bench.demo_robustness, "run", commands.append)
    demo(tmp_path / "train54", 54, 24, seed=2)
    assert commands == [[
        "demo", "--config", "experiments/demo.yaml", "--no-progress",
        f"data.path={tmp_path / 'train54' / 'subject1.h5'}",
        f"runs_dir={tmp_path / 'train54' / 'runs_seed2'}",
        "simulate.n_train_runs=54", "simulate.n_test_runs=24", "seed=2",
    ]]  # fmt: skip
    _finished_demo(tmp_path / "train12", 0.0, 0.1)
    demo(tmp_path / "train12", 12, 24)  # finished: resumed, not rerun
    assert len(commands) == 1
