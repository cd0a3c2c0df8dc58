"""The trivial predictor: every reconstruction is the mean training frame.

SSIM rewards blur: on the demo's simulated test clips the mean image alone scores SSIM 0.294,
above NeuroCine's 0.243 and ridge's 0.238 (``make demo``, docs/benchmarks.md), so every SSIM in
a results table needs this row beside it. The model ignores the fMRI entirely.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from neurocine.errors import DataError


class MeanFrame:
    """Predict the per-pixel mean of all training frames, for every frame of every clip.

    sklearn-style: :meth:`partial_fit` / :meth:`fit` learn ``mean_`` (float64 ``[H, W, 3]``),
    :meth:`predict` tiles it.
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._count = 0

    def partial_fit(self, frames: np.ndarray) -> MeanFrame:
        """Add a chunk of training clips, uint8 ``[N, F, H, W, 3]``."""
        if frames.ndim != 5 or frames.shape[-1] != 3:
            raise DataError(f"mean frame: frames {frames.shape}, expected [N, F, H, W, 3]")
        chunk = frames.reshape(-1, *frames.shape[2:]).sum(axis=0, dtype=np.float64)
        if self._sum is None:
            self._sum = chunk
        elif self._sum.shape != chunk.shape:
            raise DataError(f"mean frame: frame size {chunk.shape} != earlier {self._sum.shape}")
        else:
            self._sum += chunk
        self._count += frames.shape[0] * frames.shape[1]
        return self

    def fit(self, frames: np.ndarray | Iterable[np.ndarray]) -> MeanFrame:
        """Fit on one array of clips or on an iterable of chunks."""
        self._sum, self._count = None, 0
        chunks = [frames] if isinstance(frames, np.ndarray) else frames
        for chunk in chunks:
            self.partial_fit(chunk)
        if self._count == 0:
            raise DataError("mean frame: no training frames")
        return self

    @property
    def mean_(self) -> np.ndarray:
        if self._sum is None or self._count == 0:
            raise DataError("mean frame: call fit() first")
        return self._sum / self._count

    def predict(self, n_clips: int, n_frames: int) -> np.ndarray:
        """uint8 ``[n_clips, n_frames, H, W, 3]``, every frame the rounded mean frame."""
        frame = np.clip(np.rint(self.mean_), 0, 255).astype(np.uint8)
        return np.broadcast_to(frame, (n_clips, n_frames, *frame.shape)).copy()
