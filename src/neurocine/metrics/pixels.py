"""Float frames in [0, 1] → uint8, by rounding or by MinD-Video's truncation.

MinD-Video writes its frames with ``(x * 255).astype(np.uint8)``, which truncates: a value
between two grey levels goes to the lower one, so its frames are on average half a grey level
darker than rounded ones (``np.rint``, what the rest of this project does). SSIM and PSNR move by
a little; to score as MinD-Video's published numbers were scored, truncate.
"""

from __future__ import annotations

import numpy as np
import torch

from neurocine.errors import ConfigError, DataError

UINT8_MODES = ("truncate", "round")


def to_uint8(x: np.ndarray | torch.Tensor, mode: str = "truncate") -> np.ndarray | torch.Tensor:
    """``x`` in [0, 1] (clipped) times 255, truncated or rounded to uint8, same array kind.

    Parameters
    ----------
    x : float ndarray or tensor, any shape
        Pixel values in [0, 1]; values outside are clipped first.
    mode : {"truncate", "round"}, default="truncate"
        ``truncate``: MinD-Video's ``(x * 255).astype(np.uint8)`` (floor, after clipping);
        ``round``: to the nearest grey level (halves to even, as ``np.rint``).

    Returns
    -------
    uint8 ndarray or tensor of the shape of ``x``.
    """
    if mode not in UINT8_MODES:
        raise ConfigError(f"sampling.uint8='{mode}': expected one of {UINT8_MODES}")
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise DataError(f"to_uint8: expected float pixel values in [0, 1], got {x.dtype}")
        scaled = x.clamp(0.0, 1.0) * 255.0
        return (scaled.floor() if mode == "truncate" else scaled.round()).to(torch.uint8)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"to_uint8: expected float pixel values in [0, 1], got {x.dtype}")
    scaled = np.clip(x, 0.0, 1.0) * 255.0
    return (np.floor(scaled) if mode == "truncate" else np.rint(scaled)).astype(np.uint8)
