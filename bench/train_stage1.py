"""``make train-stage1`` on a fresh checkout: simulate, embed and train, timed step by step.

Runs the three commands of the Makefile target (``neurocine simulate``, ``neurocine embed``
with ``experiments/stage1.yaml``'s CLIP, ``neurocine train stage1 --config
experiments/stage1.yaml``) in a temporary folder, each in its own process (wall and CPU
seconds, peak RSS from ``os.wait4``), and reads the last validation 50-way top-1 from the run's
log. The budget: the whole target in ≤ 3 minutes on a 2-core machine.

    python -m bench.train_stage1
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

from bench.common import markdown_table, write_result
from bench.stage2_speed import run_measured

BUDGET_S = 180.0


def last_val_top1(run_dir: Path) -> float:
    """The last ``val/top1_50way`` of a run's CSV log."""
    with open(run_dir / "logs" / "metrics.csv") as f:
        values = [r["val/top1_50way"] for r in csv.DictReader(f) if r.get("val/top1_50way")]
    return float(values[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="train_stage1_") as tmp:
        data, runs = Path(tmp) / "subject1.h5", Path(tmp) / "runs"
        nc = [sys.executable, "-m", "neurocine"]
        steps = {
            "neurocine simulate": [*nc, "simulate", "--out", str(data)],
            "neurocine embed": [*nc, "embed", str(data), "--config", "experiments/stage1.yaml"],
            "neurocine train stage1": [
                *nc, "train", "stage1", "--config", "experiments/stage1.yaml",
                f"data.path={data}", f"runs_dir={runs}", "trainer.enable_progress_bar=false",
            ],
        }  # fmt: skip
        records = {}
        for name, cmd in steps.items():
            records[name] = run_measured(cmd)
            if records[name]["code"]:
                print(f"{name} failed (exit {records[name]['code']})", file=sys.stderr)
                return 1
        top1 = last_val_top1(runs / "stage1" / "latest")
    total = {k: sum(r[k] for r in records.values()) for k in ("wall_s", "cpu_s")}
    rows = [[n, r["wall_s"], r["cpu_s"], r["peak_rss_mb"]] for n, r in records.items()]
    rows.append(["**make train-stage1** (all three)", total["wall_s"], total["cpu_s"],
                 max(r["peak_rss_mb"] for r in records.values())])  # fmt: skip
    verdict = "within" if total["wall_s"] <= BUDGET_S else "over"
    notes = (
        f"Fresh data and runs in a temporary folder; torch threads from OMP_NUM_THREADS "
        f"({os.environ.get('OMP_NUM_THREADS', 'unset')}; the Makefile sets 1). 1-minute load "
        f"average at the start: {load:.1f}. Whole target {total['wall_s']:.0f} s: {verdict} the "
        f"{BUDGET_S:.0f} s budget. The run's last validation 50-way top-1: "
        f"{top1:.3f} (chance 0.02; `bench/stage1_quality.py` compares it with ridge)."
    )
    table = markdown_table(["step", "wall (s)", "CPU (s)", "peak RSS (MB)"], rows)
    data = {"steps": records, "total": total, "val_top1_50way": top1, "load": load}
    write_result("train_stage1", "make train-stage1 (bench/train_stage1.py)", table, data, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
