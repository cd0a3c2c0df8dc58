"""Other papers' protocols: strict n-way, SSIM variants, CLIP-pcc, uint8 truncation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import hypergeom
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity

import neurocine.metrics as M
from neurocine.errors import ConfigError, DataError

# Pairwise-distinct sizes: videos, frames, height, width, classes, embedding dim.
N, NF, H, W, C, D = 3, 5, 24, 30, 61, 12


def ranked_probs(beaters: np.ndarray, n_classes: int, true_class: np.ndarray) -> torch.Tensor:
    """Softmax-like rows where exactly ``beaters[i]`` classes score above ``true_class[i]``."""
    n = len(beaters)
    gen = torch.Generator().manual_seed(11)
    order = torch.stack([torch.randperm(n_classes, generator=gen) for _ in range(n)])
    scores = torch.empty(n, n_classes)
    scores.scatter_(1, order, torch.linspace(1.0, 0.0, n_classes).expand(n, -1))
    # move the true class to rank beaters[i] (0 = best)
    for i in range(n):
        t, b = int(true_class[i]), int(beaters[i])
        j = int(order[i, b])
        scores[i, t], scores[i, j] = scores[i, j].clone(), scores[i, t].clone()
    return scores.softmax(dim=1)


# --------------------------------------------------------------------------- strict n-way


@pytest.mark.parametrize(("n_way", "top_k"), [(2, 1), (50, 1), (20, 3)])
def test_strict_n_way_equals_its_hypergeometric_expectation(n_way, top_k):
    """k_true=1: a sample with b beaters among C - 1 others wins a trial with probability
    P(Hypergeom(C - 1, b, n - 1) < top_k); its wins over T trials are Binomial(T, q)."""
    rng = np.random.default_rng(0)
    n, trials = 600, 40
    true = rng.integers(0, C, n)
    # spread the beaters so that wins are neither certain nor impossible
    beaters = rng.integers(0, min(C - 1, 3 * (C - 1) * top_k // (n_way - 1) + 2), n)
    probs = ranked_probs(beaters, C, true)
    acc = M.n_way_top_k(
        probs, torch.from_numpy(true)[:, None], n_way, trials, top_k, torch.Generator()
    )
    q = hypergeom.cdf(top_k - 1, C - 1, beaters, n_way - 1)
    sd = math.sqrt(float(np.sum(q * (1 - q))) / trials) / n
    assert 0.02 < q.mean() < 0.98
    assert abs(float(acc.mean()) - q.mean()) < 4 * sd
    # samples the true class tops always win; those beaten by every distractor never do
    assert torch.all(acc[torch.from_numpy(beaters < top_k)] == 1.0)
    if n_way - 1 == C - 1:
        assert torch.all(acc[torch.from_numpy(beaters >= top_k)] == 0.0)


@pytest.mark.parametrize(("n_way", "top_k"), [(2, 1), (10, 1), (50, 1), (50, 5)])
def test_strict_chance_is_k_over_n(n_way, top_k):
    assert M.n_way_chance(n_way, k_true=1, top_k=top_k) == pytest.approx(top_k / n_way)
    gen = torch.Generator().manual_seed(1)
    n = 3000
    probs = torch.randn(n, C, generator=gen).softmax(dim=1)  # independent of the truth
    true = M.true_classes_from_probs(torch.randn(n, C, generator=gen), k=1)
    acc = M.n_way_top_k(probs, true, n_way, num_trials=20, top_k=top_k, generator=gen)
    chance = top_k / n_way
    assert abs(float(acc.mean()) - chance) < 4 * math.sqrt(chance * (1 - chance) / n)
    # MinD-Video's chance (3 true classes) is another number
    assert M.n_way_chance(n_way, k_true=3, top_k=top_k) > chance + 0.01


def test_protocols_agree_when_the_ground_truth_has_one_dominant_class():
    """The reconstruction ranks the ground truth's dominant class above its 2nd and 3rd: both
    protocols count the same beaters and differ only by the pool (C - 1 vs C - 3 classes)."""
    n_classes, n, trials = 1000, 400, 50  # ImageNet-sized
    gen = torch.Generator().manual_seed(2)
    gt = torch.randn(n, n_classes, generator=gen)
    dominant = gt.argmax(dim=1)
    gt[torch.arange(n), dominant] += 20.0  # one dominant class
    rng = np.random.default_rng(2)
    beaters = rng.integers(0, 12, n)
    pred = ranked_probs(beaters, n_classes, dominant.numpy())
    second_third = gt.topk(3, dim=1).indices[:, 1:]
    pred.scatter_(1, second_third, 0.0)  # ranked below the dominant class
    mindvideo = M.video_based_n_way_per_video(pred, gt, 50, trials, k_true=3)
    strict = M.video_based_n_way_per_video(pred, gt, 50, trials, k_true=1)
    # exactly equal where nothing beats the dominant class
    top = torch.from_numpy(beaters == 0)
    assert torch.all(mindvideo[top] == 1.0) and torch.all(strict[top] == 1.0)
    q3 = hypergeom.cdf(0, n_classes - 3, beaters, 49)
    q1 = hypergeom.cdf(0, n_classes - 1, beaters, 49)
    assert np.abs(q3 - q1).max() < 2e-3  # the pools' difference
    sd = math.sqrt(float(np.sum(q1 * (1 - q1))) / trials) / n
    assert abs(float(mindvideo.mean()) - float(strict.mean())) < 6 * sd + 2e-3
    # without a dominant class agreement fails: random reconstructions score the chance levels
    probs = torch.randn(n, n_classes, generator=gen).softmax(dim=1)
    a = float(M.video_based_n_way(probs, gt, 50, trials, k_true=3)[0])
    b = float(M.video_based_n_way(probs, gt, 50, trials, k_true=1)[0])
    assert a > b + 0.02


# --------------------------------------------------------------------------- SSIM variants


def _videos(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 255 / W, yy * 255 / H, (xx + yy) * 255 / (H + W)], axis=-1)
    target = np.stack(
        [[np.roll(base, f + i, axis=1) for f in range(NF)] for i in range(N)]
    ) + rng.normal(0, 8, (N, NF, H, W, 3))
    pred = target + rng.normal(0, 25, target.shape)
    as_u8 = lambda v: np.clip(v, 0, 255).round().astype(np.uint8)  # noqa: E731
    return as_u8(pred), as_u8(target)


SKIMAGE_CALLS = {
    # MinD-Video / Mind-Animator
    "mindvideo": lambda p, t: structural_similarity(p, t, data_range=255, channel_axis=-1),
    # Gaussian SSIM on luminance in [0, 1]
    "gray_gaussian": lambda p, t: structural_similarity(
        rgb2gray(p),
        rgb2gray(t),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    ),
    # NEURONS' eval_metrics.ssim_metric, channel_axis=-1 on the grey image included
    "neurons": lambda p, t: structural_similarity(
        rgb2gray(p),
        rgb2gray(t),
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    ),
}


@pytest.mark.parametrize("variant", sorted(SKIMAGE_CALLS))
def test_ssim_variants_equal_scikit_image(variant):
    pred, target = _videos(3)
    call = SKIMAGE_CALLS[variant]
    ref = np.array(
        [
            np.mean([call(p, t) for p, t in zip(pv, tv, strict=True)])
            for pv, tv in zip(pred, target, strict=True)
        ]
    )
    assert 0.05 < ref.min() < 0.95
    got = M.video_ssim_per_video(pred, target, variant=variant)
    np.testing.assert_allclose(got, ref, atol=1e-12, rtol=0)
    assert M.video_ssim(target, target, variant=variant) == pytest.approx(1.0, abs=1e-12)


def test_ssim_variants_differ_and_reject_bad_names_and_sizes():
    pred, target = _videos(4)
    scores = {v: M.video_ssim(pred, target, variant=v) for v in SKIMAGE_CALLS}
    assert len({round(s, 4) for s in scores.values()}) == 3
    assert M.video_ssim(pred, target) == scores["mindvideo"]  # the default
    with pytest.raises(ConfigError, match="evaluation.ssim='ms_ssim'"):
        M.video_ssim(pred, target, variant="ms_ssim")
    small = pred[:, :, :10, :12]
    with pytest.raises(DataError, match="11×11"):
        M.video_ssim(small, small, variant="gray_gaussian")
    with pytest.raises(DataError, match="11×1"):
        M.video_ssim(small, small, variant="neurons")
    assert M.video_ssim(small, small) == pytest.approx(1.0)  # 7×7 windows fit


# --------------------------------------------------------------------------- CLIP-pcc


def _direct_pcc(emb: np.ndarray, pairs: str) -> np.ndarray:
    out = []
    for video in emb:
        unit = video / np.linalg.norm(video, axis=1, keepdims=True)
        if pairs == "adjacent":
            out.append(np.mean([unit[f] @ unit[f + 1] for f in range(len(unit) - 1)]))
        else:
            sims = [unit[f] @ unit[g] for f in range(len(unit)) for g in range(len(unit)) if f != g]
            out.append(np.mean(sims))
    return np.array(out)


@pytest.mark.parametrize("pairs", ["adjacent", "all"])
def test_clip_pcc_equals_a_direct_computation(pairs):
    rng = np.random.default_rng(5)
    drift = np.cumsum(rng.normal(0, 0.4, (N, NF, D)), axis=1)  # frames change gradually
    emb = rng.normal(0, 1, (N, 1, D)) + drift
    got = M.clip_pcc(torch.from_numpy(emb).float(), pairs=pairs)
    assert got.shape == (N,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _direct_pcc(emb, pairs), atol=1e-6)
    np.testing.assert_allclose(M.clip_pcc(emb, pairs).numpy(), _direct_pcc(emb, pairs), atol=1e-12)
    # NEURONS' form: cosine matrix, zeroed diagonal, summed over F (F - 1)
    if pairs == "all":
        unit = F.normalize(torch.from_numpy(emb), dim=-1)
        gram = unit @ unit.transpose(1, 2)
        gram.diagonal(dim1=1, dim2=2).zero_()
        np.testing.assert_allclose(got.numpy(), gram.sum(dim=(1, 2)) / (NF * (NF - 1)), atol=1e-6)


def test_clip_pcc_is_scale_invariant_and_one_for_identical_frames():
    gen = torch.Generator().manual_seed(6)
    emb = torch.randn(N, NF, D, generator=gen, dtype=torch.float64)
    scales = torch.rand(N, NF, 1, generator=gen, dtype=torch.float64) * 50 + 0.01
    for pairs in ("adjacent", "all"):
        torch.testing.assert_close(M.clip_pcc(emb * scales, pairs), M.clip_pcc(emb, pairs))
        still = emb[:, :1].expand(N, NF, D) * scales
        torch.testing.assert_close(M.clip_pcc(still, pairs), torch.ones(N, dtype=torch.float64))
    # adjacent only looks at neighbours: reversing the frames leaves it, shuffling changes it
    torch.testing.assert_close(M.clip_pcc(emb.flip(1)), M.clip_pcc(emb))
    assert not torch.allclose(M.clip_pcc(emb[:, [0, 2, 4, 1, 3]]), M.clip_pcc(emb))
    torch.testing.assert_close(M.clip_pcc(emb[:, [0, 2, 4, 1, 3]], "all"), M.clip_pcc(emb, "all"))


def test_clip_pcc_rejects_bad_input():
    emb = torch.randn(N, NF, D)
    with pytest.raises(DataError, match="at least 2 frames"):
        M.clip_pcc(emb[:, :1])
    with pytest.raises(DataError, match=r"\[N, F, D\]"):
        M.clip_pcc(emb[0])
    with pytest.raises(ConfigError, match="pairs='pairwise'"):
        M.clip_pcc(emb, pairs="pairwise")
    with pytest.raises(DataError, match="NaN"):
        M.clip_pcc(emb.masked_fill(emb > 1, math.nan))
    with pytest.raises(DataError, match="float"):
        M.clip_pcc(torch.ones(N, NF, D, dtype=torch.long))


# --------------------------------------------------------------------------- uint8 conversion


def test_truncation_and_rounding_on_a_known_array():
    x = np.array(
        [-0.2, 0.0, 0.3 / 255, 0.7 / 255, 1.5 / 255, 2.6 / 255, 100.2 / 255, 0.9999, 1.0, 1.3]
    )
    np.testing.assert_array_equal(M.to_uint8(x, "truncate"), [0, 0, 0, 0, 1, 2, 100, 254, 255, 255])
    np.testing.assert_array_equal(M.to_uint8(x, "round"), [0, 0, 0, 1, 2, 3, 100, 255, 255, 255])
    # MinD-Video's conversion, on values inside [0, 1]
    inside = np.random.default_rng(7).random((4, 6, 5, 3))
    np.testing.assert_array_equal(M.to_uint8(inside), (inside * 255).astype(np.uint8))
    # about half a grey level apart on average
    gap = M.to_uint8(inside, "round").astype(float) - M.to_uint8(inside, "truncate")
    assert set(np.unique(gap)) <= {0.0, 1.0} and abs(gap.mean() - 0.5) < 0.1
    # torch gives the same, as a uint8 tensor
    out = M.to_uint8(torch.from_numpy(x), "round")
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out.numpy(), M.to_uint8(x, "round"))
    np.testing.assert_array_equal(M.to_uint8(torch.from_numpy(x)).numpy(), M.to_uint8(x))
    with pytest.raises(ConfigError, match="uint8='floor'"):
        M.to_uint8(x, "floor")
    with pytest.raises(DataError, match="float"):
        M.to_uint8(np.zeros(3, dtype=np.uint8))


def test_generated_frames_truncate_or_round():
    """The decoder's float output → grey levels: ``sampling.uint8`` picks the conversion."""
    from neurocine.models.video_unet import video_to_frames

    video = torch.rand(2, 3, NF, 8, 10, generator=torch.Generator().manual_seed(8)) * 2.2 - 1.1
    rounded = video_to_frames(video)  # the default: as before the option existed
    legacy = ((video.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1)
    assert torch.equal(rounded, legacy)
    truncated = video_to_frames(video, "truncate")
    pixels = ((video.clamp(-1, 1) + 1.0) * 0.5).permute(0, 2, 3, 4, 1).numpy()
    np.testing.assert_array_equal(truncated.numpy(), (pixels * 255).astype(np.uint8))
    gap = rounded.int() - truncated.int()
    assert gap.min() == 0 and gap.max() == 1
