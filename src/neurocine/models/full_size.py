"""Stable Diffusion 1.5's architecture from config in code: checks of the full-size stage 2.

``experiments/stage2_full.yaml`` loads Stable Diffusion 1.x from a local directory
(``unet.pretrained``, diffusers' layout), and nothing here can download it.
:data:`SD15_UNET_CONFIG` and :data:`SD15_VAE_CONFIG` are the published ``unet/config.json`` and
``vae/config.json`` of Stable Diffusion v1.5 (``sample_size`` set for 256-pixel frames: 32×32
latents; it only sets a pipeline's default output size). :func:`write_random_sd` writes a
randomly initialised directory of that architecture, which
:func:`~neurocine.models.video_unet.build_denoiser` loads and inflates exactly as it does the real
weights: same classes, shapes, attention processors and motion modules; only the numbers differ.
Use it to check a full-size setup (memory, step time, DDP) before the real weights are at hand::

    write_random_sd("data/sd15-random")  # ~3.7 GB of float32 weights
    neurocine train stage2 --config experiments/stage2_full.yaml unet.pretrained=data/sd15-random …
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from neurocine.fileio import atomic_dir

# Stable Diffusion v1.5 unet/config.json (859.5 M parameters); sample_size 32: 256-pixel frames.
SD15_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,  # diffusers' historical name: 8 *heads* per attention layer
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
}

# Stable Diffusion v1.5 vae/config.json (83.7 M parameters; 8× down-sampling, 4 latent channels).
SD15_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": 0.18215,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def sd15_unet2d(config: dict[str, Any] | None = None) -> UNet2DConditionModel:
    """A randomly initialised ``UNet2DConditionModel`` of ``config`` (default: SD 1.5's).

    Initialised from the global RNG on the current default device, so
    ``with torch.device("meta"): sd15_unet2d()`` describes the model without allocating it.
    """
    return UNet2DConditionModel.from_config(copy.deepcopy(config or SD15_UNET_CONFIG))


def write_random_sd(
    directory: str | Path,
    unet_config: dict[str, Any] | None = None,
    vae_config: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Write a random Stable Diffusion directory (``unet/``, ``vae/``) in diffusers' layout.

    Parameters
    ----------
    directory : str or Path
        Where to write; replaced if it exists. Written to a temporary sibling and renamed.
    unet_config, vae_config : dict, optional
        ``UNet2DConditionModel`` / ``AutoencoderKL`` configs; default: Stable Diffusion 1.5's.
    seed : int, default=0
        Seeds the initialisation (the global RNG is left as it was).

    Returns
    -------
    Path
        ``directory``, loadable as ``unet.preset=sd15 unet.pretrained=<directory>``.
    """
    with atomic_dir(directory) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = sd15_unet2d(unet_config)
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        del unet  # one model in memory at a time
        vae = AutoencoderKL.from_config(copy.deepcopy(vae_config or SD15_VAE_CONFIG))
        vae.save_pretrained(tmp / "vae", safe_serialization=True)
    return Path(directory)
