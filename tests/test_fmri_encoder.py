"""The fMRI encoder: shapes, attention weights, save/load, config presets, MinD-Video import."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from neurocine.config import EncoderConfig
from neurocine.errors import CheckpointError, ConfigError
from neurocine.models.encoder_factory import build_encoder
from neurocine.models.fmri_encoder import (
    MINDVIDEO_SIZES,
    FMRIEncoder,
    encoder_kwargs,
    sincos_embedding,
)
from neurocine.models.mindvideo_encoder import is_mindvideo_dir, load_mindvideo_encoder

# Pairwise-distinct sizes: batch 3, window 2, voxels 61, patch 8 (→ 8 patches, last padded).
B, W, V, PATCH = 3, 2, 61, 8


def tiny_encoder(**overrides) -> FMRIEncoder:
    kwargs = dict(
        num_voxels=V, window=W, patch_size=PATCH, embed_dim=12, depth=2, num_heads=3,
        out_tokens=5, out_dim=14, clip_dim=10, dropout=0.0,
    )  # fmt: skip
    kwargs.update(overrides)
    encoder = FMRIEncoder(**kwargs)
    encoder.init_weights(torch.Generator().manual_seed(0))
    return encoder.eval()


def fmri(seed: int = 0, batch: int = B) -> torch.Tensor:
    return torch.randn(batch, W, V, generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_attention_weights():
    encoder = tiny_encoder()
    out = encoder(fmri(), output_attentions=True)
    assert out.embedding.shape == (B, 10)
    assert out.tokens.shape == (B, 5, 14)
    assert out.hidden.shape == (B, W, 8, 12)
    assert len(out.spatial_attentions) == 2 and len(out.temporal_attentions) == 2
    assert out.spatial_attentions[0].shape == (B, W, 3, 8, 8)
    assert out.temporal_attentions[0].shape == (B, 8, 3, W, W)
    # Attention rows are distributions.
    torch.testing.assert_close(out.spatial_attentions[1].sum(-1), torch.ones(B, W, 3, 8))
    # The explicit-weights path computes the same function as the fused one.
    torch.testing.assert_close(encoder(fmri()).embedding, out.embedding, atol=1e-5, rtol=1e-5)


def test_samples_are_independent_and_window_order_matters():
    encoder = tiny_encoder()
    x = fmri()
    full = encoder(x).embedding
    torch.testing.assert_close(encoder(x[1:2]).embedding, full[1:2], atol=1e-5, rtol=1e-5)
    swapped = encoder(x.flip(1)).embedding  # learned TR embeddings: order is information
    assert not torch.allclose(swapped, full, atol=1e-4)


def test_no_temporal_attention_keeps_trs_apart_until_the_head():
    encoder = tiny_encoder(temporal_attention=False)
    x = fmri()
    y = x.clone()
    y[:, 1] += 1.0
    hidden_x, hidden_y = encoder(x).hidden, encoder(y).hidden
    torch.testing.assert_close(hidden_x[:, 0], hidden_y[:, 0])  # TR 0 untouched by TR 1
    assert encoder(x, output_attentions=True).temporal_attentions is None


def test_padding_voxel_only_changes_its_patch():
    encoder = tiny_encoder()
    x = fmri()
    y = x.clone()
    y[:, :, 60] += 5.0  # the last voxel lives in the last (zero-padded) patch
    patches_x, patches_y = encoder.patchify(x), encoder.patchify(y)
    assert patches_x.shape == (B, W, 8, PATCH)
    torch.testing.assert_close(patches_x[:, :, :7], patches_y[:, :, :7])
    assert encoder.patch_to_voxels(torch.arange(8.0)).tolist()[-2:] == [7.0, 7.0]


def test_gradients_reach_every_trainable_parameter():
    encoder = tiny_encoder().train()
    encoder(fmri()).embedding.square().sum().backward()
    for name, param in encoder.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert encoder.pos_embed.grad is None  # the fixed sin-cos positions stay frozen


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = tiny_encoder().train()
    ckpt = tiny_encoder().train()
    ckpt.enable_gradient_checkpointing()
    for model in (plain, ckpt):
        model(fmri()).embedding.sum().backward()
    torch.testing.assert_close(
        plain.blocks[0].attn.qkv.weight.grad, ckpt.blocks[0].attn.qkv.weight.grad
    )


def test_save_load_round_trip(tmp_path):
    encoder = tiny_encoder()
    encoder.save_atomic(tmp_path / "encoder")
    assert sorted(p.name for p in (tmp_path / "encoder").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    loaded = FMRIEncoder.load(tmp_path / "encoder").eval()
    assert loaded.config.clip_dim == 10 and loaded.config.num_voxels == V
    torch.testing.assert_close(loaded(fmri()).embedding, encoder(fmri()).embedding, rtol=0, atol=0)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left


def test_load_errors_name_the_directory(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        FMRIEncoder.load(tmp_path)


def test_wrong_input_shape_is_a_config_error():
    with pytest.raises(ConfigError, match=r"expected \[B, W=2, V=61\]"):
        tiny_encoder()(torch.zeros(B, W, V + 1))


def test_build_from_config_is_seeded_and_checks_clip_dim(tmp_path):
    cfg = OmegaConf.structured(EncoderConfig(patch_size=PATCH, embed_dim=12, depth=1, num_heads=3))
    a, b = build_encoder(cfg, V, W, clip_dim=10, seed=3), build_encoder(cfg, V, W, 10, seed=3)
    c = build_encoder(cfg, V, W, 10, seed=4)
    assert torch.equal(a.blocks[0].attn.qkv.weight, b.blocks[0].attn.qkv.weight)
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
    a.save_atomic(tmp_path / "enc")
    cfg.pretrained = str(tmp_path / "enc")
    assert build_encoder(cfg, V, W, clip_dim=10).embedding_dim == 10
    with pytest.raises(ConfigError, match="projects to 10 dims but the CLIP embeddings have 16"):
        build_encoder(cfg, V, W, clip_dim=16)
    with pytest.raises(ConfigError, match="expects 61 voxels, the data has 60"):
        build_encoder(cfg, V - 1, W, clip_dim=10)


def test_mindvideo_preset_sizes():
    cfg = OmegaConf.structured(EncoderConfig(preset="mindvideo"))
    kwargs = encoder_kwargs(cfg, num_voxels=4500, window=2, clip_dim=768)
    assert {k: kwargs[k] for k in MINDVIDEO_SIZES} == MINDVIDEO_SIZES
    assert (kwargs["embed_dim"], kwargs["depth"], kwargs["num_heads"]) == (1024, 24, 16)
    assert (kwargs["out_tokens"], kwargs["out_dim"], kwargs["patch_size"]) == (77, 768, 16)
    cfg.preset = "huge"
    with pytest.raises(ConfigError, match="encoder.preset='huge'"):
        encoder_kwargs(cfg, 4500, 2, 768)


# --- MinD-Video import -------------------------------------------------------------------------
MV = dict(num_voxels=70, patch_size=8, embed_dim=12, depth=2, num_heads=3, mlp_ratio=2.0,
          out_channel=4, out_dim=10, window_size=2, use_temp_attn=True)  # fmt: skip


def mindvideo_state_dict(cfg: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under MinD-Video's parameter names and shapes (its fMRIEncoder)."""
    g = torch.Generator().manual_seed(seed)
    C, P = cfg["embed_dim"], cfg["num_voxels"] // cfg["patch_size"]
    hidden = int(C * cfg["mlp_ratio"])

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    state = {
        "cls_token": r(1, 1, C),
        "mask_token": r(1, 1, C),
        "logit_scale": torch.tensor(1.0),
        "pos_embed": torch.cat([torch.zeros(1, 1, C), sincos_embedding(P, C)[None]], dim=1),
        "patch_embed.proj.weight": r(C, 1, cfg["patch_size"]),
        "patch_embed.proj.bias": r(C),
        "norm.weight": 1 + r(C),
        "norm.bias": r(C),
        "proj_head.channel_mapper.weight": r(cfg["out_channel"], P * cfg["window_size"]),
        "proj_head.projection.weight": r(cfg["out_dim"], C),
        "proj_head.fc.weight": r(cfg["out_dim"], cfg["out_dim"]),
    }
    for i in range(cfg["depth"]):
        for norm in ("norm1", "norm2", "norm_temp"):
            state[f"blocks.{i}.{norm}.weight"] = 1 + r(C)
            state[f"blocks.{i}.{norm}.bias"] = r(C)
        for attn in ("attn", "attn_temp"):
            state[f"blocks.{i}.{attn}.qkv.weight"] = r(3 * C, C)
            state[f"blocks.{i}.{attn}.qkv.bias"] = r(3 * C)
            state[f"blocks.{i}.{attn}.proj.weight"] = r(C, C)
            state[f"blocks.{i}.{attn}.proj.bias"] = r(C)
        state[f"blocks.{i}.mlp.fc1.weight"] = r(hidden, C)
        state[f"blocks.{i}.mlp.fc1.bias"] = r(hidden)
        state[f"blocks.{i}.mlp.fc2.weight"] = r(C, hidden)
        state[f"blocks.{i}.mlp.fc2.bias"] = r(C)
    return state


def mindvideo_reference(state: dict, cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """MinD-Video's forward_encoder written out with plain torch ops (eval mode)."""
    C, H, Wn = cfg["embed_dim"], cfg["num_heads"], cfg["window_size"]
    b = x.shape[0]

    def ln(t, name):
        return F.layer_norm(t, (C,), state[f"{name}.weight"], state[f"{name}.bias"], eps=1e-5)

    def attn(t, name):  # t: [N, L, C]
        n, seq = t.shape[:2]
        qkv = F.linear(t, state[f"{name}.qkv.weight"], state[f"{name}.qkv.bias"])
        q, k, v = qkv.reshape(n, seq, 3, H, C // H).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) * (C // H) ** -0.5).softmax(-1)
        out = (a @ v).transpose(1, 2).reshape(n, seq, C)
        return F.linear(out, state[f"{name}.proj.weight"], state[f"{name}.proj.bias"])

    t = x.reshape(b * Wn, 1, -1)  # 'b c n -> (b c) 1 n'
    t = F.conv1d(t, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                 stride=cfg["patch_size"]).transpose(1, 2)  # fmt: skip
    t = t + state["pos_embed"][:, 1:]
    d = t.shape[1]
    for i in range(cfg["depth"]):
        p = f"blocks.{i}"
        t = t + attn(ln(t, f"{p}.norm1"), f"{p}.attn")
        t = t.reshape(b, Wn, d, C).transpose(1, 2).reshape(b * d, Wn, C)  # (b f) d c -> (b d) f c
        t = t + attn(ln(t, f"{p}.norm_temp"), f"{p}.attn_temp")
        t = t.reshape(b, d, Wn, C).transpose(1, 2).reshape(b * Wn, d, C)
        h = F.gelu(
            F.linear(ln(t, f"{p}.norm2"), state[f"{p}.mlp.fc1.weight"], state[f"{p}.mlp.fc1.bias"])
        )
        t = t + F.linear(h, state[f"{p}.mlp.fc2.weight"], state[f"{p}.mlp.fc2.bias"])
    t = ln(t, "norm").reshape(b, Wn * d, C)  # '(b c) n d -> b (c n) d'
    t = F.linear(t.transpose(1, 2), state["proj_head.channel_mapper.weight"]).transpose(1, 2)
    projected = F.linear(t, state["proj_head.projection.weight"])
    return projected + F.linear(F.gelu(projected), state["proj_head.fc.weight"])


def write_mindvideo_dir(path, cfg: dict, state: dict, wrap: bool = True):
    path.mkdir()
    extra = {"in_chans": 1, "use_norm": False, "dropout": 0.0, "logit_scale_init_value": 1.0}
    (path / "config.json").write_text(json.dumps({**cfg, **extra}))
    torch.save({"model": state} if wrap else state, path / "model.pth")
    return path


def test_mindvideo_checkpoint_imports_to_the_same_function(tmp_path):
    state = mindvideo_state_dict(MV)
    src = write_mindvideo_dir(tmp_path / "mindvideo", MV, state)
    assert is_mindvideo_dir(src)
    encoder = load_mindvideo_encoder(src)
    assert encoder.config.drop_remainder and encoder.num_patches == 8  # 70 // 8; 6 voxels dropped
    x = torch.randn(B, 2, 70, generator=torch.Generator().manual_seed(1))
    out = encoder(x)
    expected = mindvideo_reference(state, MV, x)
    torch.testing.assert_close(out.tokens, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.embedding, expected.mean(1), atol=1e-5, rtol=1e-4)
    # Converted once, it is a plain encoder directory that build_encoder also accepts.
    encoder.save_atomic(tmp_path / "converted")
    assert not is_mindvideo_dir(tmp_path / "converted")
    cfg = OmegaConf.structured(EncoderConfig(pretrained=str(src)))
    built = build_encoder(cfg, num_voxels=70, window=2, clip_dim=10).eval()
    torch.testing.assert_close(built(x).tokens, expected, atol=1e-5, rtol=1e-4)


def test_mindvideo_mismatches_are_checkpoint_errors(tmp_path):
    state = mindvideo_state_dict(MV)
    src = write_mindvideo_dir(tmp_path / "mv", MV, state, wrap=False)
    with pytest.raises(CheckpointError, match="channel_mapper.weight: shape"):
        load_mindvideo_encoder(src, num_voxels=100)  # 12 patches instead of 8
    del state["norm.weight"]
    torch.save(state, src / "model.pth")
    with pytest.raises(CheckpointError, match=r"missing \['norm.weight'\]"):
        load_mindvideo_encoder(src)
    (src / "model.pth").unlink()
    with pytest.raises(CheckpointError, match="none of model.pth"):
        load_mindvideo_encoder(src)


def test_per_patch_embedding_gives_each_patch_its_own_weights(tmp_path):
    encoder = tiny_encoder(patch_embedding="per_patch")
    assert encoder.patch_embed.weight.shape == (8, PATCH, 12)
    x = fmri()
    out = encoder(x)
    assert out.embedding.shape == (B, 10)
    # Shifting a signal from patch 0 to patch 1 changes the token even before positions.
    a = torch.zeros(1, W, V)
    b = torch.zeros(1, W, V)
    a[..., :PATCH] = 1.0
    b[..., PATCH : 2 * PATCH] = 1.0
    tok_a = torch.einsum("bwpk,pkc->bwpc", encoder.patchify(a), encoder.patch_embed.weight)
    tok_b = torch.einsum("bwpk,pkc->bwpc", encoder.patchify(b), encoder.patch_embed.weight)
    assert not torch.allclose(tok_a[0, 0, 0], tok_b[0, 0, 1])
    encoder.save_atomic(tmp_path / "pp")
    loaded = FMRIEncoder.load(tmp_path / "pp").eval()
    assert loaded.config.patch_embedding == "per_patch"
    torch.testing.assert_close(loaded(x).embedding, out.embedding, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="encoder.patch_embedding='conv2d'"):
        tiny_encoder(patch_embedding="conv2d")
