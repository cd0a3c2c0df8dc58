"""NeuroCine's fMRI augmentations (docs/design.md §4): spatial masking and temporal interpolation.

Both act on a batch ``x`` of shape ``[B, W, V]`` (batch, TR window, voxels) in torch, on whatever
device the batch is on, and draw their randomness from an explicit ``torch.Generator`` so a seed
reproduces them and a resumed run continues the same draws.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange, repeat

from neurocine.errors import ConfigError


def _check_ratio(ratio: float, name: str) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"{name}={ratio}: must be within [0, 1]")


def spatial_mask(
    x: torch.Tensor,
    ratio: float,
    patch_size: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero a ratio of voxel patches, the same patches for every TR of a sample's window.

    Parameters
    ----------
    x : Tensor of shape (B, W, V)
        fMRI windows.
    ratio : float
        Share of patches zeroed per sample; exactly ``round(ratio * P)`` of the
        ``P = ceil(V / patch_size)`` patches of consecutive voxels.
    patch_size : int, default=1
        Voxels per patch. The encoder's patch size masks whole tokens (the paper's setting).
    generator : torch.Generator, optional
        Source of the draws (on ``x``'s device).

    Returns
    -------
    Tensor of shape (B, W, V)
        A masked copy; ``x`` itself is not modified. ``ratio == 0`` returns ``x``.
    """
    _check_ratio(ratio, "mask_ratio")
    if patch_size < 1:
        raise ConfigError(f"mask_patch_size={patch_size}: must be ≥ 1")
    n_batch, _, n_voxels = x.shape
    n_patches = math.ceil(n_voxels / patch_size)
    n_masked = round(ratio * n_patches)
    if n_masked == 0:
        return x
    # A random permutation per sample: its first n_masked entries are the masked patches.
    keys = torch.rand(n_batch, n_patches, generator=generator, device=x.device)
    masked = keys.argsort(dim=1)[:, :n_masked]
    keep = torch.ones(n_batch, n_patches, dtype=x.dtype, device=x.device)
    keep.scatter_(1, masked, 0.0)
    keep_voxels = repeat(keep, "b p -> b (p s)", s=patch_size)[:, :n_voxels]
    return x * rearrange(keep_voxels, "b v -> b 1 v")


def temporal_interpolate(
    x: torch.Tensor,
    x_next: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Replace randomly chosen TRs by a blend with the TR that follows them.

    Parameters
    ----------
    x : Tensor of shape (B, W, V)
        fMRI windows.
    x_next : Tensor of shape (B, W, V)
        ``x_next[:, k]`` is the TR after ``x[:, k]`` in the same run (``x[:, k]`` at a run's end).
    ratio : float
        Probability that each of the ``B * W`` TRs is replaced, independently.
    generator : torch.Generator, optional
        Source of the draws (on ``x``'s device).

    Returns
    -------
    Tensor of shape (B, W, V)
        Chosen TRs become ``(1 - lam) * x + lam * x_next`` with one ``lam ~ U(0, 1)`` per
        chosen TR; the others are unchanged. ``ratio == 0`` returns ``x``.
    """
    _check_ratio(ratio, "interp_ratio")
    if x.shape != x_next.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_next {tuple(x_next.shape)} differ in shape")
    if ratio == 0.0:
        return x
    n_batch, window, _ = x.shape
    draws = torch.rand(2, n_batch, window, 1, generator=generator, device=x.device, dtype=x.dtype)
    chosen, lam = draws[0] < ratio, draws[1]
    lam = torch.where(chosen, lam, torch.zeros_like(lam))
    return torch.lerp(x, x_next, lam)
