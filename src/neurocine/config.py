"""Experiment configuration: dataclass schemas, strict omegaconf merging and overrides.

An experiment's config is composed as (docs/design.md §8)::

    schema defaults ← data_modules/<name>.yaml ← experiments/<exp>.yaml ← key=value overrides

Every layer is merged into a *structured* config built from :class:`ExperimentConfig`, so a
misspelt key or a value of the wrong type is an error that names the key path, never a silent
default. Required values are ``???`` (omegaconf's ``MISSING``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from neurocine.errors import ConfigError
from neurocine.fileio import atomic_path


@dataclass
class SimulationConfig:
    """Parameters of the synthetic fMRI–video world (``neurocine simulate``)."""

    seed: int = 0
    subject: str = "1"  # stored as the file's subject attribute
    n_train_runs: int = 12
    n_test_runs: int = 3
    trs_per_run: int = 80
    test_repeats: int = 10
    tr_s: float = 2.0
    fps: float = 3.0
    height: int = 32
    width: int = 32
    n_voxels: int = 2000
    semantic_fraction: float = 0.3
    snr: float = 0.4  # std(signal)/std(noise) per voxel, single repeat (see data/simulate.py)
    ar1: float = 0.4
    noise_fwhm_mm: float = 8.0
    signal_fwhm_mm: float = 6.0
    scene_mean_s: float = 8.0
    signal_fraction: float = 1.0  # share of voxels with stimulus signal; the rest is noise only


@dataclass
class AugmentConfig:
    """Stage-1 fMRI augmentations (docs/design.md §4); ratio 0 disables each."""

    mask_ratio: float = 0.0
    mask_patch_size: int | None = None  # None: the encoder's patch size (token masking)
    interp_ratio: float = 0.0


@dataclass
class DataConfig:
    """Which subject file to read and how to cut it into (fMRI window, clip) pairs."""

    path: str = "data/sim/subject1.h5"
    window: int = 2
    lag_trs: int = 0
    val_runs: int = 2  # the last N training runs are held out for validation
    batch_size: int = 32
    num_workers: int = 0
    cache_limit_mb: float = 512.0  # splits whose fMRI is larger are read from disk per batch
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ClipConfig:
    """CLIP model that provides the stage-1 targets (``neurocine embed``)."""

    preset: str = "random"  # random (seeded, in code) | pretrained (local dir) | tiny | tiny_eval
    pretrained: str | None = None  # local CLIP dir or cached hub id (implies preset=pretrained)
    frame_reduce: str = "mean"  # mean | middle: how a TR's frames make one image embedding
    batch_size: int = 64
    seed: int = 0  # initialisation of the random preset
    device: str = "auto"  # auto (cuda when available) | cpu | cuda[:N]


@dataclass
class EncoderConfig:
    """fMRI encoder: transformer over voxel patches × a window of TRs."""

    patch_size: int = 16
    embed_dim: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    temporal_attention: bool = True
    out_tokens: int = 8  # condition tokens handed to stage 2
    out_dim: int = 64  # width of each condition token
    pretrained: str | None = None  # encoder directory or MinD-Video checkpoint to start from
    preset: str = "tiny"  # tiny: the sizes above | mindvideo: MinD-Video's sizes replace them
    patch_embedding: str = "shared"  # shared (MinD-Video's Conv1d) | per_patch (own weights)
    gradient_checkpointing: bool = False  # recompute block activations in backward (less memory)


@dataclass
class Stage1Config:
    """Contrastive training of the fMRI encoder against CLIP (docs/design.md §5)."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    w_img: float = 1.0
    w_txt: float = 1.0
    temperature_init: float = 0.07
    n_way: int = 50
    n_way_trials: int = 100
    n_way_seed: int = 0  # distractor draws of the n-way metric
    learn_temperature: bool = True
    min_lr_ratio: float = 0.0  # cosine schedule ends at lr * min_lr_ratio
    export: str = "best"  # best (the epoch best on the monitored val n-way) | last


@dataclass
class UNetConfig:
    """Video denoiser (a diffusers 2-D UNet inflated with motion modules) and its latent space."""

    preset: str = "random"  # random (random init: demo, tests) | sd15 | tiny (later: shipped prior)
    pretrained: str | None = None  # sd15: local Stable Diffusion 1.x directory (unet/, vae/)
    gradient_checkpointing: bool = False
    # random preset: pixel space, frames folded space-to-depth (32×32×3 → 8×8×48 with 4)
    space_to_depth: int = 4
    block_out_channels: list[int] = field(default_factory=lambda: [48, 96])
    layers_per_block: int = 1
    num_attention_heads: int = 4  # spatial self-/cross-attention heads
    motion_num_attention_heads: int = 4  # temporal (motion module) attention heads
    norm_num_groups: int = 16
    cross_attention_dim: int = 64  # width the fMRI condition tokens are projected to
    zero_init_motion: bool = True  # motion modules start as identity (an inflated 2-D UNet)


@dataclass
class NoiseConfig:
    """Dependent prior noise (docs/design.md §6), installed by DependentNoiseCallback."""

    ratio: float = 0.0
    mode: str = "mixed"  # mixed | progressive
    schedule: dict[str, float] = field(default_factory=dict)  # {"<epoch>": ratio}
    schedule_unit: str = "epoch"  # epoch | step: what the schedule's keys count


@dataclass
class Stage2Config:
    """Fine-tuning the video diffusion model on fMRI conditions."""

    encoder_ckpt: str = MISSING
    freeze_encoder: bool = True
    encoder_lr: float = 1e-5
    lr: float = 2e-4
    weight_decay: float = 0.01
    cond_dropout: float = 0.1
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085  # Stable Diffusion's β range
    beta_end: float = 0.012
    warmup_steps: int = 0  # linear learning-rate warm-up
    # What the UNet cross-attends to: auto (a pretrained prior's own CLIP-embedding adapter,
    # else the encoder's tokens) | tokens (MinD-Video) | embedding (stage 1's CLIP embedding)
    condition: str = "auto"
    # Which UNet weights fine-tune: all | motion (the temporal modules only, diffusers'
    # freeze_unet2d_params, AnimateDiff's recipe) | none (only the condition adapter)
    unet_trainable: str = "all"
    noise: NoiseConfig = field(default_factory=NoiseConfig)


@dataclass
class SamplingConfig:
    """DDIM sampling of reconstructions."""

    steps: int = 25
    guidance_scale: float = 3.0
    eta: float = 0.0
    seed: int = 0
    batch_size: int = 8
    dependent_ratio: float | None = None  # ρ of the initial noise; None: as trained
    # Where DDIM starts: noise (x_T, the paper's sampling) | ridge (the pixel-ridge decoding of
    # the same fMRI, fitted on the train split, diffused to the first of int(steps · strength)
    # remaining steps: the low-level start of NeuroClips / MindEye, SDEdit's img2img)
    init: str = "noise"
    strength: float = 1.0  # share of the DDIM steps that run from the initial video (ridge)


@dataclass
class EvaluatorConfig:
    """The small frame/video classifier of simulated data (``neurocine train-evaluator``)."""

    width: int = 16  # channels of the first conv layer (doubled twice)
    epochs: int = 60  # 64 simulated classes: test top-1 0.51 (0.25 after 10 epochs)
    lr: float = 3e-3
    batch_size: int = 64
    val_runs: int = 0  # the last N training runs held out to measure its accuracy
    seed: int = 0


@dataclass
class EvaluationConfig:
    """``neurocine evaluate``: rows (baselines), metrics and classifiers (docs/design.md §10)."""

    split: str = "test"
    reconstruct_limit: int | None = None  # clips the demo and sweeps reconstruct (None: all)
    max_clips: int | None = None  # score only the first N clips (None: all reconstructed)
    baselines: list[str] = field(default_factory=lambda: ["mean_frame", "ridge", "oracle"])
    n_ways: list[int] = field(default_factory=lambda: [2, 50])
    num_trials: int = 100
    k_true: int = 3  # classes the classifier ranks highest on the ground truth count as true
    seed: int = 0  # distractor draws of the n-way metrics
    classifier: str = "auto"  # auto | trained (simulated evaluator) | pretrained | none
    evaluator_dir: str | None = None  # trained evaluator; None: <data.path>.evaluator
    image_classifier: str | None = None  # local google/vit-base-patch16-224 (frame-based)
    video_classifier: str | None = None  # local MCG-NJU/videomae-base-finetuned-kinetics
    clip_similarity: bool = True
    ridge_alphas: list[float] = field(
        default_factory=lambda: [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]
    )
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)


@dataclass
class TrainerConfig:
    """The subset of ``lightning.Trainer`` arguments an experiment may set."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int = 10
    max_steps: int = -1
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    check_val_every_n_epoch: int = 1
    enable_progress_bar: bool = True
    deterministic: bool = False


@dataclass
class ExperimentConfig:
    """One experiment: everything a ``neurocine train``/``reconstruct``/``evaluate`` run needs."""

    name: str = "experiment"
    stage: str = "stage1"  # stage1 | stage2
    seed: int = 0
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
        return OmegaConf.merge(base, layer)
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
    return cfg


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
