"""Procedural video for the simulated dataset: coloured shapes moving over textured backgrounds.

A *scene* is one shot: a shape of one colour and size moving in a straight line (or standing
still) over a background texture, until the next cut. :func:`sample_scenes` draws the scenes of
a split, :func:`render` draws their frames (vectorised over frames with numpy), and
:func:`caption` writes the sentence a scene's attributes describe
("a large red triangle moving left over stripes").

The category of a scene is ``shape × colour`` (8 × 8 = 64 classes, ``label = shape * 8 +
colour``): enough classes for MinD-Video's 50-way evaluation, and both factors are visible in
every frame, so the category is recoverable from the clip alone. Categories are drawn balanced
(consecutive random permutations of the 64 classes), the other attributes independently.

Coordinates: positions are fractions of the frame (x to the right, y downwards), sizes are
fractions of the shorter side, speeds are in frame fractions per second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "crescent")
COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "orange", "white")
COLOUR_RGB = np.array(
    [
        (230, 45, 45),
        (50, 200, 70),
        (55, 90, 240),
        (240, 220, 50),
        (50, 215, 225),
        (220, 60, 215),
        (245, 145, 35),
        (245, 245, 245),
    ],
    dtype=np.float32,
)
BACKGROUNDS = ("stripes", "checker", "dots", "gradient", "waves", "plain")
BACKGROUND_PHRASE = (
    "stripes",
    "a checkerboard",
    "dots",
    "a gradient",
    "waves",
    "a plain background",
)
DIRECTIONS = (
    "still",
    "right",
    "up-right",
    "up",
    "up-left",
    "left",
    "down-left",
    "down",
    "down-right",
)
N_CLASSES = len(SHAPES) * len(COLOURS)

_RADIUS_RANGE = (0.12, 0.30)  # object radius, fraction of the shorter side
_SPEED_RANGE = (0.08, 0.30)  # frame fractions per second
_SMALL, _LARGE = 0.16, 0.25  # radius thresholds of the words "small" / "large"


@dataclass
class Scenes:
    """Attributes of consecutive scenes; every field has one row per scene (``S`` rows)."""

    start: np.ndarray  # int64 [S] first frame (index within the split)
    length: np.ndarray  # int64 [S] frames
    shape: np.ndarray  # int64 [S] index into SHAPES
    colour: np.ndarray  # int64 [S] index into COLOURS
    background: np.ndarray  # int64 [S] index into BACKGROUNDS
    direction: np.ndarray  # int64 [S] index into DIRECTIONS
    radius: np.ndarray  # float [S] fraction of the shorter side
    speed: np.ndarray  # float [S] frame fractions per second (0 when still)
    x0: np.ndarray  # float [S] centre at the scene's first frame, fraction of the width
    y0: np.ndarray  # float [S] … of the height
    vx: np.ndarray  # float [S] velocity, frame widths per second
    vy: np.ndarray  # float [S] frame heights per second (down is positive)
    angle: np.ndarray  # float [S] shape orientation, radians
    rgb: np.ndarray  # float [S, 3] object colour, 0–255
    bg_rgb1: np.ndarray  # float [S, 3] background colours, 0–255
    bg_rgb2: np.ndarray  # float [S, 3]
    bg_angle: np.ndarray  # float [S] texture orientation
    bg_freq: np.ndarray  # float [S] texture cycles per shorter side
    bg_phase: np.ndarray  # float [S]
    bg_vx: np.ndarray  # float [S] texture drift (camera pan), shorter sides per second
    bg_vy: np.ndarray  # float [S]

    @property
    def label(self) -> np.ndarray:
        """Category per scene: ``shape * len(COLOURS) + colour``."""
        return self.shape * len(COLOURS) + self.colour

    def per_frame(self, name: str) -> np.ndarray:
        """Field ``name`` repeated over each scene's frames (``[N, ...]``)."""
        return np.repeat(getattr(self, name), self.length, axis=0)

    def __len__(self) -> int:
        return int(self.start.shape[0])


def _durations(
    rng: np.random.Generator, n_frames: int, min_frames: int, mean_frames: float
) -> np.ndarray:
    """Scene lengths (frames) that tile ``n_frames``: ``min + Gamma(2)``, mean ``mean_frames``."""
    out: list[int] = []
    total = 0
    extra = max(mean_frames - min_frames, 0.0)
    while total < n_frames:
        length = min_frames + int(round(rng.gamma(2.0, extra / 2.0))) if extra > 0 else min_frames
        length = min(length, n_frames - total)
        if n_frames - total - length < min_frames and total + length < n_frames:
            length = n_frames - total  # no sliver shorter than the minimum at the run's end
        out.append(length)
        total += length
    return np.asarray(out, dtype=np.int64)


def sample_scenes(
    rng: np.random.Generator,
    run_frames: list[int],
    *,
    fps: float,
    min_frames: int,
    scene_mean_s: float,
    aspect: float = 1.0,
) -> Scenes:
    """Draw the scenes of a split: cuts at run starts and every ~``scene_mean_s`` seconds.

    Parameters
    ----------
    rng : numpy.random.Generator
    run_frames : list of int
        Frames of each run, in order; scenes never cross runs.
    fps : float
        Frame rate, to turn speeds into per-frame steps and fit paths into a scene.
    min_frames : int
        Shortest scene (one TR, so a TR spans at most one cut).
    scene_mean_s : float
        Mean scene duration in seconds.
    aspect : float, default=1.0
        ``width / height`` of the frame, to keep diagonal motion at 45°.
    """
    lengths = np.concatenate(
        [_durations(rng, n, min_frames, scene_mean_s * fps) for n in run_frames]
    )
    n = int(lengths.shape[0])
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    perms = np.concatenate([rng.permutation(N_CLASSES) for _ in range(-(-n // N_CLASSES))])[:n]
    shape, colour = np.divmod(perms, len(COLOURS))
    background = rng.integers(len(BACKGROUNDS), size=n)
    direction = rng.integers(len(DIRECTIONS), size=n)
    radius = rng.uniform(*_RADIUS_RANGE, size=n)
    speed = np.where(direction == 0, 0.0, rng.uniform(*_SPEED_RANGE, size=n))

    # Unit direction in frame fractions (x right, y down), 45° steps starting at "right".
    theta = (direction - 1) * (np.pi / 4)
    ux = np.where(direction == 0, 0.0, np.cos(theta))
    uy = np.where(direction == 0, 0.0, -np.sin(theta) * aspect)
    norm = np.hypot(ux, uy)
    ux, uy = (
        np.divide(ux, norm, where=norm > 0, out=np.zeros(n)),
        np.divide(uy, norm, where=norm > 0, out=np.zeros(n)),
    )
    # Keep the whole path inside the frame: slow down if the scene is too long for the speed.
    margin_x = radius / aspect if aspect >= 1 else radius
    margin_y = radius * aspect if aspect < 1 else radius
    duration = lengths / fps
    room_x = np.maximum(1 - 2 * margin_x, 0.0)
    room_y = np.maximum(1 - 2 * margin_y, 0.0)
    travel_x, travel_y = np.abs(ux) * speed * duration, np.abs(uy) * speed * duration
    shrink = np.minimum(
        1.0,
        np.minimum(
            np.divide(room_x, travel_x, where=travel_x > 0, out=np.full(n, np.inf)),
            np.divide(room_y, travel_y, where=travel_y > 0, out=np.full(n, np.inf)),
        ),
    )
    speed = speed * shrink
    vx, vy = ux * speed, uy * speed
    dx, dy = vx * duration, vy * duration
    lo_x, hi_x = margin_x - np.minimum(dx, 0), 1 - margin_x - np.maximum(dx, 0)
    lo_y, hi_y = margin_y - np.minimum(dy, 0), 1 - margin_y - np.maximum(dy, 0)
    x0 = lo_x + rng.uniform(size=n) * np.maximum(hi_x - lo_x, 0)
    y0 = lo_y + rng.uniform(size=n) * np.maximum(hi_y - lo_y, 0)

    rgb = COLOUR_RGB[colour] * rng.uniform(0.85, 1.0, size=(n, 1))
    # Muted backgrounds so that the object stays the most salient thing in the frame.
    bg_rgb1 = rng.uniform(10, 110, size=(n, 3))
    bg_rgb2 = np.clip(
        bg_rgb1 + rng.uniform(30, 90, size=(n, 1)) * rng.uniform(0.4, 1, (n, 3)), 0, 170
    )
    pan = rng.uniform(size=n) < 0.3
    pan_theta = rng.uniform(0, 2 * np.pi, size=n)
    pan_speed = np.where(pan, rng.uniform(0.05, 0.2, size=n), 0.0)
    return Scenes(
        start=start,
        length=lengths,
        shape=shape.astype(np.int64),
        colour=colour.astype(np.int64),
        background=background.astype(np.int64),
        direction=direction.astype(np.int64),
        radius=radius,
        speed=speed,
        x0=x0,
        y0=y0,
        vx=vx,
        vy=vy,
        angle=rng.uniform(-0.3, 0.3, size=n),
        rgb=rgb,
        bg_rgb1=bg_rgb1,
        bg_rgb2=bg_rgb2,
        bg_angle=rng.uniform(0, np.pi, size=n),
        bg_freq=rng.uniform(2.0, 5.0, size=n),
        bg_phase=rng.uniform(0, 2 * np.pi, size=n),
        bg_vx=pan_speed * np.cos(pan_theta),
        bg_vy=pan_speed * np.sin(pan_theta),
    )


def caption(scenes: Scenes, i: int) -> str:
    """The sentence that scene ``i``'s attributes describe."""
    r = scenes.radius[i]
    size = "small " if r < _SMALL else "large " if r > _LARGE else ""
    d = int(scenes.direction[i])
    motion = "standing still" if d == 0 else f"moving {DIRECTIONS[d]}"
    words = f"{size}{COLOURS[scenes.colour[i]]} {SHAPES[scenes.shape[i]]}"
    article = "an" if words[0] in "aeiou" else "a"
    return f"{article} {words} {motion} over {BACKGROUND_PHRASE[scenes.background[i]]}"


# --- shapes: gauge functions, 1 on the outline, < 1 inside, homogeneous in (u, v) -------------


def _gauge(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shape gauge on coordinates in units of the radius (``v`` points up)."""
    if shape == "circle":
        return np.hypot(u, v)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) / 0.8
    if shape == "diamond":
        return np.abs(u) + np.abs(v)
    if shape == "triangle":  # pointing up, circumradius 1, inradius 0.5
        out = -v / 0.5
        for a in (np.pi / 6, 5 * np.pi / 6):
            out = np.maximum(out, (u * np.cos(a) + v * np.sin(a)) / 0.5)
        return out
    if shape == "star":  # five points, inner radius 0.45
        rho, phi = np.hypot(u, v), np.arctan2(u, v)
        t = np.abs(((phi * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at the tips, 0 between
        return rho / (0.45 + 0.55 * t**2)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return np.minimum(np.maximum(au / 0.32, av), np.maximum(au, av / 0.32)) / 0.95
    if shape == "ring":
        return 0.72 + np.abs(np.hypot(u, v) - 0.72)
    if shape == "crescent":
        return np.maximum(np.hypot(u, v), 1.8 - np.hypot(u - 0.45, v - 0.15))
    raise ValueError(f"unknown shape {shape!r}")


def _texture(kind: str, u: np.ndarray, w: np.ndarray, freq: np.ndarray, phase: np.ndarray):
    """Texture mix ``m ∈ [0, 1]`` on rotated coordinates ``u, w`` (shorter sides)."""
    if kind == "stripes":
        return 0.5 + 0.5 * np.clip(3 * np.sin(2 * np.pi * freq * u + phase), -1, 1)
    if kind == "checker":
        s = np.sin(2 * np.pi * freq * u + phase) * np.sin(2 * np.pi * freq * w + phase)
        return 0.5 + 0.5 * np.clip(6 * s, -1, 1)
    if kind == "dots":
        fu = (freq * u + phase / (2 * np.pi)) % 1.0 - 0.5
        fw = (freq * w) % 1.0 - 0.5
        return np.clip((0.28 - np.hypot(fu, fw)) * 8, 0, 1)
    if kind == "gradient":
        return 0.5 + 0.5 * np.sin(np.pi * 0.5 * u + phase)
    if kind == "waves":
        return 0.5 + 0.5 * np.sin(2 * np.pi * freq * u + 1.5 * np.sin(2 * np.pi * w + phase))
    if kind == "plain":
        return 0.12 * (w - 0.5) ** 2
    raise ValueError(f"unknown background {kind!r}")


def render(scenes: Scenes, height: int, width: int, fps: float, chunk: int = 2048) -> np.ndarray:
    """Draw every frame of ``scenes``.

    Returns
    -------
    ndarray of uint8, shape (N, height, width, 3)
        ``N = scenes.length.sum()`` frames in order.
    """
    n = int(scenes.length.sum())
    side = float(min(height, width))
    frame_scene = np.repeat(np.arange(len(scenes)), scenes.length)
    t = (np.arange(n) - scenes.start[frame_scene]) / fps  # seconds since the scene's cut
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    cols = (np.arange(width, dtype=np.float32) + 0.5)[None, None, :]
    rows = (np.arange(height, dtype=np.float32) + 0.5)[None, :, None]
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        s = frame_scene[a:b]
        tt = t[a:b, None, None].astype(np.float32)

        def col(name: str, s=s) -> np.ndarray:
            return getattr(scenes, name)[s].astype(np.float32)

        # Background: texture in shorter-side units, drifting with the camera pan.
        xs = cols / side - col("bg_vx")[:, None, None] * tt
        ys = rows / side - col("bg_vy")[:, None, None] * tt
        ca, sa = np.cos(col("bg_angle"))[:, None, None], np.sin(col("bg_angle"))[:, None, None]
        u, w = xs * ca + ys * sa, -xs * sa + ys * ca
        mix = np.empty((b - a, height, width), dtype=np.float32)
        freq, phase = col("bg_freq")[:, None, None], col("bg_phase")[:, None, None]
        bg = scenes.background[s]
        for k, kind in enumerate(BACKGROUNDS):
            sel = np.flatnonzero(bg == k)
            if sel.size:
                mix[sel] = _texture(kind, u[sel], w[sel], freq[sel], phase[sel])
        c1, c2 = col("bg_rgb1")[:, None, None, :], col("bg_rgb2")[:, None, None, :]
        img = c1 + (c2 - c1) * mix[..., None]

        # Object: gauge of the shape around its moving centre, anti-aliased over one pixel.
        r_px = col("radius")[:, None, None] * side
        cx = (col("x0")[:, None, None] + col("vx")[:, None, None] * tt) * width
        cy = (col("y0")[:, None, None] + col("vy")[:, None, None] * tt) * height
        dx, dy = (cols - cx) / r_px, (cy - rows) / r_px  # dy points up
        ca, sa = np.cos(col("angle"))[:, None, None], np.sin(col("angle"))[:, None, None]
        pu, pv = dx * ca + dy * sa, -dx * sa + dy * ca
        gauge = np.empty((b - a, height, width), dtype=np.float32)
        shp = scenes.shape[s]
        for k, kind in enumerate(SHAPES):
            sel = np.flatnonzero(shp == k)
            if sel.size:
                gauge[sel] = _gauge(kind, pu[sel], pv[sel])
        alpha = np.clip(0.5 + (1 - gauge) * r_px, 0, 1)[..., None]
        img = img * (1 - alpha) + col("rgb")[:, None, None, :] * alpha
        out[a:b] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out
