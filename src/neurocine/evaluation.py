"""``neurocine evaluate``: score a run's reconstructions beside the baselines (``metrics.json``).

Rows of the table, all scored on the same clips (the reconstructed ones, minus clips that span
a scene cut when the data have scene ids, docs/design.md §10):

- ``neurocine``: the run's reconstructions (``reconstructions.h5`` of ``neurocine reconstruct``).
- ``mean_frame``: every frame is the mean training frame. SSIM rewards blur (the mean image
  alone scores SSIM ≈ 0.6 on the simulated frames), so every SSIM needs this row beside it.
- ``ridge``: ridge regression from the fMRI window to the pixels (:mod:`baselines.pixel_ridge`).
- ``oracle``: the same stage-2 model and seeds, conditioned on the noise-free ``fmri_clean``
  (simulated data only): the ceiling of the simulated benchmark.

Both baselines learn from the DataModule's ``train`` samples (the runs the model trained on).
Metrics per row: SSIM (``evaluation.ssim``: MinD-Video's per-frame scikit-image call by
default), PSNR, n-way top-1 for each ``evaluation.n_ways`` — frame-based (image classifier per
frame) and video-based (one prediction per clip) — under MinD-Video's protocol (any of the
ground truth's top ``k_true`` classes; ``video_50way``) and the strict one (its top-1 class only;
``video_50way_strict``), the CLIP image-embedding cosine similarity to the ground truth, and
CLIP-pcc, the cosine of the CLIP embeddings of adjacent frames (``clip_pcc``; all frame pairs:
``clip_pcc_all``), which the ``ground_truth`` row reports too. On cc2017 the table ends with the
published results beside the run (:mod:`neurocine.analysis.published`, docs/published.md).
The classifier is the trained evaluator on simulated data (:mod:`neurocine.evaluator`) or
MinD-Video's pretrained ViT / VideoMAE loaded by path on real data.

Where things are: ``evaluate_run(path)`` accepts a stage-2 run directory whose reconstructions
are in ``<run>/samples/`` (``neurocine reconstruct --run RUN --out RUN/samples``, what the demo
does), or the reconstruction folder itself (its ``reconstructions.h5`` names the run). It
writes ``metrics.json`` and ``metrics.md`` (the markdown table) into the run directory, or into
``out_dir``. The oracle's samples are cached as ``oracle.h5`` beside the reconstructions.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from neurocine.analysis.published import CC2017_MODULES, NWAY_MINDVIDEO, published_table
from neurocine.analysis.runs import (
    ORACLE,
    RECONSTRUCTIONS,
    SAMPLES_DIR,
    read_reconstructions,
)
from neurocine.config import load_saved_config, merge_layer, parse_overrides
from neurocine.data.schema import atomic_path, read_strings
from neurocine.errors import CheckpointError, ConfigError, DataError, NeuroCineError
from neurocine.metrics import (
    clip_pcc,
    frame_based_n_way_per_video,
    n_way_chance,
    scene_mask,
    video_based_n_way_per_video,
    video_psnr_per_video,
    video_ssim_per_video,
)

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
BASELINES = ("mean_frame", "ridge", "oracle")
GROUND_TRUTH = "ground_truth"
LABELS = {
    "neurocine": "NeuroCine",
    "mean_frame": "mean training frame",
    "ridge": "ridge fMRI → pixels",
    "oracle": "oracle (fmri_clean)",
    GROUND_TRUTH: "ground truth (CLIP-pcc only)",
}
# n-way protocols: key suffix → true classes (None: evaluation.k_true, MinD-Video's 3).
NWAY_PROTOCOLS = {"": None, "_strict": 1}


# --- finding the inputs ------------------------------------------------------------------------


@dataclass
class RunSamples:
    """Where a run's reconstructions and its config are."""

    run_dir: Path
    samples_dir: Path
    h5_path: Path


def find_reconstructions(path: str | Path) -> RunSamples:
    """Resolve a run directory or a reconstruction folder (module docstring).

    Raises
    ------
    CheckpointError
        When there is no ``reconstructions.h5`` (with the command that makes it).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run directory")
    if (path / RECONSTRUCTIONS).is_file():
        with h5py.File(path / RECONSTRUCTIONS, "r") as f:
            run = f.attrs.get("run")
        if run is None or not (Path(str(run)) / "config.yaml").is_file():
            raise CheckpointError(
                f"{path / RECONSTRUCTIONS}: its 'run' attribute {run!r} is not a run directory"
            )
        return RunSamples(Path(str(run)), path, path / RECONSTRUCTIONS)
    if not (path / "config.yaml").is_file():
        raise CheckpointError(f"{path}: no config.yaml and no {RECONSTRUCTIONS}: not a run")
    h5_path = path / SAMPLES_DIR / RECONSTRUCTIONS
    if not h5_path.is_file() and OmegaConf.load(path / "config.yaml").get("stage") == "stage1":
        raise CheckpointError(
            f"{path}: a stage-1 run has no reconstructions: train stage 2 on its encoder "
            f"(stage2.encoder_ckpt={path / 'encoder'}), then reconstruct and evaluate that run"
        )
    if not h5_path.is_file():
        raise CheckpointError(
            f"{path}: no reconstructions ({SAMPLES_DIR}/{RECONSTRUCTIONS}); make them first with "
            f"`neurocine reconstruct --run {path} --out {path / SAMPLES_DIR}`"
        )
    return RunSamples(path.resolve(), path / SAMPLES_DIR, h5_path)


# --- scoring -----------------------------------------------------------------------------------


@dataclass
class Scorer:
    """Scores videos against one ground truth; ground-truth features are computed once.

    Parameters
    ----------
    truth : uint8 ndarray of shape (N, F, H, W, 3)
    classifier : neurocine.evaluator.Classifier, optional
        None: no n-way metrics.
    clip : tuple (model, preprocess, frame_reduce), optional
        CLIP for the embedding similarity and CLIP-pcc; None: skipped.
    n_ways, num_trials, k_true, seed
        The n-way protocol (docs/design.md §10); each (row, metric) draws from a generator seeded
        with ``seed``, so a row's figure does not depend on which other rows are scored. Every
        n-way is scored twice: with ``k_true`` true classes (MinD-Video's) and with 1 (strict,
        key suffix ``_strict``).
    ssim : str, default="mindvideo"
        SSIM variant (:data:`neurocine.metrics.ssim.VARIANTS`).
    """

    truth: np.ndarray
    classifier: Any = None
    clip: tuple | None = None
    n_ways: Sequence[int] = (2, 50)
    num_trials: int = 100
    k_true: int = 3
    seed: int = 0
    ssim: str = "mindvideo"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._gt_frame = self._gt_video = self._gt_clip = None
        self.ways: dict[str, list[int]] = {"frame": [], "video": []}
        if self.classifier is not None:
            self._gt_frame, self._gt_video = self.classifier.probs(self.truth)
            for kind, probs in (("frame", self._gt_frame), ("video", self._gt_video)):
                if probs is None:
                    continue
                n_classes = probs.shape[-1]
                for n in self.n_ways:
                    if 2 <= n and n - 1 <= n_classes - self.k_true:
                        self.ways[kind].append(int(n))
                    else:
                        self.notes.append(
                            f"{kind}-based {n}-way skipped: the classifier has {n_classes} "
                            f"classes, {n}-way needs ≥ {n - 1 + self.k_true}"
                        )
        if self.clip is not None:
            self._gt_frames = self._clip_frames(self.truth)
            self._gt_clip = self._clip_reduce(self._gt_frames)

    def _clip_frames(self, videos: np.ndarray, batch: int = 32) -> torch.Tensor:
        """CLIP embedding of every frame ``[N, F, D]``, a few clips at a time."""
        from neurocine.models.clip_targets import frame_embeddings

        model, preprocess, _ = self.clip
        chunks = [
            frame_embeddings(model, preprocess, videos[i : i + batch])
            for i in range(0, len(videos), batch)
        ]
        return torch.cat(chunks)

    def _clip_reduce(self, frames: torch.Tensor) -> torch.Tensor:
        from neurocine.models.clip_targets import reduce_frame_embeddings

        return reduce_frame_embeddings(frames, self.clip[2])

    def _clip_pcc(self, frames: torch.Tensor) -> dict[str, np.ndarray]:
        if frames.shape[1] < 2:
            return {}
        return {
            "clip_pcc": clip_pcc(frames, "adjacent").numpy(),
            "clip_pcc_all": clip_pcc(frames, "all").numpy(),
        }

    def truth_per_clip(self) -> dict[str, np.ndarray]:
        """The ground truth's own CLIP-pcc per clip (the ceiling of a faithful reconstruction)."""
        return self._clip_pcc(self._gt_frames) if self.clip is not None else {}

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed))

    def per_clip(self, pred: np.ndarray) -> dict[str, np.ndarray]:
        """Each clip's SSIM, PSNR and n-way scores of ``pred`` (uint8, the shape of ``truth``).

        Every row's n-way trials use the same random numbers (one seed): common random numbers,
        so two rows can be compared clip by clip (``paired_differences``).
        """
        if pred.shape != self.truth.shape:
            raise DataError(f"predictions {pred.shape} and ground truth {self.truth.shape} differ")
        out = {
            "ssim": video_ssim_per_video(pred, self.truth, self.ssim),
            "psnr": video_psnr_per_video(pred, self.truth),
        }
        if self.classifier is not None:
            frame_probs, video_probs = self.classifier.probs(pred)
            for suffix, k_true in NWAY_PROTOCOLS.items():
                k = self.k_true if k_true is None else k_true
                for n in self.ways["frame"]:
                    out[f"frame_{n}way{suffix}"] = frame_based_n_way_per_video(
                        frame_probs, self._gt_frame, n, self.num_trials, 1, k, self._generator()
                    ).numpy()
                for n in self.ways["video"]:
                    out[f"video_{n}way{suffix}"] = video_based_n_way_per_video(
                        video_probs, self._gt_video, n, self.num_trials, 1, k, self._generator()
                    ).numpy()
        if self.clip is not None:
            frames = self._clip_frames(pred)
            out["clip_similarity"] = (
                F.cosine_similarity(self._clip_reduce(frames), self._gt_clip, dim=1)
                .double()
                .numpy()
            )
            out.update(self._clip_pcc(frames))
        return out

    @staticmethod
    def summarize(per_clip: dict[str, np.ndarray]) -> dict[str, float]:
        """Mean and ``*_std`` over clips of each per-clip metric."""
        out = {}
        with np.errstate(invalid="ignore"):  # identical clips: PSNR inf, its spread undefined
            for key, values in per_clip.items():
                values = np.asarray(values, dtype=np.float64)
                out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
        return out

    def score(self, pred: np.ndarray) -> dict[str, float]:
        """All metrics of ``pred`` (uint8, the shape of ``truth``); ``*_std`` over clips."""
        return self.summarize(self.per_clip(pred))


def paired_differences(
    per_clip: dict[str, dict[str, np.ndarray]],
    model: str = "neurocine",
    groups: Sequence[str] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``model`` minus each other row, clip by clip: ``{row: {metric: {diff, se, n, groups}}}``.

    The standard error of the paired mean difference is what says whether ``model`` beats a
    baseline on these clips (the per-row spreads are much wider: both rows find the same clips
    easy or hard). Clips of one scene are not independent (overlapping windows of the same
    video), so with ``groups`` (a scene id per clip) it is the cluster-robust standard error
    over scenes, ``sqrt(G / (G - 1) · Σ_g (Σ_{i∈g} (d_i − d̄))²) / N``; without, the plain
    ``std(d, ddof=1) / sqrt(N)``. Clips whose difference is not finite (PSNR of a perfect
    clip) are left out; ``n`` says how many were used.
    """
    ours = per_clip[model]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row, metrics in per_clip.items():
        if row == model:
            continue
        out[row] = {}
        for key in (k for k in ours if k in metrics):
            a, b = np.asarray(ours[key], np.float64), np.asarray(metrics[key], np.float64)
            if a.shape != b.shape:
                raise DataError(f"per-clip {key}: {model} has {a.shape} clips, {row} {b.shape}")
            finite = np.isfinite(a - b)
            d = (a - b)[finite]
            g = np.arange(len(a))[finite] if groups is None else np.asarray(groups)[finite]
            labels, cluster = np.unique(g, return_inverse=True)
            if len(labels) < 2:
                continue
            sums = np.bincount(cluster, weights=d - d.mean())
            se = math.sqrt(len(labels) / (len(labels) - 1) * float((sums**2).sum())) / len(d)
            out[row][key] = {
                "diff": float(d.mean()),
                "se": se,
                "n": int(len(d)),
                "groups": int(len(labels)),
            }
    return out


def paired_note(result: dict[str, Any], model: str = "neurocine") -> str | None:
    """One line: ``model`` minus each baseline on the largest n-way (video, frame) ± SE."""
    paired = result.get("paired") or {}
    keys = [k for k, _ in metric_columns(result["rows"]) if k.endswith("way")]
    largest = [
        max((k for k in keys if k.startswith(kind)), key=lambda k: int(k.split("_")[1][:-3]))
        for kind in ("video", "frame")
        if any(k.startswith(kind) for k in keys)
    ]
    labels = result.get("labels", LABELS)
    names = {key: key.replace("_", " ").replace("way", "-way") for key in largest}
    parts = [
        f"{labels.get(row, row)}: "
        + ", ".join(
            f"{names[key]} {d[key]['diff']:+.3f} ± {d[key]['se']:.3f}"
            for key in largest
            if key in d
        )
        for row, d in paired.items()
        if any(key in d for key in largest)
    ]
    if not parts:
        return None
    first = next(iter(next(iter(paired.values())).values()), {})
    over = f" over {first['groups']} scenes" if first.get("groups", 0) < first.get("n", 0) else ""
    return (
        f"{labels.get(model, model)} minus each row, paired over the same clips and n-way draws "
        f"(mean ± standard error{over}): " + "; ".join(parts)
    )


def metric_columns(rows: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
    """``(key, header)`` of the table's columns, in order, for the metrics any row has."""
    keys = {k for metrics in rows.values() for k in metrics}
    columns = [("ssim", "SSIM ↑"), ("psnr", "PSNR dB ↑")]
    for kind in ("frame", "video"):
        ways = sorted(
            int(k.split("_")[1][:-3])
            for k in keys
            if k.startswith(f"{kind}_") and k.endswith("way")
        )
        for n in ways:
            columns += [(f"{kind}_{n}way", f"{n}-way {kind} ↑")]
            columns += [(f"{kind}_{n}way_strict", f"{n}-way {kind} strict ↑")]
    columns += [
        ("clip_similarity", "CLIP sim ↑"),
        ("clip_pcc", "CLIP-pcc"),
        ("clip_pcc_all", "CLIP-pcc all pairs"),
    ]
    return [(k, h) for k, h in columns if k in keys]


def markdown_table(result: dict[str, Any]) -> str:
    """The metrics table of a ``metrics.json`` dict, one row per model/baseline, plus notes."""
    rows = result["rows"]
    columns = metric_columns(rows)
    lines = [
        "| | " + " | ".join(h for _, h in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, metrics in rows.items():
        cells = []
        for key, _ in columns:
            value = metrics.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("–")
            elif key == "psnr":
                cells.append(f"{value:.2f}")
            else:
                cells.append(f"{value:.3f}")
        lines.append(
            f"| {result.get('labels', LABELS).get(name, name)} | " + " | ".join(cells) + " |"
        )
    chance = result.get("chance") or {}
    notes = []
    if chance:
        parts = ", ".join(f"{n}-way {v:.3f}" for n, v in chance.items())
        strict = ", ".join(f"{n}-way {v:.3f}" for n, v in result.get("chance_strict", {}).items())
        notes.append(
            f"n-way chance, MinD-Video's protocol (a trial counts when any of the ground truth's "
            f"top {result.get('k_true', 3)} classes wins): {parts}; strict (its top-1 class "
            f"only): {strict}"
        )
    notes.append(
        f"{result['n_clips']} {result['split']} clips scored "
        f"({result['n_excluded_scene_cut']} spanning a scene cut left out); "
        f"classifier: {result.get('classifier') or 'none'}; CLIP: {result.get('clip') or 'none'}"
    )
    if any("clip_pcc" in m for m in rows.values()):
        notes.append(
            f"CLIP-pcc: mean cosine of the CLIP image embeddings ({result.get('clip')}) of "
            "adjacent frames (NeuroClips); all pairs: of every two frames (NEURONS); a still "
            "video scores 1, so read it beside the ground truth's and the mean frame's"
        )
    if result.get("ssim_variant", "mindvideo") != "mindvideo":
        notes.append(f"SSIM: the {result['ssim_variant']} variant (evaluation.ssim)")
    paired = paired_note(result)
    if paired:
        notes.append(paired)
    notes += result.get("notes", [])
    table = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if result.get("data_module") in CC2017_MODULES and "neurocine" in rows:
        label = result.get("labels", LABELS).get("neurocine", "neurocine")
        table += "\n" + published_table(label, rows["neurocine"], result.get("protocol", {}))
    return table


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """``{"neurocine/ssim": …, "oracle/video_50way": …}`` from a ``metrics.json`` dict."""
    return {f"{row}/{k}": v for row, metrics in result["rows"].items() for k, v in metrics.items()}


# --- baselines and the oracle ------------------------------------------------------------------


def _oracle(
    samples: RunSamples,
    cfg: DictConfig,
    fmri_clean: np.ndarray,
    rows: np.ndarray,
    progress: bool,
    ridge: Callable[[], Any],
) -> np.ndarray:
    """Stage 2 on ``fmri_clean``, sampled as the reconstructions were (``cfg.sampling``: their
    seeds, steps and start — with ``init=ridge`` the ridge decoding of ``fmri_clean``); cached
    in ``oracle.h5``. ``ridge`` returns the fitted pixel ridge (shared with the ridge row)."""
    from neurocine.reconstruct import (
        load_run,
        low_level_decoder,
        sample_clips,
        sampling_attrs,
        write_reconstructions,
    )

    cache = samples.samples_dir / ORACLE
    sampling = cfg.sampling
    key = sampling_attrs(sampling)
    if cache.is_file():
        frames, index, attrs = read_reconstructions(cache)
        if np.array_equal(index, rows) and all(attrs.get(k) == v for k, v in key.items()):
            return frames
    _, decoder = load_run(samples.run_dir)
    decoder = decoder.eval()
    low_level = low_level_decoder(sampling, ridge)
    batch = max(1, int(sampling.batch_size))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), unit="video", desc="oracle (fmri_clean)")
    out = []
    for start in range(0, len(rows), batch):
        chunk_rows = rows[start : start + batch]
        fmri = torch.from_numpy(fmri_clean[start : start + batch])
        out.append(sample_clips(decoder, fmri, chunk_rows.tolist(), sampling, low_level))
        if bar is not None:
            bar.update(len(chunk_rows))
    if bar is not None:
        bar.close()
    frames = np.concatenate(out)
    write_reconstructions(cache, frames, rows, {**key, "run": str(samples.run_dir)})
    return frames


def baseline_predictions(
    names: Sequence[str],
    fmri: np.ndarray,
    n_frames: int,
    train: Callable[[], tuple[np.ndarray, np.ndarray]],
    ridge: Callable[[], Any],
    oracle=None,
    notes: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Predictions of each named baseline for the scored clips (``fmri: [N, W, V]``).

    ``train`` returns the train samples' fMRI windows and clips, ``ridge`` the pixel ridge fitted
    on them (both called only when a row needs them; the caller caches them, so the oracle's
    ridge start reuses the same fit). ``oracle`` is a zero-argument callable returning the
    oracle's videos, or None when the data have no ``fmri_clean`` (then the row is left out
    with a note).
    """
    from neurocine.baselines.mean_frame import MeanFrame

    notes = notes if notes is not None else []
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"evaluation.baselines: unknown {unknown}; expected some of {BASELINES}")
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "mean_frame":
            out[name] = MeanFrame().fit(train()[1]).predict(len(fmri), n_frames)
        elif name == "ridge":
            out[name] = ridge().predict(fmri)
        elif name == "oracle":
            if oracle is None:
                notes.append("oracle skipped: the data have no fmri_clean (simulated data only)")
                continue
            out[name] = oracle()
    return out


# --- the command -------------------------------------------------------------------------------


def _finite(value: Any) -> Any:
    """Strict JSON: non-finite floats (PSNR of identical clips) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(data), indent=2, allow_nan=False))


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _load_clip(cfg: DictConfig, notes: list[str]) -> tuple[tuple | None, str | None]:
    """The CLIP of the CLIP metrics: ``evaluation.clip`` (a preset name or a local directory,
    e.g. CLIP ViT-L/14 on real data) or, when None, the run's ``clip``."""
    if not cfg.evaluation.clip_similarity:
        return None, None
    from neurocine.models.clip_targets import LOADERS, describe_clip, effective_preset, load_clip

    clip_cfg = cfg.clip
    choice = cfg.evaluation.clip
    if choice is not None:
        preset = str(choice) if str(choice) in LOADERS else "pretrained"
        source = None if preset == str(choice) else str(choice)
        clip_cfg = OmegaConf.merge(cfg.clip, {"preset": preset, "pretrained": source})
    try:
        model, preprocess, _ = load_clip(clip_cfg)
    except NeuroCineError as exc:
        notes.append(f"CLIP similarity and CLIP-pcc skipped: {exc}")
        return None, None
    name = describe_clip(clip_cfg)
    if effective_preset(clip_cfg) == "random":
        notes.append(f"CLIP {name} is randomly initialised: its similarity is not semantic")
    return (model, preprocess, str(clip_cfg.frame_reduce)), name


@dataclass
class Evaluation:
    """What :func:`evaluate_run` wrote."""

    result: dict[str, Any]
    json_path: Path
    md_path: Path
    table: str


def evaluate_run(
    path: str | Path,
    overrides: Sequence[str] = (),
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> Evaluation:
    """Score a run's reconstructions and the baselines; write ``metrics.json`` and ``metrics.md``.

    Parameters
    ----------
    path : str or Path
        A stage-2 run directory with ``samples/reconstructions.h5``, or a reconstruction folder.
    overrides : sequence of str
        ``key=value`` overrides of the run's config (``evaluation.baselines=[mean_frame]``,
        ``evaluation.image_classifier=/models/vit``, ``data.path=…``).
    out_dir : str or Path, optional
        Where to write; default the run directory.
    progress : bool, default=True
    """
    from neurocine.data.datamodule import FMRIVideoDataModule
    from neurocine.evaluator import build_classifier
    from neurocine.reconstruct import fit_pixel_ridge, sampling_attrs

    started = time.perf_counter()
    samples = find_reconstructions(path)
    cfg = load_saved_config(samples.run_dir / "config.yaml")
    cfg = merge_layer(cfg, parse_overrides(overrides), "overrides")
    ev = cfg.evaluation
    pred, rows, attrs = read_reconstructions(samples.h5_path)
    split = str(attrs.get("split", ev.split))
    # The oracle is sampled as the reconstructions were (`neurocine reconstruct … key=value`
    # may have changed the run's sampling); files from before a setting existed keep the run's.
    recorded = {k: attrs[k] for k in sampling_attrs(cfg.sampling) if k in attrs}
    recorded.setdefault("uint8", "round")  # frames written before sampling.uint8 were rounded
    cfg.sampling = OmegaConf.merge(cfg.sampling, recorded)
    if ev.max_clips is not None:
        if int(ev.max_clips) < 1:
            raise ConfigError(f"evaluation.max_clips={ev.max_clips}: must be ≥ 1")
        pred, rows = pred[: int(ev.max_clips)], rows[: int(ev.max_clips)]
    with h5py.File(cfg.data.path, "r") as f:
        group = f[str(attrs.get("h5_group", "train" if split == "val" else split))]
        has_clean = "fmri_clean" in group
        scenes = read_strings(group["scene"], np.sort(rows)) if "scene" in group else None
    want_oracle = "oracle" in ev.baselines and has_clean
    datamodule = FMRIVideoDataModule(cfg, read_frames=True, read_clean=want_oracle, augment=False)
    datamodule.setup("test")
    if split not in datamodule.datasets:
        raise DataError(f"{cfg.data.path}: no '{split}' samples to pair the reconstructions with")
    dataset = datamodule.datasets[split]
    position = {int(r): i for i, r in enumerate(dataset.index.clip_rows)}
    missing = [int(r) for r in rows if int(r) not in position]
    if missing:
        raise DataError(
            f"{samples.h5_path}: clip rows {missing[:5]} have no {split} sample in "
            f"{cfg.data.path} (was it reconstructed from other data?)"
        )
    batch = dataset.__getitems__([position[int(r)] for r in rows])
    truth = batch["frames"].numpy()
    if truth.shape != pred.shape:
        raise DataError(
            f"{samples.h5_path}: reconstructions {pred.shape} vs ground truth {truth.shape}"
        )
    keep = np.ones(len(rows), dtype=bool)
    clip_scenes = None
    if scenes is not None:
        by_row = dict(zip(np.sort(rows).tolist(), scenes, strict=True))
        keep = scene_mask([by_row[int(r)] for r in rows])
        clip_scenes = [str(by_row[int(r)]) for r, k in zip(rows, keep, strict=True) if k]
    if not keep.any():
        raise DataError(f"{samples.h5_path}: every reconstructed clip spans a scene cut")
    notes: list[str] = []
    oracle = None
    train = functools.cache(datamodule.train_arrays)
    ridge = functools.cache(lambda: fit_pixel_ridge(cfg, *train()))  # the row and the oracle's
    if want_oracle:
        clean = batch["fmri_clean"].numpy()

        def oracle() -> np.ndarray:
            return _oracle(samples, cfg, clean, rows, progress, ridge)

    predictions = {"neurocine": pred}
    predictions.update(
        baseline_predictions(
            list(ev.baselines), batch["fmri"].numpy(), truth.shape[1], train, ridge, oracle, notes
        )
    )
    classifier = build_classifier(cfg, progress=progress)
    clip, clip_name = _load_clip(cfg, notes)
    scorer = Scorer(
        truth[keep],
        classifier=classifier,
        clip=clip,
        n_ways=list(ev.n_ways),
        num_trials=int(ev.num_trials),
        k_true=int(ev.k_true),
        seed=int(ev.seed),
        ssim=str(ev.ssim),
        notes=notes,
    )
    per_clip = {name: scorer.per_clip(videos[keep]) for name, videos in predictions.items()}
    scored = {name: scorer.summarize(v) for name, v in per_clip.items()}
    truth_pcc = scorer.truth_per_clip()
    if truth_pcc:
        scored[GROUND_TRUTH] = scorer.summarize(truth_pcc)
    ways = sorted(set(scorer.ways["frame"]) | set(scorer.ways["video"]))
    result = {
        "run": str(samples.run_dir),
        "reconstructions": str(samples.h5_path),
        "data": str(cfg.data.path),
        "split": split,
        "n_reconstructed": int(len(rows)),
        "n_clips": int(keep.sum()),
        "n_excluded_scene_cut": int((~keep).sum()),
        "classifier": getattr(classifier, "name", None),
        "clip": clip_name,
        "data_module": cfg.get("data_module"),
        "ssim_variant": str(ev.ssim),
        "k_true": int(ev.k_true),
        "num_trials": int(ev.num_trials),
        "chance": {str(n): n_way_chance(n, int(ev.k_true)) for n in ways},
        "chance_strict": {str(n): n_way_chance(n, 1) for n in ways},
        "protocol": {
            "ssim": str(ev.ssim),
            "uint8": str(attrs.get("uint8", "round")),
            "nway": NWAY_MINDVIDEO if int(ev.k_true) == 3 else f"top-{int(ev.k_true)} true classes",
            "clip_pcc": f"adjacent frames, CLIP {clip_name}",
        },
        "labels": {k: LABELS.get(k, k) for k in scored},
        "rows": scored,
        "paired": paired_differences(per_clip, groups=clip_scenes)
        if "neurocine" in per_clip
        else {},
        "clip_rows": [int(r) for r in np.asarray(rows)[keep]],
        "clip_scenes": clip_scenes,
        "per_clip": {name: {k: v.tolist() for k, v in m.items()} for name, m in per_clip.items()},
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 2),
    }
    out = Path(out_dir) if out_dir is not None else samples.run_dir
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(result)
    _write_json(out / METRICS_JSON, result)
    _write_text(out / METRICS_MD, table)
    return Evaluation(result, out / METRICS_JSON, out / METRICS_MD, table)
