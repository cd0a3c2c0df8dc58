"""Input checks shared by the metrics: array/tensor conversion and shape validation."""

from __future__ import annotations

import numpy as np
import torch

from neurocine.errors import DataError


def as_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """Return ``x`` as a torch tensor without copying when possible (numpy shares memory)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise DataError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


def video_pair(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, min_side: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two uint8 videos ``[N, F, H, W, 3]`` of equal shape; return them as tensors."""
    p, t = as_tensor(pred, "pred"), as_tensor(target, "target")
    if p.shape != t.shape:
        raise DataError(f"pred {tuple(p.shape)} and target {tuple(t.shape)} differ in shape")
    if p.ndim != 5 or p.shape[-1] != 3:
        raise DataError(f"videos must be [N, F, H, W, 3], got {tuple(p.shape)}")
    if p.dtype != torch.uint8 or t.dtype != torch.uint8:
        raise DataError(
            f"videos must be uint8 in 0..255, got {p.dtype} and {t.dtype}; "
            "convert floats with (x * 255).round().clip(0, 255) first"
        )
    if min(p.shape[2], p.shape[3]) < min_side:
        raise DataError(f"frames of {tuple(p.shape[2:4])} are smaller than {min_side} pixels")
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise DataError(f"videos {tuple(p.shape)} hold no frames")
    return p, t.to(p.device)


def embeddings_pair(
    query: np.ndarray | torch.Tensor, keys: np.ndarray | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two float embedding matrices ``[N, D]`` of equal shape; return float32 tensors."""
    q, k = as_tensor(query, "query"), as_tensor(keys, "keys")
    if q.ndim != 2 or q.shape != k.shape:
        raise DataError(f"query {tuple(q.shape)} and keys {tuple(k.shape)} must both be [N, D]")
    if q.shape[0] == 0:
        raise DataError("query and keys hold no rows")
    q = q.float()
    k = k.to(device=q.device, dtype=torch.float32)
    if not (torch.isfinite(q).all() and torch.isfinite(k).all()):
        raise DataError("query or keys contain NaN or inf")
    return q, k
