"""Spatial masking and temporal interpolation exactly as docs/design.md §4."""

from __future__ import annotations

import math

import pytest
import torch

from neurocine.data.augment import spatial_mask, temporal_interpolate
from neurocine.errors import ConfigError

B, W, V = 3, 2, 61


def _x(seed=0, b=B):
    # Strictly positive, so a zero marks a masked voxel.
    return torch.rand(b, W, V, generator=torch.Generator().manual_seed(seed)) + 0.5


@pytest.mark.parametrize(("ratio", "patch"), [(0.25, 1), (0.5, 4), (0.75, 16), (1.0, 7)])
def test_mask_zeroes_exactly_round_ratio_patches(ratio, patch):
    x = _x(b=16)
    out = spatial_mask(x, ratio, patch, torch.Generator().manual_seed(1))
    n_patches = math.ceil(V / patch)
    zero = out == 0
    # Same voxels in every TR of a window.
    assert torch.equal(zero[:, 0], zero[:, 1])
    for sample in zero[:, 0]:
        per_patch = [sample[p * patch : (p + 1) * patch] for p in range(n_patches)]
        masked = [bool(z.all()) for z in per_patch]
        assert all(z.all() or not z.any() for z in per_patch)  # whole patches only
        assert sum(masked) == round(ratio * n_patches)
    # Unmasked voxels untouched; masks differ across samples.
    assert torch.equal(out[~zero], x[~zero])
    if ratio < 1:
        assert len({tuple(z.tolist()) for z in zero[:, 0]}) > 1


def test_mask_ratio_zero_is_identity_and_seeded():
    x = _x()
    assert spatial_mask(x, 0.0, 4) is x
    a = spatial_mask(x, 0.4, 4, torch.Generator().manual_seed(3))
    b = spatial_mask(x, 0.4, 4, torch.Generator().manual_seed(3))
    c = spatial_mask(x, 0.4, 4, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_interpolation_share_and_convex_blend():
    b = 4000
    x = torch.randn(b, W, V, generator=torch.Generator().manual_seed(0))
    x_next = torch.randn(b, W, V, generator=torch.Generator().manual_seed(1))
    out = temporal_interpolate(x, x_next, 0.3, torch.Generator().manual_seed(2))
    changed = (out != x).any(dim=-1)  # [B, W]
    share = changed.float().mean().item()
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / (b * W))
    # A changed TR is (1-λ)x + λx_next with one λ in (0, 1) for all its voxels.
    d, n = (out - x)[changed], (x_next - x)[changed]
    lam = (d * n).sum(-1) / (n * n).sum(-1)
    assert ((lam > 0) & (lam < 1)).all()
    torch.testing.assert_close(d, lam[:, None] * n, rtol=1e-4, atol=1e-5)
    assert lam.std() > 0.2  # λ varies across TRs (U(0,1) has std 0.29)


def test_interpolation_identity_seed_and_shape_checks():
    x, x_next = _x(0), _x(1)
    assert temporal_interpolate(x, x_next, 0.0) is x
    a = temporal_interpolate(x, x_next, 0.5, torch.Generator().manual_seed(5))
    b = temporal_interpolate(x, x_next, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="differ in shape"):
        temporal_interpolate(x, x_next[:, :1], 0.5)
    with pytest.raises(ConfigError, match="interp_ratio"):
        temporal_interpolate(x, x_next, 1.5)
    with pytest.raises(ConfigError, match="mask_ratio"):
        spatial_mask(x, -0.1)
