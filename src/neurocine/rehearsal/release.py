"""Miniature raw datasets (cc2017 tree, NIfTI runs, coded videos): converter tests, rehearsal.

Videos are "coded": every source frame shows its own frame number and the video's id as
black/white blocks (a 4 × 4 grid of bits), so a stored frame tells which movie and which
moment it came from, through a lossy codec and a resize. fMRI runs carry a planted signal: the
responses of the ``planted`` grayordinates at kept volume ``k`` follow a per-segment stimulus
feature ``feature[k]`` (shared by all repeats), on top of a baseline, a linear drift and noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import av
import nibabel as nib
import numpy as np
from nibabel.cifti2 import BrainModelAxis, SeriesAxis

GRID = 4  # bits grid: GRID × GRID blocks
FRAME_BITS = 8  # low bits: source frame number; next 4 bits: video id
SRC_H, SRC_W = 64, 80  # source frame size (output 16 × 20 = a 4× area downscale)


def coded_frame(index: int, video_id: int, height: int = SRC_H, width: int = SRC_W) -> np.ndarray:
    """RGB frame whose blocks spell ``index`` (8 bits) and ``video_id`` (4 bits)."""
    code = (index & 0xFF) | ((video_id & 0xF) << FRAME_BITS)
    bh, bw = height // GRID, width // GRID
    img = np.zeros((height, width, 3), dtype=np.uint8)
    for bit in range(GRID * GRID):
        if code >> bit & 1:
            r, c = divmod(bit, GRID)
            img[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = 255
    return img


def read_code(frame: np.ndarray) -> tuple[int, int]:
    """``(frame index, video id)`` spelled by a (possibly resized) coded frame."""
    h, w = frame.shape[:2]
    bh, bw = h / GRID, w / GRID
    code = 0
    for bit in range(GRID * GRID):
        r, c = divmod(bit, GRID)
        block = frame[
            int(r * bh + bh / 4) : int((r + 1) * bh - bh / 4),
            int(c * bw + bw / 4) : int((c + 1) * bw - bw / 4),
        ]
        if block.mean() > 127:
            code |= 1 << bit
    return code & 0xFF, code >> FRAME_BITS


def write_coded_video(path: Path, *, seconds: float, fps: int, video_id: int) -> Path:
    """An H.264 mp4 of ``seconds · fps`` coded frames (written with PyAV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = SRC_W, SRC_H, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for i in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(coded_frame(i, video_id), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def brain_models(n_left: int, n_right: int, n_subcortical: int) -> BrainModelAxis:
    """CortexLeft + CortexRight surface models (on a 2× larger mesh) + a thalamus voxel model."""
    rng = np.random.default_rng(1)
    left = np.sort(rng.choice(2 * n_left, n_left, replace=False))
    right = np.sort(rng.choice(2 * n_right, n_right, replace=False))
    mask = np.zeros((4, 5, 3), dtype=bool)
    mask.flat[rng.choice(mask.size, n_subcortical, replace=False)] = True
    affine = np.array([[2.0, 0, 0, -10], [0, 2, 0, -20], [0, 0, 2, 4], [0, 0, 0, 1]])
    return (
        BrainModelAxis.from_surface(left, 2 * n_left, "CortexLeft")
        + BrainModelAxis.from_surface(right, 2 * n_right, "CortexRight")
        + BrainModelAxis.from_mask(mask, name="ThalamusLeft", affine=affine)
    )


SUBCORTICAL = (  # the standard 91,282-grayordinate order (names as in hcp_utils.struct)
    ("accumbens_left", "ACCUMBENS_LEFT"),
    ("accumbens_right", "ACCUMBENS_RIGHT"),
    ("amygdala_left", "AMYGDALA_LEFT"),
    ("amygdala_right", "AMYGDALA_RIGHT"),
    ("brainStem", "BRAIN_STEM"),
    ("caudate_left", "CAUDATE_LEFT"),
    ("caudate_right", "CAUDATE_RIGHT"),
    ("cerebellum_left", "CEREBELLUM_LEFT"),
    ("cerebellum_right", "CEREBELLUM_RIGHT"),
    ("diencephalon_left", "DIENCEPHALON_VENTRAL_LEFT"),
    ("diencephalon_right", "DIENCEPHALON_VENTRAL_RIGHT"),
    ("hippocampus_left", "HIPPOCAMPUS_LEFT"),
    ("hippocampus_right", "HIPPOCAMPUS_RIGHT"),
    ("pallidum_left", "PALLIDUM_LEFT"),
    ("pallidum_right", "PALLIDUM_RIGHT"),
    ("putamen_left", "PUTAMEN_LEFT"),
    ("putamen_right", "PUTAMEN_RIGHT"),
    ("thalamus_left", "THALAMUS_LEFT"),
    ("thalamus_right", "THALAMUS_RIGHT"),
)


def standard_brain_models() -> BrainModelAxis:
    """The HCP 91,282-grayordinate layout: hcp-utils' cortex (fs_LR 32k) + subcortical models.

    The cortical vertices are the real ones; subcortical structures have their real sizes but
    made-up voxel positions on the MNI 2 mm grid (nothing here reads them).
    """
    import hcp_utils as hcp

    info = hcp.vertex_info
    bm = BrainModelAxis.from_surface(info.grayl, info.num_meshl, "CortexLeft")
    bm = bm + BrainModelAxis.from_surface(info.grayr, info.num_meshr, "CortexRight")
    affine = np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
    shape = (91, 109, 91)
    box = np.zeros(shape, dtype=bool)
    box[25:66, 30:80, 20:50] = True
    pool = np.flatnonzero(box.ravel())
    start = 0
    for hcp_name, cifti_name in SUBCORTICAL:
        sl = hcp.struct[hcp_name]
        n = (sl.stop or 91_282) - sl.start
        mask = np.zeros(shape, dtype=bool)
        mask.flat[pool[start : start + n]] = True
        start += n
        bm = bm + BrainModelAxis.from_mask(mask, f"CIFTI_STRUCTURE_{cifti_name}", affine)
    return bm


def write_dtseries(path: Path, data: np.ndarray, bm: BrainModelAxis, tr_s: float = 2.0) -> Path:
    """A CIFTI-2 dense time series ``[n_volumes, n_grayordinates]``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Cifti2Image(data.astype(np.float32), header=(SeriesAxis(0, tr_s, data.shape[0]), bm))
    img.nifti_header.set_intent("ConnDenseSeries")
    img.to_filename(path)
    return path


def planted_run(
    feature: np.ndarray,
    n_columns: int,
    planted: np.ndarray,
    drop_first: int,
    drop_last: int,
    rng: np.random.Generator,
    noise: float = 0.1,
) -> np.ndarray:
    """``[drop_first + T + drop_last, n_columns]``: kept volume k of ``planted`` = feature[k]."""
    n_kept = feature.size
    n = drop_first + n_kept + drop_last
    data = rng.standard_normal((n, n_columns))
    data[drop_first : drop_first + n_kept, planted] = feature[
        :, None
    ] + noise * rng.standard_normal((n_kept, planted.size))
    drift = np.linspace(0, 3, n)[:, None] * rng.uniform(0.5, 1.5, n_columns)
    return 1000 + 50 * rng.standard_normal(n_columns) + drift + data


@dataclass
class Cc2017Tree:
    """A miniature cc2017 release and what was planted in it."""

    root: Path
    subject: int
    overrides: list[str]
    features: dict[tuple[str, int], np.ndarray]  # (split, segment) → [n_kept]
    video_ids: dict[tuple[str, int], int]
    planted: np.ndarray  # grayordinate indices with the signal (cortex only)
    planted_subcortical: np.ndarray  # subcortical grayordinates with the same signal
    n_cortex: int
    n_kept: int
    src_fps: int
    files: dict[str, Path] = field(default_factory=dict)  # run name → CIFTI path


def build_cc2017_tree(
    root: Path,
    *,
    subject: int = 1,
    train_segments: tuple[int, ...] = (1, 2, 3, 4, 5, 6),
    test_segments: tuple[int, ...] = (1, 2),
    test_repeats: tuple[int, ...] = (1, 2, 3),
    n_kept: int = 12,
    n_left: int = 40,
    n_right: int = 37,
    n_subcortical: int = 11,
    src_fps: int = 10,
    seed: int = 0,
    standard: bool = False,
) -> Cc2017Tree:
    """Write ``stimuli/`` and ``subject{N}/fmri/...`` in the release's layout.

    Runs alternate between ``n_kept + 5`` volumes (drop 1 + 4) and ``n_kept + 6`` (drop 2 + 4),
    the miniature of the release's 245/246-volume rule; ``overrides`` set the matching config.
    ``standard=True`` writes the real 91,282-grayordinate layout instead of the tiny one.
    """
    rng = np.random.default_rng(seed)
    if standard:
        bm = standard_brain_models()
        n_cortex = 59_412
    else:
        bm = brain_models(n_left, n_right, n_subcortical)
        n_cortex = n_left + n_right
    planted = np.array([2, 5, 11, 17, 30, 41, 50, 66, 70])
    planted_sub = np.array([n_cortex + 1, n_cortex + 6])
    columns = np.concatenate([planted, planted_sub])
    tree = Cc2017Tree(root, subject, [], {}, {}, planted, planted_sub, n_cortex, n_kept, src_fps)
    video_id = 0
    for split, segments, repeats in (
        ("train", train_segments, (1, 2)),
        ("test", test_segments, test_repeats),
    ):
        prefix = "seg" if split == "train" else "test"
        for seg in segments:
            feature = rng.standard_normal(n_kept)
            tree.features[split, seg] = feature
            tree.video_ids[split, seg] = video_id
            write_coded_video(
                root / "stimuli" / f"{prefix}{seg}.mp4",
                seconds=n_kept * 2.0,
                fps=src_fps,
                video_id=video_id,
            )
            video_id += 1
            for rep in repeats:
                drop_first = 1 if rep % 2 else 2
                data = planted_run(feature, len(bm), columns, drop_first, 4, rng)
                name = f"{prefix}{seg}_{rep}"
                path = (
                    root
                    / f"subject{subject}"
                    / "fmri"
                    / f"{prefix}{seg}"
                    / "cifti"
                    / f"{name}_Atlas.dtseries.nii"
                )
                tree.files[name] = write_dtseries(path, data, bm)
    tree.overrides = [
        f"volume_cuts=[{{volumes: {n_kept + 5}, drop_first: 1, drop_last: 4}}, "
        f"{{volumes: {n_kept + 6}, drop_first: 2, drop_last: 4}}]",
        f"train.segments=[{','.join(map(str, train_segments))}]",
        f"test.segments=[{','.join(map(str, test_segments))}]",
        f"test.repeats=[{','.join(map(str, test_repeats))}]",
        "video.fps=2",
        "video.height=16",
        "video.width=20",
        "video.block_trs=3",
    ]
    return tree


def nifti_run(
    feature: np.ndarray,
    mask: np.ndarray,
    planted: np.ndarray,
    drop_first: int,
    drop_last: int,
    rng: np.random.Generator,
    affine: np.ndarray,
) -> nib.Nifti1Image:
    """A 4D BOLD image on ``mask.shape``: flattened voxels ``planted`` follow ``feature``."""
    flat = planted_run(feature, mask.size, planted, drop_first, drop_last, rng)
    flat[:, ~mask.ravel()] = 0.0  # outside the brain
    data = flat.T.reshape(*mask.shape, -1).astype(np.float32)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = 2.0
    return img
