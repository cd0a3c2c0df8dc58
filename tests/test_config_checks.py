"""Every config value is checked before anything runs; a failed run is marked and never `latest`.

The walk over the schema sets each declared field to a value outside its declared range through
the real ``neurocine`` entry point (in-process: the check happens in ``load_config``, before torch
loads) and asserts exit status 2, one line naming the key, no new run directory and an unchanged
``latest``. Each rule between fields has a case; the runs that fail after set-up train a tiny
stage 1 in-process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import lightning as L
import pytest
import torch
from factories import write_tiny_subject

from neurocine import training
from neurocine.cli import main
from neurocine.config import (
    CROSS_RULES,
    PRECISIONS,
    STRATEGIES,
    ConfigWarning,
    ExperimentConfig,
    Valid,
    load_config,
)
from neurocine.run_status import latest_target, list_runs, read_status, write_status
from neurocine.training import fit

ROOT = Path(__file__).resolve().parents[1]
# Fields that name things (paths, model ids, experiment names) rather than a quantity or a
# choice; the preprocess block is checked by neurocine.data.preprocess_config.
FREE_TEXT = {
    "name",
    "runs_dir",
    "data_module",
    "ckpt_path",
    "preprocess",
    "simulate.subject",
    "data.path",
    "clip.pretrained",
    "encoder.pretrained",
    "unet.pretrained",
    "stage2.encoder_ckpt",
    "evaluation.evaluator_dir",
    "evaluation.image_classifier",
    "evaluation.video_classifier",
    "evaluation.clip",  # a clip.preset name or a local CLIP directory
}
TINY = [
    "data.val_runs=1",
    "data.batch_size=8",
    "encoder.patch_size=8",
    "encoder.embed_dim=16",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.out_tokens=3",
    "encoder.out_dim=10",
    "stage1.n_way=2",
    "stage1.n_way_trials=4",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def schema_fields(cls: type = ExperimentConfig, prefix: str = ""):
    """``(key, type, Valid or None)`` of every leaf field of the schema."""
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        kind = hints[spec.name]
        if dataclasses.is_dataclass(kind):
            yield from schema_fields(kind, f"{prefix}{spec.name}.")
        else:
            yield f"{prefix}{spec.name}", kind, spec.metadata.get("valid")


RULED = {key: (kind, valid) for key, kind, valid in schema_fields() if valid is not None}
# Fields whose rule is a predicate: a value it refuses, as an override token.
BY_PREDICATE = {
    "clip.device": "clip.device=tpu0",
    "trainer.devices": "trainer.devices=abc",
    "trainer.limit_train_batches": "trainer.limit_train_batches=0",
    "trainer.limit_val_batches": "trainer.limit_val_batches=-1",
    "stage2.noise.schedule": "stage2.noise.schedule.x=0.5",
    "stage2.lora_targets": "stage2.lora_targets=[]",
}


def _is(kind, base: type) -> bool:
    return kind is base or base in typing.get_args(kind)


def bad_token(key: str) -> str:
    """An override that puts ``key`` just outside its declared range or choices."""
    kind, valid = RULED[key]
    if valid.test is not None:
        return BY_PREDICATE[key]
    listed = typing.get_origin(kind) is list
    if valid.choices:
        value = "bogus"
    elif valid.ge is not None:
        value = valid.ge - (1 if _is(kind, int) or listed and int in typing.get_args(kind) else 0.5)
    elif valid.gt is not None:
        value = valid.gt
    elif valid.le is not None:
        value = valid.le + 1
    else:
        value = valid.lt
    return f"{key}=[{value}]" if listed else f"{key}={value}"


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """An experiment on a tiny subject, with one finished run that ``latest`` points at."""
    root = tmp_path_factory.mktemp("project")
    write_tiny_subject(root / "s.h5")
    (root / "exp.yaml").write_text(
        f"name: exp\nruns_dir: {root}/runs\ndata:\n  path: {root}/s.h5\n"
    )
    done = root / "runs" / "exp" / "20260101-000000"
    done.mkdir(parents=True)
    (done / "config.yaml").write_text("name: exp\n")
    write_status(done, "finished")
    training.mark_latest(done)
    return root


def _cli(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    """Run ``neurocine ARGS`` in-process: (exit status, stderr lines, stdout lines)."""
    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse
        status = exc.code
    out, err = capsys.readouterr()
    return status, err.strip().splitlines(), out.strip().splitlines()


def _refused(project, capsys, *tokens: str, command: tuple[str, ...] = ()) -> str:
    """The one error line of a refused command; checks exit 2 and that nothing was written."""
    before, latest = _listing(project), latest_target(project / "runs" / "exp")
    command = command or ("train", "stage1", "--config", str(project / "exp.yaml"))
    status, err, _ = _cli(capsys, *command, *tokens)
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith("neurocine: error: "), err
    assert _listing(project) == before, "a refused command left files behind"
    assert latest_target(project / "runs" / "exp") == latest
    return err[0]


def test_every_numeric_and_enumerated_field_declares_its_values():
    undeclared = [
        key
        for key, kind, valid in schema_fields()
        if valid is None and kind is not bool and key not in FREE_TEXT
    ]
    assert not undeclared, f"declare the valid values of {undeclared} with param(...)"
    assert all(isinstance(v, Valid) for _, v in RULED.values())


def test_defaults_and_shipped_experiments_pass():
    load_config(None)
    for path in sorted((ROOT / "experiments").glob("stage*.yaml")):
        load_config(path, ["stage2.encoder_ckpt=x"])


@pytest.mark.parametrize("key", sorted(RULED))
def test_out_of_range_value_is_refused_naming_the_key(key, project, capsys):
    token = bad_token(key)
    line = _refused(project, capsys, token)
    assert line.startswith(f"neurocine: error: {key}="), line
    assert "must be" in line


# One case per rule between fields (CROSS_RULES): the overrides and a fragment of the message.
CROSS = {
    "_sampling_start": (["sampling.strength=0.5"], "sampling.strength=0.5 needs an initial"),
    "_sampling_steps": (
        ["sampling.init=ridge", "sampling.steps=2", "sampling.strength=0.4"],
        "sampling.steps=2 × sampling.strength=0.4",
    ),
    "_stage1_targets": (["stage1.w_img=0", "stage1.w_txt=0"], "no target to train on"),
    "_beta_range": (["stage2.beta_start=0.02", "stage2.beta_end=0.01"], "beta_start < beta_end"),
    "_training_length": (["trainer.max_epochs=-1"], "trainer.max_steps=-1: training would"),
    "_devices_for_accelerator": (["trainer.devices=-1"], "trainer.accelerator=cpu"),
    "_encoder_heads": (["encoder.embed_dim=30", "encoder.num_heads=4"], "encoder.embed_dim=30"),
    "_unet_divisors": (["unet.norm_num_groups=5"], "unet.norm_num_groups=5 must divide"),
    "_evaluator_held_out": (["evaluation.split=val"], "would score clips it learnt from"),
}


def test_every_cross_rule_has_a_case():
    assert set(CROSS) == {rule.__name__ for rule in CROSS_RULES}


@pytest.mark.parametrize("rule", sorted(CROSS))
def test_cross_rule_is_refused(rule, project, capsys):
    tokens, fragment = CROSS[rule]
    assert fragment in _refused(project, capsys, *tokens)


# Rules that need the data file or the Trainer: checked by `fit` before the run directory.
SETUP = {
    "val_runs ≥ runs of the file": (["data.val_runs=4"], "data.val_runs=4"),
    "lag leaves no window": (["data.lag_trs=10"], "data.lag_trs=10: no train window"),
    "batch of each DDP process": (
        ["data.val_runs=1", "data.batch_size=20", "trainer.devices=2", "trainer.strategy=ddp"],
        "data.batch_size=20 with 2 processes",
    ),
}


@pytest.mark.parametrize("case", sorted(SETUP))
def test_setup_rule_is_refused_before_the_run_directory(case, project, capsys):
    tokens, fragment = SETUP[case]
    assert fragment in _refused(project, capsys, *TINY, *tokens)


def test_a_warning_is_said_once_in_one_line(project, capsys):
    tokens = ("trainer.check_val_every_n_epoch=9", "trainer.max_epochs=3")
    with pytest.warns(ConfigWarning) as said:
        load_config(None, list(tokens))
        load_config(None, list(tokens))
    assert len(said) == 1
    assert str(said[0].message).startswith("trainer.check_val_every_n_epoch=9 > trainer.max_")
    # Through the CLI, load_config and fit both check: still one line, before the error.
    status, err, _ = _cli(
        capsys, "train", "stage1", "--config", str(project / "exp.yaml"), *TINY,
        "trainer.check_val_every_n_epoch=8", "trainer.max_epochs=3", "data.lag_trs=10",
    )  # fmt: skip
    assert status == 2
    assert len(err) == 2 and err[0].startswith("neurocine: warning: trainer.check_val_every_n_")
    assert "no validation epoch" in err[0] and "data.lag_trs=10" in err[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_library_error_during_setup_names_the_trainer_keys(project, capsys):
    line = _refused(project, capsys, *TINY, "trainer.accelerator=cuda")
    assert "trainer.accelerator=cuda, trainer.devices=1" in line
    assert "MisconfigurationException" in line


def test_reconstruct_checks_its_overrides(project, capsys, tmp_path):
    run = project / "runs" / "exp" / "20260101-000000"
    line = _refused(
        project,
        capsys,
        "sampling.guidance_scale=-3",
        command=("reconstruct", "--run", str(run), "--out", str(tmp_path / "rec")),
    )
    assert "sampling.guidance_scale=-3.0: must be ≥ 0" in line
    assert not (tmp_path / "rec").exists()


def test_real_process_fails_fast_in_one_line(project):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "neurocine", "train", "stage1", "--config"]
    before = _listing(project)
    started = time.perf_counter()
    proc = subprocess.run(
        [*cmd, str(project / "exp.yaml"), "trainer.max_epochs=0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "neurocine: error: trainer.max_epochs=0: must be ≥ 1 or -1"
    ]
    assert _listing(project) == before
    assert seconds < 10, f"{seconds:.1f} s: the config check should come before torch loads"


# --- runs that fail after set-up ------------------------------------------------------------


class _Raise(L.Callback):
    """Raise ``exc`` when epoch 1 starts (epoch 0's last.ckpt is on disk by then)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise self.exc


def _fit_raising(cfg, monkeypatch, exc: BaseException):
    build = training.build_trainer

    def build_raising(cfg, run_dir, callbacks, monitor):
        return build(cfg, run_dir, [*callbacks, _Raise(exc)], monitor)

    monkeypatch.setattr(training, "build_trainer", build_raising)
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores Ctrl-C while it shuts down
    try:
        with pytest.raises(type(exc) if not isinstance(exc, KeyboardInterrupt) else SystemExit):
            fit(cfg)
    finally:
        signal.signal(signal.SIGINT, sigint)
        monkeypatch.undo()


@pytest.fixture
def runs(tmp_path, tiny_subject):
    """Configs of a tiny stage 1 in a fresh runs folder, and one finished run."""

    def make(*extra: str):
        overrides = [f"data.path={tiny_subject}", f"runs_dir={tmp_path}", "name=exp", *TINY]
        return load_config(None, [*overrides, *extra])

    finished = fit(make("trainer.max_epochs=1"))
    return make, finished


def test_failure_after_setup_is_failed_never_latest_and_cleaned(runs, monkeypatch, capsys):
    make, finished = runs
    _fit_raising(make("trainer.max_epochs=3"), monkeypatch, RuntimeError("disk full"))
    failed = max(p for p in finished.parent.iterdir() if p.name != "latest")
    status = read_status(failed)
    assert status.state == "failed" and status.error == "RuntimeError: disk full"
    assert latest_target(finished.parent) == finished.resolve()
    assert json.loads((finished / "status.json").read_text())["state"] == "finished"
    runs_dir = str(finished.parent.parent)
    code, _, out = _cli(capsys, "runs", "list", "--runs-dir", runs_dir)
    assert code == 0
    rows = {line.split()[1]: line for line in out[1:]}
    assert "failed" in rows[failed.name] and "RuntimeError: disk full" in rows[failed.name]
    assert "finished" in rows[finished.name] and "*" in rows[finished.name]
    code, _, out = _cli(capsys, "runs", "clean", "--failed", "--runs-dir", runs_dir)
    assert code == 0 and not failed.exists() and finished.is_dir()
    assert out[-1] == "removed 1 failed run(s)"


def test_interrupted_run_is_resumable_and_becomes_latest_when_it_finishes(runs, monkeypatch):
    make, finished = runs
    _fit_raising(make("trainer.max_epochs=2"), monkeypatch, KeyboardInterrupt())
    stopped = max(p for p in finished.parent.iterdir() if p.name != "latest")
    status = read_status(stopped)
    assert status.state == "interrupted" and status.resumable
    assert status.error == "stopped by Ctrl-C"
    assert latest_target(finished.parent) == finished.resolve()
    resumed = fit(make("trainer.max_epochs=2", "ckpt_path=last"))
    assert resumed == stopped
    assert read_status(stopped).state == "finished"
    assert latest_target(finished.parent) == stopped.resolve()


def test_latest_leaves_a_resumed_run_that_did_not_finish(tmp_path):
    older, newer = (tmp_path / "exp" / name for name in ("20260101-000000", "20260102-000000"))
    for run in (older, newer):
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("name: exp\n")
        write_status(run, "finished")
    training.mark_latest(newer)
    write_status(newer, "failed", "RuntimeError: resumed and failed")
    training.unmark_latest(newer)
    assert latest_target(tmp_path / "exp") == older.resolve()
    write_status(older, "interrupted")
    training.unmark_latest(older)  # no other finished run: no latest at all
    assert not (tmp_path / "exp" / "latest").exists()


def test_dead_process_reads_as_failed_or_interrupted(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    run = tmp_path / "exp" / "20260101-000000"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("name: exp\n")
    write_status(run, "running")
    assert read_status(run).state == "running"  # this process is alive
    record = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**record, "pid": gone.pid}))
    status = read_status(run)
    assert status.state == "failed" and "before its first checkpoint" in status.error
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert read_status(run).state == "interrupted" and read_status(run).resumable
    assert [r.path for r in list_runs(tmp_path)] == [run]


def test_sigkill_leaves_a_run_that_is_never_latest(runs, tmp_path):
    """A real ``neurocine train`` killed once it has started: not latest, failed or resumable."""
    make, finished = runs
    cfg_path = tmp_path / "exp.yaml"
    cfg_path.write_text(f"name: exp\nruns_dir: {tmp_path}\ndata:\n  path: {make().data.path}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "neurocine", "train", "stage1", "--config", str(cfg_path)]
    proc = subprocess.Popen(
        [*cmd, *TINY, "trainer.max_epochs=500"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            started = [r for r in list_runs(tmp_path) if r.state == "running"]
            if started:
                break
            time.sleep(0.1)
        assert proc.poll() is None and started, "the run never said running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    status = read_status(started[0].path)
    has_ckpt = (started[0].path / "checkpoints" / "last.ckpt").is_file()
    assert status.state == ("interrupted" if has_ckpt else "failed"), status
    assert latest_target(finished.parent) == finished.resolve()


def test_choices_are_those_of_the_code_that_reads_them():
    from lightning.fabric.plugins.precision.precision import (
        _PRECISION_INPUT_STR,
        _PRECISION_INPUT_STR_ALIAS,
    )
    from lightning.pytorch.strategies import StrategyRegistry

    from neurocine import evaluation, reconstruct
    from neurocine.diffusion import callback, noise
    from neurocine.lit import stage2
    from neurocine.models import clip_targets, fmri_encoder, video_unet

    code = {
        "stage": training.STAGES,
        "clip.preset": tuple(clip_targets.LOADERS),
        "clip.frame_reduce": clip_targets.FRAME_REDUCE,
        "encoder.preset": fmri_encoder.PRESETS,
        "encoder.patch_embedding": fmri_encoder.PATCH_EMBEDDINGS,
        "unet.preset": video_unet.PRESETS,
        "stage2.condition": ("auto", *video_unet.CONDITION_SOURCES),
        "stage2.unet_trainable": stage2.UNET_TRAINABLE,
        "stage2.frozen_dtype": tuple(stage2.FROZEN_DTYPES),
        "stage2.optimizer": stage2.OPTIMIZERS,
        "stage2.noise.mode": noise.MODES,
        "stage2.noise.schedule_unit": callback.UNITS,
        "sampling.init": reconstruct.INITS,
        "evaluation.split": tuple(reconstruct.SPLITS),
        "evaluation.baselines": evaluation.BASELINES,
    }
    for key, choices in code.items():
        assert set(RULED[key][1].choices) == set(choices), key
    lightning = {
        *typing.get_args(_PRECISION_INPUT_STR),
        *typing.get_args(_PRECISION_INPUT_STR_ALIAS),
    }
    assert set(PRECISIONS) == lightning
    assert set(STRATEGIES) - {"auto"} <= set(StrategyRegistry.available_strategies())
