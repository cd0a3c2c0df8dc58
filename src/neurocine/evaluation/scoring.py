"""Scoring videos against the ground truth: SSIM, PSNR, n-way top-1, CLIP similarity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from neurocine.errors import DataError, NeuroCineError
from neurocine.metrics import (
    clip_similarity,
    frame_based_n_way_per_video,
    video_based_n_way_per_video,
    video_psnr_per_video,
    video_ssim_per_video,
)
from neurocine.models.clip_targets import describe_clip, image_embeddings, load_clip


@dataclass
class Scorer:
    """Scores videos against one ground truth; ground-truth features are computed once.

    Parameters
    ----------
    truth : uint8 ndarray of shape (N, F, H, W, 3)
    classifier : neurocine.evaluator.Classifier, optional
        None: no n-way metrics.
    clip : tuple (model, preprocess, frame_reduce), optional
        CLIP for the embedding similarity; None: skipped.
    n_ways, num_trials, k_true, seed
        The n-way protocol (docs/design.md §10); each (row, metric) draws from a generator seeded
        with ``seed``, so a row's figure does not depend on which other rows are scored.
    """

    truth: np.ndarray
    classifier: Any = None
    clip: tuple | None = None
    n_ways: Sequence[int] = (2, 50)
    num_trials: int = 100
    k_true: int = 3
    seed: int = 0
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
            self._gt_clip = self._clip_embed(self.truth)

    def _clip_embed(self, videos: np.ndarray, batch: int = 32) -> torch.Tensor:
        model, preprocess, reduce = self.clip
        chunks = [
            image_embeddings(model, preprocess, videos[i : i + batch], reduce)
            for i in range(0, len(videos), batch)
        ]
        return torch.cat(chunks)

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
            "ssim": video_ssim_per_video(pred, self.truth),
            "psnr": video_psnr_per_video(pred, self.truth),
        }
        if self.classifier is not None:
            frame_probs, video_probs = self.classifier.probs(pred)
            for n in self.ways["frame"]:
                out[f"frame_{n}way"] = frame_based_n_way_per_video(
                    frame_probs, self._gt_frame, n, self.num_trials, 1, self.k_true,
                    self._generator(),
                ).numpy()  # fmt: skip
            for n in self.ways["video"]:
                out[f"video_{n}way"] = video_based_n_way_per_video(
                    video_probs, self._gt_video, n, self.num_trials, 1, self.k_true,
                    self._generator(),
                ).numpy()  # fmt: skip
        return out

    def summarize(self, pred: np.ndarray, per_clip: dict[str, np.ndarray]) -> dict[str, float]:
        """Mean and ``*_std`` over clips of ``per_clip``, plus the CLIP similarity of ``pred``."""
        out = {}
        with np.errstate(invalid="ignore"):  # identical clips: PSNR inf, its spread undefined
            for key, values in per_clip.items():
                values = np.asarray(values, dtype=np.float64)
                out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
        if self._gt_clip is not None:
            out["clip_similarity"] = clip_similarity(self._clip_embed(pred), self._gt_clip)
        return out

    def score(self, pred: np.ndarray) -> dict[str, float]:
        """All metrics of ``pred`` (uint8, the shape of ``truth``); ``*_std`` over clips."""
        return self.summarize(pred, self.per_clip(pred))


def scoring_clip(cfg: DictConfig, notes: list[str]) -> tuple[tuple | None, str | None]:
    """CLIP for the similarity metric as ``(Scorer.clip, its name)``; ``(None, None)`` when off.

    A CLIP that cannot be loaded is a note in ``notes``, not an error.
    """
    if not cfg.evaluation.clip_similarity:
        return None, None
    try:
        model, preprocess, _ = load_clip(cfg.clip)
    except NeuroCineError as exc:
        notes.append(f"CLIP similarity skipped: {exc}")
        return None, None
    name = describe_clip(cfg.clip)
    if cfg.clip.preset == "random":
        notes.append(f"CLIP {name} is randomly initialised: its similarity is not semantic")
    return (model, preprocess, str(cfg.clip.frame_reduce)), name
