"""neurocine.metrics: SSIM/PSNR against scikit-image, n-way accuracy, retrieval, scene mask."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import hypergeom
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import neurocine.metrics as M
import neurocine.metrics.ssim as ssim_module
from neurocine.errors import DataError

# Pairwise-distinct sizes: videos, frames, height, width, classes, embedding dim.
N, F, H, W, C, D = 3, 4, 16, 20, 61, 24


# --------------------------------------------------------------------------- helpers


def skimage_ssim_per_video(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """MinD-Video's call, frame by frame."""
    return np.array(
        [
            np.mean(
                [
                    structural_similarity(p, t, data_range=255, channel_axis=-1)
                    for p, t in zip(pv, tv, strict=True)
                ]
            )
            for pv, tv in zip(pred, target, strict=True)
        ]
    )


def structured_videos(rng: np.random.Generator, n: int, f: int, h: int, w: int) -> np.ndarray:
    """Smooth colour gradients with a disc and a rectangle moving over frames, plus noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    out = np.empty((n, f, h, w, 3))
    for i in range(n):
        base = np.stack([xx / w, yy / h, (xx + yy) / (h + w)], axis=-1) * rng.uniform(80, 255, 3)
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(h / 6, h / 3)
        colour_disc, colour_rect = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        for j in range(f):
            img = base.copy()
            img[(yy - cy - j) ** 2 + (xx - cx - 2 * j) ** 2 < r * r] = colour_disc
            y0, x0 = (h // 5 + j) % h, (w // 2 + j) % w
            img[y0 : y0 + h // 4, x0 : x0 + w // 3] = colour_rect
            out[i, j] = img + rng.normal(0, 6, img.shape)
    return np.clip(out, 0, 255).round().astype(np.uint8)


def degrade(rng: np.random.Generator, video: np.ndarray, noise: float, shift: int) -> np.ndarray:
    """A plausible 'reconstruction': shifted, blurred a little, noisier."""
    v = np.roll(video.astype(float), shift, axis=3)
    v = (v + np.roll(v, 1, axis=2) + np.roll(v, 1, axis=3)) / 3
    return np.clip(v + rng.normal(0, noise, v.shape), 0, 255).round().astype(np.uint8)


def random_probs(gen: torch.Generator, n: int, c: int) -> torch.Tensor:
    return torch.randn(n, c, generator=gen).softmax(dim=1)


def hypergeom_win(probs: torch.Tensor, true: torch.Tensor, n_way: int, top_k: int) -> np.ndarray:
    """Exact per-sample win probability: drawn beaters ~ Hypergeom(pool, beaters, n_way - 1)."""
    out = []
    for p, t in zip(probs.numpy(), true.numpy(), strict=True):
        t = np.unique(t)
        others = np.delete(p, t)
        beaters = int((others >= p[t].max()).sum())
        out.append(hypergeom.cdf(top_k - 1, len(others), beaters, n_way - 1))
    return np.array(out)


def mind_video_n_way(pred, class_id, n_way, num_trials, top_k, rng):
    """MinD-Video's n_way_top_k_acc (eval_metrics.py), with an explicit numpy Generator."""
    pick_range = [i for i in range(len(pred)) if i not in class_id]
    corrects = 0
    for _ in range(num_trials):
        idxs_picked = rng.choice(pick_range, n_way - 1, replace=False)
        for gt_id in class_id:
            pred_picked = torch.cat([pred[gt_id].unsqueeze(0), pred[idxs_picked]])
            if 0 in pred_picked.argsort(descending=False)[-top_k:]:
                corrects += 1
                break
    return corrects / num_trials


# --------------------------------------------------------------------------- SSIM / PSNR


def test_video_ssim_matches_skimage_on_random_videos():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 256, (N, F, H, W, 3), dtype=np.uint8)
    target = rng.integers(0, 256, (N, F, H, W, 3), dtype=np.uint8)
    ref = skimage_ssim_per_video(pred, target)
    per_video = M.video_ssim_per_video(pred, target)
    assert per_video.shape == (N,)
    np.testing.assert_allclose(per_video, ref, atol=1e-9, rtol=0)
    assert abs(M.video_ssim(pred, target) - ref.mean()) < 2e-3
    assert abs(M.video_ssim(pred, target) - ref.mean()) < 1e-9


def test_video_ssim_matches_skimage_on_structured_videos():
    rng = np.random.default_rng(1)
    target = structured_videos(rng, N, F, 2 * H, 2 * W)
    pred = np.stack([degrade(rng, v, noise=4 + 12 * i, shift=i) for i, v in enumerate(target)])
    ref = skimage_ssim_per_video(pred, target)
    assert ref.min() > 0.05 and ref.max() - ref.min() > 0.2  # non-trivial and varied
    np.testing.assert_allclose(M.video_ssim_per_video(pred, target), ref, atol=1e-9, rtol=0)
    # torch tensors give the same numbers
    np.testing.assert_allclose(
        M.video_ssim_per_video(torch.from_numpy(pred), torch.from_numpy(target)), ref, atol=1e-9
    )
    assert abs(M.video_ssim(pred, target) - ref.mean()) < 2e-3


def test_video_ssim_chunking_does_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(2)
    target = structured_videos(rng, N, F, H, W)
    pred = degrade(rng, target, noise=10, shift=1)
    whole = M.video_ssim_per_video(pred, target)
    monkeypatch.setattr(ssim_module, "_CHUNK_ELEMENTS", H * W * 3 * 5)  # 5 frames per chunk
    np.testing.assert_array_equal(M.video_ssim_per_video(pred, target), whole)


def test_video_ssim_of_identical_videos_is_one():
    rng = np.random.default_rng(3)
    video = structured_videos(rng, N, F, H, W)
    assert M.video_ssim(video, video.copy()) == pytest.approx(1.0, abs=1e-12)
    flat = np.full((N, F, H, W, 3), 77, dtype=np.uint8)
    assert M.video_ssim(flat, flat) == pytest.approx(1.0, abs=1e-12)


def test_video_ssim_rejects_bad_input():
    good = np.zeros((N, F, H, W, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="differ in shape"):
        M.video_ssim(good, good[:, :2])
    with pytest.raises(DataError, match="uint8"):
        M.video_ssim(good.astype(np.float32), good.astype(np.float32))
    with pytest.raises(DataError, match=r"\[N, F, H, W, 3\]"):
        M.video_ssim(good[0], good[0])
    with pytest.raises(DataError, match="smaller than 7"):
        M.video_ssim(good[:, :, :6], good[:, :, :6])


def test_video_psnr_is_the_mean_of_per_frame_psnr():
    rng = np.random.default_rng(4)
    target = structured_videos(rng, N, F, H, W)
    pred = np.stack([degrade(rng, v, noise=3 + 10 * i, shift=0) for i, v in enumerate(target)])
    ref = np.array(
        [
            np.mean(
                [peak_signal_noise_ratio(t, p, data_range=255) for p, t in zip(pv, tv, strict=True)]
            )
            for pv, tv in zip(pred, target, strict=True)
        ]
    )
    per_video = M.video_psnr_per_video(pred, target)
    assert per_video.shape == (N,)
    # torchmetrics takes log(data_range) in float32: agreement to ~1e-7 relative
    np.testing.assert_allclose(per_video, ref, rtol=1e-6)
    assert M.video_psnr(pred, target) == pytest.approx(ref.mean(), rel=1e-6)
    assert math.isinf(M.video_psnr(target, target))


# --------------------------------------------------------------------------- n-way


def test_true_classes_are_the_ground_truth_top_k():
    gen = torch.Generator().manual_seed(0)
    gt = random_probs(gen, N, C)
    true = M.true_classes_from_probs(gt)
    assert true.dtype == torch.int64 and true.shape == (N, 3)
    # MinD-Video: logits.argsort()[-3:] (same set; ours is ordered best first)
    expected = gt.argsort(dim=1)[:, -3:].flip(1)
    assert torch.equal(true, expected)
    assert torch.equal(M.true_classes_from_probs(gt.log(), k=5), gt.argsort(dim=1)[:, -5:].flip(1))


@pytest.mark.parametrize("n_way", [2, 50])
def test_perfect_classifier_scores_one(n_way):
    gen = torch.Generator().manual_seed(1)
    probs = random_probs(gen, 40, C)
    true = M.true_classes_from_probs(probs)
    acc = M.n_way_top_k(probs, true, n_way, num_trials=30, generator=gen)
    assert acc.shape == (40,)
    assert torch.all(acc == 1.0)


@pytest.mark.parametrize(("n_way", "top_k"), [(2, 1), (50, 1), (50, 5)])
def test_random_classifier_scores_chance(n_way, top_k):
    gen = torch.Generator().manual_seed(2)
    n = 3000
    probs = random_probs(gen, n, C)  # independent of the truth
    true = M.true_classes_from_probs(random_probs(gen, n, C))
    acc = M.n_way_top_k(probs, true, n_way, num_trials=20, top_k=top_k, generator=gen)
    chance = M.n_way_chance(n_way, k_true=3, top_k=top_k)
    # Var(mean of N per-sample fractions in [0, 1] with mean p) <= p (1 - p) / N.
    tol = 4 * math.sqrt(chance * (1 - chance) / n)
    assert abs(float(acc.mean()) - chance) < tol
    if top_k == 1:
        assert chance == pytest.approx(3 / (n_way - 1 + 3))
        assert abs(float(acc.mean()) - 1 / n_way) > tol  # K = 3 true classes: not 1/n


def test_chance_formula_matches_enumeration():
    """Exchangeable scores: enumerate every ranking of K true and n - 1 distractor items."""
    for n_way, k_true, top_k in [(2, 3, 1), (4, 3, 1), (4, 3, 2), (5, 2, 3), (6, 1, 1)]:
        labels = [True] * k_true + [False] * (n_way - 1)
        orders = set(itertools.permutations(labels))  # best first
        wins = sum(sum(1 for x in order[: order.index(True)] if not x) < top_k for order in orders)
        assert M.n_way_chance(n_way, k_true, top_k) == pytest.approx(wins / len(orders))


def test_n_way_matches_its_exact_expectation():
    """Per-sample win probability is hypergeometric; the sampled fractions must agree."""
    gen = torch.Generator().manual_seed(3)
    n, trials = 400, 50
    gt_logits = torch.randn(n, C, generator=gen)
    probs = (gt_logits + 3 * torch.randn(n, C, generator=gen)).softmax(dim=1)  # partly right
    true = M.true_classes_from_probs(gt_logits)
    for n_way, top_k in [(10, 1), (50, 1), (20, 3)]:
        q = hypergeom_win(probs, true, n_way, top_k)
        acc = M.n_way_top_k(probs, true, n_way, num_trials=trials, top_k=top_k, generator=gen)
        sd = math.sqrt(float(np.sum(q * (1 - q))) / trials) / n
        assert 0.05 < q.mean() < 0.95
        assert abs(float(acc.mean()) - q.mean()) < 4 * sd + 1e-9


def test_n_way_agrees_with_mind_video_loop():
    gen = torch.Generator().manual_seed(4)
    rng = np.random.default_rng(4)
    gt_logits = torch.randn(4, C, generator=gen)
    probs = (gt_logits + torch.randn(4, C, generator=gen)).softmax(dim=1)
    true = M.true_classes_from_probs(gt_logits)
    ours = M.n_way_top_k(probs, true, 50, num_trials=4000, generator=gen).numpy()
    theirs = np.array(
        [mind_video_n_way(p, t.tolist(), 50, 400, 1, rng) for p, t in zip(probs, true, strict=True)]
    )
    q = hypergeom_win(probs, true, 50, 1)
    tol = 4 * np.sqrt(q * (1 - q) * (1 / 400 + 1 / 4000)) + 1e-9
    assert np.all(np.abs(ours - theirs) < tol)


def test_n_way_seed_reproduces_and_default_is_deterministic():
    gen = torch.Generator().manual_seed(5)
    probs = random_probs(gen, 50, C)
    true = M.true_classes_from_probs(random_probs(gen, 50, C))
    a = M.n_way_top_k(probs, true, 10, generator=torch.Generator().manual_seed(7))
    b = M.n_way_top_k(probs, true, 10, generator=torch.Generator().manual_seed(7))
    c = M.n_way_top_k(probs, true, 10, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(M.n_way_top_k(probs, true, 10), M.n_way_top_k(probs, true, 10))


def test_distractors_never_include_true_classes():
    """With n_way - 1 = C - K every non-true class is drawn in every trial, so the outcome is
    deterministic; any true class in the pool would change it."""
    gen = torch.Generator().manual_seed(6)
    n_way = C - 3 + 1
    probs = torch.rand(N, C, generator=gen) * 0.1
    true = torch.tensor([[5, 17, 60], [0, 1, 2], [33, 12, 44]])
    # (a) true classes on top: a drawn true class would tie with or beat the best -> < 1
    on_top = probs.clone()
    on_top.scatter_(1, true, torch.tensor([[0.9, 0.8, 0.7]]).expand(N, 3))
    assert torch.all(M.n_way_top_k(on_top, true, n_way, generator=gen) == 1.0)
    # (b) one non-true class beats every true class; it is always drawn -> exactly 0.
    # A pool holding true classes would sometimes leave it out -> > 0.
    beaten = on_top.clone()
    beaten[:, 30] = 0.95
    assert torch.all(M.n_way_top_k(beaten, true, n_way, generator=gen) == 0.0)
    # (c) top-2 with one beater always wins; the best true class drawn as a distractor would
    # tie with itself and count as a second beater
    assert torch.all(M.n_way_top_k(beaten, true, n_way, top_k=2, generator=gen) == 1.0)
    # n_way one larger has too few non-true classes
    with pytest.raises(DataError, match="candidates"):
        M.n_way_top_k(on_top, true, n_way + 1)


def test_n_way_ties_count_against_the_true_class():
    probs = torch.full((2, C), 1.0 / C)
    true = torch.tensor([[0, 1, 2], [3, 3, 3]])  # repeated ids count once
    assert torch.all(M.n_way_top_k(probs, true, 2) == 0.0)
    # with the repeated row the pool is C - 1: n_way = C is allowed there but not for row 0
    with pytest.raises(DataError, match="candidates"):
        M.n_way_top_k(probs, true, C)
    assert M.n_way_top_k(probs[1:], true[1:], C).shape == (1,)


def test_n_way_rejects_bad_input():
    probs = torch.rand(N, C)
    true = torch.zeros(N, 3, dtype=torch.long)
    with pytest.raises(DataError, match="top_k"):
        M.n_way_top_k(probs, true, 2, top_k=2)
    with pytest.raises(DataError, match="true_classes must be"):
        M.n_way_top_k(probs, true[:2], 2)
    with pytest.raises(DataError, match="lie in"):
        M.n_way_top_k(probs, true + C, 2)
    with pytest.raises(DataError, match="NaN"):
        M.n_way_top_k(probs.masked_fill(probs > 0.5, math.nan), true, 2)


def _deterministic_case(outcome: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """pred/gt probs over C classes whose outcome with n_way = C - 2 (every non-true class drawn
    in every trial) is 1 where ``outcome`` is True and 0 where a non-true class beats the truth."""
    gen = torch.Generator().manual_seed(9)
    gt = torch.rand(*outcome.shape, C, generator=gen)
    pred = torch.rand(*outcome.shape, C, generator=gen) * 0.1
    pred.scatter_(-1, gt.topk(3, dim=-1).indices, 0.5)
    beats = torch.where(torch.from_numpy(outcome), 0.05, 0.9)[..., None]
    pred.scatter_(-1, gt.argmin(dim=-1, keepdim=True), beats)  # the least likely class on gt
    return pred, gt


def test_frame_based_n_way_averages_frames_then_clips():
    outcome = np.array(
        [[True, True, True, True], [True, False, False, False], [False, True, False, True]]
    )
    pred, gt = _deterministic_case(outcome)
    mean, std = M.frame_based_n_way(pred, gt, n_way=C - 2, num_trials=5)
    per_clip = outcome.mean(axis=1)
    per_video = M.frame_based_n_way_per_video(pred, gt, n_way=C - 2, num_trials=5)
    np.testing.assert_allclose(per_video.numpy(), per_clip)
    assert mean == pytest.approx(per_clip.mean())
    assert std == pytest.approx(per_clip.std())
    with pytest.raises(DataError, match=r"\[N, F, C\]"):
        M.frame_based_n_way(pred, gt[:, :2])


def test_video_based_n_way_scores_each_clip_once():
    outcome = np.array([True, False, True, True, False])
    pred, gt = _deterministic_case(outcome)
    mean, std = M.video_based_n_way(pred, gt, n_way=C - 2, num_trials=5)
    per_video = M.video_based_n_way_per_video(pred, gt, n_way=C - 2, num_trials=5)
    np.testing.assert_array_equal(per_video.numpy(), outcome.astype(np.float32))
    assert mean == pytest.approx(outcome.mean())
    assert std == pytest.approx(outcome.std())


# --------------------------------------------------------------------------- retrieval


def test_retrieval_of_perfect_embeddings_is_one():
    gen = torch.Generator().manual_seed(10)
    q = torch.randn(C, D, generator=gen)
    keys = 3.0 * q  # cosine ignores the scale
    assert M.retrieval_top_k(q, keys, k=1) == 1.0
    assert M.n_way_retrieval(q, keys, n_way=50, generator=gen) == 1.0
    assert M.clip_similarity(q, keys) == pytest.approx(1.0)
    assert M.clip_similarity(q, -keys) == pytest.approx(-1.0)


def test_retrieval_of_unrelated_embeddings_is_chance():
    gen = torch.Generator().manual_seed(11)
    n = 1000
    q, keys = torch.randn(n, 8, generator=gen), torch.randn(n, 8, generator=gen)
    for k in (1, 250):
        p = k / n
        tol = 4 * math.sqrt(p * (1 - p) / n) + 1 / n
        assert abs(M.retrieval_top_k(q, keys, k=k) - p) < tol
    for n_way in (2, 50):
        p = 1 / n_way
        value = M.n_way_retrieval(q, keys, n_way=n_way, num_trials=20, generator=gen)
        assert abs(value - p) < 4 * math.sqrt(p * (1 - p) / n)
    # a shuffled pairing: each query's own vector sits at another index -> never retrieved
    perm = torch.roll(torch.arange(n), 1)
    assert M.retrieval_top_k(q, q[perm], k=1) == 0.0


def test_retrieval_top_k_counts_ranks():
    q = torch.eye(4)
    keys = torch.tensor([[1.0, 0, 0, 0], [1.0, 0.9, 0, 0], [0, 0, 1.0, 0], [0, 0, 1.0, 0.1]])
    # every match is strictly the most similar key: query 2 -> key 2 (1 > 0.995), query 3 ->
    # key 3 (0.0995 > 0)
    assert M.retrieval_top_k(q, keys, k=1) == 1.0
    keys[3] = torch.tensor([0, 0, 1.0, 0])  # keys 2 and 3 now equal: ties count as losses
    assert M.retrieval_top_k(q, keys, k=1) == 0.5  # queries 2 and 3 each tie with 1 other key
    assert M.retrieval_top_k(q, keys, k=2) == 0.75  # query 3 ties with keys 0, 1 and 2
    assert M.retrieval_top_k(q, keys, k=4) == 1.0


def test_n_way_retrieval_per_query_is_each_querys_win_rate():
    gen = torch.Generator().manual_seed(12)
    n, n_way = 60, 10
    keys = torch.randn(n, 8, generator=gen)
    q = keys + 1.5 * torch.randn(n, 8, generator=gen)
    per_query = M.n_way_retrieval_per_query(
        q, keys, n_way=n_way, num_trials=4000, generator=torch.Generator().manual_seed(0)
    )
    assert per_query.shape == (n,)
    mean = M.n_way_retrieval(
        q, keys, n_way=n_way, num_trials=4000, generator=torch.Generator().manual_seed(0)
    )
    assert per_query.mean() == pytest.approx(mean)  # same draws, same figure
    # a query wins when none of its n_way - 1 distractors (drawn without replacement from the
    # n - 1 other keys) outranks the match: hypergeometric, 0 beaters drawn
    sims = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(keys, dim=1).T
    beaters = ((sims >= sims.diag()[:, None]).sum(1) - 1).numpy()
    exact = hypergeom.pmf(0, n - 1, beaters, n_way - 1)
    assert 0.05 < exact.mean() < 0.95  # a mix of easy and hard queries
    assert np.abs(per_query - exact).max() < 0.04


def test_n_way_retrieval_rejects_too_few_samples():
    with pytest.raises(DataError, match="at least 50"):
        M.n_way_retrieval(torch.randn(N, D), torch.randn(N, D))
    with pytest.raises(DataError, match=r"\[N, D\]"):
        M.retrieval_top_k(torch.randn(N, D), torch.randn(N + 1, D))


def test_torchmetrics_classes_equal_the_functions():
    gen = torch.Generator().manual_seed(12)
    q = torch.randn(C, D, generator=gen)
    keys = q + 1.5 * torch.randn(C, D, generator=gen)
    batches = [slice(0, 20), slice(20, 23), slice(23, C)]
    top5, nway = M.RetrievalTopK(k=5), M.NWayRetrieval(n_way=10, num_trials=30, seed=4)
    in_batch = M.RetrievalTopK(k=2, within_batch=True)
    for s in batches:
        top5.update(q[s], keys[s])
        nway.update(q[s], keys[s])
        in_batch.update(q[s], keys[s])
    expected_top5 = M.retrieval_top_k(q, keys, k=5)
    expected_nway = M.n_way_retrieval(
        q, keys, n_way=10, num_trials=30, generator=torch.Generator().manual_seed(4)
    )
    expected_in_batch = (
        sum(M.retrieval_top_k(q[s], keys[s], k=2) * (s.stop - s.start) for s in batches) / C
    )
    assert 0.0 < expected_top5 < 1.0 and 0.0 < expected_nway < 1.0
    assert float(top5.compute()) == pytest.approx(expected_top5)
    assert float(nway.compute()) == pytest.approx(expected_nway)
    assert float(nway.compute()) == pytest.approx(expected_nway)  # same seed every compute
    assert float(in_batch.compute()) == pytest.approx(expected_in_batch)
    top5.reset()
    top5.update(q[:10], q[:10])
    assert float(top5.compute()) == 1.0


def test_n_way_retrieval_metric_with_too_few_samples_is_nan():
    metric = M.NWayRetrieval(n_way=50)
    metric.update(torch.randn(N, D), torch.randn(N, D))
    with pytest.warns(UserWarning, match="n_way=50"):
        assert math.isnan(float(metric.compute()))


# --------------------------------------------------------------------------- scenes, layering


def test_scene_mask_drops_clips_spanning_a_cut():
    ids = ["s1", "s1-s2", b"s3", "s4-", "s10"]
    np.testing.assert_array_equal(M.scene_mask(ids), [True, False, True, False, True])
    as_array = np.array(["a", "a-b", "c"], dtype=object)
    np.testing.assert_array_equal(M.scene_mask(as_array), [True, False, True])
    assert M.scene_mask([]).dtype == bool
    with pytest.raises(DataError, match="single string"):
        M.scene_mask("s1-s2")


def test_metrics_import_neither_data_nor_lit():
    root = Path(M.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("neurocine.data", "neurocine.lit")), (path, name)
