"""Stage 1's loss as small pure functions (docs/design.md §5).

CLIP's symmetric InfoNCE between fMRI embeddings and CLIP targets:
``L = ½ [CE(s·Z Eᵀ, I) + CE(s·E Zᵀ, I)]`` with ``Z``, ``E`` L2-normalised rows and ``s`` the
inverse temperature.

Repeated targets (TRs of one scene share a caption) need no special care: when keys i and j are
identical, their two columns of ``s·E Zᵀ`` are identical too, and the sum of their cross-entropies
equals that of a target spread uniformly over {i, j}; the query→key terms see identical logits
for i and j either way. So the standard loss already treats exact duplicates as shared positives.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from functools import reduce

import torch
import torch.nn.functional as F


def info_nce(
    query: torch.Tensor, keys: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE between matching rows of ``query`` and ``keys``.

    Parameters
    ----------
    query : Tensor of shape (B, D)
        fMRI embeddings (normalised here).
    keys : Tensor of shape (B, D)
        CLIP embeddings of the same samples (normalised here).
    logit_scale : Tensor or float
        Inverse temperature ``s`` (CLIP's ``exp(logit_scale)``), applied as is.

    Returns
    -------
    Tensor
        Scalar: the mean of the query→key and key→query cross-entropies.
    """
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(keys.float(), dim=-1)
    logits = logit_scale * (q @ k.T)
    labels = torch.arange(len(q), device=q.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def contrastive_loss(
    embedding: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    logit_scale: torch.Tensor | float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``Σ_t w_t · info_nce(embedding, targets[t])`` over the targets with a positive weight.

    Returns the total and each target's unweighted loss (for logging).
    """
    parts = {
        name: info_nce(embedding, targets[name], logit_scale)
        for name, weight in weights.items()
        if weight > 0 and name in targets
    }
    if not parts:
        raise ValueError(f"no target with a positive weight among {sorted(targets)}: {weights}")
    total = reduce(operator.add, (weights[name] * loss for name, loss in parts.items()))
    return total, parts
