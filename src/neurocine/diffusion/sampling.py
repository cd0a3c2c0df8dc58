"""DDIM sampling with classifier-free guidance and dependent initial noise.

Plain functions of the networks (no Lightning): :func:`guided_noise` is one guided ε̂, and
:func:`ddim_sample` is the DDIM loop (Song et al. 2021) on a
:class:`~neurocine.diffusion.scheduler.DependentDDIMScheduler` built from the training
scheduler's config, so the initial latent x_T (and, with ``eta > 0``, every step's noise) is the
dependent noise the model was trained with. Given ``init_latents`` and ``strength < 1`` the loop
starts part-way, from those latents diffused to the first remaining timestep (SDEdit, Meng et al.
2022; diffusers' img2img ``strength``): the low-level start of NeuroClips and MindEye.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from neurocine.diffusion.noise import Generator
from neurocine.diffusion.scheduler import DependentDDIMScheduler
from neurocine.errors import ConfigError
from neurocine.models.video_unet import predict_noise


def guided_noise(
    unet: nn.Module,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    cond: torch.Tensor,
    null_cond: torch.Tensor,
    guidance_scale: float,
) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6): ε̂_u + s · (ε̂_c − ε̂_u).

    ``s = 1`` is the conditional prediction alone (one UNet call); otherwise the conditional and
    unconditional branches run as one batch of ``2B``.
    """
    if guidance_scale == 1.0:
        return predict_noise(unet, latents, timestep, cond)
    both = predict_noise(
        unet, torch.cat([latents, latents]), timestep, torch.cat([null_cond, cond])
    )
    uncond, conditional = both.chunk(2)
    return uncond + guidance_scale * (conditional - uncond)


def sampling_scheduler(scheduler: Any, **changes: Any) -> DependentDDIMScheduler:
    """A fresh DDIM scheduler from any dependent scheduler's config (ρ and β carry over)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return DependentDDIMScheduler.from_config(scheduler.config, **changes)


@torch.no_grad()
def ddim_sample(
    unet: nn.Module,
    scheduler: Any,
    cond: torch.Tensor,
    null_cond: torch.Tensor,
    latent_shape: Sequence[int],
    *,
    steps: int = 25,
    guidance_scale: float = 3.0,
    eta: float = 0.0,
    generator: Generator = None,
    dependent_ratio: float | None = None,
    callback: Callable[[int, int], None] | None = None,
    init_latents: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Sample latents ``[B, C, F, h, w]`` conditioned on ``cond``.

    Parameters
    ----------
    unet : nn.Module
        The video denoiser (ε-prediction).
    scheduler : scheduler with ``dependent_ratio`` in its config
        The training scheduler (or any :class:`DependentDDIMScheduler`); not modified.
    cond, null_cond : Tensor of shape (B, L, D)
        Projected condition tokens and the null condition.
    latent_shape : sequence of int
        ``(C, F, h, w)``.
    steps : int, default=25
        DDIM steps.
    guidance_scale : float, default=3.0
        Classifier-free guidance scale ``s`` (1: conditional only).
    eta : float, default=0.0
        DDIM's η (0: deterministic given x_T).
    generator : torch.Generator or list of torch.Generator, optional
        One generator per sample makes each video independent of the batch it is drawn in.
    dependent_ratio : float, optional
        ρ of the initial noise; None: the scheduler's (as trained).
    callback : callable, optional
        Called as ``callback(step, n)`` after every step (progress bars; ``n`` steps run).
    init_latents : Tensor of shape (B, C, F, h, w), optional
        Where to start instead of pure noise (with ``strength``).
    strength : float, default=1.0
        Share of the ``steps`` that run, as diffusers' img2img: the loop skips the first
        ``steps − int(steps · strength)`` timesteps and starts from ``init_latents`` diffused to
        the first remaining one with the scheduler's dependent noise. Without
        ``init_latents`` it must be 1.0 (pure noise).
    """
    if steps < 1:
        raise ConfigError(f"sampling.steps={steps}: must be ≥ 1")
    if cond.shape != null_cond.shape:
        raise ConfigError(f"cond {tuple(cond.shape)} and null cond {tuple(null_cond.shape)} differ")
    if not 0.0 < strength <= 1.0:
        raise ConfigError(f"sampling.strength={strength}: must be in (0, 1]")
    if init_latents is None and strength != 1.0:
        raise ConfigError(
            f"sampling.strength={strength} needs an initial video: set sampling.init=ridge"
        )
    ddim = sampling_scheduler(scheduler, dependent_ratio=dependent_ratio)
    ddim.set_timesteps(steps, device=cond.device)
    shape = (cond.shape[0], *(int(s) for s in latent_shape))
    noise = ddim.sample_noise(shape, generator, device=cond.device, dtype=cond.dtype)
    timesteps = ddim.timesteps
    if init_latents is None:
        latents = noise * ddim.init_noise_sigma
    else:
        if tuple(init_latents.shape) != shape:
            raise ConfigError(f"initial latents {tuple(init_latents.shape)}, expected {shape}")
        run = int(steps * strength)
        if run < 1:
            raise ConfigError(
                f"sampling.strength={strength} with sampling.steps={steps} leaves no DDIM step"
            )
        timesteps = timesteps[steps - run :]
        start = timesteps[:1].repeat(shape[0])
        latents = ddim.add_noise(init_latents.to(noise.dtype), noise, start)
    for i, t in enumerate(timesteps):
        model_input = ddim.scale_model_input(latents, t)
        eps = guided_noise(unet, model_input, t, cond, null_cond, guidance_scale)
        latents = ddim.step(eps, t, latents, eta=eta, generator=generator, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, len(timesteps))
    return latents
