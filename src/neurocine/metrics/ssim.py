"""SSIM of videos, computed exactly as MinD-Video's per-frame scikit-image call, but batched.

MinD-Video scores each frame with
``skimage.metrics.structural_similarity(p, t, data_range=255, channel_axis=-1)``. With
scikit-image's defaults that is: images cast to float64; local means, variances and covariance
over a 7×7 uniform window with the sample normalisation (×49/48); K1 = 0.01, K2 = 0.03; the SSIM
map cropped by (7 - 1) // 2 = 3 pixels on every side, averaged, and the three channel means
averaged. The crop keeps exactly the pixels whose window lies inside the image, so "valid"
7×7 window sums reproduce it without any border handling. We compute those sums exactly in
integers and the rest in float64 with torch, several frames at a time; the result equals
scikit-image's to float64 rounding (~1e-16).

``torchmetrics``' ``StructuralSimilarityIndexMeasure(gaussian_kernel=False, kernel_size=7,
data_range=255)`` is *not* the same number: it pads the image by reflection and averages the full
map (border included), and it uses the population (co)variances, so we do not use it here.
"""

from __future__ import annotations

import numpy as np
import torch

from neurocine.metrics._inputs import video_pair

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03
DATA_RANGE = 255.0

# Frame values per chunk: about one 256×256 RGB frame, so the working set stays in cache
# (memory traffic, not arithmetic, bounds this computation on a CPU).
_CHUNK_ELEMENTS = 1 << 18


def _box_sum(z: torch.Tensor) -> torch.Tensor:
    """Sums over every 7×7 window that lies inside the image ("valid"): [..., H - 6, W - 6]."""
    h = z.shape[-2] - WIN_SIZE + 1
    rows = z[..., 0:h, :].clone()
    for i in range(1, WIN_SIZE):
        rows += z[..., i : i + h, :]
    w = z.shape[-1] - WIN_SIZE + 1
    out = rows[..., 0:w].clone()
    for i in range(1, WIN_SIZE):
        out += rows[..., i : i + w]
    return out


def _frame_ssim(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """SSIM of uint8 frames ``[B, H, W, 3]`` → float64 ``[B]`` (mean over map and channels).

    Window sums of x, y, x², y², xy are integers below 49 · 255² and are computed exactly in
    int32; the rest follows scikit-image's formulas in float64.
    """
    x = p.permute(0, 3, 1, 2).to(torch.int32)
    y = t.permute(0, 3, 1, 2).to(torch.int32)
    n_px = WIN_SIZE * WIN_SIZE
    sums = _box_sum(torch.cat([x, y, x * x, y * y, x * y])).to(torch.float64) / n_px
    ux, uy, uxx, uyy, uxy = sums.split(x.shape[0])
    cov_norm = n_px / (n_px - 1)  # sample covariance, scikit-image's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (K1 * DATA_RANGE) ** 2
    c2 = (K2 * DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def video_ssim_per_video(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor
) -> np.ndarray:
    """SSIM of each video: the mean over its frames of the per-frame scikit-image SSIM.

    Parameters
    ----------
    pred, target : uint8 arrays or tensors of shape (N, F, H, W, 3)
        Reconstructed and ground-truth videos, 0..255, frames at least 7×7.

    Returns
    -------
    float64 ndarray of shape (N,).
    """
    p, t = video_pair(pred, target, min_side=WIN_SIZE)
    n, f, h, w, _ = p.shape
    p = p.reshape(n * f, h, w, 3)
    t = t.reshape(n * f, h, w, 3)
    step = max(1, _CHUNK_ELEMENTS // (h * w * 3))
    per_frame = torch.cat(
        [_frame_ssim(p[i : i + step], t[i : i + step]) for i in range(0, n * f, step)]
    )
    return per_frame.reshape(n, f).mean(dim=1).cpu().numpy()


def video_ssim(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Mean SSIM over all frames of all videos (docs/design.md §10; comparable with MinD-Video).

    Per frame ``skimage.metrics.structural_similarity(p, t, data_range=255, channel_axis=-1)``;
    every video has F frames, so this is also the mean of ``video_ssim_per_video``.

    Parameters
    ----------
    pred, target : uint8 arrays or tensors of shape (N, F, H, W, 3)

    Returns
    -------
    float, 1.0 for identical videos.
    """
    return float(video_ssim_per_video(pred, target).mean())
