"""Long runs on clusters, through the ``neurocine`` command (slow): SLURM preemption, stage-2 DDP.

SLURM is stood in for by its environment variables (``SLURM_NTASKS``, ``SLURM_JOB_ID``, …):
Lightning's SLURM environment is detected from them, as on a cluster. ``scontrol`` does not
exist here, so the requeue itself fails; the test checks that this is logged, that training
goes on, and that the same command started again (as SLURM restarts a requeued job) continues
the run from the checkpoint the signal wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from factories import write_tiny_subject
from stage2_helpers import TINY_UNET, save_tiny_encoder

from neurocine.lit.stage1 import steps_per_epoch
from neurocine.training import check_checkpoint

ROOT = Path(__file__).resolve().parent.parent
STAGE1 = [
    "stage=stage1",
    "data.batch_size=8",
    "encoder.patch_size=8",
    "encoder.embed_dim=16",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.out_tokens=3",
    "encoder.out_dim=10",
    "stage1.n_way_trials=4",
    "trainer.enable_progress_bar=false",
]
JOB = "4242"


def _neurocine(*args: str) -> list[str]:
    return [sys.executable, "-m", "neurocine", *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _slurm_env() -> dict[str, str]:
    return _env(SLURM_JOB_ID=JOB, SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0",
                SLURM_NODEID="0", SLURM_JOB_NAME="neurocine-test",
                SLURM_NODELIST="localhost")  # fmt: skip


def _readable(path: Path) -> bool:
    try:
        check_checkpoint(path, "stage1")
    except Exception:
        return False
    return True


@pytest.mark.slow
def test_preemption_signal_saves_and_the_restarted_job_resumes(tmp_path):
    subject = write_tiny_subject(tmp_path / "s.h5", trs_per_run=30)
    epochs = 60
    command = _neurocine("train", "stage1", f"data.path={subject}", f"runs_dir={tmp_path}",
                         "name=preempt", f"trainer.max_epochs={epochs}", *STAGE1)  # fmt: skip
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=_slurm_env(), stdout=out, stderr=out)
    hpc = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if list(tmp_path.glob("preempt/*/checkpoints/last.ckpt")):
                break
            time.sleep(0.1)
        assert proc.poll() is None, log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGUSR1)  # what `sbatch --signal=USR1@90` sends
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(tmp_path.glob("preempt/*/hpc_ckpt_*.ckpt"))
            if found and _readable(found[0]):
                hpc = found[0]
                break
            time.sleep(0.1)
        assert hpc is not None and proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
        assert proc.poll() is None, "training stopped after the failed requeue"
        os.kill(proc.pid, signal.SIGKILL)  # SLURM ends the requeued job
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = log.read_text()
    assert f"Requeuing SLURM job {JOB} failed" in first, first[-3000:]
    run_dir = hpc.resolve().parent  # the glob may have gone through the .slurm-<job> link
    saved = torch.load(hpc, map_location="cpu", weights_only=True)
    assert saved["epoch"] < epochs - 1
    assert (tmp_path / "preempt" / f".slurm-{JOB}").resolve() == run_dir
    # SLURM starts the same command again, with the same job id: it continues the same run.
    again = subprocess.run(command, cwd=ROOT, env=_slurm_env(), capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"run directory: {run_dir}" in again.stdout
    names = {p.name for p in (tmp_path / "preempt").iterdir()}
    assert names == {run_dir.name, "latest", f".slurm-{JOB}"}  # no second run directory
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["epoch"] == epochs - 1
    assert final["global_step"] == epochs * steps_per_epoch(2 * 30, 8, 1)
    assert (run_dir / "logs" / "metrics-0.csv").is_file()  # the first start's log is kept


@pytest.mark.slow
def test_stage2_ddp_two_gloo_processes(tiny_subject, tmp_path):
    encoder = save_tiny_encoder(tmp_path / "encoder", seed=1)
    epochs = 2
    overrides = ["stage=stage2", "name=stage2-ddp", f"runs_dir={tmp_path}",
                 f"data.path={tiny_subject}", "data.batch_size=3", "data.val_runs=1",
                 f"stage2.encoder_ckpt={encoder}", "trainer.enable_progress_bar=false",
                 f"trainer.max_epochs={epochs}", "trainer.devices=2", "trainer.strategy=ddp",
                 *TINY_UNET]  # fmt: skip
    proc = subprocess.run(_neurocine("train", "stage2", *overrides), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = (tmp_path / "stage2-ddp" / "latest").resolve()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # 3 training runs of 10 TRs (window 2, lag 0): 30 windows; 2 ranks of 15, batches of 3.
    expected = epochs * steps_per_epoch(3 * 10, batch_size=3, world_size=2)
    assert ckpt["global_step"] == expected == epochs * 5
