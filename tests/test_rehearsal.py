"""``neurocine rehearse``: the real cc2017 chain on generated data, through the command (slow).

Checks that the run went through the real paths, not only that it exited 0: the CIFTI/mp4
release was preprocessed into 6 frames of 64 × 64 per TR, CLIP targets are 768-d, stage 2
conditioned an sd15 ``UNetMotionModel`` (loaded motion adapter) on 77 × 768 tokens, and both
n-way protocols were scored with the ViT and VideoMAE classifiers. A second run skips every step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from neurocine.config import load_saved_config

ROOT = Path(__file__).resolve().parent.parent


def _rehearse(out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "neurocine", "rehearse", "--out", str(out), "--no-progress"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow  # ~2–3 minutes on a 2-core machine
def test_rehearsal_runs_the_real_chain_and_prints_the_table(tmp_path):
    out = tmp_path / "rehearsal"
    first = _rehearse(out)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "proves the wiring" in first.stdout and "| NeuroCine |" in first.stdout
    assert "50-way video" in first.stdout and "2-way frame" in first.stdout
    with h5py.File(out / "data" / "subject1.h5") as f:
        assert f["train/frames"].shape[1:] == (6, 64, 64, 3)
        assert f["train/clip_image"].shape[1] == 768
    stage2 = (out / "runs" / "rehearsal" / "stage2" / "latest").resolve()
    cfg = load_saved_config(stage2 / "config.yaml")
    assert (cfg.unet.preset, cfg.encoder.out_tokens, cfg.encoder.out_dim) == ("sd15", 77, 768)
    unet = json.loads((stage2 / "model" / "unet" / "config.json").read_text())
    assert unet["_class_name"] == "UNetMotionModel" and unet["cross_attention_dim"] == 768
    metrics = json.loads((stage2 / "metrics.json").read_text())
    assert metrics["classifier"].startswith("pretrained vit-image-classifier + videomae")
    assert metrics["n_clips"] == 24 and metrics["clip"].startswith("pretrained(")
    second = _rehearse(out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("finished earlier, skipped") == 6
