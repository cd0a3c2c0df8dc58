"""The training driver's run directories: new runs, `latest`, resume resolution, provenance."""

from __future__ import annotations

import pytest

from neurocine.config import load_config
from neurocine.errors import CheckpointError, ConfigError
from neurocine.run_status import latest_target, write_status
from neurocine.training import (
    RUN_DIR_ENV,
    environment,
    fit,
    mark_latest,
    new_run_dir,
    resolve_run,
)


def test_new_run_dirs_are_distinct_and_latest_follows(tmp_path):
    a = new_run_dir(tmp_path, "exp")
    b = new_run_dir(tmp_path, "exp")
    assert a != b and a.parent == b.parent == tmp_path / "exp"
    mark_latest(a)
    assert latest_target(tmp_path / "exp") == a.resolve()
    mark_latest(b)
    assert latest_target(tmp_path / "exp") == b.resolve()


def _run(runs, state, ckpt=True):
    run = new_run_dir(runs, "exp")
    (run / "config.yaml").write_text("name: exp\n")
    write_status(run, state)
    if ckpt:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    return run.resolve()


def test_resume_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    cfg = load_config(None, [f"runs_dir={tmp_path}", "name=exp", "ckpt_path=last"])
    with pytest.raises(CheckpointError, match="no previous run of experiment 'exp'"):
        resolve_run(cfg)
    finished = _run(tmp_path, "finished")
    _run(tmp_path, "finished", ckpt=False)  # nothing to resume from
    _run(tmp_path, "failed")  # failed runs are resumed only by name (ckpt_path=FILE)
    assert resolve_run(cfg) == (finished, str(finished / "checkpoints" / "last.ckpt"))
    interrupted = _run(tmp_path, "interrupted")
    assert resolve_run(cfg)[0] == interrupted  # the newest resumable run, latest or not
    explicit = load_config(None, [f"ckpt_path={tmp_path / 'missing.ckpt'}"])
    with pytest.raises(CheckpointError, match="missing.ckpt: checkpoint not found"):
        resolve_run(explicit)


def test_ddp_children_reuse_the_launchers_run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path / "chosen"))
    cfg = load_config(None, [f"runs_dir={tmp_path}"])
    assert resolve_run(cfg) == (tmp_path / "chosen", None)


def test_environment_records_versions_and_argv():
    env = environment()
    assert env["versions"]["torch"] and env["versions"]["lightning"]
    assert isinstance(env["argv"], list)


def test_unknown_stage_is_a_config_error():
    with pytest.raises(ConfigError, match="stage"):
        fit(load_config(None, ["stage=stage3"]))
