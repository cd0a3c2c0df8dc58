"""The HDF5 contract: round trip, validation errors (one line, naming file/key/shape), atomicity."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from factories import tiny_subject_arrays, write_tiny_subject

from neurocine.cli import main
from neurocine.data.schema import SubjectWriter, read_strings, validate, write_subject
from neurocine.errors import SchemaError


def test_round_trip(tmp_path):
    arrays = tiny_subject_arrays()
    path = write_subject(tmp_path / "s.h5", **arrays)
    summary = validate(path)
    assert summary.n_voxels == 61
    assert summary.splits["train"].n_trs == 40 and summary.splits["train"].n_runs == 4
    assert summary.splits["test"].frames == (4, 16, 20)
    assert summary.splits["train"].embeddings == {"clip_image": 12, "clip_text": 12}
    with h5py.File(path) as f:
        for split, data in arrays["splits"].items():
            np.testing.assert_array_equal(f[f"{split}/fmri"][()], data["fmri"])
            np.testing.assert_array_equal(f[f"{split}/frames"][()], data["frames"])
            assert read_strings(f[f"{split}/caption"]) == data["caption"]
            assert f[f"{split}/clip_image"].dtype == np.float16
        assert f.attrs["schema_version"] == 1 and f.attrs["tr_s"] == 2.0
        assert "neurocine" in f.attrs["created_by"]
        assert f["train/frames"].compression == "lzf"


def test_streaming_appends_equal_one_write(tmp_path):
    arrays = tiny_subject_arrays()
    train = arrays["splits"]["train"]
    with SubjectWriter(
        tmp_path / "s.h5",
        voxel_index=arrays["voxels"]["index"],
        voxel_coords=arrays["voxels"]["coords"],
        voxel_roi=arrays["voxels"]["roi"],
        **arrays["meta"],
    ) as writer:
        for start in range(0, 40, 10):
            writer.append("train", **{k: v[start : start + 10] for k, v in train.items()})
    with h5py.File(tmp_path / "s.h5") as f:
        np.testing.assert_array_equal(f["train/fmri"][()], train["fmri"])
        assert read_strings(f["train/caption"]) == train["caption"]


def _corrupt(path, action):
    with h5py.File(path, "r+") as f:
        action(f)
    return path


CORRUPTIONS = {
    "missing dataset": (lambda f: f.__delitem__("train/run"), r"/train/run: missing dataset"),
    "length mismatch": (
        lambda f: f["train/run"].resize(39, axis=0),
        r"/train/run: 39 rows, but /train/fmri has 40",
    ),
    "frames length": (
        lambda f: f["test/frames"].resize(19, axis=0),
        r"/test/frames: 19 rows, but /test/fmri has 20",
    ),
    "nan": (
        lambda f: f["train/fmri"].__setitem__((5, 3), np.nan),
        r"/train/fmri: non-finite value .* row 5, voxel 3",
    ),
    "inf": (
        lambda f: f["test/fmri"].__setitem__((2, 7), np.inf),
        r"/test/fmri: non-finite value .* row 2, voxel 7",
    ),
    "wrong dtype": (
        lambda f: (f.__delitem__("train/run"), f.create_dataset("train/run", data=np.zeros(40))),
        r"/train/run: dtype float64, expected int32",
    ),
    "schema version": (
        lambda f: f.attrs.__setitem__("schema_version", 99),
        r"schema_version 99 is not supported",
    ),
    "voxel count": (
        lambda f: (
            f.__delitem__("voxels/index"),
            f.create_dataset("voxels/index", data=np.arange(60)),
        ),
        r"/train/fmri: shape \(40, 61\) has 61 voxels, /voxels/index has 60",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_validate_rejects(tmp_path, case):
    action, message = CORRUPTIONS[case]
    path = _corrupt(write_tiny_subject(tmp_path / "bad.h5"), action)
    with pytest.raises(SchemaError, match=message) as info:
        validate(path)
    assert str(path) in str(info.value)
    assert all(line.startswith(str(path)) for line in str(info.value).splitlines())


def test_not_hdf5_and_missing_file(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(SchemaError, match=r"notes\.h5: not an HDF5 file"):
        validate(text)
    with pytest.raises(SchemaError, match="file not found"):
        validate(tmp_path / "absent.h5")


def test_failed_write_leaves_nothing(tmp_path):
    arrays = tiny_subject_arrays()
    arrays["splits"]["train"]["run"] = arrays["splits"]["train"]["run"][:-1]
    with pytest.raises(SchemaError, match="row counts differ"):
        write_subject(tmp_path / "s.h5", **arrays)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_previous_file(tmp_path):
    path = write_tiny_subject(tmp_path / "s.h5", seed=1)
    before = path.read_bytes()
    arrays = tiny_subject_arrays()
    arrays["splits"]["test"]["fmri"][0, 0] = np.nan
    with pytest.raises(SchemaError, match="non-finite"):
        write_subject(path, **arrays)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]


def test_cli_validate(tmp_path, tiny_subject, capsys):
    assert main(["validate", str(tiny_subject)]) == 0
    out = capsys.readouterr().out
    assert "train: T=40 runs=4 frames F×H×W=4x16x20" in out and "clip_image[12]" in out
    bad = _corrupt(write_tiny_subject(tmp_path / "bad.h5"), CORRUPTIONS["nan"][0])
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neurocine: error: ") and "bad.h5" in err[0]
