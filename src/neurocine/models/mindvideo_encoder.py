"""Import MinD-Video's released fMRI-encoder checkpoint into :class:`FMRIEncoder`.

MinD-Video (Chen, Qing & Zhou, NeurIPS 2023) ships its encoder as a directory with a
``config.json`` (fields ``num_voxels, patch_size, embed_dim, depth, num_heads, mlp_ratio,
out_channel, out_dim, window_size, use_temp_attn`` …) and a torch state dict
(``model.pth`` or ``diffusion_pytorch_model.bin``, possibly wrapped as ``{"model": …}``; a
``diffusion_pytorch_model.safetensors`` is read too). Our encoder keeps its parameter names, so
the import is a key map:

=====================================  =========================================
MinD-Video                             NeuroCine
=====================================  =========================================
``patch_embed.proj`` (Conv1d)          same (its voxels ``V mod patch_size`` are dropped:
                                       ``drop_remainder=True``)
``pos_embed [1, P+1, C]`` (sin-cos)    ``pos_embed [1, P, C]`` (the cls row dropped)
``blocks.N.{norm1,attn,norm_temp,      same
attn_temp,norm2,mlp.fc1,mlp.fc2}``
``norm``, ``proj_head.{channel_mapper,  same (``out_channel`` → ``out_tokens``)
projection,fc,layer_norm}``
``cls_token``, ``mask_token``,         unused by its forward pass: dropped
``logit_scale``
—                                      ``temporal_embed`` = 0 (MinD-Video has none)
=====================================  =========================================

MinD-Video's CLIP-aligned output is the projection head's token itself (``out_channel = 1``,
``out_dim = 768``), so the embedding head is the identity unless a different ``clip_dim`` is
asked for (then a fresh linear layer is added and must be trained). Its ``dropout`` is a
stochastic-depth rate; here it becomes plain dropout (no effect at inference).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from neurocine.errors import CheckpointError
from neurocine.models.fmri_encoder import FMRIEncoder

WEIGHT_FILES = ("model.pth", "diffusion_pytorch_model.bin", "diffusion_pytorch_model.safetensors")
DROPPED_KEYS = ("cls_token", "mask_token", "logit_scale")


def read_mindvideo_config(path: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a MinD-Video encoder directory."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json: not an encoder directory")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: not valid JSON: {exc}") from exc


def is_mindvideo_dir(path: str | Path) -> bool:
    """True when ``path`` holds MinD-Video's encoder config (``window_size``/``out_channel``)."""
    try:
        config = read_mindvideo_config(path)
    except CheckpointError:
        return False
    return config.get("_class_name") != "FMRIEncoder" and (
        "window_size" in config or "out_channel" in config or "use_temp_attn" in config
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        weights = path / name
        if not weights.is_file():
            continue
        state: Any  # a state dict, MinD-Video's {"model": state dict, …}, or anything pickled
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(str(weights))
            else:
                state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated files, pickles of unknown classes …
            raise CheckpointError(f"{weights}: cannot read the weights: {exc}") from exc
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{weights}: expected a state dict, got {type(state).__name__}")
        return state
    raise CheckpointError(f"{path}: none of {', '.join(WEIGHT_FILES)} found")


def mindvideo_kwargs(config: dict[str, Any], num_voxels: int | None = None) -> dict[str, Any]:
    """Map MinD-Video's config fields onto :class:`FMRIEncoder`'s constructor arguments."""
    required = ("num_voxels", "patch_size", "embed_dim", "depth", "num_heads")
    missing = [key for key in required if key not in config]
    if missing:
        raise CheckpointError(f"MinD-Video config.json: missing field(s) {', '.join(missing)}")
    if int(config.get("in_chans", 1)) != 1:
        raise CheckpointError(f"MinD-Video config.json: in_chans={config['in_chans']} (only 1)")
    return {
        "num_voxels": int(num_voxels if num_voxels is not None else config["num_voxels"]),
        "window": int(config.get("window_size", 1)),
        "patch_size": int(config["patch_size"]),
        "embed_dim": int(config["embed_dim"]),
        "depth": int(config["depth"]),
        "num_heads": int(config["num_heads"]),
        "mlp_ratio": float(config.get("mlp_ratio", 4.0)),
        "dropout": float(config.get("dropout", 0.0)),
        "temporal_attention": bool(config.get("use_temp_attn", False)),
        "out_tokens": int(config.get("out_channel", 1)),
        "out_dim": int(config.get("out_dim", 768)),
        "use_norm": bool(config.get("use_norm", False)),
        "drop_remainder": True,
    }


def convert_state_dict(
    state: dict[str, torch.Tensor], encoder: FMRIEncoder, source: str
) -> dict[str, torch.Tensor]:
    """MinD-Video parameter names and shapes → ``encoder``'s state dict (strict check)."""
    own = encoder.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in DROPPED_KEYS:
            continue
        if key == "pos_embed":
            value = value[:, 1:]  # drop the cls token's row
        converted[key] = value
    if "pos_embed" not in converted or converted["pos_embed"].shape != own["pos_embed"].shape:
        converted["pos_embed"] = own["pos_embed"]  # fixed sin-cos: recomputed for this patch count
    converted["temporal_embed"] = torch.zeros_like(own["temporal_embed"])
    for key in own:
        if key.startswith("clip_proj.") and key not in converted:
            converted[key] = own[key]  # a new head for a different CLIP dim: kept as initialised
    unexpected = sorted(set(converted) - set(own))
    missing = sorted(set(own) - set(converted))
    if unexpected or missing:
        raise CheckpointError(
            f"{source}: not a MinD-Video encoder of this configuration: "
            f"unexpected {unexpected[:4]}, missing {missing[:4]}"
        )
    for key, value in converted.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{source}: {key}: shape {tuple(value.shape)} does not fit {tuple(own[key].shape)} "
                f"(num_voxels, patch_size or window differ from the checkpoint's)"
            )
    return converted


def load_mindvideo_encoder(
    path: str | Path, num_voxels: int | None = None, clip_dim: int | None = None
) -> FMRIEncoder:
    """Build an :class:`FMRIEncoder` with the weights of a MinD-Video encoder directory.

    Parameters
    ----------
    path : str or Path
        Directory with MinD-Video's ``config.json`` and ``model.pth`` (or
        ``diffusion_pytorch_model.bin`` / ``.safetensors``).
    num_voxels : int, optional
        The data's voxel count (MinD-Video overrides its config's the same way); the
        patch count must still match the checkpoint's.
    clip_dim : int, optional
        Width of the contrastive embedding; None or ``out_dim`` keeps MinD-Video's
        identity head, another value adds a new, untrained linear head.

    Returns
    -------
    FMRIEncoder
        In eval mode, ready to :meth:`~FMRIEncoder.save_pretrained`.
    """
    path = Path(path)
    kwargs = mindvideo_kwargs(read_mindvideo_config(path), num_voxels)
    kwargs["clip_dim"] = None if clip_dim in (None, kwargs["out_dim"]) else int(clip_dim)
    encoder = FMRIEncoder(**kwargs)
    state = convert_state_dict(_read_state_dict(path), encoder, str(path))
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


def convert_mindvideo(src: str | Path, dst: str | Path, num_voxels: int | None = None) -> Path:
    """Write a MinD-Video encoder directory as a NeuroCine :class:`FMRIEncoder` directory."""
    return load_mindvideo_encoder(src, num_voxels=num_voxels).save_atomic(dst)
