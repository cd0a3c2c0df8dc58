"""``neurocine pipeline``: MinD-Video arrays → … → metrics, skipping and resuming (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from stage2_helpers import TINY_UNET
from test_mindvideo import DATA_MODULE, release_arrays

from neurocine.cli import main
from neurocine.data.schema import validate
from neurocine.errors import ConfigError
from neurocine.pipeline import STEPS, load_spec, run_pipeline, unfinished_run
from neurocine.slurm import resume_checkpoint

TINY_ENCODER = (
    "encoder: {patch_size: 8, embed_dim: 12, depth: 1, num_heads: 3, out_tokens: 5, out_dim: 14}"  # noqa: E501
)


def tiny_pipeline(root: Path) -> Path:
    """A pipeline YAML: MinD-Video's data directory (arrays in preprocessed/) → tiny stages."""
    data_dir = root / "Wen"
    (data_dir / "preprocessed").mkdir(parents=True)
    for name, values in release_arrays().items():
        np.save(data_dir / "preprocessed" / name, values)
    for stage, extra in (("stage1", ""), ("stage2", "sampling: {steps: 2, batch_size: 8}\n")):
        (root / f"{stage}.yaml").write_text(
            f"stage: {stage}\ndata_module: {DATA_MODULE}\n{TINY_ENCODER}\n{extra}"
            "trainer: {max_epochs: 1, log_every_n_steps: 1}\n"
        )
    overrides = [
        f"data.path={root / 'data' / 'subject2.h5'}",
        f"runs_dir={root / 'runs'}",
        "data.batch_size=4",
        "data.val_runs=1",
        "clip.preset=random",
        "trainer.enable_progress_bar=false",
        "evaluation.reconstruct_limit=6",
        "evaluation.classifier=none",
        "evaluation.clip_similarity=false",
        "evaluation.baselines=[mean_frame]",
    ]
    spec = root / "pipeline.yaml"
    spec.write_text(
        "name: tiny\n"
        "models: {clip: null, stable_diffusion: null, image_classifier: null,"
        " video_classifier: null}\n"
        f"source: {{kind: mindvideo, root: {data_dir}, subject: '2', config: {DATA_MODULE},"
        " overrides: [fps=2]}\n"
        f"stage1: {root / 'stage1.yaml'}\n"
        f"stage2: {root / 'stage2.yaml'}\n"
        f"overrides: {json.dumps(overrides)}\n"
        f"stage2_overrides: {json.dumps(TINY_UNET)}\n"
    )
    return spec


def test_spec_splits_overrides_and_checks_the_source(tmp_path):
    spec_path = tiny_pipeline(tmp_path)
    spec, rest = load_spec(spec_path, ["source.subject=3", "models.clip=/m/clip", "seed=4"])
    assert (spec.source.subject, spec.models.clip, rest) == ("3", "/m/clip", ["seed=4"])
    with pytest.raises(ConfigError, match="key 'source.kind': 'hcp' is not one of"):
        load_spec(spec_path, ["source.kind=hcp"])
    with pytest.raises(ConfigError, match="source.bogus"):
        load_spec(spec_path, ["source.bogus=1"])


@pytest.mark.slow  # ~40 s: every step twice over tiny models
def test_pipeline_skips_finished_steps_and_resumes_after_a_kill(tmp_path):
    spec = tiny_pipeline(tmp_path)
    lines: list[str] = []
    # A kill after stage 1: the first three steps' outputs are on disk, nothing after.
    first = run_pipeline(spec, progress=False, log=lines.append, steps=STEPS[:3])
    assert first.status == {"data": "ran", "embed": "ran", "stage1": "ran"}
    assert not (tmp_path / "runs" / "tiny" / "stage2").exists()
    encoder = (tmp_path / "runs" / "tiny" / "stage1" / "latest" / "encoder").resolve()
    lines.clear()
    second = run_pipeline(spec, progress=False, log=lines.append)
    assert second.status == {"data": "skipped", "embed": "skipped", "stage1": "skipped",
                             "stage2": "ran", "reconstruct": "ran", "evaluate": "ran"}  # fmt: skip
    assert any(f"stage1: finished earlier, skipped → {encoder.parent}" in line for line in lines)
    assert any(f"reconstruct: done → {second.stage2_run / 'samples'}" in line for line in lines)
    metrics = json.loads((second.stage2_run / "metrics.json").read_text())
    assert metrics["n_reconstructed"] == 6 and "neurocine" in metrics["rows"]
    assert "NeuroCine" in second.table
    assert validate(tmp_path / "data" / "subject2.h5").subject == "subject2"
    third = run_pipeline(spec, progress=False, log=lines.append)
    assert set(third.status.values()) == {"skipped"} and third.table == second.table


@pytest.mark.slow  # ~20 s
def test_a_bad_step_names_itself_and_leaves_earlier_outputs(tmp_path, capsys):
    spec = tiny_pipeline(tmp_path)
    args = ["pipeline", "--config", str(spec), "--no-progress"]
    missing = tmp_path / "no-such-sd"  # found out only when stage 2 loads it
    assert main([*args, "unet.preset=sd15", f"unet.pretrained={missing}"]) == 2
    err = [e for e in capsys.readouterr().err.splitlines() if e.startswith("neurocine:")]
    assert len(err) == 1 and "pipeline step 'stage2' failed" in err[0], err
    assert str(missing) in err[0]
    encoder = tmp_path / "runs" / "tiny" / "stage1" / "latest" / "encoder" / "config.json"
    assert encoder.is_file() and validate(tmp_path / "data" / "subject2.h5")
    assert not (tmp_path / "runs" / "tiny" / "stage2" / "latest").exists()


def test_unfinished_run_is_the_newest_without_an_export(tmp_path):
    runs = tmp_path / "stage2"
    for name, last, export in (("20260101-000000", True, False), ("20260102-000000", True, True),
                               ("20260103-000000", False, False)):  # fmt: skip
        (runs / name / "checkpoints").mkdir(parents=True)
        if last:
            (runs / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
        if export:
            (runs / name / "model").mkdir()
    (runs / "latest").symlink_to("20260102-000000")
    assert unfinished_run(runs, "model") == runs / "20260101-000000"
    (runs / "20260103-000000" / "hpc_ckpt_2.ckpt").write_bytes(b"x")  # SLURM preemption
    assert unfinished_run(runs, "model") == runs / "20260103-000000"
    assert resume_checkpoint(runs / "20260103-000000").name == "hpc_ckpt_2.ckpt"
    assert unfinished_run(tmp_path / "none", "model") is None
