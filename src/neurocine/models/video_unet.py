"""The video denoiser: a diffusers 2-D UNet inflated to video with motion modules, its latent
space, and the projection of the fMRI condition tokens into its cross-attention.

Every preset goes through the same code path (docs/design.md §7): a ``UNet2DConditionModel`` (random
from a config in code, or Stable Diffusion's from a local directory) is inflated by diffusers'
``UNetMotionModel.from_unet2d`` with a ``MotionAdapter`` — AnimateDiff's temporal attention after
every spatial block. The motion modules' output projections start at zero, so the inflated model
first computes exactly the 2-D UNet on every frame and learns the temporal coupling.

Presets (``cfg.unet.preset``):

``random``
    Random init (seeded), built from ``cfg.unet`` in code; pixel space without a VAE. Frames are
    folded space-to-depth (``pixel_unshuffle``; 32×32×3 → 8×8×48 with factor 4) so that spatial
    attention sees at most 8×8 tokens per frame — the demo's CPU budget.
``sd15``
    ``cfg.unet.pretrained`` is a Stable Diffusion 1.x directory in diffusers' layout (``unet/``
    and ``vae/``, each ``config.json`` + weights; optionally an AnimateDiff ``motion_adapter/``).
    Latent space of its ``AutoencoderKL`` (scaled by ``vae.config.scaling_factor``) — the paper's
    setting.

``tiny``
    The VAE and video prior shipped in ``neurocine/pretrained/{vae,prior}`` (trained on the
    simulated world by ``neurocine pretrain``; :func:`load_tiny`), or the same layout under
    ``cfg.unet.pretrained``. Latent space (4 × 8 × 8 for 32 × 32 frames); the demo's default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import logging as diffusers_logging
from einops import rearrange
from torch import nn

from neurocine.errors import CheckpointError, ConfigError
from neurocine.metrics.pixels import to_uint8

PRESETS = ("random", "sd15", "tiny")
CONDITION_SOURCES = ("tokens", "embedding")
# Where the tiny preset's VAE and video prior are shipped (``neurocine pretrain``).
PRETRAINED_ROOT = Path(__file__).resolve().parent.parent / "pretrained"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class LatentCodec(nn.Module):
    """Videos ``[B, 3, F, H, W]`` in [-1, 1] ⇄ the denoiser's space ``[B, C, F, h, w]``.

    Parameters
    ----------
    vae : AutoencoderKL, optional
        Frame-wise latent autoencoder (frozen); None: pixel space.
    space_to_depth : int, default=1
        Pixel space only: fold ``r × r`` pixel blocks into channels (``C = 3 r²``).
    frame_chunk : int, default=16
        Frames per VAE call (bounds memory).
    """

    def __init__(
        self, vae: AutoencoderKL | None = None, space_to_depth: int = 1, frame_chunk: int = 16
    ) -> None:
        super().__init__()
        if vae is not None and space_to_depth != 1:
            raise ConfigError("unet.space_to_depth applies to pixel space only (no VAE)")
        if space_to_depth < 1:
            raise ConfigError(f"unet.space_to_depth={space_to_depth}: must be ≥ 1")
        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False).eval()
        self.space_to_depth = int(space_to_depth)
        self.frame_chunk = int(frame_chunk)

    @property
    def is_latent(self) -> bool:
        """True in a VAE's latent space (no [-1, 1] range to clip samples to)."""
        return self.vae is not None

    @property
    def channels(self) -> int:
        return int(self.vae.config.latent_channels) if self.vae is not None else 3 * self.factor**2

    @property
    def factor(self) -> int:
        """Spatial down-sampling from pixels to the denoiser's grid."""
        if self.vae is None:
            return self.space_to_depth
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def config_dict(self) -> dict[str, Any]:
        return {"space_to_depth": self.space_to_depth, "vae": self.vae is not None}

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(C, F, h, w)`` of the denoiser's input for clips of ``frames × height × width``."""
        r = self.factor
        if height % r or width % r:
            raise ConfigError(
                f"frames of {height}×{width} pixels: height and width must be multiples of {r} "
                f"(unet.space_to_depth / the VAE's down-sampling)"
            )
        return self.channels, frames, height // r, width // r

    def train(self, mode: bool = True) -> LatentCodec:
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()  # always frozen
        return self

    @torch.no_grad()
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``video: [B, 3, F, H, W]`` in [-1, 1] → ``[B, C, F, h, w]``."""
        n_frames = video.shape[2]
        flat = rearrange(video, "b c f h w -> (b f) c h w")
        if self.vae is None:
            out = F.pixel_unshuffle(flat, self.space_to_depth) if self.space_to_depth > 1 else flat
        else:
            parts = []
            for chunk in flat.split(self.frame_chunk):
                dist = self.vae.encode(chunk.to(self.vae.dtype)).latent_dist
                parts.append(dist.sample(generator) if generator is not None else dist.mode())
            shift = self.vae.config.shift_factor or 0.0
            out = (torch.cat(parts) - shift) * self.vae.config.scaling_factor
        return rearrange(out.float(), "(b f) c h w -> b c f h w", f=n_frames)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """``[B, C, F, h, w]`` → videos ``[B, 3, F, H, W]`` in [-1, 1] (clamped)."""
        n_frames = latents.shape[2]
        flat = rearrange(latents, "b c f h w -> (b f) c h w")
        if self.vae is None:
            out = F.pixel_shuffle(flat, self.space_to_depth) if self.space_to_depth > 1 else flat
        else:
            shift = self.vae.config.shift_factor or 0.0
            flat = flat / self.vae.config.scaling_factor + shift
            out = torch.cat(
                [self.vae.decode(c.to(self.vae.dtype)).sample for c in flat.split(self.frame_chunk)]
            )
        return rearrange(out.float(), "(b f) c h w -> b c f h w", f=n_frames).clamp(-1, 1)


class ConditionAdapter(ModelMixin, ConfigMixin):
    """The fMRI encoder's output → the UNet's cross-attention input ``[B, L, cross_attention_dim]``.

    Also holds the learned "null" condition that replaces dropped conditions in training and is
    the unconditional branch of classifier-free guidance.

    Two sources of the condition (``source``):

    ``"tokens"``
        The encoder's condition tokens ``[B, out_tokens, out_dim]`` (MinD-Video: the UNet
        cross-attends to 77 fMRI tokens in place of CLIP's text tokens).
    ``"embedding"``
        The encoder's CLIP-space embedding ``[B, clip_dim]``, L2-normalised like CLIP's, as one
        token (like unCLIP's decoder). The shipped tiny prior is trained on CLIP embeddings
        through such an adapter, so stage 2 starts from a decoder that already answers to what
        stage 1 predicts.

    Parameters
    ----------
    in_dim : int
        Width of the input: ``encoder.config.out_dim`` (tokens) or the CLIP dimension (embedding).
    cross_attention_dim : int
        The UNet's ``cross_attention_dim``.
    num_tokens : int
        ``L``: ``encoder.config.out_tokens`` (tokens) or 1 (embedding).
    source : {"tokens", "embedding"}, default="tokens"
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self, in_dim: int, cross_attention_dim: int, num_tokens: int, source: str = "tokens"
    ) -> None:
        super().__init__()
        if source not in CONDITION_SOURCES:
            raise ConfigError(f"condition source '{source}': expected one of {CONDITION_SOURCES}")
        if source == "embedding" and num_tokens != 1:
            raise ConfigError(f"an embedding condition is one token, not num_tokens={num_tokens}")
        self.proj = nn.Linear(in_dim, cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)
        self.null_tokens = nn.Parameter(torch.zeros(num_tokens, cross_attention_dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Input tokens ``[B, L, in_dim]`` → ``[B, L, cross_attention_dim]``."""
        expected = (self.config.num_tokens, self.config.in_dim)
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != expected:
            raise ConfigError(
                f"condition tokens of shape {tuple(tokens.shape)}, the stage-2 projection expects "
                f"[B, {expected[0]}, {expected[1]}] (encoder out_tokens × out_dim)"
            )
        return self.norm(self.proj(tokens))

    def from_encoder(self, output: Any) -> torch.Tensor:
        """An :class:`~neurocine.models.fmri_encoder.FMRIEncoderOutput` → the UNet's condition."""
        if self.config.source == "embedding":
            return self.from_embedding(output.embedding)
        return self(output.tokens)

    def from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """CLIP-space embeddings ``[B, in_dim]`` → the UNet's condition ``[B, 1, D]``.

        L2-normalised like CLIP's, as the encoder's are; an ``embedding``-sourced adapter only
        (ConfigError otherwise). The CLIP oracle feeds it the clips' true image embeddings.
        """
        if self.config.source != "embedding":
            raise ConfigError(
                f"a '{self.config.source}' condition adapter takes the encoder's tokens, "
                "not a CLIP embedding"
            )
        return self(F.normalize(embedding, dim=-1)[:, None, :])

    def null(self, batch: int) -> torch.Tensor:
        """The unconditional condition ``[batch, L, cross_attention_dim]``."""
        return self.null_tokens[None].expand(batch, -1, -1)

    def drop(
        self, cond: torch.Tensor, probability: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Replace each sample's condition by the null condition with ``probability``."""
        if probability <= 0:
            return cond
        keep = torch.rand(
            cond.shape[0], generator=generator, device=generator.device if generator else None
        )
        keep = (keep.to(cond.device) >= probability)[:, None, None]
        return torch.where(keep, cond, self.null(cond.shape[0]).to(cond.dtype))


class Denoiser(NamedTuple):
    """What :func:`build_denoiser` returns.

    ``condition`` is the pretrained condition adapter that comes with a pretrained video prior
    (the tiny preset's CLIP-embedding adapter), None when the preset has none.
    """

    unet: UNetMotionModel
    vae: AutoencoderKL | None
    codec: LatentCodec
    condition: ConditionAdapter | None = None


def predict_noise(
    unet: nn.Module, sample: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor
) -> torch.Tensor:
    """ε̂ = unet(x_t, t, cond) for ``sample: [B, C, F, h, w]`` and ``cond: [B, L, D]``.

    ``UNetMotionModel`` attends per frame and wants the condition repeated per frame;
    ``UNet3DConditionModel`` repeats it itself.
    """
    if isinstance(unet, UNetMotionModel):
        cond = cond.repeat_interleave(sample.shape[2], dim=0)
    return unet(sample, timesteps, encoder_hidden_states=cond).sample


UNET_TRAINABLE = ("all", "motion", "lora", "motion_lora", "none")
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the spatial attention projections


def lora_target_names(unet: nn.Module, targets: tuple[str, ...] | list[str]) -> list[str]:
    """Full names of the 2-D UNet's ``nn.Linear`` layers whose name ends in one of ``targets``.

    The motion modules are left out: their output projections start at zero (identity), so an
    adapter inside them receives no gradient; ``motion_lora`` trains them whole instead.
    """
    names = [
        name
        for name, module in unet.named_modules()
        if isinstance(module, nn.Linear)
        and "motion_modules" not in name
        and any(name == t or name.endswith(f".{t}") for t in targets)
    ]
    if not names:
        raise ConfigError(
            f"stage2.lora_targets={list(targets)}: no linear layer of the UNet matches"
        )
    return names


def set_trainable(
    unet: nn.Module,
    mode: str,
    lora_rank: int = 8,
    lora_alpha: float = 8.0,
    lora_targets: tuple[str, ...] | list[str] = LORA_TARGETS,
) -> None:
    """Freeze the UNet's weights that do not fine-tune in ``mode`` (``stage2.unet_trainable``).

    ``all``: every weight; ``motion``: the motion modules only (AnimateDiff's recipe for an
    inflated image model, diffusers' ``freeze_unet2d_params``); ``lora``: LoRA adapters of rank
    ``lora_rank`` (peft, through diffusers' ``add_adapter``) on the 2-D UNet's ``lora_targets``,
    every base weight frozen; ``motion_lora``: both the motion modules and those adapters;
    ``none``: nothing (only the condition adapter learns).
    """
    if mode not in UNET_TRAINABLE:
        raise ConfigError(f"stage2.unet_trainable='{mode}': expected one of {UNET_TRAINABLE}")
    if lora_rank < 1:
        raise ConfigError(f"stage2.lora_rank={lora_rank}: must be ≥ 1")
    if mode in ("lora", "motion_lora"):
        from peft import LoraConfig

        names = lora_target_names(unet, list(lora_targets))
        # peft leaves only the adapters trainable; lora_B starts at zero (output unchanged).
        # peft annotates lora_alpha as int; it is used as a float scale (alpha / rank).
        config = LoraConfig(
            r=int(lora_rank),
            lora_alpha=float(lora_alpha),  # type: ignore[arg-type]
            target_modules=names,
            init_lora_weights=True,
        )
        if not isinstance(unet, PeftAdapterMixin):
            raise ConfigError(
                f"stage2.unet_trainable={mode}: {type(unet).__name__} does not take peft adapters"
            )
        unet.add_adapter(config)
    if mode in ("motion", "motion_lora"):
        for name, param in unet.named_parameters():  # diffusers' freeze_unet2d_params, + LoRA
            param.requires_grad_("motion_modules" in name or "lora_" in name)
    elif mode == "none":
        unet.requires_grad_(False)


def has_lora(unet: nn.Module) -> bool:
    """Whether peft adapters are attached to ``unet``."""
    return bool(getattr(unet, "_hf_peft_config_loaded", False))


def _check_random_config(unet_cfg: Any) -> None:
    channels = [int(c) for c in unet_cfg.block_out_channels]
    if not channels:
        raise ConfigError("unet.block_out_channels: empty")
    for name in ("norm_num_groups", "num_attention_heads", "motion_num_attention_heads"):
        value = int(getattr(unet_cfg, name))
        bad = [c for c in channels if value < 1 or c % value]
        if bad:
            raise ConfigError(
                f"unet.{name}={value} must divide every unet.block_out_channels {channels}"
            )


def random_unet2d(unet_cfg: Any, in_channels: int) -> UNet2DConditionModel:
    """A small ``UNet2DConditionModel`` from ``cfg.unet`` (random init from the global RNG).

    Cross-attention in every block but the lowest-resolution one, like Stable Diffusion's.
    """
    _check_random_config(unet_cfg)
    channels = tuple(int(c) for c in unet_cfg.block_out_channels)
    n = len(channels)
    down = (
        ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
        if n > 1
        else ("CrossAttnDownBlock2D",)
    )
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1) if n > 1 else ("CrossAttnUpBlock2D",)
    return UNet2DConditionModel(
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=int(unet_cfg.layers_per_block),
        norm_num_groups=int(unet_cfg.norm_num_groups),
        cross_attention_dim=int(unet_cfg.cross_attention_dim),
        attention_head_dim=int(unet_cfg.num_attention_heads),  # diffusers: = number of heads
    )


def zero_motion_outputs(model: nn.Module) -> None:
    """Zero the output projection of every motion module (they start as the identity)."""
    for name, module in model.named_modules():
        if "motion_modules" in name and name.endswith("proj_out") and isinstance(module, nn.Linear):
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)


def inflate_unet(
    unet2d: UNet2DConditionModel,
    motion_adapter: MotionAdapter | None = None,
    motion_num_attention_heads: int = 8,
    motion_max_seq_length: int = 32,
    zero_init_motion: bool = True,
) -> UNetMotionModel:
    """Inflate a 2-D UNet to video: ``UNetMotionModel.from_unet2d`` with a motion adapter.

    Without ``motion_adapter`` a new one is made (random init from the global RNG) whose output
    projections are zeroed when ``zero_init_motion``, so the result equals ``unet2d`` applied
    frame by frame until it is trained.
    """
    config = unet2d.config
    if motion_adapter is None:
        motion_adapter = MotionAdapter(
            block_out_channels=tuple(config.block_out_channels),
            motion_layers_per_block=config.layers_per_block,
            motion_num_attention_heads=motion_num_attention_heads,
            motion_norm_num_groups=config.norm_num_groups,
            motion_max_seq_length=motion_max_seq_length,
            use_motion_mid_block=True,
        )
        if zero_init_motion:
            zero_motion_outputs(motion_adapter)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # from_unet2d's dtype-cast notice is noise here
    try:
        return UNetMotionModel.from_unet2d(unet2d, motion_adapter)
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _require_files(root: Path, subfolder: str) -> list[str]:
    folder = root / subfolder
    missing = []
    if not (folder / "config.json").is_file():
        missing.append(f"{subfolder}/config.json")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(f"{subfolder}/{WEIGHT_FILES[0]}")
    return missing


def load_sd15(path: str | Path) -> tuple[UNet2DConditionModel, AutoencoderKL, MotionAdapter | None]:
    """Stable Diffusion 1.x's UNet and VAE (and an AnimateDiff motion adapter if present)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"unet.pretrained={root}: not a directory (Stable Diffusion 1.x)")
    missing = _require_files(root, "unet") + _require_files(root, "vae")
    if missing:
        raise CheckpointError(
            f"{root}: not a Stable Diffusion 1.x directory in diffusers' layout: missing "
            + ", ".join(missing)
        )
    try:
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", low_cpu_mem_usage=False)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", low_cpu_mem_usage=False)
        adapter = None
        if (root / "motion_adapter" / "config.json").is_file():
            adapter = MotionAdapter.from_pretrained(root, subfolder="motion_adapter")
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{root}: cannot load Stable Diffusion weights: {first}") from exc
    return unet, vae, adapter


def load_tiny(
    root: str | Path | None = None,
) -> tuple[UNetMotionModel, AutoencoderKL, ConditionAdapter]:
    """The tiny video prior (``prior/unet``, ``prior/condition``) and VAE (``vae``) shipped.

    Trained on the simulated world by ``neurocine pretrain prior|vae`` (their ``MODEL_CARD.md``);
    ``root`` (``unet.pretrained``) may name another folder with the same ``vae/`` and
    ``prior/{unet,condition}/`` layout, e.g. the output of a retraining. Weights are loaded as
    float32; the condition adapter maps a CLIP embedding to the prior's condition token.
    """
    root = Path(root) if root else PRETRAINED_ROOT
    missing = [
        *_require_files(root, "prior/unet"),
        *_require_files(root, "prior/condition"),
        *_require_files(root, "vae"),
    ]
    if missing:
        raise CheckpointError(
            f"{root}: the tiny VAE / video prior are missing ({', '.join(missing)}): "
            "run `make pretrained` or use unet.preset=random"
        )
    try:
        unet = UNetMotionModel.from_pretrained(
            root / "prior", subfolder="unet", torch_dtype=torch.float32
        )
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=torch.float32)
        condition = ConditionAdapter.from_pretrained(
            root / "prior", subfolder="condition", torch_dtype=torch.float32, source="embedding"
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{root}: cannot load the tiny VAE / video prior: {first}") from exc
    return unet, vae, condition


def build_denoiser(unet_cfg: Any, seed: int = 0) -> Denoiser:
    """The video UNet, the VAE (or None) and the codec for ``cfg.unet``.

    Parameters
    ----------
    unet_cfg : UNetConfig-like
        ``cfg.unet``.
    seed : int, default=0
        Seeds the random initialisation (the global RNG is left as it was).
    """
    preset = str(unet_cfg.preset)
    if preset not in PRESETS:
        raise ConfigError(f"unet.preset='{preset}': expected one of {PRESETS}")
    if preset == "tiny":  # pretrained: nothing to initialise
        unet, vae, condition = load_tiny(unet_cfg.pretrained)
        if unet_cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        return Denoiser(unet=unet, vae=vae, codec=LatentCodec(vae), condition=condition)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if preset == "random":
            codec = LatentCodec(None, space_to_depth=int(unet_cfg.space_to_depth))
            unet2d = random_unet2d(unet_cfg, codec.channels)
            adapter = None
        else:
            if not unet_cfg.pretrained:
                raise ConfigError("unet.preset=sd15 needs unet.pretrained=<Stable Diffusion dir>")
            unet2d, vae, adapter = load_sd15(unet_cfg.pretrained)
            codec = LatentCodec(vae)
        unet = inflate_unet(
            unet2d,
            motion_adapter=adapter,
            motion_num_attention_heads=int(unet_cfg.motion_num_attention_heads),
            zero_init_motion=bool(unet_cfg.zero_init_motion),
        )
    if unet_cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return Denoiser(unet=unet, vae=codec.vae, codec=codec)


def save_codec_config(codec: LatentCodec, directory: str | Path) -> None:
    """``codec.json`` beside the exported VAE (pixel space: the space-to-depth factor)."""
    Path(directory, "codec.json").write_text(json.dumps(codec.config_dict(), indent=2))


def load_codec(directory: str | Path) -> LatentCodec:
    """The codec saved by :func:`save_codec_config` (+ ``vae/`` when it had one)."""
    directory = Path(directory)
    path = directory / "codec.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (not an exported stage-2 model)")
    spec = json.loads(path.read_text())
    if spec.get("vae"):
        vae = AutoencoderKL.from_pretrained(directory, subfolder="vae", low_cpu_mem_usage=False)
        return LatentCodec(vae)
    return LatentCodec(None, space_to_depth=int(spec.get("space_to_depth", 1)))


def frames_to_video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 clips ``[B, F, H, W, 3]`` → float ``[B, 3, F, H, W]`` in [-1, 1] (diffusers layout)."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ConfigError(f"frames of shape {tuple(frames.shape)}: expected [B, F, H, W, 3]")
    return frames.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def video_to_frames(video: torch.Tensor, uint8: str = "round") -> torch.Tensor:
    """float ``[B, 3, F, H, W]`` in [-1, 1] → uint8 clips ``[B, F, H, W, 3]``.

    ``uint8``: ``round`` to the nearest grey level, or ``truncate`` as MinD-Video does
    (:func:`neurocine.metrics.to_uint8`).
    """
    pixels = cast(torch.Tensor, to_uint8((video.detach().float() + 1.0) * 0.5, uint8))  # same kind
    return pixels.permute(0, 2, 3, 4, 1).contiguous()
