"""The tiny VAE: a diffusers ``AutoencoderKL`` that compresses simulated frames to 4 × 8 × 8.

Stage 2 then runs latent diffusion as in Stable Diffusion: the denoiser sees 8 × 8 latents
instead of 32 × 32 pixels, so spatial attention stays cheap on a CPU. Training is the
reconstruction objective of the SD autoencoder without its perceptual and adversarial terms:
L1 on pixels in [-1, 1] plus a small KL term (``kl_weight``, relative to the per-pixel L1) on
random ``crop × crop`` windows of frames drawn from every clip (the VAE is convolutional: like
SD's, trained on crops, used on whole frames; 16 × 16 crops cost a quarter of 32 × 32 frames).
Afterwards ``shift_factor`` and ``scaling_factor`` are set to the mean and 1 / std of the
training latents (SD's 0.18215 convention, plus the shift that diffusers added for later
models), so the diffusion sees latents of mean 0 and variance 1.

Saved with ``AutoencoderKL.save_pretrained`` (float16 by default); the ``tiny`` UNet preset
loads it with ``AutoencoderKL.from_pretrained(..., torch_dtype=torch.float32)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from neurocine.fileio import atomic_dir
from neurocine.metrics import video_psnr, video_ssim
from neurocine.pretrain.common import (
    PretrainDataConfig,
    RunConfig,
    RunRecord,
    adamw_with_schedule,
    build_trainer,
    command_line,
    count_parameters,
    load_data,
    log_dir,
    uint8_to_unit,
    unit_to_uint8,
    write_card,
)
from neurocine.pretrain.data import PretrainClips


@dataclass
class VaeRecipe(RunConfig):
    """``neurocine pretrain vae``: architecture and schedule of the tiny VAE."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 4  # ≥ 4 channels per group: 1 would normalise away each channel's
    # mean (colour) per frame right before the decoder's output convolution
    kl_weight: float = 1e-5  # × KL summed over a latent / pixel values per frame
    crop: int = 16  # train on random crops of this size (0: whole frames); the VAE is a conv net
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)


def build_vae(recipe: DictConfig):
    """An untrained ``AutoencoderKL`` of the recipe (down-sampling 2^(levels − 1))."""
    from diffusers import AutoencoderKL

    channels = tuple(int(c) for c in recipe.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=int(recipe.layers_per_block),
        latent_channels=int(recipe.latent_channels),
        norm_num_groups=int(recipe.norm_num_groups),
        sample_size=int(recipe.data.height),
    )


class VaePretrainModule(L.LightningModule):
    """Reconstruction + KL training of an injected ``AutoencoderKL`` on single frames.

    Parameters
    ----------
    vae : diffusers.AutoencoderKL
    recipe : DictConfig
        A :class:`VaeRecipe`.
    """

    def __init__(self, vae: torch.nn.Module, recipe: DictConfig) -> None:
        super().__init__()
        self.vae = vae
        self.recipe = recipe
        self.save_hyperparameters({"recipe": OmegaConf.to_container(recipe)})
        self._gen = torch.Generator().manual_seed(int(recipe.seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frames ``[B, 3, H, W]`` in [-1, 1] → reconstructions (posterior mode)."""
        return self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        """One random ``crop × crop`` window per batch (cheaper; full frames at inference)."""
        size = int(self.recipe.crop)
        h, w = x.shape[-2:]
        if size <= 0 or size >= min(h, w):
            return x
        top = int(torch.randint(h - size + 1, (1,), generator=self._gen))
        left = int(torch.randint(w - size + 1, (1,), generator=self._gen))
        return x[..., top : top + size, left : left + size]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (clips,) = batch  # uint8 [B, F, H, W, 3]
        b, f = clips.shape[:2]
        pick = torch.randint(f, (b,), generator=self._gen).to(clips.device)
        x = uint8_to_unit(clips[torch.arange(b, device=clips.device), pick])
        x = self._crop(x)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(
            posterior.mean.shape, generator=self._gen
        ).to(x.device)
        recon = self.vae.decode(z).sample
        l1 = (recon - x).abs().mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = l1 + float(self.recipe.kl_weight) * kl
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/l1", l1)
        self.log("train/kl", kl)
        return loss

    def configure_optimizers(self) -> dict:
        return adamw_with_schedule(self, self.vae.parameters(), self.recipe)


@torch.no_grad()
def latent_stats(
    vae, clips: PretrainClips, max_frames: int = 2048, chunk: int = 256
) -> tuple[float, float]:
    """Mean and standard deviation of the posterior means of (≤ ``max_frames``) frames."""
    frames = clips.frames.reshape(-1, *clips.frames.shape[2:])
    step = max(1, frames.shape[0] // max_frames)
    x = uint8_to_unit(torch.from_numpy(frames[::step][:max_frames]))
    z = torch.cat([vae.encode(c).latent_dist.mean for c in x.split(chunk)])
    return float(z.mean()), float(z.std())


@torch.no_grad()
def reconstruct_clips(vae, frames: np.ndarray, chunk: int = 128) -> np.ndarray:
    """uint8 clips ``[N, F, H, W, 3]`` → their reconstructions through the posterior mode."""
    n, f = frames.shape[:2]
    flat = uint8_to_unit(torch.from_numpy(frames.reshape(n * f, *frames.shape[2:])))
    dtype = next(vae.parameters()).dtype
    out = [
        vae.decode(vae.encode(c.to(dtype)).latent_dist.mode()).sample.float()
        for c in flat.split(chunk)
    ]
    return unit_to_uint8(torch.cat(out)).numpy().reshape(frames.shape)


def mean_frame_clips(train: PretrainClips, n: int) -> np.ndarray:
    """The mean training frame, as ``n`` clips (the mean-frame baseline)."""
    mean = train.frames.reshape(-1, *train.frames.shape[2:]).mean(0)
    clip = np.broadcast_to(np.round(mean).astype(np.uint8), train.frames.shape[1:])
    return np.ascontiguousarray(np.broadcast_to(clip, (n, *clip.shape)))


def reconstruction_quality(vae, train: PretrainClips, val: PretrainClips) -> dict[str, float]:
    """SSIM/PSNR of reconstructions of the held-out clips, and of the mean-frame baseline."""
    recon = reconstruct_clips(vae, val.frames)
    baseline = mean_frame_clips(train, len(val))
    return {
        "n_frames": int(val.frames.shape[0] * val.frames.shape[1]),
        "ssim": video_ssim(recon, val.frames),
        "psnr": video_psnr(recon, val.frames),
        "mean_frame_ssim": video_ssim(baseline, val.frames),
        "mean_frame_psnr": video_psnr(baseline, val.frames),
    }


def quality_table(q: dict) -> str:
    return "\n".join(
        [
            f"Reconstruction of the {q['n_frames']} frames of the held-out clips (posterior mode, "
            "weights as stored), `neurocine.metrics.video_ssim` / `video_psnr`:",
            "",
            "| metric | tiny VAE | mean-frame baseline |",
            "|---|---|---|",
            f"| SSIM | {q['ssim']:.3f} | {q['mean_frame_ssim']:.3f} |",
            f"| PSNR (dB) | {q['psnr']:.2f} | {q['mean_frame_psnr']:.2f} |",
        ]
    )


def load_vae(directory: str | Path):
    """A saved tiny VAE in float32 (the weights may be stored as float16)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(directory), torch_dtype=torch.float32).eval()


def pretrain_vae(recipe: DictConfig, out: str | Path) -> dict:
    """Train the tiny VAE, set its scaling factor, measure it, write ``out`` (model + card)."""
    start = time.time()
    train, val = load_data(recipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe.seed))
        vae = build_vae(recipe)
    loader = DataLoader(
        TensorDataset(torch.from_numpy(train.frames)),
        batch_size=int(recipe.batch_size),
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(int(recipe.seed)),
    )
    module = VaePretrainModule(vae, recipe)
    trainer = build_trainer(recipe, log_dir(recipe, "vae"))
    train_start = time.time()
    trainer.fit(module, loader)
    train_s = time.time() - train_start

    vae = vae.float().cpu().eval()
    mean, std = latent_stats(vae, train)
    vae.register_to_config(shift_factor=mean, scaling_factor=1.0 / std)
    with atomic_dir(out) as tmp:
        (vae.half() if recipe.fp16 else vae).save_pretrained(str(tmp))
        quality = reconstruction_quality(load_vae(tmp), train, val)
        quality["latent_mean"], quality["latent_std"] = mean, std
        factor = 2 ** (len(recipe.block_out_channels) - 1)
        h, w = int(recipe.data.height), int(recipe.data.width)
        record = RunRecord(
            name="VAE",
            command=command_line(),
            recipe=recipe,
            steps_done=int(trainer.global_step),
            train_s=train_s,
            wall_s=time.time() - start,
            n_params=count_parameters(vae),
            quality_table=quality_table(quality),
            quality=quality,
            description=(
                "A diffusers `AutoencoderKL` trained to reconstruct frames of the simulated "
                "world; the stand-in for Stable Diffusion's VAE. `unet.preset=tiny` runs stage "
                "2's diffusion in its latent space."
            ),
            outputs=(
                f"`encode(x).latent_dist`: frames `[N, 3, {h}, {w}]` in [-1, 1] → latents "
                f"`[N, {recipe.latent_channels}, {h // factor}, {w // factor}]`; "
                f"`decode(z).sample` inverts it. `shift_factor` = {mean:.4g}, `scaling_factor` = "
                f"1 / {std:.4g}: `(z − shift) · scale` of the training frames has mean 0, "
                "variance 1 (what the diffusion sees, `LatentCodec`)."
            ),
        )
        write_card(tmp, record)
    return quality
