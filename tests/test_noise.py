"""Dependent prior noise (docs/design.md §6) and the schedulers that draw it."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from neurocine.diffusion.callback import DependentNoiseCallback
from neurocine.diffusion.noise import dependent_noise, frame_correlation
from neurocine.diffusion.scheduler import (
    DependentDDIMScheduler,
    DependentDDPMScheduler,
    training_scheduler,
)
from neurocine.errors import ConfigError

# (batch, channels, frames, height, width), pairwise distinct.
SHAPE = (3, 2, 4, 5, 6)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def frame_corr_matrix(noise: torch.Tensor) -> torch.Tensor:
    """``[F, F]`` correlation between frames, pooled over batch, channels and pixels."""
    frames = noise.movedim(2, 0).reshape(noise.shape[2], -1)
    return torch.corrcoef(frames)


@pytest.mark.parametrize("mode", ["mixed", "progressive"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7])
def test_each_element_is_standard_normal(ratio, mode):
    n = 4000
    noise = dependent_noise((n, *SHAPE[1:]), ratio, gen(1), mode=mode)
    assert noise.shape == (n, *SHAPE[1:]) and noise.dtype == torch.float32
    mean, var = noise.mean(0), noise.var(0)
    # Standard errors: 1/√n ≈ 0.016 for the mean, √(2/n) ≈ 0.022 for the variance.
    assert mean.abs().max() < 0.08
    assert (var - 1).abs().max() < 0.12
    assert abs(float(noise.mean())) < 0.01 and abs(float(noise.var()) - 1) < 0.02


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.7])
def test_mixed_frames_of_a_clip_correlate_with_ratio(ratio):
    noise = dependent_noise((64, 4, 5, 16, 16), ratio, gen(2))
    corr = frame_corr_matrix(noise)
    off_diagonal = corr[~torch.eye(5, dtype=torch.bool)]
    assert (off_diagonal - ratio).abs().max() < 0.03
    assert abs(float(frame_correlation(noise)) - ratio) < 0.03


@pytest.mark.parametrize("ratio", [0.3, 0.7])
def test_progressive_neighbours_correlate_with_ratio_and_decay(ratio):
    noise = dependent_noise((64, 4, 5, 16, 16), ratio, gen(3), mode="progressive")
    corr = frame_corr_matrix(noise)
    for lag in (1, 2, 3):
        values = torch.diagonal(corr, offset=lag)
        assert (values - ratio**lag).abs().max() < 0.03, (lag, values)


@pytest.mark.parametrize("mode", ["mixed", "progressive"])
def test_clips_of_a_batch_are_independent(mode):
    noise = dependent_noise((2, 4, 6, 32, 32), 0.7, gen(4), mode=mode)
    first, second = noise[0].flatten(), noise[1].flatten()
    assert abs(float(torch.corrcoef(torch.stack([first, second]))[0, 1])) < 0.03
    # Within a clip the frames do correlate (so the check above is not vacuous).
    assert float(frame_correlation(noise[:1])) > 0.6


def test_determinism_by_generator():
    a = dependent_noise(SHAPE, 0.5, gen(7))
    b = dependent_noise(SHAPE, 0.5, gen(7))
    c = dependent_noise(SHAPE, 0.5, gen(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    # ρ = 0 is exactly the standard draw of diffusers/torch for the same seed.
    torch.testing.assert_close(
        dependent_noise(SHAPE, 0.0, gen(7)), torch.randn(SHAPE, generator=gen(7))
    )


def test_one_generator_per_clip_makes_clips_independent_of_the_batch():
    batch = dependent_noise(SHAPE, 0.4, [gen(10 + i) for i in range(SHAPE[0])])
    for i in range(SHAPE[0]):
        alone = dependent_noise((1, *SHAPE[1:]), 0.4, gen(10 + i))
        torch.testing.assert_close(batch[i : i + 1], alone, rtol=0, atol=0)
    with pytest.raises(ValueError, match="generators"):
        dependent_noise(SHAPE, 0.4, [gen(0)] * 2)


def test_frame_axis_is_configurable():
    # (batch, frames, channels, h, w): the correlated axis is 1.
    noise = dependent_noise((32, 5, 4, 16, 16), 0.6, gen(5), frame_dim=1)
    assert abs(float(frame_correlation(noise, frame_dim=1)) - 0.6) < 0.03
    assert abs(float(frame_correlation(noise, frame_dim=2))) < 0.03


@pytest.mark.parametrize("ratio, mode", [(-0.1, "mixed"), (1.5, "mixed"), (0.3, "bogus")])
def test_bad_ratio_or_mode_is_a_config_error(ratio, mode):
    with pytest.raises(ConfigError, match="stage2.noise"):
        dependent_noise(SHAPE, ratio, gen(), mode=mode)
    with pytest.raises(ConfigError):
        DependentNoiseCallback(ratio, mode=mode)


# -- schedulers --------------------------------------------------------------------------------


def test_add_noise_draws_dependent_noise_by_default():
    scheduler = training_scheduler(dependent_ratio=0.7)
    x0 = torch.zeros(16, 4, 5, 16, 16)
    t = torch.full((16,), 999)
    noisy = scheduler.add_noise(x0, timesteps=t, generator=gen(0))
    # x_t = √ᾱ x0 + √(1 − ᾱ) ε with x0 = 0: the frames of x_t correlate like ε.
    assert abs(float(frame_correlation(noisy)) - 0.7) < 0.03
    expected = (1 - scheduler.alphas_cumprod[999]).sqrt() * scheduler.sample_noise(x0.shape, gen(0))
    torch.testing.assert_close(noisy, expected)
    # With explicit noise it is diffusers' add_noise.
    noise = torch.randn(x0.shape, generator=gen(1))
    plain = torch.randn(x0.shape, generator=gen(2))
    base = DDPMScheduler.from_config(scheduler.config)
    torch.testing.assert_close(
        scheduler.add_noise(plain, noise, t), base.add_noise(plain, noise, t)
    )
    # At t ≈ 0 the sample is almost unchanged.
    near_zero = scheduler.add_noise(plain, noise, torch.zeros(16, dtype=torch.long))
    assert (near_zero - plain).abs().max() < 0.2
    with pytest.raises(ValueError, match="timesteps"):
        scheduler.add_noise(plain)


def test_schedulers_round_trip_and_carry_the_ratio(tmp_path):
    scheduler = training_scheduler(dependent_ratio=0.3, dependent_mode="progressive")
    rebuilt = type(scheduler).from_config(scheduler.config, dependent_ratio=0.6)
    assert isinstance(rebuilt, DependentDDPMScheduler)
    assert rebuilt.config.dependent_ratio == 0.6 and rebuilt.config.dependent_mode == "progressive"
    assert scheduler.config.dependent_ratio == 0.3  # rebuilt, not mutated
    torch.testing.assert_close(rebuilt.alphas_cumprod, scheduler.alphas_cumprod)
    scheduler.save_config(tmp_path)
    loaded = DependentDDPMScheduler.from_pretrained(tmp_path)
    assert loaded.config.dependent_ratio == 0.3
    ddim = DependentDDIMScheduler.from_config(scheduler.config)
    assert ddim.config.dependent_ratio == 0.3 and ddim.config.beta_end == scheduler.config.beta_end
    torch.testing.assert_close(ddim.alphas_cumprod, scheduler.alphas_cumprod)


def test_ddim_step_with_eta_uses_dependent_noise():
    ddim = DependentDDIMScheduler.from_config(training_scheduler(dependent_ratio=0.8).config)
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim.step(torch.zeros(2, 3, 4, 5, 6), 999, torch.zeros(2, 3, 4, 5, 6))
    ddim.set_timesteps(10)
    sample = torch.zeros(8, 4, 5, 16, 16)
    t = int(ddim.timesteps[2])
    deterministic = ddim.step(sample, t, sample, eta=0.0).prev_sample
    stochastic = ddim.step(sample, t, sample, eta=1.0, generator=gen(3)).prev_sample
    assert abs(float(frame_correlation(stochastic - deterministic)) - 0.8) < 0.05
