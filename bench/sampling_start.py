"""Where DDIM starts: pure noise, or the ridge decoding of the same fMRI at some strength?

``sampling.init=ridge`` starts each reconstruction from the pixel-ridge decoding of its fMRI
window (fitted on the train split) diffused to the first of ``int(steps · strength)`` DDIM steps
(SDEdit; the low-level start of NeuroClips and MindEye); ``sampling.init=noise`` is the paper's
start from pure noise. This benchmark chose ``experiments/stage2.yaml``'s setting. It takes the
demo's stage-2 run (``--run``, or a fresh ``neurocine demo`` in a temporary folder) and scores
its reconstructions at each start on a *selection* split that no reported figure uses: the
demo's simulated subject with ``--test-runs`` fresh test runs (the training split is the same;
the demo's own 3-run test split and the 24-run split of ``bench/demo_robustness.py``, where the
choice is reported, are other draws). Evaluator seed 0, the demo's sampling otherwise, beside
the ridge and mean-frame baselines, with each start's paired gap to ridge.

    python -m bench.sampling_start [--run RUNS/demo/stage2/<timestamp>] [--strengths 0.5,0.7,0.9]
                                   [--test-runs 12]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench.common import markdown_table, write_result
from bench.demo_robustness import GAP, LABELS, METRICS, demo_run, evaluate, larger_test_split, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a demo stage-2 run (default: run the demo)")
    parser.add_argument("--strengths", default="0.5,0.7,0.9", help="ridge-start strengths")
    parser.add_argument("--test-runs", type=int, default=12, help="runs of the selection split")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    starts = {"noise (the paper's start)": ["sampling.init=noise", "sampling.strength=1.0"]}
    for s in (float(s) for s in args.strengths.split(",") if s):
        starts[f"ridge, strength {s:g}"] = ["sampling.init=ridge", f"sampling.strength={s}"]
    with tempfile.TemporaryDirectory(prefix="sampling_start_") as tmp:
        tmp = Path(tmp)
        run_dir = Path(args.run).resolve() if args.run else demo_run(tmp / "demo")
        split = larger_test_split(run_dir, tmp / "selection.h5", args.test_runs)
        scored = {}
        for i, (start, overrides) in enumerate(starts.items()):
            samples = tmp / f"samples{i}"
            run(["reconstruct", "--run", str(run_dir), "--out", str(samples), "--no-videos",
                 "--no-progress", f"data.path={split}", *overrides])  # fmt: skip
            scored[start] = evaluate(samples, tmp / f"scored{i}", 0, 0, f"data.path={split}",
                                     "evaluation.baselines=[mean_frame,ridge]")  # fmt: skip
    rows = []
    for start, result in scored.items():
        gap = result["paired"]["ridge"][GAP]
        rows.append([f"NeuroCine, {start}", result["n_clips"],
                     *(result["rows"]["neurocine"].get(m, "") for m in METRICS),
                     f"{gap['diff']:+.3f} ± {gap['se']:.3f}"])  # fmt: skip
    baselines = next(iter(scored.values()))  # the same for every start
    for key in ("ridge", "mean_frame"):
        rows.append([LABELS[key], baselines["n_clips"],
                     *(baselines["rows"][key].get(m, "") for m in METRICS), ""])  # fmt: skip
    best = max(scored, key=lambda s: scored[s]["rows"]["neurocine"][GAP])
    notes = (
        f"Selection split: the demo's simulated subject with {args.test_runs} fresh test runs "
        f"({baselines['n_clips']} clips scored, scene cuts left out); the demo's stage-2 run "
        f"`{run_dir.name}`, its sampling but the start; evaluator seed 0. Last column: NeuroCine "
        f"minus ridge on {GAP}, paired over the same clips and n-way draws (± standard error, "
        f"scenes as clusters). Best start on {GAP}: {best}. 1-minute load average {load:.1f}."
    )
    table = markdown_table(["row", "clips", *METRICS, f"NeuroCine − ridge, {GAP}"], rows)
    data = {s: {"n_clips": r["n_clips"], "rows": r["rows"], "paired": r["paired"]}
            for s, r in scored.items()}  # fmt: skip
    data.update(load=load, run=run_dir.name, test_runs=args.test_runs, best=best)
    write_result("sampling_start", "Where DDIM starts: noise or the ridge decoding "
                 "(bench/sampling_start.py)", table, data, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
