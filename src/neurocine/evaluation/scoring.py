"""Scoring videos against the ground truth: SSIM, PSNR, n-way top-1 under two protocols, CLIP
similarity and CLIP-pcc."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from neurocine.errors import DataError, NeuroCineError
from neurocine.metrics import (
    clip_pcc,
    frame_based_n_way_per_video,
    video_based_n_way_per_video,
    video_psnr_per_video,
    video_ssim_per_video,
)
from neurocine.models.clip_targets import (
    LOADERS,
    describe_clip,
    effective_preset,
    frame_embeddings,
    load_clip,
    reduce_frame_embeddings,
)

# n-way protocols: key suffix → true classes (None: evaluation.k_true, MinD-Video's 3).
NWAY_PROTOCOLS = {"": None, "_strict": 1}


@dataclass
class Scorer:
    """Scores videos against one ground truth; ground-truth features are computed once.

    Parameters
    ----------
    truth : uint8 ndarray of shape (N, F, H, W, 3)
    classifier : neurocine.evaluator.Classifier, optional
        None: no n-way metrics.
    clip : tuple (model, preprocess, frame_reduce), optional
        CLIP for the embedding similarity and CLIP-pcc; None: skipped.
    n_ways, num_trials, k_true, seed
        The n-way protocol (docs/design.md §10); each (row, metric) draws from a generator seeded
        with ``seed``, so a row's figure does not depend on which other rows are scored. Every
        n-way is scored twice: with ``k_true`` true classes (MinD-Video's) and with 1 (strict,
        key suffix ``_strict``).
    ssim : str, default="mindvideo"
        SSIM variant (:data:`neurocine.metrics.ssim.VARIANTS`).
    """

    truth: np.ndarray
    classifier: Any = None
    clip: tuple | None = None
    n_ways: Sequence[int] = (2, 50)
    num_trials: int = 100
    k_true: int = 3
    seed: int = 0
    ssim: str = "mindvideo"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._gt_frame = self._gt_video = self._gt_clip = None
        self.ways: dict[str, list[int]] = {"frame": [], "video": []}
        if self.classifier is not None:
            self._gt_frame, self._gt_video = self.classifier.probs(self.truth)
            for kind, probs in (("frame", self._gt_frame), ("video", self._gt_video)):
                if probs is None:
                    continue
                n_classes = probs.shape[-1]
                for n in self.n_ways:
                    if 2 <= n and n - 1 <= n_classes - self.k_true:
                        self.ways[kind].append(int(n))
                    else:
                        self.notes.append(
                            f"{kind}-based {n}-way skipped: the classifier has {n_classes} "
                            f"classes, {n}-way needs ≥ {n - 1 + self.k_true}"
                        )
        if self.clip is not None:
            self._gt_frames = self._clip_frames(self.truth)
            self._gt_clip = reduce_frame_embeddings(self._gt_frames, self.clip[2])

    def _clip_frames(self, videos: np.ndarray, batch: int = 32) -> torch.Tensor:
        """CLIP embedding of every frame ``[N, F, D]``, a few clips at a time."""
        model, preprocess, _ = self.clip
        chunks = [
            frame_embeddings(model, preprocess, videos[i : i + batch])
            for i in range(0, len(videos), batch)
        ]
        return torch.cat(chunks)

    @staticmethod
    def _clip_pcc(frames: torch.Tensor) -> dict[str, np.ndarray]:
        if frames.shape[1] < 2:
            return {}
        return {
            "clip_pcc": clip_pcc(frames, "adjacent").numpy(),
            "clip_pcc_all": clip_pcc(frames, "all").numpy(),
        }

    def truth_per_clip(self) -> dict[str, np.ndarray]:
        """The ground truth's own CLIP-pcc per clip (the ceiling of a faithful reconstruction)."""
        return self._clip_pcc(self._gt_frames) if self.clip is not None else {}

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed))

    def per_clip(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        """Each clip's SSIM, PSNR and n-way scores of ``pred`` (uint8, the shape of ``truth``).

        Every row's n-way trials use the same random numbers (one seed): common random numbers,
        so two rows can be compared clip by clip (``paired_differences``).
        """
        if pred.shape != self.truth.shape:
            raise DataError(f"predictions {pred.shape} and ground truth {self.truth.shape} differ")
        out = {
            "ssim": video_ssim_per_video(pred, self.truth, self.ssim),
            "psnr": video_psnr_per_video(pred, self.truth),
        }
        if self.classifier is not None:
            frame_probs, video_probs = self.classifier.probs(pred)
            for suffix, k_true in NWAY_PROTOCOLS.items():
                k = self.k_true if k_true is None else k_true
                for n in self.ways["frame"]:
                    out[f"frame_{n}way{suffix}"] = frame_based_n_way_per_video(
                        frame_probs, self._gt_frame, n, self.num_trials, 1, k, self._generator()
                    ).numpy()
                for n in self.ways["video"]:
                    out[f"video_{n}way{suffix}"] = video_based_n_way_per_video(
                        video_probs, self._gt_video, n, self.num_trials, 1, k, self._generator()
                    ).numpy()
        if self.clip is not None:
            frames = self._clip_frames(pred)
            ours = reduce_frame_embeddings(frames, self.clip[2])
            out["clip_similarity"] = (
                F.cosine_similarity(ours, self._gt_clip, dim=1).double().numpy()
            )
            out.update(self._clip_pcc(frames))
        return out

    @staticmethod
    def summarize(per_clip: dict[str, np.ndarray]) -> dict[str, float]:
        """Mean and ``*_std`` over clips of each per-clip metric."""
        out = {}
        with np.errstate(invalid="ignore"):  # identical clips: PSNR inf, its spread undefined
            for key, values in per_clip.items():
                values = np.asarray(values, dtype=np.float64)
                out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
        return out

    def score(self, pred: np.ndarray) -> dict[str, float]:
        """All metrics of ``pred`` (uint8, the shape of ``truth``); ``*_std`` over clips."""
        return self.summarize(self.per_clip(pred))


def scoring_clip(cfg: DictConfig, notes: list[str]) -> tuple[tuple | None, str | None]:
    """CLIP for the similarity and CLIP-pcc as ``(Scorer.clip, its name)``; ``(None, None)`` when
    off.

    ``evaluation.clip`` (a preset name, or a local directory such as CLIP ViT-L/14 on real data)
    or, when None, the run's ``clip``. A CLIP that cannot be loaded is a note in ``notes``, not an
    error.
    """
    if not cfg.evaluation.clip_similarity:
        return None, None
    clip_cfg = cfg.clip
    choice = cfg.evaluation.clip
    if choice is not None:
        preset = str(choice) if str(choice) in LOADERS else "pretrained"
        source = None if preset == str(choice) else str(choice)
        clip_cfg = OmegaConf.merge(cfg.clip, {"preset": preset, "pretrained": source})
    try:
        model, preprocess, _ = load_clip(clip_cfg)
    except NeuroCineError as exc:
        notes.append(f"CLIP similarity and CLIP-pcc skipped: {exc}")
        return None, None
    name = describe_clip(clip_cfg)
    if effective_preset(clip_cfg) == "random":
        notes.append(f"CLIP {name} is randomly initialised: its similarity is not semantic")
    return (model, preprocess, str(clip_cfg.frame_reduce)), name
