"""``evaluate_run``: pair a run's reconstructions with their ground truth, score every row and
write the report (:mod:`neurocine.evaluation`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from omegaconf import DictConfig, OmegaConf

from neurocine.analysis.published import NWAY_MINDVIDEO
from neurocine.analysis.runs import read_reconstructions
from neurocine.config import check_config, load_run_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.data.schema import read_strings
from neurocine.errors import ConfigError, DataError
from neurocine.evaluation.baselines import evaluation_baselines
from neurocine.evaluation.inputs import PairedClips, RunSamples, find_reconstructions
from neurocine.evaluation.report import GROUND_TRUTH, LABELS, write_report
from neurocine.evaluation.scoring import Scorer, scoring_clip
from neurocine.evaluation.statistics import paired_differences
from neurocine.evaluator import build_classifier
from neurocine.metrics import n_way_chance, scene_mask
from neurocine.reconstruct import sampling_attrs


@dataclass
class Evaluation:
    """What :func:`evaluate_run` wrote."""

    result: dict[str, Any]
    json_path: Path
    md_path: Path
    table: str


def load_inputs(
    samples: RunSamples, overrides: Sequence[str]
) -> tuple[DictConfig, np.ndarray, np.ndarray, dict[str, Any]]:
    """The run's config (with ``overrides``), and the reconstructions ``(frames, rows, attrs)``.

    The config's sampling settings become those the reconstructions were made with, so the
    oracle is sampled as they were (``neurocine reconstruct … key=value`` may have changed the
    run's); files from before a setting existed keep the run's. ``evaluation.split`` becomes
    the split reconstructed, and the config is checked again (an evaluator that learnt from
    the val runs cannot score them). ``evaluation.max_clips`` cuts the clips.
    """
    cfg = load_run_config(samples.run_dir / "config.yaml", overrides)
    pred, rows, attrs = read_reconstructions(samples.h5_path)
    recorded = {k: attrs[k] for k in sampling_attrs(cfg.sampling) if k in attrs}
    recorded.setdefault("uint8", "round")  # frames written before sampling.uint8 were rounded
    cfg.sampling = OmegaConf.merge(cfg.sampling, recorded)
    if "split" in attrs:  # the split scored is the one reconstructed: its rules apply
        cfg.evaluation.split = str(attrs["split"])
        check_config(cfg)
    max_clips = cfg.evaluation.max_clips
    if max_clips is not None:
        if int(max_clips) < 1:
            raise ConfigError(f"evaluation.max_clips={max_clips}: must be ≥ 1")
        pred, rows = pred[: int(max_clips)], rows[: int(max_clips)]
    return cfg, pred, rows, attrs


def pair_with_truth(
    samples: RunSamples,
    cfg: DictConfig,
    pred: np.ndarray,
    rows: np.ndarray,
    attrs: dict[str, Any],
) -> tuple[PairedClips, FMRIVideoDataModule]:
    """Look the reconstructed clip rows up in the DataModule's split (and their scene ids).

    Raises
    ------
    DataError
        When a row has no sample in ``cfg.data.path``, the shapes differ, or every clip spans
        a scene cut.
    """
    split = str(attrs.get("split", cfg.evaluation.split))
    with h5py.File(cfg.data.path, "r") as f:
        group = f[str(attrs.get("h5_group", "train" if split == "val" else split))]
        has_clean = "fmri_clean" in group
        scenes = read_strings(group["scene"], np.sort(rows)) if "scene" in group else None
    read_clean = "oracle" in cfg.evaluation.baselines and has_clean
    datamodule = FMRIVideoDataModule(cfg, read_frames=True, read_clean=read_clean, augment=False)
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
    clean = batch["fmri_clean"].numpy() if read_clean else None
    clip_image = batch["clip_image"].numpy() if "clip_image" in batch else None
    clips = PairedClips(
        split, pred, rows, truth, batch["fmri"].numpy(), clean, clip_image, keep, clip_scenes
    )
    return clips, datamodule


def score_rows(
    cfg: DictConfig,
    clips: PairedClips,
    predictions: dict[str, np.ndarray],
    progress: bool,
    notes: list[str],
) -> dict[str, Any]:
    """Score each row's kept clips: the scoring part of ``metrics.json`` (rows, paired, …)."""
    ev = cfg.evaluation
    classifier = build_classifier(cfg, progress=progress)
    clip, clip_name = scoring_clip(cfg, notes)
    keep = clips.keep
    scorer = Scorer(
        clips.truth[keep],
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
    paired = paired_differences(per_clip, groups=clips.scenes) if "neurocine" in per_clip else {}
    return {
        "classifier": getattr(classifier, "name", None),
        "clip": clip_name,
        "data_module": cfg.get("data_module"),
        "ssim_variant": str(ev.ssim),
        "k_true": int(ev.k_true),
        "num_trials": int(ev.num_trials),
        "chance": {str(n): n_way_chance(n, int(ev.k_true)) for n in ways},
        "chance_strict": {str(n): n_way_chance(n, 1) for n in ways},
        "labels": {k: LABELS.get(k, k) for k in scored},
        "rows": scored,
        "paired": paired,
        "per_clip": per_clip,
    }


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
    started = time.perf_counter()
    samples = find_reconstructions(path)
    cfg, pred, rows, attrs = load_inputs(samples, overrides)
    clips, datamodule = pair_with_truth(samples, cfg, pred, rows, attrs)
    notes: list[str] = []
    predictions = {"neurocine": clips.pred}
    predictions.update(evaluation_baselines(samples, cfg, datamodule, clips, progress, notes))
    scores = score_rows(cfg, clips, predictions, progress, notes)
    per_clip = scores.pop("per_clip")
    k_true = int(cfg.evaluation.k_true)
    scores["protocol"] = {  # what the published table compares (docs/published.md)
        "ssim": str(cfg.evaluation.ssim),
        "uint8": str(attrs.get("uint8", "round")),
        "nway": NWAY_MINDVIDEO if k_true == 3 else f"top-{k_true} true classes",
        "clip_pcc": f"adjacent frames, CLIP {scores['clip']}",
    }
    result = {
        "run": str(samples.run_dir),
        "reconstructions": str(samples.h5_path),
        "data": str(cfg.data.path),
        "split": clips.split,
        "n_reconstructed": int(len(clips.rows)),
        "n_clips": int(clips.keep.sum()),
        "n_excluded_scene_cut": int((~clips.keep).sum()),
        **scores,
        "clip_rows": [int(r) for r in np.asarray(clips.rows)[clips.keep]],
        "clip_scenes": clips.scenes,
        "per_clip": {name: {k: v.tolist() for k, v in m.items()} for name, m in per_clip.items()},
        "notes": notes,
        "seconds": round(time.perf_counter() - started, 2),
    }
    out = Path(out_dir) if out_dir is not None else samples.run_dir
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path, table = write_report(out, result)
    return Evaluation(result, json_path, md_path, table)
