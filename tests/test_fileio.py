"""Atomic writes (neurocine.fileio) and the grids of neurocine.media."""

from __future__ import annotations

import os

import numpy as np
import pytest

from neurocine.fileio import atomic_dir, atomic_path
from neurocine.media import grid_frames, grid_image


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "a.json"
    with atomic_path(target) as tmp:
        tmp.write_text("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_atomic_path_swaps_a_symlink_and_clears_a_dangling_temporary(tmp_path):
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    link = tmp_path / "latest"
    stale = tmp_path / f".latest.tmp-{os.getpid()}"
    stale.symlink_to("nowhere")  # what a crash between symlink and rename leaves behind
    for run in ("run1", "run2"):
        with atomic_path(link) as tmp:
            tmp.symlink_to(run)
        assert link.resolve() == (tmp_path / run).resolve()
    assert not stale.is_symlink()


def test_atomic_dir_keeps_the_old_folder_on_error(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "w").write_text("1")
    with pytest.raises(ValueError), atomic_dir(out) as tmp:
        (tmp / "w").write_text("2")
        raise ValueError
    assert (out / "w").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_grids_place_every_tile():
    rng = np.random.default_rng(0)
    truth, recon = (rng.integers(0, 255, (2, 3, 4, 5, 3), dtype=np.uint8) for _ in range(2))
    image = grid_image(truth, recon, scale=2, gap=1)
    assert image.shape == (2 * (2 * 8 + 1) + 1, 3 * (10 + 1) + 1, 3)
    # sample 1, reconstruction row, frame 2: top = 1 + 1 * 17 + 8, left = 1 + 2 * 11
    np.testing.assert_array_equal(image[26:34:2, 23:33:2], recon[1, 2])
    frames = grid_frames([truth, recon], scale=1, gap=2)
    assert frames.shape == (3, 2 + 2 * (4 + 2), 2 + 2 * (5 + 2), 3)
    np.testing.assert_array_equal(frames[:, 8:12, 9:14], recon[1])
    assert (frames[:, :2] == 255).all() and (frames[:, 6:8] == 255).all()
