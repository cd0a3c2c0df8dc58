"""Embedding retrieval: top-k among all keys and n-way top-k against random other keys.

Query i (e.g. the fMRI embedding of clip i) should retrieve key i (the CLIP embedding of clip i)
by cosine similarity. A key scoring exactly as high as the match counts as ranked above it (ties
never favour the match). ``RetrievalTopK`` and ``NWayRetrieval`` wrap the functions as
torchmetrics ``Metric``s for the LightningModules: they gather the embeddings of an epoch across
processes (``dist_reduce_fx="cat"``) and score them at ``compute()``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat, rank_zero_warn

from neurocine.errors import DataError
from neurocine.metrics._inputs import embeddings_pair
from neurocine.metrics._trials import win_fraction

_ROWS_PER_BLOCK = 4096


def _n_beaters(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """For each query, how many non-matching keys are at least as similar as its match [N]."""
    q = F.normalize(query, dim=1)
    k = F.normalize(keys, dim=1)
    out = []
    for start in range(0, q.shape[0], _ROWS_PER_BLOCK):
        sims = q[start : start + _ROWS_PER_BLOCK] @ k.T
        rows = torch.arange(sims.shape[0], device=sims.device)
        match = sims[rows, rows + start]
        out.append((sims >= match[:, None]).sum(dim=1) - 1)  # minus the match itself
    return torch.cat(out)


def retrieval_top_k(
    query: np.ndarray | torch.Tensor, keys: np.ndarray | torch.Tensor, k: int = 1
) -> float:
    """Fraction of queries whose own key (same row) is among the ``k`` most cosine-similar keys.

    Parameters
    ----------
    query, keys : float arrays of shape (N, D)
        Row i of ``keys`` is the match of row i of ``query``.
    k : int, default=1

    Returns
    -------
    float in [0, 1]; chance is k / N.
    """
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}")
    q, kk = embeddings_pair(query, keys)
    return float((_n_beaters(q, kk) < k).double().mean())


def n_way_retrieval(
    query: np.ndarray | torch.Tensor,
    keys: np.ndarray | torch.Tensor,
    n_way: int = 50,
    num_trials: int = 100,
    generator: torch.Generator | None = None,
    top_k: int = 1,
) -> float:
    """N-way top-k retrieval: each query's match against ``n_way - 1`` random other keys.

    Per query and trial, ``n_way - 1`` distinct other keys are drawn uniformly from the N - 1
    non-matching keys; the trial succeeds when fewer than ``top_k`` of them are at least as
    cosine-similar to the query as its match. This is stage 1's "50-way top-1" and the protocol
    of MinD-Video's ``n_way_scores`` (with CLIP embeddings of reconstructions as queries and of
    ground truths as keys). Chance is ``top_k / n_way``.

    Parameters
    ----------
    query, keys : float arrays of shape (N, D), N >= n_way
    n_way : int, default=50
    num_trials : int, default=100
    generator : torch.Generator, optional
        Source of the draws; None uses a CPU generator seeded with 0.
    top_k : int, default=1

    Returns
    -------
    float, the fraction of successful trials over all queries.
    """
    return float(n_way_retrieval_per_query(query, keys, n_way, num_trials, generator, top_k).mean())


def n_way_retrieval_per_query(
    query: np.ndarray | torch.Tensor,
    keys: np.ndarray | torch.Tensor,
    n_way: int = 50,
    num_trials: int = 100,
    generator: torch.Generator | None = None,
    top_k: int = 1,
) -> np.ndarray:
    """:func:`n_way_retrieval` query by query: the fraction of each query's trials it wins.

    Its mean is :func:`n_way_retrieval` (same draws for the same ``generator``). Per-query
    scores let two encoders be compared query by query (a paired difference, clustered by
    scene with :func:`neurocine.evaluation.paired_differences`).

    Returns
    -------
    ndarray of shape (N,), float64 in [0, 1].
    """
    q, kk = embeddings_pair(query, keys)
    n = q.shape[0]
    if n < n_way:
        raise DataError(f"{n_way}-way retrieval needs at least {n_way} samples, got {n}")
    beaters = _n_beaters(q, kk)
    pool = torch.full_like(beaters, n - 1)
    wins = win_fraction(beaters, pool, n_way - 1, num_trials, top_k, generator)
    return wins.double().cpu().numpy()


class _EmbeddingPairs(Metric):
    """Accumulates (query, key) embedding rows over an epoch, gathered by concatenation."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    query: list[torch.Tensor]  # states registered by add_state
    keys: list[torch.Tensor]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("query", default=[], dist_reduce_fx="cat")
        self.add_state("keys", default=[], dist_reduce_fx="cat")

    def update(self, query: torch.Tensor, keys: torch.Tensor) -> None:
        """Add a batch: ``query`` and ``keys`` float [B, D], row i of keys matching row i."""
        q, k = embeddings_pair(query, keys)
        self.query.append(q)
        self.keys.append(k)

    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        return dim_zero_cat(self.query), dim_zero_cat(self.keys)


class RetrievalTopK(_EmbeddingPairs):
    """``retrieval_top_k`` over every (query, key) pair seen since the last reset.

    Parameters
    ----------
    k : int, default=1
        Top-k (stage 1 logs top-1 and top-5).
    within_batch : bool, default=False
        If True, each ``update`` scores retrieval among its own batch only and ``compute``
        returns the mean over batches weighted by batch size ("among the batch", docs/design.md §5);
        nothing but two counters is kept.
    """

    hits: torch.Tensor  # states registered by add_state
    total: torch.Tensor

    def __init__(self, k: int = 1, within_batch: bool = False, **kwargs: Any) -> None:
        if k < 1:
            raise DataError(f"k must be >= 1, got {k}")
        super().__init__(**kwargs)
        self.k = k
        self.within_batch = within_batch
        self.add_state("hits", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, query: torch.Tensor, keys: torch.Tensor) -> None:
        """Add a batch: ``query`` and ``keys`` float [B, D], row i of keys matching row i."""
        if not self.within_batch:
            super().update(query, keys)
            return
        q, k = embeddings_pair(query, keys)
        self.hits += (_n_beaters(q, k) < self.k).sum().to(self.hits.dtype)
        self.total += q.shape[0]

    def compute(self) -> torch.Tensor:
        """The top-k retrieval accuracy (a 0-dim float32 tensor)."""
        if self.within_batch:
            return (self.hits / self.total.clamp(min=1)).float()
        value = retrieval_top_k(*self._pairs(), k=self.k)
        return torch.tensor(value, dtype=torch.float32, device=self.device)


class NWayRetrieval(_EmbeddingPairs):
    """``n_way_retrieval`` over every (query, key) pair seen since the last reset.

    The draws come from a generator seeded with ``seed`` at every ``compute()``, so the same
    embeddings always give the same figure (on every process). With fewer than ``n_way`` samples
    (e.g. a ``fast_dev_run``) the metric is undefined: ``compute()`` warns and returns NaN.

    Parameters
    ----------
    n_way : int, default=50
    num_trials : int, default=100
    top_k : int, default=1
    seed : int, default=0
    """

    def __init__(
        self,
        n_way: int = 50,
        num_trials: int = 100,
        top_k: int = 1,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if n_way < 2 or num_trials < 1 or not 1 <= top_k < n_way:
            raise DataError(
                f"need n_way >= 2, num_trials >= 1, 1 <= top_k < n_way; got n_way={n_way}, "
                f"num_trials={num_trials}, top_k={top_k}"
            )
        super().__init__(**kwargs)
        self.n_way = n_way
        self.num_trials = num_trials
        self.top_k = top_k
        self.seed = seed

    def compute(self) -> torch.Tensor:
        """The n-way top-k retrieval accuracy (a 0-dim float32 tensor; NaN if too few samples)."""
        query, keys = self._pairs()
        if query.shape[0] < self.n_way:
            rank_zero_warn(
                f"NWayRetrieval: {query.shape[0]} samples < n_way={self.n_way}; returning NaN"
            )
            return torch.tensor(math.nan, dtype=torch.float32, device=self.device)
        value = n_way_retrieval(
            query,
            keys,
            n_way=self.n_way,
            num_trials=self.num_trials,
            top_k=self.top_k,
            generator=torch.Generator().manual_seed(self.seed),
        )
        return torch.tensor(value, dtype=torch.float32, device=self.device)
