"""Tiny stage-2 parts for the tests: a saved stage-1 encoder, a tiny UNet config, a config."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from neurocine.config import load_config
from neurocine.models.fmri_encoder import FMRIEncoder

# The tiny subject of conftest: V=61 voxels, window 2, F=4 frames of 16×20.
N_VOXELS, WINDOW, FRAMES, HEIGHT, WIDTH = 61, 2, 4, 16, 20
OUT_TOKENS, OUT_DIM, CROSS_DIM = 5, 14, 8

TINY_UNET = [
    "unet.preset=random",
    "unet.block_out_channels=[8,16]",
    "unet.norm_num_groups=4",
    "unet.num_attention_heads=2",
    "unet.motion_num_attention_heads=2",
    f"unet.cross_attention_dim={CROSS_DIM}",
    "unet.space_to_depth=2",  # 16×20×3 → 8×10×12
]


def tiny_encoder(seed: int = 0, **overrides) -> FMRIEncoder:
    kwargs = dict(
        num_voxels=N_VOXELS, window=WINDOW, patch_size=8, embed_dim=12, depth=1, num_heads=3,
        out_tokens=OUT_TOKENS, out_dim=OUT_DIM, clip_dim=12, dropout=0.0,
    )  # fmt: skip
    kwargs.update(overrides)
    encoder = FMRIEncoder(**kwargs)
    encoder.init_weights(torch.Generator().manual_seed(seed))
    return encoder


def save_tiny_encoder(directory: Path, seed: int = 0, **overrides) -> Path:
    return tiny_encoder(seed, **overrides).save_atomic(directory)


def tiny_config(subject: Path, encoder_ckpt: Path | str, runs: Path, *extra: str) -> DictConfig:
    """A stage-2 config over the tiny subject with the tiny UNet (CPU, no progress bar)."""
    return load_config(
        None,
        [
            "stage=stage2",
            "name=stage2-test",
            f"runs_dir={runs}",
            f"data.path={subject}",
            "data.batch_size=3",
            "data.val_runs=1",
            f"stage2.encoder_ckpt={encoder_ckpt}",
            "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
            *TINY_UNET,
            *extra,
        ],
    )
