"""The ridge baseline: a linear map from an fMRI window to a CLIP embedding.

The decoder every fMRI paper reports next to its deep model: the window ``[W, V]`` flattened to
``W·V`` features, one ridge regression per embedding dimension with its own regularisation chosen
by cross-validation over ``alphas`` (himalaya's ``RidgeCV``, numpy or torch backend). When there
are fewer samples than features (the usual case: 800 windows × 4000 voxel-TRs) the same model is
solved in its dual form, himalaya's ``KernelRidgeCV`` with a linear kernel, which gives the same
coefficients far faster (``solver="auto"``). Folds are whole runs (:func:`run_folds`), so
neighbouring TRs of one run never sit on both sides of a split. Scored with the same retrieval
metrics as stage 1 (:mod:`neurocine.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import torch

from neurocine.errors import ConfigError, DataError
from neurocine.metrics import n_way_retrieval, retrieval_top_k

DEFAULT_ALPHAS = np.logspace(-1, 6, 15)
BACKENDS = ("numpy", "torch", "torch_cuda")
SOLVERS = ("auto", "primal", "dual")


@contextmanager
def himalaya_backend(name: str) -> Iterator[None]:
    """Use himalaya backend ``name`` inside the block, then restore the previous one."""
    from himalaya.backend import get_backend, set_backend

    if name not in BACKENDS:
        raise ConfigError(f"ridge backend '{name}': expected one of {BACKENDS}")
    previous = get_backend().name
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def ridge_features(fmri: np.ndarray | torch.Tensor) -> np.ndarray:
    """fMRI windows ``[N, W, V]`` → features ``[N, W·V]`` (float32, TR-major)."""
    x = fmri.numpy() if isinstance(fmri, torch.Tensor) else np.asarray(fmri)
    if x.ndim != 3:
        raise DataError(f"ridge: fMRI shape {x.shape}, expected [N, W, V]")
    return x.reshape(x.shape[0], -1).astype(np.float32, copy=False)


def run_folds(runs: np.ndarray, n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation splits that keep each run whole: ``[(train_idx, val_idx), …]``.

    Runs are assigned to ``min(n_folds, n_runs)`` folds round-robin in order of appearance.
    """
    runs = np.asarray(runs)
    _, first = np.unique(runs, return_index=True)
    ordered = runs[np.sort(first)]
    n = min(n_folds, len(ordered))
    if n < 2:
        raise DataError(f"ridge: cross-validation needs ≥ 2 runs, got {len(ordered)}")
    fold_of_run = {run: i % n for i, run in enumerate(ordered)}
    fold = np.array([fold_of_run[r] for r in runs])
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n)]


@dataclass
class RidgeDecoder:
    """A fitted ridge map: centre with the training means, apply himalaya's model, add back.

    Centring here (rather than himalaya's ``fit_intercept``) keeps the dual solver exact when
    there are more samples than features, where its centred kernel is rank-deficient.
    """

    model: Any  # himalaya RidgeCV or KernelRidgeCV, fitted without intercept
    x_mean: np.ndarray  # [n_features]
    y_mean: np.ndarray  # [D]
    backend: str = "numpy"
    solver: str = "primal"

    @property
    def best_alphas_(self) -> np.ndarray:
        """The alpha chosen by cross-validation for each target ``[D]``."""
        return self._to_numpy(self.model.best_alphas_)

    def _to_numpy(self, value: Any) -> np.ndarray:
        from himalaya.backend import get_backend

        with himalaya_backend(self.backend):
            return np.asarray(get_backend().to_numpy(value), dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted embeddings ``[N, D]`` (numpy float32)."""
        centred = np.asarray(x, dtype=np.float32) - self.x_mean
        with himalaya_backend(self.backend):
            pred = self.model.predict(centred)
        return self._to_numpy(pred) + self.y_mean


def fit_ridge(
    train_x: np.ndarray,
    train_y: np.ndarray,
    alphas: Sequence[float] | np.ndarray = DEFAULT_ALPHAS,
    cv: int | list[tuple[np.ndarray, np.ndarray]] = 5,
    backend: str = "numpy",
    solver: str = "auto",
) -> RidgeDecoder:
    """Fit ridge from features to targets, one alpha per target chosen by CV.

    Parameters
    ----------
    train_x : ndarray of shape (N, n_features)
        :func:`ridge_features` of the training windows.
    train_y : ndarray of shape (N, D)
        CLIP embeddings.
    alphas : sequence of float, default=logspace(-1, 6, 15)
    cv : int or list of (train, val) index pairs, default=5
        KFold count, or explicit splits (:func:`run_folds`).
    backend : {"numpy", "torch", "torch_cuda"}, default="numpy"
    solver : {"auto", "primal", "dual"}, default="auto"
        ``primal``: ``RidgeCV``; ``dual``: ``KernelRidgeCV(kernel="linear")`` (same model);
        ``auto``: dual when there are fewer samples than features.

    Returns
    -------
    RidgeDecoder
        ``best_alphas_`` holds the chosen alpha per target, ``predict`` maps features.
    """
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.ridge import RidgeCV

    x = np.asarray(train_x, dtype=np.float32)
    y = np.asarray(train_y, dtype=np.float32)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DataError(f"ridge: features {x.shape} and targets {y.shape} must be [N, F], [N, D]")
    if solver not in SOLVERS:
        raise ConfigError(f"ridge solver '{solver}': expected one of {SOLVERS}")
    dual = solver == "dual" or (solver == "auto" and x.shape[0] < x.shape[1])
    grid = np.asarray(alphas, dtype=np.float32)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    with himalaya_backend(backend):
        if dual:
            model = KernelRidgeCV(alphas=grid, kernel="linear", cv=cv, warn=False)
        else:
            model = RidgeCV(alphas=grid, cv=cv)
        model.fit(x - x_mean, y - y_mean)
    return RidgeDecoder(model, x_mean, y_mean, backend, "dual" if dual else "primal")


def predict_ridge(model: RidgeDecoder, x: np.ndarray) -> np.ndarray:
    """Predicted embeddings ``[N, D]`` (numpy float32)."""
    return model.predict(x)


def retrieval_scores(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    n_way: int = 50,
    num_trials: int = 100,
    seed: int = 0,
) -> dict[str, float]:
    """Stage 1's retrieval metrics of predicted vs true embeddings over a whole split.

    Returns ``top1``/``top5`` (among all N samples) and ``top1_{n}way``/``top5_{n}way``.
    """
    scores = {
        "top1": retrieval_top_k(pred, target, k=1),
        "top5": retrieval_top_k(pred, target, k=5),
    }
    for k in (k for k in (1, 5) if k < n_way):
        generator = torch.Generator().manual_seed(seed)
        scores[f"top{k}_{n_way}way"] = n_way_retrieval(
            pred, target, n_way=n_way, num_trials=num_trials, top_k=k, generator=generator
        )
    return scores


@dataclass
class SplitArrays:
    """A split as arrays: fMRI windows, embeddings and each sample's run."""

    fmri: np.ndarray  # [N, W, V]
    targets: dict[str, np.ndarray]  # name → [N, D]
    runs: np.ndarray  # [N]


def collect_split(
    datamodule: Any, split: str, batch_size: int = 256, fmri_key: str = "fmri"
) -> SplitArrays:
    """Read every (unaugmented) sample of ``train``/``val``/``test`` from a set-up DataModule.

    ``fmri_key="fmri_clean"`` reads the noise-free windows of simulated data instead (the
    DataModule must be built with ``read_clean=True``): the SNR ceiling of a decoder.
    """
    fmri, index = [], []
    targets: dict[str, list[np.ndarray]] = {}
    for batch in datamodule.loader(split, batch_size=batch_size):
        if fmri_key not in batch:
            raise DataError(f"{datamodule.path}: batches have no '{fmri_key}' (read_clean=True?)")
        fmri.append(batch[fmri_key].numpy())
        index.append(batch["index"].numpy())
        for name in ("clip_image", "clip_text"):
            if name in batch:
                targets.setdefault(name, []).append(batch[name].numpy())
    if not targets:
        raise DataError(f"{datamodule.path}: no clip_image/clip_text: run `neurocine embed` first")
    rows = np.concatenate(index)
    file_split = "test" if split == "test" else "train"
    with h5py.File(datamodule.path, "r") as f:
        run = f[f"{file_split}/run"][()]
    return SplitArrays(
        fmri=np.concatenate(fmri),
        targets={k: np.concatenate(v) for k, v in targets.items()},
        runs=run[rows],
    )


def ridge_baseline(
    datamodule: Any,
    alphas: Sequence[float] | np.ndarray = DEFAULT_ALPHAS,
    splits: Sequence[str] = ("val", "test"),
    n_way: int = 50,
    num_trials: int = 100,
    seed: int = 0,
    backend: str = "numpy",
    fmri_key: str = "fmri",
) -> dict[str, dict[str, float]]:
    """Fit ridge on the training split of a set-up DataModule; score each target on ``splits``.

    Returns ``{"val/clip_image": {"top1_50way": …, …}, …}`` plus ``"alphas/<target>"`` with the
    median chosen alpha. ``fmri_key`` as in :func:`collect_split`.
    """
    train = collect_split(datamodule, "train", fmri_key=fmri_key)
    folds = run_folds(train.runs)
    x_train = ridge_features(train.fmri)
    evaluated = {split: collect_split(datamodule, split, fmri_key=fmri_key) for split in splits}
    results: dict[str, dict[str, float]] = {}
    for name, y_train in train.targets.items():
        model = fit_ridge(x_train, y_train, alphas, cv=folds, backend=backend)
        best = model.best_alphas_
        results[f"alphas/{name}"] = {"median": float(np.median(best))}
        for split, data in evaluated.items():
            pred = predict_ridge(model, ridge_features(data.fmri))
            results[f"{split}/{name}"] = retrieval_scores(
                pred, data.targets[name], n_way, num_trials, seed
            )
    return results
