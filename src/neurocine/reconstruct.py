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
the same whatever ``--limit`` or batch size. Every file goes to a temporary name first; the
videos and the grid are encoded by :mod:`neurocine.media`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import h5py
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from neurocine.baselines.pixel_ridge import PixelRidge
from neurocine.config import load_run_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.diffusion.pipeline import VideoDecoder
from neurocine.errors import CheckpointError, ConfigError, SchemaError
from neurocine.fileio import atomic_path
from neurocine.media import write_gif, write_grid, write_mp4
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
    embedding: torch.Tensor | None = None,
) -> np.ndarray:
    """uint8 clips ``[B, F, H, W, 3]`` for fMRI windows ``[B, W, V]`` of clip ``rows``.

    One generator per row (:func:`video_generators`); with ``low_level`` (from
    :func:`low_level_decoder`) sampling starts from its decoding of ``fmri`` at
    ``sampling.strength`` (which must be 1 without it). ``embedding`` (CLIP image embeddings
    ``[B, D]``) conditions stage 2 in place of the encoder's prediction from ``fmri``
    (:meth:`~neurocine.diffusion.pipeline.VideoDecoder.condition_from_embedding`, the CLIP
    oracle); ``fmri`` then only feeds the ridge start.
    """
    init = None
    if low_level is not None:
        init = torch.from_numpy(low_level.predict(fmri.cpu().numpy()))
    condition = None
    if embedding is not None:
        with torch.no_grad():
            condition = decoder.condition_from_embedding(embedding)
    frames = decoder.generate(
        fmri if condition is None else None,
        condition=condition,
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
    cfg = load_run_config(config_path, overrides)
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


def _check_model_fits(
    decoder: VideoDecoder, datamodule: FMRIVideoDataModule, cfg: DictConfig, source: str
) -> None:
    """ConfigError when the run's model does not fit the data (voxels, window, clip shape)."""
    if datamodule.n_voxels is None or datamodule.frames_shape is None:
        raise RuntimeError("set up the DataModule (with frames) before checking the model")
    check_compatible(decoder.encoder, int(datamodule.n_voxels), int(cfg.data.window), None, source)
    if tuple(datamodule.frames_shape) != decoder.frames_shape:
        raise ConfigError(
            f"{cfg.data.path}: clips of {datamodule.frames_shape} (F, H, W), the model was "
            f"trained on {decoder.frames_shape}"
        )


def sample_loader(
    decoder: VideoDecoder,
    loader: Iterable[dict[str, torch.Tensor]],
    total: int,
    sampling: DictConfig,
    low_level: PixelRidge | None = None,
    progress: bool = False,
    desc: str = "reconstruct",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the first ``total`` clips of ``loader`` (:func:`sample_clips` per batch).

    Returns uint8 reconstructions and ground truth ``[N, F, H, W, 3]`` and the clip rows
    ``[N]``; with ``progress`` a bar shows the videos done and the DDIM step.
    """
    bar = tqdm(total=total, unit="video", desc=desc) if progress else None

    def step(i: int, n: int) -> None:
        if bar is not None:
            bar.set_postfix_str(f"DDIM step {i}/{n}")

    recons, truths, rows = [], [], []
    done = 0
    for batch in loader:
        if done >= total:
            break
        take = min(total - done, batch["fmri"].shape[0])
        index = batch["index"][:take]
        recons.append(
            sample_clips(decoder, batch["fmri"][:take], index.tolist(), sampling, low_level, step)
        )
        truths.append(batch["frames"][:take].numpy())
        rows.append(index.numpy())
        done += take
        if bar is not None:
            bar.update(take)
    if bar is not None:
        bar.close()
    if not recons:
        empty = np.zeros((0, *decoder.frames_shape, 3), np.uint8)
        return empty, empty, np.zeros(0, np.int64)
    return np.concatenate(recons), np.concatenate(truths), np.concatenate(rows)


def write_videos(
    out_dir: Path, recon: np.ndarray, truth: np.ndarray, index: np.ndarray, split: str, fps: float
) -> None:
    """``videos/<split>_<row>.mp4`` and ``.gif`` per clip, and ``grid.png`` of the first ones."""
    video_dir = out_dir / "videos"
    video_dir.mkdir(exist_ok=True)
    for clip, row in zip(recon, index, strict=True):
        write_mp4(video_dir / f"{split}_{int(row):05d}.mp4", clip, fps)
        write_gif(video_dir / f"{split}_{int(row):05d}.gif", clip, fps)
    write_grid(out_dir / "grid.png", truth[:GRID_SAMPLES], recon[:GRID_SAMPLES])


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
    if limit is not None and int(limit) < 1:
        raise ConfigError(f"--limit {limit}: must be ≥ 1")
    cfg, decoder = load_run(run_dir, overrides)
    data_path = Path(cfg.data.path)
    group, fps = _check_split(data_path, split)
    datamodule = FMRIVideoDataModule(cfg, read_frames=True, augment=False)
    datamodule.setup("test")
    _check_model_fits(decoder, datamodule, cfg, str(run_dir))
    if device is None:
        use_cuda = torch.cuda.is_available() and str(cfg.trainer.accelerator) != "cpu"
        device = "cuda" if use_cuda else "cpu"
    decoder = decoder.to(device).eval()
    sampling = cfg.sampling
    low_level = low_level_decoder(
        sampling, lambda: fit_pixel_ridge(cfg, *datamodule.train_arrays())
    )
    loader = datamodule.loader(split, batch_size=int(sampling.batch_size))
    n_clips = len(cast(Sized, loader.dataset))  # the DataModule's datasets have a length
    total = n_clips if limit is None else min(int(limit), n_clips)
    sampling_started = time.perf_counter()
    recon, truth, index = sample_loader(
        decoder, loader, total, sampling, low_level, progress, f"reconstruct {split}"
    )
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
        write_videos(out_dir, recon, truth, index, split, fps)
    seconds = time.perf_counter() - started
    return Reconstruction(
        out_dir=out_dir,
        h5_path=h5_path,
        n_videos=len(recon),
        seconds=seconds,
        seconds_per_video=sampling_seconds / max(1, len(recon)),
    )
