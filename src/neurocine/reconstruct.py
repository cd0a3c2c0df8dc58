"""Reconstruct videos from fMRI with a trained stage-2 run (``neurocine reconstruct``).

``reconstruct(run_dir, out_dir)`` loads ``<run>/model/`` (the exported
:class:`~neurocine.diffusion.pipeline.VideoDecoder`) and the run's ``config.yaml``, samples one
clip per fMRI window of a split with DDIM (``cfg.sampling``: steps, guidance scale, η, seed,
batch size, the dependent ratio of the initial noise, and where sampling starts: ``init=noise``,
or ``init=ridge`` with ``strength`` — from the pixel-ridge decoding of the same fMRI, fitted on
the train split, see :func:`low_level_decoder`), and writes to ``out_dir``::

    reconstructions.h5   /frames uint8 [N, F, H, W, 3], /index int64 [N] (clip row in the
                         split's HDF5 group, to pair with ground truth) + sampling attributes
    videos/<split>_<row>.mp4 and .gif    one per sample
    grid.png             ground truth (upper row) vs reconstruction (lower row) per sample

Each video is drawn from its own generator seeded by ``(sampling.seed, row)``, so a sample is
the same whatever ``--limit`` or batch size. Every file goes to a temporary name first.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from omegaconf import DictConfig

from neurocine.baselines.pixel_ridge import PixelRidge
from neurocine.config import load_saved_config, merge_layer, parse_overrides
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.data.schema import atomic_path
from neurocine.diffusion.pipeline import VideoDecoder
from neurocine.errors import CheckpointError, ConfigError, SchemaError
from neurocine.models.fmri_encoder import check_compatible

SPLITS = {"train": "train", "val": "train", "test": "test"}  # DataModule split → HDF5 group
INITS = ("noise", "ridge")  # sampling.init
MODEL_DIR = "model"
GRID_SAMPLES = 8


@dataclass
class Reconstruction:
    """What :func:`reconstruct` wrote."""

    out_dir: Path
    h5_path: Path
    n_videos: int
    seconds: float
    seconds_per_video: float


def video_generators(seed: int, rows: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per video, seeded by ``(seed, row)`` (independent streams)."""
    out = []
    for row in rows:
        state = np.random.SeedSequence([int(seed), int(row)]).generate_state(1, dtype=np.uint64)[0]
        out.append(torch.Generator().manual_seed(int(state)))
    return out


def fit_pixel_ridge(cfg: DictConfig, fmri: np.ndarray, frames: np.ndarray) -> PixelRidge:
    """:class:`~neurocine.baselines.pixel_ridge.PixelRidge` (``evaluation.ridge_alphas``) fitted
    on train windows ``[N, W, V]`` and clips: the ridge baseline, and the ridge start."""
    return PixelRidge(alphas=list(cfg.evaluation.ridge_alphas)).fit(fmri, frames)


def low_level_decoder(sampling: DictConfig, ridge: Callable[[], PixelRidge]) -> PixelRidge | None:
    """The decoder whose output DDIM starts from: None for ``sampling.init=noise``.

    ``sampling.init=ridge`` takes ``ridge()`` (a :func:`fit_pixel_ridge`, called only then): the
    blurry low-level video that NeuroClips' perception reconstructor and MindEye's low-level
    pipeline hand to the diffusion model, which keeps its colours and layout (``strength`` < 1)
    and adds what the fMRI condition says. ``sampling.strength`` is checked where it is used,
    by :func:`~neurocine.diffusion.sampling.ddim_sample`.
    """
    init = str(sampling.init)
    if init not in INITS:
        raise ConfigError(f"sampling.init='{init}': expected one of {INITS}")
    return ridge() if init == "ridge" else None


def sample_clips(
    decoder: VideoDecoder,
    fmri: torch.Tensor,
    rows: Sequence[int],
    sampling: DictConfig,
    low_level: PixelRidge | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """uint8 clips ``[B, F, H, W, 3]`` for fMRI windows ``[B, W, V]`` of clip ``rows``.

    One generator per row (:func:`video_generators`); with ``low_level`` (from
    :func:`low_level_decoder`) sampling starts from its decoding of ``fmri`` at
    ``sampling.strength`` (which must be 1 without it).
    """
    init = None
    if low_level is not None:
        init = torch.from_numpy(low_level.predict(fmri.cpu().numpy()))
    frames = decoder.generate(
        fmri,
        steps=int(sampling.steps),
        guidance_scale=float(sampling.guidance_scale),
        eta=float(sampling.eta),
        generator=video_generators(int(sampling.seed), [int(r) for r in rows]),
        dependent_ratio=sampling.dependent_ratio,
        callback=callback,
        init_frames=init,
        strength=float(sampling.strength),
        uint8=str(sampling.uint8),
    )
    return frames.numpy()


def sampling_attrs(sampling: DictConfig) -> dict[str, Any]:
    """The sampling settings recorded with reconstructions (and the oracle's cache key)."""
    return {
        "steps": int(sampling.steps),
        "guidance_scale": float(sampling.guidance_scale),
        "eta": float(sampling.eta),
        "seed": int(sampling.seed),
        "init": str(sampling.init),
        "strength": float(sampling.strength),
        "uint8": str(sampling.uint8),
    }


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad ``[F, H, W, 3]`` by edge replication to even H and W (yuv420p needs them)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """H.264 mp4 of uint8 ``frames [F, H, W, 3]`` with PyAV (written atomically)."""
    import av

    path = Path(path)
    tmp = _tmp(path)
    frames = _even(np.ascontiguousarray(frames))
    try:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "17"}
            for frame in frames:
                video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Looping GIF of uint8 ``frames [F, H, W, 3]`` with Pillow (written atomically)."""
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(frame) for frame in frames]
    with atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:],
            duration=int(round(1000 / fps)), loop=0,
        )  # fmt: skip
    return path


def grid_image(truth: np.ndarray, recon: np.ndarray, scale: int = 2, gap: int = 2) -> np.ndarray:
    """uint8 ``[rows, cols, 3]``: per sample a ground-truth row above a reconstruction row.

    ``truth, recon : [N, F, H, W, 3]``; frames run left to right, nearest-neighbour upscaled by
    ``scale``, white gaps between frames and between samples.
    """
    n, n_frames, h, w, _ = recon.shape
    h2, w2 = h * scale, w * scale
    rows = n * (2 * h2 + gap) + gap
    cols = n_frames * (w2 + gap) + gap
    canvas = np.full((rows, cols, 3), 255, dtype=np.uint8)
    for i in range(n):
        for j, clip in enumerate((truth[i], recon[i])):
            top = gap + i * (2 * h2 + gap) + j * h2
            for f in range(n_frames):
                left = gap + f * (w2 + gap)
                tile = clip[f].repeat(scale, axis=0).repeat(scale, axis=1)
                canvas[top : top + h2, left : left + w2] = tile
    return canvas


def write_grid(path: str | Path, truth: np.ndarray, recon: np.ndarray) -> Path:
    """PNG of :func:`grid_image` (written atomically)."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(grid_image(truth, recon)).save(tmp, format="PNG")
    return path


def write_reconstructions(
    path: str | Path, frames: np.ndarray, index: np.ndarray, attrs: dict
) -> Path:
    """``reconstructions.h5``: /frames uint8 [N, F, H, W, 3], /index int64 [N], attributes."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            chunk = (max(1, min(len(frames), 64)), *frames.shape[1:]) if len(frames) else None
            f.create_dataset(
                "frames", data=frames.astype(np.uint8), chunks=chunk, compression="lzf"
            )
            f.create_dataset("index", data=index.astype(np.int64))
            for key, value in attrs.items():
                f.attrs[key] = value
    return path


def load_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> tuple[DictConfig, VideoDecoder]:
    """A stage-2 run's config (with ``key=value`` overrides) and its exported model."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir}: no config.yaml: not a run directory")
    cfg = load_saved_config(config_path)
    cfg = merge_layer(cfg, parse_overrides(overrides), "overrides")
    model_dir = run_dir / MODEL_DIR
    if not model_dir.is_dir():
        raise CheckpointError(
            f"{model_dir}: missing: not a finished stage-2 run (training exports model/ at its end)"
        )
    return cfg, VideoDecoder.load(model_dir)


def _check_split(path: Path, split: str) -> tuple[str, float]:
    """The HDF5 group of ``split`` and the clips' fps; SchemaError when it has no frames."""
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: expected one of {tuple(SPLITS)}")
    group = SPLITS[split]
    with h5py.File(path, "r") as f:
        if f"{group}/frames" not in f:
            raise SchemaError(
                f"{path}: /{group}/frames: missing dataset (reconstruction needs the ground truth)"
            )
        fps = float(f.attrs.get("fps", 0.0)) or 1.0
    return group, fps


def reconstruct(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    overrides: Sequence[str] = (),
    device: str | None = None,
    progress: bool = True,
    videos: bool = True,
) -> Reconstruction:
    """Sample a reconstruction for each fMRI window of ``split`` and write them (module docs).

    Parameters
    ----------
    run_dir : str or Path
        A stage-2 run (``runs/stage2/latest``).
    out_dir : str or Path
        Output folder (created).
    split : {"test", "val", "train"}, default="test"
    limit : int, optional
        Reconstruct only the first ``limit`` samples.
    overrides : sequence of str
        ``key=value`` config overrides (``sampling.steps=50``, ``data.path=…``).
    device : str, optional
        Default: CUDA when available and ``trainer.accelerator`` is not ``cpu``.
    progress : bool, default=True
        Show a progress bar.
    videos : bool, default=True
        Write the mp4/gif files and the grid (the HDF5 file is always written).
    """
    started = time.perf_counter()
    cfg, decoder = load_run(run_dir, overrides)
    data_path = Path(cfg.data.path)
    group, fps = _check_split(data_path, split)
    datamodule = FMRIVideoDataModule(cfg, read_frames=True, augment=False)
    datamodule.setup("test")
    check_compatible(
        decoder.encoder, int(datamodule.n_voxels), int(cfg.data.window), None, str(run_dir)
    )
    if tuple(datamodule.frames_shape) != decoder.frames_shape:
        raise ConfigError(
            f"{data_path}: clips of {datamodule.frames_shape} (F, H, W), the model was trained "
            f"on {decoder.frames_shape}"
        )
    if device is None:
        use_cuda = torch.cuda.is_available() and str(cfg.trainer.accelerator) != "cpu"
        device = "cuda" if use_cuda else "cpu"
    decoder = decoder.to(device).eval()
    sampling = cfg.sampling
    low_level = low_level_decoder(
        sampling, lambda: fit_pixel_ridge(cfg, *datamodule.train_arrays())
    )
    loader = datamodule.loader(split, batch_size=int(sampling.batch_size))
    total = len(loader.dataset) if limit is None else min(int(limit), len(loader.dataset))
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"--limit {limit}: must be ≥ 1")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="video", desc=f"reconstruct {split}")
    recons, truths, rows = [], [], []
    done = 0
    sampling_started = time.perf_counter()
    for batch in loader:
        if done >= total:
            break
        take = min(total - done, batch["fmri"].shape[0])
        index = batch["index"][:take]

        def step(i: int, n: int) -> None:
            if bar is not None:
                bar.set_postfix_str(f"DDIM step {i}/{n}")

        frames = sample_clips(
            decoder, batch["fmri"][:take], index.tolist(), sampling, low_level, step
        )
        recons.append(frames)
        truths.append(batch["frames"][:take].numpy())
        rows.append(index.numpy())
        done += take
        if bar is not None:
            bar.update(take)
    if bar is not None:
        bar.close()
    recon = np.concatenate(recons) if recons else np.zeros((0, *decoder.frames_shape, 3), np.uint8)
    truth = np.concatenate(truths) if truths else recon
    index = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    sampling_seconds = time.perf_counter() - sampling_started
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ratio = sampling.dependent_ratio
    if ratio is None:
        ratio = decoder.scheduler.config.dependent_ratio
    attrs = {
        "run": str(Path(run_dir).resolve()),
        "data_path": str(data_path),
        "split": split,
        "h5_group": group,
        **sampling_attrs(sampling),
        "dependent_ratio": float(ratio),
        "fps": fps,
    }
    h5_path = write_reconstructions(out_dir / "reconstructions.h5", recon, index, attrs)
    if videos and len(recon):
        video_dir = out_dir / "videos"
        video_dir.mkdir(exist_ok=True)
        for clip, row in zip(recon, index, strict=True):
            write_mp4(video_dir / f"{split}_{int(row):05d}.mp4", clip, fps)
            write_gif(video_dir / f"{split}_{int(row):05d}.gif", clip, fps)
        write_grid(out_dir / "grid.png", truth[:GRID_SAMPLES], recon[:GRID_SAMPLES])
    seconds = time.perf_counter() - started
    return Reconstruction(
        out_dir=out_dir,
        h5_path=h5_path,
        n_videos=len(recon),
        seconds=seconds,
        seconds_per_video=sampling_seconds / max(1, len(recon)),
    )
