"""``VideoDecoder``: fMRI windows → videos, and the stage-2 model directory it saves and loads.

The trained stage-2 parts, wired for inference: fMRI encoder → condition projection → DDIM
sampling of the video UNet (:func:`~neurocine.diffusion.sampling.ddim_sample`) → codec decode.
Saved like a diffusers pipeline, one sub-folder per part::

    <dir>/stage2.json                clip size (frames, height, width) and format version
    <dir>/encoder/                   FMRIEncoder (config.json + safetensors)
    <dir>/adapter/                   ConditionAdapter (source, projection, null condition)
    <dir>/unet/                      UNetMotionModel
    <dir>/scheduler/                 DependentDDPMScheduler config (ρ as trained)
    <dir>/codec.json  [+ <dir>/vae/] pixel space (space-to-depth) or AutoencoderKL latents
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet3DConditionModel, UNetMotionModel
from torch import nn

from neurocine.diffusion.noise import Generator
from neurocine.diffusion.sampling import ddim_sample
from neurocine.diffusion.scheduler import DependentDDPMScheduler
from neurocine.errors import CheckpointError, ConfigError
from neurocine.fileio import atomic_dir
from neurocine.models.fmri_encoder import FMRIEncoder
from neurocine.models.video_unet import (
    ConditionAdapter,
    LatentCodec,
    frames_to_video,
    load_codec,
    save_codec_config,
    video_to_frames,
)

FORMAT_VERSION = 1
MANIFEST = "stage2.json"


def check_condition_dims(
    encoder: FMRIEncoder,
    adapter: ConditionAdapter,
    unet: UNetMotionModel | UNet3DConditionModel,
) -> None:
    """Raise ConfigError when encoder output, projection and UNet cross-attention disagree."""
    enc, ada = encoder.config, adapter.config
    if ada.source == "embedding":
        given, what = (1, encoder.embedding_dim), "CLIP embedding"
    else:
        given, what = (enc.out_tokens, enc.out_dim), "tokens"
    if given != (ada.num_tokens, ada.in_dim):
        raise ConfigError(
            f"encoder/condition mismatch: the encoder gives {given[0]} {what} × {given[1]} dims, "
            f"the condition projection expects {ada.num_tokens} × {ada.in_dim}"
        )
    cross = unet.config.cross_attention_dim
    if ada.cross_attention_dim != cross:
        raise ConfigError(
            f"encoder/condition mismatch: the projection gives {ada.cross_attention_dim} dims, "
            f"the UNet's cross_attention_dim is {cross}"
        )


class VideoDecoder(nn.Module):
    """fMRI → video at inference: the stage-2 parts, shared with the training module.

    Parameters
    ----------
    encoder : FMRIEncoder
    adapter : ConditionAdapter
    unet : UNetMotionModel (or UNet3DConditionModel)
    codec : LatentCodec
    scheduler : DependentDDPMScheduler
        The training scheduler; sampling builds a DDIM scheduler from its config.
    frames_shape : tuple of int
        ``(F, H, W)`` of the clips to generate.
    """

    def __init__(
        self,
        encoder: FMRIEncoder,
        adapter: ConditionAdapter,
        unet: UNetMotionModel | UNet3DConditionModel,
        codec: LatentCodec,
        scheduler: DependentDDPMScheduler,
        frames_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        check_condition_dims(encoder, adapter, unet)
        self.encoder = encoder
        self.adapter = adapter
        self.unet = unet
        self.codec = codec
        self.scheduler = scheduler
        self.frames_shape = tuple(int(s) for s in frames_shape)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def condition(self, fmri: torch.Tensor) -> torch.Tensor:
        """fMRI windows ``[B, W, V]`` → projected condition tokens ``[B, L, D]``."""
        return self.adapter.from_encoder(self.encoder(fmri))

    def condition_from_embedding(self, embedding: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings ``[B, D]`` → condition tokens ``[B, 1, D']`` in place of the
        encoder's prediction (an ``embedding``-sourced adapter only: the CLIP oracle)."""
        return self.adapter.from_embedding(embedding.to(self.device))

    @torch.no_grad()
    def generate(
        self,
        fmri: torch.Tensor | None,
        *,
        condition: torch.Tensor | None = None,
        steps: int = 25,
        guidance_scale: float = 3.0,
        eta: float = 0.0,
        generator: Generator = None,
        dependent_ratio: float | None = None,
        callback: Callable[[int, int], None] | None = None,
        init_frames: torch.Tensor | None = None,
        strength: float = 1.0,
        uint8: str = "round",
    ) -> torch.Tensor:
        """Sample one clip per fMRI window: uint8 ``[B, F, H, W, 3]`` (see :func:`ddim_sample`).

        ``condition`` (``[B, L, D]``, e.g. :meth:`condition_from_embedding`) conditions the UNet
        in place of the fMRI's encoding; give either ``fmri`` or ``condition``. ``init_frames``
        (uint8 ``[B, F, H, W, 3]``, e.g. a low-level reconstruction) are encoded by the codec
        and sampling starts from them with ``strength``. ``uint8``: how the decoded floats
        become grey levels, ``round`` or ``truncate`` (:func:`video_to_frames`).
        """
        if fmri is not None and condition is None:
            cond = self.condition(fmri.to(self.device))
        elif condition is not None and fmri is None:
            cond = condition.to(self.device)
        else:
            raise ValueError("generate: give either fmri or a condition, not both")
        latent_shape = self.codec.latent_shape(*self.frames_shape)
        init_latents = None
        if init_frames is not None:
            init_latents = self.codec.encode(frames_to_video(init_frames.to(self.device)))
        latents = ddim_sample(
            self.unet,
            self.scheduler,
            cond,
            self.adapter.null(cond.shape[0]).to(cond.dtype),
            latent_shape,
            steps=steps,
            guidance_scale=guidance_scale,
            eta=eta,
            generator=generator,
            dependent_ratio=dependent_ratio,
            callback=callback,
            init_latents=init_latents,
            strength=strength,
        )
        return video_to_frames(self.codec.decode(latents), uint8).cpu()

    def save(self, directory: str | Path) -> Path:
        """Write the model directory (module docstring) atomically: temporary name, then rename."""
        with atomic_dir(directory) as tmp:
            self.encoder.save_pretrained(tmp / "encoder", safe_serialization=True)
            self.adapter.save_pretrained(tmp / "adapter", safe_serialization=True)
            self.unet.save_pretrained(tmp / "unet", safe_serialization=True)
            self.scheduler.save_config(tmp / "scheduler")
            save_codec_config(self.codec, tmp)
            if self.codec.vae is not None:
                self.codec.vae.save_pretrained(tmp / "vae", safe_serialization=True)
            manifest = {
                "format": FORMAT_VERSION,
                "frames": self.frames_shape[0],
                "height": self.frames_shape[1],
                "width": self.frames_shape[2],
                "unet_class": type(self.unet).__name__,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> VideoDecoder:
        """Load a directory written by :meth:`save`; CheckpointError names what is missing."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise CheckpointError(f"{directory}: no {MANIFEST}: not an exported stage-2 model")
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise CheckpointError(
                f"{manifest_path}: format {manifest.get('format')} is not {FORMAT_VERSION}"
            )
        missing = [
            name
            for name in ("encoder", "adapter", "unet", "scheduler")
            if not (directory / name).is_dir()
        ]
        if missing:
            raise CheckpointError(f"{directory}: missing {', '.join(missing)}/ (incomplete export)")
        unet_cls = {
            "UNetMotionModel": UNetMotionModel,
            "UNet3DConditionModel": UNet3DConditionModel,
        }
        unet_name = manifest.get("unet_class", "UNetMotionModel")
        if unet_name not in unet_cls:
            raise CheckpointError(f"{manifest_path}: unknown unet_class '{unet_name}'")
        try:
            encoder = FMRIEncoder.load(directory / "encoder")
            adapter = ConditionAdapter.from_pretrained(
                directory / "adapter", low_cpu_mem_usage=False
            )
            unet = unet_cls[unet_name].from_pretrained(directory / "unet", low_cpu_mem_usage=False)
            scheduler = DependentDDPMScheduler.from_pretrained(directory / "scheduler")
            codec = load_codec(directory)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{directory}: cannot load the stage-2 model: {first}") from exc
        frames = (int(manifest["frames"]), int(manifest["height"]), int(manifest["width"]))
        return cls(encoder, adapter, unet, codec, scheduler, frames).eval()
