"""Stream a stimulus video into per-TR frame blocks (PyAV), without holding the movie in memory.

Sampling rule: stored frame ``j`` (``j = 0 … n_trs·F − 1``, ``F = tr_s · fps``) shows the movie
at ``t_j = start_s + j / fps``; it is the last decoded frame whose timestamp is ≤ ``t_j`` (for a
30 fps movie sampled at 3 fps: every 10th frame, as in MinD-Video's release). TR ``k`` holds
frames ``k·F … (k+1)·F − 1``, i.e. the clip ``[start_s + k·tr_s, start_s + (k+1)·tr_s)``.
Only the sampled frames are converted and resized (swscale, area interpolation), to exactly
``height × width`` (no crop).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from neurocine.errors import DataError

_TOL_S = 1e-3  # timestamps within 1 ms of a sample time count as at it


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (no frame decoded)."""

    path: Path
    width: int
    height: int
    fps: float | None
    duration_s: float | None


def _open(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise DataError(f"{path}: cannot read video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: no video stream")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Open ``path`` and read its size, frame rate and duration from the container."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate) if stream.average_rate else None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = None
        return VideoInfo(
            path, stream.codec_context.width, stream.codec_context.height, fps, duration
        )
    finally:
        container.close()


def sample_times(n_trs: int, tr_s: float, fps: float, start_s: float = 0.0) -> np.ndarray:
    """Movie times (s) of the stored frames: ``start_s + j / fps`` for ``n_trs · tr_s · fps`` j."""
    n = int(round(n_trs * tr_s * fps))
    return start_s + np.arange(n, dtype=np.float64) / fps


def iter_tr_frames(
    path: str | Path,
    *,
    n_trs: int,
    tr_s: float,
    fps: float,
    height: int,
    width: int,
    block_trs: int = 16,
    start_s: float = 0.0,
    progress=None,
) -> Iterator[np.ndarray]:
    """Decode ``path`` and yield frame blocks ``uint8 [b, F, height, width, 3]`` in TR order.

    Parameters
    ----------
    path : str or Path
        Video file readable by FFmpeg (PyAV).
    n_trs : int
        TRs to fill; the blocks together hold ``n_trs`` TRs.
    tr_s, fps : float
        TR length and stored frame rate; ``F = tr_s · fps`` must be whole.
    height, width : int
        Output frame size.
    block_trs : int, default=16
        TRs per yielded block (memory: ``block_trs · F · height · width · 3`` bytes).
    start_s : float, default=0.0
        Movie time shown at the start of TR 0.
    progress : tqdm-like, optional
        ``update(n)`` is called with the number of frames stored.

    Raises
    ------
    DataError
        Unreadable file or stream, or a movie that ends before the last TR (naming the file).
    """
    path = Path(path)
    per_tr = int(round(tr_s * fps))
    times = sample_times(n_trs, tr_s, fps, start_s)
    n = times.size
    block = np.empty((min(block_trs, n_trs) * per_tr, height, width, 3), dtype=np.uint8)
    filled = 0  # frames in ``block``
    j = 0  # next sample index
    to_rgb = _Resizer(height, width)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate) if stream.average_rate else None
        prev = None
        prev_t: float | None = None
        prev_rgb = None  # the converted ``prev``, when one sample already used it
        last_step = 1.0 / rate if rate else None
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = frame.time if frame.time is not None else (index / rate if rate else None)
                if t is None:
                    raise DataError(f"{path}: frames carry no timestamps and no frame rate")
                while j < n and prev is not None and t > times[j] + _TOL_S:
                    if prev_rgb is None:
                        prev_rgb = to_rgb(prev)
                    block[filled] = prev_rgb
                    filled, j = filled + 1, j + 1
                    if filled == block.shape[0]:
                        yield _shape(block, filled, per_tr)
                        filled = 0
                    if progress is not None:
                        progress.update(1)
                if j >= n:
                    break
                if prev_t is not None and t > prev_t:
                    last_step = t - prev_t
                prev, prev_t, prev_rgb = frame, t, None
            # The last frame covers the samples before its end (its time + one frame period).
            if prev is not None and prev_t is not None and j < n:
                end = prev_t + (last_step or 0.0)
                while j < n and times[j] < end - _TOL_S:
                    if prev_rgb is None:
                        prev_rgb = to_rgb(prev)
                    block[filled] = prev_rgb
                    filled, j = filled + 1, j + 1
                    if filled == block.shape[0]:
                        yield _shape(block, filled, per_tr)
                        filled = 0
                    if progress is not None:
                        progress.update(1)
        except av.FFmpegError as exc:
            raise DataError(f"{path}: cannot decode video ({exc})") from exc
        if j < n:
            have = 0.0 if prev_t is None else prev_t + (last_step or 0.0) - start_s
            raise DataError(
                f"{path}: video is shorter than its fMRI: {max(have, 0.0):.2f} s of movie from "
                f"{start_s:g} s, {n_trs} TRs × {tr_s:g} s need {n_trs * tr_s:.2f} s"
            )
        if filled:
            yield _shape(block, filled, per_tr)
    finally:
        container.close()


class _Resizer:
    """RGB conversion + area resize with one reused swscale context (per-frame setup is slow)."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        out = self.reformatter.reformat(
            frame, width=self.width, height=self.height, format="rgb24", interpolation="AREA"
        )
        return out.to_ndarray()


def _shape(block: np.ndarray, filled: int, per_tr: int) -> np.ndarray:
    """A copy of the filled part as ``[b, F, H, W, 3]`` (the buffer is reused)."""
    return block[:filled].reshape(filled // per_tr, per_tr, *block.shape[1:]).copy()
