"""N-way top-k classification accuracy of reconstructions (MinD-Video's protocol).

The protocol is docs/design.md §10.

A pretrained classifier looks at the ground truth and at the reconstruction. The K (= 3) classes
it ranks highest on the ground truth are the "true" classes. In each trial, ``n_way - 1``
distractor classes are drawn uniformly, without replacement, from the classes that are not true;
the trial succeeds when some true class is among the ``top_k`` most probable of itself and the
distractors, under the classifier's output on the reconstruction.

This is MinD-Video's ``n_way_top_k_acc`` (``src/MindVideo/utils/eval_metrics.py``, called by
``img_classify_metric`` with a ViT on single frames and by ``video_classify_metric`` with VideoMAE
on clips; both take the ground truth's top 3 classes, ``logits.argsort()[-3:]``, draw one set of
distractors per trial from the classes outside those 3, test each true class against that set and
count the trial once if any passes; ``n_way = 50``, 100 trials, ``top_k = 1``). Where we differ:
draws come from a ``torch.Generator`` instead of numpy's global state; ties between a true class
and a distractor count against the true class (what a stable ascending argsort does; MinD-Video
sorts with an unstable sort, so its tie order is unspecified); the spread we report is the
standard deviation over clips (MinD-Video prints the mean over clips of each clip's binomial
standard error, ``sqrt(p (1 - p) / trials)``).

Two protocols, both from the same functions (docs/design.md §10):

- MinD-Video's (``k_true=3``): a trial counts when *any* of the ground truth's top 3 classes
  beats the distractors. Chance is 3/4 for 2-way and 3/52 ≈ 0.058 for 50-way, not 1/n.
  NEURONS and Mind-Animator copy this code, so their tables use it too.
- Strict (``k_true=1``): only the ground truth's top-1 class is true. Chance is k/n for top-k
  (``n_way_chance(n, k_true=1, top_k=k)``). When the classifier ranks the ground truth's top
  class above its second and third on the reconstruction, the two protocols differ only in the
  distractor pool (C - 1 classes against C - 3), which for 1000 ImageNet or 400 Kinetics classes
  is a small difference.

Ties: MinD-Video breaks a tie between a true class and a distractor with
``torch.argsort(descending=False)``, which sorts unstably, so the same scores can pass or fail
from one run to the next; we count every tie as a failure, so our figure is the lower bound of
theirs. Ties are rare with softmax outputs of real models but happen with float16 logits and with
saturated probabilities.
"""

from __future__ import annotations

from math import comb

import numpy as np
import torch

from neurocine.errors import DataError
from neurocine.metrics._inputs import as_tensor
from neurocine.metrics._trials import win_fraction


def true_classes_from_probs(gt_probs: np.ndarray | torch.Tensor, k: int = 3) -> torch.Tensor:
    """The ``k`` classes the classifier ranks highest on each ground truth.

    Parameters
    ----------
    gt_probs : float array of shape (N, C)
        Classifier softmax (or logits: only the order within a row matters) on the ground truth.
    k : int, default=3
        How many classes count as true (MinD-Video uses 3).

    Returns
    -------
    int64 tensor of shape (N, k), the most probable class first.
    """
    p = as_tensor(gt_probs, "gt_probs")
    if p.ndim != 2 or not 1 <= k <= p.shape[1]:
        raise DataError(f"gt_probs must be [N, C] with C >= k={k}, got {tuple(p.shape)}")
    return torch.topk(p.float(), k, dim=1).indices.long()


def n_way_top_k(
    probs: np.ndarray | torch.Tensor,
    true_classes: np.ndarray | torch.Tensor,
    n_way: int,
    num_trials: int = 100,
    top_k: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Each sample's n-way top-k accuracy over ``num_trials`` random trials (docs/design.md §10).

    Per sample i and trial: draw ``n_way - 1`` distinct distractors uniformly from the C - K
    classes not in ``true_classes[i]``; the trial succeeds when some true class c has
    ``probs[i, c]`` among the ``top_k`` largest of ``{probs[i, c]} ∪ probs[i, distractors]``.
    A distractor equal to ``probs[i, c]`` counts as larger (ties never favour the true class).
    Only the best true class c* matters (if any true class passes, c* does), so a trial succeeds
    exactly when fewer than ``top_k`` drawn distractors have ``probs >= probs[i, c*]``; the draws
    track just that (see ``neurocine.metrics._trials``), which is the same random process as
    drawing class indices, in O(N · trials · n_way) time.

    Chance level: when the probabilities are independent of the truth (exchangeable across
    classes), the K true classes and the ``n_way - 1`` distractors are K + n - 1 exchangeable
    values, and the trial fails exactly when the ``top_k`` largest of them are all distractors::

        chance = 1 - C(n - 1, top_k) / C(n - 1 + K, top_k)     (``n_way_chance``)

    For ``top_k = 1`` that is K / (n - 1 + K): 3/4 for 2-way and 3/52 ≈ 0.058 for 50-way with
    K = 3 (not 1/n, the chance level of a single true class).

    Parameters
    ----------
    probs : float array of shape (N, C)
        The classifier's softmax on each reconstruction (logits give the same result).
    true_classes : int array of shape (N, K)
        The classes the same classifier ranks highest on the ground truth
        (``true_classes_from_probs``); repeated ids in a row count once.
    n_way : int
        Classes per trial: one true class against ``n_way - 1`` distractors; needs
        ``n_way - 1 <= C - K`` and ``top_k < n_way``.
    num_trials : int, default=100
    top_k : int, default=1
    generator : torch.Generator, optional
        Source of the draws; a fixed seed reproduces the result. None uses a CPU generator
        seeded with 0 (so the result is deterministic either way).

    Returns
    -------
    float32 tensor of shape (N,), the fraction of successful trials per sample.
    """
    p = as_tensor(probs, "probs")
    t = as_tensor(true_classes, "true_classes").to(p.device)
    if p.ndim != 2:
        raise DataError(f"probs must be [N, C], got {tuple(p.shape)}")
    if t.ndim != 2 or t.shape[0] != p.shape[0] or t.shape[1] == 0:
        raise DataError(f"true_classes must be [N={p.shape[0]}, K], got {tuple(t.shape)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise DataError(f"true_classes must be integer class ids, got {t.dtype}")
    n, c = p.shape
    if n == 0:
        raise DataError("probs hold no samples")
    t = t.long()
    if int(t.min()) < 0 or int(t.max()) >= c:
        raise DataError(f"true_classes must lie in 0..{c - 1}, got {int(t.min())}..{int(t.max())}")
    p = p.float()
    if not torch.isfinite(p).all():
        raise DataError("probs contain NaN or inf")
    is_true = torch.zeros(n, c, dtype=torch.bool, device=p.device)
    is_true.scatter_(1, t, True)
    best = p.gather(1, t).amax(dim=1, keepdim=True)
    n_beaters = ((p >= best) & ~is_true).sum(dim=1)
    pool = c - is_true.sum(dim=1)
    return win_fraction(n_beaters, pool, n_way - 1, num_trials, top_k, generator)


def n_way_chance(n_way: int, k_true: int = 3, top_k: int = 1) -> float:
    """Expected ``n_way_top_k`` of a classifier whose output is independent of the truth.

    ``1 - C(n - 1, top_k) / C(n - 1 + k_true, top_k)``; K / (n - 1 + K) for top-1.
    """
    if n_way < 2 or k_true < 1 or not 1 <= top_k < n_way:
        raise DataError(
            f"need n_way >= 2, k_true >= 1, 1 <= top_k < n_way; got {n_way}, {k_true}, {top_k}"
        )
    return 1.0 - comb(n_way - 1, top_k) / comb(n_way - 1 + k_true, top_k)


def _mean_std(per_clip: torch.Tensor) -> tuple[float, float]:
    v = per_clip.double()
    return float(v.mean()), float(v.std(unbiased=False))


def frame_based_n_way_per_video(
    pred_probs_frames: np.ndarray | torch.Tensor,
    gt_probs_frames: np.ndarray | torch.Tensor,
    n_way: int = 50,
    num_trials: int = 100,
    top_k: int = 1,
    k_true: int = 3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Frame-based n-way accuracy of each clip: an image classifier on every frame.

    Each frame is one sample of ``n_way_top_k``, its true classes the image classifier's top
    ``k_true`` on the matching ground-truth frame (MinD-Video's ``img_classify_metric`` with a
    ViT, run per frame index). A clip's score is the mean over its frames.

    Parameters
    ----------
    pred_probs_frames, gt_probs_frames : float arrays of shape (N, F, C)
        The classifier's softmax on each reconstructed and ground-truth frame.

    Returns
    -------
    float32 tensor of shape (N,). Per-clip scores let two models scored with the same
    ``generator`` seed (common random numbers) be compared clip by clip.
    """
    pred = as_tensor(pred_probs_frames, "pred_probs_frames")
    gt = as_tensor(gt_probs_frames, "gt_probs_frames")
    if pred.ndim != 3 or pred.shape != gt.shape:
        raise DataError(
            f"pred_probs_frames {tuple(pred.shape)} and gt_probs_frames {tuple(gt.shape)} "
            "must both be [N, F, C]"
        )
    n, f, c = pred.shape
    true = true_classes_from_probs(gt.reshape(n * f, c), k_true)
    acc = n_way_top_k(pred.reshape(n * f, c), true, n_way, num_trials, top_k, generator)
    return acc.reshape(n, f).mean(dim=1)


def frame_based_n_way(
    pred_probs_frames: np.ndarray | torch.Tensor,
    gt_probs_frames: np.ndarray | torch.Tensor,
    n_way: int = 50,
    num_trials: int = 100,
    top_k: int = 1,
    k_true: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Frame-based n-way accuracy (``frame_based_n_way_per_video``) as (mean, std) over clips.

    Parameters
    ----------
    pred_probs_frames, gt_probs_frames : float arrays of shape (N, F, C)
        The classifier's softmax on each reconstructed and ground-truth frame.

    Returns
    -------
    (mean, std) over the N clips (std with ddof=0); the mean equals the mean over all frames.
    """
    return _mean_std(
        frame_based_n_way_per_video(
            pred_probs_frames, gt_probs_frames, n_way, num_trials, top_k, k_true, generator
        )
    )


def video_based_n_way_per_video(
    pred_probs: np.ndarray | torch.Tensor,
    gt_probs: np.ndarray | torch.Tensor,
    n_way: int = 50,
    num_trials: int = 100,
    top_k: int = 1,
    k_true: int = 3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Video-based n-way accuracy of each clip: one video-classifier prediction per clip.

    MinD-Video's ``video_classify_metric`` (VideoMAE fine-tuned on Kinetics-400).

    Parameters
    ----------
    pred_probs, gt_probs : float arrays of shape (N, C)
        The video classifier's softmax on each reconstructed and ground-truth clip.

    Returns
    -------
    float32 tensor of shape (N,).
    """
    pred = as_tensor(pred_probs, "pred_probs")
    gt = as_tensor(gt_probs, "gt_probs")
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise DataError(
            f"pred_probs {tuple(pred.shape)} and gt_probs {tuple(gt.shape)} must both be [N, C]"
        )
    true = true_classes_from_probs(gt, k_true)
    return n_way_top_k(pred, true, n_way, num_trials, top_k, generator)


def video_based_n_way(
    pred_probs: np.ndarray | torch.Tensor,
    gt_probs: np.ndarray | torch.Tensor,
    n_way: int = 50,
    num_trials: int = 100,
    top_k: int = 1,
    k_true: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Video-based n-way accuracy (``video_based_n_way_per_video``) as (mean, std) over clips.

    Parameters
    ----------
    pred_probs, gt_probs : float arrays of shape (N, C)
        The video classifier's softmax on each reconstructed and ground-truth clip.

    Returns
    -------
    (mean, std) over the N clips (std with ddof=0).
    """
    return _mean_std(
        video_based_n_way_per_video(
            pred_probs, gt_probs, n_way, num_trials, top_k, k_true, generator
        )
    )
