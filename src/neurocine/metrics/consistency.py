"""Temporal consistency of a video: CLIP-pcc, the cosine similarity of its frames' embeddings.

NeuroClips reports the mean cosine similarity between the CLIP image embeddings of adjacent
frames, ``mean_f cos(e_f, e_{f+1})`` (``pairs="adjacent"``); NEURONS averages over every ordered
pair of distinct frames, ``mean_{f != g} cos(e_f, e_g)`` (``pairs="all"``, its
``clip_score_frame``: the cosine matrix with a zeroed diagonal, summed, over F (F - 1)).
Mind-Animator and SemVideo use the adjacent form but set a video's value to 0 when its
video-level CLIP score is at most 0.6; that gate is not applied here.

A still video scores 1: the metric rewards no motion, so read it beside the ground truth's own
value and a static baseline's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from neurocine.errors import ConfigError, DataError
from neurocine.metrics._inputs import as_tensor

PAIRS = ("adjacent", "all")


def clip_pcc(frame_embeddings: np.ndarray | torch.Tensor, pairs: str = "adjacent") -> torch.Tensor:
    """Each video's mean cosine similarity between the embeddings of its frames.

    Parameters
    ----------
    frame_embeddings : float array of shape (N, F, D), F >= 2
        Per-frame image embeddings (e.g. CLIP); they need not be normalised.
    pairs : {"adjacent", "all"}, default="adjacent"
        ``adjacent``: frames f and f + 1 (NeuroClips); ``all``: every pair f != g (NEURONS).

    Returns
    -------
    float64 tensor of shape (N,), in [-1, 1]; 1 for a video whose frames embed alike.
    """
    if pairs not in PAIRS:
        raise ConfigError(f"clip_pcc pairs='{pairs}': expected one of {PAIRS}")
    e = as_tensor(frame_embeddings, "frame_embeddings")
    if e.ndim != 3 or e.shape[0] == 0 or e.shape[2] == 0:
        raise DataError(f"frame_embeddings must be [N, F, D] with N, D >= 1, got {tuple(e.shape)}")
    if e.shape[1] < 2:
        raise DataError(f"clip_pcc needs at least 2 frames per video, got {e.shape[1]}")
    if not e.dtype.is_floating_point:
        raise DataError(f"frame_embeddings must be float, got {e.dtype}")
    e = e.to(torch.float64)
    if not torch.isfinite(e).all():
        raise DataError("frame_embeddings contain NaN or inf")
    e = F.normalize(e, dim=-1)
    n_frames = e.shape[1]
    if pairs == "adjacent":
        return (e[:, :-1] * e[:, 1:]).sum(dim=-1).mean(dim=1)
    gram = e @ e.transpose(1, 2)
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return off_diagonal / (n_frames * (n_frames - 1))
