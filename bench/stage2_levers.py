"""Where does stage 2 lose to ridge: in the prior or in stage 1's embedding?

The demo's stage 2 sampled from pure dependent noise does not beat pixel ridge on fresh test
scenes (``bench/demo_robustness.py``). This benchmark measures the levers that act on stage 2
and a ceiling that tells them apart, all on the *selection* split of
``bench/stage2_finetune.py`` (the demo's subject with ``--test-runs`` fresh test runs; no
reported figure uses its clips):

- ``recipe``: the demo's stage-2 run as it is, scored beside ridge, the mean frame, the oracle
  (noise-free fMRI) and the **CLIP oracle**: the same decoder conditioned on each clip's true
  CLIP image embedding, stage 2's score were stage 1 perfect;
- stage 1 of a chosen quality: the recipe's run conditioned on its stage-1 embedding blended
  toward the true CLIP image embedding (:data:`BLENDS`), between the recipe and the CLIP oracle;
- sampling levers on the same run: classifier-free guidance 1 and 6 (the recipe: 3) and 25
  DDIM steps (the demo: 10);
- training levers: the stage-1 encoder fine-tuned in stage 2 (``stage2.freeze_encoder=false``
  at two learning rates), stage 1 trained for 24 epochs instead of 12, stage 1 at token
  width 64 with weight decay 0.5 (``bench/stage1_levers.py``'s best retrieval) and both, each
  exported at its best validation epoch, as the recipe does.

Each row is paired with the recipe (same clips, same n-way draws; standard error with the
clips' scenes as clusters) and with ridge. The ``--seeded`` training levers are also trained at
the other ``--seeds`` (both stages), each paired with the recipe retrained at that seed; their
seeded difference has a standard error over seeds and one over scenes, and is beyond noise when
it exceeds 2 × the larger. Work is kept in ``--workdir`` per variant and seed, so an
interrupted run resumes where it stopped.

    python -m bench.stage2_levers --demo-dir DEMO_DIR [--workdir DIR] [--test-runs 8]
                                  [--variants recipe,guidance_1,…] [--seeds 0,1,2]
                                  [--seeded stage1_24_epochs,…]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from bench.common import markdown_table, write_result
from bench.demo_robustness import demo_and_selection_split, run
from bench.stage1_levers import seeded_difference
from bench.stage2_finetune import METRICS, PAIRED, gap, train_variant, variant_names
from neurocine.config import load_saved_config

REFERENCE = "recipe"
# name → (stage-1 training overrides or None: the demo's encoder; stage-2 training overrides
# or None: the demo's stage-2 run; sampling overrides at reconstruction)
VARIANTS: dict[str, tuple[list[str] | None, list[str] | None, list[str]]] = {
    REFERENCE: (None, None, []),
    "guidance_1": (None, None, ["sampling.guidance_scale=1.0"]),
    "guidance_6": (None, None, ["sampling.guidance_scale=6.0"]),
    "steps_25": (None, None, ["sampling.steps=25"]),
    "encoder_lr1e-5": (None, ["stage2.freeze_encoder=false", "stage2.encoder_lr=1e-5"], []),
    "encoder_lr1e-4": (None, ["stage2.freeze_encoder=false", "stage2.encoder_lr=1e-4"], []),
    "stage1_24_epochs": (["trainer.max_epochs=24"], [], []),
    "stage1_width_64_wd_0.5": (["encoder.embed_dim=64", "stage1.weight_decay=0.5"], [], []),
    "stage1_24_epochs_width_64_wd_0.5": (
        ["trainer.max_epochs=24", "encoder.embed_dim=64", "stage1.weight_decay=0.5"],
        [],
        [],
    ),
}
LABELS = {
    REFERENCE: "NeuroCine, the demo's run (guidance 3, 10 steps, encoder frozen, stage 1: 12 ep.)",
    "guidance_1": "guidance 1",
    "guidance_6": "guidance 6",
    "steps_25": "25 DDIM steps",
    "encoder_lr1e-5": "encoder fine-tuned in stage 2, lr 1e-5",
    "encoder_lr1e-4": "encoder fine-tuned in stage 2, lr 1e-4",
    "stage1_24_epochs": "stage 1 for 24 epochs",
    "stage1_width_64_wd_0.5": "stage 1 at token width 64, weight decay 0.5",
    "stage1_24_epochs_width_64_wd_0.5": "stage 1 for 24 epochs at token width 64, weight decay 0.5",
}
SEEDED = ("stage1_24_epochs", "stage1_width_64_wd_0.5", "stage1_24_epochs_width_64_wd_0.5")
# stage 1 of a chosen quality: the recipe's embedding moved toward the true CLIP image embedding,
# normalize(w · true + (1 − w) · predicted) (both L2-normalised); key → w
BLENDS = {"blend_0.15": 0.15, "blend_0.25": 0.25}
CEILINGS = {  # baseline rows scored beside the recipe: key → label
    "ridge": "ridge fMRI → pixels",
    "mean_frame": "mean training frame",
    "oracle": "oracle: noise-free fMRI",
    "clip_oracle": "CLIP oracle: true CLIP image embedding",
}


def score(samples: Path, out: Path, split: Path, baselines: list[str], evaluator: Path) -> dict:
    """``neurocine evaluate`` of ``samples`` on ``split`` (evaluator seed 0, trained once into
    ``evaluator``) → metrics.json."""
    if not (out / "metrics.json").is_file():
        run(["evaluate", "--run", str(samples), "--out", str(out), "--no-progress",
             f"data.path={split}", f"evaluation.baselines=[{','.join(baselines)}]",
             f"evaluation.evaluator_dir={evaluator}"])  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


def minus(clips: dict, reference: dict, scenes: list) -> dict:
    """Per-clip scores ``clips`` minus ``reference`` on :data:`PAIRED`, clustered by scene."""
    return gap({"per_clip": {"neurocine": clips}}, reference, scenes)


def folder(work: Path, name: str, seed: int) -> Path:
    """Where variant ``name`` at training ``seed`` keeps its runs, samples and scores."""
    return work / name if seed == 0 else work / name / f"seed{seed}"


def blended_samples(run_dir: Path, recipe: Path, split: Path, weight: float, out: Path) -> float:
    """Sample the recipe's run on the clips of its reconstructions ``recipe`` as they were
    sampled (same seeds and settings), conditioned on the blend of :data:`BLENDS` with weight
    ``weight``; write ``out/reconstructions.h5`` and return the blend's 50-way retrieval of the
    true embedding (the stage-1 quality it stands for)."""
    import torch
    import torch.nn.functional as F

    from bench.stage1_levers import per_query, windows
    from neurocine.analysis.runs import read_reconstructions
    from neurocine.diffusion.pipeline import VideoDecoder
    from neurocine.reconstruct import sample_clips, write_reconstructions

    _, rows, attrs = read_reconstructions(recipe / "reconstructions.h5")
    cfg = load_saved_config(run_dir / "config.yaml")
    if int(attrs["steps"]) != int(cfg.sampling.steps) or attrs["init"] != "noise":
        raise SystemExit(f"{recipe}: sampled otherwise than {run_dir}'s config")
    data = windows(run_dir, split, "test")
    position = {int(r): i for i, r in enumerate(data["index"])}
    take = np.array([position[int(r)] for r in rows])
    decoder = VideoDecoder.load(run_dir / "model").eval()
    fmri = torch.from_numpy(data["fmri"][take])
    true = F.normalize(torch.from_numpy(data["clip_image"][take]).float(), dim=-1)
    with torch.no_grad():
        predicted = F.normalize(decoder.encoder(fmri).embedding, dim=-1)
    blend = F.normalize(weight * true + (1 - weight) * predicted, dim=-1)
    batch = int(cfg.sampling.batch_size)
    frames = np.concatenate([
        sample_clips(decoder, fmri[i : i + batch], rows[i : i + batch].tolist(), cfg.sampling,
                     embedding=blend[i : i + batch])
        for i in range(0, len(rows), batch)
    ])  # fmt: skip
    write_reconstructions(out / "reconstructions.h5", frames, rows, {**attrs, "blend": weight})
    return float(per_query(blend.numpy(), true.numpy()).mean())


def variant_run(name: str, demo: Path, work: Path, seed: int = 0) -> Path:
    """The stage-2 run of variant ``name``: the demo's, or trained into its :func:`folder`.

    At ``seed`` 0 the recipe is the demo's run; at another seed both stages are retrained with
    ``seed=`` (the recipe too, so that each seed's variant has its own reference).
    """
    stage1, stage2, _ = VARIANTS[name]
    runs = demo / "runs" / "demo"
    if seed == 0 and stage2 is None:
        return (runs / "stage2" / "latest").resolve()
    seeding = [f"seed={seed}"] if seed else []
    if seed:
        stage1, stage2 = stage1 or [], stage2 or []
    here = folder(work, name, seed)
    encoder = (runs / "stage1" / "latest" / "encoder").resolve()
    if stage1 is not None:
        stage1_runs = here / "stage1_runs"
        if not (stage1_runs / "stage1" / "latest").exists():
            run(["train", "stage1", "--config", "experiments/stage1.yaml",
                 f"data.path={demo / 'subject1.h5'}", f"runs_dir={stage1_runs}",
                 "trainer.enable_progress_bar=false", "clip.preset=tiny", *seeding,
                 *stage1])  # fmt: skip
        encoder = (stage1_runs / "stage1" / "latest" / "encoder").resolve()
    stage2_runs = here / "runs"
    if (stage2_runs / "stage2" / "latest").exists():
        return (stage2_runs / "stage2" / "latest").resolve()
    assert stage2 is not None
    return train_variant(demo / "subject1.h5", encoder, stage2_runs, [*seeding, *stage2])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default=None, help="reuse a demo's data and runs")
    parser.add_argument("--workdir", default=None, help="keep (and resume) the work here")
    parser.add_argument("--test-runs", type=int, default=8, help="runs of the selection split")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated keys")
    parser.add_argument("--seeds", default="0", help="training seeds of the --seeded levers")
    parser.add_argument("--seeded", default=",".join(SEEDED), help="training levers to seed")
    args = parser.parse_args()
    names = variant_names(args.variants, VARIANTS)
    if REFERENCE not in names:
        raise SystemExit(f"--variants: needs '{REFERENCE}'")
    names = [REFERENCE, *(n for n in names if n != REFERENCE)]
    seeds = [int(x) for x in args.seeds.split(",") if x]
    if 0 not in seeds:
        raise SystemExit("--seeds: needs 0 (the demo's run and the variants' first seed)")
    seeded = [n for n in variant_names(args.seeded, VARIANTS) if n in names]
    if any(VARIANTS[n][1] is None for n in seeded):
        raise SystemExit(f"--seeded: only training levers can be seeded, not {seeded}")
    seeded = seeded if len(seeds) > 1 else []
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stage2_levers_") as tmp:
        work = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        demo, split = demo_and_selection_split(work, args.demo_dir, args.test_runs)
        scored = {}
        for name in [*names[1:], REFERENCE]:  # the recipe last: its ceilings take longest
            samples = work / name / "samples"
            if not (samples / "reconstructions.h5").is_file():
                run(["reconstruct", "--run", str(variant_run(name, demo, work)), "--out",
                     str(samples), "--no-videos", "--no-progress", f"data.path={split}",
                     *VARIANTS[name][2]])  # fmt: skip
            baselines = list(CEILINGS) if name == REFERENCE else []
            scored[name] = score(
                samples, work / name / "scored", split, baselines, work / "evaluator"
            )
            print(f"{name}: {PAIRED} {scored[name]['rows']['neurocine'][PAIRED]:.3f}", flush=True)
        blends = {}
        for key, weight in BLENDS.items():
            here = work / key
            if not (here / "blend.json").is_file():
                here.mkdir(parents=True, exist_ok=True)
                retrieval = blended_samples(variant_run(REFERENCE, demo, work), work / REFERENCE /
                                            "samples", split, weight, here / "samples")  # fmt: skip
                (here / "blend.json").write_text(json.dumps({"weight": weight,
                                                             "retrieval": retrieval}))  # fmt: skip
            blends[key] = json.loads((here / "blend.json").read_text())
            scored[key] = score(here / "samples", here / "scored", split, [], work / "evaluator")
            print(f"{key}: {PAIRED} {scored[key]['rows']['neurocine'][PAIRED]:.3f}", flush=True)
        by_seed = {(n, 0): scored[n] for n in names}
        for seed, name in ((s, n) for s in seeds if s for n in [REFERENCE, *seeded]):
            here = folder(work, name, seed)
            if not (here / "samples" / "reconstructions.h5").is_file():
                run(["reconstruct", "--run", str(variant_run(name, demo, work, seed)), "--out",
                     str(here / "samples"), "--no-videos", "--no-progress",
                     f"data.path={split}"])  # fmt: skip
            by_seed[(name, seed)] = score(
                here / "samples", here / "scored", split, [], work / "evaluator"
            )
            value = by_seed[(name, seed)]["rows"]["neurocine"][PAIRED]
            print(f"{name} seed {seed}: {PAIRED} {value:.3f}", flush=True)
    first = scored[REFERENCE]
    if any(r["clip_rows"] != first["clip_rows"] for r in [*by_seed.values(), *scored.values()]):
        raise SystemExit("the variants scored different clips: their gaps cannot be paired")
    scenes = first["clip_scenes"]
    recipe_clips = first["per_clip"]["neurocine"]
    vs_recipe = {n: gap(scored[n], recipe_clips, scenes) for n in names[1:]}
    vs_ridge = {n: gap(scored[n], first["per_clip"]["ridge"], scenes) for n in names}

    def cell(g: dict | None) -> str:
        return f"{g['diff']:+.3f} ± {g['se']:.3f}" if g else ""

    rows = [[LABELS[n], *(scored[n]["rows"]["neurocine"].get(m, "") for m in METRICS),
             cell(vs_recipe.get(n)), cell(vs_ridge[n])] for n in names]  # fmt: skip
    ceilings = {}
    for key, label in CEILINGS.items():
        if key == "ridge" or key not in first["rows"]:
            if key == "ridge":
                rows.append([label, *(first["rows"][key].get(m, "") for m in METRICS), "", ""])
            continue
        ceilings[key] = minus(first["per_clip"][key], recipe_clips, scenes)
        versus_ridge = minus(first["per_clip"][key], first["per_clip"]["ridge"], scenes)
        rows.append([label, *(first["rows"][key].get(m, "") for m in METRICS),
                     cell(ceilings[key]), cell(versus_ridge)])  # fmt: skip
    for key, blend in blends.items():
        ceilings[key] = gap(scored[key], recipe_clips, scenes)
        versus_ridge = gap(scored[key], first["per_clip"]["ridge"], scenes)
        label = (f"stage 1's embedding blended toward the true one, w {blend['weight']} "
                 f"(its 50-way retrieval {blend['retrieval']:.2f})")  # fmt: skip
        rows.append([label, *(scored[key]["rows"]["neurocine"].get(m, "") for m in METRICS),
                     cell(ceilings[key]), cell(versus_ridge)])  # fmt: skip

    def per_clip(name: str, seed: int, row: str = "neurocine") -> np.ndarray:
        return np.asarray(by_seed[(name, seed)]["per_clip"][row][PAIRED], dtype=np.float64)

    def seeded_cell(g: dict) -> str:
        return f"{g['diff']:+.3f} ± {g['se_seeds']:.3f} / {g['se_scenes']:.3f}"

    ridge_clips = [per_clip(REFERENCE, 0, "ridge")] * len(seeds)
    seeded_gaps, seeded_vs_ridge = {}, {}
    for n in [REFERENCE, *seeded] if seeded else []:
        clips = [per_clip(n, s) for s in seeds]
        if n != REFERENCE:
            seeded_gaps[n] = seeded_difference(clips, [per_clip(REFERENCE, s) for s in seeds],
                                               scenes)  # fmt: skip
        seeded_vs_ridge[n] = seeded_difference(clips, ridge_clips, scenes)
        means = [float(np.mean([by_seed[(n, s)]["rows"]["neurocine"].get(m, np.nan)
                                for s in seeds])) for m in METRICS]  # fmt: skip
        rows.append([f"{LABELS[n]}: mean over training seeds {seeds}", *means,
                     seeded_cell(seeded_gaps[n]) if n in seeded_gaps else "",
                     seeded_cell(seeded_vs_ridge[n])])  # fmt: skip
    notes = (
        f"Selection split: the demo's subject with {args.test_runs} fresh test runs, "
        f"{first['n_clips']} clips scored (scene cuts left out); evaluator seed 0; DDIM 10 steps "
        "from pure dependent noise (the demo's sampling); 1-minute load average "
        f"{load:.1f} at the start. Gaps: {PAIRED} paired over the same clips and n-way draws "
        "(± standard error, the clips' scenes as clusters); a baseline's gaps are the "
        "baseline minus the recipe and minus ridge. A trained variant's own row is one training "
        "seed (0): its standard error is over scenes, not seeds, so a training lever beyond "
        "2 SE there is a lead for a seeded check, not a choice."
    )
    if seeded:
        notes += (
            f" Seeded rows: both stages retrained at each of the training seeds {seeds} (seed 0: "
            "the demo's run for the recipe), each variant paired with the recipe at the same "
            "seed and clip; ± standard error over seeds / over scenes, beyond noise when the "
            "difference exceeds 2 × the larger. "
            + "; ".join(
                f"{LABELS[n]}: {seeded_cell(g)} vs the recipe, "
                + ("beyond noise" if g["beyond_noise"] else "within noise")
                for n, g in seeded_gaps.items()
            )
            + f"; the recipe vs ridge over these seeds: {seeded_cell(seeded_vs_ridge[REFERENCE])}."
        )
    if "clip_oracle" in ceilings:
        c = ceilings["clip_oracle"]
        notes += (
            f" The CLIP oracle is ahead of the recipe by {cell(c)}: given the true embedding, "
            "the prior decodes far more of the clip than it does from stage 1's prediction"
            + (
                ", so the limit is stage 1's embedding, not the prior."
                if c["diff"] > 2 * c["se"]
                else "; the difference is within noise."
            )  # fmt: skip
        )
    if blends:
        notes += (
            " Blend rows: the recipe's run sampled as it was, conditioned on its stage-1 "
            "embedding moved toward each clip's true CLIP image embedding, normalize(w · true + "
            "(1 − w) · predicted): a stage 1 whose 50-way retrieval of the true embedding is the "
            "figure in brackets (the recipe's is that of bench/stage1_levers.py), to read how "
            "good stage 1 must be for stage 2 to lead ridge."
        )
    beyond = [n for n, g in vs_recipe.items() if abs(g["diff"]) > 2 * g["se"]]
    notes += (
        " Levers beyond 2 SE of the recipe: "
        + (", ".join(f"{LABELS[n]} ({cell(vs_recipe[n])})" for n in beyond) or "none")
        + "."
    )
    table = markdown_table(["variant", *METRICS, f"{PAIRED} − recipe", f"{PAIRED} − ridge"], rows)
    data_out = {"n_clips": first["n_clips"], "test_runs": args.test_runs, "load": load,
                "rows": {k: v["rows"] for k, v in scored.items()}, "vs_recipe": vs_recipe,
                "vs_ridge": vs_ridge, "ceilings_vs_recipe": ceilings, "blends": blends,
                "variants": {n: VARIANTS[n] for n in names}, "seeds": seeds,
                "seeded_rows": {f"{n} seed {s}": r["rows"] for (n, s), r in by_seed.items() if s},
                "seeded_vs_recipe": seeded_gaps, "seeded_vs_ridge": seeded_vs_ridge}  # fmt: skip
    write_result("stage2_levers", "Where stage 2 loses to ridge: levers and ceilings on a "
                 "selection split (bench/stage2_levers.py)", table, data_out, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
