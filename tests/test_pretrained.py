"""The shipped tiny CLIP / VAE / video prior: offline loading through the real paths, output
shapes, quality against baselines on freshly rendered held-out clips, and the recipes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from neurocine.cli import main
from neurocine.config import ClipConfig, UNetConfig
from neurocine.errors import CheckpointError, ConfigError
from neurocine.fileio import atomic_dir
from neurocine.models.clip_targets import (
    build_tiny_tokenizer,
    image_embeddings,
    load_clip,
    text_embeddings,
)
from neurocine.models.video_unet import build_denoiser, predict_noise
from neurocine.pretrain import run_recipe
from neurocine.pretrain.clip import contrastive_loss, retrieval_quality
from neurocine.pretrain.common import (
    PretrainDataConfig,
    load_recipe,
    shipped_dir,
)
from neurocine.pretrain.data import cached_clips, pretrain_clips
from neurocine.pretrain.prior import PriorRecipe, load_prior
from neurocine.pretrain.vae import load_vae, reconstruction_quality

NAMES = ("clip", "vae", "prior")
# Shipped folder → the `neurocine pretrain` recipe that wrote it (clip_eval: a second CLIP).
RECIPES = {"clip": "clip", "vae": "vae", "prior": "prior", "clip_eval": "clip"}
B, F, H, W = 3, 4, 16, 24  # pairwise distinct; H, W multiples of the VAE's 4 and the UNet's 2
MAX_TOTAL_MB = 25.0

shipped = pytest.mark.skipif(
    not all((shipped_dir(n) / "MODEL_CARD.md").is_file() for n in NAMES),
    reason="the pretrained models are not in this checkout (make pretrained)",
)


@pytest.fixture(scope="module")
def held_out():
    """Clips of the pretraining world that no shipped model saw (another seed), 32 × 32."""
    return pretrain_clips(n_clips=48, seed=9_999)


def frames(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (B, F, H, W, 3), dtype=np.uint8)


# --- data and recipe plumbing (no shipped weights needed) --------------------------------------


def test_pretrain_clips_are_single_scene_seeded_and_captioned():
    a = pretrain_clips(n_clips=7, seed=3, height=16, width=24)
    b = pretrain_clips(n_clips=7, seed=3, height=16, width=24)
    c = pretrain_clips(n_clips=7, seed=4, height=16, width=24)
    assert a.frames.shape == (7, 6, 16, 24, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames) and a.caption == b.caption
    assert not np.array_equal(a.frames, c.frames)
    assert len(a.caption) == 7 and a.label.shape == (7,)
    assert np.array_equal(a.label, a.attributes["shape"] * 8 + a.attributes["colour"])
    # Every word of every caption is in the offline tokenizer's vocabulary.
    tok = build_tiny_tokenizer()
    assert all(tok.unk_token_id not in tok(cap)["input_ids"] for cap in a.caption)


def test_cached_clips_round_trip(tmp_path):
    params = dict(n_clips=5, seed=1, height=16, width=24)
    first = cached_clips(tmp_path, **params)
    assert len(list(tmp_path.glob("clips-*.npz"))) == 1
    again = cached_clips(tmp_path, **params)
    assert np.array_equal(first.frames, again.frames) and first.caption == again.caption
    assert all(np.array_equal(first.attributes[k], again.attributes[k]) for k in first.attributes)


def test_contrastive_loss_treats_identical_captions_as_positives():
    torch.manual_seed(0)
    img, txt = torch.randn(B, 8), torch.randn(B, 8)
    scale = torch.tensor(np.log(10.0))
    distinct = contrastive_loss(img, txt, torch.arange(B), scale)
    # Samples 0 and 1 share a caption: swapping their text columns changes nothing.
    shared = torch.tensor([0, 0, 1])
    swapped = txt[[1, 0, 2]]
    torch.testing.assert_close(
        contrastive_loss(img, txt, shared, scale), contrastive_loss(img, swapped, shared, scale)
    )
    assert not torch.allclose(distinct, contrastive_loss(img, swapped, torch.arange(B), scale))
    # A perfect alignment scores lower than a random one.
    assert contrastive_loss(txt, txt, torch.arange(B), scale) < distinct


def test_recipe_overrides_are_strict():
    cfg = load_recipe(PriorRecipe, ["steps=7", "data.n_train=11"])
    assert cfg.steps == 7 and cfg.data.n_train == 11 and cfg.data.height == 32
    with pytest.raises(ConfigError, match="stepz"):
        load_recipe(PriorRecipe, ["stepz=7"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_recipe(PriorRecipe, ["steps"])
    assert main(["pretrain", "prior", "--out", "x", "stepz=1"]) == 2


def test_atomic_dir_keeps_the_old_output_when_the_block_fails(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("interrupted")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_missing_shipped_weights_name_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="make pretrained"):
        load_clip(OmegaConf.structured(ClipConfig(preset="tiny", pretrained=str(tmp_path))))
    cfg = OmegaConf.structured(UNetConfig(preset="tiny", pretrained=str(tmp_path)))
    with pytest.raises(CheckpointError, match="make pretrained"):
        build_denoiser(cfg)


# --- the shipped models ------------------------------------------------------------------------


@shipped
def test_shipped_models_are_small_and_carry_their_cards():
    files = [p for n in RECIPES for p in shipped_dir(n).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) / 1e6 <= MAX_TOTAL_MB
    for name, recipe in RECIPES.items():
        card = (shipped_dir(name) / "MODEL_CARD.md").read_text()
        assert re.search(r"neurocine pretrain " + recipe + r" --out \S+", card), name
        for field in ("| seed |", "| data |", "| steps |", "| wall time |", "| machine |"):
            assert field in card, (name, field)
        meta = json.loads((shipped_dir(name) / "quality.json").read_text())
        assert meta["quality"] and meta["wall_s"] > 0
    # Nothing but model files, configs and the card (no logs or temporary folders).
    assert not [p for p in files if p.name.startswith(".") or "logs" in p.parts]


@shipped
def test_tiny_clip_loads_offline_and_beats_random_init(held_out):
    model, preprocess, tokenizer = load_clip(OmegaConf.structured(ClipConfig(preset="tiny")))
    assert not model.training
    img = image_embeddings(model, preprocess, frames())
    txt = text_embeddings(model, tokenizer, held_out.caption[:B])
    assert img.shape == (B, 64) and txt.shape == (B, 64)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(B))
    tiny = retrieval_quality(model, preprocess, tokenizer, held_out)
    rand = retrieval_quality(
        *load_clip(OmegaConf.structured(ClipConfig(preset="random"))), held_out
    )
    # Semantics: colour and the shape × colour category are read from frames far above chance.
    assert tiny["colour_acc"] > max(0.5, rand["colour_acc"] + 0.2)
    assert tiny["category_zero_shot"] > max(0.15, rand["category_zero_shot"] + 0.1)
    assert tiny["image_to_text_top1"] > rand["image_to_text_top1"]


@shipped
def test_evaluation_clip_is_another_model_that_reads_the_same_semantics(held_out):
    conditioning = load_clip(OmegaConf.structured(ClipConfig(preset="tiny")))
    scoring = load_clip(OmegaConf.structured(ClipConfig(preset="tiny_eval")))
    weights = dict(scoring[0].named_parameters())
    differing = [
        name
        for name, value in conditioning[0].named_parameters()
        if not torch.equal(value, weights[name])
    ]
    assert len(differing) == len(weights)  # every tensor differs: another training run
    a = image_embeddings(conditioning[0], conditioning[1], frames())
    b = image_embeddings(scoring[0], scoring[1], frames())
    assert (a * b).sum(-1).abs().max() < 0.9  # not the same embedding space
    quality = retrieval_quality(*scoring, held_out)
    assert quality["colour_acc"] > 0.5 and quality["category_zero_shot"] > 0.15


@shipped
def test_tiny_denoiser_shapes_through_build_denoiser():
    denoiser = build_denoiser(OmegaConf.structured(UNetConfig(preset="tiny")))
    assert denoiser.vae is not None and denoiser.codec.is_latent
    # The prior's own condition: a CLIP embedding [B, 64] as one cross-attention token.
    assert (denoiser.condition.config.source, denoiser.condition.config.in_dim) == ("embedding", 64)
    assert denoiser.codec.latent_shape(6, 32, 32) == (4, 6, 8, 8)
    assert next(denoiser.unet.parameters()).dtype == torch.float32
    video = torch.from_numpy(frames()).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    latents = denoiser.codec.encode(video)
    assert latents.shape == (B, 4, F, H // 4, W // 4)
    decoded = denoiser.codec.decode(latents)
    assert decoded.shape == video.shape and decoded.abs().max() <= 1
    cross = int(denoiser.unet.config.cross_attention_dim)
    with torch.no_grad():
        eps = predict_noise(
            denoiser.unet, latents, torch.tensor([10, 500, 990]), torch.randn(B, 1, cross)
        )
    assert eps.shape == latents.shape and torch.isfinite(eps).all()


@shipped
def test_tiny_vae_reconstructs_better_than_the_mean_frame(held_out):
    vae = load_vae(shipped_dir("vae"))
    q = reconstruction_quality(vae, held_out, held_out.subset(slice(0, 12)))
    assert q["ssim"] > q["mean_frame_ssim"] + 0.1
    assert q["psnr"] > q["mean_frame_psnr"] + 2.0


@shipped
def test_prior_condition_and_scheduler_load():
    unet, adapter, scheduler = load_prior(shipped_dir("prior"))
    e = torch.nn.functional.normalize(torch.randn(B, adapter.config.in_dim), dim=-1)
    cond = adapter(e[:, None])
    assert cond.shape == (B, 1, unet.config.cross_attention_dim)
    assert adapter.null(B).shape == cond.shape
    assert scheduler.config.prediction_type == "epsilon"
    assert scheduler.config.dependent_ratio == 0.0


# --- the recipes, a few steps each -------------------------------------------------------------


@pytest.mark.slow
def test_recipes_run_and_their_outputs_load(tmp_path):
    data = ["data.n_train=40", "data.n_val=6", f"data.cache={tmp_path / 'cache'}"]
    common = ["steps=2", "batch_size=4", "progress=false", "threads=1", *data]
    run_recipe("clip", tmp_path / "clip", [*common, "width=32", "vision_layers=1"])
    run_recipe(
        "vae", tmp_path / "vae", [*common, "block_out_channels=[8,16,16]", "norm_num_groups=8"]
    )
    q = run_recipe(
        "prior",
        tmp_path / "prior",
        [*common, f"clip_dir={tmp_path / 'clip'}", f"vae_dir={tmp_path / 'vae'}",
         "block_out_channels=[16,32]", "norm_num_groups=8", "n_eval=3", "sample_steps=2",
         "evaluator_epochs=1"],
    )  # fmt: skip
    assert set(q["rows"]) >= {"prior samples (held-out captions)", "mean-frame baseline"}
    clip = load_clip(
        OmegaConf.structured(ClipConfig(preset="tiny", pretrained=str(tmp_path / "clip")))
    )
    assert image_embeddings(clip[0], clip[1], frames()).shape == (B, 32)
    root = tmp_path / "root"
    (root / "prior").mkdir(parents=True)
    (root / "prior" / "unet").symlink_to(tmp_path / "prior" / "unet")
    (root / "prior" / "condition").symlink_to(tmp_path / "prior" / "condition")
    (root / "vae").symlink_to(tmp_path / "vae")
    denoiser = build_denoiser(OmegaConf.structured(UNetConfig(preset="tiny", pretrained=str(root))))
    assert denoiser.codec.latent_shape(6, 32, 32) == (4, 6, 8, 8)
    assert denoiser.condition.config.source == "embedding"
    for name in NAMES:
        card = (tmp_path / name / "MODEL_CARD.md").read_text()
        assert "| steps | 2 " in card
        assert not list(Path(tmp_path).glob(f".{name}.*"))  # no temporary folders left


def test_default_data_config_matches_the_simulated_world():
    from neurocine.config import SimulationConfig

    d, s = PretrainDataConfig(), SimulationConfig()
    assert (d.height, d.width, d.fps, d.tr_s, d.scene_mean_s) == (
        s.height, s.width, s.fps, s.tr_s, s.scene_mean_s
    )  # fmt: skip
