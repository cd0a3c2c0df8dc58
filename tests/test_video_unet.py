"""The video denoiser factory: random preset, SD 1.x inflation, codec, condition projection."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UNetMotionModel
from omegaconf import OmegaConf
from stage2_helpers import (
    CROSS_DIM,
    TINY_UNET,
)

from neurocine.config import UNetConfig
from neurocine.errors import CheckpointError, ConfigError
from neurocine.models.video_unet import (
    ConditionAdapter,
    LatentCodec,
    build_denoiser,
    frames_to_video,
    inflate_unet,
    predict_noise,
    random_unet2d,
    video_to_frames,
)

# batch 3, frames 4, 16×20 pixels.
B, F, H, W = 3, 4, 16, 20


def unet_cfg(*overrides: str):
    cfg = OmegaConf.structured(UNetConfig)
    dotlist = [o.removeprefix("unet.") for o in (*TINY_UNET, *overrides)]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def per_frame_2d(unet2d, sample, t, cond):
    """The 2-D UNet applied to each frame separately: ``[B, C, F, h, w]``."""
    frames = [
        unet2d(sample[:, :, f], t, encoder_hidden_states=cond).sample
        for f in range(sample.shape[2])
    ]
    return torch.stack(frames, dim=2)


def test_random_preset_is_a_seeded_pixel_space_motion_unet():
    state = torch.random.get_rng_state()
    denoiser = build_denoiser(unet_cfg(), seed=0)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG left alone
    assert isinstance(denoiser.unet, UNetMotionModel) and denoiser.vae is None
    assert denoiser.codec.channels == 12 and not denoiser.codec.is_latent
    assert denoiser.codec.latent_shape(F, H, W) == (12, F, 8, 10)
    again = build_denoiser(unet_cfg(), seed=0).unet.state_dict()
    other = build_denoiser(unet_cfg(), seed=1).unet.state_dict()
    mine = denoiser.unet.state_dict()
    assert all(torch.equal(mine[k], again[k]) for k in mine)
    assert any(not torch.equal(mine[k], other[k]) for k in mine)
    sample = torch.randn(B, 12, F, 8, 10, generator=gen())
    cond = torch.randn(B, 5, CROSS_DIM, generator=gen(1))
    out = predict_noise(denoiser.unet, sample, torch.tensor([1, 500, 999]), cond)
    assert out.shape == sample.shape


def test_default_preset_keeps_attention_at_8x8_tokens_for_32x32_frames():
    denoiser = build_denoiser(OmegaConf.structured(UNetConfig), seed=0)
    channels, frames, h, w = denoiser.codec.latent_shape(6, 32, 32)
    assert (channels, frames, h, w) == (48, 6, 8, 8)


def test_inflation_starts_as_the_2d_unet_per_frame_and_couples_frames_once_trained():
    cfg = unet_cfg()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet2d = random_unet2d(cfg, in_channels=12).eval()
        motion = inflate_unet(unet2d, motion_num_attention_heads=2).eval()
    sample = torch.randn(B, 12, F, 8, 10, generator=gen())
    cond = torch.randn(B, 5, CROSS_DIM, generator=gen(1))
    t = torch.tensor([3, 400, 900])
    with torch.no_grad():
        video = predict_noise(motion, sample, t, cond)
        torch.testing.assert_close(
            video, per_frame_2d(unet2d, sample, t, cond), atol=1e-5, rtol=1e-4
        )
        # Perturbing frame 0 leaves frame 1 unchanged while the motion modules are identities…
        moved = sample.clone()
        moved[:, :, 0] += 1.0
        assert torch.allclose(
            predict_noise(motion, moved, t, cond)[:, :, 1], video[:, :, 1], atol=1e-5
        )
        # …and changes it once they are not (temporal attention across frames).
        for name, param in motion.named_parameters():
            if "motion_modules" in name and "proj_out" in name:
                param.normal_(0, 0.1, generator=gen(2))
        coupled = predict_noise(motion, sample, t, cond)
        coupled_moved = predict_noise(motion, moved, t, cond)
    assert not torch.allclose(coupled_moved[:, :, 1], coupled[:, :, 1], atol=1e-4)


def test_pixel_codec_round_trip_and_layout():
    frames = torch.randint(0, 256, (B, F, H, W, 3), dtype=torch.uint8, generator=gen())
    video = frames_to_video(frames)
    assert video.shape == (B, 3, F, H, W) and video.min() >= -1 and video.max() <= 1
    assert torch.equal(video_to_frames(video), frames)
    codec = LatentCodec(None, space_to_depth=2)
    latents = codec.encode(video)
    assert latents.shape == (B, 12, F, 8, 10)
    # Space-to-depth keeps each frame's pixels in its own frame slot.
    assert torch.equal(codec.encode(video[:, :, 2:3]), latents[:, :, 2:3])
    torch.testing.assert_close(codec.decode(latents), video)
    with pytest.raises(ConfigError, match="multiples of 3"):
        LatentCodec(None, space_to_depth=3).latent_shape(F, H, W)
    with pytest.raises(ConfigError, match=r"\[B, F, H, W, 3\]"):
        frames_to_video(frames.permute(0, 4, 1, 2, 3))


def test_condition_adapter_projects_checks_and_drops():
    adapter = ConditionAdapter(in_dim=14, cross_attention_dim=CROSS_DIM, num_tokens=5)
    tokens = torch.randn(B, 5, 14, generator=gen())
    cond = adapter(tokens)
    assert cond.shape == (B, 5, CROSS_DIM)
    with pytest.raises(ConfigError, match=r"expects \[B, 5, 14\]"):
        adapter(torch.randn(B, 5, 13))
    assert torch.equal(adapter.drop(cond, 0.0), cond)
    null = adapter.null(B)
    dropped = adapter.drop(cond, 0.5, gen(3))
    is_null = [torch.equal(dropped[i], null[i]) for i in range(B)]
    is_kept = [torch.equal(dropped[i], cond[i]) for i in range(B)]
    assert all(a != b for a, b in zip(is_null, is_kept, strict=True))
    many = adapter.drop(cond.repeat(400, 1, 1), 0.3, gen(4))
    dropped_fraction = (many == adapter.null(1200)).all(-1).all(-1).float().mean()
    assert abs(float(dropped_fraction) - 0.3) < 0.05


def write_tiny_sd(root, with_vae: bool = True):
    """A tiny stand-in for Stable Diffusion 1.x in diffusers' directory layout."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=4, cross_attention_dim=12, attention_head_dim=2,
        )  # fmt: skip
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=4, layers_per_block=1,
        )  # fmt: skip
    unet.save_pretrained(root / "unet")
    if with_vae:
        vae.save_pretrained(root / "vae")
    return unet, vae


def test_sd15_preset_inflates_the_saved_unet_and_uses_its_vae(tmp_path):
    unet2d, vae = write_tiny_sd(tmp_path)
    denoiser = build_denoiser(
        unet_cfg(
            "unet.preset=sd15", f"unet.pretrained={tmp_path}", "unet.motion_num_attention_heads=4"
        ),
        seed=0,
    )
    unet = denoiser.unet
    assert isinstance(unet, UNetMotionModel) and unet.config.cross_attention_dim == 12
    assert torch.equal(unet.conv_in.weight, unet2d.conv_in.weight)
    torch.testing.assert_close(
        unet.down_blocks[0].attentions[0].state_dict(),
        unet2d.down_blocks[0].attentions[0].state_dict(),
    )
    codec = denoiser.codec
    assert codec.is_latent and denoiser.vae is codec.vae
    assert codec.latent_shape(F, H, W) == (4, F, 8, 10)
    video = torch.rand(2, 3, F, H, W, generator=gen()) * 2 - 1
    latents = codec.encode(video)
    assert latents.shape == (2, 4, F, 8, 10)
    # Latents are scaled by the VAE's factor; decoding returns videos in range.
    unscaled = vae.encode(video[:, :, 0]).latent_dist.mode()
    torch.testing.assert_close(
        latents[:, :, 0], unscaled * vae.config.scaling_factor, atol=1e-5, rtol=1e-4
    )
    decoded = codec.decode(latents)
    assert decoded.shape == video.shape and decoded.abs().max() <= 1
    out = predict_noise(unet, latents, torch.tensor([10, 20]), torch.randn(2, 7, 12))
    assert out.shape == latents.shape


def test_sd15_path_without_the_expected_files_is_a_checkpoint_error(tmp_path):
    write_tiny_sd(tmp_path, with_vae=False)
    with pytest.raises(CheckpointError, match=r"missing vae/config.json"):
        build_denoiser(unet_cfg("unet.preset=sd15", f"unet.pretrained={tmp_path}"))
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="unet/diffusion_pytorch_model.safetensors"):
        build_denoiser(unet_cfg("unet.preset=sd15", f"unet.pretrained={tmp_path}"))
    with pytest.raises(CheckpointError, match="not a directory"):
        build_denoiser(unet_cfg("unet.preset=sd15", f"unet.pretrained={tmp_path / 'nope'}"))
    with pytest.raises(ConfigError, match="unet.pretrained"):
        build_denoiser(unet_cfg("unet.preset=sd15"))


@pytest.mark.parametrize(
    "override, match",
    [
        ("unet.preset=bogus", "unet.preset"),
        ("unet.norm_num_groups=3", "unet.norm_num_groups=3"),
        ("unet.num_attention_heads=3", "unet.num_attention_heads=3"),
        ("unet.space_to_depth=0", "space_to_depth"),
    ],
)
def test_bad_unet_config_is_a_config_error(override, match):
    with pytest.raises(ConfigError, match=match):
        build_denoiser(unet_cfg(override))
