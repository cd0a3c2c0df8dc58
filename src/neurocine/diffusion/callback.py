"""``DependentNoiseCallback``: installs the dependent-noise scheduler on a diffusion module.

The module exposes ``noise_scheduler`` (a
:class:`~neurocine.diffusion.scheduler.DependentDDPMScheduler`) and asks for all its noise
through ``noise_sampler(shape, generator)``, which delegates to ``noise_scheduler.sample_noise``.
The callback never mutates a scheduler: at fit start, and whenever its schedule changes ρ, it
replaces the module's scheduler by
``type(s).from_config(s.config, dependent_ratio=ρ, dependent_mode=mode)``. Without the callback
the module keeps its own scheduler (ρ = 0: independent noise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning as L

from neurocine.diffusion.noise import check_ratio
from neurocine.errors import ConfigError

UNITS = ("epoch", "step")


def _parse_schedule(schedule: Mapping, unit: str) -> list[tuple[int, float]]:
    points = []
    for key, value in schedule.items():
        try:
            at = int(key)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"stage2.noise.schedule: key '{key}' is not an integer {unit} number"
            ) from exc
        if at < 0:
            raise ConfigError(f"stage2.noise.schedule: {unit} {at} is negative")
        check_ratio(float(value))
        points.append((at, float(value)))
    return sorted(points)


class DependentNoiseCallback(L.Callback):
    """Set the dependent noise ratio ρ of a module's noise scheduler, optionally on a schedule.

    Parameters
    ----------
    ratio : float
        ρ in [0, 1] from fit start (until the schedule's first point, if any).
    schedule : mapping of int to float, or callable, optional
        Piecewise-constant ρ: ``{epoch: ρ}`` (``{"0": 0.0, "5": 0.5}`` holds 0 for epochs 0–4,
        then 0.5), keys counted in ``unit``; or a function ``(epoch, global_step) → ρ``.
    mode : {"mixed", "progressive"}, default="mixed"
    unit : {"epoch", "step"}, default="epoch"
        What the schedule's keys count; with ``step``, ρ is checked before every batch.
    """

    def __init__(
        self,
        ratio: float,
        schedule: Mapping | Callable[[int, int], float] | None = None,
        mode: str = "mixed",
        unit: str = "epoch",
    ) -> None:
        check_ratio(ratio, mode)
        if unit not in UNITS:
            raise ConfigError(f"stage2.noise.schedule_unit='{unit}': expected one of {UNITS}")
        self.ratio = float(ratio)
        self.mode = mode
        self.unit = unit
        self._fn = schedule if callable(schedule) else None
        self._points = _parse_schedule(schedule, unit) if isinstance(schedule, Mapping) else []

    def ratio_at(self, epoch: int, step: int) -> float:
        """ρ in effect at ``epoch`` / ``global_step``."""
        if self._fn is not None:
            value = float(self._fn(epoch, step))
            check_ratio(value, self.mode)
            return value
        now = epoch if self.unit == "epoch" else step
        value = self.ratio
        for at, point in self._points:
            if at <= now:
                value = point
        return value

    def install(self, module: L.LightningModule, ratio: float) -> None:
        """Give ``module`` a scheduler with ρ = ``ratio`` (a new one, only if ρ/mode change)."""
        scheduler = getattr(module, "noise_scheduler", None)
        if scheduler is None or "dependent_ratio" not in scheduler.config:
            raise ConfigError(
                f"DependentNoiseCallback: {type(module).__name__} has no noise_scheduler with a "
                "dependent_ratio (a DependentDDPMScheduler) to install the noise on"
            )
        config = scheduler.config
        if config.dependent_ratio == ratio and config.dependent_mode == self.mode:
            return
        module.noise_scheduler = type(scheduler).from_config(
            config, dependent_ratio=ratio, dependent_mode=self.mode
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install(pl_module, self.ratio_at(trainer.current_epoch, trainer.global_step))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install(pl_module, self.ratio_at(trainer.current_epoch, trainer.global_step))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        if self.unit == "step" or self._fn is not None:
            self.install(pl_module, self.ratio_at(trainer.current_epoch, trainer.global_step))


def callback_from_config(noise_cfg) -> DependentNoiseCallback:
    """The callback for ``cfg.stage2.noise`` (ratio, mode, schedule, schedule_unit)."""
    schedule = dict(noise_cfg.schedule) if noise_cfg.schedule else None
    return DependentNoiseCallback(
        float(noise_cfg.ratio),
        schedule=schedule,
        mode=str(noise_cfg.mode),
        unit=str(getattr(noise_cfg, "schedule_unit", "epoch")),
    )
