"""The tiny video prior: stage 2's video UNet trained as a text-to-video model on VAE latents.

The stand-in for Stable Diffusion that stage 2 fine-tunes with fMRI conditioning. The network is
exactly what :func:`neurocine.models.video_unet.build_denoiser` builds: a diffusers
``UNet2DConditionModel`` from a config in code (:func:`~neurocine.models.video_unet.random_unet2d`)
inflated to a ``UNetMotionModel`` with AnimateDiff motion modules
(:func:`~neurocine.models.video_unet.inflate_unet`). It denoises the tiny VAE's latents of the
simulated clips (``[B, 4, F, 8, 8]``, shifted and scaled by the VAE's config, as
:class:`~neurocine.models.video_unet.LatentCodec` does) with stage 2's ε-loss and noise
scheduler (Stable Diffusion's β schedule).

Condition: the tiny CLIP's *joint-space* embedding of the clip — the caption's text embedding,
or (with probability ``image_cond_prob``) the clip's image embedding (mean of its frames), both
exactly what ``neurocine embed`` writes and stage 1 aligns fMRI with — projected to one
cross-attention token by a :class:`~neurocine.models.video_unet.ConditionAdapter`, whose learned
null token is the unconditional branch of classifier-free guidance (``cond_dropout``).
Conditioning on the joint space (like unCLIP's decoder) makes the prior answer to whatever
stage 1 predicts from fMRI, not only to captions.

The saved weights are an exponential moving average of the trained ones (``ema_decay``; it
smooths the last few hundred steps, which matters in a short training run).

Saved as ``unet/`` (``UNetMotionModel.save_pretrained``, float16), ``condition/`` (the
adapter) and ``scheduler/`` (the training scheduler's config); ``unet.preset=tiny`` loads
``unet/`` with the tiny VAE.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from neurocine.config import ClipConfig, EvaluatorConfig, UNetConfig
from neurocine.data.render import N_CLASSES
from neurocine.diffusion.loss import epsilon_loss
from neurocine.diffusion.sampling import ddim_sample
from neurocine.diffusion.scheduler import DependentDDPMScheduler, training_scheduler
from neurocine.evaluator import LabelledClips, TrainedClassifier, fit_classifier
from neurocine.fileio import atomic_dir
from neurocine.metrics import frame_based_n_way, video_based_n_way, video_ssim
from neurocine.models.clip_targets import image_embeddings, load_clip, text_embeddings
from neurocine.models.video_unet import (
    ConditionAdapter,
    LatentCodec,
    inflate_unet,
    random_unet2d,
    video_to_frames,
)
from neurocine.pretrain.common import (
    PretrainDataConfig,
    RunConfig,
    RunRecord,
    adamw_with_schedule,
    build_trainer,
    command_line,
    count_parameters,
    load_data,
    log_dir,
    shipped_dir,
    uint8_to_unit,
    write_card,
)
from neurocine.pretrain.data import PretrainClips
from neurocine.pretrain.vae import load_vae, mean_frame_clips


@dataclass
class PriorRecipe(RunConfig):
    """``neurocine pretrain prior``: the video UNet, its condition and schedule."""

    steps: int = 3000
    batch_size: int = 8
    lr: float = 8e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    init_dir: str | None = None  # start from a saved prior (continue training; steps=0: evaluate)
    clip_dir: str | None = None  # None: the shipped tiny CLIP
    vae_dir: str | None = None  # None: the shipped tiny VAE
    # the UNet (UNetConfig's meaning; the shipped config.json is what unet.preset=tiny loads)
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64])
    layers_per_block: int = 1
    num_attention_heads: int = 4
    motion_num_attention_heads: int = 4
    norm_num_groups: int = 8  # ≥ 4 channels per group
    cross_attention_dim: int = 64
    zero_init_motion: bool = True
    # the condition
    image_cond_prob: float = 0.5
    dependent_ratio: float = 0.0  # ρ of the training noise (docs/design.md §6); 0: independent
    cond_dropout: float = 0.1
    ema_decay: float = 0.998  # the saved weights are this EMA of the trained ones (0: off)
    # evaluation (samples from held-out captions)
    n_eval: int = 64
    sample_steps: int = 20
    guidance_scale: float = 3.0
    evaluator_epochs: int = 12
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)


def unet_config(recipe: DictConfig) -> DictConfig:
    """The :class:`~neurocine.config.UNetConfig` that builds the recipe's UNet."""
    keys = (
        "block_out_channels",
        "layers_per_block",
        "num_attention_heads",
        "motion_num_attention_heads",
        "norm_num_groups",
        "cross_attention_dim",
        "zero_init_motion",
    )
    return OmegaConf.merge(OmegaConf.structured(UNetConfig), {k: recipe[k] for k in keys})


def build_prior(recipe: DictConfig, latent_channels: int, clip_dim: int):
    """Untrained ``(UNetMotionModel, ConditionAdapter)`` (seeded; the global RNG is kept)."""
    cfg = unet_config(recipe)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe.seed))
        unet = inflate_unet(
            random_unet2d(cfg, latent_channels),
            motion_num_attention_heads=int(cfg.motion_num_attention_heads),
            zero_init_motion=bool(cfg.zero_init_motion),
        )
        adapter = ConditionAdapter(
            in_dim=clip_dim,
            cross_attention_dim=int(cfg.cross_attention_dim),
            num_tokens=1,
            source="embedding",
        )
    return unet, adapter


class PriorPretrainModule(L.LightningModule):
    """Text/image-embedding-to-video diffusion on precomputed VAE posteriors.

    Parameters
    ----------
    unet : UNetMotionModel
    adapter : ConditionAdapter
        CLIP embedding ``[B, 1, D]`` → one cross-attention token; holds the null token.
    noise_scheduler : DependentDDPMScheduler
    recipe : DictConfig
        A :class:`PriorRecipe`.
    """

    def __init__(self, unet, adapter, noise_scheduler, recipe: DictConfig) -> None:
        super().__init__()
        self.unet = unet
        self.adapter = adapter
        self.noise_scheduler = noise_scheduler
        self.recipe = recipe
        self.save_hyperparameters({"recipe": OmegaConf.to_container(recipe)})
        self._gen = torch.Generator().manual_seed(int(recipe.seed))
        self._ema: list[torch.Tensor] | None = None

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """CLIP embeddings ``[B, D]`` → condition tokens ``[B, 1, cross_attention_dim]``."""
        return self.adapter(embedding[:, None, :])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        mean, std, text, image = batch  # posteriors [B, C, F, h, w] (scaled), embeddings [B, D]
        g = self._gen
        n = mean.shape[0]
        latents = mean + std * torch.randn(mean.shape, generator=g).to(mean)
        use_image = torch.rand(n, generator=g).to(mean.device) < float(self.recipe.image_cond_prob)
        cond = self(torch.where(use_image[:, None], image, text))
        cond = self.adapter.drop(cond, float(self.recipe.cond_dropout), g)
        noise = self.noise_scheduler.sample_noise(latents.shape, g).to(latents)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (n,), generator=g).to(mean.device)
        loss = epsilon_loss(self.unet, self.noise_scheduler, latents, cond, noise, timesteps)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _params(self) -> list[torch.Tensor]:
        return list(self.unet.parameters()) + list(self.adapter.parameters())

    def on_train_start(self) -> None:
        if float(self.recipe.ema_decay) > 0:
            self._ema = [p.detach().clone() for p in self._params()]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """EMA of the weights (decay warmed up as (1 + n) / (10 + n), n = steps done)."""
        if self._ema is None:
            return
        n = self.global_step
        decay = min(float(self.recipe.ema_decay), (1 + n) / (10 + n))
        torch._foreach_lerp_(self._ema, [p.detach() for p in self._params()], 1.0 - decay)

    def use_ema(self) -> None:
        """Copy the EMA weights into the networks (what is saved); no-op without EMA."""
        if self._ema is not None:
            with torch.no_grad():
                for p, e in zip(self._params(), self._ema, strict=True):
                    p.copy_(e)

    def configure_optimizers(self) -> dict:
        return adamw_with_schedule(self, self._params(), self.recipe)


# --- precomputed inputs ------------------------------------------------------------------------


@torch.no_grad()
def encode_posteriors(vae, frames: np.ndarray, chunk: int = 256) -> tuple[torch.Tensor, ...]:
    """VAE posterior mean and std of every frame, in the diffusion's (shifted, scaled) units.

    Returns
    -------
    mean, std : Tensor of shape (N, C, F, h, w)
    """
    n, f = frames.shape[:2]
    flat = torch.from_numpy(frames.reshape(n * f, *frames.shape[2:]))
    shift = float(vae.config.shift_factor or 0.0)
    scale = float(vae.config.scaling_factor)
    means, stds = [], []
    for c in flat.split(chunk):
        dist = vae.encode(uint8_to_unit(c)).latent_dist
        means.append((dist.mean - shift) * scale)
        stds.append(dist.std * scale)

    def video(parts: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(parts)
        return x.reshape(n, f, *x.shape[1:]).transpose(1, 2).contiguous()

    return video(means), video(stds)


def clip_embeddings(clip_dir: str | Path, clips: PretrainClips) -> tuple[torch.Tensor, ...]:
    """Text embeddings of the captions and image embeddings of the clips ``[N, D]`` each."""
    model, preprocess, tokenizer = load_clip(
        OmegaConf.structured(ClipConfig(preset="pretrained", pretrained=str(clip_dir)))
    )
    text = torch.cat(
        [
            text_embeddings(model, tokenizer, clips.caption[i : i + 512])
            for i in range(0, len(clips), 512)
        ]
    )
    image = torch.cat(
        [
            image_embeddings(model, preprocess, clips.frames[i : i + 256], "mean")
            for i in range(0, len(clips), 256)
        ]
    )
    return text, image


# --- sampling and quality ----------------------------------------------------------------------


@torch.no_grad()
def sample_videos(
    unet,
    adapter: ConditionAdapter,
    codec: LatentCodec,
    scheduler,
    embeddings: torch.Tensor,
    frames_shape: tuple[int, int, int],
    steps: int = 20,
    guidance_scale: float = 3.0,
    seed: int = 0,
    batch_size: int = 16,
) -> np.ndarray:
    """uint8 clips ``[N, F, H, W, 3]`` sampled from CLIP embeddings ``[N, D]`` (DDIM, CFG).

    Sample ``i`` uses its own generator seeded ``seed + i``, so it does not depend on the batch.
    """
    unet.eval()
    adapter.eval()
    shape = codec.latent_shape(*frames_shape)
    out = []
    for start in range(0, embeddings.shape[0], batch_size):
        e = embeddings[start : start + batch_size]
        cond = adapter(e[:, None, :])
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(e.shape[0])]
        latents = ddim_sample(
            unet,
            scheduler,
            cond,
            adapter.null(e.shape[0]),
            shape,
            steps=steps,
            guidance_scale=guidance_scale,
            generator=gens,
        )
        out.append(video_to_frames(codec.decode(latents)).numpy())
    return np.concatenate(out)


def train_scorer(train: PretrainClips, epochs: int = 12, seed: int = 0):
    """The simulated-data evaluator (:mod:`neurocine.evaluator`) trained on pretraining clips."""

    # Pseudo-runs of 200 clips (fewer for tiny sets: at least two); the last one validates.
    runs = np.arange(len(train)) // max(1, min(200, len(train) // 2))
    clips = LabelledClips(train.frames, train.label, runs, N_CLASSES)
    cfg = OmegaConf.structured(EvaluatorConfig(epochs=epochs, seed=seed, val_runs=1))
    model, info = fit_classifier(clips, cfg, progress=False)
    return TrainedClassifier(model, "simulated evaluator"), info


def semantic_scores(classifier, videos: np.ndarray, truth: np.ndarray, seed: int = 0) -> dict:
    """50-way and 2-way video- and frame-based top-1 of ``videos`` against ``truth``."""
    out = {}
    gt_f, gt_v = classifier.probs(truth)  # the evaluator's softmax per frame and per clip
    pred_f, pred_v = classifier.probs(videos)
    for n_way in (2, 50):
        g = torch.Generator().manual_seed(seed)
        out[f"video_{n_way}way"] = video_based_n_way(pred_v, gt_v, n_way, generator=g)[0]
        g = torch.Generator().manual_seed(seed)
        out[f"frame_{n_way}way"] = frame_based_n_way(pred_f, gt_f, n_way, generator=g)[0]
    return out


def prior_quality(
    unet,
    adapter: ConditionAdapter,
    codec: LatentCodec,
    scheduler,
    clip_dir: str | Path,
    train: PretrainClips,
    val: PretrainClips,
    recipe: Any,
    classifier=None,
) -> dict[str, Any]:
    """Samples from held-out captions scored against the captioned clips, beside baselines.

    Rows: the prior's samples; the mean training frame (mean-frame baseline); the VAE
    reconstruction of the true clip (the ceiling of any latent model); the true clip itself
    (the classifier's own accuracy). Columns: 50-/2-way top-1 (the simulated-data evaluator,
    video- and frame-based) and SSIM against the true clip.
    """
    n = min(int(recipe.n_eval), len(val))
    held = val.subset(slice(0, n))
    text, _ = clip_embeddings(clip_dir, held)
    f, h, w = held.frames.shape[1:4]
    samples = sample_videos(
        unet,
        adapter,
        codec,
        scheduler,
        text,
        (f, h, w),
        steps=int(recipe.sample_steps),
        guidance_scale=float(recipe.guidance_scale),
        seed=int(recipe.seed),
    )
    recon = video_to_frames(
        codec.decode(codec.encode(torch.from_numpy(held.frames).permute(0, 4, 1, 2, 3) / 127.5 - 1))
    ).numpy()
    info = {}
    if classifier is None:
        classifier, info = train_scorer(train, int(recipe.evaluator_epochs), int(recipe.seed))
    rows = {
        "prior samples (held-out captions)": samples,
        "mean-frame baseline": mean_frame_clips(train, n),
        "VAE reconstruction of the true clip": recon,
        "true clip": held.frames,
    }
    table = {}
    for name, videos in rows.items():
        scores = semantic_scores(classifier, videos, held.frames, int(recipe.seed))
        scores["ssim"] = video_ssim(videos, held.frames)
        table[name] = scores
    return {
        "n_clips": n,
        "rows": table,
        "evaluator": {k: v for k, v in info.items() if isinstance(v, int | float)},
        "samples": samples,
    }


def quality_table(q: dict) -> str:
    cols = ("video_50way", "frame_50way", "video_2way", "ssim")
    lines = [
        f"{q['n_clips']} held-out clips; each sample is drawn from its caption's tiny-CLIP text "
        "embedding (DDIM, classifier-free guidance). n-way top-1 by the simulated-data evaluator "
        "(`neurocine.evaluator`'s CNN trained on the pretraining clips; its true classes are its "
        "top 3 on the true clip; 100 trials), SSIM against the true clip:",
        "",
        "| row | 50-way (video) | 50-way (frame) | 2-way (video) | SSIM |",
        "|---|---|---|---|---|",
    ]
    for name, s in q["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s[c]:.3f}" for c in cols) + " |")
    ev = q.get("evaluator") or {}
    if "val_video_acc" in ev:
        lines += ["", f"Evaluator accuracy on its validation clips: {ev['val_video_acc']:.3f}."]
    return "\n".join(lines)


# --- the recipe --------------------------------------------------------------------------------


def save_prior(unet, adapter, scheduler, directory: Path, fp16: bool = True) -> None:
    """``unet/``, ``condition/`` and ``scheduler/`` under ``directory`` (replaced)."""
    shutil.rmtree(directory, ignore_errors=True)
    (unet.half() if fp16 else unet).save_pretrained(str(directory / "unet"))
    (adapter.half() if fp16 else adapter).save_pretrained(str(directory / "condition"))
    scheduler.save_pretrained(str(directory / "scheduler"))
    unet.float()
    adapter.float()


def load_prior(directory: str | Path):
    """A saved prior as float32: ``(UNetMotionModel, ConditionAdapter, scheduler)``."""
    from diffusers import UNetMotionModel

    directory = Path(directory)
    unet = UNetMotionModel.from_pretrained(
        str(directory), subfolder="unet", torch_dtype=torch.float32
    ).eval()
    adapter = ConditionAdapter.from_pretrained(
        str(directory), subfolder="condition", torch_dtype=torch.float32
    ).eval()
    scheduler = DependentDDPMScheduler.from_pretrained(str(directory), subfolder="scheduler")
    return unet, adapter, scheduler


def pretrain_prior(recipe: DictConfig, out: str | Path) -> dict:
    """Train the tiny video prior on the tiny VAE's latents, measure it, write ``out``."""
    start = time.time()
    clip_dir = Path(recipe.clip_dir) if recipe.clip_dir else shipped_dir("clip")
    vae_dir = Path(recipe.vae_dir) if recipe.vae_dir else shipped_dir("vae")
    if int(recipe.threads) > 0:
        torch.set_num_threads(int(recipe.threads))
    train, val = load_data(recipe)
    vae = load_vae(vae_dir)
    mean, std = encode_posteriors(vae, train.frames)
    text, image = clip_embeddings(clip_dir, train)
    if recipe.init_dir:  # continue from a saved prior (its architecture, not the recipe's)
        unet, adapter, _ = load_prior(recipe.init_dir)
    else:
        unet, adapter = build_prior(recipe, int(vae.config.latent_channels), int(text.shape[1]))
    scheduler = training_scheduler(clip_sample=False, dependent_ratio=float(recipe.dependent_ratio))
    loader = DataLoader(
        TensorDataset(mean, std, text, image),
        batch_size=int(recipe.batch_size),
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(int(recipe.seed)),
    )
    module = PriorPretrainModule(unet, adapter, scheduler, recipe)
    logs = log_dir(recipe, "prior")
    trainer = build_trainer(recipe, logs)
    train_start = time.time()
    if int(recipe.steps) > 0:
        trainer.fit(module, loader)
        module.use_ema()
    train_s = time.time() - train_start
    steps_done = int(trainer.global_step)
    # Keep the trained weights outside ``out`` first: a failed evaluation must not lose them
    # (``init_dir=<logs>/trained steps=0`` evaluates and writes them again).
    unet, adapter = unet.float().cpu().eval(), adapter.float().cpu().eval()
    save_prior(unet, adapter, scheduler, logs / "trained", bool(recipe.fp16))

    with atomic_dir(out) as tmp:
        shutil.copytree(logs / "trained", tmp, dirs_exist_ok=True)
        unet_l, adapter_l, scheduler_l = load_prior(tmp)
        quality = prior_quality(
            unet_l, adapter_l, LatentCodec(vae), scheduler_l, clip_dir, train, val, recipe
        )
        quality.pop("samples")
        quality.update(steps_done=steps_done, train_minutes=round(train_s / 60, 1))
        record = RunRecord(
            name="video prior",
            command=command_line(),
            recipe=recipe,
            steps_done=steps_done,
            train_s=train_s,
            wall_s=time.time() - start,
            n_params=count_parameters(unet) + count_parameters(adapter),
            quality_table=quality_table(quality),
            quality=quality,
            description=(
                "Stage 2's video UNet (a diffusers `UNet2DConditionModel` inflated to "
                "`UNetMotionModel` with motion modules, `neurocine.models.video_unet`) trained "
                "as a text-to-video diffusion model on the tiny VAE's latents of simulated "
                "clips, conditioned on the tiny CLIP's joint-space embedding (of the caption, or "
                f"with probability {recipe.image_cond_prob:g} of the clip's frames). The "
                "stand-in for Stable Diffusion that stage 2 fine-tunes on fMRI: "
                "`unet.preset=tiny` loads `unet/` with `neurocine/pretrained/vae`. "
                f"Trained for {steps_done} steps ({train_s / 60:.0f} min)."
            ),
            outputs=(
                "`unet/`: `UNetMotionModel`, input latents `[B, "
                f"{vae.config.latent_channels}, F, h, w]` (F ≤ "
                f"{unet.config.motion_max_seq_length}; the VAE's 8×8 grid for 32×32 frames), "
                "`encoder_hidden_states` `[B·F, L, "
                f"{recipe.cross_attention_dim}]`, output ε̂ of the latents' shape. `condition/`: "
                "`ConditionAdapter` (CLIP embedding `[B, 1, "
                f"{text.shape[1]}]` → `[B, 1, {recipe.cross_attention_dim}]`, "
                "`null(B)` for guidance). `scheduler/`: the `DependentDDPMScheduler` it was "
                f"trained with (ρ = {recipe.dependent_ratio:g})."
            ),
        )
        write_card(tmp, record)
    return quality
