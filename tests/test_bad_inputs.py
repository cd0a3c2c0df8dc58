"""Every malformed input the CLI accepts: exit non-zero, one line on stderr, nothing written.

One row per case: the arguments (``{tmp}`` is a fresh directory holding the prepared inputs),
and a fragment the one-line message must contain. Each case runs the real ``neurocine`` entry
point in-process and compares the directory before and after.
"""

from __future__ import annotations

import shlex

import h5py
import numpy as np
import pytest
from factories import write_tiny_subject

from neurocine.cli import main

EXP = "{tmp}/exp.yaml"


def _prepare(tmp):
    write_tiny_subject(tmp / "good.h5")
    write_tiny_subject(tmp / "noemb.h5", clip_dim=None)
    (tmp / "notes.h5").write_text("plain text, not HDF5")
    bad = write_tiny_subject(tmp / "nan.h5")
    with h5py.File(bad, "r+") as f:
        f["train/fmri"][3, 4] = np.nan
    (tmp / "exp.yaml").write_text(
        f"name: bad\nruns_dir: {tmp}/runs\ndata:\n  path: {tmp}/good.h5\n"
    )
    (tmp / "typo.yaml").write_text("data:\n  windw: 2\n")
    (tmp / "broken.yaml").write_text("data: [1, 2\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "emptyrun").mkdir()
    (tmp / "sweep_typo.yaml").write_text(
        "base: experiments/stage1.yaml\nsweep:\n  data.augment.mask_ration: [0.0, 0.5]\n"
    )
    (tmp / "sweep_type.yaml").write_text(
        "base: experiments/stage1.yaml\nsweep:\n  data.window: [two, three]\n"
    )
    grid = "base: experiments/stage1.yaml\nsweep:\n  data.window: [2, 3]\n"
    (tmp / "sweep_seeds.yaml").write_text(grid + "seeds: [0, 1, 0]\n")
    (tmp / "sweep_reference.yaml").write_text(grid + "reference: {data.window: 4}\n")
    (tmp / "sweep_launcher.yaml").write_text(grid + "launcher: {name: lsf}\n")


CASES = {
    # command line
    "unknown command": ("frobnicate", "invalid choice: 'frobnicate'"),
    "unknown stage": ("train stage3", "invalid choice: 'stage3'"),
    "missing required argument": ("simulate", "--out"),
    # files
    "validate a text file": ("validate {tmp}/notes.h5", "notes.h5: not an HDF5 file"),
    "validate a missing file": ("validate {tmp}/absent.h5", "absent.h5: file not found"),
    "validate NaN in fmri": ("validate {tmp}/nan.h5", "/train/fmri: non-finite value"),
    "train on a missing file": (
        f"train stage1 --config {EXP} data.path={{tmp}}/absent.h5",
        "absent.h5: file not found",
    ),
    "train on a text file": (
        f"train stage1 --config {EXP} data.path={{tmp}}/notes.h5",
        "notes.h5: not an HDF5 file",
    ),
    "train on NaN fmri": (
        f"train stage1 --config {EXP} data.path={{tmp}}/nan.h5",
        "/train/fmri: non-finite value",
    ),
    # configs
    "config file missing": (
        "train stage1 --config {tmp}/none.yaml",
        "none.yaml: config file not found",
    ),
    "config typo key": ("train stage1 --config {tmp}/typo.yaml", "key 'data.windw'"),
    "config not YAML": ("train stage1 --config {tmp}/broken.yaml", "broken.yaml: not valid YAML"),
    "config not a mapping": ("train stage1 --config {tmp}/list.yaml", "expected a mapping"),
    "override typo key": (f"train stage1 --config {EXP} trainer.max_epoch=1", "trainer.max_epoch"),
    "override wrong type": (f"train stage1 --config {EXP} data.window=two", "data.window"),
    "override without =": (f"train stage1 --config {EXP} data.window", "expected key=value"),
    "override bad value": (f"train stage1 --config {EXP} data.val_runs=9", "data.val_runs=9"),
    "resume without a run": (f"train stage1 --config {EXP} --resume", "no previous run"),
    "simulate typo key": ("simulate --out {tmp}/s.h5 n_voxel=10", "n_voxel"),
    "embed a text file": ("embed {tmp}/notes.h5 clip.preset=random", "not an HDF5 file"),
    "embed typo key": ("embed {tmp}/good.h5 clip.preset=random clip.batchsize=2", "clip.batchsize"),
    "cc2017 missing subject": (
        "preprocess cc2017 --root {tmp} --subject 9 --out {tmp}/o.h5",
        "subject9",
    ),
    "mindvideo missing arrays": (
        "import mindvideo --root {tmp} --subject subject1 --out {tmp}/o.h5",
        "fmri_train_subject1.npy",
    ),
    "reconstruct a non-run": ("reconstruct --run {tmp}/emptyrun --out {tmp}/rec", "emptyrun"),
    "evaluate a non-run": ("evaluate --run {tmp}/emptyrun", "emptyrun"),
    "sweep key not in schema": ("sweep {tmp}/sweep_typo.yaml", "mask_ration"),
    "sweep value of wrong type": ("sweep {tmp}/sweep_type.yaml", "data.window"),
    "sweep seed repeated": ("sweep {tmp}/sweep_seeds.yaml", "repeats a seed"),
    "sweep reference not in grid": ("sweep {tmp}/sweep_reference.yaml", "reference 'data.window"),
    "sweep unknown launcher": ("sweep {tmp}/sweep_launcher.yaml", "launcher.name 'lsf'"),
    "simulate wrong type": ("simulate --out {tmp}/s.h5 n_voxels=many", "n_voxels"),
}


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, tmp_path, capsys):
    _prepare(tmp_path)
    before = _listing(tmp_path)
    args, fragment = CASES[case]
    with pytest.raises(SystemExit) if case in ARGPARSE_CASES else _no_exit():
        status = main(shlex.split(args.format(tmp=tmp_path)))
        assert status != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("neurocine: error: ") and "Traceback" not in err[0]
    assert fragment in err[0]
    assert _listing(tmp_path) == before, "a failed command left files behind"


ARGPARSE_CASES = {"unknown command", "unknown stage", "missing required argument"}


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
