"""The baselines' predictions for the scored clips: mean frame, pixel ridge and the oracle."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from neurocine.analysis.runs import ORACLE, read_reconstructions
from neurocine.baselines.mean_frame import MeanFrame
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.errors import ConfigError
from neurocine.evaluation.inputs import RunSamples
from neurocine.reconstruct import (
    fit_pixel_ridge,
    load_run,
    low_level_decoder,
    sample_clips,
    sampling_attrs,
    write_reconstructions,
)

BASELINES = ("mean_frame", "ridge", "oracle")


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
    in ``oracle.h5``. ``ridge`` returns the fitted pixel ridge (shared with the ridge row)."""
    cache = samples.samples_dir / ORACLE
    sampling = cfg.sampling
    key = sampling_attrs(sampling)
    if cache.is_file():
        frames, index, attrs = read_reconstructions(cache)
        if np.array_equal(index, rows) and all(attrs.get(k) == v for k, v in key.items()):
            return frames
    _, decoder = load_run(samples.run_dir)
    decoder = decoder.eval()
    low_level = low_level_decoder(sampling, ridge)
    batch = max(1, int(sampling.batch_size))
    bar = None
    if progress:
        bar = tqdm(total=len(rows), unit="video", desc="oracle (fmri_clean)")
    out = []
    for start in range(0, len(rows), batch):
        chunk_rows = rows[start : start + batch]
        fmri = torch.from_numpy(fmri_clean[start : start + batch])
        out.append(sample_clips(decoder, fmri, chunk_rows.tolist(), sampling, low_level))
        if bar is not None:
            bar.update(len(chunk_rows))
    if bar is not None:
        bar.close()
    frames = np.concatenate(out)
    write_reconstructions(cache, frames, rows, {**key, "run": str(samples.run_dir)})
    return frames


def baseline_predictions(
    names: Sequence[str],
    fmri: np.ndarray,
    n_frames: int,
    train: Callable[[], tuple[np.ndarray, np.ndarray]],
    ridge: Callable[[], Any],
    oracle=None,
    notes: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Predictions of each named baseline for the scored clips (``fmri: [N, W, V]``).

    ``train`` returns the train samples' fMRI windows and clips, ``ridge`` the pixel ridge fitted
    on them (both called only when a row needs them; the caller caches them, so the oracle's
    ridge start reuses the same fit). ``oracle`` is a zero-argument callable returning the
    oracle's videos, or None when the data have no ``fmri_clean`` (then the row is left out
    with a note).
    """
    notes = notes if notes is not None else []
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"evaluation.baselines: unknown {unknown}; expected some of {BASELINES}")
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "mean_frame":
            out[name] = MeanFrame().fit(train()[1]).predict(len(fmri), n_frames)
        elif name == "ridge":
            out[name] = ridge().predict(fmri)
        elif name == "oracle":
            if oracle is None:
                notes.append("oracle skipped: the data have no fmri_clean (simulated data only)")
                continue
            out[name] = oracle()
    return out


def evaluation_baselines(
    samples: RunSamples,
    cfg: DictConfig,
    datamodule: FMRIVideoDataModule,
    fmri: np.ndarray,
    n_frames: int,
    fmri_clean: np.ndarray | None,
    rows: np.ndarray,
    progress: bool,
    notes: list[str],
) -> dict[str, np.ndarray]:
    """:func:`baseline_predictions` of ``evaluation.baselines`` for one evaluation.

    The train samples and the pixel ridge are computed once, on first use, and shared: the
    ridge row and the oracle's ridge start use the same fit. The oracle needs ``fmri_clean``.
    """
    train = functools.cache(datamodule.train_arrays)
    ridge = functools.cache(lambda: fit_pixel_ridge(cfg, *train()))
    oracle = None
    if fmri_clean is not None:
        oracle = functools.partial(oracle_samples, samples, cfg, fmri_clean, rows, progress, ridge)
    return baseline_predictions(
        list(cfg.evaluation.baselines), fmri, n_frames, train, ridge, oracle, notes
    )
