"""diffusers schedulers whose noise is the dependent prior noise (docs/design.md §6).

:class:`DependentDDPMScheduler` (training: q(x_t | x_0)) and :class:`DependentDDIMScheduler`
(sampling) are the diffusers schedulers with two more config entries, ``dependent_ratio`` (ρ)
and ``dependent_mode`` (``mixed`` | ``progressive``). Every noise draw they make goes through
:func:`neurocine.diffusion.noise.dependent_noise`:

- ``add_noise(x0, noise=None, timesteps, generator=None)`` draws the noise when none is given
  (Ho et al. 2020, eq. 4: x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε);
- ``sample_noise(shape, generator)`` gives the initial latent x_T and the training target ε;
- DDIM's ``step`` with ``eta > 0`` draws its variance noise (Song et al. 2021, eq. 12) from it.

They save and load with ``save_config``/``from_config`` like any diffusers scheduler; a change of
ρ builds a new one with ``type(s).from_config(s.config, dependent_ratio=ρ)``, and
``DependentDDIMScheduler.from_config(ddpm.config)`` carries ρ from training to sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

from neurocine.diffusion.noise import Generator, check_ratio, dependent_noise


class DependentNoiseMixin:
    """The noise draws of a scheduler with ``dependent_ratio``/``dependent_mode`` in its config."""

    config: Any  # the scheduler's (diffusers' ConfigMixin, after this class in the MRO)

    def sample_noise(
        self,
        shape: Sequence[int],
        generator: Generator = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Noise of ``shape`` ``(B, C, F, H, W)`` with this scheduler's ρ and mode."""
        return dependent_noise(
            shape,
            self.config.dependent_ratio,
            generator,
            mode=self.config.dependent_mode,
            frame_dim=self.config.dependent_frame_dim,
            device=device,
            dtype=dtype,
        )

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor | None = None,
        timesteps: torch.IntTensor | None = None,
        generator: Generator = None,
    ) -> torch.Tensor:
        """Diffuse ``original_samples`` to ``timesteps``; draw dependent noise if none is given."""
        if timesteps is None:
            raise ValueError(f"{type(self).__name__}.add_noise: timesteps are required")
        if noise is None:
            noise = self.sample_noise(
                original_samples.shape,
                generator,
                device=original_samples.device,
                dtype=original_samples.dtype,
            )
        # a mixin: the diffusers scheduler after it in the MRO defines add_noise
        return super().add_noise(original_samples, noise, timesteps)  # type: ignore[misc]


class DependentDDPMScheduler(DependentNoiseMixin, DDPMScheduler):
    """``DDPMScheduler`` with dependent prior noise (the training scheduler).

    Parameters
    ----------
    dependent_ratio : float, default=0.0
        ρ in [0, 1] (see :func:`~neurocine.diffusion.noise.dependent_noise`); 0 is independent.
    dependent_mode : {"mixed", "progressive"}, default="mixed"
    dependent_frame_dim : int, default=2
        Frame axis of the samples (diffusers' video layout ``(B, C, F, H, W)``).
    **others
        Exactly ``DDPMScheduler``'s.
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
        dependent_ratio: float = 0.0,
        dependent_mode: str = "mixed",
        dependent_frame_dim: int = 2,
    ) -> None:
        check_ratio(dependent_ratio, dependent_mode)
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            trained_betas=trained_betas,
            variance_type=variance_type,
            clip_sample=clip_sample,
            prediction_type=prediction_type,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            clip_sample_range=clip_sample_range,
            sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
        )


class DependentDDIMScheduler(DependentNoiseMixin, DDIMScheduler):
    """``DDIMScheduler`` with dependent prior noise (the sampling scheduler).

    Build it from the training scheduler with ``DependentDDIMScheduler.from_config(ddpm.config)``
    (ρ and the β schedule carry over). Parameters as :class:`DependentDDPMScheduler`'s
    ``dependent_*`` plus ``DDIMScheduler``'s.
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        dependent_ratio: float = 0.0,
        dependent_mode: str = "mixed",
        dependent_frame_dim: int = 2,
    ) -> None:
        check_ratio(dependent_ratio, dependent_mode)
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule=beta_schedule,
            trained_betas=trained_betas,
            clip_sample=clip_sample,
            set_alpha_to_one=set_alpha_to_one,
            steps_offset=steps_offset,
            prediction_type=prediction_type,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            clip_sample_range=clip_sample_range,
            sample_max_value=sample_max_value,
            timestep_spacing=timestep_spacing,
            rescale_betas_zero_snr=rescale_betas_zero_snr,
        )

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Generator = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DDIMSchedulerOutput | tuple:
        """DDIM update x_t → x_{t−1}; with ``eta > 0`` its noise is dependent noise."""
        if self.num_inference_steps is None:
            raise ValueError(f"{type(self).__name__}: call set_timesteps before step")
        if eta > 0 and variance_noise is None:
            variance_noise = self.sample_noise(
                model_output.shape, generator, device=model_output.device, dtype=model_output.dtype
            )
        return super().step(
            model_output,
            timestep,
            sample,
            eta=eta,
            use_clipped_model_output=use_clipped_model_output,
            generator=None,
            variance_noise=variance_noise,
            return_dict=return_dict,
        )


def training_scheduler(
    num_train_timesteps: int = 1000,
    beta_schedule: str = "scaled_linear",
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    clip_sample: bool = False,
    dependent_ratio: float = 0.0,
    dependent_mode: str = "mixed",
) -> DependentDDPMScheduler:
    """The ε-prediction training scheduler (Stable Diffusion's β schedule by default)."""
    return DependentDDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=beta_start,
        beta_end=beta_end,
        beta_schedule=beta_schedule,
        clip_sample=clip_sample,
        prediction_type="epsilon",
        steps_offset=1,
        dependent_ratio=dependent_ratio,
        dependent_mode=dependent_mode,
    )
