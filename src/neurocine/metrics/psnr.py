"""PSNR of videos: torchmetrics' ``peak_signal_noise_ratio`` per frame, averaged.

Averaging: PSNR is computed for each frame over its H × W × 3 values (data_range = 255), then
averaged over frames (per video) and over videos — the mean of per-frame PSNRs in dB, as
scikit-image's ``peak_signal_noise_ratio`` per frame would give, not the PSNR of the pooled
squared error. A frame identical to its target has infinite PSNR, and so has any mean that
includes it.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from neurocine.metrics._inputs import video_pair

DATA_RANGE = 255.0
_CHUNK_ELEMENTS = 1 << 22


def video_psnr_per_video(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor
) -> np.ndarray:
    """PSNR of each video in dB: the mean over its frames of the per-frame PSNR.

    Parameters
    ----------
    pred, target : uint8 arrays or tensors of shape (N, F, H, W, 3)

    Returns
    -------
    float64 ndarray of shape (N,).
    """
    p, t = video_pair(pred, target)
    n, f, h, w, _ = p.shape
    p = p.reshape(n * f, h, w, 3)
    t = t.reshape(n * f, h, w, 3)
    step = max(1, _CHUNK_ELEMENTS // (h * w * 3))
    per_frame = torch.cat(
        [
            peak_signal_noise_ratio(
                p[i : i + step].to(torch.float64),
                t[i : i + step].to(torch.float64),
                data_range=DATA_RANGE,
                reduction="none",
                dim=(1, 2, 3),
            )
            for i in range(0, n * f, step)
        ]
    )
    return per_frame.reshape(n, f).mean(dim=1).cpu().numpy()


def video_psnr(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Mean over all frames of all videos of the per-frame PSNR in dB (data_range = 255)."""
    return float(video_psnr_per_video(pred, target).mean())
