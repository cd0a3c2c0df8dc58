"""What dependent prior noise does: the shipped ρ sweep, run and reported on the val split.

Runs ``neurocine sweep experiments/sweeps/noise_ratio.yaml`` (ρ ∈ {0, 0.25, 0.5, 0.75} × 3
seeds, stage 1 shared by the points of a seed; finished runs in ``--out-dir`` are skipped, so a
second call only re-renders) and records, for video 50-way top-1, SSIM and CLIP-pcc, each ρ's
difference to ρ = 0 paired by seed, with its verdict. Every clip scored is from the validation
split (the last ``data.val_runs`` training runs), by an evaluator that did not learn from them;
the test split is not read. Needs the simulated default with CLIP targets (``make embed``).

    python -m bench.noise_ratio [--out-dir runs/sweeps] [--workers 1]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from bench.common import write_result
from bench.shipped_sweeps import IMAGES, describe, read_rows

ROOT = Path(__file__).resolve().parent.parent
NAME = "noise_ratio"
METRICS = ("neurocine/video_50way", "neurocine/ssim", "neurocine/clip_pcc")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="runs/sweeps", help="where the sweep runs")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    spec = f"experiments/sweeps/{NAME}.yaml"
    cmd = [sys.executable, "-m", "neurocine", "sweep", spec, "--no-progress"]
    cmd += ["--workers", str(args.workers), "--out-dir", args.out_dir]
    if subprocess.run(cmd, cwd=ROOT, check=False).returncode:
        return 1
    folder = Path(args.out_dir) / NAME
    runs = read_rows(folder / "results_runs.csv")
    rows = read_rows(folder / "results.csv")
    figures = []
    if (folder / "plot.png").is_file():
        target = IMAGES / f"sweep_{NAME}_plot.png"
        shutil.copyfile(folder / "plot.png", target)
        figures.append(f"![{NAME} plot](images/{target.name})")
    fit_s = sum(float(r["seconds"]) for r in runs if r["seconds"])
    table = (
        f"`neurocine sweep {spec} --workers {args.workers}` ({len(runs)} runs, "
        f"{fit_s / 60:.0f} run-minutes in all)\n\n"
        + (folder / "results.md").read_text().strip()
        + "\n\n"
        + " ".join(figures)
    )
    notes = "\n\n".join(describe(NAME, rows, metric) for metric in METRICS)
    write_result(
        NAME,
        "Dependent prior noise ratio ρ, on the val split (bench/noise_ratio.py)",
        table,
        {"rows": rows, "runs": runs},
        notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
