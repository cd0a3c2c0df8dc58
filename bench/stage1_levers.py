"""Which stage-1 settings move its CLIP-space embedding? Seeded, on a selection split.

Stage 2 is limited by stage 1's embedding: conditioned on the true CLIP image embedding the
same decoder scores far above NeuroCine (``bench/stage2_levers.py``). This benchmark trains
``experiments/stage1.yaml`` on the demo's data in variants × training seeds and scores each
exported encoder (its best validation epoch, as the recipe exports) by how well its embedding of
each window of a *selection* split (the demo's subject with ``--test-runs`` fresh test runs, the
split of ``bench/stage2_levers.py``; no reported figure uses it) retrieves that clip's true CLIP
image embedding: 50-way top-1, query by query (1,000 trials each, the same draws for every
encoder). Ridge from fMRI to CLIP (himalaya, fit on the same training windows) and the same
ridge on the noise-free fMRI are scored beside.

Each variant is compared with the recipe at the same training seed, window by window. Its
difference has two standard errors: over seeds (sd / √n of the per-seed differences) and over
scenes (cluster-robust, of the seed-averaged per-window differences); a variant is beyond noise
when the difference exceeds 2 × the larger. Work is kept in ``--workdir`` per variant and seed,
so an interrupted run resumes; ``--train-only`` trains the listed variants and stops (two such
processes on disjoint variants share the cores of a 2-core machine).

    python -m bench.stage1_levers --demo-dir DEMO_DIR [--workdir DIR] [--test-runs 8]
                                  [--seeds 0,1,2] [--variants recipe,…] [--train-only]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from bench.common import markdown_table, write_result
from bench.demo_robustness import demo_and_selection_split, run
from bench.stage2_finetune import variant_names
from neurocine.evaluation import paired_differences

REFERENCE = "recipe"
# name → stage-1 training overrides on top of experiments/stage1.yaml with the demo's settings
VARIANTS: dict[str, list[str]] = {
    REFERENCE: [],
    "embed_dim_64": ["encoder.embed_dim=64"],
    "weight_decay_0.5": ["stage1.weight_decay=0.5"],
    "embed_dim_64_weight_decay_0.5": ["encoder.embed_dim=64", "stage1.weight_decay=0.5"],
    "epochs_24_embed_dim_64_weight_decay_0.5": [
        "trainer.max_epochs=24",
        "encoder.embed_dim=64",
        "stage1.weight_decay=0.5",
    ],
    "epochs_24": ["trainer.max_epochs=24"],
    "dropout_0.3": ["encoder.dropout=0.3"],
    "mask_0.5": ["data.augment.mask_ratio=0.5"],
    "no_augmentation": ["data.augment.mask_ratio=0", "data.augment.interp_ratio=0"],
    "image_target_only": ["stage1.w_txt=0"],
}
LABELS = {
    REFERENCE: "the recipe (width 32, weight decay 0.05, 12 epochs, mask 0.2, interp 0.2)",
    "embed_dim_64": "token width 64",
    "weight_decay_0.5": "weight decay 0.5",
    "embed_dim_64_weight_decay_0.5": "token width 64 + weight decay 0.5",
    "epochs_24_embed_dim_64_weight_decay_0.5": "24 epochs + token width 64 + weight decay 0.5",
    "epochs_24": "24 epochs",
    "dropout_0.3": "dropout 0.3",
    "mask_0.5": "mask ratio 0.5",
    "no_augmentation": "no augmentation (mask 0, interp 0)",
    "image_target_only": "image target only (w_txt 0)",
}
N_WAY, TRIALS = 50, 1000


def train(name: str, seed: int, demo: Path, work: Path) -> Path:
    """The stage-1 run of ``name`` at training ``seed``, trained into ``work`` unless there."""
    runs = work / name / f"seed{seed}"
    latest = runs / "stage1" / "latest"
    if not (latest / "encoder").is_dir():
        run(["train", "stage1", "--config", "experiments/stage1.yaml",
             f"data.path={demo / 'subject1.h5'}", f"runs_dir={runs}", f"seed={seed}",
             "trainer.enable_progress_bar=false", "clip.preset=tiny", *VARIANTS[name]])  # fmt: skip
    return latest.resolve()


def windows(run_dir: Path, path: Path, split: str, read_clean: bool = False) -> dict:
    """``split`` of ``path`` cut into the run's windows: fMRI, clip image embedding, scene."""
    from neurocine.config import load_saved_config
    from neurocine.data.datamodule import FMRIVideoDataModule

    cfg = load_saved_config(run_dir / "config.yaml")
    cfg.data.path = str(path)
    dm = FMRIVideoDataModule(cfg, read_clean=read_clean, augment=False)
    dm.setup("fit" if split != "test" else "test")
    out: dict[str, list[np.ndarray]] = {"fmri": [], "fmri_clean": [], "clip_image": [], "index": []}
    for batch in dm.loader(split, batch_size=256):
        for key in out:
            if key in batch:
                out[key].append(batch[key].numpy())
    arrays = {k: np.concatenate(v) for k, v in out.items() if v}
    with h5py.File(path, "r") as f:
        group = "test" if split == "test" else "train"
        arrays["scene"] = f[f"{group}/scene"][()][arrays["index"]]
        arrays["run"] = f[f"{group}/run"][()][arrays["index"]]
    return arrays


def per_query(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """50-way top-1 of each predicted embedding (the same draws for every encoder)."""
    from neurocine.metrics import n_way_retrieval_per_query

    generator = torch.Generator().manual_seed(0)
    return n_way_retrieval_per_query(pred, target, N_WAY, TRIALS, generator)


def encoder_scores(run_dir: Path, selection: dict) -> dict:
    """The exported encoder's per-window 50-way on the selection windows and its val score."""
    from neurocine.models.fmri_encoder import FMRIEncoder

    encoder = FMRIEncoder.load(run_dir / "encoder").eval()
    with torch.no_grad():
        pred = encoder(torch.from_numpy(selection["fmri"])).embedding.numpy()
    exported = json.loads((run_dir / "export.json").read_text())
    return {"per_window": per_query(pred, selection["clip_image"]), "val": exported["score"],
            "epoch": exported["epoch"]}  # fmt: skip


def ridge_scores(run_dir: Path, train_path: Path, selection: dict, key: str) -> np.ndarray:
    """Per-window 50-way of ridge fMRI → CLIP image embedding, fit on the training windows."""
    from neurocine.baselines.ridge import fit_ridge, predict_ridge, ridge_features, run_folds

    training = windows(run_dir, train_path, "train", read_clean=key == "fmri_clean")
    model = fit_ridge(ridge_features(training[key]), training["clip_image"],
                      cv=run_folds(training["run"]))  # fmt: skip
    return per_query(predict_ridge(model, ridge_features(selection[key])), selection["clip_image"])


def seeded_difference(variant: list[np.ndarray], reference: list[np.ndarray],
                      scenes: np.ndarray) -> dict:  # fmt: skip
    """``variant`` minus ``reference`` (per-window scores, one array per seed, paired by seed).

    ``se_seeds``: sd / √n of the per-seed mean differences (NaN with one seed); ``se_scenes``:
    the scene-clustered standard error of the seed-averaged per-window differences. Beyond noise
    when ``|diff|`` exceeds 2 × the larger.
    """
    per_seed = np.array([(v - r).mean() for v, r in zip(variant, reference, strict=True)])
    averaged = {
        "variant": {"s": np.mean(variant, axis=0)},
        "ref": {"s": np.mean(reference, axis=0)},
    }
    scene_se = paired_differences(averaged, model="variant", groups=list(scenes))["ref"]["s"]["se"]
    seed_se = per_seed.std(ddof=1) / math.sqrt(len(per_seed)) if len(per_seed) > 1 else math.nan
    diff = float(per_seed.mean())
    noise = max(seed_se, scene_se)
    return {"diff": diff, "se_seeds": float(seed_se), "se_scenes": float(scene_se),
            "per_seed": per_seed.tolist(),
            "beyond_noise": bool(math.isfinite(noise) and abs(diff) > 2 * noise)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default=None, help="reuse a demo's data and runs")
    parser.add_argument("--workdir", default=None, help="keep (and resume) the work here")
    parser.add_argument("--test-runs", type=int, default=8, help="runs of the selection split")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated keys")
    parser.add_argument("--train-only", action="store_true", help="train the variants, no report")
    args = parser.parse_args()
    names = variant_names(args.variants, VARIANTS)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not args.train_only and REFERENCE not in names:
        raise SystemExit(f"--variants: needs '{REFERENCE}'")
    names = sorted(names, key=lambda n: n != REFERENCE)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stage1_levers_") as tmp:
        work = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        demo, split = demo_and_selection_split(work, args.demo_dir, args.test_runs)
        runs = {(n, s): train(n, s, demo, work) for n in names for s in seeds}
        if args.train_only:
            return 0
        first = runs[(REFERENCE, seeds[0])]
        selection = windows(first, split, "test", read_clean=True)
        scored = {key: encoder_scores(r, selection) for key, r in runs.items()}
        ridge = {key: ridge_scores(first, demo / "subject1.h5", selection, key)
                 for key in ("fmri", "fmri_clean")}  # fmt: skip
    scenes = selection["scene"]
    reference = [scored[(REFERENCE, s)]["per_window"] for s in seeds]
    versus = {n: seeded_difference([scored[(n, s)]["per_window"] for s in seeds], reference,
                                   scenes) for n in names[1:]}  # fmt: skip

    def mean_se(values: list[float]) -> str:
        sd = np.std(values, ddof=1) if len(values) > 1 else math.nan
        return f"{np.mean(values):.3f} ± {sd / math.sqrt(len(values)):.3f}"

    rows = []
    for n in names:
        s = [scored[(n, seed)] for seed in seeds]
        g = versus.get(n)
        rows.append([
            LABELS[n], mean_se([x["val"] for x in s]), mean_se([x["per_window"].mean() for x in s]),
            f"{g['diff']:+.3f} ± {g['se_seeds']:.3f} / {g['se_scenes']:.3f}" if g else "",
            ("beyond noise" if g["beyond_noise"] else "within noise") if g else "reference",
        ])  # fmt: skip
    for key, label in (("fmri", "ridge fMRI → CLIP"), ("fmri_clean", "ridge, noise-free fMRI")):
        rows.append([label, "", f"{ridge[key].mean():.3f}", "", ""])
    table = markdown_table(["stage 1", "val 50-way (exported epoch)", "selection 50-way",
                            "Δ vs recipe (± SE seeds / scenes)", "verdict"], rows)  # fmt: skip
    beyond = [n for n, g in versus.items() if g["beyond_noise"]]
    recipe = np.mean([r.mean() for r in reference])
    notes = (
        f"Selection split: the demo's subject with {args.test_runs} fresh test runs (10-repeat "
        f"averages), {len(scenes)} windows, {len(np.unique(scenes))} scenes; score: 50-way top-1 "
        "retrieval of each window's true CLIP image embedding among 49 others by the encoder's "
        f"embedding ({TRIALS} draws per window, the same for every row; chance 0.02). Stage 1 = "
        "experiments/stage1.yaml with the demo's CLIP, exported at its best validation epoch; "
        f"mean ± SE over training seeds {seeds}. Δ: paired with the recipe at the same seed and "
        "window; beyond noise when |Δ| > 2 × the larger of its two standard errors. "
        f"Ridge fMRI → CLIP scores {ridge['fmri'].mean():.3f} against the recipe's {recipe:.3f}; "
        f"on the noise-free fMRI it reaches {ridge['fmri_clean'].mean():.3f}. Beyond noise: "
        + (", ".join(f"{LABELS[n]} ({versus[n]['diff']:+.3f})" for n in beyond) or "none")
        + f". 1-minute load average {load:.1f} at the start."
    )
    data_out = {"test_runs": args.test_runs, "seeds": seeds, "load": load,
                "n_windows": len(scenes), "variants": {n: VARIANTS[n] for n in names},
                "selection_50way": {n: [float(scored[(n, s)]["per_window"].mean()) for s in seeds]
                                    for n in names},
                "val_50way": {n: [scored[(n, s)]["val"] for s in seeds] for n in names},
                "epochs": {n: [scored[(n, s)]["epoch"] for s in seeds] for n in names},
                "versus_recipe": versus,
                "ridge": {k: float(v.mean()) for k, v in ridge.items()}}  # fmt: skip
    write_result("stage1_levers", "Which stage-1 settings move its embedding, seeded on a "
                 "selection split (bench/stage1_levers.py)", table, data_out, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
