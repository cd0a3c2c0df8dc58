"""The classic linear reconstruction: ridge regression from an fMRI window to every pixel.

``x`` is the flattened window ``[N, W·V]`` (the same pairing as the models: DataModule windows),
``y`` the clip's pixels ``[N, F·H·W·3]`` scaled to [0, 1] and centred on the mean training clip.
With more voxels × TRs than training clips (the usual case) the dual form is the cheap one:
himalaya's ``KernelRidgeCV`` with a linear kernel solves it for all pixels at once (its
``RidgeCV`` when there are more clips than features) and picks the regularisation per pixel
by cross-validation over ``alphas`` (contiguous folds, so neighbouring, autocorrelated TRs
rarely straddle a fold). Predictions are clipped to 0…255.

The linear algebra (a few eigendecompositions of an N × N kernel) runs on one BLAS thread by
default: these problems are small, and a multi-threaded OpenBLAS next to torch's own threads on
a busy CPU spins instead of computing (20× slower measured on a shared 2-core machine).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from neurocine.errors import DataError

DEFAULT_ALPHAS = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)


class PixelRidge:
    """Ridge from fMRI windows to pixels (sklearn style: ``fit`` → ``predict``).

    Parameters
    ----------
    alphas : sequence of float, default=(1, 10, …, 1e6)
        Candidate regularisations; each pixel gets the best by cross-validation.
    cv : int, default=5
        Folds of the cross-validation (contiguous).
    blas_threads : int or None, default=1
        BLAS threads while fitting and predicting (threadpoolctl); None leaves them as they are.

    Attributes
    ----------
    model_ : himalaya.kernel_ridge.KernelRidgeCV or himalaya.ridge.RidgeCV
    mean_ : float32 ndarray of shape (F·H·W·3,), the mean training clip in [0, 1]
    clip_shape_ : tuple (F, H, W, 3)
    """

    def __init__(
        self, alphas: Sequence[float] = DEFAULT_ALPHAS, cv: int = 5, blas_threads: int | None = 1
    ) -> None:
        self.alphas = tuple(float(a) for a in alphas)
        self.cv = cv
        self.blas_threads = blas_threads

    def _threads(self):
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=self.blas_threads, user_api="blas")

    @staticmethod
    def _features(fmri: np.ndarray) -> np.ndarray:
        if fmri.ndim != 3:
            raise DataError(f"pixel ridge: fmri {fmri.shape}, expected [N, W, V]")
        return np.ascontiguousarray(fmri.reshape(fmri.shape[0], -1), dtype=np.float32)

    def fit(self, fmri: np.ndarray, frames: np.ndarray) -> PixelRidge:
        """Fit on fMRI windows ``[N, W, V]`` and their clips, uint8 ``[N, F, H, W, 3]``."""
        from himalaya.kernel_ridge import KernelRidgeCV

        x = self._features(fmri)
        if frames.ndim != 5 or frames.shape[-1] != 3 or frames.shape[0] != x.shape[0]:
            raise DataError(
                f"pixel ridge: frames {frames.shape} do not pair with fmri {fmri.shape} "
                "(expected [N, F, H, W, 3] with the same N)"
            )
        if x.shape[0] < 2 * self.cv:
            raise DataError(f"pixel ridge: {x.shape[0]} training clips is too few for cv={self.cv}")
        if not self.alphas or min(self.alphas) <= 0:
            raise DataError(f"pixel ridge: alphas {self.alphas} must be positive")
        y = frames.reshape(frames.shape[0], -1).astype(np.float32) / 255.0
        self.mean_ = y.mean(axis=0)
        self.clip_shape_ = tuple(frames.shape[1:])
        alphas = np.asarray(self.alphas)
        if x.shape[0] > x.shape[1]:  # more clips than features: the primal form is cheaper
            from himalaya.ridge import RidgeCV

            self.model_ = RidgeCV(alphas=alphas, cv=self.cv, force_cpu=True)
        else:
            self.model_ = KernelRidgeCV(
                alphas=alphas, kernel="linear", cv=self.cv, force_cpu=True, warn=False
            )
        with self._threads():
            self.model_.fit(x, y - self.mean_)
        return self

    def predict(self, fmri: np.ndarray) -> np.ndarray:
        """uint8 clips ``[N, F, H, W, 3]`` from fMRI windows ``[N, W, V]``."""
        if not hasattr(self, "model_"):
            raise DataError("pixel ridge: call fit() first")
        from himalaya.backend import get_backend

        backend = get_backend()
        with self._threads():
            y = backend.to_numpy(self.model_.predict(self._features(fmri))) + self.mean_
        pixels = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
        return pixels.reshape(-1, *self.clip_shape_)
