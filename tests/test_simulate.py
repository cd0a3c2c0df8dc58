"""The simulated dataset: planted lag, SNR, repeat averaging, determinism, file and CLI."""

from __future__ import annotations

import time

import numpy as np
import pytest
from omegaconf import OmegaConf

from neurocine.cli import main
from neurocine.config import SimulationConfig
from neurocine.data import render
from neurocine.data.cortex import ROIS
from neurocine.data.schema import open_subject, read_strings, validate
from neurocine.data.simulate import simulate_arrays, simulate_subject
from neurocine.errors import ConfigError

# Pairwise-distinct sizes: voxels 61, frames per TR 4 (tr 2 s × 2 fps), H 16, W 20.
TINY = {
    "n_train_runs": 3,
    "n_test_runs": 2,
    "trs_per_run": 30,
    "test_repeats": 9,
    "fps": 2.0,
    "height": 16,
    "width": 20,
    "n_voxels": 61,
    "scene_mean_s": 6.0,
}


def tiny_cfg(**changes):
    cfg = OmegaConf.structured(SimulationConfig)
    return OmegaConf.merge(cfg, {**TINY, **changes})


@pytest.fixture(scope="module")
def sim():
    return simulate_arrays(tiny_cfg())


@pytest.fixture(scope="module")
def subject_file(tmp_path_factory):
    return simulate_subject(tiny_cfg(), tmp_path_factory.mktemp("sim") / "subject.h5")


def _lagged_corr(drive: np.ndarray, bold: np.ndarray, trs_per_run: int, lag: int) -> np.ndarray:
    """Per-voxel correlation of drive[t] with bold[t + lag], pairs taken within runs only."""
    v = drive.shape[1]
    d = drive.reshape(-1, trs_per_run, v)[:, : trs_per_run - lag].reshape(-1, v)
    b = bold.reshape(-1, trs_per_run, v)[:, lag:].reshape(-1, v)
    d = (d - d.mean(0)) / d.std(0)
    b = (b - b.mean(0)) / b.std(0)
    return (d * b).mean(0)


@pytest.mark.parametrize("which", ["clean", "noisy"])
def test_planted_lag_peaks_at_the_hrf_delay(sim, which):
    trs = TINY["trs_per_run"]
    bold = sim.train.bold_clean if which == "clean" else sim.train.bold[0]
    drive = sim.train.drive_per_tr()
    corr = np.array([_lagged_corr(drive, bold, trs, k).mean() for k in range(7)])
    assert int(np.argmax(corr)) in (2, 3), corr  # 4–6 s after the clip
    assert corr[2:4].max() > corr[0] + 0.15, corr


def test_drive_is_at_frame_rate_and_bold_per_tr(sim):
    t = TINY["n_train_runs"] * TINY["trs_per_run"]
    assert sim.train.frames.shape == (t, 4, 16, 20, 3)
    assert sim.train.frames.dtype == np.uint8
    assert sim.train.drive.shape == (t * 4, 61)
    assert sim.train.bold.shape == (1, t, 61)
    assert sim.test.bold.shape == (TINY["test_repeats"], TINY["n_test_runs"] * 30, 61)


def _snr(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    return clean.std(0) / (noisy - clean).std(0)


@pytest.mark.parametrize("snr", [0.3, 1.0])
def test_measured_snr_matches_config(snr):
    sim = simulate_arrays(tiny_cfg(snr=snr, test_repeats=1))
    measured = _snr(sim.train.bold_clean, sim.train.bold[0])
    assert np.median(measured) == pytest.approx(snr, rel=0.1)
    # Per voxel, not just on average: most voxels lie within sampling error of the target.
    assert np.mean(np.abs(measured / snr - 1) < 0.3) > 0.9


def test_test_averaging_raises_snr_by_sqrt_repeats(sim):
    single = _snr(sim.test.bold_clean, sim.test.bold[0])
    averaged = _snr(sim.test.bold_clean, sim.test.bold.mean(0))
    gain = np.median(averaged / single)
    assert gain == pytest.approx(np.sqrt(TINY["test_repeats"]), rel=0.15)


def test_stored_fmri_is_zscored_per_run(sim):
    for split in (sim.train, sim.test):
        for x in (split.fmri, split.fmri_clean):
            runs = x.reshape(-1, TINY["trs_per_run"], 61)
            np.testing.assert_allclose(runs.mean(1), 0, atol=1e-4)
            np.testing.assert_allclose(runs.std(1), 1, atol=1e-3)
    # The test fMRI is the average over repeats, not one repeat.
    assert (
        np.corrcoef(sim.test.fmri.ravel(), sim.test.fmri_clean.ravel())[0, 1]
        > np.corrcoef(sim.test.bold[0].ravel(), sim.test.bold_clean.ravel())[0, 1]
    )


def test_labels_captions_and_scenes_agree(sim):
    for split in (sim.train, sim.test):
        for caption, label in zip(split.caption, split.label, strict=True):
            shape, colour = divmod(int(label), len(render.COLOURS))
            assert f"{render.COLOURS[colour]} {render.SHAPES[shape]}" in caption
        np.testing.assert_array_equal(
            split.label,
            split.attributes["shape"] * len(render.COLOURS) + split.attributes["colour"],
        )
        assert 0 <= split.label.min() and split.label.max() < render.N_CLASSES
    cut = np.array(["-" in s for s in sim.train.scene])
    assert 0 < cut.mean() < 0.6
    # A TR spanning a cut has a frame-to-frame jump that a TR inside one scene does not.
    jump = np.abs(np.diff(sim.train.frames.astype(np.float32), axis=1)).mean((2, 3, 4)).max(1)
    assert np.median(jump[cut]) > 3 * np.median(jump[~cut])
    # Scene ids are unique across splits.
    ids = lambda scenes: {p for s in scenes for p in s.split("-")}  # noqa: E731
    assert not ids(sim.train.scene) & ids(sim.test.scene)


def test_voxels_lie_in_posterior_cortex_of_the_mni_mask(sim):
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)  # index = flattened index into this volume
    mask = np.asarray(img.dataobj).astype(bool)
    ijk = np.stack(np.unravel_index(sim.cortex.index, mask.shape), 1)
    assert mask[tuple(ijk.T)].all()
    xyz = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    np.testing.assert_allclose(sim.cortex.coords, xyz)
    assert (sim.cortex.coords[:, 1] < -40).all()
    assert set(sim.cortex.roi) <= set(ROIS)
    assert sim.cortex.semantic.sum() == round(0.3 * 61)


def test_same_seed_same_arrays_other_seed_differs(sim):
    again = simulate_arrays(tiny_cfg())
    for name in ("frames", "drive", "bold", "fmri", "fmri_clean", "label"):
        np.testing.assert_array_equal(getattr(again.test, name), getattr(sim.test, name))
    assert again.train.caption == sim.train.caption
    np.testing.assert_array_equal(again.cortex.index, sim.cortex.index)
    other = simulate_arrays(tiny_cfg(seed=1))
    assert not np.array_equal(other.train.frames, sim.train.frames)
    assert not np.allclose(other.train.fmri, sim.train.fmri)
    # Only the noise depends on snr: stimuli and voxels stay, so sweeps compare like with like.
    noisier = simulate_arrays(tiny_cfg(snr=0.2))
    np.testing.assert_array_equal(noisier.train.frames, sim.train.frames)
    np.testing.assert_array_equal(noisier.train.drive, sim.train.drive)


def test_more_training_runs_keep_the_test_clips(sim):
    # bench/training_size.py compares training-set sizes on the same test clips
    larger = simulate_arrays(tiny_cfg(n_train_runs=TINY["n_train_runs"] + 2))
    np.testing.assert_array_equal(larger.test.frames, sim.test.frames)
    np.testing.assert_array_equal(larger.test.label, sim.test.label)
    assert larger.train.frames.shape[0] > sim.train.frames.shape[0]
    # the voxels are scaled by training statistics: the test fMRI moves, slightly
    assert np.corrcoef(larger.test.fmri.ravel(), sim.test.fmri.ravel())[0, 1] > 0.9


def test_written_file_is_valid_and_complete(subject_file, sim):
    summary = validate(subject_file)
    assert summary.dataset == "simulated" and summary.frames_per_tr == 4
    assert summary.n_voxels == 61
    for split in ("train", "test"):
        assert set(summary.splits[split].optional) == {"caption", "label", "scene", "fmri_clean"}
    assert summary.splits["train"].n_runs == 3 and summary.splits["test"].n_runs == 2
    with open_subject(subject_file) as f:
        np.testing.assert_array_equal(f["test/fmri"][()], sim.test.fmri)
        np.testing.assert_array_equal(f["train/frames"][()], sim.train.frames)
        np.testing.assert_array_equal(f["voxels/index"][()], sim.cortex.index)
        assert read_strings(f["train/caption"]) == sim.train.caption
        assert read_strings(f["test/scene"]) == sim.test.scene
        assert f["train/run"].dtype == np.int32 and f["train/label"].dtype == np.int32


@pytest.mark.parametrize(
    "changes",
    [{"n_voxels": 0}, {"height": 15}, {"fps": 2.2}, {"ar1": 1.0}, {"scene_mean_s": 1.0}],
)
def test_invalid_config_raises_and_writes_nothing(tmp_path, changes):
    out = tmp_path / "bad.h5"
    key = next(iter(changes))
    with pytest.raises(ConfigError, match=key):
        simulate_subject(tiny_cfg(**changes), out)
    assert list(tmp_path.iterdir()) == []


def test_cli_simulate_writes_a_valid_file(tmp_path):
    out = tmp_path / "cli.h5"
    args = [f"{k}={v}" for k, v in TINY.items() if k != "n_train_runs"]
    assert main(["simulate", "--out", str(out), "n_train_runs=2", "seed=3", *args]) == 0
    summary = validate(out)
    assert summary.splits["train"].n_runs == 2
    assert summary.splits["train"].frames == (4, 16, 20)


def test_cli_simulate_typo_key_exits_2(tmp_path, capsys):
    out = tmp_path / "typo.h5"
    assert main(["simulate", "--out", str(out), "n_voxel=61"]) == 2
    assert "n_voxel" in capsys.readouterr().err
    assert not out.exists()


def _lagged_windows(fmri: np.ndarray, run: np.ndarray, lag: int = 2, window: int = 2):
    """Rows t whose window t+lag … t+lag+window−1 stays in the run, and those windows flattened."""
    rows = np.arange(len(run))[:, None] + lag + np.arange(window)
    ok = (rows[:, -1] < len(run)) & (run[np.minimum(rows[:, -1], len(run) - 1)] == run)
    return np.flatnonzero(ok), fmri[rows[ok]].reshape(ok.sum(), -1)


@pytest.mark.slow
def test_default_size_is_fast_and_category_is_decodable(tmp_path):
    """The demo-size subject: written well under a minute, and a ridge decoder beats chance."""
    cfg = OmegaConf.structured(SimulationConfig)
    start = time.perf_counter()
    path = simulate_subject(cfg, tmp_path / "subject1.h5")
    assert time.perf_counter() - start < 60
    with open_subject(path) as f:
        data = {
            s: (
                f[f"{s}/fmri"][()],
                f[f"{s}/run"][()],
                f[f"{s}/label"][()],
                read_strings(f[f"{s}/scene"]),
            )
            for s in ("train", "test")
        }
    rows, x = _lagged_windows(*data["train"][:2])
    y = np.eye(render.N_CLASSES)[data["train"][2][rows]]
    w = x.T @ np.linalg.solve(x @ x.T + 1e3 * np.eye(len(x)), y)  # dual ridge
    rows, x = _lagged_windows(*data["test"][:2])
    keep = np.array(["-" not in data["test"][3][r] for r in rows])
    top1 = ((x @ w).argmax(1) == data["test"][2][rows])[keep].mean()
    assert top1 > 4 / render.N_CLASSES  # measured ≈ 0.2 at snr 0.4 (chance 1/64)
