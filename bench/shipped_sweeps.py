"""The shipped seeded sweeps, run and reported: ``mask_interp_grid`` and ``augment_vs_data``.

Runs ``neurocine sweep experiments/sweeps/<name>.yaml --workers 2`` for each (finished runs in
``--out-dir`` are skipped, so a second call only re-renders), then records each sweep's
``results.md`` table, its verdicts and its figures (copied to ``docs/images/``) for
``docs/benchmarks.md``. Needs the simulated default with CLIP targets (``make embed``). The
metric is stage 1's validation 50-way top-1 (the last 2 training runs); the test split is not
read.

    python -m bench.shipped_sweeps
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path

from scipy import stats

from bench.common import write_result
from neurocine.sweep_stats import mean_se, verdict

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ("mask_interp_grid", "augment_vs_data")
IMAGES = ROOT / "docs" / "images"
METRIC = "val/top1_50way"


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def describe(name: str, rows: list[dict[str, str]], metric: str = METRIC) -> str:
    """One sentence per compared point: its paired difference on ``metric`` and verdict.

    The verdict is recomputed from the paired difference, so it holds for any metric of
    ``results.csv``, not only the sweep's own.
    """
    keys = [k for k in rows[0] if k not in ("point", "n", "failed", "error", "verdict")]
    keys = keys[: min(i for i, k in enumerate(keys) if "/" in k or ":" in k)]
    parts, diffs = [], []
    for row in rows:
        if row["verdict"] == "reference":
            continue
        where = ", ".join(f"{k.split('.')[-1]} {row[k]}" for k in keys)
        diff, se = float(row[f"{metric}_diff"]), float(row[f"{metric}_diff_se"] or "nan")
        parts.append(f"{where}: Δ {diff:+.3f} ± {se:.3f} ({verdict(diff, se, int(row['n']))})")
        diffs.append((abs(diff), se, int(row["n"])))
    beyond = [p for p in parts if "better" in p or "worse" in p]
    summary = (
        f"{len(beyond)} of {len(parts)} comparisons differ from their reference beyond 2 SE"
        if parts
        else "no comparisons"
    )
    within = [d for d in diffs if 0 < d[0] <= 2 * d[1]]
    needed = ""
    if within:  # SE shrinks as 1/√n: seeds for the largest Δ within noise to clear 2 SE
        size, se, n = max(within)
        needed = (
            f" The largest Δ within noise ({size:.3f}) would need about "
            f"{n * (2 * se / size) ** 2:.0f} seeds instead of {n} to clear 2 SE, were it real "
            "and its seed spread the same."
        )
    n = max(d[2] for d in diffs)
    # |Δ| > 2 SE when there is no difference: Student's t with n − 1 degrees of freedom.
    chance = 2 * stats.t.sf(2.0, n - 1)
    caveat = (
        f" With {n} seeds, the 2-SE rule calls a difference that is not there with probability "
        f"{chance:.2f} per comparison (t with {n - 1} degrees of freedom)"
        + (
            f", so {len(beyond)} call(s) among {len(parts)} comparisons are weak evidence."
            if beyond
            else "."
        )
    )
    return (
        f"`{name}`, {metric}, paired differences to the reference: "
        + "; ".join(parts)
        + f". {summary}.{needed}{caveat}"
    )


def interaction(runs: list[dict[str, str]], size_key: str, arm_key: str) -> str:
    """Is the on − off difference larger with the fewest training runs than with all of them?

    Per seed: (on − off at the smallest size) − (on − off at the largest), then mean ± SE.
    """
    done = [r for r in runs if r["status"] == "done"]
    sizes = sorted({int(float(r[size_key])) for r in done})
    arms = list(dict.fromkeys(r[arm_key] for r in done))  # off (the reference) first
    value = {(int(float(r[size_key])), r[arm_key], int(r["seed"])): float(r[METRIC]) for r in done}
    seeds = sorted({int(r["seed"]) for r in done})

    def gain(size: int, seed: int) -> float:
        return value[(size, arms[1], seed)] - value[(size, arms[0], seed)]

    small, large = sizes[0], sizes[-1]
    ok = [s for s in seeds if all((k, a, s) in value for k in (small, large) for a in arms[:2])]
    mean, se, n = mean_se([gain(small, s) - gain(large, s) for s in ok])
    return (
        f"Gain of augmentation with {small} training runs minus its gain with {large}, paired "
        f"by seed: {mean:+.3f} ± {se:.3f} over {n} seeds ({verdict(mean, se, n)})."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="runs/sweeps", help="where the sweeps run")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out_dir)
    sections, notes, data = [], [], {}
    for name in SWEEPS:
        spec = f"experiments/sweeps/{name}.yaml"
        cmd = [sys.executable, "-m", "neurocine", "sweep", spec, "--no-progress"]
        cmd += ["--workers", str(args.workers), "--out-dir", str(out)]
        proc = subprocess.run(cmd, cwd=ROOT, check=False, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        folder = out / name
        runs = read_rows(folder / "results_runs.csv")
        rows = read_rows(folder / "results.csv")
        figures = []
        for figure in ("heatmap", "plot"):
            if (folder / f"{figure}.png").is_file():
                target = IMAGES / f"sweep_{name}_{figure}.png"
                shutil.copyfile(folder / f"{figure}.png", target)
                figures.append(f"![{name} {figure}](images/{target.name})")
        fit_s = sum(float(r["seconds"]) for r in runs)
        sections.append(
            f"**`{name}`** — `neurocine sweep {spec} --workers {args.workers}` "
            f"({len(runs)} stage-1 fits, {fit_s / 60:.0f} fit-minutes in all)\n\n"
            + (folder / "results.md").read_text().strip()
            + "\n\n"
            + " ".join(figures)
        )
        notes.append(describe(name, rows))
        if name == "augment_vs_data":
            notes.append(interaction(runs, "data.train_runs", "data.augment"))
        data[name] = {"rows": rows, "runs": runs}
    write_result(
        "shipped_sweeps",
        "Seeded sweeps: mask × interp; augmentation × data size (bench/shipped_sweeps.py)",
        "\n\n".join(sections),
        data,
        "\n\n".join(notes),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
