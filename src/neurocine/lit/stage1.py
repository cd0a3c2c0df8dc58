"""Stage 1: ``ContrastiveEncoderModule`` aligns the fMRI encoder with CLIP image/text targets.

The system only wires parts: the encoder (:class:`~neurocine.models.fmri_encoder.FMRIEncoder`,
injected), the loss (:func:`~neurocine.lit.losses.contrastive_loss`, symmetric InfoNCE with a
learnable temperature, docs/design.md §5) and the retrieval metrics of :mod:`neurocine.metrics`.
Augmentation is the DataModule's job (spatial masking and temporal interpolation on training
batches); this module never augments.

Logged: ``train/loss`` (+ per target, temperature, samples/s), ``val/loss``,
``val/top1_batch``, ``val/top5_batch`` (retrieval among the batch) and ``val/top1_50way``,
``val/top5_50way`` (n-way against the whole validation split) on the image targets, the same
with ``_text`` for the text targets, and the ``test/…`` twins in ``trainer.test``. The driver
keeps the best checkpoint by ``val/top1_50way`` (:attr:`checkpoint_monitor`); :meth:`export`
writes the encoder alone (``<run>/encoder/``: ``config.json`` + safetensors) for stage 2, from
the best epoch by default (``stage1.export: best``, :attr:`export_checkpoint`) or the last.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import h5py
import lightning as L
import torch
from torch import nn

from neurocine.errors import ConfigError, SchemaError
from neurocine.lit.losses import contrastive_loss
from neurocine.metrics import NWayRetrieval, RetrievalTopK
from neurocine.models.encoder_factory import build_encoder
from neurocine.models.fmri_encoder import FMRIEncoder

TARGETS = ("clip_image", "clip_text")
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP's clamp of the inverse temperature


def steps_per_epoch(
    n_train: int, batch_size: int, world_size: int = 1, accumulate_grad_batches: int = 1
) -> int:
    """Optimizer steps in one epoch (the documented count, also under DDP).

    Under DDP each of the ``world_size`` processes sees ``ceil(n_train / world_size)`` training
    windows (Lightning's distributed sampler pads the last share) in batches of ``batch_size``;
    the DataModule drops an incomplete last batch (whenever ``n_train >= batch_size``), and
    ``accumulate_grad_batches`` batches make one step. Each process takes the same steps
    (gradients are averaged), so the global step count is this number per epoch.
    """
    per_rank = math.ceil(n_train / world_size)
    batches = per_rank // batch_size if n_train >= batch_size else math.ceil(per_rank / batch_size)
    return math.ceil(batches / accumulate_grad_batches) if batches else 0


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup_steps``, then cosine to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ContrastiveEncoderModule(L.LightningModule):
    """Contrastive training of the fMRI encoder against CLIP embeddings.

    Parameters
    ----------
    encoder : FMRIEncoder, optional
        The network (injected, not pickled into the hyper-parameters).
    encoder_config : dict, optional
        Rebuilds the encoder when ``encoder`` is None (``load_from_checkpoint``).
    lr, weight_decay : float
        AdamW; no decay on biases, norms, embeddings and the temperature.
    warmup_steps : int
        Linear warm-up, then a cosine decay to ``lr * min_lr_ratio`` at the last step.
    w_img, w_txt : float
        Weights of the image and text InfoNCE terms.
    temperature_init : float, default=0.07
    learn_temperature : bool, default=True
    n_way, n_way_trials, n_way_seed : int
        The validation n-way retrieval (50-way, 100 trials).
    min_lr_ratio : float, default=0.0
    export_checkpoint : {"best", "last"}, default="best"
        Which weights :meth:`export` writes: the best epoch by :attr:`checkpoint_monitor` (the
        driver restores it before exporting) or the last.
    """

    def __init__(
        self,
        encoder: FMRIEncoder | None = None,
        encoder_config: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 50,
        w_img: float = 1.0,
        w_txt: float = 1.0,
        temperature_init: float = 0.07,
        learn_temperature: bool = True,
        n_way: int = 50,
        n_way_trials: int = 100,
        n_way_seed: int = 0,
        min_lr_ratio: float = 0.0,
        export_checkpoint: str = "best",
    ) -> None:
        super().__init__()
        if encoder is None:
            if encoder_config is None:
                raise ConfigError("ContrastiveEncoderModule needs an encoder or an encoder_config")
            encoder = FMRIEncoder.from_config(encoder_config)
        self.save_hyperparameters(ignore=["encoder"])
        self.hparams["encoder_config"] = {
            k: v for k, v in dict(encoder.config).items() if not k.startswith("_")
        }
        self.encoder = encoder
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / temperature_init)), requires_grad=learn_temperature
        )
        self.weights = {"clip_image": float(w_img), "clip_text": float(w_txt)}
        if not any(w > 0 for w in self.weights.values()):
            raise ConfigError("stage1.w_img and stage1.w_txt are both 0: nothing to train on")
        self.metrics = nn.ModuleDict()
        for stage in ("val", "test"):
            for target in TARGETS:
                suffix = "" if target == "clip_image" else "_text"
                self.metrics[f"{stage}/top1_batch{suffix}"] = RetrievalTopK(k=1, within_batch=True)
                self.metrics[f"{stage}/top5_batch{suffix}"] = RetrievalTopK(k=5, within_batch=True)
                for k in (k for k in (1, 5) if k < n_way):  # top-k needs more than k options
                    self.metrics[f"{stage}/top{k}_{n_way}way{suffix}"] = NWayRetrieval(
                        n_way=n_way, num_trials=n_way_trials, top_k=k, seed=n_way_seed
                    )
        # The best checkpoint follows the configured n-way (val/top1_50way by default) of the
        # image target, or of the text target when only the text target is trained.
        suffix = "" if self.weights["clip_image"] > 0 else "_text"
        self.checkpoint_monitor = (f"val/top1_{n_way}way{suffix}", "max")
        if export_checkpoint not in ("best", "last"):
            raise ConfigError(
                f"key 'stage1.export': '{export_checkpoint}' is not one of ('best', 'last')"
            )
        self.export_checkpoint = export_checkpoint
        self._epoch_samples = 0
        self._epoch_start = 0.0

    def forward(self, fmri: torch.Tensor) -> torch.Tensor:
        """fMRI windows ``[B, W, V]`` → embeddings ``[B, clip_dim]`` (not normalised)."""
        return self.encoder(fmri).embedding

    @property
    def inverse_temperature(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def _targets(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = {t: batch[t] for t in TARGETS if t in batch and self.weights[t] > 0}
        if not targets:
            raise SchemaError(
                "stage 1 batch has no clip_image/clip_text with a positive weight: "
                "run `neurocine embed FILE` first"
            )
        width = self.encoder.embedding_dim
        for name, value in targets.items():
            if value.shape[-1] != width:
                raise ConfigError(
                    f"{name} has {value.shape[-1]} dims but the encoder projects to {width}: "
                    "re-embed with the matching CLIP or rebuild the encoder"
                )
        return targets

    def _common_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        embedding = self(batch["fmri"])
        targets = self._targets(batch)
        loss, parts = contrastive_loss(embedding, targets, self.weights, self.inverse_temperature)
        n = embedding.shape[0]
        on_step = stage == "train"
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True,
                 batch_size=n, sync_dist=sync)  # fmt: skip
        for name, value in parts.items():
            label = "img" if name == "clip_image" else "txt"
            self.log(f"{stage}/loss_{label}", value, on_step=False, on_epoch=True,
                     batch_size=n, sync_dist=sync)  # fmt: skip
        if stage != "train":
            detached = embedding.detach().float()
            for name, value in targets.items():
                for key in self._metric_keys(stage, name):
                    self.metrics[key].update(detached, value)
        return loss

    def _metric_keys(self, stage: str, target: str) -> list[str]:
        """The retrieval metrics of ``stage`` scored against ``target``."""
        text = target == "clip_text"
        return [
            k for k in self.metrics if k.startswith(f"{stage}/") and k.endswith("_text") == text
        ]

    def on_train_start(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def on_train_epoch_start(self) -> None:
        self._epoch_samples = 0
        self._epoch_start = time.perf_counter()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._common_step(batch, "train")
        self._epoch_samples += batch["fmri"].shape[0]
        self.log("train/temperature", 1.0 / self.inverse_temperature.detach(), on_step=True,
                 on_epoch=False)  # fmt: skip
        return loss

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._epoch_start
        if elapsed > 0 and self._epoch_samples:
            rate = self._epoch_samples * self.trainer.world_size / elapsed
            self.log("train/samples_per_s", rate, on_step=False, on_epoch=True, rank_zero_only=True)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._common_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._common_step(batch, "test")

    def _log_metrics(self, stage: str) -> None:
        for key, metric in self.metrics.items():
            if key.startswith(f"{stage}/") and metric.update_called:
                self.log(key, metric.compute(), prog_bar=key == self.checkpoint_monitor[0])
                metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def configure_optimizers(self) -> dict:
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim < 2 or name.endswith("_embed") or name == "logit_scale":
                no_decay.append(param)
            else:
                decay.append(param)
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": hp.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=hp.lr,
        )
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: warmup_cosine(step, hp.warmup_steps, total, hp.min_lr_ratio),
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def export(self, run_dir: str | Path) -> Path:
        """Write the encoder alone to ``<run_dir>/encoder/`` (what stage 2 loads)."""
        return self.encoder.save_atomic(Path(run_dir) / "encoder")


def available_targets(path: str | Path) -> list[str]:
    """The embedding datasets present in ``/train`` of a subject file."""
    with h5py.File(path, "r") as f:
        return [t for t in TARGETS if f"train/{t}" in f]


def build_module(cfg: Any, datamodule: Any) -> ContrastiveEncoderModule:
    """The stage-1 system from a config and a DataModule after ``setup("fit")``.

    Raises SchemaError when the file has no embeddings and ConfigError when a pretrained
    encoder does not fit the data (voxels, window, CLIP dimension).
    """
    path = cfg.data.path
    if datamodule.clip_dim is None:
        raise SchemaError(
            f"{path}: no clip_image/clip_text in {path}: run `neurocine embed {path}` first"
        )
    present = available_targets(path)
    s1 = cfg.stage1
    w_img = float(s1.w_img) if "clip_image" in present else 0.0
    w_txt = float(s1.w_txt) if "clip_text" in present else 0.0
    if w_img <= 0 and w_txt <= 0:
        raise ConfigError(
            f"{path}: has {present or 'no embeddings'} but stage1.w_img={s1.w_img}, "
            f"stage1.w_txt={s1.w_txt}: no target to train on"
        )
    encoder = build_encoder(
        cfg.encoder, datamodule.n_voxels, int(cfg.data.window), datamodule.clip_dim, int(cfg.seed)
    )
    return ContrastiveEncoderModule(
        encoder=encoder,
        lr=float(s1.lr),
        weight_decay=float(s1.weight_decay),
        warmup_steps=int(s1.warmup_steps),
        w_img=w_img,
        w_txt=w_txt,
        temperature_init=float(s1.temperature_init),
        learn_temperature=bool(s1.learn_temperature),
        n_way=int(s1.n_way),
        n_way_trials=int(s1.n_way_trials),
        n_way_seed=int(s1.n_way_seed),
        min_lr_ratio=float(s1.min_lr_ratio),
        export_checkpoint=str(s1.export),
    )
