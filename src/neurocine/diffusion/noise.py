"""Dependent prior noise for video diffusion (docs/design.md §6).

For a clip of ``F`` frames the noise of frame ``f`` is

    mixed:        ε_f = √ρ · ε_shared + √(1 − ρ) · ε_f^ind
    progressive:  ε_0 = ε_0^ind,  ε_f = ρ · ε_{f−1} + √(1 − ρ²) · ε_f^ind

with ``ε_shared, ε_f^ind ~ N(0, I)`` i.i.d. Every frame stays N(0, I). In ``mixed`` mode any two
frames of a clip have correlation ρ (PYoCo's mixed prior, Ge et al. 2023, with
ρ = α² / (1 + α²)); in ``progressive`` mode neighbouring frames have correlation ρ and frames
``k`` apart ρᵏ (PYoCo's progressive prior). ρ = 0 is the standard independent noise: the draw is
then exactly ``torch.randn(shape, generator=generator)``, so a seed gives the same noise as
diffusers' own ``randn_tensor``. Different clips (batch elements) are always independent.

This function is the only implementation; the scheduler (:mod:`neurocine.diffusion.scheduler`)
calls it for ``add_noise``, for DDIM's variance noise and for the initial latent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from neurocine.errors import ConfigError

MODES = ("mixed", "progressive")

Generator = torch.Generator | Sequence[torch.Generator] | None


def check_ratio(ratio: float, mode: str = "mixed") -> None:
    """Raise ConfigError unless ``0 ≤ ratio ≤ 1`` and ``mode`` is known."""
    if not 0.0 <= float(ratio) <= 1.0:
        raise ConfigError(
            f"stage2.noise.ratio={ratio}: the dependent noise ratio must be in [0, 1]"
        )
    if mode not in MODES:
        raise ConfigError(f"stage2.noise.mode='{mode}': expected one of {MODES}")


def dependent_noise(
    shape: Sequence[int],
    ratio: float,
    generator: Generator = None,
    *,
    mode: str = "mixed",
    frame_dim: int = 2,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard-normal video noise whose frames are correlated with ratio ρ.

    Parameters
    ----------
    shape : sequence of int
        Noise shape in diffusers' video layout ``(batch, channels, frames, height, width)``.
    ratio : float
        ρ in [0, 1]: the correlation between two frames (``mixed``) or two neighbouring frames
        (``progressive``) of a clip. 0 gives independent noise.
    generator : torch.Generator or list of torch.Generator, optional
        Source of randomness; a list holds one generator per batch element (as in diffusers'
        ``randn_tensor``), so each clip's noise does not depend on the batch it is drawn in.
    mode : {"mixed", "progressive"}, default="mixed"
    frame_dim : int, default=2
        The frame axis of ``shape``.
    device, dtype : optional
        Where and in what precision the noise is returned (drawn on the generator's device).

    Returns
    -------
    Tensor of shape ``shape``
    """
    check_ratio(ratio, mode)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"dependent_noise: shape {shape} needs a batch and a frame axis")
    frame_dim = frame_dim % len(shape)
    if frame_dim == 0:
        raise ValueError("dependent_noise: frame_dim is the batch axis")
    dtype = dtype or torch.float32
    if isinstance(generator, Sequence):
        if len(generator) != shape[0]:
            raise ValueError(
                f"dependent_noise: {len(generator)} generators for a batch of {shape[0]}"
            )
        parts = [
            dependent_noise(
                (1, *shape[1:]),
                ratio,
                g,
                mode=mode,
                frame_dim=frame_dim,
                device=device,
                dtype=dtype,
            )
            for g in generator
        ]
        return torch.cat(parts, dim=0)
    if device is None and generator is not None:
        device = generator.device
    # The independent part is drawn first, so that ρ = 0 and ρ > 0 share it for one seed.
    noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    ratio = float(ratio)
    if ratio == 0.0:
        return noise
    if mode == "mixed":
        shared_shape = list(shape)
        shared_shape[frame_dim] = 1
        shared = randn_tensor(tuple(shared_shape), generator=generator, device=device, dtype=dtype)
        return math.sqrt(ratio) * shared + math.sqrt(1.0 - ratio) * noise
    # progressive: an AR(1) chain along the frame axis, stationary at N(0, 1).
    frames = noise.unbind(frame_dim)
    keep = math.sqrt(1.0 - ratio * ratio)
    out = [frames[0]]
    for frame in frames[1:]:
        out.append(ratio * out[-1] + keep * frame)
    return torch.stack(out, dim=frame_dim)


def frame_correlation(noise: torch.Tensor, frame_dim: int = 2, lag: int = 1) -> torch.Tensor:
    """Empirical correlation between frames ``f`` and ``f + lag`` of each clip, pooled.

    A diagnostic of the noise a model is trained with (logged as ``train/noise_frame_corr``):
    about ρ for dependent noise, about 0 for independent noise. Assumes zero-mean, unit-variance
    entries, as :func:`dependent_noise` draws them.
    """
    if noise.shape[frame_dim] <= lag:
        return noise.new_zeros(())
    a = noise.narrow(frame_dim, 0, noise.shape[frame_dim] - lag).float()
    b = noise.narrow(frame_dim, lag, noise.shape[frame_dim] - lag).float()
    return (a * b).mean() / (a.pow(2).mean() * b.pow(2).mean()).sqrt()
