"""The fMRI encoder: a transformer over voxel patches × a window of TRs (MinD-Video's shape).

Each TR's ``V`` voxels are cut into ``P = ceil(V / patch_size)`` patches of consecutive voxels
(the last one zero-padded), each patch becomes a token; a fixed sin-cos embedding marks the patch
and a learned embedding marks the TR within the window. Every block attends over the ``P`` tokens
of one TR (spatial attention), then over the ``W`` TRs of one patch (temporal attention, as in
MinD-Video's ``BlockTemp``), then applies an MLP. A projection head maps the ``W·P`` tokens to
``out_tokens`` condition tokens of width ``out_dim`` (what stage 2 conditions on); their mean,
projected to ``clip_dim``, is the embedding that stage 1 aligns with CLIP.

Parameter names follow MinD-Video's released encoder (``patch_embed.proj``, ``blocks.N.attn.qkv``,
``blocks.N.attn_temp``, ``proj_head.channel_mapper`` …) so that its checkpoints load with a plain
key map (:mod:`neurocine.models.mindvideo_encoder`). Saved and loaded as a diffusers
``ModelMixin``/``ConfigMixin`` directory (``config.json`` + safetensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from einops import rearrange
from torch import nn

from neurocine.errors import CheckpointError, ConfigError
from neurocine.fileio import atomic_dir

# MinD-Video's encoder sizes (Chen et al. 2023, cc2017): the ``mindvideo`` preset.
MINDVIDEO_SIZES: dict[str, Any] = {
    "patch_size": 16,
    "embed_dim": 1024,
    "depth": 24,
    "num_heads": 16,
    "mlp_ratio": 4.0,
    "out_tokens": 77,
    "out_dim": 768,
    "temporal_attention": True,
    "patch_embedding": "shared",
}
PRESETS = ("tiny", "mindvideo")
PATCH_EMBEDDINGS = ("shared", "per_patch")


def sincos_embedding(n_positions: int, dim: int) -> torch.Tensor:
    """1-D sin-cos position embedding ``[n_positions, dim]`` (MAE / MinD-Video convention)."""
    if dim % 2:
        raise ConfigError(f"encoder.embed_dim={dim}: must be even (sin-cos position embedding)")
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.arange(n_positions, dtype=np.float64)[:, None] * omega[None, :]
    return torch.from_numpy(np.concatenate([np.sin(angles), np.cos(angles)], axis=1)).float()


class Attention(nn.Module):
    """Multi-head self-attention; returns its weights on request (for brain maps)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"encoder.embed_dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x: [N, L, C]`` → (``[N, L, C]``, weights ``[N, heads, L, L]`` or None)."""
        q, k, v = rearrange(
            self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.num_heads
        )
        if need_weights:
            weights = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
            out = weights @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj_drop(self.proj(rearrange(out, "n h l d -> n l (h d)")))
        return out, weights

    def forward_over_window(self, x: torch.Tensor) -> torch.Tensor:
        """Attention along axis 1 of ``x: [B, W, P, C]`` (each patch over its ``W`` TRs).

        The same function as :meth:`forward` on ``rearrange(x, "b w p c -> (b p) w c")``, by
        broadcasting instead of ``B·P·heads`` tiny matrix products: for a window of a few TRs
        the fused attention kernel's per-sequence overhead and the two transposing copies cost
        more than the arithmetic (the demo's temporal attention, W = 2, runs 2× faster forward
        + backward on CPU). Dropout draws the same masks as :meth:`forward`. Memory grows with
        ``W²``: :class:`SpatioTemporalBlock` uses it for short windows only.
        """
        # [B, W, P, (three h d)] -> three × [B, W, P, h, d], the split of forward()
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).unbind(-3)
        scores = (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1) * q.shape[-1] ** -0.5  # [B,W,W,P,h]
        out = (scores.softmax(dim=2).unsqueeze(-1) * v.unsqueeze(1)).sum(dim=2)  # [B,W,P,h,d]
        out = self.proj(out.flatten(-2))
        if self.training and self.proj_drop.p > 0:  # draw forward()'s masks: (b p) w c order
            per_patch = self.proj_drop(rearrange(out, "b w p c -> (b p) w c"))
            return rearrange(per_patch, "(b p) w c -> b w p c", b=x.shape[0])
        return out


class Mlp(nn.Module):
    """Two-layer GELU MLP (timm's ``Mlp`` parameter names: ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class SpatioTemporalBlock(nn.Module):
    """Pre-norm block: spatial attention per TR, temporal attention per patch, MLP.

    Operates on ``x: [B, W, P, C]``; without ``temporal`` it is a plain ViT block per TR.
    On CPU, windows of at most :attr:`broadcast_max_window` TRs take the temporal attention
    through :meth:`Attention.forward_over_window` (same function, faster there; 0 turns it off).
    Other devices keep the fused kernel (not measured there).
    """

    broadcast_max_window = 4  # measured: 2× faster at W = 2, ~7 % at W = 4, slower at W = 8

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float, dropout: float, temporal: bool
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.temporal = temporal
        if temporal:
            self.norm_temp = nn.LayerNorm(dim)
            self.attn_temp = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout)

    def forward(
        self, x: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns (``x``, spatial weights ``[B, W, H, P, P]``, temporal ``[B, P, H, W, W]``)."""
        n_batch, window = x.shape[:2]
        flat = rearrange(x, "b w p c -> (b w) p c")
        out, spatial = self.attn(self.norm1(flat), need_weights)
        x = x + out.view_as(x)
        temporal = None
        broadcast = x.device.type == "cpu" and window <= self.broadcast_max_window
        if self.temporal and not need_weights and broadcast:
            x = x + self.attn_temp.forward_over_window(self.norm_temp(x))
        elif self.temporal:
            per_patch = rearrange(x, "b w p c -> (b p) w c")
            out, temporal = self.attn_temp(self.norm_temp(per_patch), need_weights)
            x = x + rearrange(out, "(b p) w c -> b w p c", b=n_batch)
            if temporal is not None:
                temporal = rearrange(temporal, "(b p) h i j -> b p h i j", b=n_batch)
        x = x + self.mlp(self.norm2(x))
        if spatial is not None:
            spatial = rearrange(spatial, "(b w) h i j -> b w h i j", b=n_batch, w=window)
        return x, spatial, temporal


class ProjectionHead(nn.Module):
    """``W·P`` tokens of width ``C`` → ``out_tokens`` tokens of width ``out_dim`` (MinD-Video's)."""

    def __init__(
        self,
        n_in_tokens: int,
        out_tokens: int,
        dim: int,
        out_dim: int,
        dropout: float,
        use_norm: bool,
    ) -> None:
        super().__init__()
        self.channel_mapper = nn.Linear(n_in_tokens, out_tokens, bias=False)
        self.projection = nn.Linear(dim, out_dim, bias=False)
        self.fc = nn.Linear(out_dim, out_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(out_dim) if use_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, L, C]`` → ``[B, out_tokens, out_dim]``."""
        x = self.channel_mapper(x.transpose(1, 2)).transpose(1, 2)
        projected = self.projection(x)
        return self.layer_norm(projected + self.dropout(self.fc(F.gelu(projected))))


@dataclass
class FMRIEncoderOutput(BaseOutput):
    """What :meth:`FMRIEncoder.forward` returns.

    embedding : Tensor of shape (B, clip_dim)
        Pooled and projected; stage 1 aligns it with CLIP (not normalised).
    tokens : Tensor of shape (B, out_tokens, out_dim)
        The condition sequence for stage 2.
    hidden : Tensor of shape (B, W, P, embed_dim)
        The transformer's normalised output tokens.
    spatial_attentions, temporal_attentions : tuple of Tensor, optional
        Per block, ``[B, W, heads, P, P]`` and ``[B, P, heads, W, W]`` (``output_attentions``).
    """

    embedding: torch.Tensor
    tokens: torch.Tensor
    hidden: torch.Tensor
    spatial_attentions: tuple[torch.Tensor, ...] | None = None
    temporal_attentions: tuple[torch.Tensor, ...] | None = None


class FMRIEncoder(ModelMixin, ConfigMixin):
    """Transformer encoder of fMRI windows ``[B, W, V]`` (see the module docstring).

    Parameters
    ----------
    num_voxels : int
        ``V``, voxels per TR.
    window : int, default=2
        ``W``, TRs per input window.
    patch_size : int, default=16
        Consecutive voxels per token.
    embed_dim, depth, num_heads : int
        Transformer width, number of blocks and heads.
    mlp_ratio : float, default=4.0
    dropout : float, default=0.0
    temporal_attention : bool, default=True
        Add attention across the window's TRs in every block.
    out_tokens, out_dim : int
        Shape of the condition sequence for stage 2.
    clip_dim : int, optional
        Width of the contrastive embedding; None: the mean token itself (``out_dim``).
    drop_remainder : bool, default=False
        Drop the last ``V mod patch_size`` voxels instead of zero-padding them (MinD-Video's
        ``Conv1d`` patching; set when importing its checkpoints).
    use_norm : bool, default=False
        LayerNorm on the condition tokens (MinD-Video's ``use_norm``).
    patch_embedding : {"shared", "per_patch"}, default="shared"
        ``shared``: one linear map for every patch (MinD-Video's ``Conv1d``; a voxel's identity
        reaches the model only through the position embedding, which needs large-scale
        pretraining to exploit). ``per_patch``: each patch has its own map, so every voxel has
        its own weights from the start (``P·patch_size·C`` parameters; better on small data).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        num_voxels: int,
        window: int = 2,
        patch_size: int = 16,
        embed_dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        temporal_attention: bool = True,
        out_tokens: int = 8,
        out_dim: int = 64,
        clip_dim: int | None = None,
        drop_remainder: bool = False,
        use_norm: bool = False,
        patch_embedding: str = "shared",
    ) -> None:
        super().__init__()
        if patch_embedding not in PATCH_EMBEDDINGS:
            raise ConfigError(
                f"encoder.patch_embedding='{patch_embedding}': expected one of {PATCH_EMBEDDINGS}"
            )
        for name, value in (
            ("num_voxels", num_voxels),
            ("window", window),
            ("patch_size", patch_size),
            ("depth", depth),
            ("out_tokens", out_tokens),
        ):
            if int(value) < 1:
                raise ConfigError(f"encoder.{name}={value}: must be ≥ 1")
        if drop_remainder and num_voxels < patch_size:
            raise ConfigError(f"encoder: {num_voxels} voxels is fewer than patch_size={patch_size}")
        self.num_patches = (
            num_voxels // patch_size if drop_remainder else math.ceil(num_voxels / patch_size)
        )
        self.patch_embed = nn.Module()
        if patch_embedding == "shared":
            self.patch_embed.proj = nn.Conv1d(1, embed_dim, patch_size, stride=patch_size)
        else:
            self.patch_embed.weight = nn.Parameter(
                torch.empty(self.num_patches, patch_size, embed_dim)
            )
            self.patch_embed.bias = nn.Parameter(torch.zeros(self.num_patches, embed_dim))
        # Fixed sin-cos patch positions (frozen, as in MinD-Video) + learned TR positions.
        self.pos_embed = nn.Parameter(
            sincos_embedding(self.num_patches, embed_dim)[None], requires_grad=False
        )
        self.temporal_embed = nn.Parameter(torch.zeros(1, window, 1, embed_dim))
        self.blocks = nn.ModuleList(
            SpatioTemporalBlock(embed_dim, num_heads, mlp_ratio, dropout, temporal_attention)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.proj_head = ProjectionHead(
            window * self.num_patches, out_tokens, embed_dim, out_dim, dropout, use_norm
        )
        self.clip_proj = nn.Linear(out_dim, clip_dim) if clip_dim else nn.Identity()
        self.gradient_checkpointing = False
        self.init_weights()

    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Xavier for linear layers, N(0, 0.02) for the TR embedding (MAE's conventions)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.config.patch_embedding == "shared":
            weight = self.patch_embed.proj.weight
            nn.init.xavier_uniform_(weight.view(weight.shape[0], -1), generator=generator)
            nn.init.zeros_(self.patch_embed.proj.bias)
        else:
            for weight in self.patch_embed.weight:  # each patch like its own nn.Linear
                nn.init.xavier_uniform_(weight, generator=generator)
            nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.temporal_embed, std=0.02, generator=generator)

    @property
    def embedding_dim(self) -> int:
        """Width of :attr:`FMRIEncoderOutput.embedding` (the CLIP dimension it is trained for)."""
        return int(self.config.clip_dim or self.config.out_dim)

    def patchify(self, fmri: torch.Tensor) -> torch.Tensor:
        """``fmri: [B, W, V]`` → voxel patches ``[B, W, P, patch_size]`` (padded or cropped)."""
        self._check_input(fmri)
        size = self.config.patch_size
        n_used = self.num_patches * size
        if n_used > fmri.shape[-1]:
            fmri = F.pad(fmri, (0, n_used - fmri.shape[-1]))
        return fmri[..., :n_used].unflatten(-1, (self.num_patches, size))

    def patch_to_voxels(self, values: torch.Tensor) -> torch.Tensor:
        """Spread per-patch values ``[..., P]`` onto voxels ``[..., V]`` (for brain maps).

        Voxels that no patch covers (``drop_remainder``) get NaN.
        """
        voxels = values.repeat_interleave(self.config.patch_size, dim=-1)
        n_voxels = self.config.num_voxels
        if voxels.shape[-1] >= n_voxels:
            return voxels[..., :n_voxels]
        pad = values.new_full((*values.shape[:-1], n_voxels - voxels.shape[-1]), float("nan"))
        return torch.cat([voxels, pad], dim=-1)

    def _check_input(self, fmri: torch.Tensor) -> None:
        expected = (self.config.window, self.config.num_voxels)
        if fmri.ndim != 3 or tuple(fmri.shape[1:]) != expected:
            raise ConfigError(
                f"fMRI encoder: input shape {tuple(fmri.shape)}, expected [B, W={expected[0]}, "
                f"V={expected[1]}] (encoder.window / the data's voxel count)"
            )

    def forward(self, fmri: torch.Tensor, output_attentions: bool = False) -> FMRIEncoderOutput:
        """Encode fMRI windows.

        Parameters
        ----------
        fmri : Tensor of shape (B, W, V)
        output_attentions : bool, default=False
            Also return every block's attention weights (slower: no fused attention).

        Returns
        -------
        FMRIEncoderOutput
        """
        patches = self.patchify(fmri)
        if self.config.patch_embedding == "shared":
            weight = self.patch_embed.proj.weight.flatten(1)  # Conv1d weight [C, 1, k] as [C, k]
            x = F.linear(patches, weight, self.patch_embed.proj.bias)  # [B, W, P, C]
        else:
            x = torch.einsum("bwpk,pkc->bwpc", patches, self.patch_embed.weight)
            x = x + self.patch_embed.bias
        x = x + self.pos_embed[:, None] + self.temporal_embed
        spatial, temporal = [], []
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled() and not output_attentions:
                x, _, _ = self._gradient_checkpointing_func(block, x)
            else:
                x, s, t = block(x, need_weights=output_attentions)
                spatial.append(s)
                temporal.append(t)
        hidden = self.norm(x)
        tokens = self.proj_head(rearrange(hidden, "b w p c -> b (w p) c"))
        embedding = self.clip_proj(tokens.mean(dim=1))
        return FMRIEncoderOutput(
            embedding=embedding,
            tokens=tokens,
            hidden=hidden,
            spatial_attentions=tuple(spatial) if output_attentions else None,
            temporal_attentions=(
                tuple(temporal) if output_attentions and self.config.temporal_attention else None
            ),
        )

    def encode_tokens(self, fmri: torch.Tensor) -> torch.Tensor:
        """The condition sequence ``[B, out_tokens, out_dim]`` for stage 2."""
        return self(fmri).tokens

    def save_atomic(self, directory: str | Path) -> Path:
        """``save_pretrained`` into a temporary sibling, then rename onto ``directory``."""
        with atomic_dir(directory) as tmp:
            self.save_pretrained(tmp, safe_serialization=True)
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> FMRIEncoder:
        """``from_pretrained`` with a one-line error when the directory is not an encoder."""
        directory = Path(directory)
        if not (directory / cls.config_name).is_file():
            raise CheckpointError(
                f"{directory}: no {cls.config_name}: not an FMRIEncoder directory"
            )
        try:
            return cls.from_pretrained(directory, low_cpu_mem_usage=False)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{directory}: cannot load the encoder: {first}") from exc


def encoder_kwargs(
    encoder_cfg: Any, num_voxels: int, window: int, clip_dim: int | None
) -> dict[str, Any]:
    """Constructor arguments of :class:`FMRIEncoder` from ``cfg.encoder`` and the data's sizes.

    ``encoder_cfg.preset == "mindvideo"`` replaces the size fields by MinD-Video's
    (:data:`MINDVIDEO_SIZES`); ``"tiny"`` takes them from the config as given.
    """
    preset = str(encoder_cfg.preset)
    if preset not in PRESETS:
        raise ConfigError(f"encoder.preset='{preset}': expected one of {PRESETS}")
    kwargs: dict[str, Any] = {
        "num_voxels": int(num_voxels),
        "window": int(window),
        "patch_size": int(encoder_cfg.patch_size),
        "embed_dim": int(encoder_cfg.embed_dim),
        "depth": int(encoder_cfg.depth),
        "num_heads": int(encoder_cfg.num_heads),
        "mlp_ratio": float(encoder_cfg.mlp_ratio),
        "dropout": float(encoder_cfg.dropout),
        "temporal_attention": bool(encoder_cfg.temporal_attention),
        "out_tokens": int(encoder_cfg.out_tokens),
        "out_dim": int(encoder_cfg.out_dim),
        "clip_dim": int(clip_dim) if clip_dim else None,
        "patch_embedding": str(encoder_cfg.patch_embedding),
    }
    if preset == "mindvideo":
        kwargs.update(MINDVIDEO_SIZES)
    return kwargs


def check_compatible(
    encoder: FMRIEncoder, num_voxels: int, window: int, clip_dim: int | None, source: str
) -> None:
    """Raise ConfigError when an encoder does not fit the data (voxels, window, CLIP dim)."""
    cfg = encoder.config
    if cfg.num_voxels != num_voxels:
        raise ConfigError(
            f"{source}: encoder expects {cfg.num_voxels} voxels, the data has {num_voxels}"
        )
    if cfg.window != window:
        raise ConfigError(f"{source}: encoder window {cfg.window} != data.window {window}")
    if clip_dim is not None and encoder.embedding_dim != clip_dim:
        raise ConfigError(
            f"{source}: encoder projects to {encoder.embedding_dim} dims but the CLIP embeddings "
            f"have {clip_dim}: re-embed with the matching CLIP or retrain the encoder"
        )
