"""FMRIVideoDataModule: windows within runs, held-out validation runs, batching, workers, DDP."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import lightning as L
import numpy as np
import pytest
import torch
from factories import write_tiny_subject

from neurocine.config import load_config
from neurocine.data.datamodule import FMRIVideoDataModule, build_windows, read_rows
from neurocine.errors import ConfigError, SchemaError

TRS = 10  # per run in the tiny subject; voxel 0 = run id, voxel 1 = TR within the run


def _cfg(path, *overrides):
    return load_config(None, [f"data.path={path}", "data.batch_size=5", *overrides])


def _all(loader):
    return {k: torch.cat([b[k] for b in loader]) for k in next(iter(loader))}


@pytest.mark.parametrize(("window", "lag"), [(2, 0), (3, 2), (1, 1)])
def test_windows_stay_inside_their_run(tiny_subject, window, lag):
    dm = FMRIVideoDataModule(_cfg(tiny_subject, f"data.window={window}", f"data.lag_trs={lag}"))
    dm.setup("fit")
    batch = _all(dm.val_dataloader())
    fmri = batch["fmri"]  # [N, W, V]
    assert fmri.shape[1:] == (window, 61)
    run, pos = fmri[..., 0], fmri[..., 1]
    assert (run == run[:, :1]).all()  # never crosses a run
    clip_pos = batch["index"] % TRS
    expected = torch.clamp(clip_pos[:, None] + lag + torch.arange(window), max=TRS - 1)
    assert torch.equal(pos.long(), expected)  # starts lag TRs after the clip, repeats the end
    assert len(fmri) == 2 * (TRS - lag)  # 2 validation runs; TRs with no response dropped


def test_validation_runs_are_held_out(tiny_subject):
    dm = FMRIVideoDataModule(_cfg(tiny_subject, "data.val_runs=1"))
    dm.setup("fit")
    train_runs = set(_all(dm.train_dataloader())["fmri"][:, :, 0].unique().tolist())
    val_runs = set(_all(dm.val_dataloader())["fmri"][:, :, 0].unique().tolist())
    assert val_runs == {3.0} and train_runs == {0.0, 1.0, 2.0}
    test = _all(dm.test_dataloader())
    assert len(test["index"]) == 20 and "frames" not in test  # stage 1 reads no pixels
    with pytest.raises(ConfigError, match="data.val_runs=4"):
        FMRIVideoDataModule(_cfg(tiny_subject, "data.val_runs=4")).setup("fit")


@pytest.mark.parametrize("k", [1, 2])
def test_train_runs_keeps_the_first_runs_and_the_same_validation(tiny_subject, k):
    dm = FMRIVideoDataModule(_cfg(tiny_subject, "data.val_runs=1", f"data.train_runs={k}"))
    dm.setup("fit")
    train_runs = set(_all(dm.train_dataloader())["fmri"][:, :, 0].unique().tolist())
    val_runs = set(_all(dm.val_dataloader())["fmri"][:, :, 0].unique().tolist())
    assert train_runs == set(map(float, range(k))) and val_runs == {3.0}
    with pytest.raises(ConfigError, match="data.train_runs=0: must be ≥ 1"):
        _cfg(tiny_subject, "data.train_runs=0")  # the schema's range
    with pytest.raises(ConfigError, match="data.train_runs=4: .* 3 training runs"):
        FMRIVideoDataModule(_cfg(tiny_subject, "data.val_runs=1", "data.train_runs=4")).setup("fit")


def test_batches_carry_pairs_and_frames(tiny_subject):
    dm = FMRIVideoDataModule(_cfg(tiny_subject), read_frames=True, read_clean=True)
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    assert batch["frames"].shape == (5, 4, 16, 20, 3) and batch["frames"].dtype == torch.uint8
    assert batch["clip_image"].shape == (5, 12) and batch["clip_image"].dtype == torch.float32
    with h5py.File(tiny_subject) as f:
        idx = batch["index"].numpy()
        np.testing.assert_array_equal(batch["frames"].numpy(), f["test/frames"][idx])
        np.testing.assert_array_equal(batch["label"].numpy(), f["test/label"][idx])
        np.testing.assert_allclose(batch["fmri_clean"], batch["fmri"] * 0.5)
    assert dm.n_voxels == 61 and dm.clip_dim == 12 and dm.frames_shape == (4, 16, 20)


def test_read_rows_handles_duplicates_and_order(tiny_subject):
    rows = np.array([[7, 3], [3, 3], [30, 0]])
    with h5py.File(tiny_subject) as f:
        dset = f["train/fmri"]
        np.testing.assert_array_equal(read_rows(dset, rows), dset[()][rows])


def test_large_split_is_not_cached(tiny_subject):
    dm = FMRIVideoDataModule(_cfg(tiny_subject, "data.cache_limit_mb=0.001"))
    dm.setup("fit")
    first = next(iter(dm.val_dataloader()))
    assert "fmri" not in dm.datasets["val"]._cache  # fMRI read from disk batch by batch
    cached = FMRIVideoDataModule(_cfg(tiny_subject))
    cached.setup("fit")
    assert torch.equal(next(iter(cached.val_dataloader()))["fmri"], first["fmri"])
    assert "fmri" in cached.datasets["val"]._cache


def test_workers_give_the_same_batches(tiny_subject):
    plain = FMRIVideoDataModule(_cfg(tiny_subject))
    workers = FMRIVideoDataModule(_cfg(tiny_subject, "data.num_workers=2"))
    for dm in (plain, workers):
        dm.setup("fit")
    a, b = _all(plain.train_dataloader()), _all(workers.train_dataloader())
    assert torch.equal(a["fmri"], b["fmri"]) and torch.equal(a["index"], b["index"])


class _Recorder(L.LightningModule):
    """Keeps the batches the Trainer hands to training_step."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch)
        return (self.weight * batch["fmri"].mean()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit_recorder(path, *overrides):
    dm = FMRIVideoDataModule(_cfg(path, *overrides))
    module = _Recorder()
    trainer = L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=dm)
    return module.seen


def test_training_batches_are_augmented_deterministically(tiny_subject):
    on = [
        "data.augment.mask_ratio=0.5",
        "data.augment.mask_patch_size=4",
        "data.augment.interp_ratio=0.5",
    ]
    plain = _fit_recorder(tiny_subject)
    aug = _fit_recorder(tiny_subject, *on)
    again = _fit_recorder(tiny_subject, *on)
    other = _fit_recorder(tiny_subject, *on, "seed=1")
    assert "fmri_next" not in aug[0]
    for p, a, b in zip(plain, aug, again, strict=True):
        assert torch.equal(p["index"], a["index"])  # same order, augmentation differs
        assert torch.equal(a["fmri"], b["fmri"])
        zeros = (a["fmri"] == 0).float().mean().item()
        assert 0.4 < zeros < 0.6  # 8 of 16 patches masked
    assert not torch.equal(aug[0]["fmri"], other[0]["fmri"])


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L, torch
    from neurocine.config import load_config
    from neurocine.data.datamodule import FMRIVideoDataModule

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = []
        def training_step(self, batch, batch_idx):
            self.seen += batch["index"].tolist()
            return (self.weight * batch["fmri"].mean()).sum()
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    if __name__ == "__main__":
        path, out = sys.argv[1], sys.argv[2]
        cfg = load_config(None, [f"data.path={path}", "data.batch_size=3",
                                 "data.augment.mask_ratio=0.5"])
        module = Recorder()
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, limit_val_batches=0)
        trainer.fit(module, datamodule=FMRIVideoDataModule(cfg))
        with open(f"{out}.{trainer.global_rank}", "w") as f:
            json.dump(module.seen, f)
    """
)


@pytest.mark.slow
def test_ddp_two_cpu_processes_read_disjoint_shards(tiny_subject, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "seen.json"
    proc = subprocess.run(
        [sys.executable, str(script), str(tiny_subject), str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rank0 = json.loads(out.with_name("seen.json.0").read_text())
    rank1 = json.loads(out.with_name("seen.json.1").read_text())
    # 20 training samples, 10 per rank, 3 full batches of 3 each; no sample on both ranks.
    assert len(rank0) == len(rank1) == 9
    assert len(set(rank0) | set(rank1)) == 18


def test_missing_frames_or_split(tmp_path):
    path = write_tiny_subject(tmp_path / "s.h5")
    with h5py.File(path, "r+") as f:
        del f["train/frames"], f["test/frames"]
    with pytest.raises(SchemaError, match=r"/train/frames: missing"):
        FMRIVideoDataModule(_cfg(path), read_frames=True).setup("fit")


def test_windows_index_function():
    run = np.repeat([5, 2], [4, 3])
    index = build_windows(run, window=2, lag_trs=1, runs=np.array([2]))
    np.testing.assert_array_equal(index.clip_rows, [4, 5])
    np.testing.assert_array_equal(index.window_rows, [[5, 6], [6, 6]])
    np.testing.assert_array_equal(index.next_rows, [[6, 6], [6, 6]])
