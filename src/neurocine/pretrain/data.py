"""Pretraining clips: the simulated world's videos and captions, without any fMRI.

The shipped tiny CLIP, VAE and video prior are trained on clips drawn from the same procedural
world as ``neurocine simulate`` (:mod:`neurocine.data.render`: same frame size, frame rate, TR
and scene statistics), with another seed and more clips. Scenes are sampled in runs and cut into
TR-long clips of ``F = tr_s · fps`` frames, exactly like a subject file's ``/<split>/frames``;
clips that span a cut are dropped, so every clip has one caption and one category.

:func:`pretrain_clips` renders a set; :func:`cached_clips` keeps it as an ``.npz`` in a cache
folder (``$NEUROCINE_CACHE`` or ``~/.cache/neurocine/pretrain``), keyed by every parameter, so the
three recipes and the benchmark render it once. Nothing here is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurocine.data import render
from neurocine.errors import ConfigError
from neurocine.fileio import atomic_path

TRS_PER_RUN = 40  # scene sampling restarts (a cut) every run, as in the subject files
CACHE_ENV = "NEUROCINE_CACHE"
_ATTRS = ("shape", "colour", "background", "direction")


@dataclass
class PretrainClips:
    """``N`` clips of ``F`` frames with their caption and generating attributes."""

    frames: np.ndarray  # uint8 [N, F, H, W, 3]
    caption: list[str]  # [N]
    label: np.ndarray  # int64 [N] shape * 8 + colour (the simulated category)
    attributes: dict[str, np.ndarray]  # int64 [N] each: shape, colour, background, direction

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def subset(self, index: np.ndarray | slice) -> PretrainClips:
        """The clips at ``index`` (a view where numpy allows)."""
        idx = np.arange(len(self))[index]
        return PretrainClips(
            frames=self.frames[idx],
            caption=[self.caption[i] for i in idx],
            label=self.label[idx],
            attributes={k: v[idx] for k, v in self.attributes.items()},
        )


def frames_per_clip(tr_s: float, fps: float) -> int:
    """``tr_s · fps`` when it is a whole number of frames (as the simulator requires)."""
    frames = tr_s * fps
    if abs(frames - round(frames)) > 1e-6 or round(frames) < 1:
        raise ConfigError(f"pretrain data: tr_s × fps = {frames:g} is not a whole number")
    return int(round(frames))


def pretrain_clips(
    n_clips: int,
    seed: int,
    height: int = 32,
    width: int = 32,
    fps: float = 3.0,
    tr_s: float = 2.0,
    scene_mean_s: float = 8.0,
) -> PretrainClips:
    """Render ``n_clips`` single-scene clips of the simulated world.

    Parameters
    ----------
    n_clips : int
        Clips to return (runs are drawn until there are enough).
    seed : int
        Seeds a ``numpy.random.Generator``; the same arguments give the same clips.
    height, width, fps, tr_s, scene_mean_s
        The world's parameters (:class:`~neurocine.config.SimulationConfig`'s meaning).

    Returns
    -------
    PretrainClips
        ``frames`` of shape ``(n_clips, tr_s · fps, height, width, 3)``.
    """
    if n_clips < 1:
        raise ConfigError(f"pretrain data: n_clips={n_clips}: must be at least 1")
    f = frames_per_clip(tr_s, fps)
    rng = np.random.default_rng(seed)
    # About 1 − tr_s / scene_mean_s of the clips hold no cut; draw runs with some margin.
    keep_rate = max(0.2, 1.0 - tr_s / scene_mean_s)
    n_runs = int(np.ceil(n_clips / (TRS_PER_RUN * keep_rate) * 1.1)) + 1
    frames, captions, labels, attrs = [], [], [], {k: [] for k in _ATTRS}
    total = 0
    while total < n_clips:
        scenes = render.sample_scenes(
            rng,
            [TRS_PER_RUN * f] * n_runs,
            fps=fps,
            min_frames=f,
            scene_mean_s=scene_mean_s,
            aspect=width / height,
        )
        frame_scene = np.repeat(np.arange(len(scenes)), scenes.length).reshape(-1, f)
        whole = np.flatnonzero(frame_scene[:, 0] == frame_scene[:, -1])[: n_clips - total]
        clip_scene = frame_scene[whole, 0]
        video = render.render(scenes, height, width, fps).reshape(-1, f, height, width, 3)
        frames.append(video[whole])
        captions += [render.caption(scenes, int(s)) for s in clip_scene]
        labels.append(scenes.label[clip_scene])
        for k in _ATTRS:
            attrs[k].append(getattr(scenes, k)[clip_scene])
        total += whole.size
        n_runs = max(1, int(np.ceil((n_clips - total) / (TRS_PER_RUN * keep_rate))))
    return PretrainClips(
        frames=np.concatenate(frames),
        caption=captions,
        label=np.concatenate(labels).astype(np.int64),
        attributes={k: np.concatenate(v).astype(np.int64) for k, v in attrs.items()},
    )


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$NEUROCINE_CACHE``, else ``~/.cache/neurocine/pretrain``."""
    if path:
        return Path(path)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "neurocine" / "pretrain"


def cached_clips(cache: str | os.PathLike | None = None, **params) -> PretrainClips:
    """:func:`pretrain_clips` (``**params``) through an ``.npz`` cache keyed by the parameters."""
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir(cache) / f"clips-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return PretrainClips(
                frames=z["frames"],
                caption=[str(c) for c in z["caption"]],
                label=z["label"],
                attributes={k: z[k] for k in _ATTRS},
            )
    clips = pretrain_clips(**params)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                frames=clips.frames,
                caption=np.asarray(clips.caption),
                label=clips.label,
                **clips.attributes,
            )
    return clips
