"""``neurocine reconstruct``: outputs, seeds, CLI, and bad runs or data."""

from __future__ import annotations

import re
import shutil

import av
import h5py
import numpy as np
import pytest
from PIL import Image
from stage2_helpers import (
    FRAMES,
    HEIGHT,
    WIDTH,
    save_tiny_encoder,
    tiny_config,
)

from neurocine.cli import main
from neurocine.config import save_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.errors import CheckpointError, ConfigError, SchemaError
from neurocine.lit.stage2 import build_callbacks, build_module
from neurocine.media import grid_image, write_gif, write_mp4
from neurocine.reconstruct import reconstruct

FAST = ["sampling.steps=2", "sampling.guidance_scale=2.0"]


@pytest.fixture(scope="module")
def run_dir(tiny_subject, tmp_path_factory):
    """A stage-2 run directory: config.yaml + the exported (untrained) model."""
    root = tmp_path_factory.mktemp("stage2run")
    encoder = save_tiny_encoder(root / "encoder")
    cfg = tiny_config(tiny_subject, encoder, root / "runs", "stage2.noise.ratio=0.3")
    run = root / "run"
    save_config(cfg, run / "config.yaml")
    datamodule = FMRIVideoDataModule(cfg, read_frames=True, augment=False)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    callback = build_callbacks(cfg)[0]  # what fit start does: install ρ of the config
    callback.install(module, callback.ratio_at(epoch=0, step=0))
    module.export(run)
    return run


def test_writes_h5_videos_and_grid(run_dir, tiny_subject, tmp_path):
    result = reconstruct(run_dir, tmp_path, limit=4, overrides=FAST, progress=False)
    assert result.n_videos == 4 and result.seconds_per_video > 0
    with h5py.File(result.h5_path) as f:
        frames, index = f["frames"][()], f["index"][()]
        attrs = dict(f.attrs)
    assert frames.shape == (4, FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert index.dtype == np.int64 and list(index) == [0, 1, 2, 3]  # test rows, in order
    assert attrs["split"] == "test" and attrs["steps"] == 2 and attrs["dependent_ratio"] == 0.3
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
    mp4 = tmp_path / "videos" / "test_00002.mp4"
    with av.open(str(mp4)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == FRAMES and decoded[0].shape == (HEIGHT, WIDTH, 3)
    gif = Image.open(tmp_path / "videos" / "test_00002.gif")
    assert gif.n_frames == FRAMES and gif.size == (WIDTH, HEIGHT)
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    assert grid.shape == (4 * (2 * 2 * HEIGHT + 2) + 2, FRAMES * (2 * WIDTH + 2) + 2, 3)
    with h5py.File(tiny_subject) as f:
        truth = f["test/frames"][:4]
    assert np.array_equal(grid, grid_image(truth, frames))


def test_mp4_and_gif_hold_the_frames(tmp_path):
    # A smooth moving gradient (H.264's chroma subsampling would blur per-pixel noise), odd width.
    y, x = np.mgrid[0:HEIGHT, 0 : WIDTH - 1]
    clip = np.stack(
        [
            np.stack([x * 12 + 8 * f, y * 14, np.full_like(x, 60 + 40 * f)], -1)
            for f in range(FRAMES)
        ]
    ).astype(np.uint8)
    write_mp4(tmp_path / "a.mp4", clip, fps=3.0)
    with av.open(str(tmp_path / "a.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 3
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    assert decoded.shape == (FRAMES, HEIGHT, WIDTH, 3)  # padded to an even width
    assert np.abs(decoded[..., : WIDTH - 1, :].astype(int) - clip.astype(int)).mean() < 8
    write_gif(tmp_path / "a.gif", clip, fps=3.0)
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == FRAMES and abs(gif.info["duration"] - 333) <= 10  # centiseconds
    gif.seek(2)
    assert np.abs(np.asarray(gif.convert("RGB")).astype(int) - clip[2].astype(int)).mean() < 4


def test_each_video_is_the_same_whatever_the_batch_or_limit(run_dir, tmp_path):
    a = reconstruct(run_dir, tmp_path / "a", limit=3, overrides=FAST, progress=False, videos=False)
    b = reconstruct(
        run_dir, tmp_path / "b", limit=2, overrides=[*FAST, "sampling.batch_size=1"],
        progress=False, videos=False,
    )  # fmt: skip
    c = reconstruct(
        run_dir, tmp_path / "c", limit=2, overrides=[*FAST, "sampling.seed=1"],
        progress=False, videos=False,
    )  # fmt: skip
    with h5py.File(a.h5_path) as fa, h5py.File(b.h5_path) as fb, h5py.File(c.h5_path) as fc:
        first = fa["frames"][:2].astype(int)
        assert np.abs(first - fb["frames"][()].astype(int)).max() <= 1
        assert not np.array_equal(fa["frames"][:2], fc["frames"][()])
    assert not (tmp_path / "a" / "videos").exists()


def test_ridge_start_is_recorded_and_keeps_the_ridge_video(run_dir, tmp_path):
    from neurocine.reconstruct import fit_pixel_ridge, load_run

    start = ["sampling.init=ridge", "sampling.steps=10", "sampling.guidance_scale=1.0"]
    near = reconstruct(run_dir, tmp_path / "near", limit=3, progress=False, videos=False,
                       overrides=[*start, "sampling.strength=0.1"])  # fmt: skip
    plain = reconstruct(run_dir, tmp_path / "noise", limit=3, progress=False, videos=False,
                        overrides=start[1:])  # fmt: skip
    with h5py.File(near.h5_path) as f:
        frames, attrs = f["frames"][()], dict(f.attrs)
    with h5py.File(plain.h5_path) as f:
        noise_frames, noise_attrs = f["frames"][()], dict(f.attrs)
    assert (attrs["init"], attrs["strength"]) == ("ridge", 0.1)
    assert (noise_attrs["init"], noise_attrs["strength"]) == ("noise", 1.0)
    # One DDIM step at t = 0 from the ridge decoding (fitted on the train split) stays on it.
    cfg, _ = load_run(run_dir, start)
    datamodule = FMRIVideoDataModule(cfg, read_frames=True, augment=False)
    datamodule.setup("test")
    fmri = datamodule.datasets["test"].__getitems__([0, 1, 2])["fmri"].numpy()
    ridge = fit_pixel_ridge(cfg, *datamodule.train_arrays()).predict(fmri).astype(float)
    near, far = np.abs(frames - ridge).mean(), np.abs(noise_frames - ridge).mean()
    assert near < 0.2 * far  # measured: 4.4 vs 73 grey levels


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sampling.init=vdvae"], "sampling.init='vdvae': must be one of noise, ridge"),
        (["sampling.strength=0.5"], "sampling.strength=0.5 needs an initial video"),
        (["sampling.init=ridge", "sampling.strength=1.5"], r"must be in \(0, 1\]"),
    ],
)
def test_bad_sampling_start_is_one_line(run_dir, tmp_path, capsys, overrides, message):
    code = main(["reconstruct", "--run", str(run_dir), "--out", str(tmp_path / "out"),
                 "--no-progress", *FAST, *overrides])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "out").exists()


def test_cli_reconstructs_and_reports_bad_input_in_one_line(run_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["reconstruct", "--run", str(run_dir), "--out", str(out), "--limit", "2",
                 "--split", "val", "--no-progress", *FAST])  # fmt: skip
    assert code == 0
    assert "2 reconstructions" in capsys.readouterr().out
    with h5py.File(out / "reconstructions.h5") as f:
        assert f.attrs["h5_group"] == "train" and len(f["index"]) == 2
    code = main(["reconstruct", "--run", str(tmp_path), "--out", str(out), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no config.yaml" in err[0]


def test_bad_runs_and_data(run_dir, tiny_subject, tmp_path):
    with pytest.raises(CheckpointError, match="config.yaml"):
        reconstruct(tmp_path, tmp_path / "out", progress=False)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run_dir / "config.yaml", unfinished / "config.yaml")
    with pytest.raises(CheckpointError, match="model: missing"):
        reconstruct(unfinished, tmp_path / "out", progress=False)
    no_frames = tmp_path / "noframes.h5"
    shutil.copy(tiny_subject, no_frames)
    with h5py.File(no_frames, "r+") as f:
        del f["test/frames"]
    with pytest.raises(SchemaError, match=r"noframes.h5: /test/frames: missing"):
        reconstruct(run_dir, tmp_path / "out", overrides=[f"data.path={no_frames}"], progress=False)
    with pytest.raises(ConfigError, match="--limit"):
        reconstruct(run_dir, tmp_path / "out", limit=0, progress=False)
    with pytest.raises(ConfigError, match="--split"):
        reconstruct(run_dir, tmp_path / "out", split="dev", progress=False)
