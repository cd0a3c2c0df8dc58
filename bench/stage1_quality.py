"""Stage 1 vs the ridge baseline on the demo dataset, with the augmentation ablations.

Trains ``experiments/stage1.yaml`` (the ``make train-stage1`` recipe) three times — as is,
with ``data.augment.mask_ratio=0`` and with ``data.augment.interp_ratio=0`` — each in its own
process (so peak RSS is per run), fits the ridge baseline on the same windows and scores every
model with the same retrieval metrics on the validation runs and the test split: 50-way top-1
and top-5 against the CLIP image targets (chance 2 % and 10 %). Stage 1 is scored with the
encoder exported at the end of training (no checkpoint selection on validation).

Writes ``bench/results/stage1_quality.json`` (its section of ``docs/benchmarks.md``).

    python -m bench.stage1_quality [--data data/sim/subject1.h5] [--seeds 0] [key=value …]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "stage1.yaml"
VARIANTS = {
    "stage 1": [],
    "stage 1, mask_ratio=0": ["data.augment.mask_ratio=0"],
    "stage 1, interp_ratio=0": ["data.augment.interp_ratio=0"],
}


def ensure_data(path: Path, overrides: list[str]) -> None:
    """Simulate the demo subject and embed it with the experiment's CLIP, when missing."""
    from omegaconf import OmegaConf

    from neurocine.config import SimulationConfig, load_config
    from neurocine.data.simulate import simulate_subject
    from neurocine.embedding import embed_subject

    if not path.is_file():
        simulate_subject(OmegaConf.structured(SimulationConfig), path)
    embed_subject(path, load_config(EXPERIMENT, overrides), progress=False)


def train_one(overrides: list[str], out: Path) -> None:
    """Child process: train once, evaluate the exported encoder, write a JSON record."""
    from neurocine.baselines.ridge import collect_split, retrieval_scores
    from neurocine.config import load_config
    from neurocine.data.datamodule import FMRIVideoDataModule
    from neurocine.models.fmri_encoder import FMRIEncoder
    from neurocine.training import fit

    cfg = load_config(EXPERIMENT, overrides)
    start = time.perf_counter()
    run_dir = fit(cfg)
    wall = time.perf_counter() - start
    with open(run_dir / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["train/samples_per_s"]) for r in rows if r.get("train/samples_per_s")]
    vals = [float(r["val/top1_50way"]) for r in rows if r.get("val/top1_50way")]
    encoder = FMRIEncoder.load(run_dir / "encoder").eval()
    dm = FMRIVideoDataModule(cfg, augment=False)
    dm.setup("fit")
    record = {"run_dir": str(run_dir), "train_s": wall, "samples_per_s": float(np.median(rates)),
              "val_top1_50way_per_epoch": vals,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip
    for split in ("val", "test"):
        data = collect_split(dm, split)
        with torch.no_grad():
            pred = encoder(torch.from_numpy(data.fmri)).embedding.numpy()
        record[split] = retrieval_scores(pred, data.targets["clip_image"], n_way=50)
        record[f"{split}_text"] = retrieval_scores(pred, data.targets["clip_text"], n_way=50)
    out.write_text(json.dumps(record))


def ridge_record(overrides: list[str], fmri_key: str = "fmri") -> dict:
    from neurocine.baselines.ridge import ridge_baseline
    from neurocine.config import load_config
    from neurocine.data.datamodule import FMRIVideoDataModule

    cfg = load_config(EXPERIMENT, overrides)
    dm = FMRIVideoDataModule(cfg, augment=False, read_clean=fmri_key == "fmri_clean")
    dm.setup("fit")
    start = time.perf_counter()
    results = ridge_baseline(dm, n_way=50, fmri_key=fmri_key)
    return {
        "train_s": time.perf_counter() - start,
        "val": results["val/clip_image"],
        "test": results["test/clip_image"],
        "val_text": results["val/clip_text"],
        "test_text": results["test/clip_text"],
        "alpha_median": results["alphas/clip_image"]["median"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/sim/subject1.h5")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: JSON output path
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.one:
        train_one(args.overrides, Path(args.one))
        return 0
    data = (ROOT / args.data).resolve()
    base = [f"data.path={data}", "trainer.enable_progress_bar=false", *args.overrides]
    ensure_data(data, base)
    seeds = [int(s) for s in args.seeds.split(",")]
    records: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="stage1_quality_") as tmp:
        for name, extra in VARIANTS.items():
            for seed in seeds:
                out = Path(tmp) / f"{len(records)}-{seed}.json"
                overrides = [*base, f"runs_dir={tmp}/runs", f"seed={seed}", *extra]
                subprocess.run([sys.executable, "-m", "bench.stage1_quality", "--one", str(out),
                                *overrides], cwd=ROOT, check=True, env={**os.environ})  # fmt: skip
                records.setdefault(name, []).append(json.loads(out.read_text()))
    ridge = ridge_record(base)
    oracle = ridge_record(base, fmri_key="fmri_clean")  # simulated data only: the SNR ceiling

    def mean(recs: list[dict], split: str, key: str) -> float:
        return float(np.mean([r[split][key] for r in recs]))

    header = ["model", "val 50-way top-1", "val 50-way top-5", "test 50-way top-1",
              "test 50-way top-5", "train s", "samples/s", "peak RSS MB"]  # fmt: skip
    rows = []
    for name, rec in (("ridge (himalaya RidgeCV)", ridge), ("ridge on noise-free fMRI", oracle)):
        rv, rt = rec["val"], rec["test"]
        rows.append([name, rv["top1_50way"], rv["top5_50way"], rt["top1_50way"], rt["top5_50way"],
                     rec["train_s"], "-", "-"])  # fmt: skip
    for name, recs in records.items():
        rows.append([
            name, mean(recs, "val", "top1_50way"), mean(recs, "val", "top5_50way"),
            mean(recs, "test", "top1_50way"), mean(recs, "test", "top5_50way"),
            float(np.mean([r["train_s"] for r in recs])),
            float(np.mean([r["samples_per_s"] for r in recs])),
            float(np.max([r["peak_rss_mb"] for r in recs])),
        ])  # fmt: skip
    from neurocine.config import load_config
    from neurocine.models.clip_targets import describe_clip

    clip = describe_clip(load_config(EXPERIMENT, base).clip)
    notes = (
        "Demo dataset: `neurocine simulate` with its defaults (12 train runs × 80 TRs, 2000 "
        "voxels; validation = the last 2 runs, test = 3 runs averaged over 10 repeats), CLIP "
        "image targets of CLIP "
        f"`{clip}`; 50-way chance is 0.02 "
        f"(top-1) and 0.10 (top-5), 100 trials. Stage 1: mean over seeds {seeds}; train s is "
        "the whole `fit` (data setup, training, validation every epoch, export). Text-target "
        "scores and per-epoch validation curves are in the JSON."
    )
    write_result("stage1_quality", "Stage 1 vs ridge (bench/stage1_quality.py)",
                 markdown_table(header, rows), {"ridge": ridge, "ridge_clean": oracle,
                 "stage1": records, "overrides": args.overrides}, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
