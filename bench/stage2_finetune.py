"""What should stage 2 train? Chosen on a selection split that no reported figure uses.

Stage 2 starts from the tiny video prior, which already answers to CLIP embeddings; stage 1
predicts such an embedding from fMRI. This benchmark trains ``experiments/stage2.yaml`` on the
demo's data and stage-1 encoder in several variants of what learns (``stage2.unet_trainable``:
the condition adapter only; low-rank adapters on the UNet's attention, through peft; the motion
modules; both) and at which learning rate, all with the recipe's dependent noise, and samples
each with the paper's start from pure (dependent) noise. Every variant is scored on a
*selection* split: the demo's simulated subject with ``--test-runs`` fresh test runs (the
training split is the same; the demo's 3-run test split, the 12-run split of
``bench/sampling_start.py`` and the 24-run report split of ``bench/demo_robustness.py`` have
other scenes), so the choice it makes is not read off the clips the README reports. Each row is
paired with the first (same clips, same n-way draws; standard error with the clips' scenes as
clusters), and with ridge.

    python -m bench.stage2_finetune [--demo-dir DIR] [--test-runs 8] [--variants a,b]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bench.common import markdown_table, write_result
from bench.demo_robustness import demo_run, evaluate, larger_test_split, run
from neurocine.evaluation import paired_differences

ROOT = Path(__file__).resolve().parent.parent
# name → stage-2 training overrides (on top of experiments/stage2.yaml with the demo's settings)
VARIANTS = {
    "adapter": ["stage2.unet_trainable=none"],
    "lora": ["stage2.unet_trainable=lora"],
    "motion": ["stage2.unet_trainable=motion"],
    "motion_lora": ["stage2.unet_trainable=motion_lora"],
    "lora_lr1e-3": ["stage2.unet_trainable=lora", "stage2.lr=1e-3"],
    "motion_lora_lr1e-3": ["stage2.unet_trainable=motion_lora", "stage2.lr=1e-3"],
}
LABELS = {
    "adapter": "condition adapter only (UNet frozen), lr 2e-4",
    "lora": "LoRA rank 8 on the attention, lr 2e-4",
    "motion": "motion modules, lr 2e-4",
    "motion_lora": "motion modules + LoRA, lr 2e-4",
    "lora_lr1e-3": "LoRA rank 8 on the attention, lr 1e-3",
    "motion_lora_lr1e-3": "motion modules + LoRA, lr 1e-3",
}
SAMPLING = ["sampling.steps=10", "sampling.init=noise", "sampling.strength=1.0"]
METRICS = ("ssim", "frame_50way", "video_50way", "video_50way_strict", "clip_similarity")
PAIRED = "video_50way"


def train_variant(data: Path, encoder: Path, out: Path, overrides: list[str]) -> Path:
    """Train stage 2 with ``overrides``; its run directory."""
    run(["train", "stage2", "--config", "experiments/stage2.yaml", f"data.path={data}",
         f"runs_dir={out}", f"stage2.encoder_ckpt={encoder}", "trainer.enable_progress_bar=false",
         "clip.preset=tiny", *SAMPLING, *overrides])  # fmt: skip
    return (out / "stage2" / "latest").resolve()


def variant_names(text: str, known: Iterable[str]) -> list[str]:
    """The comma-separated ``--variants`` keys; exits naming any that are not ``known``."""
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {list(known)}")
    return names


def gap(result: dict, reference: dict, scenes: list) -> dict:
    """``result`` minus ``reference`` on :data:`PAIRED`, clip by clip, clustered by scene."""
    per_clip = {"neurocine": result["per_clip"]["neurocine"], "ref": reference}
    return paired_differences(per_clip, groups=scenes)["ref"][PAIRED]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default=None, help="reuse a demo's data and stage 1")
    parser.add_argument("--test-runs", type=int, default=8, help="runs of the selection split")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated keys")
    args = parser.parse_args()
    names = variant_names(args.variants, VARIANTS)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="stage2_finetune_") as tmp:
        tmp = Path(tmp)
        demo = Path(args.demo_dir).resolve() if args.demo_dir else tmp / "demo"
        if not args.demo_dir:
            demo_run(demo)
        runs = demo / "runs" / "demo"
        encoder = (runs / "stage1" / "latest" / "encoder").resolve()
        split = larger_test_split((runs / "stage2" / "latest").resolve(), tmp / "sel.h5",
                                  args.test_runs)  # fmt: skip
        scored = {}
        for i, name in enumerate(names):
            run_dir = train_variant(demo / "subject1.h5", encoder, tmp / f"runs{i}", VARIANTS[name])
            samples = tmp / f"samples{i}"
            run(["reconstruct", "--run", str(run_dir), "--out", str(samples), "--no-videos",
                 "--no-progress", f"data.path={split}"])  # fmt: skip
            baselines = "[ridge,mean_frame]" if i == 0 else "[]"
            scored[name] = evaluate(samples, tmp / f"scored{i}", 0, 0, f"data.path={split}",
                                    f"evaluation.baselines={baselines}")  # fmt: skip
            print(f"{name}: {PAIRED} {scored[name]['rows']['neurocine'][PAIRED]:.3f}", flush=True)
    first = scored[names[0]]
    if any(scored[n]["clip_rows"] != first["clip_rows"] for n in names):
        raise SystemExit("the variants scored different clips: their gaps cannot be paired")
    scenes = first["clip_scenes"]
    vs_first = {n: gap(scored[n], first["per_clip"]["neurocine"], scenes) for n in names[1:]}
    vs_ridge = {n: gap(scored[n], first["per_clip"]["ridge"], scenes) for n in names}

    def cell(g: dict | None) -> str:
        return f"{g['diff']:+.3f} ± {g['se']:.3f}" if g else ""

    rows = [[LABELS[n], *(scored[n]["rows"]["neurocine"].get(m, "") for m in METRICS),
             cell(vs_first.get(n)), cell(vs_ridge[n])] for n in names]  # fmt: skip
    for key, label in (("ridge", "ridge fMRI → pixels"), ("mean_frame", "mean training frame")):
        rows.append([label, *(first["rows"][key].get(m, "") for m in METRICS), "", ""])
    denoiser = [n for n in names if n != "adapter"]
    best = max(denoiser, key=lambda n: scored[n]["rows"]["neurocine"][PAIRED], default=None)
    notes = (
        f"Selection split: the demo's subject with {args.test_runs} fresh test runs, "
        f"{first['n_clips']} clips scored (scene cuts left out); evaluator seed 0; DDIM 10 steps "
        "from pure dependent noise, guidance 3 (the demo's sampling); the demo's stage-1 encoder "
        "for every row, trained as experiments/stage2.yaml otherwise (ρ, epochs, warm-up)"
        f"; one variant at a time, 1-minute load average {load:.1f}. Gaps: "
        f"{PAIRED} paired over the same clips and n-way draws (± standard error, the clips' "
        "scenes as clusters)."
    )
    if best is not None:
        lead = vs_first.get(best)
        notes += (
            f" Highest {PAIRED} among the variants that train the denoiser: {LABELS[best]} "
            f"({scored[best]['rows']['neurocine'][PAIRED]:.3f}"
            + (f"; {cell(lead)} vs the adapter only" if lead else "")
            + ")."
        )
    table = markdown_table(
        ["stage 2 trains", *METRICS, f"{PAIRED} − first row", f"{PAIRED} − ridge"], rows
    )
    data_out = {"n_clips": first["n_clips"], "test_runs": args.test_runs, "load": load,
                "rows": {k: v["rows"] for k, v in scored.items()}, "vs_first": vs_first,
                "vs_ridge": vs_ridge, "variants": {n: VARIANTS[n] for n in names}}  # fmt: skip
    write_result("stage2_finetune", "What stage 2 trains, chosen on a selection split "
                 "(bench/stage2_finetune.py)", table, data_out, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
