"""Embedding similarity of reconstructions and ground truth (e.g. CLIP image embeddings)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from neurocine.metrics._inputs import embeddings_pair


def clip_similarity(
    pred_emb: np.ndarray | torch.Tensor, gt_emb: np.ndarray | torch.Tensor
) -> float:
    """Mean cosine similarity between matching rows of two embedding matrices.

    Parameters
    ----------
    pred_emb, gt_emb : float arrays of shape (N, D)
        Embeddings (e.g. CLIP image embeddings) of the reconstructions and of the ground truth;
        they need not be normalised.

    Returns
    -------
    float in [-1, 1].
    """
    p, g = embeddings_pair(pred_emb, gt_emb)
    return float(F.cosine_similarity(p, g, dim=1).double().mean())
