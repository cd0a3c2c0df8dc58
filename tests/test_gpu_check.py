"""bench/gpu_check.py, the prepared GPU check, dry-runs on CPU at tiny sizes and writes its JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.common  # noqa: E402
from bench import gpu_check  # noqa: E402


def test_cpu_dry_run_writes_every_configuration(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    assert gpu_check.main(["--tiny", "--steps", "1", "--ddim-steps", "2"]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {r["config"]: r for r in result["data"]["rows"]}
    assert list(rows) == list(gpu_check.EXPERIMENTS) and result["data"]["tiny"]
    for row in rows.values():
        assert row["step_s"] > 0 and row["samples_per_s"] > 0 and "error" not in row
        assert row["fits"] is None and row["peak_reserved_gib"] is None  # no GPU: no verdict
    full, small = rows["stage2_full"], rows["stage2_24gb"]
    assert full["ddim_s"] > 0 and small["ddim_s"] > 0
    # The 24 GB recipe: fewer trainable weights, a frozen bf16 base, the batch of its YAML.
    assert 0 < small["trainable_params"] < full["trainable_params"] < full["all_params"]
    assert small["frozen_weights_gib"] > 0 and small["gradients_gib"] < full["gradients_gib"]
    verdicts = capsys.readouterr().out.splitlines()[:3]  # one line per configuration first
    assert [v.split(":")[0] for v in verdicts] == list(gpu_check.EXPERIMENTS)


def test_full_size_needs_a_gpu():
    if gpu_check.torch.cuda.is_available():
        pytest.skip("a GPU is present: the full-size check would run")
    with pytest.raises(SystemExit):
        gpu_check.main([])
