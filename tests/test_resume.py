"""Reproducible and resumable training (both stages, tiny sizes, in-process).

A run stopped after its first epoch (same config, so the LR schedule is the same) and resumed
with ``ckpt_path=last`` must end bit-identical
to an uninterrupted run with the same seed: same weights, same logged metrics. That needs the
data order (epoch-seeded sampler), the augmentation generator (DataModule state), the noise
generators and the process RNG (dropout, timesteps; RunStateCallback) to continue exactly.
A SIGKILL leaves the same state on disk as this stop (checkpoints are written at epoch ends,
atomically), which tests/test_stage1.py exercises end to end (slow).
"""

from __future__ import annotations

import csv
import zipfile

import lightning as L
import pytest
import torch
from factories import write_tiny_subject
from stage2_helpers import save_tiny_encoder, tiny_config

from neurocine import training
from neurocine.config import load_config
from neurocine.errors import CheckpointError
from neurocine.training import check_checkpoint, fit

STAGE1 = [
    "stage=stage1",
    "data.batch_size=8",
    "data.augment.mask_ratio=0.3",
    "data.augment.interp_ratio=0.5",
    "encoder.patch_size=8",
    "encoder.embed_dim=16",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.out_tokens=3",
    "encoder.out_dim=10",
    "encoder.dropout=0.2",  # exercises the process RNG
    "stage1.n_way_trials=4",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def _final(run_dir):
    """Final weights and the last validation row of the CSV log."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    with open(run_dir / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss")]
    return ckpt["state_dict"], {k: v for k, v in rows[-1].items() if v}


def _assert_same(a, b):
    (wa, ma), (wb, mb) = a, b
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert ma == mb


def _stage1_cfg(subject, runs, name, *extra):
    return load_config(None, [f"data.path={subject}", f"runs_dir={runs}", f"name={name}",
                              *STAGE1, *extra])  # fmt: skip


def _stage2_cfg(subject, encoder, runs, name, *extra):
    return tiny_config(subject, encoder, runs, f"name={name}", "stage2.noise.ratio=0.4", *extra)


class _StopAfterFirstEpoch(L.Callback):
    """Ends fit after epoch 0's checkpoint: the files a SIGKILL during epoch 1 leaves."""

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def _interrupted_fit(cfg, monkeypatch):
    build = training.build_trainer

    def build_with_stop(cfg, run_dir, callbacks, monitor):
        return build(cfg, run_dir, [*callbacks, _StopAfterFirstEpoch()], monitor)

    with monkeypatch.context() as patch:
        patch.setattr(training, "build_trainer", build_with_stop)
        return fit(cfg)


def _check(make_cfg, monkeypatch, epochs=3):
    full = fit(make_cfg("full", f"trainer.max_epochs={epochs}"))
    again = fit(make_cfg("again", f"trainer.max_epochs={epochs}"))
    assert full.parent.name == "full" and again.parent.name == "again"
    _assert_same(_final(full), _final(again))  # reproducible
    split = _interrupted_fit(make_cfg("split", f"trainer.max_epochs={epochs}"), monkeypatch)
    assert torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
    resumed = fit(make_cfg("split", f"trainer.max_epochs={epochs}", "ckpt_path=last"))
    assert resumed == split
    assert (split / "logs" / "metrics-0.csv").is_file()  # the interrupted segment's log is kept
    _assert_same(_final(full), _final(resumed))  # resumed == uninterrupted
    return full


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    """4 training runs of 30 TRs: 60 validation windows, enough for 50-way retrieval."""
    return write_tiny_subject(tmp_path_factory.mktemp("resume") / "s.h5", trs_per_run=30)


def test_stage1_resume_equals_uninterrupted(subject, tmp_path, monkeypatch):
    make_cfg = lambda name, *extra: _stage1_cfg(subject, tmp_path, name, *extra)  # noqa: E731
    full = _check(make_cfg, monkeypatch)
    for name in ("config.yaml", "environment.json", "encoder/config.json"):
        assert (full / name).is_file()


def test_stage2_resume_equals_uninterrupted(tiny_subject, tmp_path, monkeypatch):
    encoder = save_tiny_encoder(tmp_path / "encoder", seed=1)
    make_cfg = lambda name, *extra: _stage2_cfg(tiny_subject, encoder, tmp_path, name, *extra)  # noqa: E731
    _check(make_cfg, monkeypatch, epochs=2)


class _Killed(Exception):
    """Stands for a kill between two training steps."""


class _DieAtStep(L.Callback):
    """Raises at the start of the batch after ``step`` optimizer steps (checkpoint first)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise _Killed


def test_mid_epoch_checkpoint_resume_equals_uninterrupted(subject, tmp_path, monkeypatch):
    """``trainer.checkpoint_every_n_steps``: a run killed inside an epoch resumes mid-epoch."""
    make_cfg = lambda name, *extra: _stage1_cfg(  # noqa: E731
        subject, tmp_path, name, "trainer.max_epochs=3", "trainer.checkpoint_every_n_steps=3",
        *extra)  # fmt: skip
    full = fit(make_cfg("full"))
    per_epoch = (
        torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] // 3
    )
    assert per_epoch > 3  # the step-3 checkpoints fall inside epochs
    kill_step = next(s for s in range(per_epoch + 1, 2 * per_epoch) if s % 3 == 1)
    build = training.build_trainer

    def build_with_kill(cfg, run_dir, callbacks, monitor):
        return build(cfg, run_dir, [*callbacks, _DieAtStep(kill_step)], monitor)

    with monkeypatch.context() as patch, pytest.raises(_Killed):
        patch.setattr(training, "build_trainer", build_with_kill)
        fit(make_cfg("split"))
    split = next(p for p in (tmp_path / "split").iterdir() if p.is_dir())
    saved = torch.load(split / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, kill_step - 1)
    assert 0 < saved["FMRIVideoDataModule"]["epoch_batches"] < per_epoch
    resumed = fit(make_cfg("split", f"ckpt_path={split / 'checkpoints' / 'last.ckpt'}"))
    assert resumed == split
    _assert_same(_final(full), _final(resumed))


def test_checkpoint_guard(subject, tmp_path):
    run = fit(_stage1_cfg(subject, tmp_path, "guard", "trainer.max_epochs=1"))
    last = run / "checkpoints" / "last.ckpt"
    check_checkpoint(last, "stage1")
    with pytest.raises(CheckpointError, match="a stage1 checkpoint, cannot resume stage2"):
        check_checkpoint(last, "stage2")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt: not a readable checkpoint"):
        check_checkpoint(truncated, "stage1")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a neurocine training checkpoint"):
        check_checkpoint(foreign, "stage1")
    code = tmp_path / "code.ckpt"
    torch.save({"neurocine": {"stage": "stage1"}, "payload": zipfile.ZipInfo("x")}, code)
    with pytest.raises(CheckpointError, match="code.ckpt: not a readable checkpoint"):
        check_checkpoint(code, "stage1")  # weights_only refuses pickled objects
    newer = tmp_path / "newer.ckpt"
    torch.save({"neurocine": {"stage": "stage1", "format": 99}}, newer)
    with pytest.raises(CheckpointError, match="format 99 is newer"):
        check_checkpoint(newer, "stage1")
