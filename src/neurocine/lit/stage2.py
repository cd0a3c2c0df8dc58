"""Stage 2: ``VideoDiffusionModule`` fine-tunes a video diffusion model on fMRI conditions.

The system only wires parts (all injected): the stage-1 fMRI encoder (frozen, or fine-tuned at
its own learning rate), the :class:`~neurocine.models.video_unet.ConditionAdapter` that projects
its output (condition tokens, or its CLIP-space embedding: ``stage2.condition``) to the UNet's
``cross_attention_dim`` and holds the null condition of classifier-free guidance, the video
UNet, the :class:`~neurocine.models.video_unet.LatentCodec` (pixel space-to-depth or a frozen
VAE), and the noise scheduler. The loss is :func:`~neurocine.diffusion.loss.epsilon_loss`.

Noise: the module asks for all its noise through :meth:`VideoDiffusionModule.noise_sampler`,
which delegates to ``self.noise_scheduler`` (a
:class:`~neurocine.diffusion.scheduler.DependentDDPMScheduler`, ρ = 0 by default). The
:class:`~neurocine.diffusion.callback.DependentNoiseCallback` (:func:`build_callbacks`) installs
the dependent noise at fit start by replacing that scheduler.

Logged: ``train/loss``, ``train/noise_ratio`` (ρ in effect), ``train/noise_frame_corr`` (the
measured correlation of neighbouring frames of the noise used), ``val/loss`` (fixed noise and
timesteps per batch, comparable across epochs). :meth:`export` writes ``<run>/model/``
(:class:`~neurocine.diffusion.pipeline.VideoDecoder`), what ``neurocine reconstruct`` loads.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.fabric.utilities.data import AttributeDict
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn

from neurocine.config import require
from neurocine.diffusion.callback import DependentNoiseCallback, callback_from_config
from neurocine.diffusion.loss import epsilon_loss
from neurocine.diffusion.noise import frame_correlation
from neurocine.diffusion.pipeline import VideoDecoder, check_condition_dims
from neurocine.diffusion.scheduler import DependentDDPMScheduler, training_scheduler
from neurocine.errors import CheckpointError, ConfigError, SchemaError
from neurocine.models.fmri_encoder import FMRIEncoder, check_compatible
from neurocine.models.video_unet import (
    CONDITION_SOURCES,
    ConditionAdapter,
    Denoiser,
    LatentCodec,
    build_denoiser,
    frames_to_video,
    has_lora,
    set_trainable,
)
from neurocine.models.video_unet import (
    UNET_TRAINABLE as UNET_TRAINABLE,  # stage2.unet_trainable's choices (config checks)
)

if TYPE_CHECKING:
    from diffusers import UNet3DConditionModel, UNetMotionModel

MODEL_DIR = "model"
OPTIMIZERS = ("adamw", "adamw_8bit")
FROZEN_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class VideoDiffusionModule(L.LightningModule):
    """fMRI-conditioned video diffusion with ε-prediction.

    Parameters
    ----------
    encoder : FMRIEncoder
        The stage-1 encoder (injected).
    adapter : ConditionAdapter
        Condition projection + null condition.
    unet : UNetMotionModel or UNet3DConditionModel
        Video denoiser (``UNetMotionModel``).
    codec : LatentCodec
        Pixels ⇄ the denoiser's space.
    noise_scheduler : DependentDDPMScheduler, optional
        Training scheduler; default: Stable Diffusion's β schedule with ρ = 0.
    frames_shape : tuple of int
        ``(F, H, W)`` of the training clips (saved with the export).
    lr, encoder_lr, weight_decay : float
        AdamW; the encoder has its own learning rate when it is fine-tuned.
    freeze_encoder : bool, default=True
    cond_dropout : float, default=0.1
        Probability of replacing a sample's condition by the null condition.
    warmup_steps : int, default=0
        Linear learning-rate warm-up, then constant.
    unet_trainable : {"all", "motion", "lora", "motion_lora", "none"}, default="all"
        UNet weights that fine-tune: all, only the motion modules (AnimateDiff's recipe for an
        inflated image model), LoRA adapters on the 2-D UNet's attention (base frozen), the
        motion modules and those adapters, or none (only the condition adapter learns); see
        :func:`~neurocine.models.video_unet.set_trainable`.
    lora_rank, lora_alpha : int, float, default=8, 8.0
        The LoRA adapters' rank and scale (``alpha / rank``), for ``lora`` / ``motion_lora``.
    lora_targets : list of str, default=("to_q", "to_k", "to_v", "to_out.0")
        Names (suffixes) of the 2-D UNet's linear layers that get an adapter.
    frozen_dtype : {"float32", "bfloat16"}, default="float32"
        Storage dtype of the UNet's frozen weights: ``bfloat16`` halves their memory (use with
        ``trainer.precision=bf16-mixed``); trainable weights stay float32. Export restores
        float32.
    optimizer : {"adamw", "adamw_8bit"}, default="adamw"
        ``adamw_8bit``: bitsandbytes' 8-bit AdamW (1 byte per state instead of 4), CUDA only;
        elsewhere (or without bitsandbytes) it falls back to torch's AdamW with a warning.
    seed : int, default=0
        Seeds the module's generator (noise, timesteps, condition dropout).
    """

    checkpoint_monitor = ("val/loss", "min")
    hparams: AttributeDict  # what save_hyperparameters stores (Lightning types it as a mapping)

    def __init__(
        self,
        encoder: FMRIEncoder,
        adapter: ConditionAdapter,
        unet: UNetMotionModel | UNet3DConditionModel,
        codec: LatentCodec,
        noise_scheduler: DependentDDPMScheduler | None = None,
        frames_shape: tuple[int, int, int] = (6, 32, 32),
        lr: float = 2e-4,
        encoder_lr: float = 1e-5,
        weight_decay: float = 0.01,
        freeze_encoder: bool = True,
        cond_dropout: float = 0.1,
        warmup_steps: int = 0,
        unet_trainable: str = "all",
        lora_rank: int = 8,
        lora_alpha: float = 8.0,
        lora_targets: tuple[str, ...] | list[str] = ("to_q", "to_k", "to_v", "to_out.0"),
        frozen_dtype: str = "float32",
        optimizer: str = "adamw",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["encoder", "adapter", "unet", "codec", "noise_scheduler"])
        check_condition_dims(encoder, adapter, unet)
        if not 0.0 <= cond_dropout < 1.0:
            raise ConfigError(f"stage2.cond_dropout={cond_dropout}: must be in [0, 1)")
        self.encoder = encoder
        self.adapter = adapter
        self.unet = unet
        self.codec = codec
        self.noise_scheduler = noise_scheduler or training_scheduler(
            clip_sample=not codec.is_latent
        )
        n_frames, height, width = frames_shape
        self.frames_shape = (int(n_frames), int(height), int(width))
        codec.latent_shape(*self.frames_shape)  # fail early on sizes the codec cannot fold
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"stage2.optimizer='{optimizer}': expected one of {OPTIMIZERS}")
        if frozen_dtype not in FROZEN_DTYPES:
            raise ConfigError(
                f"stage2.frozen_dtype='{frozen_dtype}': expected one of {tuple(FROZEN_DTYPES)}"
            )
        set_trainable(self.unet, unet_trainable, lora_rank, lora_alpha, tuple(lora_targets))
        for param in self.unet.parameters():
            if not param.requires_grad:
                param.data = param.data.to(FROZEN_DTYPES[frozen_dtype])
        self.train()  # diffusers' from_pretrained returns eval-mode models
        self._generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None

    # -- inference --------------------------------------------------------------------------------

    def forward(self, fmri: torch.Tensor) -> torch.Tensor:
        """fMRI windows ``[B, W, V]`` → projected condition tokens ``[B, L, D]``."""
        if self.hparams.freeze_encoder:
            with torch.no_grad():
                output = self.encoder(fmri)
        else:
            output = self.encoder(fmri)
        return self.adapter.from_encoder(output)

    def decoder(self) -> VideoDecoder:
        """The inference pipeline over this module's parts (shared, not copied)."""
        return VideoDecoder(
            self.encoder,
            self.adapter,
            self.unet,
            self.codec,
            self.noise_scheduler,
            self.frames_shape,
        )

    # -- noise ------------------------------------------------------------------------------------

    def noise_sampler(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """All the module's noise: the installed scheduler's (dependent) noise of ``shape``."""
        return self.noise_scheduler.sample_noise(shape, generator, device=self.device)

    @property
    def generator(self) -> torch.Generator:
        """The module's generator on its device, seeded per rank (restored on resume)."""
        if self._generator is None or self._generator.device != self.device:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(int(self.hparams.seed) * 1000 + rank + 1)
            if self._generator_state is not None:
                self._generator.set_state(self._generator_state)
                self._generator_state = None
        return self._generator

    # -- training ---------------------------------------------------------------------------------

    def _common_step(
        self, batch: dict[str, torch.Tensor], stage: str, generator: torch.Generator
    ) -> torch.Tensor:
        if "frames" not in batch:
            raise SchemaError("stage 2 batch has no frames: build the DataModule with read_frames")
        latents = self.codec.encode(frames_to_video(batch["frames"]))
        cond = self(batch["fmri"])
        if stage == "train":
            cond = self.adapter.drop(cond, float(self.hparams.cond_dropout), generator)
        n = latents.shape[0]
        noise = self.noise_sampler(latents.shape, generator)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (n,), generator=generator, device=self.device)
        loss = epsilon_loss(self.unet, self.noise_scheduler, latents, cond, noise, timesteps)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=n, sync_dist=not on_step)  # fmt: skip
        if stage == "train":
            self.log("train/noise_ratio", float(self.noise_scheduler.config.dependent_ratio),
                     on_step=True, on_epoch=False, batch_size=n)  # fmt: skip
            self.log("train/noise_frame_corr", frame_correlation(noise), on_step=True,
                     on_epoch=True, batch_size=n)  # fmt: skip
        return loss

    def train(self, mode: bool = True) -> VideoDiffusionModule:
        """Train mode for the parts that learn; frozen ones (encoder, UNet, VAE) stay in eval.

        Lightning keeps each submodule's mode through fit and validation, so this is where no
        dropout turns on in a frozen part.
        """
        super().train(mode)
        if mode:
            self.codec.eval()
            self.unet.train(self.hparams.unet_trainable != "none")
            self.encoder.train(not self.hparams.freeze_encoder)
        return self

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train", self.generator)

    def _fixed_generator(self, batch_idx: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        return generator.manual_seed(int(self.hparams.seed) * 7919 + batch_idx)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._common_step(batch, "val", self._fixed_generator(batch_idx))

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._common_step(batch, "test", self._fixed_generator(batch_idx))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        hp = self.hparams
        groups: list[dict[str, Any]] = []
        parts: list[tuple[str, nn.Module, float]] = [
            ("unet", self.unet, hp.lr),
            ("adapter", self.adapter, hp.lr),
        ]
        if not hp.freeze_encoder:
            parts.append(("encoder", self.encoder, hp.encoder_lr))
        for _, module, lr in parts:
            decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
            rest = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
            if module is self.adapter:  # the null condition is an embedding: no decay
                decay = [p for p in decay if p is not self.adapter.null_tokens]
                rest = rest + [self.adapter.null_tokens]
            groups.append({"params": decay, "lr": lr, "weight_decay": hp.weight_decay})
            groups.append({"params": rest, "lr": lr, "weight_decay": 0.0})
        optimizer = _adamw([g for g in groups if g["params"]], hp.optimizer, self.device)
        warmup = int(hp.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # -- checkpoints and export -------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["noise_scheduler_config"] = json.dumps(dict(self.noise_scheduler.config))
        if self._generator is not None:
            checkpoint["stage2_generator"] = self._generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "noise_scheduler_config" in checkpoint:
            config = json.loads(checkpoint["noise_scheduler_config"])
            self.noise_scheduler = type(self.noise_scheduler).from_config(config)
        self._generator_state = checkpoint.get("stage2_generator")
        self._generator = None

    def export(self, run_dir: str | Path) -> Path:
        """Write ``<run_dir>/model/`` (the :class:`VideoDecoder` directory) for reconstruction.

        The UNet is exported as plain float32 weights: frozen bfloat16 weights are cast back and
        LoRA adapters are merged into the weights they adapt (which ends their training: call
        it once training is over).
        """
        self.unet.float()
        if has_lora(self.unet):
            self.unet.fuse_lora()
            self.unet.unload_lora()
        return self.decoder().save(Path(run_dir) / MODEL_DIR)


def _adamw(groups: list[dict[str, Any]], name: str, device: torch.device) -> torch.optim.Optimizer:
    """torch's AdamW, or bitsandbytes' 8-bit AdamW (``adamw_8bit``) when on CUDA."""
    if name == "adamw_8bit":
        if device.type != "cuda":
            warnings.warn(
                f"stage2.optimizer=adamw_8bit needs CUDA (the module is on {device.type}): "
                "using torch.optim.AdamW",
                stacklevel=2,
            )
        else:
            try:
                import bitsandbytes as bnb
            except ImportError:
                warnings.warn(
                    "stage2.optimizer=adamw_8bit needs bitsandbytes (pip install "
                    "'neurocine[gpu]'): using torch.optim.AdamW",
                    stacklevel=2,
                )
            else:
                return bnb.optim.AdamW8bit(groups)
    return torch.optim.AdamW(groups)


# -- building from config -------------------------------------------------------------------------


def _encoder_from_ckpt(path: Path) -> FMRIEncoder:
    """The encoder inside a stage-1 Lightning checkpoint (``encoder.*`` + ``encoder_config``)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors of many kinds: one clear line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a stage-1 checkpoint (cannot be read as weights: {first[:200]})"
        ) from exc
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    encoder_config = hparams.get("encoder_config") if isinstance(hparams, dict) else None
    weights = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if not encoder_config or not weights:
        raise CheckpointError(
            f"{path}: not a stage-1 checkpoint (no encoder weights and encoder_config in it)"
        )
    try:
        encoder = FMRIEncoder.from_config(dict(encoder_config))
        encoder.load_state_dict(weights, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: stage-1 encoder weights do not load: {first}") from exc
    return encoder


def _check_encoder_dir(directory: Path) -> None:
    config_path = directory / FMRIEncoder.config_name
    try:
        name = json.loads(config_path.read_text()).get("_class_name")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: unreadable ({exc})") from exc
    if name != FMRIEncoder.__name__:
        raise CheckpointError(
            f"{directory}: holds a {name or 'unknown model'}, not a stage-1 FMRIEncoder"
        )


def load_stage1_encoder(path: str | Path) -> FMRIEncoder:
    """Load the stage-1 fMRI encoder from what stage 1 leaves behind.

    Accepts the exported directory (``runs/stage1/<run>/encoder``: ``config.json`` +
    safetensors), a stage-1 run directory (its ``encoder/``), a weights file beside its
    ``config.json`` (``encoder.safetensors``), or a stage-1 Lightning checkpoint (``.ckpt``,
    read with ``weights_only=True``). Anything else is a CheckpointError naming the path.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"stage2.encoder_ckpt={path}: not found (train stage 1 first)")
    if path.is_dir():
        if not (path / FMRIEncoder.config_name).is_file() and (path / "encoder").is_dir():
            path = path / "encoder"
        if not (path / FMRIEncoder.config_name).is_file():
            raise CheckpointError(
                f"{path}: no {FMRIEncoder.config_name}: not a stage-1 encoder directory"
            )
        _check_encoder_dir(path)
        return FMRIEncoder.load(path)
    if path.suffix == ".safetensors":
        if not (path.parent / FMRIEncoder.config_name).is_file():
            raise CheckpointError(f"{path}: no {FMRIEncoder.config_name} beside the weights")
        _check_encoder_dir(path.parent)
        from safetensors.torch import load_file

        encoder = FMRIEncoder.from_config(FMRIEncoder.load_config(path.parent))
        try:
            encoder.load_state_dict(load_file(path), strict=True)
        except (RuntimeError, OSError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{path}: not the weights of this encoder: {first}") from exc
        return encoder
    return _encoder_from_ckpt(path)


def condition_adapter(
    source: str, encoder: FMRIEncoder, denoiser: Denoiser, seed: int = 0
) -> ConditionAdapter:
    """The projection of the encoder's output into the UNet (``stage2.condition``).

    ``auto`` takes the condition adapter that comes with a pretrained prior (the tiny preset's
    CLIP-embedding adapter: stage 2 starts from a decoder that already answers to CLIP
    embeddings) and a new token adapter otherwise; ``tokens`` / ``embedding`` build a new,
    seeded adapter of that source.
    """
    if source not in ("auto", *CONDITION_SOURCES):
        raise ConfigError(
            f"stage2.condition='{source}': expected one of {('auto', *CONDITION_SOURCES)}"
        )
    if source == "auto" and denoiser.condition is not None:
        return denoiser.condition
    source = "tokens" if source == "auto" else source
    embedding = source == "embedding"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConditionAdapter(
            in_dim=encoder.embedding_dim if embedding else int(encoder.config.out_dim),
            cross_attention_dim=int(denoiser.unet.config.cross_attention_dim),
            num_tokens=1 if embedding else int(encoder.config.out_tokens),
            source=source,
        )


def build_module(cfg: Any, datamodule: Any) -> VideoDiffusionModule:
    """The stage-2 system from a config and a DataModule (``read_frames=True``) after setup.

    Raises CheckpointError for an encoder checkpoint that is not a stage-1 encoder, ConfigError
    when the encoder does not fit the data or the frames do not fit the denoiser, SchemaError
    when the data have no frames.
    """
    require(cfg, "stage2.encoder_ckpt")
    s2 = cfg.stage2
    if datamodule.frames_shape is None:
        raise SchemaError(f"{cfg.data.path}: /train/frames: missing dataset (stage 2 needs pixels)")
    n_frames, height, width = datamodule.frames_shape
    frames_shape = (int(n_frames), int(height), int(width))
    source = str(s2.encoder_ckpt)
    encoder = load_stage1_encoder(source)
    check_compatible(encoder, int(datamodule.n_voxels), int(cfg.data.window), None, source=source)
    denoiser = build_denoiser(cfg.unet, seed=int(cfg.seed))
    max_frames = int(denoiser.unet.config.motion_max_seq_length)
    if frames_shape[0] > max_frames:
        raise ConfigError(
            f"{cfg.data.path}: {frames_shape[0]} frames per clip; the motion modules take at "
            f"most {max_frames}"
        )
    adapter = condition_adapter(str(s2.condition), encoder, denoiser, seed=int(cfg.seed) + 1)
    scheduler = training_scheduler(
        num_train_timesteps=int(s2.num_train_timesteps),
        beta_schedule=str(s2.beta_schedule),
        beta_start=float(s2.beta_start),
        beta_end=float(s2.beta_end),
        clip_sample=not denoiser.codec.is_latent,
    )
    return VideoDiffusionModule(
        encoder=encoder,
        adapter=adapter,
        unet=denoiser.unet,
        codec=denoiser.codec,
        noise_scheduler=scheduler,
        frames_shape=frames_shape,
        lr=float(s2.lr),
        encoder_lr=float(s2.encoder_lr),
        weight_decay=float(s2.weight_decay),
        freeze_encoder=bool(s2.freeze_encoder),
        cond_dropout=float(s2.cond_dropout),
        warmup_steps=int(s2.warmup_steps),
        unet_trainable=str(s2.unet_trainable),
        lora_rank=int(s2.lora_rank),
        lora_alpha=float(s2.lora_alpha),
        lora_targets=tuple(str(t) for t in s2.lora_targets),
        frozen_dtype=str(s2.frozen_dtype),
        optimizer=str(s2.optimizer),
        seed=int(cfg.seed),
    )


def build_callbacks(cfg: Any) -> list[DependentNoiseCallback]:
    """The dependent-noise callback for ``cfg.stage2.noise`` (ρ = 0: independent noise)."""
    return [callback_from_config(cfg.stage2.noise)]
