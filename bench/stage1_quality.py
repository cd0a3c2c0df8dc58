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
TITLE = "Stage 1 vs ridge (bench/stage1_quality.py)"
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
    record = {"run": run_dir.name, "train_s": wall, "samples_per_s": float(np.median(rates)),
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


def _values(recs: list[dict], split: str, key: str = "top1_50way") -> np.ndarray:
    return np.array([r[split][key] for r in recs], dtype=float)


def _cell(values: np.ndarray) -> float | str:
    if len(values) == 1:
        return float(values[0])
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _effect(data: dict, variant: str, knob: str) -> str:
    """One sentence: does switching ``knob`` off change 50-way top-1 beyond the seed spread?"""
    base, off = data["stage1"]["stage 1"], data["stage1"][variant]
    parts = []
    for split in ("val", "test"):
        a, b = _values(base, split), _values(off, split)
        diff = a.mean() - b.mean()
        spread = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / len(a)) if len(a) > 1 else np.nan
        if np.isnan(spread):
            verdict = "one seed: not resolved"
        elif abs(diff) > 2 * spread:
            verdict = "helps" if diff > 0 else "hurts"
        else:
            verdict = "within seed noise"
        parts.append(f"{split} {a.mean():.3f} with vs {b.mean():.3f} without ({verdict})")
    return f"{knob}: " + "; ".join(parts)


def report(data: dict) -> tuple[str, str]:
    """The markdown table and the notes of a result (from the JSON's ``data``)."""
    header = ["model", "val 50-way top-1", "val 50-way top-5", "test 50-way top-1",
              "test 50-way top-5", "train s", "samples/s", "peak RSS MB"]  # fmt: skip
    rows = []
    ridge, oracle = data["ridge"], data["ridge_clean"]
    for name, rec in (("ridge (himalaya RidgeCV)", ridge), ("ridge on noise-free fMRI", oracle)):
        rv, rt = rec["val"], rec["test"]
        rows.append([name, rv["top1_50way"], rv["top5_50way"], rt["top1_50way"], rt["top5_50way"],
                     rec["train_s"], "-", "-"])  # fmt: skip
    for name, recs in data["stage1"].items():
        rows.append([
            name, _cell(_values(recs, "val")), _cell(_values(recs, "val", "top5_50way")),
            _cell(_values(recs, "test")), _cell(_values(recs, "test", "top5_50way")),
            float(np.mean([r["train_s"] for r in recs])),
            float(np.mean([r["samples_per_s"] for r in recs])),
            float(np.max([r["peak_rss_mb"] for r in recs])),
        ])  # fmt: skip
    s1 = data["stage1"]["stage 1"]
    s1_val, s1_test = _values(s1, "val").mean(), _values(s1, "test").mean()
    r_val, r_test = ridge["val"]["top1_50way"], ridge["test"]["top1_50way"]
    notes = (
        "Demo dataset: `neurocine simulate` with its defaults (12 train runs × 80 TRs, 2000 "
        "voxels, single-repeat SNR 0.4; validation = the last 2 training runs, test = 3 runs "
        "averaged over 10 repeats), targets: image embeddings of CLIP "
        f"`{data['clip']}`. 50-way chance is 0.02 (top-1) and 0.10 (top-5), 100 trials. "
        f"Stage 1 = `experiments/stage1.yaml`, mean ± sd over seeds {data['seeds']}, scored with "
        "the encoder of the last epoch; train s is the whole `fit` (setup, 12 epochs with "
        "validation, export) with 1 torch thread on a shared 2-core machine, samples/s the "
        "median training throughput, peak RSS that of the training process.\n\n"
        f"Stage 1 vs ridge, 50-way top-1: validation {s1_val:.3f} vs {r_val:.3f}, test "
        f"{s1_test:.3f} vs {r_test:.3f}. Both are limited by the noise, not by the decoder's "
        "form: the same ridge on the noise-free BOLD (`fmri_clean`, simulated data only) reaches "
        f"{oracle['val']['top1_50way']:.3f} / {oracle['test']['top1_50way']:.3f}. Stage 1 − "
        f"ridge: {s1_val - r_val:+.3f} on single-repeat validation windows, "
        f"{s1_test - r_test:+.3f} on the test split, whose 10-repeat average has about 3× the "
        "SNR of a validation TR.\n\n"
        "Ablations (the paper reports that both augmentations help): "
        + _effect(data, "stage 1, mask_ratio=0", "spatial masking (mask_ratio 0.2)")
        + ". "
        + _effect(data, "stage 1, interp_ratio=0", "temporal interpolation (interp_ratio 0.2)")
        + ". Text-target scores and per-epoch validation curves are in the JSON."
    )
    return markdown_table(header, rows), notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/sim/subject1.h5")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--render", action="store_true",
                        help="rebuild table and notes from the saved result")  # fmt: skip
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: JSON output path
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.one:
        train_one(args.overrides, Path(args.one))
        return 0
    if args.render:  # the measured run's command, machine and date stay as they were
        from bench.common import RESULTS

        path = RESULTS / "stage1_quality.json"
        result = json.loads(path.read_text())
        result["table"], result["notes"] = report(result["data"])
        path.write_text(json.dumps(result, indent=2))
        return 0
    data_path = (ROOT / args.data).resolve()
    base = [f"data.path={data_path}", "trainer.enable_progress_bar=false", *args.overrides]
    ensure_data(data_path, base)
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
    from neurocine.config import load_config
    from neurocine.models.clip_targets import describe_clip

    data = {
        "ridge": ridge_record(base),
        "ridge_clean": ridge_record(base, fmri_key="fmri_clean"),  # simulated data: SNR ceiling
        "stage1": records,
        "seeds": seeds,
        "clip": describe_clip(load_config(EXPERIMENT, base).clip),
        "overrides": args.overrides,
    }
    table, notes = report(data)
    write_result("stage1_quality", TITLE, table, data, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
