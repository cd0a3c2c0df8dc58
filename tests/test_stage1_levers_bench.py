"""bench/stage1_levers.py: the seeded, paired verdict on a stage-1 lever."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.stage1_levers import VARIANTS, seeded_difference  # noqa: E402


def _scores(rng: np.random.Generator, n: int, shift: float) -> np.ndarray:
    return np.clip(0.3 + shift + 0.1 * rng.standard_normal(n), 0, 1)


def test_a_consistent_gain_over_seeds_is_beyond_noise():
    rng = np.random.default_rng(0)
    scenes = np.repeat(np.arange(40), 5)
    reference = [_scores(rng, 200, 0.0) for _ in range(3)]
    variant = [r + gain for r, gain in zip(reference, (0.05, 0.06, 0.055), strict=True)]
    g = seeded_difference(variant, reference, scenes)
    assert g["per_seed"] == pytest.approx([0.05, 0.06, 0.055])
    assert g["diff"] == pytest.approx(0.055)
    assert g["se_seeds"] == pytest.approx(np.std([0.05, 0.06, 0.055], ddof=1) / math.sqrt(3))
    assert g["beyond_noise"]


def test_a_gain_at_one_seed_only_is_within_noise():
    rng = np.random.default_rng(1)
    scenes = np.repeat(np.arange(40), 5)
    reference = [_scores(rng, 200, 0.0) for _ in range(3)]
    variant = [r + gain for r, gain in zip(reference, (0.06, 0.05, -0.01), strict=True)]
    g = seeded_difference(variant, reference, scenes)
    assert g["diff"] == pytest.approx(0.1 / 3)
    assert g["se_seeds"] > g["diff"] / 2 and not g["beyond_noise"]


def test_scene_noise_alone_can_keep_a_seeded_gain_within_noise():
    # the same gain at every seed, but carried by a few scenes: the scene SE decides
    rng = np.random.default_rng(2)
    scenes = np.repeat(np.arange(40), 5)
    reference = [_scores(rng, 200, 0.0) for _ in range(3)]
    bump = np.where(scenes < 2, 0.4, 0.0)
    g = seeded_difference([r + bump for r in reference], reference, scenes)
    assert g["se_seeds"] == pytest.approx(0.0, abs=1e-12)
    assert g["se_scenes"] > g["diff"] / 2 and not g["beyond_noise"]


def test_one_seed_is_never_beyond_noise():
    rng = np.random.default_rng(3)
    scenes = np.repeat(np.arange(40), 5)
    reference = [_scores(rng, 200, 0.0)]
    g = seeded_difference([reference[0] + 0.2], reference, scenes)
    assert math.isnan(g["se_seeds"]) and not g["beyond_noise"]


def test_the_recipe_is_the_unchanged_reference():
    assert VARIANTS["recipe"] == []
    assert all(VARIANTS[name] for name in VARIANTS if name != "recipe")
