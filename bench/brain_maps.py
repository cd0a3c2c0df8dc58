"""Brain maps vs the simulator's ground truth: does each attribution method find the signal?

Simulates the demo subject with half its voxels carrying stimulus signal
(``signal_fraction=0.5``; the demo's own default has signal in every voxel, so it has nothing
to separate), embeds it with the tiny CLIP, trains the demo's stage 1 (``experiments/stage1.yaml``
with ``clip.preset=tiny``, as ``experiments/demo.yaml`` runs it) once per seed, and runs
``neurocine brain-map`` on each run's test windows (``--variants`` adds a stage 1 with
``stage1.weight_decay=1.0``). Per method: the ROC AUC of the map
separating ``/voxels/signal`` from noise voxels, and the wall time of the method.

Writes ``bench/results/brain_maps.json`` (its section of ``docs/benchmarks.md``).

    python -m bench.brain_maps [--data data/sim/subject1_signal50.h5] [--seeds 0,1]
                               [--variants "demo stage 1,stage1.weight_decay=1.0"]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "stage1.yaml"
TITLE = "Brain maps vs the simulated signal voxels (bench/brain_maps.py)"
SIMULATION = ["signal_fraction=0.5"]
DEMO_STAGE1 = ["clip.preset=tiny"]  # experiments/demo.yaml's overrides that reach stage 1
# The demo's stage 1, and the same with a weight decay that shrinks what noise voxels cannot
# train (their weights stay near their random start under the demo's 0.05).
VARIANTS = {"demo stage 1": [], "stage1.weight_decay=1.0": ["stage1.weight_decay=1.0"]}


def ensure_data(path: Path) -> None:
    """Simulate the demo subject with half its voxels silent and embed it, when missing."""
    from omegaconf import OmegaConf

    from neurocine.config import SimulationConfig, load_config
    from neurocine.data.simulate import simulate_subject
    from neurocine.embedding import embed_subject

    if not path.is_file():
        cfg = OmegaConf.merge(
            OmegaConf.structured(SimulationConfig), OmegaConf.from_dotlist(SIMULATION)
        )
        simulate_subject(cfg, path)
    embed_subject(path, load_config(EXPERIMENT, DEMO_STAGE1), progress=False)


def one_seed(data: Path, seed: int, workdir: Path, overrides: list[str]) -> dict:
    """Train stage 1 with ``seed``, map it with every method; AUCs, seconds and retrieval."""
    from neurocine.analysis.brain_maps import write_brain_maps
    from neurocine.analysis.runs import load_run
    from neurocine.config import load_config
    from neurocine.training import fit

    cfg = load_config(
        EXPERIMENT,
        [*DEMO_STAGE1, *overrides, f"data.path={data}", f"runs_dir={workdir}", f"seed={seed}",
         "trainer.enable_progress_bar=false"],
    )  # fmt: skip
    start = time.perf_counter()
    run = load_run(fit(cfg))
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    result = write_brain_maps(run, workdir / f"maps_{len(list(workdir.glob('maps_*')))}")
    metrics = run.final_metrics()
    return {
        "seed": seed,
        "auc": result.auc,
        "seconds": result.seconds,
        "brain_map_s": time.perf_counter() - start,
        "train_s": train_s,
        "windows": int(json.loads((result.out / "summary.json").read_text())["windows"]),
        "val_top1_50way": metrics.get("val/top1_50way"),
    }


def report(data: dict) -> tuple[str, str]:
    """The markdown table and notes of a result (from the JSON's ``data``)."""
    rows = []
    for variant, records in data["variants"].items():
        for method in records[0]["auc"]:
            auc = np.array([r["auc"][method] for r in records])
            secs = np.array([r["seconds"][method] for r in records])
            se = auc.std(ddof=1) / np.sqrt(len(auc)) if len(auc) > 1 else float("nan")
            rows.append([variant, method, f"{auc.mean():.3f} ± {se:.3f}",
                         " / ".join(f"{a:.3f}" for a in auc), float(secs.mean())])  # fmt: skip
    table = markdown_table(
        ["stage 1", "method", "signal-vs-noise ROC AUC (mean ± SE)", "per seed", "time (s)"], rows
    )
    everything = [r for records in data["variants"].values() for r in records]
    total = np.mean([r["brain_map_s"] for r in everything])
    val = {
        variant: ", ".join(f"{r['val_top1_50way']:.3f}" for r in records)
        for variant, records in data["variants"].items()
    }
    records = everything
    first = next(iter(data["variants"].values()))
    best = max(
        ((m, float(np.mean([r["auc"][m] for r in first]))) for m in first[0]["auc"]),
        key=lambda kv: kv[1],
    )
    notes = (
        "Subject: `neurocine simulate signal_fraction=0.5` (the demo's defaults otherwise: "
        "2000 voxels, single-repeat SNR 0.4, test = 3 runs averaged over 10 repeats); its "
        "`/voxels/signal` marks the 1000 voxels whose BOLD carries the stimulus (blobs of a "
        "20 mm random field), the other 1000 are noise only. Stage 1 as the demo trains it "
        f"(`experiments/stage1.yaml`, `clip.preset=tiny`), seeds {data['seeds']}; validation "
        f"50-way top-1 per seed: {'; '.join(f'{k} {v}' for k, v in val.items())} (chance 0.02). "
        "Maps are "
        f"averaged over the {records[0]['windows']} test windows; AUC 0.5 is chance, 1 puts every "
        "signal voxel above every noise voxel. Occlusion zeroes 10 mm cubes of MNI space; "
        "attention is the last block's received attention (one value per token of 16 "
        "consecutive voxels); gradient = gradient × input; integrated gradients from the zero "
        f"window in 16 steps. Time per method on 1 torch thread; the whole `brain-map` command "
        f"with its NIfTI, PNG and HTML outputs took {total:.0f} s per run (on the machine's load "
        "at the time; the times are for comparing methods).\n\n"
        f"Best method: {best[0]}, AUC {best[1]:.3f}. No method reaches 0.8 on these runs: the "
        "demo's stage 1 retrieves above chance but does not yet tell its noise voxels from its "
        "signal voxels (likely because it reads every voxel through its own random-started "
        "weights, which 12 epochs with weight decay 0.05 barely shrink), and the maps describe "
        "the encoder, not the data. Attention, one value per token of 16 consecutive voxels, "
        "is not even consistent across seeds."
    )
    return table, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/sim/subject1_signal50.h5")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument(
        "--variants", default="demo stage 1", help=f"comma-separated, of: {', '.join(VARIANTS)}"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    data = Path(args.data)
    ensure_data(data)
    seeds = [int(s) for s in args.seeds.split(",")]
    result = {"seeds": seeds, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="brain_maps_") as tmp:
        for variant in args.variants.split(","):
            result["variants"][variant] = [
                one_seed(data, seed, Path(tmp), VARIANTS[variant]) for seed in seeds
            ]
            table, notes = report(result)  # written after each variant: a partial run counts
            write_result("brain_maps", TITLE, table, result, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
