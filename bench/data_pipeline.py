"""Stage-1 data pipeline: augmented DataModule batches/s vs plain HDF5 reads of the same rows.

The file has the demo's size (12 runs × 80 TRs × 2000 voxels, 64-d embeddings). "Plain reads"
fetch each batch's window rows straight from the HDF5 file with h5py (sorted unique rows, the
cheapest correct read), with no augmentation; the DataModule rows add windowing, embeddings,
labels, temporal interpolation and spatial masking (ratios 0.5 / 0.5, token patches of 16).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from bench.common import markdown_table, write_result
from neurocine.config import load_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.data.schema import write_subject

RUNS, TRS, VOXELS, DIM, BATCH, EPOCHS = 12, 80, 2000, 64, 32, 5


def demo_sized_file(path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = RUNS * TRS
    train = {
        "fmri": rng.standard_normal((n, VOXELS), dtype=np.float32),
        "run": np.repeat(np.arange(RUNS, dtype=np.int32), TRS),
        "label": rng.integers(0, 50, n, dtype=np.int32),
        "clip_image": rng.standard_normal((n, DIM)).astype(np.float16),
        "clip_text": rng.standard_normal((n, DIM)).astype(np.float16),
    }
    voxels = {
        "index": np.arange(VOXELS),
        "coords": np.zeros((VOXELS, 3), np.float32),
        "roi": ["unknown"] * VOXELS,
    }
    meta = {"dataset": "bench", "subject": "1", "tr_s": 2.0, "fps": 3.0, "frames_per_tr": 0}
    return write_subject(path, meta=meta, voxels=voxels, splits={"train": train})


def datamodule_rate(path: Path, cache_limit_mb: float) -> tuple[float, int]:
    cfg = load_config(
        None,
        [
            f"data.path={path}",
            f"data.batch_size={BATCH}",
            "data.val_runs=1",
            f"data.cache_limit_mb={cache_limit_mb}",
            "data.augment.mask_ratio=0.5",
            "data.augment.interp_ratio=0.5",
        ],
    )
    dm = FMRIVideoDataModule(cfg)
    dm.setup("fit")
    generator_device = torch.device("cpu")
    dm._augment_generator(generator_device)
    n_batches = 0
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            batch = dm.augment_batch(batch)
            n_batches += 1
    return n_batches / (time.perf_counter() - start), n_batches


def plain_rate(path: Path, dm_rows: list[np.ndarray]) -> float:
    start = time.perf_counter()
    with h5py.File(path, "r") as f:
        dset = f["train/fmri"]
        for rows in dm_rows:
            unique, inverse = np.unique(rows, return_inverse=True)
            torch.from_numpy(dset[unique][inverse].reshape(*rows.shape, VOXELS))
    return len(dm_rows) / (time.perf_counter() - start)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = demo_sized_file(Path(tmp) / "bench.h5")
        cfg = load_config(None, [f"data.path={path}", "data.val_runs=1"])
        dm = FMRIVideoDataModule(cfg)
        dm.setup("fit")
        windows = dm.datasets["train"].index.window_rows
        rng = np.random.default_rng(0)
        batches = [
            windows[perm[i : i + BATCH]]
            for perm in (rng.permutation(len(windows)) for _ in range(EPOCHS))
            for i in range(0, len(windows) - BATCH + 1, BATCH)
        ]
        plain = plain_rate(path, batches)
        cached, n = datamodule_rate(path, cache_limit_mb=512)
        uncached, _ = datamodule_rate(path, cache_limit_mb=0)
    rows = [
        ["plain h5py reads of the same window rows (no augmentation)", plain, 1.0],
        ["DataModule + augmentation, fMRI cached in memory (default)", cached, cached / plain],
        ["DataModule + augmentation, fMRI read from disk per batch", uncached, uncached / plain],
    ]
    table = markdown_table(["loader", "batches/s", "ratio to plain"], rows)
    notes = (
        f"{n} batches of {BATCH} windows (2 TRs × {VOXELS} voxels) over {EPOCHS} epochs, "
        "one process. Target: the augmented loader reaches ≥ 50 % of the plain-read rate."
    )
    write_result(
        "data_pipeline",
        "Stage-1 data pipeline (bench/data_pipeline.py)",
        table,
        {"plain": plain, "cached": cached, "uncached": uncached, "batches": n},
        notes,
    )


if __name__ == "__main__":
    main()
