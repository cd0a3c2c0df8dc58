"""Generic 4D NIfTI runs + one stimulus video per run → subject HDF5 (docs/design.md §3).

Each run (``NiftiConfig.runs``) is a BOLD image and the video shown during it; runs with the
same ``split`` and ``segment`` are repeats of one stimulus. Voxels come from
``nilearn.maskers.NiftiMasker``: the given mask, or one computed (``mask_strategy``) from the
first training run — fitted on training data only. The masker detrends, filters and
standardises each run on its own (``t_r`` from the config or the header). Kept volume ``k`` of a
run (after ``drop_first``) is paired with the movie at ``[video_start_s + k·TR,
video_start_s + (k+1)·TR)``. Test repeats are averaged; training repeats per config.

``/voxels/index`` is the flattened (C-order) voxel index in the mask's grid, ``/voxels/coords``
the voxel centres through the mask's affine (MNI mm when the data are in MNI space), and
``/voxels/roi`` is ``"unknown"`` (no atlas is implied by a mask).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from neurocine.data.bold import RepeatMean
from neurocine.data.preprocess_config import frames_per_tr
from neurocine.data.schema import SubjectWriter
from neurocine.data.video import iter_tr_frames, probe_video
from neurocine.errors import ConfigError, DataError


@dataclass
class NiftiRun:
    """One BOLD run resolved on disk."""

    split: str
    segment: int
    bold: Path
    video: Path
    kept: slice  # the volumes left after drop_first / drop_last


def _load_4d(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(path)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if not isinstance(img, nib.Nifti1Image):  # Nifti2Image is a Nifti1Image
        raise DataError(f"{path}: expected a 4D NIfTI BOLD image, got a {type(img).__name__}")
    if img.ndim != 4:
        raise DataError(f"{path}: expected a 4D NIfTI BOLD image, got shape {img.shape}")
    return img


def plan_nifti(cfg: DictConfig, root: str | Path) -> tuple[dict, float]:
    """Resolve and check every run; return ``{(split, segment): [runs]}`` and the TR (s)."""
    root = Path(root)
    groups: dict[tuple[str, int], list[NiftiRun]] = defaultdict(list)
    grid = None
    tr_s = cfg.tr_s
    for spec in cfg.runs:
        bold, video = root / spec.bold, root / spec.video
        for path, what in ((bold, "BOLD run"), (video, "stimulus video")):
            if not path.is_file():
                raise DataError(f"{path}: missing {what} ({spec.split} segment {spec.segment})")
        img = _load_4d(bold)
        n = img.shape[3]
        if n - cfg.drop_first - cfg.drop_last < 1:
            raise DataError(
                f"{bold}: {n} volumes cannot lose drop_first={cfg.drop_first} + "
                f"drop_last={cfg.drop_last}"
            )
        kept = slice(cfg.drop_first, n - cfg.drop_last)
        run = NiftiRun(spec.split, int(spec.segment), bold, video, kept)
        if grid is None:
            grid = (img.shape[:3], img.affine, run.bold)
            if tr_s is None:
                tr_s = float(img.header.get_zooms()[3])
                if not tr_s > 0:
                    raise ConfigError(f"{run.bold}: no TR in the header (pixdim[4]); set tr_s")
        elif img.shape[:3] != grid[0] or not np.allclose(img.affine, grid[1], atol=1e-4):
            raise DataError(f"{run.bold}: grid {img.shape[:3]} / affine differ from {grid[2]}")
        group = groups[run.split, run.segment]
        if group and group[0].kept.stop - group[0].kept.start != n - cfg.drop_first - cfg.drop_last:
            raise DataError(f"{run.bold}: kept volumes differ from {group[0].bold} (same segment)")
        group.append(run)
        del img
    if not any(split == "train" for split, _ in groups):
        raise ConfigError("runs: at least one run must have split: train")
    return dict(groups), tr_s


def _masker(cfg: DictConfig, root: Path, tr_s: float):
    from nilearn.maskers import NiftiMasker

    m = cfg.masker
    mask = None
    if m.mask:
        mask = root / m.mask
        if not mask.is_file():
            raise DataError(f"{mask}: mask file not found")
        mask = str(mask)
    return NiftiMasker(
        mask_img=mask,
        mask_strategy=m.mask_strategy,
        standardize=False if m.standardize == "none" else m.standardize,
        detrend=m.detrend,
        high_pass=m.high_pass,
        low_pass=m.low_pass,
        smoothing_fwhm=m.smoothing_fwhm,
        t_r=tr_s,
    )


def _kept_img(run: NiftiRun):
    from nilearn.image import index_img

    return index_img(_load_4d(run.bold), run.kept)


def preprocess_nifti(
    cfg: DictConfig, root: str | Path, out: str | Path, progress: bool = True
) -> Path:
    """Convert NIfTI runs + videos to ``out``.

    Parameters
    ----------
    cfg : DictConfig
        A validated :class:`~neurocine.data.preprocess_config.NiftiConfig`.
    root : str or Path
        Folder that relative paths in ``cfg`` (runs, videos, mask) are resolved against.
    out : str or Path
        Subject HDF5; written under a temporary name and renamed at the end.
    progress : bool, default=True
        Show tqdm bars for files and frames.
    """
    root = Path(root)
    groups, tr_s = plan_nifti(cfg, root)
    per_tr = frames_per_tr(tr_s, cfg.video.fps)
    for (_, _), runs in groups.items():
        n_trs = runs[0].kept.stop - runs[0].kept.start
        for run in runs:
            info = probe_video(run.video)
            need = cfg.video_start_s + n_trs * tr_s
            if info.duration_s is not None and info.duration_s < need - 0.1:
                raise DataError(
                    f"{run.video}: video is shorter than its fMRI: {info.duration_s:.2f} s, "
                    f"{n_trs} kept TRs × {tr_s:g} s from {cfg.video_start_s:g} s need {need:.2f} s"
                )
    masker = _masker(cfg, root, tr_s)
    first_train = next(runs[0] for (split, _), runs in groups.items() if split == "train")
    masker.fit(_kept_img(first_train) if not cfg.masker.mask else None)
    mask_img = masker.mask_img_
    mask = np.asarray(mask_img.get_fdata()) > 0
    ijk = np.argwhere(mask)  # C order, the order NiftiMasker returns voxels in
    index = np.ravel_multi_index(ijk.T, mask.shape).astype(np.int64)
    coords = nib.affines.apply_affine(mask_img.affine, ijk).astype(np.float32)
    order = sorted(groups, key=lambda key: (key[0] != "train", key[1]))
    n_files = sum(len(groups[k]) for k in order)
    with (
        tqdm(total=n_files, desc="runs", unit="run", disable=not progress) as bar,
        SubjectWriter(
            out,
            dataset=cfg.dataset,
            subject=str(cfg.subject),
            tr_s=tr_s,
            fps=cfg.video.fps,
            frames_per_tr=per_tr,
            voxel_index=index,
            voxel_coords=coords,
            voxel_roi=["unknown"] * index.size,
            voxel_grid=(mask.shape, mask_img.affine),
        ) as writer,
    ):
        for split, segment in order:
            runs = groups[split, segment]
            if split == "test" or cfg.average_train_repeats:
                mean = RepeatMean(f"{split} segment {segment}")
                for run in runs:
                    mean.add(_transform(masker, run, index.size), str(run.bold))
                    bar.update(1)
                stored = [(segment, mean.mean(cfg.zscore_average), runs[0].video)]
            else:
                stored = []
                for run in runs:
                    stored.append(
                        (
                            segment * 100 + len(stored) + 1,
                            _transform(masker, run, index.size),
                            run.video,
                        )
                    )
                    bar.update(1)
            for run_id, fmri, video in stored:
                writer.append(split, fmri=fmri, run=np.full(len(fmri), run_id, np.int32))
                _append_frames(cfg, writer, split, video, len(fmri), tr_s, progress)
    return Path(out)


def _transform(masker, run: NiftiRun, n_voxels: int) -> np.ndarray:
    try:
        out = np.asarray(masker.transform(_kept_img(run)), dtype=np.float32)
    except DataError:
        raise
    except Exception as exc:  # nilearn raises ValueError/DimensionError on a mismatched image
        raise DataError(f"{run.bold}: NiftiMasker cannot transform it ({exc})") from exc
    if out.shape[1] != n_voxels:
        raise DataError(f"{run.bold}: {out.shape[1]} voxels after masking, expected {n_voxels}")
    return out


def _append_frames(cfg, writer, split, video, n_trs, tr_s, progress) -> None:
    v = cfg.video
    total = int(round(n_trs * tr_s * v.fps))
    with tqdm(
        total=total, desc=video.name, unit="frame", leave=False, disable=not progress
    ) as frames_bar:
        for block in iter_tr_frames(
            video,
            n_trs=n_trs,
            tr_s=tr_s,
            fps=v.fps,
            height=v.height,
            width=v.width,
            block_trs=v.block_trs,
            start_s=cfg.video_start_s,
            progress=frames_bar,
        ):
            writer.append(split, frames=block)
