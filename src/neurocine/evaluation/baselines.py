"""The baselines' predictions for the scored clips: mean frame, pixel ridge and the oracles."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from neurocine.analysis.runs import CLIP_ORACLE, ORACLE, read_reconstructions
from neurocine.baselines.mean_frame import MeanFrame
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.errors import ConfigError
from neurocine.evaluation.inputs import PairedClips, RunSamples
from neurocine.models.video_unet import ConditionAdapter
from neurocine.reconstruct import (
    MODEL_DIR,
    fit_pixel_ridge,
    load_run,
    low_level_decoder,
    sample_clips,
    sampling_attrs,
    write_reconstructions,
)

BASELINES = ("mean_frame", "ridge", "oracle", "clip_oracle")
NO_FMRI_CLEAN = "oracle skipped: the data have no fmri_clean (simulated data only)"
NO_CLIP_IMAGE = "clip_oracle skipped: the data have no clip_image (run `neurocine embed` first)"


def input_digest(*arrays: np.ndarray | None) -> str:
    """SHA-1 of the arrays' shapes and bytes (None skipped): what an oracle's cache was sampled
    from, so that a changed data file at the same path is not served stale samples."""
    digest = hashlib.sha1()
    for array in (a for a in arrays if a is not None):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def stage2_samples(
    samples: RunSamples,
    cfg: DictConfig,
    rows: np.ndarray,
    fmri: np.ndarray,
    ridge: Callable[[], Any],
    *,
    cache: str,
    desc: str,
    progress: bool,
    embedding: np.ndarray | None = None,
) -> np.ndarray:
    """The run's stage 2 sampled as the reconstructions were, under another condition.

    ``cfg.sampling`` gives the seeds (one per clip row), steps and start; with ``init=ridge``
    the start is the ridge decoding of ``fmri`` (``ridge`` returns the fitted pixel ridge,
    shared with the ridge row). The condition is the encoder's prediction from ``fmri``
    ``[N, W, V]``, or ``embedding`` ``[N, D]`` when given
    (:meth:`~neurocine.diffusion.pipeline.VideoDecoder.condition_from_embedding`). The videos
    are cached in ``<samples>/<cache>`` and reused while the rows, the sampling settings, the
    data file (``cfg.data.path``) and the inputs (a digest of ``fmri`` and ``embedding``) match.
    """
    path = samples.samples_dir / cache
    sampling = cfg.sampling
    key = {**sampling_attrs(sampling), "data": str(cfg.data.path),
           "inputs": input_digest(fmri, embedding)}  # fmt: skip
    if path.is_file():
        frames, index, attrs = read_reconstructions(path)
        if np.array_equal(index, rows) and all(attrs.get(k) == v for k, v in key.items()):
            return frames
    _, decoder = load_run(samples.run_dir)
    decoder = decoder.eval()
    low_level = low_level_decoder(sampling, ridge)
    batch = max(1, int(sampling.batch_size))
    bar = tqdm(total=len(rows), unit="video", desc=desc) if progress else None
    out = []
    for start in range(0, len(rows), batch):
        chunk = slice(start, start + batch)
        emb = None if embedding is None else torch.from_numpy(embedding[chunk]).float()
        out.append(
            sample_clips(
                decoder, torch.from_numpy(fmri[chunk]), rows[chunk].tolist(), sampling,
                low_level, embedding=emb,
            )
        )  # fmt: skip
        if bar is not None:
            bar.update(len(rows[chunk]))
    if bar is not None:
        bar.close()
    frames = np.concatenate(out)
    write_reconstructions(path, frames, rows, {**key, "run": str(samples.run_dir)})
    return frames


def oracle_samples(
    samples: RunSamples,
    cfg: DictConfig,
    fmri_clean: np.ndarray,
    rows: np.ndarray,
    progress: bool,
    ridge: Callable[[], Any],
) -> np.ndarray:
    """Stage 2 on ``fmri_clean``, sampled as the reconstructions were (``cfg.sampling``: their
    seeds, steps and start — with ``init=ridge`` the ridge decoding of ``fmri_clean``); cached
    in ``oracle.h5`` (:func:`stage2_samples`)."""
    return stage2_samples(
        samples, cfg, rows, fmri_clean, ridge,
        cache=ORACLE, desc="oracle (fmri_clean)", progress=progress,
    )  # fmt: skip


def clip_oracle_samples(
    samples: RunSamples,
    cfg: DictConfig,
    fmri: np.ndarray,
    clip_image: np.ndarray,
    rows: np.ndarray,
    progress: bool,
    ridge: Callable[[], Any],
) -> np.ndarray:
    """Stage 2 conditioned on the clips' true CLIP image embeddings ``clip_image`` ``[N, D]``
    (what stage 1 learns to predict): stage 2's ceiling given a perfect stage 1.

    Sampled as the reconstructions were (``cfg.sampling``: their seeds, steps and start); with
    ``init=ridge`` the start is the ridge decoding of the measured ``fmri``, as theirs, so only
    the condition differs. Cached in ``clip_oracle.h5`` (:func:`stage2_samples`).
    """
    return stage2_samples(
        samples, cfg, rows, fmri, ridge, cache=CLIP_ORACLE,
        desc="CLIP oracle (true image embedding)", progress=progress, embedding=clip_image,
    )  # fmt: skip


def clip_oracle_problem(run_dir: Path, clip_dim: int) -> str | None:
    """Why the CLIP oracle cannot condition the run's decoder on ``clip_dim``-wide CLIP image
    embeddings; None if it can: it needs a condition adapter that takes a CLIP embedding
    (``source="embedding"``, the shipped tiny prior's) of that width."""
    adapter: dict[str, Any] = ConditionAdapter.load_config(run_dir / MODEL_DIR / "adapter")
    if adapter.get("source") != "embedding":
        return (
            f"clip_oracle skipped: the decoder's condition adapter takes the encoder's "
            f"{adapter.get('source', 'tokens')}, not a CLIP embedding"
        )
    if int(adapter["in_dim"]) != clip_dim:
        return (
            f"clip_oracle skipped: clip_image has {clip_dim} dims, the decoder's "
            f"condition adapter takes {adapter['in_dim']}"
        )
    return None


def baseline_predictions(
    names: Sequence[str],
    fmri: np.ndarray,
    n_frames: int,
    train: Callable[[], tuple[np.ndarray, np.ndarray]],
    ridge: Callable[[], Any],
    sampled: Mapping[str, Callable[[], np.ndarray] | str] | None = None,
    notes: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Predictions of each named baseline for the scored clips (``fmri: [N, W, V]``).

    ``train`` returns the train samples' fMRI windows and clips, ``ridge`` the pixel ridge fitted
    on them (both called only when a row needs them; the caller caches them, so the oracles'
    ridge start reuses the same fit). ``sampled`` holds the rows sampled from stage 2
    (``oracle``, ``clip_oracle``): a zero-argument callable returning the row's videos, or a
    note saying why the row is left out (the oracle without ``fmri_clean``; then the note is
    added to ``notes``).
    """
    notes = notes if notes is not None else []
    sampled = sampled or {}
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"evaluation.baselines: unknown {unknown}; expected some of {BASELINES}")
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "mean_frame":
            out[name] = MeanFrame().fit(train()[1]).predict(len(fmri), n_frames)
        elif name == "ridge":
            out[name] = ridge().predict(fmri)
        else:
            row = sampled.get(name, f"{name} skipped: not available for this evaluation")
            if isinstance(row, str):
                notes.append(row)
                continue
            out[name] = row()
    return out


def evaluation_baselines(
    samples: RunSamples,
    cfg: DictConfig,
    datamodule: FMRIVideoDataModule,
    clips: PairedClips,
    progress: bool,
    notes: list[str],
) -> dict[str, np.ndarray]:
    """:func:`baseline_predictions` of ``evaluation.baselines`` for one evaluation.

    The train samples and the pixel ridge are computed once, on first use, and shared: the
    ridge row and the oracles' ridge start use the same fit. The oracle needs ``fmri_clean``,
    the CLIP oracle ``clip_image`` and a decoder conditioned on CLIP embeddings
    (:func:`clip_oracle_problem`).
    """
    names = list(cfg.evaluation.baselines)
    train = functools.cache(datamodule.train_arrays)
    ridge = functools.cache(lambda: fit_pixel_ridge(cfg, *train()))
    sampled: dict[str, Callable[[], np.ndarray] | str] = {"oracle": NO_FMRI_CLEAN}
    if clips.fmri_clean is not None:
        sampled["oracle"] = functools.partial(
            oracle_samples, samples, cfg, clips.fmri_clean, clips.rows, progress, ridge
        )
    if "clip_oracle" in names:
        sampled["clip_oracle"] = NO_CLIP_IMAGE
        if clips.clip_image is not None:
            problem = clip_oracle_problem(samples.run_dir, clips.clip_image.shape[1])
            sampled["clip_oracle"] = problem or functools.partial(
                clip_oracle_samples, samples, cfg, clips.fmri, clips.clip_image, clips.rows,
                progress, ridge,
            )  # fmt: skip
    return baseline_predictions(
        names, clips.fmri, clips.truth.shape[1], train, ridge, sampled, notes
    )
