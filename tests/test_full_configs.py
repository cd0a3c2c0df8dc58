"""The full-size GPU configs (experiments/stage{1,2}_full.yaml) resolve to the paper's sizes.

Nothing here can download CLIP or Stable Diffusion, so the models are built from config in code:
the encoder's ``mindvideo`` preset, and Stable Diffusion 1.5's published UNet/VAE configs
(:mod:`neurocine.models.full_size`) inflated by the same code as real weights. The fast tests
build them on the meta device (shapes and parameter counts without allocating ~1.7 B
parameters) and check that attention takes the fused SDPA path; the slow tests build them for
real and take one bf16-autocast training step on CPU through Lightning.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor2_0
from factories import write_tiny_subject
from omegaconf import OmegaConf

from neurocine.config import load_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.errors import ConfigError
from neurocine.models.clip_targets import load_clip
from neurocine.models.encoder_factory import build_encoder
from neurocine.models.fmri_encoder import FMRIEncoder
from neurocine.models.full_size import SD15_VAE_CONFIG, sd15_unet2d, write_random_sd
from neurocine.models.video_unet import (
    LatentCodec,
    build_denoiser,
    inflate_unet,
    predict_noise,
)

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
STAGE1_FULL = EXPERIMENTS / "stage1_full.yaml"
STAGE2_FULL = EXPERIMENTS / "stage2_full.yaml"
FLASH_CPU = "aten::_scaled_dot_product_flash_attention_for_cpu"  # SDPA's fused CPU kernel
SOFTMAX = "aten::_softmax"  # what an unfused attention computes
CPU_TRAINER = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.strategy=auto"]

# A tiny Stable-Diffusion-shaped directory: same classes and keys as SD 1.5, small widths.
TINY_SD_UNET = {
    "attention_head_dim": 2,
    "block_out_channels": [8, 16],
    "cross_attention_dim": 12,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 8,
}
TINY_SD_VAE = {
    "block_out_channels": [8, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "latent_channels": 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
    "sample_size": 16,
}


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def aten_ops(fn, shapes: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """``(operator, shape of its first input or ())`` of every call that ``fn()`` makes."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, record_shapes=shapes) as prof:
        fn()
    events = prof.events()
    return [(e.name, tuple(e.input_shapes[0]) if shapes and e.input_shapes else ()) for e in events]


# -- fast: the YAMLs ------------------------------------------------------------------------------


def test_stage1_full_resolves_mindvideo_encoder_on_gpus_in_bf16():
    cfg = load_config(STAGE1_FULL, ["clip.pretrained=/models/clip-vit-large-patch14"])
    assert (cfg.stage, cfg.data.window, cfg.data.lag_trs) == ("stage1", 2, 0)  # cc2017 module
    assert cfg.data.path == "data/cc2017/subject1.h5"
    assert (cfg.clip.preset, cfg.clip.pretrained) == (
        "pretrained",
        "/models/clip-vit-large-patch14",
    )
    t = cfg.trainer
    assert (t.accelerator, t.strategy, t.precision) == ("gpu", "ddp", "bf16-mixed")
    n_voxels, clip_dim = 4003, 768  # cc2017-like voxel count (not a multiple of 16), ViT-L/14
    with torch.device("meta"):
        encoder = build_encoder(cfg.encoder, n_voxels, int(cfg.data.window), clip_dim)
    encoder.to("meta")  # the fixed sin-cos positions are computed on the CPU
    c = encoder.config
    assert (c.patch_size, c.embed_dim, c.depth, c.num_heads, c.window) == (16, 1024, 24, 16, 2)
    assert (c.out_tokens, c.out_dim, c.temporal_attention) == (77, 768, True)
    assert len(encoder.blocks) == 24 and encoder.num_patches == math.ceil(n_voxels / 16)
    assert encoder.is_gradient_checkpointing  # encoder.gradient_checkpointing: true
    # 24 blocks of 16·C² weights (spatial + temporal attention, MLP ×4) dominate: ~403 M.
    assert 24 * 16 * 1024**2 < n_parameters(encoder) < 410e6
    out = encoder(torch.zeros(3, 2, n_voxels, device="meta"))
    assert tuple(out.tokens.shape) == (3, 77, 768)
    assert tuple(out.embedding.shape) == (3, clip_dim)


def test_stage1_full_needs_a_local_clip():
    cfg = load_config(STAGE1_FULL)
    assert cfg.clip.pretrained is None
    with pytest.raises(ConfigError, match="needs clip.pretrained=PATH"):
        load_clip(cfg.clip)


def test_stage2_full_resolves_sd15_at_256px_on_gpus_in_bf16():
    cfg = load_config(STAGE2_FULL, ["unet.pretrained=/models/stable-diffusion-v1-5"])
    assert cfg.stage == "stage2" and cfg.stage2.encoder_ckpt == "runs/stage1_full/latest/encoder"
    video, tr_s = cfg.preprocess["video"], float(cfg.preprocess["tr_s"])
    assert (video["height"], video["width"], round(video["fps"] * tr_s)) == (256, 256, 6)
    assert (cfg.unet.preset, cfg.unet.gradient_checkpointing) == ("sd15", True)
    t = cfg.trainer
    assert (t.accelerator, t.strategy, t.precision) == ("gpu", "ddp", "bf16-mixed")
    with pytest.raises(ConfigError, match="needs unet.pretrained"):
        build_denoiser(load_config(STAGE2_FULL).unet)


def test_sd15_architecture_inflates_to_1_3b_parameters_with_sdpa():
    cfg = load_config(STAGE2_FULL)
    with torch.device("meta"):
        unet2d = sd15_unet2d()
        n_2d = n_parameters(unet2d)
        unet = inflate_unet(
            unet2d,
            motion_num_attention_heads=int(cfg.unet.motion_num_attention_heads),
            zero_init_motion=bool(cfg.unet.zero_init_motion),
        )
        vae = AutoencoderKL.from_config(dict(SD15_VAE_CONFIG))
    assert 855e6 < n_2d < 865e6  # Stable Diffusion 1.5's UNet: 859.5 M parameters
    assert n_2d + 400e6 < n_parameters(unet) < n_2d + 500e6  # AnimateDiff-sized motion modules
    assert unet.config.cross_attention_dim == 768  # the encoder's 77 × 768 tokens fit directly
    assert int(unet.config.motion_max_seq_length) >= 6
    processors = unet.attn_processors
    assert len(processors) > 50
    assert {type(p) for p in processors.values()} == {AttnProcessor2_0}
    assert LatentCodec(vae).latent_shape(6, 256, 256) == (4, 6, 32, 32)


def test_sd15_path_checkpoints_and_runs_fused_attention_in_bf16(tmp_path):
    sd_dir = write_random_sd(tmp_path / "sd", TINY_SD_UNET, TINY_SD_VAE)
    cfg = load_config(STAGE2_FULL, [f"unet.pretrained={sd_dir}"])
    denoiser = build_denoiser(cfg.unet)
    unet = denoiser.unet.train()
    assert unet.is_gradient_checkpointing
    assert {type(p) for p in unet.attn_processors.values()} == {AttnProcessor2_0}
    sample = torch.randn(3, 4, 2, 8, 8)
    cond = torch.randn(3, 5, TINY_SD_UNET["cross_attention_dim"])

    outputs = []

    def forward() -> None:  # training mode, gradients on: the checkpointed path
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs.append(predict_noise(unet, sample, torch.tensor([1, 500, 999]), cond))

    names = {name for name, _ in aten_ops(forward)}
    assert FLASH_CPU in names and SOFTMAX not in names
    outputs[0].float().square().mean().backward()  # (the recomputation runs the same code)
    assert all(p.grad is not None for p in unet.parameters() if p.requires_grad)


def test_encoder_attention_is_fused_unless_weights_are_requested():
    """The P × P attention over a TR's patches runs in SDPA's fused kernel: no P × P softmax.

    (The temporal attention over a window of 2 TRs may take a broadcast path with a W × W
    softmax: a few numbers per patch, see SpatioTemporalBlock.)
    """
    cfg = load_config(
        STAGE1_FULL,
        ["encoder.preset=tiny", "encoder.patch_size=8", "encoder.embed_dim=12",
         "encoder.depth=2", "encoder.num_heads=3", "encoder.out_tokens=5", "encoder.out_dim=14"],
    )  # fmt: skip
    encoder = build_encoder(cfg.encoder, num_voxels=61, window=2, clip_dim=10).train()
    assert encoder.is_gradient_checkpointing
    n_patches = encoder.num_patches  # 8: distinct from batch 3, window 2, heads 3
    fmri = torch.randn(3, 2, 61)

    def forward() -> None:  # training mode, gradients on: the checkpointed path
        with torch.autocast("cpu", dtype=torch.bfloat16):
            encoder(fmri)

    def patch_softmaxes(ops: list) -> list:
        return [s for name, s in ops if name == SOFTMAX and s[-2:] == (n_patches, n_patches)]

    ops = aten_ops(forward, shapes=True)
    assert FLASH_CPU in {name for name, _ in ops}
    assert patch_softmaxes(ops) == []
    with torch.no_grad():
        ops = aten_ops(lambda: encoder(fmri, output_attentions=True), shapes=True)
    assert patch_softmaxes(ops)  # attention maps (brain maps) take the explicit path


# -- slow: one real training step of each full-size model -----------------------------------------


class StepRecorder(L.Callback):
    """Loss, parameters left without a gradient, gradient dtypes and the autocast dtype."""

    def __init__(self, probe: torch.nn.Module) -> None:
        self.loss = float("nan")
        self.without_grad: list[str] = []
        self.grad_dtypes: set[torch.dtype] = set()
        self.probe_dtypes: set[torch.dtype] = set()
        probe.register_forward_hook(lambda m, i, o: self.probe_dtypes.add(o.dtype))

    def on_after_backward(self, trainer, pl_module) -> None:
        params = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        self.without_grad = [n for n, p in params if p.grad is None]
        self.grad_dtypes = {p.grad.dtype for _, p in params if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.loss = float(outputs["loss"])


def one_step(cfg, module: L.LightningModule, datamodule, probe: torch.nn.Module, root: Path):
    """``trainer.fit`` for one optimizer step with the YAML's trainer settings (CPU, no files)."""
    recorder = StepRecorder(probe)
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.update(max_steps=1, limit_val_batches=0, num_sanity_val_steps=0,
                  enable_progress_bar=False, default_root_dir=root)  # fmt: skip
    trainer = L.Trainer(**kwargs, logger=False, enable_checkpointing=False, callbacks=[recorder])
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 1
    return recorder


@pytest.mark.slow
def test_stage1_full_one_bf16_training_step(tmp_path):
    """The full MinD-Video encoder (405 M parameters, AdamW) takes one bf16-mixed step on CPU.

    The encoder's sizes and optimizer are the YAML's. Reduced only in what the data decide: the
    tiny subject's 61 voxels (4 tokens per TR, where cc2017's thousands of voxels give hundreds)
    and batch 3, because bf16 matrix products are emulated on this CPU (no AVX-512 BF16): its
    backward pass costs ~10× float32's. Measured: ~2.5 min, peak RSS 7.1 GB.
    """
    from neurocine.lit import stage1

    subject = write_tiny_subject(tmp_path / "subject.h5", clip_dim=768)
    cfg = load_config(
        STAGE1_FULL,
        [f"data.path={subject}", "clip.pretrained=/unused", "data.batch_size=3",
         "data.num_workers=0", *CPU_TRAINER],
    )  # fmt: skip
    assert cfg.trainer.precision == "bf16-mixed"
    datamodule = FMRIVideoDataModule(cfg)
    datamodule.setup("fit")
    module = stage1.build_module(cfg, datamodule)
    encoder = module.encoder
    assert (encoder.config.depth, encoder.config.embed_dim, len(encoder.blocks)) == (24, 1024, 24)
    assert encoder.is_gradient_checkpointing
    first, last = encoder.blocks[0].attn.qkv.weight, encoder.blocks[-1].mlp.fc2.weight
    before = [first.detach().clone(), last.detach().clone()]
    recorder = one_step(cfg, module, datamodule, encoder.blocks[0].mlp.fc1, tmp_path)
    assert math.isfinite(recorder.loss)
    assert recorder.without_grad == []  # DDP without find_unused_parameters needs every grad
    assert recorder.grad_dtypes == {torch.float32}  # fp32 master weights
    assert torch.bfloat16 in recorder.probe_dtypes  # the blocks ran in bf16
    assert not torch.equal(before[0], first.detach()) and not torch.equal(before[1], last.detach())


@pytest.mark.slow
def test_stage2_full_one_bf16_training_step(tmp_path):
    """SD 1.5's UNet + motion modules (1.31 B parameters) take one bf16-mixed step on CPU.

    The UNet and VAE are Stable Diffusion 1.5's architecture with random weights
    (:func:`write_random_sd`), loaded and inflated by ``stage2.build_module`` as real weights
    would be. Reduced for this CPU, where bf16 is emulated (no AVX-512 BF16, ~10× float32's
    cost: one step at 6 × 256² would take over half an hour): clips of 2 frames of 64 × 64
    (latents 4 × 2 × 8 × 8, the smallest the UNet's 3 down-samplings take) and batch 1; SGD
    instead of AdamW, whose two float32 states (10.5 GB) would not fit beside weights and
    gradients (10.5 GB) in 24 GiB; and a small frozen encoder with the full encoder's output
    (77 × 768 tokens): it is frozen in stage 2, so its size does not change the UNet's step.
    Measured: ~5.5 min, peak RSS 11.5 GB.
    """
    from neurocine.lit import stage2

    subject = write_tiny_subject(tmp_path / "subject.h5", frames_per_tr=2, height=64, width=64)
    encoder = FMRIEncoder(num_voxels=61, window=2, embed_dim=64, depth=1, num_heads=4,
                          out_tokens=77, out_dim=768)  # fmt: skip
    encoder_dir = encoder.save_atomic(tmp_path / "encoder")
    sd_dir = write_random_sd(tmp_path / "sd15")
    try:
        cfg = load_config(
            STAGE2_FULL,
            [f"data.path={subject}", f"stage2.encoder_ckpt={encoder_dir}",
             f"unet.pretrained={sd_dir}", "data.batch_size=1", "data.num_workers=0",
             *CPU_TRAINER],
        )  # fmt: skip
        assert cfg.trainer.precision == "bf16-mixed"
        datamodule = FMRIVideoDataModule(cfg, read_frames=True, augment=False)
        datamodule.setup("fit")
        module = stage2.build_module(cfg, datamodule)
    finally:
        shutil.rmtree(sd_dir)  # 3.7 GB of random weights
    unet = module.unet
    assert 1.25e9 < n_parameters(unet) < 1.35e9
    assert unet.is_gradient_checkpointing
    assert {type(p) for p in unet.attn_processors.values()} == {AttnProcessor2_0}
    trainable = [p for p in module.parameters() if p.requires_grad]
    lr = float(cfg.stage2.lr)
    module.configure_optimizers = lambda: torch.optim.SGD(trainable, lr=lr)
    motion_out = next(
        m for n, m in unet.named_modules() if "motion_modules" in n and n.endswith("proj_out")
    )
    watched = [unet.conv_in.weight, motion_out.weight]  # motion outputs start at zero
    before = [w.detach().clone() for w in watched]
    recorder = one_step(cfg, module, datamodule, unet.conv_in, tmp_path)
    assert math.isfinite(recorder.loss)
    assert recorder.without_grad == []  # DDP without find_unused_parameters needs every grad
    assert recorder.grad_dtypes == {torch.float32}
    assert torch.bfloat16 in recorder.probe_dtypes
    assert all(not torch.equal(b, w.detach()) for b, w in zip(before, watched, strict=True))
