"""How many epochs should the simulated-data evaluator train? Chosen on held-out training runs.

The n-way metrics of simulated runs are scored by a small classifier
(``neurocine.evaluator``) trained on the ground-truth training clips. Its epoch count
(``evaluation.evaluator.epochs``) is a recipe choice, so it is chosen here on the last
``--val-runs`` training runs held out (``evaluation.evaluator.val_runs``), never on the test
clips that reported figures score. Each epoch count trains a fresh classifier (the one-cycle
schedule spans the whole training), at several seeds; the table gives the held-out video and
frame top-1 (64 classes, chance 1/64) with their standard error over seeds.

    python -m bench.evaluator_epochs [--data data/sim/subject1.h5] [--epochs 10,20,40,60,90]
                                     [--seeds 0,1] [--val-runs 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from bench.common import markdown_table, write_result
from neurocine.config import EvaluatorConfig, SimulationConfig
from neurocine.data.simulate import simulate_subject
from neurocine.evaluator import fit_classifier, read_labelled_clips

TITLE = "Evaluator epochs, chosen on held-out training runs (bench/evaluator_epochs.py)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/sim/subject1.h5")
    parser.add_argument("--epochs", default="10,20,40,60,90")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--val-runs", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    data = Path(args.data)
    if not data.is_file():
        simulate_subject(OmegaConf.structured(SimulationConfig), data)
    clips = read_labelled_clips(data, "train")
    epochs = [int(e) for e in args.epochs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    records = []
    for n_epochs in epochs:
        for seed in seeds:
            cfg = OmegaConf.merge(
                OmegaConf.structured(EvaluatorConfig),
                {"epochs": n_epochs, "seed": seed, "val_runs": args.val_runs},
            )
            start = time.perf_counter()
            _, info = fit_classifier(clips, cfg, progress=False)
            records.append({
                "epochs": n_epochs, "seed": seed, "seconds": time.perf_counter() - start,
                "val_video_acc": info["val_video_acc"], "val_frame_acc": info["val_frame_acc"],
                "n_train": info["n_train"], "n_val": info["n_val"],
            })  # fmt: skip
    rows, means = [], {}
    for n_epochs in epochs:
        mine = [r for r in records if r["epochs"] == n_epochs]
        cells = []
        for key in ("val_video_acc", "val_frame_acc"):
            values = np.array([r[key] for r in mine])
            se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
            cells.append(f"{values.mean():.3f} ± {se:.3f}")
            means.setdefault(key, {})[n_epochs] = (float(values.mean()), float(se))
        rows.append([n_epochs, *cells, float(np.mean([r["seconds"] for r in mine]))])
    table = markdown_table(
        ["epochs", "held-out video top-1 (mean ± SE over seeds)", "held-out frame top-1", "s"],
        rows,
    )
    video = means["val_video_acc"]
    best = max(video, key=lambda e: video[e][0])
    tied = [e for e in epochs if video[best][0] - video[e][0] <= 2 * max(video[best][1], 1e-9)]
    notes = (
        f"Data: `{data.name}` (the simulated default), training runs minus the last "
        f"{args.val_runs} ({records[0]['n_train']} clips) to train, those {args.val_runs} runs "
        f"({records[0]['n_val']} clips) to score; seeds {seeds}; 1 torch thread. The test clips "
        f"are not read. Highest held-out video top-1: {best} epochs; within 2 SE of it: "
        f"{', '.join(map(str, tied))} epochs; the fewest of those, {min(tied)}, is the choice "
        f"(time grows with epochs). Shipped default `evaluation.evaluator.epochs`: "
        f"{EvaluatorConfig.epochs}."
    )
    write_result("evaluator_epochs", TITLE, table, {"records": records, "seeds": seeds}, notes)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
