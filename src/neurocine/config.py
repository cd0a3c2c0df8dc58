"""Experiment configuration: dataclass schemas, strict omegaconf merging and overrides.

An experiment's config is composed as (docs/design.md §8)::

    schema defaults ← data_modules/<name>.yaml ← experiments/<exp>.yaml ← key=value overrides

Every layer is merged into a *structured* config built from :class:`ExperimentConfig`, so a
misspelt key or a value of the wrong type is an error that names the key path, never a silent
default. Required values are ``???`` (omegaconf's ``MISSING``).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, cast

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from neurocine.errors import ConfigError
from neurocine.fileio import atomic_path

# --- valid values ------------------------------------------------------------------------------
# Every numeric and enumerated field declares what it accepts with :func:`param`, next to its
# default; :func:`check_config` checks them all after the last layer is merged, then the rules
# between fields (:data:`CROSS_RULES`), before anything trains or writes (docs/design.md §8).

SEED_MAX = 2**32  # numpy and Lightning accept seeds in [0, 2**32)
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")  # Lightning's accelerator names
STRATEGIES = (  # the built-in strategies of Lightning this project runs (single process / DDP)
    "auto",
    "single_device",
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_notebook",
    "ddp_find_unused_parameters_true",
    "fsdp",
    "deepspeed",
)
PRECISIONS = (  # Lightning's precision names and their aliases
    "transformer-engine",
    "transformer-engine-float16",
    "16-true",
    "16-mixed",
    "bf16-true",
    "bf16-mixed",
    "32-true",
    "64-true",
    "64",
    "32",
    "16",
    "bf16",
)


class ConfigWarning(UserWarning):
    """A value that runs but may not do what was meant (said once per process)."""


@dataclass(frozen=True)
class Valid:
    """What one config field accepts: a range, a set of choices, or a predicate.

    A list field's rule applies to each element (``min_items`` bounds its length); ``None`` is
    always accepted by the fields that allow it (it means "off" or "default").
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple = ()
    also: tuple = ()  # single values accepted outside the range (-1: unlimited)
    test: Callable[[Any], bool] | None = None
    text: str = ""  # what ``test`` accepts, in words
    min_items: int = 0

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (a plain Python value, not a node) is valid."""
        if isinstance(value, list) and self.test is None:
            return len(value) >= self.min_items and all(self._one(v) for v in value)
        return self._one(value)

    def _one(self, value: Any) -> bool:
        if self.also and not isinstance(value, bool) and value in self.also:
            return True
        if self.test is not None:
            return bool(self.test(value))
        if self.choices:
            return value in self.choices
        return _in_range(value, self.ge, self.gt, self.le, self.lt)

    def describe(self, value: Any = None) -> str:
        """``≥ 1``, ``in [0, 1)``, ``one of a, b``: what a message says is allowed."""
        if self.text:
            text = self.text
        elif self.choices:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            low = f"[{_num(self.ge)}" if self.ge is not None else None
            low = f"({_num(self.gt)}" if self.gt is not None else low
            high = f"{_num(self.le)}]" if self.le is not None else None
            high = f"{_num(self.lt)})" if self.lt is not None else high
            if low and high:
                text = f"in {low}, {high}"
            elif low:
                text = f"{'≥' if self.ge is not None else '>'} {low[1:]}"
            elif high:
                text = f"{'≤' if self.le is not None else '<'} {high[:-1]}"
            else:  # no bound declared: _in_range accepts every number
                text = "a number"
        if self.also:
            text += "".join(f" or {a}" for a in self.also)
        if isinstance(value, list) and self.test is None:
            least = f"≥ {self.min_items} " if self.min_items else ""
            text = f"a list of {least}values, each {text}"
        return text


def _num(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _in_range(value: Any, ge=None, gt=None, le=None, lt=None) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )


def param(default: Any = MISSING, *, factory: Callable[[], Any] | None = None, **valid: Any):
    """A dataclass field with its valid values (:class:`Valid` keywords) in its metadata."""
    metadata = {"valid": Valid(**valid)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _is_torch_device(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value) is not None


def _is_devices(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1 or value == -1
    if isinstance(value, list):
        return bool(value) and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
        )
    if isinstance(value, str):
        return value == "auto" or re.fullmatch(r"-1|\d+|\d+(,\d*)+", value.strip()) is not None
    return False


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _is_batch_limit(value: Any) -> bool:
    if isinstance(value, float):
        return _in_range(value, gt=0, le=1)
    return _in_range(value, ge=1)


def _is_val_limit(value: Any) -> bool:
    if isinstance(value, float):
        return _in_range(value, ge=0, le=1)
    return _in_range(value, ge=0)


def _is_ratio_schedule(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    return all(str(k).isdigit() and _in_range(v, ge=0, le=1) for k, v in value.items())


@dataclass
class SimulationConfig:
    """Parameters of the synthetic fMRI–video world (``neurocine simulate``)."""

    seed: int = param(0, ge=0, lt=2**32)
    subject: str = "1"  # stored as the file's subject attribute
    n_train_runs: int = param(12, ge=1)
    n_test_runs: int = param(3, ge=1)
    trs_per_run: int = param(80, ge=2)
    test_repeats: int = param(10, ge=1)
    tr_s: float = param(2.0, gt=0)
    fps: float = param(3.0, gt=0)
    height: int = param(32, ge=8)
    width: int = param(32, ge=8)
    n_voxels: int = param(2000, ge=1)
    semantic_fraction: float = param(0.3, ge=0, le=1)
    # std(signal)/std(noise) per voxel, single repeat (see data/simulate.py)
    snr: float = param(0.4, gt=0)
    ar1: float = param(0.4, ge=0, lt=1)
    noise_fwhm_mm: float = param(8.0, ge=0)
    signal_fwhm_mm: float = param(6.0, ge=0)
    scene_mean_s: float = param(8.0, gt=0)
    # share of voxels with stimulus signal (/voxels/signal); the rest is noise only
    signal_fraction: float = param(1.0, gt=0, le=1)


@dataclass
class AugmentConfig:
    """Stage-1 fMRI augmentations (docs/design.md §4); ratio 0 disables each."""

    mask_ratio: float = param(0.0, ge=0, lt=1)
    # None: the encoder's patch size (token masking)
    mask_patch_size: int | None = param(None, ge=1)
    interp_ratio: float = param(0.0, ge=0, le=1)


@dataclass
class DataConfig:
    """Which subject file to read and how to cut it into (fMRI window, clip) pairs."""

    path: str = "data/sim/subject1.h5"
    window: int = param(2, ge=1)
    lag_trs: int = param(0, ge=0)
    val_runs: int = param(2, ge=0)  # the last N training runs are held out for validation
    # train on the first N remaining runs only (None: all); validation stays the same
    train_runs: int | None = param(None, ge=1)
    batch_size: int = param(32, ge=1)
    num_workers: int = param(0, ge=0)
    # splits whose fMRI is larger are read from disk per batch
    cache_limit_mb: float = param(512.0, ge=0)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ClipConfig:
    """CLIP model that provides the stage-1 targets (``neurocine embed``)."""

    # random (seeded, in code) | pretrained (local dir) | tiny | tiny_eval (shipped)
    preset: str = param("random", choices=("random", "tiny", "tiny_eval", "pretrained"))
    pretrained: str | None = None  # local CLIP dir or cached hub id (implies preset=pretrained)
    # how a TR's frames make one image embedding
    frame_reduce: str = param("mean", choices=("mean", "middle"))
    batch_size: int = param(64, ge=1)
    seed: int = param(0, ge=0, lt=2**32)  # initialisation of the random preset
    # auto (cuda when available) | cpu | cuda[:N]
    device: str = param("auto", test=_is_torch_device, text="auto, cpu, cuda, cuda:N or mps")


@dataclass
class EncoderConfig:
    """fMRI encoder: transformer over voxel patches × a window of TRs."""

    patch_size: int = param(16, ge=1)
    embed_dim: int = param(128, ge=2)
    depth: int = param(4, ge=1)
    num_heads: int = param(4, ge=1)
    mlp_ratio: float = param(4.0, gt=0)
    dropout: float = param(0.1, ge=0, lt=1)
    temporal_attention: bool = True
    out_tokens: int = param(8, ge=1)  # condition tokens handed to stage 2
    out_dim: int = param(64, ge=1)  # width of each condition token
    pretrained: str | None = None  # encoder directory or MinD-Video checkpoint to start from
    # tiny: the sizes above | mindvideo: MinD-Video's sizes replace them
    preset: str = param("tiny", choices=("tiny", "mindvideo"))
    # shared (MinD-Video's Conv1d) | per_patch (own weights)
    patch_embedding: str = param("shared", choices=("shared", "per_patch"))
    gradient_checkpointing: bool = False  # recompute block activations in backward (less memory)


@dataclass
class Stage1Config:
    """Contrastive training of the fMRI encoder against CLIP (docs/design.md §5)."""

    lr: float = param(1e-3, gt=0)
    weight_decay: float = param(0.05, ge=0)
    warmup_steps: int = param(50, ge=0)
    w_img: float = param(1.0, ge=0)
    w_txt: float = param(1.0, ge=0)
    temperature_init: float = param(0.07, gt=0)
    n_way: int = param(50, ge=2)
    n_way_trials: int = param(100, ge=1)
    n_way_seed: int = param(0, ge=0, lt=2**32)  # distractor draws of the n-way metric
    learn_temperature: bool = True
    min_lr_ratio: float = param(0.0, ge=0, le=1)  # cosine schedule ends at lr * min_lr_ratio
    # best (the epoch best on the monitored val n-way) | last
    export: str = param("best", choices=("best", "last"))


@dataclass
class UNetConfig:
    """Video denoiser (a diffusers 2-D UNet inflated with motion modules) and its latent space."""

    # random (random init, pixel space: tests) | sd15 (Stable Diffusion 1.x from `pretrained`)
    # | tiny (the shipped VAE + video prior, or the same layout in `pretrained`: the demo)
    preset: str = param("random", choices=("random", "sd15", "tiny"))
    pretrained: str | None = None  # sd15: local Stable Diffusion 1.x directory (unet/, vae/)
    gradient_checkpointing: bool = False
    # random preset: pixel space, frames folded space-to-depth (32×32×3 → 8×8×48 with 4)
    space_to_depth: int = param(4, ge=1)
    block_out_channels: list[int] = param(factory=lambda: [48, 96], ge=1, min_items=1)
    layers_per_block: int = param(1, ge=1)
    num_attention_heads: int = param(4, ge=1)  # spatial self-/cross-attention heads
    motion_num_attention_heads: int = param(4, ge=1)  # temporal (motion module) attention heads
    norm_num_groups: int = param(16, ge=1)
    cross_attention_dim: int = param(64, ge=1)  # width the fMRI condition tokens are projected to
    zero_init_motion: bool = True  # motion modules start as identity (an inflated 2-D UNet)


@dataclass
class NoiseConfig:
    """Dependent prior noise (docs/design.md §6), installed by DependentNoiseCallback."""

    ratio: float = param(0.0, ge=0, le=1)
    mode: str = param("mixed", choices=("mixed", "progressive"))
    # {"<epoch>": ratio}: ρ from that epoch (or step) on
    schedule: dict[str, float] = param(
        factory=dict, test=_is_ratio_schedule, text="{<non-negative int>: ratio in [0, 1]}"
    )
    # what the schedule's keys count
    schedule_unit: str = param("epoch", choices=("epoch", "step"))


@dataclass
class Stage2Config:
    """Fine-tuning the video diffusion model on fMRI conditions."""

    encoder_ckpt: str = MISSING
    freeze_encoder: bool = True
    encoder_lr: float = param(1e-5, gt=0)
    lr: float = param(2e-4, gt=0)
    weight_decay: float = param(0.01, ge=0)
    cond_dropout: float = param(0.1, ge=0, lt=1)
    num_train_timesteps: int = param(1000, ge=2)
    beta_schedule: str = param(
        "scaled_linear", choices=("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
    )
    beta_start: float = param(0.00085, gt=0, lt=1)  # Stable Diffusion's β range
    beta_end: float = param(0.012, gt=0, lt=1)
    warmup_steps: int = param(0, ge=0)  # linear learning-rate warm-up
    # What the UNet cross-attends to: auto (a pretrained prior's own CLIP-embedding adapter,
    # else the encoder's tokens) | tokens (MinD-Video) | embedding (stage 1's CLIP embedding)
    condition: str = param("auto", choices=("auto", "tokens", "embedding"))
    # Which UNet weights fine-tune: all | motion (the temporal modules only, diffusers'
    # freeze_unet2d_params, AnimateDiff's recipe) | none (only the condition adapter)
    unet_trainable: str = param(
        "all", choices=("all", "motion", "lora", "motion_lora", "none")
    )  # lora | motion_lora: peft adapters on the 2-D UNet's attention
    lora_rank: int = param(8, ge=1)
    lora_alpha: float = param(8.0, gt=0)  # adapters scale by lora_alpha / lora_rank
    lora_targets: list[str] = param(
        factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"],
        test=_is_names,
        text="a non-empty list of layer names",
    )
    # Storage of the UNet's frozen weights: bfloat16 halves them (with bf16-mixed precision)
    frozen_dtype: str = param("float32", choices=("float32", "bfloat16"))
    # adamw_8bit: bitsandbytes (neurocine[gpu]), CUDA only; elsewhere AdamW with a warning
    optimizer: str = param("adamw", choices=("adamw", "adamw_8bit"))
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass
class SamplingConfig:
    """DDIM sampling of reconstructions."""

    steps: int = param(25, ge=1)
    guidance_scale: float = param(3.0, ge=0)
    eta: float = param(0.0, ge=0, le=1)
    seed: int = param(0, ge=0, lt=2**32)
    batch_size: int = param(8, ge=1)
    # ρ of the initial noise; None: as trained
    dependent_ratio: float | None = param(None, ge=0, le=1)
    # Where DDIM starts: noise (x_T, the paper's sampling) | ridge (the pixel-ridge decoding of
    # the same fMRI, fitted on the train split, diffused to the first of int(steps · strength)
    # remaining steps: the low-level start of NeuroClips / MindEye, SDEdit's img2img)
    init: str = param("noise", choices=("noise", "ridge"))
    # share of the DDIM steps that run from the initial video (ridge)
    strength: float = param(1.0, gt=0, le=1)
    # decoded floats → grey levels: truncate (MinD-Video's (x * 255).astype(uint8)) | round
    uint8: str = param("truncate", choices=("truncate", "round"))


@dataclass
class EvaluatorConfig:
    """The small frame/video classifier of simulated data (``neurocine train-evaluator``)."""

    width: int = param(16, ge=4)  # channels of the first conv layer (doubled twice)
    # chosen on held-out training runs (bench/evaluator_epochs.py): their top-1 0.32 at 120
    # epochs, 0.25 at 60 (64 simulated classes)
    epochs: int = param(120, ge=1)
    lr: float = param(3e-3, gt=0)
    batch_size: int = param(64, ge=1)
    val_runs: int = param(0, ge=0)  # the last N training runs held out to measure its accuracy
    seed: int = param(0, ge=0, lt=2**32)


@dataclass
class EvaluationConfig:
    """``neurocine evaluate``: rows (baselines), metrics and classifiers (docs/design.md §10)."""

    split: str = param("test", choices=("test", "val", "train"))
    # clips the demo and sweeps reconstruct (None: all)
    reconstruct_limit: int | None = param(None, ge=1)
    # score only the first N clips (None: all reconstructed)
    max_clips: int | None = param(None, ge=1)
    # clip_oracle (stage 2 on the clips' true CLIP image embeddings) costs as much as the
    # reconstructions again: asked for by name
    baselines: list[str] = param(
        factory=lambda: ["mean_frame", "ridge", "oracle"],
        choices=("mean_frame", "ridge", "oracle", "clip_oracle"),
    )
    n_ways: list[int] = param(factory=lambda: [2, 50], ge=2)
    num_trials: int = param(100, ge=1)
    # classes the classifier ranks highest on the ground truth count as true
    k_true: int = param(3, ge=1)
    seed: int = param(0, ge=0, lt=2**32)  # distractor draws of the n-way metrics
    # auto | trained (simulated evaluator) | pretrained | none
    classifier: str = param("auto", choices=("auto", "trained", "pretrained", "none"))
    evaluator_dir: str | None = None  # trained evaluator; None: <data.path>.evaluator
    image_classifier: str | None = None  # local google/vit-base-patch16-224 (frame-based)
    video_classifier: str | None = None  # local MCG-NJU/videomae-base-finetuned-kinetics
    clip_similarity: bool = True  # CLIP similarity and CLIP-pcc (temporal consistency)
    clip: str | None = None  # a clip.preset or a local CLIP dir (ViT-L/14); None: the run's clip
    ssim: str = param("mindvideo", choices=("mindvideo", "gray_gaussian", "neurons"))
    ridge_alphas: list[float] = param(
        factory=lambda: [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6], gt=0, min_items=1
    )
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)


@dataclass
class TrainerConfig:
    """The subset of ``lightning.Trainer`` arguments an experiment may set."""

    accelerator: str = param("cpu", choices=ACCELERATORS)
    devices: Any = param(
        1,
        test=_is_devices,
        text="an int ≥ 1, -1 (all), auto, or a list / comma string of device ids",
    )
    num_nodes: int = param(1, ge=1)
    strategy: str = param("auto", choices=STRATEGIES)
    precision: str = param("32-true", choices=PRECISIONS)
    max_epochs: int = param(10, ge=1, also=(-1,))
    max_steps: int = param(-1, ge=1, also=(-1,))
    limit_train_batches: Any = param(
        1.0, test=_is_batch_limit, text="a share in (0, 1] or a count ≥ 1"
    )
    limit_val_batches: Any = param(1.0, test=_is_val_limit, text="a share in [0, 1] or a count ≥ 0")
    log_every_n_steps: int = param(10, ge=1)
    gradient_clip_val: float | None = param(1.0, ge=0)
    accumulate_grad_batches: int = param(1, ge=1)
    check_val_every_n_epoch: int = param(1, ge=1)
    enable_progress_bar: bool = True
    deterministic: bool = False
    # Not Trainer arguments (neurocine.training.build_trainer reads them):
    checkpoint_every_n_steps: int = param(0, ge=0)  # > 0: also rewrite last.ckpt every N steps
    slurm_requeue: bool = True  # under SLURM: save and requeue on requeue_signal
    # what `sbatch --signal=USR1@90` sends before the time limit
    requeue_signal: str = param("SIGUSR1", choices=("SIGUSR1", "SIGUSR2"))


@dataclass
class ExperimentConfig:
    """One experiment: everything a ``neurocine train``/``reconstruct``/``evaluate`` run needs."""

    name: str = "experiment"
    stage: str = param("stage1", choices=("stage1", "stage2"))  # stage1 | stage2
    seed: int = param(0, ge=0, lt=2**32)
    runs_dir: str = "runs"
    data_module: str | None = None  # data_modules/<name>.yaml merged under the experiment
    ckpt_path: str | None = None  # "last" resumes from the newest run's last.ckpt
    simulate: SimulationConfig = field(default_factory=SimulationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    unet: UNetConfig = field(default_factory=UNetConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    # A data module's `preprocess:` block; validated by neurocine.data.preprocess_config.
    preprocess: dict[str, Any] = field(default_factory=dict)


# --- checking a composed config ----------------------------------------------------------------


def _declared(cfg: DictConfig, prefix: str = "") -> Iterator[tuple[str, Valid, Any]]:
    """``(key path, rule, plain value)`` of every field under ``cfg`` that declares a rule."""
    schema = OmegaConf.get_type(cfg)
    if not is_dataclass(schema):
        return
    for spec in fields(schema):
        if OmegaConf.is_missing(cfg, spec.name):
            continue
        value = cfg[spec.name]
        key = f"{prefix}{spec.name}"
        if isinstance(value, DictConfig) and is_dataclass(OmegaConf.get_type(value)):
            yield from _declared(value, f"{key}.")
        elif "valid" in spec.metadata and value is not None:
            plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            yield key, spec.metadata["valid"], plain


def _sampling_start(cfg: DictConfig) -> str | None:
    s = cfg.sampling
    if s.strength < 1 and s.init != "ridge":
        return (
            f"sampling.strength={s.strength:g} needs an initial video: set sampling.init=ridge "
            f"(sampling.init={s.init} starts from noise and runs every step)"
        )
    return None


def _sampling_steps(cfg: DictConfig) -> str | None:
    s = cfg.sampling
    if s.init == "ridge" and int(s.steps * s.strength) < 1:
        return (
            f"sampling.steps={s.steps} × sampling.strength={s.strength:g} < 1: "
            "the ridge start would run no DDIM step"
        )
    return None


def _stage1_targets(cfg: DictConfig) -> str | None:
    if cfg.stage == "stage1" and cfg.stage1.w_img == 0 and cfg.stage1.w_txt == 0:
        return "stage1.w_img=0 and stage1.w_txt=0: no target to train on (set one > 0)"
    return None


def _beta_range(cfg: DictConfig) -> str | None:
    s2 = cfg.stage2
    if s2.beta_start >= s2.beta_end:
        return (
            f"stage2.beta_start={s2.beta_start:g}, stage2.beta_end={s2.beta_end:g}: "
            "the noise schedule must rise (beta_start < beta_end)"
        )
    return None


def _training_length(cfg: DictConfig) -> str | None:
    if cfg.trainer.max_epochs == -1 and cfg.trainer.max_steps == -1:
        return (
            "trainer.max_epochs=-1 with trainer.max_steps=-1: training would never end; "
            "set one of them ≥ 1"
        )
    return None


def _devices_for_accelerator(cfg: DictConfig) -> str | None:
    t = cfg.trainer
    devices = t.devices if not OmegaConf.is_config(t.devices) else OmegaConf.to_container(t.devices)
    if t.accelerator == "cpu":
        count = int(devices) if isinstance(devices, str) and devices.isdigit() else devices
        if not (count == "auto" or (isinstance(count, int) and count >= 1)):
            return (
                f"trainer.devices={devices!r} with trainer.accelerator=cpu: expected a number "
                "of processes ≥ 1 or auto (device ids and -1 are for GPUs)"
            )
    return None


def _encoder_heads(cfg: DictConfig) -> str | None:
    e = cfg.encoder
    if e.preset != "tiny" or e.pretrained is not None:
        return None  # the sizes come from the preset or the checkpoint
    if e.embed_dim % 2 or e.embed_dim % e.num_heads:
        return (
            f"encoder.embed_dim={e.embed_dim} with encoder.num_heads={e.num_heads}: the width "
            "must be even and divisible by the number of heads"
        )
    return None


def _unet_divisors(cfg: DictConfig) -> str | None:
    u = cfg.unet
    if u.preset != "random":
        return None  # the sizes come from the pretrained model
    channels = list(u.block_out_channels)
    for name in ("norm_num_groups", "num_attention_heads", "motion_num_attention_heads"):
        value = int(u[name])
        if any(c % value for c in channels):
            return f"unet.{name}={value} must divide every unet.block_out_channels {channels}"
    return None


def _evaluator_held_out(cfg: DictConfig) -> str | None:
    e = cfg.evaluation
    pretrained = e.classifier == "pretrained" or (
        e.classifier == "auto" and (e.image_classifier or e.video_classifier)
    )
    if e.split == "val" and not pretrained and e.evaluator.val_runs < cfg.data.val_runs:
        return (
            f"evaluation.split=val with evaluation.evaluator.val_runs={e.evaluator.val_runs} < "
            f"data.val_runs={cfg.data.val_runs}: the trained evaluator would score clips it "
            f"learnt from; set evaluation.evaluator.val_runs={cfg.data.val_runs}"
        )
    return None


def _validation(cfg: DictConfig) -> str | None:
    t = cfg.trainer
    reason = None
    if cfg.data.val_runs == 0:
        reason = "data.val_runs=0"
    elif t.limit_val_batches == 0:
        reason = f"trainer.limit_val_batches={t.limit_val_batches}"
    elif t.max_steps == -1 and t.check_val_every_n_epoch > t.max_epochs >= 1:
        reason = (
            f"trainer.check_val_every_n_epoch={t.check_val_every_n_epoch} > "
            f"trainer.max_epochs={t.max_epochs}"
        )
    if reason is None:
        return None
    return f"{reason}: no validation epoch; no val metrics, and the best checkpoint is the last"


# Rules between fields: each returns the one-line error, or None. CROSS_WARNINGS only warn.
CROSS_RULES: tuple[Callable[[DictConfig], str | None], ...] = (
    _sampling_start,
    _sampling_steps,
    _stage1_targets,
    _beta_range,
    _training_length,
    _devices_for_accelerator,
    _encoder_heads,
    _unet_divisors,
    _evaluator_held_out,
)
CROSS_WARNINGS: tuple[Callable[[DictConfig], str | None], ...] = (_validation,)
_warned: set[str] = set()


def warn_once(message: str) -> None:
    """Issue a :class:`ConfigWarning` the first time ``message`` comes up in this process.

    Processes that DDP or torchrun start besides rank 0 (``RANK``/``LOCAL_RANK`` > 0) check the
    same config and stay quiet.
    """
    if any(int(os.environ.get(k, 0)) for k in ("RANK", "LOCAL_RANK")):
        return
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, ConfigWarning, stacklevel=3)


def check_config(cfg: DictConfig, source: str = "") -> DictConfig:
    """Check every declared range and choice, then the rules between fields; return ``cfg``.

    Parameters
    ----------
    cfg : DictConfig
        A structured config (an :class:`ExperimentConfig`, or one of its sections).
    source : str, default=""
        Prefix of the key paths in messages (``simulate`` for a bare :class:`SimulationConfig`).

    Raises
    ------
    ConfigError
        ``key=value: must be <allowed>`` for the first bad value, in one line.
    """
    prefix = f"{source}." if source else ""
    for key, valid, value in _declared(cfg, prefix):
        if not valid.accepts(value):
            raise ConfigError(f"{key}={value!r}: must be {valid.describe(value)}")
    schema = OmegaConf.get_type(cfg)
    if isinstance(schema, type) and issubclass(schema, ExperimentConfig):
        for rule in CROSS_RULES:
            message = rule(cfg)
            if message:
                raise ConfigError(message)
        for rule in CROSS_WARNINGS:
            message = rule(cfg)
            if message:
                warn_once(message)
    return cfg


def _describe(exc: OmegaConfBaseException) -> str:
    """One line for an omegaconf error: the key path, then the first line of its message."""
    key = getattr(exc, "full_key", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"key '{key}': {first}" if key else first


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends: report the file and the parser's line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML: {first}") from exc
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return loaded


def merge_layer(base: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    """Merge one layer into a structured config, naming ``source`` in any error."""
    try:
        return cast(DictConfig, OmegaConf.merge(base, layer))  # the type of the base
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from exc


def parse_overrides(overrides: Sequence[str]) -> DictConfig:
    """``["a.b=1", "c=x"]`` → a DictConfig; a token without ``=`` is an error."""
    for token in overrides:
        if "=" not in token or token.startswith("="):
            raise ConfigError(f"override '{token}': expected key=value (e.g. data.window=2)")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"overrides: {_describe(exc)}") from exc


def resolve_data_module(name: str, experiment_path: Path | None) -> Path:
    """Find ``data_modules/<name>.yaml`` beside the experiments folder or in the working dir."""
    candidate = Path(name)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    roots = [Path.cwd()]
    if experiment_path is not None:
        roots.insert(0, experiment_path.resolve().parent.parent)
    for root in roots:
        path = root / "data_modules" / f"{name}.yaml"
        if path.is_file():
            return path
    raise ConfigError(f"data_module '{name}': no data_modules/{name}.yaml found")


def load_config(
    experiment: str | Path | None = None,
    overrides: Sequence[str] = (),
    schema: type = ExperimentConfig,
) -> DictConfig:
    """Compose and validate an experiment config.

    Parameters
    ----------
    experiment : str or Path, optional
        An experiment YAML (``experiments/stage1.yaml``). Its ``data_module`` key (or the
        override ``data_module=NAME``) selects the data module merged beneath it.
    overrides : sequence of str, default=()
        ``key=value`` dotlist overrides applied last.
    schema : type, default=ExperimentConfig
        The dataclass that defines the valid keys and types.

    Returns
    -------
    DictConfig
        A structured (struct-mode) config; setting an unknown key later also fails.

    Raises
    ------
    ConfigError
        A missing file, an unknown key, a wrong type, a value out of its declared range or a
        broken rule between fields (:func:`check_config`), in one line naming the key.
    """
    cfg = OmegaConf.structured(schema)
    exp_path = Path(experiment) if experiment is not None else None
    exp_layer = _read_yaml(exp_path) if exp_path is not None else OmegaConf.create()
    cli_layer = parse_overrides(overrides)
    dm_name = cli_layer.get("data_module", exp_layer.get("data_module"))
    if dm_name:
        dm_path = resolve_data_module(str(dm_name), exp_path)
        cfg = merge_layer(cfg, _read_yaml(dm_path), str(dm_path))
    if exp_path is not None:
        cfg = merge_layer(cfg, exp_layer, str(exp_path))
    cfg = merge_layer(cfg, cli_layer, "overrides")
    OmegaConf.set_struct(cfg, True)
    return check_config(cfg)


def require(cfg: DictConfig, *keys: str) -> None:
    """Fail with the key path when a required (``???``) value was never given."""
    for key in keys:
        try:
            OmegaConf.select(cfg, key, throw_on_missing=True)
        except MissingMandatoryValue as exc:
            raise ConfigError(
                f"key '{key}' is required (???): set it in the YAML or as {key}=…"
            ) from exc


def save_config(cfg: DictConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML, atomically (temporary name, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def load_saved_config(path: str | Path, schema: type = ExperimentConfig) -> DictConfig:
    """Re-validate a config saved by :func:`save_config` (e.g. a run's ``config.yaml``)."""
    path = Path(path)
    cfg = merge_layer(OmegaConf.structured(schema), _read_yaml(path), str(path))
    OmegaConf.set_struct(cfg, True)
    return cfg


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """A run's saved ``config.yaml`` with ``key=value`` overrides on top, checked as a whole."""
    cfg = merge_layer(load_saved_config(path), parse_overrides(overrides), "overrides")
    OmegaConf.set_struct(cfg, True)
    return check_config(cfg)
