"""Data pipeline: DataModule batches/s vs plain HDF5 reads of the same rows, stage 1 and stage 2.

**Stage 1** (the demo's size: 12 runs × 80 TRs × 2000 voxels, 64-d embeddings). "Plain reads"
fetch each batch's window rows straight from the HDF5 file with h5py, with no augmentation, in
two ways: point selection of the sorted unique rows (``dset[rows]``, the reference of earlier
runs) and ``read_rows``'s slice reads (the cheapest correct read found: the stricter
reference). The DataModule rows add windowing, embeddings, labels, temporal interpolation and
spatial masking (ratios 0.5 / 0.5, token patches of 16), with the fMRI cached in memory
(``cache_limit_mb=512``, the default) or read from disk per batch (``cache_limit_mb=0``: what a
real subject's data needs once it does not fit).

**Stage 2** (frames of 6 × 32 × 32 × 3 per clip, LZF-compressed as ``write_subject`` stores
them): the stage-2 DataModule (``read_frames=True``, no augmentation, nothing cached) vs plain
slice reads of the same clips' frames, for the one-clip-per-chunk layout ``write_subject`` now
writes and the ~1 MB chunks (56 clips each) it wrote before, where a random clip decompresses
its whole chunk.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from bench.common import markdown_table, write_result
from neurocine.config import load_config
from neurocine.data.datamodule import FMRIVideoDataModule, read_rows
from neurocine.data.schema import write_subject

RUNS, TRS, VOXELS, DIM, BATCH, EPOCHS = 12, 80, 2000, 64, 32, 5
FRAMES, SIZE, STAGE2_EPOCHS = 6, 32, 2
REPEATS = 3  # every rate is the median of 3 interleaved measurements


def demo_sized_file(path: Path, frames: bool = False) -> Path:
    rng = np.random.default_rng(0)
    n = RUNS * TRS
    train = {
        "fmri": rng.standard_normal((n, VOXELS), dtype=np.float32),
        "run": np.repeat(np.arange(RUNS, dtype=np.int32), TRS),
        "label": rng.integers(0, 50, n, dtype=np.int32),
        "clip_image": rng.standard_normal((n, DIM)).astype(np.float16),
        "clip_text": rng.standard_normal((n, DIM)).astype(np.float16),
    }
    if frames:  # smooth-ish content so that LZF compresses as it does rendered clips
        base = rng.integers(0, 256, (n, FRAMES, SIZE // 4, SIZE // 4, 3), dtype=np.uint8)
        train["frames"] = base.repeat(4, axis=2).repeat(4, axis=3)
    voxels = {
        "index": np.arange(VOXELS),
        "coords": np.zeros((VOXELS, 3), np.float32),
        "roi": ["unknown"] * VOXELS,
    }
    meta = {"dataset": "bench", "subject": "1", "tr_s": 2.0, "fps": 3.0,
            "frames_per_tr": FRAMES if frames else 0}  # fmt: skip
    return write_subject(path, meta=meta, voxels=voxels, splits={"train": train})


def rechunk_frames(path: Path, out: Path, rows_per_chunk: int) -> Path:
    """A copy of ``path`` whose frames use ``rows_per_chunk`` clips per LZF chunk."""
    with h5py.File(path, "r") as src, h5py.File(out, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            if name != "train":
                src.copy(name, dst)
        train = dst.create_group("train")
        for key, value in src["train"].attrs.items():
            train.attrs[key] = value
        for name, dset in src["train"].items():
            if name == "frames":
                train.create_dataset(name, data=dset[()], compression="lzf",
                                     chunks=(rows_per_chunk, *dset.shape[1:]))  # fmt: skip
            else:
                src["train"].copy(name, train)
    return out


def _config(path: Path, cache_limit_mb: float, *extra: str):
    return load_config(None, [f"data.path={path}", f"data.batch_size={BATCH}", "data.val_runs=1",
                              f"data.cache_limit_mb={cache_limit_mb}", *extra])  # fmt: skip


def datamodule_rate(path: Path, cache_limit_mb: float) -> tuple[float, int]:
    cfg = _config(path, cache_limit_mb, "data.augment.mask_ratio=0.5",
                  "data.augment.interp_ratio=0.5")  # fmt: skip
    dm = FMRIVideoDataModule(cfg)
    dm.setup("fit")
    dm._augment_generator(torch.device("cpu"))
    n_batches = 0
    start = time.process_time()
    for epoch in range(EPOCHS):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            batch = dm.augment_batch(batch)
            n_batches += 1
    return n_batches / (time.process_time() - start), n_batches


def stage2_rate(path: Path, epochs: int) -> tuple[float, int]:
    """Batches/s of the stage-2 DataModule (frames + fMRI windows, from disk, no augmentation)."""
    dm = FMRIVideoDataModule(_config(path, 0), read_frames=True, augment=False)
    dm.setup("fit")
    n_batches = 0
    start = time.process_time()
    for epoch in range(epochs):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for _ in loader:
            n_batches += 1
    return n_batches / (time.process_time() - start), n_batches


def plain_rate(path: Path, batches: list[np.ndarray], name: str, method: str) -> float:
    """Batches/s of reading ``name``'s rows of each batch alone: ``points`` (h5py's point
    selection of the sorted unique rows) or ``slices`` (:func:`read_rows`: one slice per run of
    consecutive rows)."""
    start = time.process_time()
    with h5py.File(path, "r") as f:
        dset = f[f"train/{name}"]
        for rows in batches:
            if method == "points":
                unique, inverse = np.unique(rows, return_inverse=True)
                block = dset[unique][inverse].reshape(*rows.shape, *dset.shape[1:])
            else:
                block = read_rows(dset, rows)
            torch.from_numpy(block)
    return len(batches) / (time.process_time() - start)


def sample_batches(path: Path, epochs: int, clips: bool) -> list[np.ndarray]:
    """The rows (window rows, or clip rows) of random training batches of ``BATCH`` samples."""
    dm = FMRIVideoDataModule(_config(path, 512))
    dm.setup("fit")
    index = dm.datasets["train"].index
    rows = index.clip_rows if clips else index.window_rows
    rng = np.random.default_rng(0)
    return [
        rows[perm[i : i + BATCH]]
        for perm in (rng.permutation(len(rows)) for _ in range(epochs))
        for i in range(0, len(rows) - BATCH + 1, BATCH)
    ]


def main() -> None:
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = demo_sized_file(Path(tmp) / "bench.h5")
        batches = sample_batches(path, EPOCHS, clips=False)
        runs = []
        for _ in range(REPEATS):  # interleaved, so that the machine's load hits every row alike
            runs.append((plain_rate(path, batches, "fmri", "points"),
                         plain_rate(path, batches, "fmri", "slices"),
                         datamodule_rate(path, cache_limit_mb=512)[0],
                         datamodule_rate(path, cache_limit_mb=0)[0]))  # fmt: skip
        points, plain, cached, uncached = (statistics.median(r) for r in zip(*runs, strict=True))
        n = len(batches)
        path.unlink()
        video = demo_sized_file(Path(tmp) / "video.h5", frames=True)
        old = rechunk_frames(video, Path(tmp) / "video_1mb.h5", rows_per_chunk=56)
        clip_batches = sample_batches(video, STAGE2_EPOCHS, clips=True)
        s2: dict[str, dict[str, list]] = {"per-clip": {}, "1mb": {}}
        for _ in range(REPEATS):
            for label, file in (("per-clip", video), ("1mb", old)):
                s2[label].setdefault("plain", []).append(
                    plain_rate(file, clip_batches, "frames", "slices")
                )
                s2[label].setdefault("datamodule", []).append(stage2_rate(file, STAGE2_EPOCHS)[0])
        s2 = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in s2.items()}
    rows = [
        ["1", "plain h5py point selection of the window rows (earlier reference)", points,
         points / plain],
        ["1", "plain h5py slice reads of the same rows (reference)", plain, 1.0],
        ["1", "DataModule + augmentation, fMRI cached in memory (default)", cached,
         cached / plain],
        ["1", "DataModule + augmentation, fMRI read from disk per batch", uncached,
         uncached / plain],
    ]  # fmt: skip
    for label, name in (("per-clip", "one clip per chunk (now)"), ("1mb", "56 clips per chunk")):
        v = s2[label]
        rows += [
            ["2", f"plain slice reads of the clips' frames, {name}", v["plain"], 1.0],
            ["2", f"DataModule frames + fMRI from disk, {name}", v["datamodule"],
             v["datamodule"] / v["plain"]],
        ]  # fmt: skip
    table = markdown_table(["stage", "loader", "batches/s", "ratio to plain"], rows)
    meets = {
        name: "meets" if ratio >= 0.5 else "misses"
        for name, ratio in (
            ("s1", uncached / plain),
            ("s2", s2["per-clip"]["datamodule"] / s2["per-clip"]["plain"]),
        )
    }
    notes = (
        f"From disk, the stage-1 loader reaches {uncached / plain:.2f}× the slice reads "
        f"({meets['s1']} the 0.5 target against this stricter reference) and "
        f"{uncached / points:.2f}× the point-selection reads the earlier runs compared with "
        "(0.40× on 2026-11-26, when the DataModule read by point selection too: its reads now "
        "take one slice per run of consecutive rows, its labels and embeddings stay in memory, "
        "and it opens its datasets once per process); what remains is the augmentation and the "
        "extra TR that interpolation reads. Stage 2 from disk: "
        f"{s2['per-clip']['datamodule'] / s2['per-clip']['plain']:.2f}× ({meets['s2']} the "
        f"target); one clip per compressed chunk reads "
        f"{s2['per-clip']['datamodule'] / s2['1mb']['datamodule']:.1f}× more batches/s than "
        "the ~1 MB chunks of 56 clips. "
        f"Rates on the process's CPU clock (the machine is shared: the wall clock adds waits "
        f"for a core), medians of {REPEATS} interleaved repetitions. Stage 1: {n} batches of "
        f"{BATCH} windows (2 TRs × {VOXELS} voxels) over {EPOCHS} "
        f"epochs, one process; ratios to the slice reads (the earlier runs' 0.40× from disk was "
        f"against point selection, which the DataModule also used then). Stage 2: batches of "
        f"{BATCH} clips ({FRAMES} × {SIZE} × {SIZE} × 3, LZF) over {STAGE2_EPOCHS} epochs, "
        "nothing cached. Target: the DataModule from disk ≥ 50 % of its plain-read rate. "
        f"Run time {time.perf_counter() - wall:.0f} s (wall)."
    )
    write_result(
        "data_pipeline",
        "Data pipeline (bench/data_pipeline.py)",
        table,
        {"points": points, "plain": plain, "cached": cached, "uncached": uncached,
         "batches": n, "stage2": s2},
        notes,
    )  # fmt: skip


if __name__ == "__main__":
    main()
