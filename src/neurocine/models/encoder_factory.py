"""Build the fMRI encoder from config: fresh, or loaded from a pretrained directory.

``encoder.pretrained`` names either an :class:`~neurocine.models.fmri_encoder.FMRIEncoder`
directory or a MinD-Video checkpoint (:mod:`neurocine.models.mindvideo_encoder`); this module
sits above both so that neither imports the other's loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from neurocine.models.fmri_encoder import FMRIEncoder, check_compatible, encoder_kwargs
from neurocine.models.mindvideo_encoder import is_mindvideo_dir, load_mindvideo_encoder


def build_encoder(
    encoder_cfg: Any,
    num_voxels: int,
    window: int,
    clip_dim: int | None,
    seed: int = 0,
) -> FMRIEncoder:
    """Build the encoder from config, or load ``encoder_cfg.pretrained`` and check its sizes.

    ``pretrained`` is either an :class:`FMRIEncoder` directory or a MinD-Video checkpoint
    directory (recognised by its ``num_voxels``/``embed_dim`` config fields).
    ``encoder_cfg.gradient_checkpointing`` turns on activation checkpointing of the blocks
    (a training-time setting: it is not saved with the encoder).
    """
    if encoder_cfg.pretrained:
        path = Path(str(encoder_cfg.pretrained))
        if is_mindvideo_dir(path):
            encoder = load_mindvideo_encoder(path, num_voxels=num_voxels, clip_dim=clip_dim)
        else:
            encoder = FMRIEncoder.load(path)
        check_compatible(encoder, num_voxels, window, clip_dim, source=str(path))
    else:
        encoder = FMRIEncoder(**encoder_kwargs(encoder_cfg, num_voxels, window, clip_dim))
        encoder.init_weights(torch.Generator().manual_seed(seed))
    if getattr(encoder_cfg, "gradient_checkpointing", False):
        encoder.enable_gradient_checkpointing()
    return encoder
