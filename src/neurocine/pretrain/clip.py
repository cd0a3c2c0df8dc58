"""The tiny CLIP: image/text contrastive training on simulated frames and captions.

A :class:`transformers.CLIPModel` (a small ViT on 32 × 32 frames, patch 4, and a small text
transformer over the offline word-level tokenizer of :mod:`neurocine.models.clip_targets`) is
trained with CLIP's symmetric InfoNCE loss on (frame, caption) pairs: one random frame of each
clip per step. Captions repeat in the simulated world, so pairs in a batch that share a caption
are all positives (the target row is uniform over them) instead of false negatives.

It is saved like any CLIP (``CLIPModel.save_pretrained`` + the tokenizer + a
``CLIPImageProcessor``), so ``clip.preset=tiny`` loads it through the same
``CLIPModel.from_pretrained``/``CLIPProcessor.from_pretrained`` path as ``preset=pretrained``.
The weights stay float32: the model is ~1 MB and the stage-1 embedding code feeds it float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from neurocine.config import ClipConfig
from neurocine.data import render
from neurocine.fileio import atomic_dir
from neurocine.models.clip_targets import (
    CLIP_MEAN,
    CLIP_STD,
    SPECIAL_TOKENS,
    TEXT_MAX_LENGTH,
    TINY_VOCAB,
    build_tiny_tokenizer,
    image_embeddings,
    load_clip,
    pooled_features,
    text_embeddings,
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
    write_card,
)
from neurocine.pretrain.data import PretrainClips


@dataclass
class ClipRecipe(RunConfig):
    """``neurocine pretrain clip``: architecture and schedule of the tiny CLIP."""

    steps: int = 1000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    fp16: bool = False  # ~1 MB either way; float32 keeps the embedding code's dtypes
    width: int = 64  # hidden size of both towers and the joint embedding
    vision_layers: int = 3
    text_layers: int = 2
    heads: int = 4
    patch_size: int = 4
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)


def clip_config(recipe: Any):
    """The ``CLIPConfig`` of the recipe (vocabulary of the offline tokenizer)."""
    from transformers import CLIPConfig

    w = int(recipe.width)
    return CLIPConfig(
        text_config={
            "vocab_size": len(TINY_VOCAB),
            "hidden_size": w,
            "intermediate_size": 4 * w,
            "num_hidden_layers": int(recipe.text_layers),
            "num_attention_heads": int(recipe.heads),
            "max_position_embeddings": TEXT_MAX_LENGTH,
            "pad_token_id": SPECIAL_TOKENS.index("<pad>"),
            "bos_token_id": SPECIAL_TOKENS.index("<bos>"),
            "eos_token_id": SPECIAL_TOKENS.index("<eos>"),
        },
        vision_config={
            "hidden_size": w,
            "intermediate_size": 4 * w,
            "num_hidden_layers": int(recipe.vision_layers),
            "num_attention_heads": int(recipe.heads),
            "image_size": int(recipe.data.height),
            "patch_size": int(recipe.patch_size),
        },
        projection_dim=w,
    )


def image_processor(size: int):
    """The ``CLIPImageProcessor`` saved with the model (resize/crop to ``size``, CLIP stats)."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
    )


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` → CLIP pixel values ``[N, 3, H, W]`` (what the processor does
    to frames that already have the model's size)."""
    mean = torch.tensor(CLIP_MEAN, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=frames.device).view(1, 3, 1, 1)
    return (frames.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, caption_id: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE where every pair with the same caption is a positive.

    Parameters
    ----------
    image, text : Tensor of shape (B, D)
        Unnormalised projected embeddings.
    caption_id : int Tensor of shape (B,)
        Equal ids mark identical captions.
    logit_scale : Tensor
        log of the inverse temperature (CLIP's ``logit_scale``), clamped at log 100.
    """
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = logit_scale.clamp(max=np.log(100.0)).exp() * image @ text.T
    same = (caption_id[:, None] == caption_id[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    loss_i = torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
    loss_t = torch.sum(-target * F.log_softmax(logits.T, dim=1), dim=1).mean()
    return 0.5 * (loss_i + loss_t)


class ClipPretrainModule(L.LightningModule):
    """Contrastive training of an injected ``CLIPModel`` on (random frame, caption) pairs.

    Parameters
    ----------
    model : transformers.CLIPModel
    recipe : DictConfig
        A :class:`ClipRecipe` (lr, weight_decay, warmup_steps, steps, seed).
    """

    def __init__(self, model: torch.nn.Module, recipe: DictConfig) -> None:
        super().__init__()
        self.model = model
        self.recipe = recipe
        self.save_hyperparameters({"recipe": OmegaConf.to_container(recipe)})
        self._gen = torch.Generator().manual_seed(int(recipe.seed))

    def forward(self, pixel_values: torch.Tensor, input_ids, attention_mask):
        img = pooled_features(self.model.get_image_features(pixel_values=pixel_values))
        txt = pooled_features(
            self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        )
        return img, txt

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        frames, input_ids, attention_mask, caption_id = batch  # frames: [B, F, H, W, 3]
        b, f = frames.shape[:2]
        pick = torch.randint(f, (b,), generator=self._gen).to(frames.device)
        pixels = normalize_frames(frames[torch.arange(b, device=frames.device), pick])
        img, txt = self(pixels, input_ids, attention_mask)
        loss = contrastive_loss(img, txt, caption_id, self.model.logit_scale)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/logit_scale", self.model.logit_scale.exp())
        return loss

    def configure_optimizers(self) -> dict:
        return adamw_with_schedule(self, self.model.parameters(), self.recipe)


def _dataset(clips: PretrainClips, tokenizer) -> TensorDataset:
    tokens = tokenizer(
        clips.caption,
        padding=True,
        truncation=True,
        max_length=TEXT_MAX_LENGTH,
        return_tensors="pt",
    )
    _, caption_id = np.unique(np.asarray(clips.caption), return_inverse=True)
    return TensorDataset(
        torch.from_numpy(clips.frames),
        tokens["input_ids"],
        tokens["attention_mask"],
        torch.from_numpy(caption_id.astype(np.int64)),
    )


# --- quality -----------------------------------------------------------------------------------


def _attribute_accuracy(clips: PretrainClips, hit_index: np.ndarray) -> dict[str, float]:
    return {
        name: float(np.mean(values[hit_index] == values))
        for name, values in clips.attributes.items()
    }


def retrieval_quality(model, preprocess, tokenizer, clips: PretrainClips) -> dict[str, float]:
    """Caption↔clip retrieval on held-out clips with the stage-1 embedding functions.

    A clip's image embedding is the mean of its frames' (``frame_reduce="mean"``, what
    ``neurocine embed`` stores). Top-1 counts a hit when the retrieved caption (clip) has exactly
    the query's caption, so duplicates are not penalised. ``*_acc`` is the fraction of
    image→text retrievals whose caption names the right attribute; ``category_zero_shot`` is
    64-way shape×colour classification of each clip with the prompts "a {colour} {shape}".
    """
    img = image_embeddings(model, preprocess, clips.frames, "mean")
    txt = text_embeddings(model, tokenizer, clips.caption)
    sim = (img @ txt.T).numpy()
    captions = np.asarray(clips.caption)
    i2t = sim.argmax(1)
    t2i = sim.argmax(0)
    out = {
        "n_clips": len(clips),
        "image_to_text_top1": float(np.mean(captions[i2t] == captions)),
        "text_to_image_top1": float(np.mean(captions[t2i] == captions)),
        "chance_top1": float(np.mean([np.mean(captions == c) for c in captions])),
    }
    out.update({f"{k}_acc": v for k, v in _attribute_accuracy(clips, i2t).items()})
    prompts = [f"a {c} {s}" for s in render.SHAPES for c in render.COLOURS]
    cat = (img @ text_embeddings(model, tokenizer, prompts).T).argmax(1).numpy()
    out["category_zero_shot"] = float(np.mean(cat == clips.label))
    return out


QUALITY_ROWS = (
    ("image→text top-1", "image_to_text_top1"),
    ("text→image top-1", "text_to_image_top1"),
    ("shape of the retrieved caption", "shape_acc"),
    ("colour of the retrieved caption", "colour_acc"),
    ("background of the retrieved caption", "background_acc"),
    ("motion direction of the retrieved caption", "direction_acc"),
    ("64-way category, zero-shot prompts", "category_zero_shot"),
)


def quality_table(trained: dict, random_init: dict) -> str:
    """Markdown: the trained CLIP beside the random-init preset and chance."""
    chance = {
        "image_to_text_top1": trained["chance_top1"],
        "text_to_image_top1": trained["chance_top1"],
        "shape_acc": 1 / 8,
        "colour_acc": 1 / 8,
        "background_acc": 1 / 6,
        "direction_acc": 1 / 9,
        "category_zero_shot": 1 / 64,
    }
    lines = [
        f"Retrieval among the {trained['n_clips']} held-out clips (each clip's frames averaged, "
        "as `neurocine embed` does):",
        "",
        "| metric | tiny CLIP | random-init CLIP (`preset=random`) | chance |",
        "|---|---|---|---|",
    ]
    for label, key in QUALITY_ROWS:
        lines.append(
            f"| {label} | {trained[key]:.3f} | {random_init[key]:.3f} | {chance[key]:.3f} |"
        )
    lines.append("")
    lines.append(
        "No single frame shows the motion direction, and the mean of the frames' embeddings "
        "ignores their order; direction is read from where the object is (a scene's path stays "
        "in the frame, so objects moving right tend to be on the left) and from its spread."
    )
    return "\n".join(lines)


# --- the recipe --------------------------------------------------------------------------------


def save_clip(model, directory: Path, size: int) -> None:
    """``CLIPModel`` + offline tokenizer + image processor, loadable by ``from_pretrained``."""
    model.save_pretrained(str(directory))
    build_tiny_tokenizer().save_pretrained(str(directory))
    image_processor(size).save_pretrained(str(directory))


def pretrain_clip(recipe: DictConfig, out: str | Path) -> dict:
    """Train the tiny CLIP, measure it on held-out clips, write ``out`` (model + card)."""
    from transformers import CLIPModel

    start = time.time()
    train, val = load_data(recipe)
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(recipe.seed))
        model = CLIPModel(clip_config(recipe))
    loader = DataLoader(
        _dataset(train, tokenizer),
        batch_size=int(recipe.batch_size),
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(int(recipe.seed)),
    )
    module = ClipPretrainModule(model, recipe)
    trainer = build_trainer(recipe, log_dir(recipe, "clip"))
    train_start = time.time()
    trainer.fit(module, loader)
    train_s = time.time() - train_start

    with atomic_dir(out) as tmp:
        model = model.float().cpu().eval()
        if recipe.fp16:
            model = model.half()
        save_clip(model, tmp, int(recipe.data.height))
        # Measure what was saved, through the loader stage 1 uses.
        cfg = OmegaConf.structured(ClipConfig(preset="pretrained", pretrained=str(tmp)))
        quality = retrieval_quality(*load_clip(cfg), val)
        random_init = retrieval_quality(
            *load_clip(OmegaConf.structured(ClipConfig(preset="random"))), val
        )
        wall = time.time() - start
        record = RunRecord(
            name="CLIP",
            command=command_line(),
            recipe=recipe,
            steps_done=int(trainer.global_step),
            train_s=train_s,
            wall_s=wall,
            n_params=count_parameters(model),
            quality_table=quality_table(quality, random_init),
            quality={"tiny": quality, "random_init": random_init},
            description=(
                "A `transformers.CLIPModel` trained contrastively on frames and captions of the "
                "simulated world, so that stage 1's CLIP targets carry its semantics (shape, "
                "colour, size, background) instead of random features. `clip.preset=tiny` loads "
                "it (`neurocine embed`)."
            ),
            outputs=(
                f"`get_image_features` / `get_text_features` → `[N, {recipe.width}]` "
                f"(projection_dim); images are {recipe.data.height}×{recipe.data.width} "
                f"(ViT patch {recipe.patch_size}), captions use the offline word-level tokenizer "
                f"(`tokenizer.json`, {len(TINY_VOCAB)} words, ≤ {TEXT_MAX_LENGTH} tokens)."
            ),
        )
        write_card(tmp, record)
    return record.quality
