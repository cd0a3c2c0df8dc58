"""DDIM sampling: determinism, shapes, classifier-free guidance, dependent initial noise."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from stage2_helpers import (
    CROSS_DIM,
    FRAMES,
    HEIGHT,
    N_VOXELS,
    OUT_DIM,
    OUT_TOKENS,
    TINY_UNET,
    WIDTH,
    WINDOW,
    tiny_encoder,
)
from torch import nn

from neurocine.config import UNetConfig
from neurocine.diffusion.noise import frame_correlation
from neurocine.diffusion.pipeline import VideoDecoder
from neurocine.diffusion.sampling import ddim_sample, guided_noise
from neurocine.diffusion.scheduler import training_scheduler
from neurocine.errors import ConfigError
from neurocine.models.video_unet import ConditionAdapter, build_denoiser, predict_noise

B = 3


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def decoder() -> VideoDecoder:
    cfg = OmegaConf.merge(
        OmegaConf.structured(UNetConfig),
        OmegaConf.from_dotlist([o.removeprefix("unet.") for o in TINY_UNET]),
    )
    denoiser = build_denoiser(cfg, seed=0)
    # Non-zero motion modules and null condition, as after training.
    with torch.no_grad():
        for name, param in denoiser.unet.named_parameters():
            if "motion_modules" in name and "proj_out" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    adapter = ConditionAdapter(OUT_DIM, CROSS_DIM, OUT_TOKENS)
    with torch.no_grad():
        adapter.null_tokens.normal_(generator=torch.Generator().manual_seed(2))
    scheduler = training_scheduler(clip_sample=True, dependent_ratio=0.4)
    return VideoDecoder(
        tiny_encoder().eval(), adapter, denoiser.unet, denoiser.codec, scheduler,
        (FRAMES, HEIGHT, WIDTH),
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def fmri() -> torch.Tensor:
    return torch.randn(B, WINDOW, N_VOXELS, generator=torch.Generator().manual_seed(9))


def test_sampling_is_deterministic_for_a_seed_and_has_the_configured_shape(decoder, fmri):
    calls = []
    kwargs = dict(steps=3, guidance_scale=2.0)
    a = decoder.generate(
        fmri, generator=gens(0, 1, 2), callback=lambda i, n: calls.append((i, n)), **kwargs
    )
    b = decoder.generate(fmri, generator=gens(0, 1, 2), **kwargs)
    c = decoder.generate(fmri, generator=gens(5, 6, 7), **kwargs)
    assert a.shape == (B, FRAMES, HEIGHT, WIDTH, 3) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert calls == [(1, 3), (2, 3), (3, 3)]
    # More steps is a different (configurable) trajectory.
    assert not torch.equal(
        a, decoder.generate(fmri, generator=gens(0, 1, 2), steps=4, guidance_scale=2.0)
    )


def test_each_video_depends_only_on_its_own_seed(decoder, fmri):
    batch = decoder.generate(fmri, steps=2, guidance_scale=1.5, generator=gens(10, 11, 12))
    for i in range(B):
        alone = decoder.generate(
            fmri[i : i + 1], steps=2, guidance_scale=1.5, generator=gens(10 + i)
        )
        assert (batch[i].int() - alone[0].int()).abs().max() <= 1  # float reassociation only


def test_a_given_condition_replaces_the_fmris_and_only_one_is_taken(decoder, fmri):
    kwargs = dict(steps=2, guidance_scale=2.0)
    from_fmri = decoder.generate(fmri, generator=gens(0, 1, 2), **kwargs)
    with torch.no_grad():
        cond = decoder.condition(fmri)
    given = decoder.generate(None, condition=cond, generator=gens(0, 1, 2), **kwargs)
    assert torch.equal(given, from_fmri)
    swapped = decoder.generate(None, condition=cond.flip(0), generator=gens(0, 1, 2), **kwargs)
    assert not torch.equal(swapped, from_fmri)
    with pytest.raises(ValueError, match="either fmri or a condition"):
        decoder.generate(fmri, condition=cond, **kwargs)
    with pytest.raises(ValueError, match="either fmri or a condition"):
        decoder.generate(None, **kwargs)
    # This decoder's adapter takes the encoder's tokens: no CLIP embedding goes in.
    with pytest.raises(ConfigError, match="'tokens' condition adapter"):
        decoder.condition_from_embedding(torch.randn(B, 12))


def test_eta_adds_seeded_noise(decoder, fmri):
    plain = decoder.generate(fmri, steps=3, eta=0.0, generator=gens(0, 1, 2))
    noisy = decoder.generate(fmri, steps=3, eta=1.0, generator=gens(0, 1, 2))
    again = decoder.generate(fmri, steps=3, eta=1.0, generator=gens(0, 1, 2))
    assert torch.equal(noisy, again) and not torch.equal(noisy, plain)


def test_guidance_scale_one_is_the_conditional_prediction(decoder, fmri):
    unet = decoder.unet
    latents = torch.randn(B, 12, FRAMES, 8, 10, generator=torch.Generator().manual_seed(3))
    t = torch.tensor(500)
    with torch.no_grad():
        cond = decoder.condition(fmri)
        null = decoder.adapter.null(B)
        conditional = predict_noise(unet, latents, t, cond)
        unconditional = predict_noise(unet, latents, t, null)
        assert not torch.allclose(conditional, unconditional, atol=1e-4)
        torch.testing.assert_close(guided_noise(unet, latents, t, cond, null, 1.0), conditional)
        tol = dict(atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            guided_noise(unet, latents, t, cond, null, 0.0), unconditional, **tol
        )
        expected = unconditional + 2.5 * (conditional - unconditional)
        torch.testing.assert_close(guided_noise(unet, latents, t, cond, null, 2.5), expected, **tol)


class ZeroNoise(nn.Module):
    """A denoiser that predicts ε̂ = 0: DDIM (η = 0) then only rescales the initial latent."""

    def forward(self, sample, timestep, encoder_hidden_states):
        return SimpleNamespace(sample=torch.zeros_like(sample))


@pytest.mark.parametrize("ratio", [0.0, 0.7])
def test_initial_latent_is_dependent_noise(ratio):
    scheduler = training_scheduler(dependent_ratio=ratio)
    cond = torch.zeros(16, 2, 4)
    shape = (4, 5, 16, 16)
    out = ddim_sample(
        ZeroNoise(), scheduler, cond, cond, shape, steps=3, generator=gens(*range(16))
    )
    assert out.shape == (16, *shape)
    assert abs(float(frame_correlation(out)) - ratio) < 0.03
    # The sampling ratio can differ from the trained one; the scheduler is not modified.
    other = ddim_sample(
        ZeroNoise(), scheduler, cond, cond, shape, steps=3, generator=gens(*range(16)),
        dependent_ratio=0.3,
    )  # fmt: skip
    assert abs(float(frame_correlation(other)) - 0.3) < 0.03
    assert scheduler.config.dependent_ratio == ratio and scheduler.num_inference_steps is None


def test_bad_sampling_arguments():
    cond = torch.zeros(2, 2, 4)
    with pytest.raises(ConfigError, match="sampling.steps"):
        ddim_sample(ZeroNoise(), training_scheduler(), cond, cond, (4, 5, 8, 8), steps=0)
    with pytest.raises(ConfigError, match="null cond"):
        ddim_sample(ZeroNoise(), training_scheduler(), cond, cond[:1], (4, 5, 8, 8), steps=1)


def test_a_start_from_initial_latents_runs_the_last_share_of_the_steps():
    # ε̂ = 0: each DDIM step (η = 0) keeps x̂_0 = x_t / √ᾱ_t, and the last one returns it, so the
    # output is init + √((1 − ᾱ_t) / ᾱ_t) · noise at the first timestep that runs.
    scheduler = training_scheduler(dependent_ratio=0.5)
    cond = torch.zeros(4, 2, 4)
    shape = (4, 5, 8, 8)
    init = torch.randn(4, *shape, generator=torch.Generator().manual_seed(0))
    errors, calls = {}, {}
    for strength in (0.1, 0.5, 0.9):
        seen = calls[strength] = []
        out = ddim_sample(
            ZeroNoise(), scheduler, cond, cond, shape, steps=10, generator=gens(0, 1, 2, 3),
            init_latents=init, strength=strength, callback=lambda i, n, s=seen: s.append((i, n)),
        )  # fmt: skip
        errors[strength] = float((out - init).abs().mean())
    assert calls[0.5] == [(i, 5) for i in range(1, 6)] and len(calls[0.1]) == 1
    assert errors[0.1] < 0.05 < errors[0.5] < errors[0.9]  # t = 0 (ᾱ ≈ 1), then 400, 800
    pure = ddim_sample(
        ZeroNoise(), scheduler, cond, cond, shape, steps=10, generator=gens(0, 1, 2, 3)
    )
    assert float((pure - init).abs().mean()) > errors[0.9]  # from t = 900


def test_bad_start_arguments():
    cond = torch.zeros(2, 2, 4)
    shape = (4, 5, 8, 8)
    init = torch.zeros(2, *shape)
    with pytest.raises(ConfigError, match=r"sampling.strength=0.5 needs an initial video"):
        ddim_sample(ZeroNoise(), training_scheduler(), cond, cond, shape, steps=2, strength=0.5)
    with pytest.raises(ConfigError, match=r"sampling.strength=0.0: must be in \(0, 1\]"):
        ddim_sample(ZeroNoise(), training_scheduler(), cond, cond, shape, steps=2,
                    init_latents=init, strength=0.0)  # fmt: skip
    with pytest.raises(ConfigError, match="leaves no DDIM step"):
        ddim_sample(ZeroNoise(), training_scheduler(), cond, cond, shape, steps=4,
                    init_latents=init, strength=0.2)  # fmt: skip
    with pytest.raises(ConfigError, match=r"initial latents \(2, 4, 5, 8, 4\)"):
        ddim_sample(ZeroNoise(), training_scheduler(), cond, cond, shape, steps=4,
                    init_latents=init[..., :4], strength=0.5)  # fmt: skip


def test_decoder_starts_from_initial_frames(decoder, fmri):
    # The tiny preset's codec is lossless (space-to-depth): one DDIM step at t = 0 returns
    # nearly the initial frames themselves.
    init = torch.randint(0, 256, (B, FRAMES, HEIGHT, WIDTH, 3), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(4))  # fmt: skip
    out = decoder.generate(fmri, steps=10, guidance_scale=1.0, generator=gens(0, 1, 2),
                           init_frames=init, strength=0.1)  # fmt: skip
    plain = decoder.generate(fmri, steps=10, guidance_scale=1.0, generator=gens(0, 1, 2))
    near = (out.float() - init.float()).abs().mean()
    assert near < 8 < (plain.float() - init.float()).abs().mean()
