"""Writing videos and image grids: mp4, GIF and PNG, all written atomically.

The one place that encodes frames for everyone: ``neurocine reconstruct`` (a video per clip and
the frame grid), the demo (the animated comparison grid) and the notebooks (GIFs shown inline).
Frames are uint8 ``[F, H, W, 3]``.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np

from neurocine.errors import CheckpointError
from neurocine.fileio import atomic_path


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad ``[F, H, W, 3]`` by edge replication to even H and W (yuv420p needs them)."""
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames


def write_mp4(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """H.264 mp4 of uint8 ``frames [F, H, W, 3]`` with PyAV (written atomically)."""
    import av  # PyAV loads FFmpeg's libraries: only when a video is written

    path = Path(path)
    frames = _even(np.ascontiguousarray(frames))
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "17"}
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode())
    return path


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """A looping GIF of uint8 ``frames [F, H, W, 3]`` (for ``IPython.display.Image``)."""
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(round(1000 / max(fps, 0.1))),
        loop=0,
    )
    return buffer.getvalue()


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """:func:`gif_bytes` written atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(gif_bytes(frames, fps))
    return path


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """A uint8 ``[H, W, 3]`` image as PNG (written atomically)."""
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def tile(tiles: np.ndarray, scale: int = 2, gap: int = 2, group: int = 1) -> np.ndarray:
    """Lay out ``tiles [..., R, C, H, W, 3]`` as one image ``[..., H', W', 3]``.

    Tiles are nearest-neighbour upscaled by ``scale``; white gaps of ``gap`` pixels separate the
    columns and every ``group`` rows (rows within a group touch). Leading axes (e.g. frames of an
    animated grid) are kept.
    """
    *lead, n_rows, n_cols, h, w, _ = tiles.shape
    h2, w2 = h * scale, w * scale
    height = gap + (n_rows // group) * (group * h2 + gap) + (n_rows % group) * h2
    canvas = np.full((*lead, height, gap + n_cols * (w2 + gap), 3), 255, dtype=np.uint8)
    up = tiles.repeat(scale, axis=-3).repeat(scale, axis=-2)
    for r in range(n_rows):
        top = gap + (r // group) * (group * h2 + gap) + (r % group) * h2
        for c in range(n_cols):
            left = gap + c * (w2 + gap)
            canvas[..., top : top + h2, left : left + w2, :] = up[..., r, c, :, :, :]
    return canvas


def grid_image(truth: np.ndarray, recon: np.ndarray, scale: int = 2, gap: int = 2) -> np.ndarray:
    """uint8 ``[rows, cols, 3]``: per sample a ground-truth row above a reconstruction row.

    ``truth, recon : [N, F, H, W, 3]``; frames run left to right, nearest-neighbour upscaled by
    ``scale``, white gaps between frames and between samples.
    """
    pairs = np.stack([truth, recon], axis=1)  # [N, 2, F, H, W, 3]
    return tile(pairs.reshape(-1, *pairs.shape[2:]), scale, gap, group=2)


def grid_frames(rows: list[np.ndarray], scale: int = 3, gap: int = 2) -> np.ndarray:
    """Animated comparison grid: ``rows`` of clips ``[N, F, H, W, 3]`` → ``[F, H', W', 3]``.

    Row r, column i shows clip i of ``rows[r]`` (e.g. ground truth, reconstruction, oracle),
    nearest-neighbour upscaled by ``scale``, separated by white gaps.
    """
    if any(r.shape != rows[0].shape for r in rows):
        raise CheckpointError(f"grid rows differ in shape: {[r.shape for r in rows]}")
    tiles = np.stack(rows).transpose(2, 0, 1, 3, 4, 5)  # [F, R, N, H, W, 3]
    return tile(tiles, scale, gap)


def write_grid(path: str | Path, truth: np.ndarray, recon: np.ndarray) -> Path:
    """PNG of :func:`grid_image` (written atomically)."""
    return write_png(path, grid_image(truth, recon))
