"""Tiny subject files for tests: seeded, pairwise-distinct sizes (so transposed axes fail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurocine.data.schema import write_subject


def tiny_subject_arrays(
    *,
    n_voxels: int = 61,
    train_runs: int = 4,
    test_runs: int = 2,
    trs_per_run: int = 10,
    frames_per_tr: int = 4,
    height: int = 16,
    width: int = 20,
    clip_dim: int | None = 12,
    seed: int = 0,
) -> dict:
    """Arrays of a small subject; fMRI row ``t`` of run ``r`` encodes ``(r, t)`` in voxel 0/1."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n_runs in (("train", train_runs), ("test", test_runs)):
        n = n_runs * trs_per_run
        run = np.repeat(np.arange(n_runs, dtype=np.int32), trs_per_run)
        fmri = rng.standard_normal((n, n_voxels)).astype(np.float32)
        fmri[:, 0] = run  # identify each row's run and position, to check windows
        fmri[:, 1] = np.tile(np.arange(trs_per_run), n_runs)
        arrays = {
            "fmri": fmri,
            "fmri_clean": fmri * 0.5,
            "run": run,
            "frames": rng.integers(0, 256, (n, frames_per_tr, height, width, 3), dtype=np.uint8),
            "caption": [f"clip {i} of {split}" for i in range(n)],
            "label": (np.arange(n) % 7).astype(np.int32),
        }
        if clip_dim:
            arrays["clip_image"] = rng.standard_normal((n, clip_dim)).astype(np.float16)
            arrays["clip_text"] = rng.standard_normal((n, clip_dim)).astype(np.float16)
        splits[split] = arrays
    voxels = {
        "index": np.arange(n_voxels, dtype=np.int64),
        "coords": rng.uniform(-60, 60, (n_voxels, 3)).astype(np.float32),
        "roi": ["V1"] * n_voxels,
    }
    meta = {
        "dataset": "tiny",
        "subject": "1",
        "tr_s": 2.0,
        "fps": 2.0,
        "frames_per_tr": frames_per_tr,
    }
    return {"meta": meta, "voxels": voxels, "splits": splits}


def write_tiny_subject(path: str | Path, **sizes) -> Path:
    """Write :func:`tiny_subject_arrays` to ``path`` through the real writer."""
    return write_subject(path, **tiny_subject_arrays(**sizes))
