"""NIfTI converter: small 4D runs through NiftiMasker, paired with coded videos."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import yaml
from scipy import signal

from neurocine.data.nifti import preprocess_nifti
from neurocine.data.preprocess_config import NiftiConfig, load_preprocess_config
from neurocine.data.schema import validate
from neurocine.errors import DataError
from neurocine.rehearsal.release import nifti_run, read_code, write_coded_video

SHAPE = (5, 6, 7)
N_KEPT, DROP_FIRST, DROP_LAST = 12, 2, 3
SRC_FPS = 10
RUNS = [
    ("train", 1, 1),
    ("train", 1, 2),
    ("train", 2, 1),
    ("train", 2, 2),
    ("test", 1, 1),
    ("test", 1, 2),
    ("test", 1, 3),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Runs of 17 volumes on a 5×6×7 grid, a 61-voxel mask, 3 videos, a YAML with the runs."""
    root = tmp_path_factory.mktemp("nifti")
    rng = np.random.default_rng(3)
    affine = np.array([[3.0, 0, 0, -6], [0, 3, 0, -9], [0, 0, 3, 12], [0, 0, 0, 1]])
    mask = np.zeros(SHAPE, dtype=bool)
    mask.flat[rng.choice(mask.size, 61, replace=False)] = True
    nib.Nifti1Image(mask.astype(np.uint8), affine).to_filename(root / "mask.nii.gz")
    in_mask = np.flatnonzero(mask.ravel())
    planted = np.sort(rng.choice(in_mask, 7, replace=False))
    features, video_ids, runs = {}, {}, []
    for split, seg, rep in RUNS:
        if (split, seg) not in features:
            features[split, seg] = rng.standard_normal(N_KEPT)
            video_ids[split, seg] = len(video_ids)
            write_coded_video(
                root / f"{split}{seg}.mp4",
                seconds=N_KEPT * 2.0,
                fps=SRC_FPS,
                video_id=video_ids[split, seg],
            )
        img = nifti_run(features[split, seg], mask, planted, DROP_FIRST, DROP_LAST, rng, affine)
        img.to_filename(root / f"bold_{split}{seg}_{rep}.nii.gz")
        runs.append(
            {
                "bold": f"bold_{split}{seg}_{rep}.nii.gz",
                "video": f"{split}{seg}.mp4",
                "segment": seg,
                "split": split,
            }
        )
    block = {
        "dataset": "tiny-nifti",
        "subject": "7",
        "drop_first": DROP_FIRST,
        "drop_last": DROP_LAST,
        "masker": {"mask": "mask.nii.gz"},
        "video": {"fps": 2.0, "height": 16, "width": 20, "block_trs": 5},
        "runs": runs,
    }
    (root / "runs.yaml").write_text(yaml.safe_dump({"preprocess": block}))
    return {
        "root": root,
        "mask": mask,
        "affine": affine,
        "planted": planted,
        "features": features,
        "video_ids": video_ids,
        "config": root / "runs.yaml",
    }


def convert(dataset, out: Path, *overrides: str) -> Path:
    cfg = load_preprocess_config(NiftiConfig, dataset["config"], overrides)
    return preprocess_nifti(cfg, dataset["root"], out, progress=False)


@pytest.fixture(scope="module")
def converted(dataset, tmp_path_factory):
    return convert(dataset, tmp_path_factory.mktemp("out") / "nifti.h5")


def test_voxels_are_the_mask_in_c_order_with_mm_coordinates(converted, dataset):
    summary = validate(converted)
    assert (summary.dataset, summary.subject, summary.tr_s, summary.frames_per_tr) == (
        "tiny-nifti",
        "7",
        2.0,
        4,
    )  # TR read from the header's pixdim[4]
    assert summary.n_voxels == 61
    with h5py.File(converted) as f:
        index, coords = f["voxels/index"][()], f["voxels/coords"][()]
        assert set(f["voxels/roi"].asstr()[()]) == {"unknown"}
        grid = f["voxels"].attrs["grid_shape"], f["voxels"].attrs["grid_affine"]
    np.testing.assert_array_equal(index, np.flatnonzero(dataset["mask"].ravel()))
    assert tuple(grid[0]) == SHAPE  # the grid brain maps write NIfTI images in
    np.testing.assert_allclose(grid[1], dataset["affine"])
    ijk = np.stack(np.unravel_index(index, SHAPE), axis=1)
    np.testing.assert_allclose(coords, nib.affines.apply_affine(dataset["affine"], ijk))


def test_runs_pair_volumes_with_frames_and_the_planted_signal(converted, dataset):
    with h5py.File(converted) as f:
        index = f["voxels/index"][()]
        cols = np.flatnonzero(np.isin(index, dataset["planted"]))
        assert cols.size == dataset["planted"].size
        for split, n_segments in (("train", 2), ("test", 1)):
            fmri, run, frames = (f[f"{split}/{k}"][()] for k in ("fmri", "run", "frames"))
            assert list(np.unique(run)) == list(range(1, n_segments + 1))
            for seg in np.unique(run):
                rows = np.flatnonzero(run == seg)
                assert rows.size == N_KEPT
                for k, row in enumerate(rows):  # frame i of TR k shows movie time (4k + i) / 2 s
                    codes = [read_code(frames[row, i]) for i in range(4)]
                    vid = dataset["video_ids"][split, int(seg)]
                    assert codes == [((4 * k + i) * SRC_FPS // 2, vid) for i in range(4)]
                feature = signal.detrend(dataset["features"][split, int(seg)])
                for col in cols:
                    assert np.corrcoef(feature, fmri[rows, col])[0, 1] > 0.95
                    shifted = np.corrcoef(feature[1:], fmri[rows[:-1], col])[0, 1]
                    assert shifted < 0.8


def test_mask_computed_from_the_first_training_run(dataset, tmp_path):
    out = convert(
        dataset, tmp_path / "auto.h5", "masker.mask=null", "masker.mask_strategy=background"
    )
    with h5py.File(out) as f:
        np.testing.assert_array_equal(
            f["voxels/index"][()], np.flatnonzero(dataset["mask"].ravel())
        )
        assert np.isfinite(f["train/fmri"][()]).all()


def test_training_repeats_as_separate_runs(dataset, tmp_path):
    out = convert(dataset, tmp_path / "sep.h5", "average_train_repeats=false")
    with h5py.File(out) as f:
        assert list(np.unique(f["train/run"][()])) == [101, 102, 201, 202]
        assert f["train/frames"].shape[0] == 4 * N_KEPT


def mgh_run(root: Path) -> dict:
    """A 4D image nibabel reads, in FreeSurfer's MGH format rather than NIfTI."""
    nib.save(nib.MGHImage(np.zeros((3, 4, 5, 6), np.float32), np.eye(4)), root / "bold.mgz")
    return {"bold": "bold.mgz"}


def bad_runs(dataset, tmp_path: Path, replace: dict) -> Path:
    """A copy of the YAML whose first run has the keys in ``replace``."""
    block = yaml.safe_load(dataset["config"].read_text())
    block["preprocess"]["runs"][0].update(replace)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(block))
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda root: {"bold": "nope.nii.gz"}, "nope.nii.gz: missing BOLD run"),
        (lambda root: {"bold": "mask.nii.gz"}, "mask.nii.gz: expected a 4D NIfTI"),
        (mgh_run, "bold.mgz: expected a 4D NIfTI BOLD image, got a MGHImage"),
        (lambda root: {"video": "short.mp4"}, "short.mp4: video is shorter than its fMRI"),
        (lambda root: {"video": "broken.mp4"}, "broken.mp4: cannot read video"),
    ],
)
def test_bad_input_names_the_file_and_leaves_nothing(dataset, tmp_path, make, needle):
    root = dataset["root"]
    if not (root / "short.mp4").exists():
        write_coded_video(root / "short.mp4", seconds=N_KEPT * 2.0 - 3, fps=SRC_FPS, video_id=9)
        (root / "broken.mp4").write_bytes(b"not an mp4 at all")
    cfg = load_preprocess_config(NiftiConfig, bad_runs(dataset, tmp_path, make(root)))
    out = tmp_path / "out" / "x.h5"
    with pytest.raises(DataError) as info:
        preprocess_nifti(cfg, root, out, progress=False)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_pipeline_data_step_converts_a_nifti_dataset(dataset, tmp_path):
    """``neurocine pipeline`` with ``source.kind=nifti``: paths relative to the YAML's folder."""
    from neurocine.pipeline import STEPS, run_pipeline

    (tmp_path / "stage.yaml").write_text("stage: stage1\n")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(
        f"source: {{kind: nifti, config: {dataset['root'] / 'runs.yaml'}}}\n"
        "models: {clip: null, stable_diffusion: null, image_classifier: null,"
        " video_classifier: null}\n"
        f"stage1: {tmp_path / 'stage.yaml'}\nstage2: {tmp_path / 'stage.yaml'}\n"
        f"overrides: [data.path={tmp_path / 's7.h5'}, runs_dir={tmp_path / 'runs'}]\n"
    )
    first = run_pipeline(spec, progress=False, log=lambda line: None, steps=STEPS[:1])
    summary = validate(tmp_path / "s7.h5")
    assert first.status == {"data": "ran"} and (summary.dataset, summary.subject) == (
        "tiny-nifti",
        "7",
    )
    again = run_pipeline(spec, progress=False, log=lambda line: None, steps=STEPS[:1])
    assert again.status == {"data": "skipped"}
