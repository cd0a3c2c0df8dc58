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

Other papers on cc2017 score SSIM differently; ``variant`` picks one by name (:data:`VARIANTS`):

- ``mindvideo`` (default): the call above; MinD-Video and Mind-Animator.
- ``gray_gaussian``: the frames made grey with ``skimage.color.rgb2gray`` (on [0, 1]), then
  ``structural_similarity(p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1.0)``: Gaussian 11×11 weights (σ 1.5, truncated at 3.5 σ), population
  (co)variances, the map cropped by 5 pixels — Wang et al.'s original SSIM on luminance.
- ``neurons``: NEURONS' exact call, the one above plus ``channel_axis=-1``. On a 2-D grey image
  that makes scikit-image treat each *column* as a channel, so every window is a 1-D Gaussian
  window down a column (cropped by 5 rows) and the score is the mean over columns. Its numbers
  are NEURONS' published ones, not those of ``gray_gaussian`` (usually somewhat lower).

The Gaussian variants use the same exact "valid" window sums, with separable Gaussian weights in
float64, and equal scikit-image's results to float64 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from neurocine.errors import ConfigError, DataError
from neurocine.metrics._inputs import video_pair

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03
DATA_RANGE = 255.0
VARIANTS = ("mindvideo", "gray_gaussian", "neurons")

# scikit-image's Gaussian weights: sigma 1.5 truncated at 3.5 sigma, an 11-tap window.
SIGMA = 1.5
_RADIUS = int(3.5 * SIGMA + 0.5)
GAUSSIAN_WIN = 2 * _RADIUS + 1
# skimage.color.rgb2gray's luminance weights (ITU-R BT.709).
GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)

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


def _gaussian_taps(device: torch.device) -> torch.Tensor:
    """scipy's 1-D Gaussian kernel (sigma 1.5, radius 5), normalised: float64 ``[11]``."""
    x = torch.arange(-_RADIUS, _RADIUS + 1, dtype=torch.float64, device=device)
    taps = torch.exp(-0.5 / SIGMA**2 * x * x)
    return taps / taps.sum()


def _gaussian_valid(z: torch.Tensor, columns_only: bool) -> torch.Tensor:
    """Gaussian-weighted means over every window inside ``z [B, H, W]`` ("valid").

    Down the rows always ([B, H - 10, W]); across the columns too unless ``columns_only``.
    """
    taps = _gaussian_taps(z.device)
    h = z.shape[-2] - GAUSSIAN_WIN + 1
    out = sum(taps[i] * z[..., i : i + h, :] for i in range(GAUSSIAN_WIN))
    if columns_only:
        return out
    w = z.shape[-1] - GAUSSIAN_WIN + 1
    return sum(taps[i] * out[..., i : i + w] for i in range(GAUSSIAN_WIN))


def _frame_ssim_gray_gaussian(p: torch.Tensor, t: torch.Tensor, columns_only: bool) -> torch.Tensor:
    """Grey Gaussian SSIM of uint8 frames ``[B, H, W, 3]`` → float64 ``[B]`` (module docstring).

    ``columns_only``: NEURONS' 1-D windows down each column; else 2-D windows.
    """
    weights = torch.tensor(GRAY_WEIGHTS, dtype=torch.float64, device=p.device)
    x = (p.to(torch.float64) / 255.0) @ weights
    y = (t.to(torch.float64) / 255.0) @ weights
    ux, uy, uxx, uyy, uxy = _gaussian_valid(
        torch.cat([x, y, x * x, y * y, x * y]), columns_only
    ).split(x.shape[0])
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy  # population (co)variances
    c1, c2 = K1**2, K2**2  # data_range 1
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2))


def _variant_fn(variant: str):
    """The per-frame function and the smallest frame side of an SSIM variant."""
    if variant == "mindvideo":
        return _frame_ssim, (WIN_SIZE, WIN_SIZE)
    if variant == "gray_gaussian":
        return lambda p, t: _frame_ssim_gray_gaussian(p, t, False), (GAUSSIAN_WIN, GAUSSIAN_WIN)
    if variant == "neurons":
        return lambda p, t: _frame_ssim_gray_gaussian(p, t, True), (GAUSSIAN_WIN, 1)
    raise ConfigError(f"evaluation.ssim='{variant}': expected one of {VARIANTS}")


def video_ssim_per_video(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    variant: str = "mindvideo",
) -> np.ndarray:
    """SSIM of each video: the mean over its frames of the per-frame scikit-image SSIM.

    Parameters
    ----------
    pred, target : uint8 arrays or tensors of shape (N, F, H, W, 3)
        Reconstructed and ground-truth videos, 0..255, frames at least 7×7 (11×11 for
        ``gray_gaussian``, 11 rows for ``neurons``).
    variant : {"mindvideo", "gray_gaussian", "neurons"}, default="mindvideo"
        Whose SSIM (module docstring).

    Returns
    -------
    float64 ndarray of shape (N,).
    """
    frame_fn, (min_h, min_w) = _variant_fn(variant)
    p, t = video_pair(pred, target, min_side=WIN_SIZE)
    n, f, h, w, _ = p.shape
    if h < min_h or w < min_w:
        raise DataError(f"frames of {(h, w)} are smaller than {min_h}×{min_w} ({variant} SSIM)")
    p = p.reshape(n * f, h, w, 3)
    t = t.reshape(n * f, h, w, 3)
    step = max(1, _CHUNK_ELEMENTS // (h * w * 3))
    per_frame = torch.cat(
        [frame_fn(p[i : i + step], t[i : i + step]) for i in range(0, n * f, step)]
    )
    return per_frame.reshape(n, f).mean(dim=1).cpu().numpy()


def video_ssim(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    variant: str = "mindvideo",
) -> float:
    """Mean SSIM over all frames of all videos (docs/design.md §10; comparable with MinD-Video).

    Per frame ``skimage.metrics.structural_similarity(p, t, data_range=255, channel_axis=-1)``
    with the default ``variant``; every video has F frames, so this is also the mean of
    ``video_ssim_per_video``.

    Parameters
    ----------
    pred, target : uint8 arrays or tensors of shape (N, F, H, W, 3)
    variant : {"mindvideo", "gray_gaussian", "neurons"}, default="mindvideo"

    Returns
    -------
    float, 1.0 for identical videos.
    """
    return float(video_ssim_per_video(pred, target, variant).mean())
