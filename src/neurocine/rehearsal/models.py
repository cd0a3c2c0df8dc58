"""Random-weight model directories with the real classes and on-disk layouts (rehearsal only).

What the real cc2017 run loads, written with ``save_pretrained`` and loaded by the same code:

- :func:`write_clip`: a transformers ``CLIPModel`` + ``CLIPProcessor`` directory with ViT-L/14's
  architecture (patch 14 at 224 px, 77 text positions, 768-d projection) narrowed in width and
  depth for a CPU; the tokenizer is the project's offline word-level one (CLIP's BPE files
  cannot be made offline), padded to 77 tokens;
- :func:`write_stable_diffusion`: Stable Diffusion 1.x's diffusers layout (``unet/``, ``vae/``)
  with SD 1.5's block types, 768-d cross-attention and 8× VAE, narrowed channels, plus an
  AnimateDiff ``motion_adapter/`` (diffusers ``MotionAdapter``) matching the UNet;
- :func:`write_vit` / :func:`write_videomae`: ``ViTForImageClassification`` and
  ``VideoMAEForVideoClassification`` directories (224 px, 16 frames for VideoMAE, like the
  checkpoints the README names) with their image processors and 100 classes, so both 2-way and
  50-way protocols have classes to draw from.

Every writer is seeded, leaves the global RNG as it was and writes atomically; an existing
directory with a ``config.json`` is kept (a rerun reuses it).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from neurocine.fileio import atomic_dir
from neurocine.models.clip_targets import build_tiny_tokenizer, tiny_clip_config
from neurocine.models.full_size import SD15_UNET_CONFIG, SD15_VAE_CONFIG, write_random_sd
from neurocine.models.video_unet import zero_motion_outputs

CLASSES = 100  # ≥ 50: the 50-way protocol draws 49 distractor classes
NARROW_CHANNELS = [32, 64, 64, 64]  # SD 1.5: [320, 640, 1280, 1280]; 4 blocks, 8× VAE kept


def _exists(directory: Path) -> bool:
    return (directory / "config.json").is_file()


def write_clip(directory: str | Path, seed: int = 0) -> Path:
    """A ``CLIPModel`` directory of ViT-L/14's architecture, narrowed (module docstring)."""
    from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor

    directory = Path(directory)
    if _exists(directory):
        return directory
    # ViT-L/14's layout (224 px, patch 14, 77 tokens, 768-d projection), narrowed to width 64
    # and 2 layers (ViT-L/14: vision 1024 × 24 layers, text 768 × 12 layers).
    config = tiny_clip_config(max_length=77, image_size=224, patch_size=14, projection_dim=768)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
        ),
        tokenizer=build_tiny_tokenizer(max_length=77),
    )
    with atomic_dir(directory) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPModel(config).save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return directory


def write_stable_diffusion(directory: str | Path, seed: int = 0) -> Path:
    """SD 1.x's diffusers layout, narrowed, with an AnimateDiff ``motion_adapter/``."""
    from diffusers import MotionAdapter

    directory = Path(directory)
    if (directory / "motion_adapter" / "config.json").is_file():
        return directory
    unet = {**copy.deepcopy(SD15_UNET_CONFIG), "block_out_channels": NARROW_CHANNELS}
    vae = {**copy.deepcopy(SD15_VAE_CONFIG), "block_out_channels": NARROW_CHANNELS}
    write_random_sd(directory, unet_config=unet, vae_config=vae, seed=seed)
    with atomic_dir(directory / "motion_adapter") as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        adapter = MotionAdapter(  # AnimateDiff v1.5-2's settings on the narrowed channels
            block_out_channels=tuple(NARROW_CHANNELS),
            motion_layers_per_block=unet["layers_per_block"],
            motion_num_attention_heads=8,
            motion_norm_num_groups=unet["norm_num_groups"],
            motion_max_seq_length=32,
            use_motion_mid_block=True,
        )
        zero_motion_outputs(adapter)  # a real adapter is trained; zero output keeps SD's frames
        adapter.save_pretrained(tmp, safe_serialization=True)
    return directory


def _labels(config) -> None:
    config.id2label = {i: f"class_{i}" for i in range(CLASSES)}
    config.label2id = {v: k for k, v in config.id2label.items()}


def write_vit(directory: str | Path, seed: int = 0) -> Path:
    """A ``ViTForImageClassification`` directory (224 px, patch 16, 100 classes), narrowed."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    directory = Path(directory)
    if _exists(directory):
        return directory
    config = ViTConfig(image_size=224, patch_size=16, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64)  # fmt: skip
    _labels(config)
    with atomic_dir(directory) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ViTForImageClassification(config).save_pretrained(tmp, safe_serialization=True)
        ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(tmp)
    return directory


def write_videomae(directory: str | Path, seed: int = 0) -> Path:
    """A ``VideoMAEForVideoClassification`` directory (16 frames of 224 px), narrowed."""
    from transformers import (
        VideoMAEConfig,
        VideoMAEForVideoClassification,
        VideoMAEImageProcessor,
    )

    directory = Path(directory)
    if _exists(directory):
        return directory
    config = VideoMAEConfig(image_size=224, patch_size=16, num_frames=16, tubelet_size=2,
                            hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64)  # fmt: skip
    _labels(config)
    processor = VideoMAEImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    )
    with atomic_dir(directory) as tmp, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        VideoMAEForVideoClassification(config).save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
    return directory


def write_models(root: str | Path, seed: int = 0) -> dict[str, Path]:
    """All four directories under ``root``; keys as in the pipeline spec's ``models:``."""
    root = Path(root)
    return {
        "clip": write_clip(root / "clip-vit-large-patch14-narrow", seed),
        "stable_diffusion": write_stable_diffusion(root / "stable-diffusion-1x-narrow", seed),
        "image_classifier": write_vit(root / "vit-image-classifier", seed),
        "video_classifier": write_videomae(root / "videomae-video-classifier", seed),
    }
