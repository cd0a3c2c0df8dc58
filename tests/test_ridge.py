"""The ridge baseline: run-wise folds, RidgeCV fit, retrieval scores, the DataModule path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurocine.baselines.ridge import (
    fit_ridge,
    predict_ridge,
    retrieval_scores,
    ridge_baseline,
    ridge_features,
    run_folds,
)
from neurocine.config import load_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.errors import ConfigError, DataError


def linear_problem(n=120, n_features=61 * 2, d=12, noise=0.1, seed=0):
    """y = x·w + 0.5 + noise, with w fixed (seed 0) and samples drawn from ``seed``."""
    w = np.random.default_rng(0).standard_normal((n_features, d)).astype(np.float32)
    w /= np.sqrt(n_features)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((n, n_features)).astype(np.float32)
    y = x @ w + 0.5 + noise * rng.standard_normal((n, d)).astype(np.float32)
    return x, y


def test_features_flatten_tr_major():
    fmri = torch.arange(3 * 2 * 5, dtype=torch.float32).reshape(3, 2, 5)
    x = ridge_features(fmri)
    assert x.shape == (3, 10) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1, 5:], fmri[1, 1].numpy())
    with pytest.raises(DataError, match=r"expected \[N, W, V\]"):
        ridge_features(np.zeros((3, 10)))


def test_run_folds_keep_runs_whole():
    runs = np.repeat([7, 3, 9, 4, 1, 8], 4)
    folds = run_folds(runs, n_folds=4)
    assert len(folds) == 4
    covered = np.sort(np.concatenate([val for _, val in folds]))
    np.testing.assert_array_equal(covered, np.arange(24))
    for train, val in folds:
        assert not set(runs[train]) & set(runs[val])
    with pytest.raises(DataError, match="needs ≥ 2 runs"):
        run_folds(np.zeros(10))


@pytest.mark.parametrize("solver", ["primal", "dual"])
def test_fit_ridge_recovers_a_linear_map(solver):
    x, y = linear_problem(n=400)
    x_test, y_test = linear_problem(n=50, seed=1)  # same map, new samples
    model = fit_ridge(x, y, alphas=np.logspace(-3, 3, 7), cv=4, solver=solver)
    pred = predict_ridge(model, x_test)
    assert pred.shape == y_test.shape and pred.dtype == np.float32
    assert np.mean((pred - y_test) ** 2) / np.var(y_test) < 0.2
    assert np.asarray(model.best_alphas_).shape == (12,)


def test_primal_and_dual_solvers_agree():
    x, y = linear_problem(n=60)  # fewer samples than features: auto picks the dual
    grid = [0.1, 10.0, 1000.0]
    primal = predict_ridge(fit_ridge(x, y, grid, cv=3, solver="primal"), x)
    dual = predict_ridge(fit_ridge(x, y, grid, cv=3, solver="auto"), x)
    np.testing.assert_allclose(primal, dual, atol=2e-3, rtol=1e-3)


def test_regularisation_is_chosen_by_cross_validation():
    x, y = linear_problem(noise=0.05)
    rng = np.random.default_rng(5)
    noise_only = rng.standard_normal(y.shape).astype(np.float32)
    fitted = np.asarray(fit_ridge(x, y, np.logspace(-2, 6, 9), cv=4).best_alphas_)
    pure_noise = np.asarray(fit_ridge(x, noise_only, np.logspace(-2, 6, 9), cv=4).best_alphas_)
    assert np.median(fitted) < np.median(pure_noise)


def test_bad_arguments():
    x, y = linear_problem(n=20)
    with pytest.raises(DataError, match="must be"):
        fit_ridge(x, y[:10])
    with pytest.raises(ConfigError, match="ridge backend 'jax'"):
        fit_ridge(x, y, backend="jax")
    with pytest.raises(ConfigError, match="ridge solver 'lsqr'"):
        fit_ridge(x, y, solver="lsqr")


def test_retrieval_scores_perfect_and_shuffled():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((60, 12)).astype(np.float32)
    perfect = retrieval_scores(target, target, n_way=50, num_trials=20)
    assert perfect == {"top1": 1.0, "top5": 1.0, "top1_50way": 1.0, "top5_50way": 1.0}
    shuffled = retrieval_scores(target[::-1].copy(), target, n_way=50, num_trials=20)
    assert shuffled["top1_50way"] < 0.2


def test_ridge_baseline_on_the_datamodule(tiny_subject):
    cfg = load_config(None, [f"data.path={tiny_subject}", "data.val_runs=1", "data.window=2"])
    dm = FMRIVideoDataModule(cfg, augment=False)
    dm.setup("fit")
    results = ridge_baseline(dm, alphas=[1.0, 100.0], splits=("val", "test"), n_way=8,
                             num_trials=10)  # fmt: skip
    assert set(results) == {"alphas/clip_image", "alphas/clip_text", "val/clip_image",
                            "val/clip_text", "test/clip_image", "test/clip_text"}  # fmt: skip
    for key in ("val/clip_image", "test/clip_text"):
        assert set(results[key]) == {"top1", "top5", "top1_8way", "top5_8way"}
        assert all(0.0 <= v <= 1.0 for v in results[key].values())
