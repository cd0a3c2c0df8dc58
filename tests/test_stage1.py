"""Stage 1: the InfoNCE loss, the LightningModule, build_module's checks, export, schedule.

End-to-end runs on a tiny simulated subject: learning lifts 50-way retrieval above chance;
DDP on 2 CPU processes and SIGKILL → resume are ``slow``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from factories import write_tiny_subject
from omegaconf import OmegaConf

from neurocine.config import SimulationConfig, load_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.errors import ConfigError, SchemaError
from neurocine.lit.losses import contrastive_loss, info_nce
from neurocine.lit.stage1 import (
    ContrastiveEncoderModule,
    build_module,
    steps_per_epoch,
    warmup_cosine,
)
from neurocine.models.fmri_encoder import FMRIEncoder

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "stage1.yaml"
TINY_ENCODER = [
    "encoder.patch_size=8",
    "encoder.embed_dim=16",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.out_tokens=3",
    "encoder.out_dim=10",
]


def embeddings(seed: int, n: int = 6, d: int = 9) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


# --- the loss ----------------------------------------------------------------------------------


def test_info_nce_is_symmetric_in_its_two_arguments():
    q, k = embeddings(0), embeddings(1)
    torch.testing.assert_close(info_nce(q, k, 10.0), info_nce(k, q, 10.0))


def test_info_nce_is_lower_for_matched_than_shuffled_pairs():
    keys = embeddings(1, n=8)
    query = keys + 0.3 * embeddings(2, n=8)
    shuffled = keys[torch.tensor([3, 0, 6, 1, 7, 2, 4, 5])]
    matched_loss = info_nce(query, keys, 10.0)
    assert matched_loss < info_nce(query, shuffled, 10.0)
    assert matched_loss < math.log(8)  # better than a uniform guess


def test_info_nce_equals_the_clip_formula():
    q, k = embeddings(0), embeddings(1)
    logits = (
        7.0 * torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(k, dim=1).T
    )
    labels = torch.arange(6)
    expected = 0.5 * (
        torch.nn.functional.cross_entropy(logits, labels)
        + torch.nn.functional.cross_entropy(logits.T, labels)
    )
    torch.testing.assert_close(info_nce(q, k, 7.0), expected)


def test_repeated_targets_act_as_shared_positives():
    """Two TRs sharing a caption: the loss equals the one with a target spread over both."""
    keys = embeddings(1)
    keys[4] = keys[1]
    query = keys + 0.3 * embeddings(2)
    q = torch.nn.functional.normalize(query, dim=1)
    k = torch.nn.functional.normalize(keys, dim=1)
    logits = 10.0 * q @ k.T
    soft = torch.eye(6)
    soft[[1, 1, 4, 4], [1, 4, 1, 4]] = 0.5
    expected = 0.5 * (
        torch.nn.functional.cross_entropy(logits, soft)
        + torch.nn.functional.cross_entropy(logits.T, soft)
    )
    torch.testing.assert_close(info_nce(query, keys, 10.0), expected)


def test_contrastive_loss_weights_targets():
    q, img, txt = embeddings(0), embeddings(1), embeddings(2)
    targets = {"clip_image": img, "clip_text": txt}
    total, parts = contrastive_loss(q, targets, {"clip_image": 1.0, "clip_text": 0.5}, 10.0)
    torch.testing.assert_close(total, parts["clip_image"] + 0.5 * parts["clip_text"])
    total, parts = contrastive_loss(q, targets, {"clip_image": 1.0, "clip_text": 0.0}, 10.0)
    assert set(parts) == {"clip_image"}


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)


def test_steps_per_epoch_documented_formula():
    assert steps_per_epoch(100, batch_size=16, world_size=1) == 6  # drop_last
    assert steps_per_epoch(100, batch_size=16, world_size=2) == 3  # 50 samples per rank
    assert steps_per_epoch(101, batch_size=16, world_size=2) == 3  # 51 (padded) per rank


# --- the module on the tiny fixture (random embeddings, V=61, D=12) -----------------------------


def tiny_cfg(path, tmp_path, *overrides):
    return load_config(
        EXPERIMENT,
        [
            f"data.path={path}",
            f"runs_dir={tmp_path / 'runs'}",
            "data.batch_size=5",
            "data.lag_trs=0",
            "data.val_runs=1",
            "data.augment.mask_ratio=0.25",
            "data.augment.interp_ratio=0.5",
            "trainer.enable_progress_bar=false",
            "stage1.warmup_steps=2",
            *TINY_ENCODER,
            *overrides,
        ],
    )


def setup_dm(cfg) -> FMRIVideoDataModule:
    dm = FMRIVideoDataModule(cfg)
    dm.setup("fit")
    return dm


def test_build_module_sizes_from_the_data(tiny_subject, tmp_path):
    cfg = tiny_cfg(tiny_subject, tmp_path)
    module = build_module(cfg, setup_dm(cfg))
    config = module.encoder.config
    assert (config.num_voxels, config.window, config.clip_dim) == (61, 2, 12)
    assert module.checkpoint_monitor == ("val/top1_50way", "max")
    assert module(torch.zeros(3, 2, 61)).shape == (3, 12)


def test_text_only_training_keeps_the_best_checkpoint_by_the_text_n_way(tiny_subject, tmp_path):
    from neurocine.training import fit

    cfg = tiny_cfg(tiny_subject, tmp_path, "stage1.w_img=0.0", "stage1.n_way=5",
                   "trainer.max_epochs=1")  # fmt: skip
    module = build_module(cfg, setup_dm(cfg))
    assert module.checkpoint_monitor == ("val/top1_5way_text", "max")
    run_dir = fit(cfg)  # the image n-way is not logged: monitoring it stopped the fit
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert any("val/top1_5way_text" in row for row in read_metrics(run_dir))


def test_file_without_embeddings_says_run_embed(tmp_path):
    path = write_tiny_subject(tmp_path / "bare.h5", clip_dim=None)
    cfg = tiny_cfg(path, tmp_path)
    with pytest.raises(SchemaError, match=r"no clip_image/clip_text in .*run `neurocine embed"):
        build_module(cfg, setup_dm(cfg))


def test_pretrained_encoder_with_another_clip_dim_is_refused(tiny_subject, tmp_path):
    encoder = FMRIEncoder(num_voxels=61, window=2, patch_size=8, embed_dim=16, depth=1,
                          num_heads=2, out_tokens=3, out_dim=10, clip_dim=16)  # fmt: skip
    encoder.save_atomic(tmp_path / "enc16")
    cfg = tiny_cfg(tiny_subject, tmp_path, f"encoder.pretrained={tmp_path / 'enc16'}")
    with pytest.raises(ConfigError, match="projects to 16 dims but the CLIP embeddings have 12"):
        build_module(cfg, setup_dm(cfg))


def test_batch_with_wrong_embedding_width_is_a_config_error(tiny_subject, tmp_path):
    cfg = tiny_cfg(tiny_subject, tmp_path)
    module = build_module(cfg, setup_dm(cfg))
    batch = {"fmri": torch.zeros(3, 2, 61), "clip_image": torch.zeros(3, 7)}
    with pytest.raises(ConfigError, match="clip_image has 7 dims but the encoder projects to 12"):
        module.training_step(batch, 0)


def test_unknown_config_key_is_an_error(tiny_subject, tmp_path):
    with pytest.raises(ConfigError, match="stage1.temprature"):
        tiny_cfg(tiny_subject, tmp_path, "stage1.temprature=0.1")


def test_module_does_not_augment_again(tiny_subject, tmp_path):
    cfg = tiny_cfg(tiny_subject, tmp_path, "encoder.dropout=0.0")
    module = build_module(cfg, setup_dm(cfg)).eval()
    fmri = torch.randn(4, 2, 61, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(module(fmri), module(fmri.clone()))


def test_fast_dev_run_steps_and_updates(tiny_subject, tmp_path):
    cfg = tiny_cfg(tiny_subject, tmp_path)
    dm = setup_dm(cfg)
    module = build_module(cfg, dm)
    before = module.encoder.blocks[0].attn.qkv.weight.detach().clone()
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert not torch.equal(before, module.encoder.blocks[0].attn.qkv.weight)
    logged = trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/top1_batch", "val/top5_batch"} <= set(logged)


def test_export_reloads_to_identical_outputs(tiny_subject, tmp_path):
    cfg = tiny_cfg(tiny_subject, tmp_path)
    module = build_module(cfg, setup_dm(cfg)).eval()
    out = module.export(tmp_path / "run")
    assert out == tmp_path / "run" / "encoder"
    loaded = FMRIEncoder.load(out).eval()
    fmri = torch.randn(3, 2, 61, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = module.encoder(fmri), loaded(fmri)
    assert torch.equal(a.embedding, b.embedding) and torch.equal(a.tokens, b.tokens)


def test_checkpoint_rebuilds_the_module_without_the_encoder_object(tiny_subject, tmp_path):
    cfg = tiny_cfg(tiny_subject, tmp_path)
    module = build_module(cfg, setup_dm(cfg))
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=setup_dm(cfg))
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    restored = ContrastiveEncoderModule.load_from_checkpoint(tmp_path / "m.ckpt").eval()
    fmri = torch.randn(2, 2, 61, generator=torch.Generator().manual_seed(2))
    module.eval()
    torch.testing.assert_close(restored(fmri), module(fmri))


# --- end to end on a tiny simulated subject ----------------------------------------------------

# Short scenes (one TR each on average): few near-identical clips among the 50-way distractors.
SIM = dict(n_train_runs=5, n_test_runs=1, trs_per_run=40, n_voxels=240, snr=3.0, test_repeats=2,
           height=16, width=16, scene_mean_s=2.0)  # fmt: skip
TINY_RUN = [
    "data.batch_size=16",
    "data.val_runs=2",  # 2 × 38 = 76 validation windows (≥ 50 for 50-way)
    "encoder.patch_size=16",
    "encoder.embed_dim=32",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.out_tokens=4",
    "encoder.out_dim=32",
    "encoder.dropout=0.0",
    "encoder.patch_embedding=per_patch",
    "stage1.lr=1e-2",
    "stage1.warmup_steps=3",
    "trainer.enable_progress_bar=false",
]


@pytest.fixture(scope="module")
def sim_subject(tmp_path_factory):
    """A small simulated subject with the shipped tiny CLIP's targets (3 train + 2 val runs)."""
    from neurocine.data.simulate import simulate_subject
    from neurocine.embedding import embed_subject

    path = tmp_path_factory.mktemp("sim") / "sim.h5"
    simulate_subject(OmegaConf.structured(SimulationConfig(**SIM)), path)
    embed_subject(path, load_config(None, ["clip.preset=tiny"]), progress=False)
    return path


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """Rows of every CSV log segment of a run (a resumed fit starts a new segment)."""
    rows = []
    for path in sorted((run_dir / "logs").glob("metrics*.csv")):
        with open(path) as f:
            rows += [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]
    return rows


@pytest.mark.slow
def test_short_run_lifts_val_50way_above_chance(sim_subject, tmp_path):
    from neurocine.training import fit

    cfg = load_config(EXPERIMENT, [f"data.path={sim_subject}", f"runs_dir={tmp_path}",
                                   "trainer.max_epochs=25", *TINY_RUN])  # fmt: skip
    run_dir = fit(cfg)
    vals = [float(r["val/top1_50way"]) for r in read_metrics(run_dir) if "val/top1_50way" in r]
    assert len(vals) == 25
    print("val/top1_50way per epoch:", [round(v, 3) for v in vals])
    assert vals[0] < 0.06 and max(vals[-5:]) >= 0.08, vals  # chance is 0.02
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "encoder" / "config.json").is_file()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "neurocine", "train", "stage1", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_ddp_two_cpu_processes(sim_subject, tmp_path):
    epochs = 2
    overrides = [f"data.path={sim_subject}", f"runs_dir={tmp_path}", f"trainer.max_epochs={epochs}",
                 "trainer.devices=2", "trainer.strategy=ddp", *TINY_RUN]  # fmt: skip
    # Overrides before --config: positionals must be contiguous for argparse.
    proc = subprocess.run(_cli(*overrides, "--config", str(EXPERIMENT)), cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = (tmp_path / "stage1" / "latest").resolve()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    n_train = 3 * 38  # 3 training runs of 40 TRs, lag 2
    expected = epochs * steps_per_epoch(n_train, batch_size=16, world_size=2)
    assert ckpt["global_step"] == expected == epochs * 3
    assert (run_dir / "encoder" / "config.json").is_file()


@pytest.mark.slow
def test_sigkill_then_resume_from_last_ckpt(sim_subject, tmp_path):
    # Enough epochs that the kill lands before the export on a fast machine too: on an idle
    # 2-core machine 12 of these epochs took 2 s, and a kill 1 s after the first last.ckpt came
    # after the end of training.
    epochs = 40
    overrides = [f"data.path={sim_subject}", f"runs_dir={tmp_path}", f"trainer.max_epochs={epochs}",
                 *TINY_RUN]  # fmt: skip
    proc = subprocess.Popen(_cli(*overrides, "--config", str(EXPERIMENT)), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    last = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            found = list(tmp_path.glob("stage1/*/checkpoints/last.ckpt"))
            if found:
                last = found[0]  # kill it mid-flight, in a later epoch
                break
            time.sleep(0.2)
        assert last is not None and proc.poll() is None, "no last.ckpt while training"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    run_dir = last.parent.parent
    assert not (run_dir / "encoder").exists()  # killed before the export
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert killed_at < epochs - 1
    # Resume the killed run from its last.ckpt (the run dir is the checkpoint's grandparent).
    resume = [*overrides, f"ckpt_path={last}"]
    resumed = subprocess.run(_cli(*resume, "--config", str(EXPERIMENT)), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    assert final["epoch"] == epochs - 1
    assert final["global_step"] == epochs * steps_per_epoch(3 * 38, 16, 1)
    assert (run_dir / "encoder" / "config.json").is_file()
    epochs_logged = {int(r["epoch"]) for r in read_metrics(run_dir) if "val/top1_50way" in r}
    assert epochs_logged >= set(range(killed_at + 1, epochs))


@pytest.mark.parametrize("which", ["best", "last"])
def test_export_writes_the_configured_checkpoint(tiny_subject, tmp_path, which):
    from neurocine.training import fit

    cfg = tiny_cfg(tiny_subject, tmp_path, "stage1.n_way=5", "trainer.max_epochs=4",
                   "stage1.lr=0.05", f"stage1.export={which}")  # fmt: skip
    run_dir = fit(cfg)
    ckpt = torch.load(run_dir / "checkpoints" / f"{which}.ckpt", weights_only=True)
    expected = {
        k.removeprefix("encoder."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith("encoder.")
    }
    exported = FMRIEncoder.from_pretrained(run_dir / "encoder").state_dict()
    assert exported.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(exported[key], value, rtol=0, atol=0, msg=key)
    if which == "best":
        info = json.loads((run_dir / "export.json").read_text())
        assert (info["checkpoint"], info["epoch"]) == ("best", ckpt["epoch"])
        assert info["monitor"] == "val/top1_5way"
    else:
        assert not (run_dir / "export.json").exists()


def test_export_must_be_best_or_last(tiny_subject, tmp_path):
    with pytest.raises(ConfigError, match="stage1.export='first': must be one of best, last"):
        tiny_cfg(tiny_subject, tmp_path, "stage1.export=first")
    cfg = tiny_cfg(tiny_subject, tmp_path)
    cfg.stage1.export = "first"  # changed in code, after load_config's check
    with pytest.raises(ConfigError, match="stage1.export"):
        build_module(cfg, setup_dm(cfg))
