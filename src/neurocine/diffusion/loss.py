"""The ε-prediction diffusion loss (Ho et al. 2020, eq. 14), a plain function of the parts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neurocine.models.video_unet import predict_noise


def epsilon_loss(
    unet: nn.Module,
    scheduler,
    latents: torch.Tensor,
    cond: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """‖ε − ε̂(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t, c)‖² averaged over all elements.

    Parameters
    ----------
    unet : nn.Module
        The video denoiser.
    scheduler : diffusers scheduler
        Provides ``add_noise`` (q(x_t | x_0)).
    latents : Tensor of shape (B, C, F, h, w)
        x_0 in the denoiser's space.
    cond : Tensor of shape (B, L, D)
        Projected condition (already dropped for classifier-free guidance).
    noise : Tensor of shape (B, C, F, h, w)
        ε, drawn by the module's noise sampler (dependent noise when installed).
    timesteps : Tensor of shape (B,)
    """
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = predict_noise(unet, noisy, timesteps, cond)
    return F.mse_loss(prediction.float(), noise.float())
