"""Encoder attention as a brain map: which voxels the fMRI encoder attends to.

The encoder's spatial attention (``[B, W, heads, P, P]`` per block) says how much each query
patch of voxels reads from each key patch. A patch's *received attention* is the mean over
samples, TRs, heads and queries of the weights pointing at it: 1/P everywhere for uniform
attention, larger for patches the encoder relies on. Patches are runs of ``patch_size``
consecutive voxels; :meth:`FMRIEncoder.patch_to_voxels` spreads the values onto voxels, which
are drawn at their MNI coordinates (``/voxels/coords``) with ``nilearn.plotting.plot_markers``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from neurocine.data.schema import read_strings
from neurocine.errors import CheckpointError, ConfigError


@torch.no_grad()
def received_attention(encoder, fmri: torch.Tensor, block: int | None = -1) -> np.ndarray:
    """Mean attention each voxel's patch receives, ``[V]`` (NaN where no patch covers a voxel).

    Parameters
    ----------
    encoder : neurocine.models.fmri_encoder.FMRIEncoder
    fmri : Tensor of shape (B, W, V)
    block : int or None, default=-1
        Which transformer block (negative from the end); None averages all blocks.
    """
    encoder.eval()
    out = encoder(fmri.float(), output_attentions=True)
    maps = out.spatial_attentions
    if block is not None:
        if not -len(maps) <= block < len(maps):
            raise ConfigError(f"block {block}: the encoder has {len(maps)} blocks")
        maps = (maps[block],)
    # [B, W, heads, P_query, P_key] → mean over everything but the key patch.
    per_patch = torch.stack([m.mean(dim=(0, 1, 2, 3)) for m in maps]).mean(dim=0)
    return encoder.patch_to_voxels(per_patch).cpu().numpy()


def voxel_table(data_path: str | Path) -> tuple[np.ndarray, list[str]]:
    """MNI coordinates ``[V, 3]`` and ROI labels of a subject file's voxels."""
    with h5py.File(data_path, "r") as f:
        return f["voxels/coords"][()], read_strings(f["voxels/roi"])


def roi_means(values: np.ndarray, roi: list[str]) -> dict[str, float]:
    """Mean of ``values`` per ROI label, largest first (NaN voxels ignored)."""
    labels = np.asarray(roi)
    out = {
        str(name): float(np.nanmean(values[labels == name]))
        for name in np.unique(labels)
        if np.isfinite(values[labels == name]).any()
    }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def run_attention(
    run, split: str = "test", n_samples: int = 64, block: int | None = -1
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Received attention of a run's encoder on ``n_samples`` windows of ``split``.

    Returns ``(values [V], coords [V, 3], roi labels)``.
    """
    from neurocine.data.datamodule import FMRIVideoDataModule
    from neurocine.models.fmri_encoder import FMRIEncoder

    encoder_dir = run.encoder_dir()
    if encoder_dir is None:
        raise CheckpointError(f"{run.path}: no exported encoder (encoder/ or model/encoder/)")
    encoder = FMRIEncoder.load(encoder_dir)
    datamodule = FMRIVideoDataModule(run.config, augment=False)
    datamodule.setup("test")
    if split not in datamodule.datasets:
        raise ConfigError(f"split '{split}': the data have {sorted(datamodule.datasets)}")
    dataset = datamodule.datasets[split]
    batch = dataset.__getitems__(list(range(min(n_samples, len(dataset)))))
    values = received_attention(encoder, batch["fmri"], block)
    coords, roi = voxel_table(run.config.data.path)
    return values, coords, roi


def plot_brain_map(
    values: np.ndarray,
    coords: np.ndarray,
    title: str | None = None,
    output_file: str | Path | None = None,
    display_mode: str = "ortho",
    cmap: str = "hot",
):
    """Draw per-voxel values at their MNI coordinates (``nilearn.plotting.plot_markers``).

    Voxels without a value (NaN) are left out. Returns nilearn's display (None when saved).
    """
    from nilearn import plotting

    values = np.asarray(values, dtype=float)
    coords = np.asarray(coords, dtype=float)
    if values.shape[0] != coords.shape[0] or coords.ndim != 2 or coords.shape[1] != 3:
        raise ConfigError(f"values {values.shape} and coords {coords.shape}: expected [V], [V, 3]")
    ok = np.isfinite(values)
    return plotting.plot_markers(
        values[ok],
        coords[ok],
        node_size=8,
        node_cmap=cmap,
        display_mode=display_mode,
        title=title,
        output_file=str(output_file) if output_file is not None else None,
    )
