"""Reconstruction speed: seconds per video vs DDIM steps and batch size.

The stage-2 decoder is built as training builds it and loaded as reconstruction loads it:
``neurocine.lit.stage2.build_module`` with ``experiments/stage2.yaml`` (its ``unet`` preset —
whatever the file says when the bench runs — its condition, scheduler and dependent noise ρ
installed as ``DependentNoiseCallback`` does at fit start), ``module.export(run)`` and
``VideoDecoder.load(run/model)``. The stage-1 encoder is untrained (seeded) with
``experiments/stage1.yaml``'s encoder and the CLIP width of its ``clip`` preset: the weights do
not change the cost. Clips and voxels are those of the simulated default subject
(``SimulationConfig``: 6 × 32 × 32 frames, 2,000 voxels, window from the data module).

Every cell calls ``VideoDecoder.generate`` exactly as ``neurocine reconstruct`` does: one
generator per video (``reconstruct.video_generators``), ``cfg.sampling``'s guidance scale, η and
ρ; the DDIM step counts and batch sizes are varied. After one untimed 2-step warm-up call per
batch size, every cell is timed ``--repeats`` times, round-robin over the cells so that a change
of load touches all of them alike; the median wall and CPU (process) seconds are reported.
Acceptance: the per-video time at batch 8 is below that at batch 1 (batch time grows
sub-linearly).

Usage: ``python -m bench.sampling [--batches 1 2 4 8] [--steps 10 25] [--repeats 2]
[--threads 1] [key=value ...]`` (overrides of ``experiments/stage2.yaml``, e.g.
``unet.preset=tiny``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from diffusers.utils import logging as diffusers_logging

from bench.common import RESULTS, markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "stage2.yaml"
STAGE1 = ROOT / "experiments" / "stage1.yaml"
NAME = "sampling"
TITLE = "Sampling speed vs DDIM steps and batch size (bench/sampling.py)"


def simulated_sizes() -> tuple[tuple[int, int, int], int]:
    """``(F, H, W)`` and the voxel count of ``neurocine simulate``'s default subject."""
    from omegaconf import OmegaConf

    from neurocine.config import SimulationConfig
    from neurocine.data.simulate import check_config

    sim = OmegaConf.structured(SimulationConfig)
    frames = check_config(sim)  # frames per TR
    return (int(frames), int(sim.height), int(sim.width)), int(sim.n_voxels)


def build_decoder(workdir: Path, overrides: list[str] = ()):
    """The stage-2 decoder of ``experiments/stage2.yaml`` (+ ``key=value`` overrides), exported
    and loaded back; its config, the voxel count and the window."""
    from transformers.utils import logging as transformers_logging

    from neurocine.config import load_config
    from neurocine.diffusion.pipeline import VideoDecoder
    from neurocine.lit.stage2 import build_callbacks, build_module
    from neurocine.models.clip_targets import clip_embedding_dim, load_clip
    from neurocine.models.encoder_factory import build_encoder

    transformers_logging.disable_progress_bar()
    frames_shape, n_voxels = simulated_sizes()
    stage1 = load_config(STAGE1)
    clip_model = load_clip(stage1.clip)[0]
    clip_dim = clip_embedding_dim(clip_model)
    del clip_model
    encoder_dir = workdir / "encoder"
    window = int(stage1.data.window)
    build_encoder(stage1.encoder, n_voxels, window, clip_dim, int(stage1.seed)).save_atomic(
        encoder_dir
    )
    cfg = load_config(EXPERIMENT, [*overrides, f"stage2.encoder_ckpt={encoder_dir}"])
    datamodule = SimpleNamespace(n_voxels=n_voxels, frames_shape=frames_shape)
    module = build_module(cfg, datamodule)
    for callback in build_callbacks(cfg):  # the dependent noise as installed at fit start
        callback.install(module, callback.ratio_at(0, 0))
    module.export(workdir / "run")
    decoder = VideoDecoder.load(workdir / "run" / "model").eval()
    return cfg, decoder, n_voxels, int(cfg.data.window)


def time_call(decoder, cfg, fmri: torch.Tensor, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds of one ``generate`` call on ``fmri`` (as reconstruct calls it)."""
    from neurocine.reconstruct import video_generators

    sampling = cfg.sampling
    generators = video_generators(int(sampling.seed), range(fmri.shape[0]))
    start, start_cpu = time.perf_counter(), time.process_time()
    decoder.generate(
        fmri,
        steps=steps,
        guidance_scale=float(sampling.guidance_scale),
        eta=float(sampling.eta),
        generator=generators,
        dependent_ratio=sampling.dependent_ratio,
    )
    return time.perf_counter() - start, time.process_time() - start_cpu


def report(data: dict) -> tuple[str, str]:
    """The markdown table and the notes of a result's ``data``."""
    rows = data["rows"]
    batches = sorted({r["batch"] for r in rows})
    steps_list = sorted({r["steps"] for r in rows})
    table = markdown_table(
        ["DDIM steps", "batch", "s / batch", "s / video", "÷ batch 1's", "CPU s / video",
         "÷ batch 1's (CPU)"],
        [[r["steps"], r["batch"], r["s_per_batch"], r["s_per_video"], r["ratio"],
          r["cpu_s_per_video"], r["cpu_ratio"]]
         for r in sorted(rows, key=lambda r: (r["steps"], r["batch"]))],
    )  # fmt: skip
    top = batches[-1]
    verdicts = []
    for steps in steps_list:
        row = next(r for r in rows if r["batch"] == top and r["steps"] == steps)
        verdict = "met" if row["ratio"] < 1 else "NOT met"
        verdicts.append(
            f"{steps} steps: {row['ratio']:.2f} ({verdict}; CPU {row['cpu_ratio']:.2f})"
        )
    split = ""
    if len(steps_list) >= 2:  # the marginal cost of one DDIM step, from two step counts
        lo, hi = steps_list[0], steps_list[-1]
        parts, rest = [], {}
        for batch in batches:
            t = {r["steps"]: r["cpu_s_per_video"] for r in rows if r["batch"] == batch}
            per_step = (t[hi] - t[lo]) / (hi - lo)
            parts.append(f"{per_step:.3f} at batch {batch}")
            rest[batch] = t[lo] - per_step * lo
        fixed = rest[batches[0]]
        split = (
            f" CPU seconds per video of one more DDIM step (the {lo}- and {hi}-step rows): "
            + ", ".join(parts)
            + f"; the rest of a call (encoder, VAE decode, set-up) at batch {batches[0]}: "
            + (f"{fixed:.2f} s." if fixed > 0 else "≈ 0 (within the noise).")
        )
    load = data["load_avg"]
    notes = (
        f"Decoder: `unet.preset: {data['unet_preset']}` from experiments/stage2.yaml"
        + (f" with {' '.join(data['overrides'])}" if data.get("overrides") else "")
        + f" ({data['unet_class']}, {data['unet_params'] / 1e6:.2f} M parameters, "
        f"{data['space']} space {tuple(data['latent_shape'])} per clip of "
        f"{tuple(data['frames_shape'])} frames), condition '{data['condition']}', guidance "
        f"{data['guidance_scale']:g} (conditional and unconditional branch in one UNet call of "
        f"2 × batch), η {data['eta']:g}, ρ of the initial noise {data['dependent_ratio']:g}, one "
        f"generator per video as `neurocine reconstruct` draws them; untrained stage-1 encoder "
        f"({data['n_voxels']} voxels × window {data['window']}). Median of {data['repeats']} "
        f"timed calls per cell, taken round-robin over the cells after one 2-step warm-up call "
        f"per batch size; CPU seconds (process time, torch threads {data['threads']}) are the "
        f"steadier figure on a shared machine. Acceptance (per-video time at batch {top} below "
        f"batch 1's): "
        + "; ".join(verdicts)
        + "."
        + split
        + f" Shared 2-core machine, 1-min load average {load[0]:.2f} before and {load[1]:.2f} "
        f"after (other jobs were running): compare ratios within this table, not absolute seconds "
        f"across runs. Whole bench {data['total_s']:.0f} s."
    )
    return table, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per cell (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's)")
    parser.add_argument(
        "--render", action="store_true", help="rebuild table and notes from the saved result"
    )
    parser.add_argument("overrides", nargs="*", help="key=value overrides of stage2.yaml")
    args = parser.parse_args()
    if args.render:  # the measured run's command, machine and date stay as they were
        path = RESULTS / f"{NAME}.json"
        result = json.loads(path.read_text())
        result["table"], result["notes"] = report(result["data"])
        path.write_text(json.dumps(result, indent=2))
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    diffusers_logging.set_verbosity_error()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sampling-bench-") as tmp:
        cfg, decoder, n_voxels, window = build_decoder(Path(tmp), args.overrides)
    g = torch.Generator().manual_seed(0)
    fmri = torch.randn(max(args.batches), window, n_voxels, generator=g)
    for batch in args.batches:  # warm-up: one 2-step call per batch size
        time_call(decoder, cfg, fmri[:batch], 2)
    cells = [(steps, batch) for steps in args.steps for batch in args.batches]
    measured: dict[tuple[int, int], list[tuple[float, float]]] = {cell: [] for cell in cells}
    for repeat in range(args.repeats):  # round-robin: load drift touches every cell alike
        for steps, batch in cells:
            measured[steps, batch].append(time_call(decoder, cfg, fmri[:batch], steps))
            wall = measured[steps, batch][-1][0]
            print(f"[{repeat}] batch {batch}, {steps} steps: {wall / batch:.3f} s / video")
    rows = []
    for steps, batch in cells:
        walls = [w for w, _ in measured[steps, batch]]
        cpus = [c for _, c in measured[steps, batch]]
        rows.append(
            {
                "batch": batch,
                "steps": steps,
                "s_per_batch": statistics.median(walls),
                "s_per_video": statistics.median(walls) / batch,
                "cpu_s_per_video": statistics.median(cpus) / batch,
                "walls": walls,
                "cpus": cpus,
            }
        )
    first = min(args.batches)
    for key in ("s_per_video", "cpu_s_per_video"):
        base = {r["steps"]: r[key] for r in rows if r["batch"] == first}
        for r in rows:
            r[key.replace("s_per_video", "ratio")] = r[key] / base[r["steps"]]
    sampling = cfg.sampling
    ratio = sampling.dependent_ratio
    data = {
        "rows": rows,
        "overrides": list(args.overrides),
        "unet_preset": str(cfg.unet.preset),
        "unet_class": type(decoder.unet).__name__,
        "unet_params": sum(p.numel() for p in decoder.unet.parameters()),
        "space": "latent" if decoder.codec.is_latent else "pixel",
        "latent_shape": list(decoder.codec.latent_shape(*decoder.frames_shape)),
        "frames_shape": list(decoder.frames_shape),
        "condition": str(decoder.adapter.config.get("source", "tokens")),
        "guidance_scale": float(sampling.guidance_scale),
        "eta": float(sampling.eta),
        "dependent_ratio": float(
            decoder.scheduler.config.dependent_ratio if ratio is None else ratio
        ),
        "n_voxels": n_voxels,
        "window": window,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "load_avg": [load_before[0], os.getloadavg()[0]],
        "total_s": time.perf_counter() - started,
    }
    table, notes = report(data)
    write_result(NAME, TITLE, table, data, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
