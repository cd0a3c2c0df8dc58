"""What the three pretraining recipes share: data config, recipe loading, trainer, output, card.

A recipe is a dataclass (``ClipRecipe``, ``VaeRecipe``, ``PriorRecipe``) whose fields are the
exact knobs of one run; ``key=value`` overrides are merged into it strictly (an unknown key is a
:class:`~neurocine.errors.ConfigError`). A run writes its model into a temporary sibling of
``--out`` and renames it into place only when the model, its ``recipe.yaml``, ``quality.json``
and ``MODEL_CARD.md`` are all written.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from neurocine.config import SimulationConfig, parse_overrides
from neurocine.errors import ConfigError
from neurocine.machine import machine
from neurocine.pretrain.data import PretrainClips, cache_dir, cached_clips

PRETRAINED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"


def shipped_dir(name: str) -> Path:
    """``neurocine/pretrained/<name>`` inside the installed package (clip | vae | prior)."""
    return PRETRAINED_ROOT / name


@dataclass
class PretrainDataConfig:
    """The pretraining clips: the simulated world of ``neurocine simulate``, another seed."""

    seed: int = 100  # training clips; held-out clips use seed + 1
    n_train: int = 6000
    n_val: int = 512
    cache: str | None = None  # folder of the rendered-clip cache (None: $NEUROCINE_CACHE or ~)
    height: int = SimulationConfig.height
    width: int = SimulationConfig.width
    fps: float = SimulationConfig.fps
    tr_s: float = SimulationConfig.tr_s
    scene_mean_s: float = SimulationConfig.scene_mean_s


@dataclass
class RunConfig:
    """Trainer settings every recipe shares."""

    seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    accelerator: str = "auto"  # auto: the GPU when there is one
    threads: int = 0  # torch CPU threads (0: torch's default); 1 is fastest on a busy machine
    max_minutes: float = 0.0  # end training after this wall time, then save (0: all steps)
    precision: str = "32-true"
    log_every_n_steps: int = 50
    progress: bool = True
    fp16: bool = True  # store the weights as float16
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)


def load_recipe(schema: type, overrides: Sequence[str] = ()) -> DictConfig:
    """``schema``'s defaults ← ``key=value`` overrides (strict: unknown keys are errors)."""
    cfg = OmegaConf.structured(schema)
    try:
        cfg = OmegaConf.merge(cfg, parse_overrides(overrides))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"pretrain overrides: key '{key}': {first}") from exc
    OmegaConf.set_struct(cfg, True)
    return cfg


def load_data(cfg: DictConfig) -> tuple[PretrainClips, PretrainClips]:
    """The training and held-out clips of ``cfg.data`` (rendered once, then cached)."""
    d = cfg.data
    world = {
        "height": int(d.height),
        "width": int(d.width),
        "fps": float(d.fps),
        "tr_s": float(d.tr_s),
        "scene_mean_s": float(d.scene_mean_s),
    }
    train = cached_clips(d.cache, n_clips=int(d.n_train), seed=int(d.seed), **world)
    val = cached_clips(d.cache, n_clips=int(d.n_val), seed=int(d.seed) + 1, **world)
    return train, val


def warmup_cosine_lambda(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up, then cosine decay to 0 at ``total_steps``."""
    import math

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def adamw_with_schedule(module: L.LightningModule, params, cfg: DictConfig) -> dict:
    """AdamW + per-step warm-up/cosine schedule, as ``configure_optimizers`` returns it."""
    opt = torch.optim.AdamW(params, lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine_lambda(int(cfg.warmup_steps), int(cfg.steps))
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


STOP_FILE = "STOP"


class StopFile(L.Callback):
    """End training (then save as usual) once ``path`` exists: ``touch <log dir>/STOP``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.unlink(missing_ok=True)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.path.exists():
            trainer.should_stop = True


def log_dir(cfg: DictConfig, name: str) -> Path:
    """Where a recipe's CSV logs go: beside the clip cache, never inside the shipped folder."""
    return cache_dir(cfg.data.cache) / "logs" / name


def build_trainer(cfg: DictConfig, log_dir: Path) -> L.Trainer:
    """A Trainer for ``cfg.steps`` optimiser steps; CSV logs go to ``log_dir`` (not shipped).

    Training also ends after ``cfg.max_minutes`` or when ``log_dir/STOP`` appears; the model is
    saved either way and its card records the steps done. Applies ``cfg.threads`` (the
    process-wide torch CPU thread count) when it is set.
    """
    from lightning.pytorch.loggers import CSVLogger

    if int(cfg.threads) > 0:
        torch.set_num_threads(int(cfg.threads))
    callbacks: list[L.Callback] = [StopFile(log_dir / STOP_FILE)]
    if float(cfg.max_minutes) > 0:
        from datetime import timedelta

        from lightning.pytorch.callbacks import Timer

        callbacks.append(Timer(duration=timedelta(minutes=float(cfg.max_minutes))))
    return L.Trainer(
        callbacks=callbacks,
        accelerator=str(cfg.accelerator),
        devices=1,
        precision=str(cfg.precision),
        max_steps=int(cfg.steps),
        max_epochs=-1,
        logger=CSVLogger(str(log_dir), name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=bool(cfg.progress),
        enable_model_summary=False,
        log_every_n_steps=int(cfg.log_every_n_steps),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=1.0,
    )


def command_line() -> str:
    """The command that is running, as a user would type it."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in {"neurocine", "__main__.py"}:
        argv[0] = "neurocine"
    return " ".join(argv)


@dataclass
class RunRecord:
    """What a model card states about one run."""

    name: str
    command: str
    recipe: DictConfig
    wall_s: float
    n_params: int
    quality_table: str
    quality: dict[str, Any]
    description: str
    outputs: str
    steps_done: int = -1  # optimiser steps actually taken (-1: the recipe's steps)
    train_s: float = 0.0  # seconds of training alone
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M %Z"))
    machine: str = field(default_factory=machine)


def write_card(directory: Path, record: RunRecord) -> None:
    """``MODEL_CARD.md``, ``recipe.yaml`` and ``quality.json`` of a shipped model."""
    d = record.recipe.data
    steps = record.steps_done if record.steps_done >= 0 else record.recipe.steps
    (directory / "recipe.yaml").write_text(OmegaConf.to_yaml(record.recipe, resolve=True))
    meta = {
        "name": record.name,
        "command": record.command,
        "wall_s": round(record.wall_s, 1),
        "train_s": round(record.train_s, 1),
        "steps_done": int(steps),
        "machine": record.machine,
        "date": record.started,
        "n_params": record.n_params,
        "quality": record.quality,
    }
    (directory / "quality.json").write_text(json.dumps(meta, indent=2) + "\n")
    size_mb = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / 1e6
    card = f"""# NeuroCine tiny {record.name} (trained on the simulated world)

{record.description}

## How it was made

```
{record.command}
```

| | |
|---|---|
| seed | {record.recipe.seed} (data seed {d.seed}; held-out clips: seed {d.seed + 1}) |
| data | {d.n_train} training clips + {d.n_val} held-out clips of {d.tr_s * d.fps:g} frames, \
{d.height}×{d.width}, {d.fps:g} fps (the world of `neurocine simulate`, no fMRI) |
| steps | {steps} (batch {record.recipe.batch_size}, lr {record.recipe.lr:g}; recipe steps \
{record.recipe.steps}, max_minutes {record.recipe.max_minutes:g}) |
| parameters | {record.n_params:,} (stored as {"float16" if record.recipe.fp16 else "float32"}) |
| wall time | {record.wall_s / 60:.1f} min ({record.train_s / 60:.1f} min training, the rest data \
and evaluation) |
| machine | {record.machine} |
| date | {record.started} |
| size on disk | {size_mb:.2f} MB (before this card) |

The full recipe is `recipe.yaml`; `make pretrained` regenerates all three models.

## Outputs

{record.outputs}

## Quality on held-out simulated clips

{record.quality_table}
"""
    (directory / "MODEL_CARD.md").write_text(card)


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def uint8_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[..., H, W, 3]`` → float ``[..., 3, H, W]`` in [-1, 1] (the VAE's range)."""
    x = frames.float().div(127.5).sub(1.0)
    return x.movedim(-1, -3)


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float ``[..., 3, H, W]`` in [-1, 1] → uint8 ``[..., H, W, 3]``."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).movedim(-3, -1)
