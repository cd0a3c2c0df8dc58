"""Does NeuroCine beat ridge when the simulated subject has as much training data as cc2017?

The simulated default trains on 12 runs of 80 TRs (960 TRs) so that ``make demo`` fits in ten
minutes on two cores. A cc2017 subject has 18 eight-minute training segments: 4,320 TRs at TR 2 s,
54 such runs. This benchmark runs ``neurocine demo`` (``experiments/demo.yaml``, nothing else
changed: the recipe's epochs, sampling from pure dependent noise) on the simulated subject with
each of ``--train-runs`` training runs and ``--test-runs`` fresh test runs, and reports per size
the demo's own evaluation: every test clip's video 50-way (and SSIM, frame 50-way) for NeuroCine,
the mean training frame, ridge fMRI → pixels and the oracle, with NeuroCine's gap to each, paired
over the same clips and n-way draws, standard error with the clips' scenes as clusters. Beside
them: how well stage 1's embedding of each test window retrieves the clip's true CLIP image
embedding (50-way, ``bench/stage1_levers.py``'s score) and the same for ridge fMRI → CLIP fit
on the same training windows, stage 1's validation retrieval (its exported epoch) and the
demo's step times.
At the largest size the CLIP oracle is scored too: the same stage 2 conditioned on each clip's
true CLIP image embedding, the ceiling a perfect stage 1 would reach with this prior.

The simulator draws the brain, the training data and the test data from independent streams, so
every size meets the same test clips (checked: identical test frames; the test fMRI differs only
by the training statistics the simulator scales the voxels with, correlation 0.999). The
evaluator, the n-way classifier, is trained on each size's own training clips, so a larger
subject also has a better scorer; CLIP similarity, scored by the independent evaluation CLIP
(``clip_eval``, the same for every size), is the check that does not depend on it.

With ``--seeds`` the largest size is also trained at other training seeds (``seed=``: both
stages and the sampling; same data, same evaluator), and its gap to ridge gets a standard error
over seeds beside the one over scenes (``bench/stage1_levers.py``'s ``seeded_difference``).

    python -m bench.training_size [--workdir DIR] [--train-runs 12,54] [--test-runs 24]
                                  [--seeds 0,1]

Work is kept in ``--workdir`` (one folder per size, one runs folder per seed), so an
interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np

from bench.common import markdown_table, write_result
from bench.demo_robustness import GAP, LABELS, demo_run, gap_rows, run
from bench.stage1_levers import encoder_scores, ridge_scores, seeded_difference, windows

METRICS = ("ssim", "frame_50way", "video_50way", "clip_similarity")
TRS_PER_RUN = 80  # the simulated default's run length (data_modules/simulated.yaml)
CC2017_TRAINING_TRS = 18 * 240  # 18 eight-minute segments at TR 2 s


def demo(folder: Path, train_runs: int, test_runs: int, seed: int = 0) -> Path:
    """``neurocine demo`` on a subject of ``train_runs`` training runs at training ``seed``,
    run into ``folder`` unless already there; its stage-2 run directory."""
    runs = "runs" if seed == 0 else f"runs_seed{seed}"
    latest = folder / runs / "demo" / "stage2" / "latest"
    if (latest / "metrics.json").is_file():
        return latest.resolve()
    return demo_run(folder, f"simulate.n_train_runs={train_runs}",
                    f"simulate.n_test_runs={test_runs}", *([f"seed={seed}"] if seed else []),
                    runs=runs)  # fmt: skip


def clip_oracle(run_dir: Path, out: Path) -> dict:
    """The run's reconstructions beside the CLIP oracle, evaluated into ``out`` unless there
    → metrics.json content."""
    if not (out / "metrics.json").is_file():
        run(["evaluate", "--run", str(run_dir), "--out", str(out), "--no-progress",
             "evaluation.baselines=[clip_oracle]"])  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


def held_out_retrieval(stage1_run: Path, path: Path) -> dict[str, float]:
    """50-way retrieval of the true CLIP image embedding on ``path``'s test windows: the
    exported stage-1 encoder's and ridge fMRI → CLIP's (fit on the same training windows)."""
    run_dir = stage1_run.resolve()
    test = windows(run_dir, path, "test")
    return {"stage1": float(encoder_scores(run_dir, test)["per_window"].mean()),
            "ridge": float(ridge_scores(run_dir, path, test, "fmri").mean())}  # fmt: skip


def same_test_clips(paths: list[Path]) -> None:
    """Raise unless every subject file holds the same test frames (the sizes share test clips)."""
    with h5py.File(paths[0]) as first:
        reference = first["test/frames"][()]
    for path in paths[1:]:
        with h5py.File(path) as other:
            if not np.array_equal(other["test/frames"][()], reference):
                raise SystemExit(f"{path}: test/frames differ from {paths[0]}'s")


def verdict(gap: dict) -> str:
    """``+0.030 ± 0.010 (ahead)``: a paired gap and what the 2-SE rule says of it."""
    word = ("ahead" if gap["diff"] > 2 * gap["se"]
            else "behind" if gap["diff"] < -2 * gap["se"] else "within noise")  # fmt: skip
    return f"{gap['diff']:+.3f} ± {gap['se']:.3f} ({word})"


def over_seeds(results: list[dict], metric: str = GAP) -> dict:
    """NeuroCine minus ridge on ``metric`` over training seeds (metrics.json contents of the
    same clips): mean, SE over seeds and over scenes, per-seed gaps, beyond noise or not."""
    scenes = np.asarray(results[0]["clip_scenes"])
    per_clip = [{k: np.asarray(r["per_clip"][k][metric]) for k in ("neurocine", "ridge")}
                for r in results]  # fmt: skip
    return seeded_difference([c["neurocine"] for c in per_clip], [c["ridge"] for c in per_clip],
                             scenes)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: temporary)")
    parser.add_argument("--train-runs", default="12,54", help="training runs per subject size")
    parser.add_argument("--test-runs", type=int, default=24, help="fresh test runs")
    parser.add_argument(
        "--seeds", default="0", help="training seeds of the largest size (0 always)"
    )
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.train_runs.split(",") if s)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="training_size_") as tmp:
        work = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        folders = {n: work / f"train{n}" for n in sizes}
        runs = {n: demo(folders[n], n, args.test_runs) for n in sizes}
        same_test_clips([folders[n] / "subject1.h5" for n in sizes])
        scored = {n: json.loads((runs[n] / "metrics.json").read_text()) for n in sizes}
        largest = sizes[-1]
        seeded = [scored[largest]] + [
            json.loads((demo(folders[largest], largest, args.test_runs, s) / "metrics.json")
                       .read_text()) for s in seeds if s != 0
        ]  # fmt: skip
        ceiling = clip_oracle(runs[largest], work / f"train{largest}_clip_oracle")
        steps = {n: json.loads((runs[n] / "demo.json").read_text())["seconds"] for n in sizes}
        stage1 = {n: json.loads((runs[n].parent.parent / "stage1" / "latest" / "export.json")
                                .read_text()) for n in sizes}  # fmt: skip
        retrieval = {n: held_out_retrieval(runs[n].parent.parent / "stage1" / "latest",
                                       folders[n] / "subject1.h5") for n in sizes}  # fmt: skip

    def setting(n: int) -> str:
        return f"{n} training runs ({n * TRS_PER_RUN:,} TRs)"

    rows = [row for n in sizes for row in gap_rows(setting(n), scored[n], METRICS)]
    rows += [row for row in gap_rows(setting(largest), ceiling, METRICS)
             if row[1] == LABELS["clip_oracle"]]  # fmt: skip
    for s, result in zip([x for x in seeds if x != 0], seeded[1:], strict=True):
        rows += gap_rows(f"{setting(largest)}, training seed {s}", result, METRICS)
    seeds_gap = over_seeds(seeded) if len(seeded) > 1 else None
    table = markdown_table(["subject", "row", "clips", *METRICS, f"NeuroCine − row, {GAP}"], rows)
    steps_table = markdown_table(
        ["training runs", "stage 1 test retrieval", "ridge → CLIP test retrieval",
         "stage 1 val retrieval (epoch)", *(f"{step} s" for step in steps[sizes[0]])],
        [[n, f"{retrieval[n]['stage1']:.3f}", f"{retrieval[n]['ridge']:.3f}",
          f"{stage1[n]['score']:.3f} ({stage1[n]['epoch']})",
          *(steps[n].get(step, "") for step in steps[sizes[0]])] for n in sizes],
    )  # fmt: skip

    def verdicts(metric: str) -> str:
        return "; ".join(f"{n} runs {verdict(scored[n]['paired']['ridge'][metric])}"
                         for n in sizes)  # fmt: skip

    notes = (
        "NeuroCine minus ridge fMRI → pixels, paired, scene-clustered SE (verdict by the 2-SE "
        f"rule): {GAP} {verdicts(GAP)}; CLIP similarity (the independent evaluation CLIP, "
        f"the same scorer at every size) {verdicts('clip_similarity')}. cc2017's training set is "
        f"{CC2017_TRAINING_TRS:,} TRs per subject ({CC2017_TRAINING_TRS // TRS_PER_RUN} "
        f"simulated runs). Every size meets the same {args.test_runs} test runs (identical test "
        "frames); each size's evaluator is trained on its own training clips. One training seed "
        "per size unless said; sampling from pure dependent noise (the paper's), the demo's 10 "
        "DDIM steps. "
        + (
            f"Over {len(seeded)} training seeds at {largest} runs: {GAP} "
            f"{seeds_gap['diff']:+.3f} ± {seeds_gap['se_seeds']:.3f} (seeds) / "
            f"{seeds_gap['se_scenes']:.3f} (scenes), per seed "
            + ", ".join(f"{g:+.3f}" for g in seeds_gap["per_seed"])
            + f", {'beyond' if seeds_gap['beyond_noise'] else 'within'} noise by the 2-SE rule. "
            if seeds_gap
            else ""
        )
        + f"The CLIP oracle scores {ceiling['rows']['clip_oracle'][GAP]:.3f} at {largest} runs "
        f"(NeuroCine minus it {verdict(ceiling['paired']['clip_oracle'][GAP])}). "
        + f"1-minute load average {load:.1f} at the start.\n\n"
        + steps_table
    )
    data = {
        "sizes": sizes,
        "test_runs": args.test_runs,
        "scored": {str(n): {k: scored[n][k] for k in ("n_clips", "rows", "paired")} for n in sizes},
        "stage1": {str(n): stage1[n] for n in sizes},
        "test_retrieval": {str(n): retrieval[n] for n in sizes},
        "seconds": {str(n): steps[n] for n in sizes},
        "seeds": seeds,
        "over_seeds": seeds_gap,
        "clip_oracle": {k: ceiling[k] for k in ("rows", "paired")},
        "load": load,
    }
    write_result("training_size", "NeuroCine vs ridge as the simulated subject's training set "
                 "grows to cc2017's (bench/training_size.py)", table, data, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
