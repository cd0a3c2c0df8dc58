"""Simulated visual cortex: voxel placement in MNI space, ROI labels, pRFs and spatial kernels.

Voxels are drawn from the cortical shell (≤ 8 mm deep) of nilearn's bundled MNI152 brain mask
(2 mm grid, as ``nilearn.datasets.load_mni152_brain_mask(resolution=2)``; no download) behind
y = −45 mm, between z = −20 and 30 mm, leaving out the cerebellum below the occipital pole.
Posterior voxels are drawn more densely, so neighbours are a few mm apart and share signal.
``/voxels/index`` is the flattened (C-order) index into that 99 × 117 × 95 volume.

ROI labels follow a *hierarchy coordinate* ``h`` (mm from the occipital pole and the calcarine
midline): V1, V2, V3 as ``h`` grows, then V4 / FFA (ventral), MT (lateral, anterior) and LO
(lateral occipital). The population receptive field of each voxel (centre and size in visual
degrees normalised to the frame's half-side) varies smoothly with position: eccentricity with
``h``, polar angle with height (dorsal → lower field), and each hemisphere sees the opposite
half of the frame. pRFs grow with eccentricity and up the hierarchy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import sparse

ROIS = ("V1", "V2", "V3", "V4", "LO", "MT", "FFA")
# Per ROI: pRF size at the fovea (frame half-sides), then the gains of the retinotopic channels
# (contrast, motion, colour) and of the semantic attributes (shape, colour, motion, scene).
_PRF_BASE = {"V1": 0.06, "V2": 0.09, "V3": 0.13, "V4": 0.2, "LO": 0.35, "MT": 0.4, "FFA": 0.45}
_RET_GAIN = {
    "V1": (1.0, 0.4, 0.6),
    "V2": (1.0, 0.5, 0.6),
    "V3": (0.8, 0.8, 0.5),
    "V4": (0.6, 0.3, 1.2),
    "LO": (1.0, 0.5, 0.5),
    "MT": (0.3, 1.5, 0.1),
    "FFA": (0.8, 0.2, 0.7),
}
_SEM_GAIN = {
    "V1": (0.2, 0.3, 0.2, 0.2),
    "V2": (0.2, 0.3, 0.2, 0.2),
    "V3": (0.4, 0.3, 0.4, 0.3),
    "V4": (0.5, 1.0, 0.2, 0.3),
    "LO": (1.0, 0.6, 0.3, 0.4),
    "MT": (0.2, 0.1, 1.0, 0.3),
    "FFA": (1.0, 0.5, 0.1, 0.5),
}
# Relative chance of a voxel of each ROI being semantic (higher areas far more often).
_SEMANTIC_WEIGHT = {"V1": 0.05, "V2": 0.1, "V3": 0.3, "V4": 1.0, "LO": 2.0, "MT": 2.0, "FFA": 2.0}
_MAX_DEPTH_MM = 8.0


@dataclass
class Cortex:
    """The simulated voxels (``V`` rows everywhere)."""

    index: np.ndarray  # int64 [V] flattened index into the 2 mm MNI152 volume
    coords: np.ndarray  # float32 [V, 3] MNI mm
    roi: np.ndarray  # str [V]
    prf_x: np.ndarray  # float [V] pRF centre, frame half-sides (right positive)
    prf_y: np.ndarray  # float [V] (up positive)
    prf_sigma: np.ndarray  # float [V]
    semantic: np.ndarray  # bool [V] tuned to scene attributes rather than local features


@lru_cache(maxsize=1)
def mni_mask():
    """nilearn's bundled MNI152 brain mask on the 2 mm grid (99 × 117 × 95; cached).

    Every other voxel of the 1 mm mask: the same grid and, for this template, the same voxels as
    ``load_mni152_brain_mask(resolution=2)``, without its slow resampling.
    """
    import nibabel as nib
    from nilearn.datasets import load_mni152_brain_mask

    fine = load_mni152_brain_mask(resolution=1)
    affine = fine.affine.copy()
    affine[:3, :3] *= 2
    data = np.asarray(fine.dataobj)[::2, ::2, ::2].astype(np.int8)
    return nib.Nifti1Image(data, affine)


@lru_cache(maxsize=1)
def candidate_voxels() -> tuple[np.ndarray, np.ndarray]:
    """Flattened indices and MNI coordinates of the posterior cortical shell (cached).

    Returns
    -------
    index : ndarray of int64, shape (C,)
    coords : ndarray of float64, shape (C, 3)
    """
    from scipy import ndimage

    img = mni_mask()
    mask = np.asarray(img.dataobj).astype(bool)
    voxel_mm = float(abs(img.affine[0, 0]))
    depth = ndimage.distance_transform_edt(mask) * voxel_mm
    ijk = np.argwhere(mask & (depth <= _MAX_DEPTH_MM))
    xyz = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    x, y, z = xyz.T
    keep = (y <= -45) & (z >= -20) & (z <= 30) & ~((np.abs(x) < 20) & (z < -8))
    index = np.ravel_multi_index(tuple(ijk[keep].T), mask.shape).astype(np.int64)
    return index, xyz[keep]


def hierarchy(coords: np.ndarray) -> np.ndarray:
    """Distance (mm) up the visual hierarchy: from the pole, and away from the midline."""
    x, y = coords[:, 0], coords[:, 1]
    return np.maximum(y + 102.0, 0.0) + 0.6 * np.maximum(np.abs(x) - 10.0, 0.0)


def roi_labels(coords: np.ndarray) -> np.ndarray:
    """ROI name per voxel from its MNI position (a smooth caricature of the real maps)."""
    x, y, z = coords.T
    h = hierarchy(coords)
    roi = np.full(coords.shape[0], "LO", dtype=object)
    roi[(z < -6) & (h >= 30)] = "V4"
    roi[(z < -6) & (y > -70) & (np.abs(x) >= 24)] = "FFA"
    roi[(z >= -6) & (np.abs(x) >= 38) & (y > -76)] = "MT"
    roi[h < 30] = "V3"
    roi[h < 20] = "V2"
    roi[h < 11] = "V1"
    return roi


def build_cortex(
    rng: np.random.Generator, n_voxels: int, semantic_fraction: float, min_sigma: float
) -> Cortex:
    """Place ``n_voxels`` voxels and give each an ROI, a pRF and a semantic flag.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_voxels : int
        ``V``; at most the number of candidate voxels.
    semantic_fraction : float
        Fraction of voxels (exactly ``round(f · V)``) tuned to scene attributes.
    min_sigma : float
        Smallest pRF size (frame half-sides), about the feature grid's spacing.
    """
    cand_index, cand_xyz = candidate_voxels()
    # Gumbel top-k: sampling without replacement, denser towards the occipital pole.
    logw = -(cand_xyz[:, 1] + 100.0) / 25.0
    keys = logw + rng.gumbel(size=logw.shape[0])
    pick = np.sort(np.argpartition(-keys, n_voxels - 1)[:n_voxels])
    index, coords = cand_index[pick], cand_xyz[pick]
    roi = roi_labels(coords)
    x, z = coords[:, 0], coords[:, 2]

    ecc = np.clip(hierarchy(coords) / 50.0, 0.0, 1.15) + rng.normal(0, 0.03, n_voxels)
    theta = np.arctan2(z - 4.0, np.abs(x) + 6.0)
    side = np.where(x < 0, 1.0, -1.0)  # left hemisphere sees the right half of the frame
    prf_x = side * np.abs(ecc) * np.cos(theta) + rng.normal(0, 0.02, n_voxels)
    prf_y = -np.abs(ecc) * np.sin(theta) + rng.normal(0, 0.02, n_voxels)
    base = np.array([_PRF_BASE[r] for r in roi])
    prf_sigma = np.maximum(base + 0.2 * np.abs(ecc), min_sigma) * rng.uniform(0.85, 1.15, n_voxels)

    n_sem = int(round(semantic_fraction * n_voxels))
    weight = np.array([_SEMANTIC_WEIGHT[r] for r in roi])
    keys = np.log(weight) + rng.gumbel(size=n_voxels)
    semantic = np.zeros(n_voxels, dtype=bool)
    if n_sem:
        semantic[np.argpartition(-keys, n_sem - 1)[:n_sem]] = True
    return Cortex(
        index=index,
        coords=coords.astype(np.float32),
        roi=roi,
        prf_x=prf_x,
        prf_y=prf_y,
        prf_sigma=prf_sigma,
        semantic=semantic,
    )


def retinotopic_gains(roi: np.ndarray) -> np.ndarray:
    """``[V, 3]`` ROI gains of the contrast, motion and colour channels."""
    return np.array([_RET_GAIN[r] for r in roi])


def semantic_gains(roi: np.ndarray) -> np.ndarray:
    """``[V, 4]`` ROI gains of shape, colour, motion and scene (background, size) tuning."""
    return np.array([_SEM_GAIN[r] for r in roi])


def gaussian_kernel(coords: np.ndarray, fwhm_mm: float, normalise: str) -> sparse.csr_matrix:
    """Gaussian weights over the voxels' MNI distances, a sparse ``[V, V]`` float32 matrix.

    Weights below 1e-3 of the peak (beyond ~3.7 σ) are dropped, so the matrix stays sparse
    for any ``V``.

    Parameters
    ----------
    coords : ndarray of shape (V, 3)
    fwhm_mm : float
        Full width at half maximum; 0 gives the identity.
    normalise : {"sum", "l2"}
        ``"sum"``: rows sum to 1 (a smoothing of drives that keeps their scale);
        ``"l2"``: rows have unit L2 norm, so smoothing unit white noise keeps unit variance.
    """
    from scipy.spatial import cKDTree

    if normalise not in ("sum", "l2"):
        raise ValueError(f"normalise must be 'sum' or 'l2', got {normalise!r}")
    n = coords.shape[0]
    if fwhm_mm <= 0:
        return sparse.identity(n, dtype=np.float32, format="csr")
    sigma = fwhm_mm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    tree = cKDTree(np.asarray(coords, dtype=np.float64))
    dist = tree.sparse_distance_matrix(
        tree, sigma * np.sqrt(2 * np.log(1e3)), output_type="coo_matrix"
    )
    k = sparse.coo_matrix(
        (np.exp(-(dist.data**2) / (2 * sigma**2)), (dist.row, dist.col)), shape=(n, n)
    ).tocsr()
    k = k + sparse.identity(n, format="csr") - sparse.diags(k.diagonal())  # self-distance is 0
    rows = (
        np.asarray(k.sum(1)).ravel()
        if normalise == "sum"
        else np.sqrt(np.asarray(k.multiply(k).sum(1)).ravel())
    )
    return (sparse.diags(1.0 / rows) @ k).astype(np.float32).tocsr()
