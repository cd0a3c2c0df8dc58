"""Stage 2: encoder loading, the noise the module trains with, a short run, export, bad input."""

from __future__ import annotations

import csv

import h5py
import lightning as L
import pytest
import torch
from factories import write_tiny_subject
from lightning.pytorch.loggers import CSVLogger
from stage2_helpers import (
    OUT_DIM,
    OUT_TOKENS,
    save_tiny_encoder,
    tiny_config,
    tiny_encoder,
)

from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.diffusion.callback import DependentNoiseCallback
from neurocine.diffusion.pipeline import VideoDecoder
from neurocine.errors import CheckpointError, ConfigError, SchemaError
from neurocine.lit.stage1 import ContrastiveEncoderModule
from neurocine.lit.stage2 import (
    build_callbacks,
    build_module,
    condition_adapter,
    load_stage1_encoder,
)
from neurocine.models.video_unet import ConditionAdapter, Denoiser


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return save_tiny_encoder(tmp_path_factory.mktemp("stage1") / "encoder", seed=3)


def setup(cfg) -> FMRIVideoDataModule:
    datamodule = FMRIVideoDataModule(cfg, read_frames=True, augment=False)
    datamodule.setup("fit")
    return datamodule


def trainer(tmp_path, callbacks=(), **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", logger=CSVLogger(tmp_path, name="logs", version=""),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=1,
    )  # fmt: skip
    defaults.update(kwargs)
    return L.Trainer(callbacks=list(callbacks), **defaults)


def logged(tmp_path, key: str) -> list[tuple[int, float]]:
    """(epoch, value) of every row of the CSV log that has ``key``."""
    with open(tmp_path / "logs" / "metrics.csv") as f:
        return [(int(r["epoch"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- loading the stage-1 encoder ---------------------------------------------------------------


def test_loads_exactly_the_exported_stage1_encoder(tiny_subject, encoder_dir, tmp_path):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path)
    module = build_module(cfg, setup(cfg))
    assert same_weights(module.encoder, tiny_encoder(seed=3))
    assert not same_weights(module.encoder, tiny_encoder(seed=4))
    assert all(not p.requires_grad for p in module.encoder.parameters())  # frozen by default
    # A stage-1 run directory works too (its encoder/).
    assert same_weights(load_stage1_encoder(encoder_dir.parent), module.encoder)


def test_loads_the_encoder_of_a_stage1_lightning_checkpoint(tiny_subject, tmp_path):
    from neurocine.config import load_config

    cfg1 = load_config(None, [f"data.path={tiny_subject}", "data.batch_size=3", "data.val_runs=1"])
    stage1 = ContrastiveEncoderModule(encoder=tiny_encoder(seed=5), n_way=6, n_way_trials=2)
    fit = trainer(tmp_path, max_steps=1, limit_val_batches=0, logger=False)
    fit.fit(stage1, datamodule=FMRIVideoDataModule(cfg1))
    ckpt = tmp_path / "stage1.ckpt"
    fit.save_checkpoint(ckpt)
    encoder = load_stage1_encoder(ckpt)
    assert same_weights(encoder, stage1.encoder)  # the trained weights, not the initial ones
    assert not same_weights(encoder, tiny_encoder(seed=5))
    cfg = tiny_config(tiny_subject, ckpt, tmp_path)
    assert same_weights(build_module(cfg, setup(cfg)).encoder, stage1.encoder)


def test_what_is_not_a_stage1_encoder_is_refused_by_name(tiny_subject, tmp_path):
    not_ckpt = tmp_path / "notes.ckpt"
    not_ckpt.write_text("hello")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"unet.conv.weight": torch.zeros(2)}, "hyper_parameters": {}}, other)
    adapter_dir = tmp_path / "adapter"
    ConditionAdapter(4, 8, 2).save_pretrained(adapter_dir)
    for path, match in [
        (not_ckpt, "not a stage-1 checkpoint"),
        (other, "no encoder weights"),
        (adapter_dir, "ConditionAdapter, not a stage-1 FMRIEncoder"),
        (tmp_path / "missing", "not found"),
        (tmp_path, "not a stage-1 encoder directory"),
    ]:
        with pytest.raises(CheckpointError, match=match) as info:
            load_stage1_encoder(path)
        assert str(path) in str(info.value)
    cfg = tiny_config(tiny_subject, other, tmp_path)
    with pytest.raises(CheckpointError, match="other.ckpt"):
        build_module(cfg, setup(cfg))


def test_encoder_that_does_not_fit_the_data_or_condition_is_a_config_error(tiny_subject, tmp_path):
    wrong = save_tiny_encoder(tmp_path / "wrong", num_voxels=60)
    cfg = tiny_config(tiny_subject, wrong, tmp_path)
    with pytest.raises(ConfigError, match="60 voxels"):
        build_module(cfg, setup(cfg))
    good = save_tiny_encoder(tmp_path / "good")
    cfg = tiny_config(tiny_subject, good, tmp_path)
    module = build_module(cfg, setup(cfg))
    bad_adapter = ConditionAdapter(OUT_DIM + 1, 8, 5)
    with pytest.raises(ConfigError, match="encoder/condition mismatch"):
        type(module)(module.encoder, bad_adapter, module.unet, module.codec)
    with pytest.raises(ConfigError, match="cross_attention_dim"):
        type(module)(module.encoder, ConditionAdapter(OUT_DIM, 9, 5), module.unet, module.codec)


def test_embedding_condition_is_the_normalised_clip_embedding_as_one_token(
    tiny_subject, encoder_dir, tmp_path
):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path, "stage2.condition=embedding")
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule).eval()
    adapter = module.adapter
    assert (adapter.config.source, adapter.config.num_tokens) == ("embedding", 1)
    assert adapter.config.in_dim == module.encoder.embedding_dim == 12
    fmri = next(iter(datamodule.val_dataloader()))["fmri"]
    embedding = module.encoder(fmri).embedding
    expected = adapter(torch.nn.functional.normalize(embedding, dim=-1)[:, None])
    torch.testing.assert_close(module(fmri), expected)
    # Only the direction counts, as for CLIP's normalised embeddings.
    output = module.encoder(fmri)
    output.embedding = 3 * embedding
    torch.testing.assert_close(adapter.from_encoder(output), expected)
    decoder = VideoDecoder.load(module.export(tmp_path / "run"))
    assert decoder.adapter.config.source == "embedding"
    torch.testing.assert_close(decoder.condition(fmri), expected)
    # The CLIP oracle's condition: an embedding given directly, normalised the same way.
    torch.testing.assert_close(decoder.condition_from_embedding(3 * embedding), expected)


def test_auto_condition_takes_the_priors_own_adapter(tiny_subject, encoder_dir, tmp_path):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path)
    module = build_module(cfg, setup(cfg))
    assert module.adapter.config.source == "tokens"  # random preset: no adapter of its own
    denoiser = Denoiser(module.unet, None, module.codec, ConditionAdapter(12, 8, 1, "embedding"))
    assert condition_adapter("auto", module.encoder, denoiser) is denoiser.condition
    assert condition_adapter("tokens", module.encoder, denoiser).config.num_tokens == OUT_TOKENS
    with pytest.raises(ConfigError, match="stage2.condition='clip'"):
        condition_adapter("clip", module.encoder, denoiser)
    with pytest.raises(ConfigError, match="encoder/condition mismatch: the encoder gives 1 CLIP"):
        type(module)(module.encoder, ConditionAdapter(13, 8, 1, "embedding"), module.unet,
                     module.codec)  # fmt: skip
    with pytest.raises(ConfigError, match="one token"):
        ConditionAdapter(12, 8, 2, "embedding")
    with pytest.raises(ConfigError, match="condition source 'pooled'"):
        ConditionAdapter(12, 8, 1, "pooled")


@pytest.mark.parametrize("trainable", ["motion", "lora", "none"])
def test_unet_trainable_limits_what_the_optimizer_updates(
    tiny_subject, encoder_dir, tmp_path, trainable
):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path, f"stage2.unet_trainable={trainable}")
    module = build_module(cfg, setup(cfg))
    trainable_names = {n for n, p in module.unet.named_parameters() if p.requires_grad}
    motion = {n for n, _ in module.unet.named_parameters() if "motion_modules" in n}
    lora = {n for n, _ in module.unet.named_parameters() if "lora_" in n}
    assert trainable_names == {"motion": motion, "lora": lora, "none": set()}[trainable]
    assert bool(lora) == (trainable == "lora")
    optimized = {id(p) for g in module.configure_optimizers()["optimizer"].param_groups
                 for p in g["params"]}  # fmt: skip
    expected = {id(p) for p in module.adapter.parameters()}
    expected |= {id(p) for n, p in module.unet.named_parameters() if n in trainable_names}
    assert optimized == expected
    # module.train() (what a training loop calls) leaves the frozen parts in eval mode.
    module.eval().train()
    assert module.unet.training == (trainable != "none") and not module.encoder.training
    assert module.adapter.training and not module.codec.training
    with pytest.raises(ConfigError, match="stage2.unet_trainable='spatial'"):
        build_module(
            tiny_config(tiny_subject, encoder_dir, tmp_path, "stage2.unet_trainable=spatial"),
            setup(cfg),
        )


def test_lora_training_updates_the_adapters_and_leaves_the_base_weights(
    tiny_subject, encoder_dir, tmp_path
):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path, "stage2.unet_trainable=motion_lora",
                      "stage2.lora_rank=3", "stage2.frozen_dtype=bfloat16")  # fmt: skip
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule)
    params = dict(module.unet.named_parameters())
    lora = {n for n in params if "lora_" in n}
    motion = {n for n in params if "motion_modules" in n}
    assert lora and not lora & motion  # adapters on the 2-D UNet only
    assert {n for n, p in params.items() if p.requires_grad} == lora | motion
    assert {params[n].dtype for n in params if n not in lora | motion} == {torch.bfloat16}
    assert all(params[n].shape[0 if "lora_A" in n else 1] == 3 for n in lora)  # rank 3
    before = {n: p.detach().clone() for n, p in params.items()}
    fit = trainer(tmp_path, max_steps=3, limit_val_batches=0, precision="bf16-mixed")
    fit.fit(module, datamodule=datamodule)
    changed = {n for n, p in params.items() if not torch.equal(before[n], p.detach())}
    frozen = set(params) - lora - motion
    assert not changed & frozen  # the frozen base weights are bit-identical
    assert {n for n in changed if "lora_B" in n}  # lora_B starts at zero and learns
    assert changed & motion
    with pytest.warns(UserWarning, match="adamw_8bit needs CUDA"):
        module.hparams.optimizer = "adamw_8bit"
        assert type(module.configure_optimizers()["optimizer"]) is torch.optim.AdamW
    # Export merges the adapters into float32 weights that load without peft.
    x = torch.randn(2, *module.codec.latent_shape(*module.frames_shape))
    t, cond = torch.tensor([10, 500]), torch.randn(2, OUT_TOKENS, 8)
    module.unet.float()  # what export does first; the adapters are still separate here
    with torch.no_grad():
        expected = module.unet(x, t, cond.repeat_interleave(x.shape[2], 0)).sample
    decoder = VideoDecoder.load(module.export(tmp_path / "run"))
    assert not any("lora" in n for n, _ in decoder.unet.named_parameters())
    assert {p.dtype for p in decoder.unet.parameters()} == {torch.float32}
    with torch.no_grad():
        got = decoder.unet(x, t, cond.repeat_interleave(x.shape[2], 0)).sample
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_subject_without_frames_is_refused(tmp_path, encoder_dir):
    subject = write_tiny_subject(tmp_path / "noframes.h5")
    with h5py.File(subject, "r+") as f:
        del f["train/frames"], f["test/frames"]
    cfg = tiny_config(subject, encoder_dir, tmp_path)
    with pytest.raises(SchemaError, match="/train/frames: missing"):
        setup(cfg)
    datamodule = FMRIVideoDataModule(cfg, read_frames=False)
    datamodule.setup("fit")
    with pytest.raises(SchemaError, match="/train/frames: missing"):
        build_module(cfg, datamodule)


# -- the noise the module trains with --------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 0.8])
def test_callback_changes_the_noise_used_in_training_step(
    tiny_subject, encoder_dir, tmp_path, ratio
):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path, f"stage2.noise.ratio={ratio}")
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule)
    before = module.noise_scheduler
    assert before.config.dependent_ratio == 0.0
    fit = trainer(tmp_path, build_callbacks(cfg), max_steps=3, limit_val_batches=0)
    fit.fit(module, datamodule=datamodule)
    assert module.noise_scheduler.config.dependent_ratio == ratio
    assert before.config.dependent_ratio == 0.0  # replaced, not mutated
    measured = [v for _, v in logged(tmp_path, "train/noise_frame_corr_step")]
    assert len(measured) == 3
    assert all(abs(v - ratio) < 0.06 for v in measured), measured


def test_the_shipped_recipe_trains_the_denoiser_on_dependent_noise(
    tiny_subject, encoder_dir, tmp_path
):
    """experiments/stage2.yaml's choices, on the tiny UNet: the denoiser's trainable part learns
    from noise with the recipe's frame correlation, and its frozen base weights stay put."""
    from pathlib import Path

    from neurocine.config import load_config

    recipe = load_config(Path(__file__).parents[1] / "experiments" / "stage2.yaml").stage2
    assert recipe.unet_trainable in ("lora", "motion", "motion_lora") and recipe.noise.ratio > 0
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path,
                      *(f"stage2.{k}={recipe[k]}" for k in ("unet_trainable", "lr", "lora_rank")),
                      f"stage2.noise.ratio={recipe.noise.ratio}",
                      f"stage2.noise.mode={recipe.noise.mode}")  # fmt: skip
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule)
    params = dict(module.unet.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable and trainable != set(params)
    before = {n: p.detach().clone() for n, p in params.items()}
    fit = trainer(tmp_path, build_callbacks(cfg), max_steps=3, limit_val_batches=0)
    fit.fit(module, datamodule=datamodule)
    changed = {n for n, p in params.items() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= trainable  # the denoiser learns; its base weights do not
    measured = [v for _, v in logged(tmp_path, "train/noise_frame_corr_step")]
    assert len(measured) == 3
    assert all(abs(v - recipe.noise.ratio) < 0.06 for v in measured), measured


def test_without_the_callback_the_noise_is_independent(tiny_subject, encoder_dir, tmp_path):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path, "stage2.noise.ratio=0.8")
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule)
    trainer(tmp_path, max_steps=2, limit_val_batches=0).fit(module, datamodule=datamodule)
    measured = [v for _, v in logged(tmp_path, "train/noise_frame_corr_step")]
    assert all(abs(v) < 0.06 for v in measured), measured


def test_schedule_changes_ratio_by_epoch(tiny_subject, encoder_dir, tmp_path):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path)
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule)
    callback = DependentNoiseCallback(0.0, schedule={"1": 0.75})
    fit = trainer(tmp_path, [callback], max_epochs=2, limit_train_batches=2, limit_val_batches=0)
    fit.fit(module, datamodule=datamodule)
    by_epoch = logged(tmp_path, "train/noise_frame_corr_step")
    assert [e for e, _ in by_epoch] == [0, 0, 1, 1]
    assert all(abs(v) < 0.06 for e, v in by_epoch if e == 0)
    assert all(abs(v - 0.75) < 0.06 for e, v in by_epoch if e == 1)
    assert [v for _, v in logged(tmp_path, "train/noise_ratio")] == [0.0, 0.0, 0.75, 0.75]
    by_step = DependentNoiseCallback(0.1, schedule={"5": 0.5}, unit="step")
    assert [by_step.ratio_at(0, s) for s in (0, 4, 5, 9)] == [0.1, 0.1, 0.5, 0.5]


# -- training, export --------------------------------------------------------------------------


def test_short_run_lowers_the_diffusion_loss_and_exports(tiny_subject, encoder_dir, tmp_path):
    cfg = tiny_config(
        tiny_subject, encoder_dir, tmp_path, "stage2.lr=5e-3", "stage2.noise.ratio=0.5"
    )
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule)
    encoder_before = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    fit = trainer(tmp_path, build_callbacks(cfg), max_steps=12, limit_val_batches=2)
    before = fit.validate(module, datamodule=datamodule, verbose=False)[0]["val/loss"]
    fit.fit(module, datamodule=datamodule)
    after = fit.validate(module, datamodule=datamodule, verbose=False)[0]["val/loss"]
    assert after < 0.9 * before, (before, after)  # 1.11 → 0.92 on this machine
    # The frozen encoder did not move.
    assert all(torch.equal(v, module.encoder.state_dict()[k]) for k, v in encoder_before.items())
    # The export reloads as the same model, dependent ratio included.
    out = module.export(tmp_path / "run")
    decoder = VideoDecoder.load(out)
    assert decoder.scheduler.config.dependent_ratio == 0.5
    assert decoder.frames_shape == (4, 16, 20)
    assert same_weights(decoder.unet, module.unet) and same_weights(decoder.adapter, module.adapter)
    fmri = next(iter(datamodule.val_dataloader()))["fmri"]
    kwargs = dict(steps=2, guidance_scale=2.0)
    a = decoder.generate(fmri, generator=torch.Generator().manual_seed(0), **kwargs)
    b = module.eval().decoder().generate(fmri, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(a, b)


def test_fine_tuned_encoder_trains_at_its_own_learning_rate(tiny_subject, encoder_dir, tmp_path):
    cfg = tiny_config(
        tiny_subject, encoder_dir, tmp_path, "stage2.freeze_encoder=false",
        "stage2.encoder_lr=1e-3", "stage2.lr=2e-3",
    )  # fmt: skip
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule)
    encoder_before = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    fit = trainer(tmp_path, max_steps=2, limit_val_batches=0)
    fit.fit(module, datamodule=datamodule)
    groups = fit.optimizers[0].param_groups
    encoder_ids = {id(p) for p in module.encoder.parameters()}
    lrs = {g["lr"] for g in groups if any(id(p) in encoder_ids for p in g["params"])}
    assert lrs == {1e-3}
    assert {g["lr"] for g in groups} == {1e-3, 2e-3}
    moved = [not torch.equal(v, module.encoder.state_dict()[k]) for k, v in encoder_before.items()]
    assert any(moved)


def test_experiment_yaml_builds_the_demo_denoiser():
    from pathlib import Path

    from neurocine.config import load_config
    from neurocine.models.video_unet import build_denoiser

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "experiments" / "stage2.yaml")
    assert cfg.stage == "stage2" and cfg.stage2.encoder_ckpt == "runs/stage1/latest/encoder"
    assert 0 < cfg.stage2.noise.ratio < 1
    denoiser = build_denoiser(cfg.unet, seed=int(cfg.seed))
    # The shipped prior: the tiny VAE's 4 × 8 × 8 latents of the 6 × 32 × 32 simulated clips,
    # conditioned on a CLIP embedding through its own adapter.
    assert cfg.unet.preset == "tiny" and denoiser.codec.is_latent
    assert denoiser.codec.latent_shape(6, 32, 32) == (4, 6, 8, 8)
    assert denoiser.condition.config.source == "embedding"
    assert build_callbacks(cfg)[0].ratio_at(0, 0) == cfg.stage2.noise.ratio


def test_checkpoint_keeps_the_installed_noise_and_the_generator(
    tiny_subject, encoder_dir, tmp_path
):
    cfg = tiny_config(tiny_subject, encoder_dir, tmp_path)
    datamodule = setup(cfg)
    module = build_module(cfg, datamodule)
    DependentNoiseCallback(0.6, mode="progressive").install(module, 0.6)
    torch.rand(5, generator=module.generator)  # advance it, as training does
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    expected = torch.rand(5, generator=module.generator)
    resumed = build_module(cfg, datamodule)
    assert resumed.noise_scheduler.config.dependent_ratio == 0.0
    resumed.on_load_checkpoint(checkpoint)
    config = resumed.noise_scheduler.config
    assert (config.dependent_ratio, config.dependent_mode) == (0.6, "progressive")
    assert torch.equal(torch.rand(5, generator=resumed.generator), expected)
