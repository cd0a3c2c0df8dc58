"""Classifiers that score reconstructions semantically (the n-way metrics, docs/design.md §10).

Two kinds share one small interface, :class:`Classifier` (``probs``: softmax per frame and per
clip):

- **Trained** (simulated data): :class:`ClipClassifier`, a small CNN trained by
  :func:`train_evaluator` (``neurocine train-evaluator``) on the ground-truth training clips and
  their labels (64 shape × colour categories on the simulated set). It embeds every frame
  (three conv blocks, then a global *max* pool: the category is a small object on a textured
  background, and averaging over the frame lets the background dominate), and one linear head
  reads each frame's features (frame-based n-way) and their mean over the clip (video-based
  n-way), so both protocols use the same learnt categories. Training sees one random frame of
  each clip per step, shifted by up to 1/8 of the frame and mirrored at random (labels are
  static per clip), with label smoothing 0.1 and a one-cycle learning rate; on the default
  simulated set (~900 single-scene training clips, ~3 scenes per class) its 120 default
  epochs were chosen on held-out training runs (``bench/evaluator_epochs.py``: their top-1
  0.32, 0.25 after 60; chance 1/64), and its accuracy on the test clips is stored with it. It
  is saved as ``model.safetensors`` + ``config.json`` in a run-independent folder, by default
  beside the data (``<data.path>.evaluator/``), together with a fingerprint of the data it
  learnt from (labels and a few frames) and its ``evaluation.evaluator`` settings, so a re-simulated
  dataset or changed settings get a fresh evaluator.
- **Pretrained** (real data): MinD-Video's classifiers loaded by path with ``transformers``,
  ``google/vit-base-patch16-224`` on single frames and
  ``MCG-NJU/videomae-base-finetuned-kinetics`` on clips (their frames resampled to the model's
  ``num_frames``). Nothing is downloaded: the paths are local directories.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from neurocine.data.schema import read_strings, validate
from neurocine.errors import CheckpointError, ConfigError, DataError
from neurocine.fileio import atomic_dir

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
FORMAT = "neurocine-evaluator/1"


class Classifier(Protocol):
    """What the evaluation needs of a classifier."""

    name: str

    def probs(self, videos: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """uint8 ``[N, F, H, W, 3]`` → softmax per frame ``[N, F, C]`` and per clip ``[N, C']``.

        Either is None when the classifier does not offer it (e.g. no video model).
        """


# --- the trained evaluator ---------------------------------------------------------------------


class ClipClassifier(nn.Module):
    """Small CNN over frames; one head on each frame and on the clip's mean frame feature.

    Parameters
    ----------
    n_classes : int
        Output classes (labels 0 … n_classes - 1).
    height, width : int
        Frame size the network sees; other sizes are resized (bilinear) to it.
    channels : int, default=32
        Channels of the first block (doubled in each of the next two).
    """

    def __init__(self, n_classes: int, height: int, width: int, channels: int = 32) -> None:
        super().__init__()
        if n_classes < 2 or height < 4 or width < 4 or channels < 4:
            raise ConfigError(
                f"evaluator: n_classes={n_classes}, size={height}×{width}, width={channels}: "
                "need ≥ 2 classes, frames ≥ 4×4 and ≥ 4 channels"
            )
        self.n_classes, self.height, self.width = int(n_classes), int(height), int(width)
        c = int(channels)

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.ReLU()]

        self.features = nn.Sequential(
            *block(3, c),
            nn.MaxPool2d(2),
            *block(c, 2 * c),
            nn.MaxPool2d(2),
            *block(2 * c, 4 * c),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(4 * c, n_classes)

    def to_input(self, videos: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, F, H, W, 3]`` → float images ``[N·F, 3, height, width]`` in [-1, 1]."""
        if videos.ndim != 5 or videos.shape[-1] != 3:
            raise DataError(f"evaluator: videos {tuple(videos.shape)}, expected [N, F, H, W, 3]")
        n, f = videos.shape[:2]
        x = videos.reshape(n * f, *videos.shape[2:]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if x.shape[-2:] != (self.height, self.width):
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", antialias=True)
        return x

    def logits(self, images: torch.Tensor, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[N·F, 3, h, w]`` (:meth:`to_input`) → frame ``[N, F, C]``, clip ``[N, C]``."""
        feats = self.dropout(self.features(images)).unflatten(0, (-1, n_frames))
        return self.head(feats), self.head(feats.mean(dim=1))

    def forward(self, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``[N, F, H, W, 3]`` → logits per frame ``[N, F, C]`` and per clip ``[N, C]``."""
        return self.logits(self.to_input(videos), videos.shape[1])


def default_dir(data_path: str | Path) -> Path:
    """``<data.path>.evaluator``: the trained evaluator lives beside its dataset."""
    data_path = Path(data_path)
    return data_path.with_name(data_path.name + ".evaluator")


def data_fingerprint(data_path: str | Path) -> str:
    """SHA-1 of the training labels, their scene ids and the first and last clip.

    Unchanged when ``neurocine embed`` rewrites the file; changed when the data are re-simulated.
    """
    digest = hashlib.sha1()
    with h5py.File(data_path, "r") as f:
        group = f["train"]
        for name in ("label", "run"):
            if name in group:
                digest.update(np.ascontiguousarray(group[name][()]).tobytes())
        if "frames" in group and group["frames"].shape[0]:
            digest.update(np.ascontiguousarray(group["frames"][0]).tobytes())
            digest.update(np.ascontiguousarray(group["frames"][-1]).tobytes())
            digest.update(str(group["frames"].shape).encode())
    return digest.hexdigest()


@dataclass
class LabelledClips:
    """Labelled clips of one split (clips that span a scene cut are left out)."""

    frames: np.ndarray  # uint8 [N, F, H, W, 3]
    label: np.ndarray  # int64 [N]
    run: np.ndarray  # int64 [N]
    n_classes: int


def read_labelled_clips(data_path: str | Path, split: str = "train") -> LabelledClips:
    """The labelled, single-scene clips of ``/<split>`` (raises DataError without labels)."""
    summary = validate(data_path)
    info = summary.splits.get(split)
    if info is None or info.frames is None:
        raise DataError(f"{data_path}: /{split}/frames: missing (the evaluator learns from clips)")
    if "label" not in info.optional:
        raise DataError(
            f"{data_path}: /{split}/label: missing; the trained evaluator needs category labels "
            "(real data: set evaluation.image_classifier / video_classifier instead)"
        )
    with h5py.File(data_path, "r") as f:
        label = f[f"{split}/label"][()].astype(np.int64)
        run = f[f"{split}/run"][()].astype(np.int64)
        keep = label >= 0
        if "scene" in f[split]:
            keep &= np.array(["-" not in s for s in read_strings(f[f"{split}/scene"])])
        rows = np.flatnonzero(keep)
        frames = f[f"{split}/frames"][()][rows]
        n_classes = max(int(f[f"{s}/label"][()].max()) + 1 for s in f if "label" in f[s])
    if rows.size == 0:
        raise DataError(f"{data_path}: /{split}: no labelled single-scene clips")
    return LabelledClips(frames, label[rows], run[rows], n_classes)


@dataclass
class EvaluatorReport:
    """What :func:`train_evaluator` did."""

    path: Path
    n_classes: int
    n_train: int
    n_val: int
    val_video_acc: float | None
    val_frame_acc: float | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        acc = (
            f"val accuracy video {self.val_video_acc:.3f}, frame {self.val_frame_acc:.3f} "
            f"(chance {1 / self.n_classes:.3f})"
            if self.val_video_acc is not None
            else "no validation runs"
        )
        lines = [
            f"{self.path}: evaluator of {self.n_classes} classes trained on {self.n_train} clips "
            f"in {self.seconds:.0f} s; {acc} on {self.n_val} clips"
        ]
        if self.extra.get("test_video_acc") is not None:
            lines.append(
                f"  test accuracy video {self.extra['test_video_acc']:.3f}, frame "
                f"{self.extra['test_frame_acc']:.3f} on {self.extra['n_test']} clips"
            )
        return lines


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift a batch by up to 1/8 of its size (reflect padding) and mirror it half the time."""
    h, w = images.shape[-2:]
    ph, pw = max(1, h // 8), max(1, w // 8)
    padded = F.pad(images, (pw, pw, ph, ph), mode="reflect")
    dy = int(torch.randint(0, 2 * ph + 1, (1,), generator=generator))
    dx = int(torch.randint(0, 2 * pw + 1, (1,), generator=generator))
    out = padded[..., dy : dy + h, dx : dx + w]
    if float(torch.rand(1, generator=generator)) < 0.5:
        out = out.flip(-1)
    return out


@torch.no_grad()
def predict_logits(
    model: ClipClassifier, videos: np.ndarray, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame logits ``[N, F, C]`` and clip logits ``[N, C]`` in eval mode, batch by batch."""
    model.eval()
    frame_out, video_out = [], []
    for start in range(0, len(videos), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(videos[start : start + batch_size]))
        f_logits, v_logits = model(chunk)
        frame_out.append(f_logits)
        video_out.append(v_logits)
    return torch.cat(frame_out), torch.cat(video_out)


def _accuracy(model: ClipClassifier, frames: np.ndarray, label: np.ndarray) -> tuple[float, float]:
    f_logits, v_logits = predict_logits(model, frames)
    y = torch.from_numpy(label)
    video = float((v_logits.argmax(1) == y).float().mean())
    frame = float((f_logits.argmax(2) == y[:, None]).float().mean())
    return video, frame


def _train(
    model: ClipClassifier, frames: np.ndarray, label: np.ndarray, eval_cfg: Any, progress: bool
) -> None:
    """AdamW + one-cycle over random single frames of the clips (augmented), in place."""
    generator = torch.Generator().manual_seed(int(eval_cfg.seed))
    batch = max(1, int(eval_cfg.batch_size))
    epochs = max(1, int(eval_cfg.epochs))
    steps_per_epoch = math.ceil(len(label) / batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(eval_cfg.lr), weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=float(eval_cfg.lr), total_steps=epochs * steps_per_epoch
    )
    frames_t = torch.from_numpy(frames)
    label_t = torch.from_numpy(label)
    n_frames = frames_t.shape[1]
    bar = tqdm(total=epochs * steps_per_epoch, desc="evaluator", disable=not progress)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(label_t), generator=generator).split(batch):
            # One random frame per clip and step: the frames of a clip are near duplicates.
            pick = torch.randint(0, n_frames, (len(idx),), generator=generator)
            chosen = frames_t[idx, pick][:, None]
            images = _augment(model.to_input(chosen), generator)
            _, v_logits = model.logits(images, 1)
            y = label_t[idx]
            loss = F.cross_entropy(v_logits, y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()


def fit_classifier(
    clips: LabelledClips, eval_cfg: Any, progress: bool = True
) -> tuple[ClipClassifier, dict[str, Any]]:
    """Train a :class:`ClipClassifier` on ``clips`` (hold out the last ``val_runs`` runs).

    Parameters
    ----------
    clips : LabelledClips
    eval_cfg : EvaluatorConfig or DictConfig
        ``width, epochs, lr, batch_size, val_runs, seed``.
    progress : bool, default=True
        Show a progress bar over the optimisation steps.

    Returns
    -------
    model : ClipClassifier, in eval mode
    info : dict with ``n_train, n_val, val_video_acc, val_frame_acc``
    """
    runs = np.unique(clips.run)
    n_val_runs = int(eval_cfg.val_runs)
    if not 0 <= n_val_runs < len(runs):
        raise ConfigError(
            f"evaluation.evaluator.val_runs={n_val_runs}: the data has {len(runs)} training runs"
        )
    val_mask = np.isin(clips.run, runs[len(runs) - n_val_runs :])
    tr_frames, tr_label = clips.frames[~val_mask], clips.label[~val_mask]
    height, width = clips.frames.shape[2:4]
    # Module init and dropout draw from the global RNG: seed it, and leave the caller's alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(eval_cfg.seed))
        model = ClipClassifier(clips.n_classes, height, width, int(eval_cfg.width))
        _train(model, tr_frames, tr_label, eval_cfg, progress)
    model.eval()
    info: dict[str, Any] = {"n_train": int(len(tr_label)), "n_val": int(val_mask.sum())}
    if val_mask.any():
        video, frame = _accuracy(model, clips.frames[val_mask], clips.label[val_mask])
        info.update(val_video_acc=video, val_frame_acc=frame)
    else:
        info.update(val_video_acc=None, val_frame_acc=None)
    return model, info


def save_evaluator(model: ClipClassifier, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``config.json`` into a temporary folder, then rename it."""
    with atomic_dir(directory) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / WEIGHTS)
        config = {
            "format": FORMAT,
            "n_classes": model.n_classes,
            "height": model.height,
            "width": model.width,
            "channels": model.head.in_features // 4,
            **meta,
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    return Path(directory)


def read_evaluator_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of an evaluator folder (CheckpointError when absent or foreign)."""
    path = Path(directory) / CONFIG
    if not path.is_file() or not (Path(directory) / WEIGHTS).is_file():
        raise CheckpointError(
            f"{directory}: no trained evaluator ({CONFIG} + {WEIGHTS}); "
            "run `neurocine train-evaluator --config …`"
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg})") from exc
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_evaluator(directory: str | Path) -> ClipClassifier:
    """Load a trained :class:`ClipClassifier` (eval mode)."""
    config = read_evaluator_config(directory)
    model = ClipClassifier(
        config["n_classes"], config["height"], config["width"], config["channels"]
    )
    try:
        model.load_state_dict(load_file(Path(directory) / WEIGHTS))
    except (RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{directory}: cannot load the evaluator weights: {first}") from exc
    return model.eval()


def training_recipe(eval_cfg: Any) -> dict[str, Any]:
    """The ``evaluation.evaluator`` settings an evaluator was trained with (saved beside it)."""
    return {
        "width": int(eval_cfg.width),
        "epochs": int(eval_cfg.epochs),
        "lr": float(eval_cfg.lr),
        "batch_size": int(eval_cfg.batch_size),
        "val_runs": int(eval_cfg.val_runs),
        "seed": int(eval_cfg.seed),
    }


def train_evaluator(
    data_path: str | Path,
    eval_cfg: Any,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> EvaluatorReport:
    """Train the simulated-data evaluator on ``data_path`` and save it (``train-evaluator``).

    Parameters
    ----------
    data_path : str or Path
        Subject HDF5 file with ``/train/frames`` and ``/train/label``.
    eval_cfg : EvaluatorConfig or DictConfig
        ``cfg.evaluation.evaluator``.
    out_dir : str or Path, optional
        Where to save; default ``<data_path>.evaluator``.
    progress : bool, default=True
    """
    start = time.perf_counter()
    clips = read_labelled_clips(data_path, "train")
    model, info = fit_classifier(clips, eval_cfg, progress=progress)
    info["test_video_acc"] = info["test_frame_acc"] = None
    if "test" in validate(data_path).splits:
        try:
            test = read_labelled_clips(data_path, "test")
        except DataError:
            test = None
        if test is not None:  # the instrument's accuracy on the clips it will score
            info["test_video_acc"], info["test_frame_acc"] = _accuracy(
                model, test.frames, test.label
            )
            info["n_test"] = int(len(test.label))
    directory = Path(out_dir) if out_dir is not None else default_dir(data_path)
    meta = {
        "data": str(data_path),
        "fingerprint": data_fingerprint(data_path),
        "recipe": training_recipe(eval_cfg),
        **info,
    }
    save_evaluator(model, directory, meta)
    return EvaluatorReport(
        path=directory,
        n_classes=clips.n_classes,
        n_train=info["n_train"],
        n_val=info["n_val"],
        val_video_acc=info["val_video_acc"],
        val_frame_acc=info["val_frame_acc"],
        seconds=time.perf_counter() - start,
        extra={k: info[k] for k in ("test_video_acc", "test_frame_acc", "n_test") if k in info},
    )


class TrainedClassifier:
    """:class:`Classifier` over a trained :class:`ClipClassifier` (softmax outputs)."""

    def __init__(self, model: ClipClassifier, name: str, batch_size: int = 64) -> None:
        self.model, self.name, self.batch_size = model, name, batch_size

    def probs(self, videos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``[N, F, C]`` and clip ``[N, C]`` softmax from one pass over the frames."""
        f_logits, v_logits = predict_logits(self.model, videos, self.batch_size)
        return f_logits.softmax(-1).numpy(), v_logits.softmax(-1).numpy()


def ensure_evaluator(
    data_path: str | Path,
    eval_cfg: Any,
    directory: str | Path | None = None,
    progress: bool = True,
) -> TrainedClassifier:
    """Load the evaluator of ``data_path``; train it first when absent, stale or made otherwise.

    Stale: trained on other data (fingerprint) or with other ``evaluation.evaluator`` settings.
    """
    directory = Path(directory) if directory is not None else default_dir(data_path)
    stale = True
    if (directory / CONFIG).is_file():
        config = read_evaluator_config(directory)
        if config.get("fingerprint") != data_fingerprint(data_path):
            print(f"{directory}: made for other data (fingerprint differs); retraining")
        elif config.get("recipe") != training_recipe(eval_cfg):
            print(f"{directory}: trained with other evaluation.evaluator settings; retraining")
        else:
            stale = False
    if stale:
        for line in train_evaluator(data_path, eval_cfg, directory, progress).lines():
            print(line)
    return TrainedClassifier(load_evaluator(directory), name=f"trained evaluator ({directory})")


# --- pretrained classifiers of real data -------------------------------------------------------


def _load_pretrained(path: str, kind: str):
    from transformers import (
        AutoImageProcessor,
        AutoModelForImageClassification,
        AutoModelForVideoClassification,
    )

    loader = AutoModelForImageClassification if kind == "image" else AutoModelForVideoClassification
    try:
        model = loader.from_pretrained(path, local_files_only=True)
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: cannot load the {kind} classifier offline: {first}"
        ) from exc
    return model.eval(), processor


class PretrainedClassifier:
    """:class:`Classifier` over ``transformers`` image and/or video classifiers (local paths).

    Parameters
    ----------
    image_classifier : str, optional
        Directory of an image classifier (``google/vit-base-patch16-224``): frame-based scores.
    video_classifier : str, optional
        Directory of a video classifier (``MCG-NJU/videomae-base-finetuned-kinetics``):
        video-based scores. A clip's frames are resampled (nearest, evenly spaced) to the
        model's ``num_frames``.
    batch_size : int, default=16
    """

    def __init__(
        self,
        image_classifier: str | None = None,
        video_classifier: str | None = None,
        batch_size: int = 16,
    ) -> None:
        if not image_classifier and not video_classifier:
            raise ConfigError("pretrained classifier: set evaluation.image_classifier and/or …")
        self.batch_size = batch_size
        self.image = _load_pretrained(image_classifier, "image") if image_classifier else None
        self.video = _load_pretrained(video_classifier, "video") if video_classifier else None
        names = [p for p in (image_classifier, video_classifier) if p]
        self.name = "pretrained " + " + ".join(Path(p).name for p in names)

    def probs(self, videos: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Image-classifier softmax per frame and video-classifier softmax per clip."""
        return self.frame_probs(videos), self.video_probs(videos)

    @torch.no_grad()
    def frame_probs(self, videos: np.ndarray) -> np.ndarray | None:
        if self.image is None:
            return None
        model, processor = self.image
        n, f = videos.shape[:2]
        frames = videos.reshape(n * f, *videos.shape[2:])
        out = []
        for start in range(0, len(frames), self.batch_size * f):
            chunk = list(frames[start : start + self.batch_size * f])
            pixels = processor(images=chunk, return_tensors="pt")["pixel_values"]
            out.append(model(pixel_values=pixels).logits.softmax(-1))
        return torch.cat(out).reshape(n, f, -1).numpy()

    @torch.no_grad()
    def video_probs(self, videos: np.ndarray) -> np.ndarray | None:
        if self.video is None:
            return None
        model, processor = self.video
        n_frames = int(getattr(model.config, "num_frames", None) or videos.shape[1])
        pick = np.round(np.linspace(0, videos.shape[1] - 1, n_frames)).astype(int)
        out = []
        for start in range(0, len(videos), self.batch_size):
            clips = [list(v[pick]) for v in videos[start : start + self.batch_size]]
            pixels = processor(clips, return_tensors="pt")["pixel_values"]
            out.append(model(pixel_values=pixels).logits.softmax(-1))
        return torch.cat(out).numpy()


def build_classifier(cfg: Any, progress: bool = True) -> Classifier | None:
    """The classifier that ``cfg.evaluation.classifier`` asks for (None: no n-way metrics).

    ``auto``: the pretrained classifiers when a path is set, else the trained evaluator when the
    data have labels, else none.
    """
    ev = cfg.evaluation
    choice = str(ev.classifier)
    if choice not in ("auto", "trained", "pretrained", "none"):
        raise ConfigError(
            f"evaluation.classifier='{choice}': expected auto, trained, pretrained or none"
        )
    if choice == "none":
        return None
    if choice == "pretrained" or (
        choice == "auto" and (ev.image_classifier or ev.video_classifier)
    ):
        return PretrainedClassifier(ev.image_classifier, ev.video_classifier)
    if choice == "auto":
        summary = validate(cfg.data.path)
        train = summary.splits.get("train")
        if train is None or "label" not in train.optional:
            return None
    return ensure_evaluator(cfg.data.path, ev.evaluator, ev.evaluator_dir, progress=progress)
