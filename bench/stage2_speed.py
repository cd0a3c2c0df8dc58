"""Stage 2 on the demo preset: training step time and peak RSS, DDIM seconds per video vs steps,
``make train-stage2`` wall time, and (``--ssim``) the effect of the dependent noise ratio ρ on the
test SSIM.

1. **Step**: one optimisation step (fMRI encoder → projection → ε-loss of the UNet → AdamW) of
   ``VideoDiffusionModule`` with ``experiments/stage2.yaml``'s model on clips of 6 × 32 × 32,
   at batch 16 and 32, each in its own subprocess (peak RSS from ``os.wait4``).
2. **Train**: ``neurocine train stage2 --config experiments/stage2.yaml`` as ``make
   train-stage2`` runs it, on the simulated default (``neurocine simulate``, seed 0) with a
   stage-1 encoder (``--encoder DIR``; default: a random encoder of the stage-1 sizes, enough
   for timing): wall time and peak RSS of the whole command.
3. **Sampling**: seconds per video of the trained model's DDIM sampling (guidance 3, batch 16)
   for 10 / 25 / 50 steps.
4. **ρ** (``--ssim``): a second training with ``stage2.noise.ratio=0``; both runs reconstruct the
   first ``--ssim-clips`` test clips (25 steps, same seeds) and are scored with ``video_ssim``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "stage2.yaml"
STAGE1 = ROOT / "experiments" / "stage1.yaml"
FRAMES, SIZE, VOXELS, WINDOW = 6, 32, 2000, 2


def run_measured(cmd: list[str]) -> dict:
    """Wall and CPU seconds, peak RSS (MB) and exit status of a subprocess (``os.wait4``)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    return {
        "wall_s": time.perf_counter() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "code": os.waitstatus_to_exitcode(status),
    }


# -- 1. one training step, in a worker process ----------------------------------------------------


def step_worker(batch: int, steps: int, out: Path) -> None:
    from neurocine.config import load_config
    from neurocine.diffusion.scheduler import training_scheduler
    from neurocine.lit.stage2 import VideoDiffusionModule, condition_adapter
    from neurocine.models.encoder_factory import build_encoder
    from neurocine.models.video_unet import build_denoiser

    cfg = load_config(EXPERIMENT)
    encoder = build_encoder(load_config(STAGE1).encoder, VOXELS, WINDOW, 64)
    denoiser = build_denoiser(cfg.unet)
    adapter = condition_adapter(str(cfg.stage2.condition), encoder, denoiser)
    scheduler = training_scheduler(
        clip_sample=not denoiser.codec.is_latent, dependent_ratio=float(cfg.stage2.noise.ratio)
    )
    module = VideoDiffusionModule(
        encoder, adapter, denoiser.unet, denoiser.codec, scheduler,
        frames_shape=(FRAMES, SIZE, SIZE), lr=float(cfg.stage2.lr),
    )  # fmt: skip
    module.log = lambda *args, **kwargs: None  # no Trainer attached: logging is a no-op
    optimizer = module.configure_optimizers()["optimizer"]
    g = torch.Generator().manual_seed(0)
    data = {
        "fmri": torch.randn(batch, WINDOW, VOXELS, generator=g),
        "frames": torch.randint(0, 256, (batch, FRAMES, SIZE, SIZE, 3), generator=g).to(
            torch.uint8
        ),
    }
    times, cpu = [], []
    for i in range(steps + 2):
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = module._common_step(data, "train", g)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    params = sum(p.numel() for p in denoiser.unet.parameters())
    out.write_text(json.dumps({"times": times, "cpu": cpu, "unet_params": params}))


def measure_steps(batches: list[int], steps: int, workdir: Path) -> list[dict]:
    rows = []
    for batch in batches:
        out = workdir / f"step_{batch}.json"
        cmd = [sys.executable, "-m", "bench.stage2_speed", "--worker-step", str(batch),
               "--steps", str(steps), "--worker-out", str(out)]  # fmt: skip
        measured = run_measured(cmd)
        if measured["code"]:
            raise SystemExit(f"step worker (batch {batch}) failed: exit {measured['code']}")
        result = json.loads(out.read_text())
        median = statistics.median(result["times"])
        rows.append(
            {
                "batch": batch,
                "s_per_step": median,
                "cpu_s_per_step": statistics.median(result["cpu"]),
                "samples_per_s": batch / median,
                "peak_rss_mb": measured["peak_rss_mb"],
                "unet_params": result["unet_params"],
            }
        )
    return rows


# -- 2. the real command --------------------------------------------------------------------------


def prepare_data(workdir: Path, encoder: str | None) -> tuple[Path, Path]:
    """The simulated default subject and a stage-1 encoder directory."""
    data = workdir / "sim" / "subject1.h5"
    subprocess.run(
        [sys.executable, "-m", "neurocine", "simulate", "--out", str(data)], cwd=ROOT, check=True
    )
    if encoder:
        return data, Path(encoder)
    from neurocine.config import load_config
    from neurocine.models.encoder_factory import build_encoder

    directory = workdir / "stage1" / "encoder"
    build_encoder(load_config(STAGE1).encoder, VOXELS, WINDOW, 64).save_atomic(directory)
    return data, directory


def train(data: Path, encoder: Path, runs: Path, ratio: float | None) -> tuple[dict, Path]:
    """Run the training command; its measurements and the run directory."""
    cmd = [sys.executable, "-m", "neurocine", "train", "stage2", "--config", str(EXPERIMENT),
           f"data.path={data}", f"stage2.encoder_ckpt={encoder}", f"runs_dir={runs}",
           "trainer.enable_progress_bar=false"]  # fmt: skip
    if ratio is not None:
        cmd.append(f"stage2.noise.ratio={ratio}")
    measured = run_measured(cmd)
    if measured["code"]:
        raise SystemExit(f"neurocine train stage2 failed with exit {measured['code']}")
    return measured, (runs / "stage2" / "latest").resolve()


# -- 3. sampling ----------------------------------------------------------------------------------


def sampling_speed(run: Path, steps_list: list[int], n_videos: int) -> list[dict]:
    from neurocine.diffusion.pipeline import VideoDecoder

    decoder = VideoDecoder.load(run / "model")
    fmri = torch.randn(n_videos, WINDOW, VOXELS, generator=torch.Generator().manual_seed(0))
    rows = []
    for steps in steps_list:
        start = time.perf_counter()
        decoder.generate(fmri, steps=steps, guidance_scale=3.0,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
        seconds = time.perf_counter() - start
        rows.append({"steps": steps, "s_per_video": seconds / n_videos, "batch": n_videos})
    return rows


# -- 4. ρ vs SSIM ---------------------------------------------------------------------------------


def mean_clip_ssim(data_path: Path, clips: int) -> float:
    """Reference level: SSIM of the mean training clip (one constant video) on the same clips."""
    import h5py
    import numpy as np

    from neurocine.metrics import video_ssim

    with h5py.File(data_path) as f:
        mean = f["train/frames"][()].mean(axis=0).round().astype(np.uint8)
        truth = f["test/frames"][:clips]
    return float(video_ssim(np.broadcast_to(mean, truth.shape), truth))


def test_ssim(run: Path, clips: int, workdir: Path) -> float:
    import h5py

    from neurocine.metrics import video_ssim
    from neurocine.reconstruct import reconstruct

    out = workdir / f"recon_{run.name}"
    result = reconstruct(run, out, limit=clips, progress=False, videos=False)
    with h5py.File(result.h5_path) as f:
        recon, index = f["frames"][()], f["index"][()]
        data_path = f.attrs["data_path"]
    with h5py.File(data_path) as f:
        truth = f["test/frames"][()][index]
    return float(video_ssim(recon, truth))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="*", default=[16, 32])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per batch size")
    parser.add_argument("--encoder", default=None, help="a trained stage-1 encoder directory")
    parser.add_argument("--no-train", action="store_true", help="only the step timings")
    parser.add_argument("--ssim", action="store_true", help="also train with ρ = 0 and score SSIM")
    parser.add_argument("--ssim-clips", type=int, default=48)
    parser.add_argument("--sample-videos", type=int, default=16)
    parser.add_argument("--worker-step", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_step is not None:
        step_worker(args.worker_step, args.steps, Path(args.worker_out))
        return 0

    load = os.getloadavg()[0]
    data: dict = {"load_average_1min_at_start": load}
    with tempfile.TemporaryDirectory(prefix="stage2-bench-") as tmp:
        workdir = Path(tmp)
        data["steps"] = measure_steps(args.batches, args.steps, workdir)
        if not args.no_train:
            sim, encoder = prepare_data(workdir, args.encoder)
            measured, run = train(sim, encoder, workdir / "runs", None)
            config = run / "model" / "scheduler" / "scheduler_config.json"
            ratio = json.loads(config.read_text())["dependent_ratio"]
            data["train"] = {
                **measured,
                "dependent_ratio": ratio,
                "encoder": "trained" if args.encoder else "random",
            }
            data["sampling"] = sampling_speed(run, [10, 25, 50], args.sample_videos)
            if args.ssim:
                ssim_rho = test_ssim(run, args.ssim_clips, workdir)
                _, run0 = train(sim, encoder, workdir / "runs0", 0.0)
                ssim_zero = test_ssim(run0, args.ssim_clips, workdir)
                data["ssim"] = {"clips": args.ssim_clips, "rho": ratio,
                                "ssim_rho": ssim_rho, "ssim_rho0": ssim_zero,
                                "ssim_mean_clip": mean_clip_ssim(sim, args.ssim_clips)}  # fmt: skip

    steps = data["steps"]
    tables = [
        markdown_table(
            ["batch", "s / step", "CPU s / step", "samples / s", "peak RSS (MB)", "UNet params"],
            [
                [
                    r["batch"],
                    r["s_per_step"],
                    r["cpu_s_per_step"],
                    r["samples_per_s"],
                    r["peak_rss_mb"],
                    f"{r['unet_params'] / 1e6:.2f} M",
                ]
                for r in steps
            ],
        )
    ]
    if "train" in data:
        t = data["train"]
        command = "neurocine train stage2 --config experiments/stage2.yaml"
        row = [command, t["wall_s"], t["cpu_s"], t["peak_rss_mb"], t["dependent_ratio"]]
        tables.append(
            markdown_table(
                ["command", "wall (s)", "CPU (s)", "peak RSS (MB)", "ρ", "stage-1 encoder"],
                [[*row, t["encoder"]]],
            )
        )
        tables.append(
            markdown_table(
                ["DDIM steps", "s / video", "batch"],
                [[r["steps"], r["s_per_video"], r["batch"]] for r in data["sampling"]],
            )
        )
    if "ssim" in data:
        s = data["ssim"]
        tables.append(
            markdown_table(
                ["ρ (training and initial noise)", f"test SSIM ({s['clips']} clips, 25 steps)"],
                [
                    [0.0, s["ssim_rho0"]],
                    [s["rho"], s["ssim_rho"]],
                    ["reference: the mean training clip", s["ssim_mean_clip"]],
                ],  # fmt: skip
            )
        )
    notes = (
        f"torch threads: {torch.get_num_threads()}. "
        f"1-minute load average at the start: {load:.1f} (the machine was shared; wall times "
        "grow with it). Step = forward + backward + AdamW of the whole module on synthetic "
        "batches after two warm-up steps (median of the timed ones); the training command "
        "includes start-up, data loading, validation and the export."
    )
    write_result(
        "stage2_speed", "Stage 2 (bench/stage2_speed.py)", "\n\n".join(tables), data, notes
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
