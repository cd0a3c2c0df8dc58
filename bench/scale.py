"""How cost grows: stage-1 training vs voxel count, preprocessing vs run count.

1. **Stage 1 vs voxels.** ``experiments/stage1.yaml``'s model and optimiser, trained by a
   Lightning ``Trainer`` (cfg.trainer, no validation, no checkpoints or loggers) on a subject
   file of ``V`` voxels, each ``V`` in a process of its own, forked once torch and Lightning are
   imported (peak RSS of that child from ``os.wait4``; the imports are not re-timed). The fMRI
   arrays are synthesised with ``tests/factories.py``'s ``tiny_subject_arrays`` (random z-scored
   rows, CLIP targets of the tiny CLIP's width) rather than by ``neurocine simulate``: the step
   cost does not depend on the values, and simulating (then embedding) 90,000 voxels would cost
   more than the measurement. A step is the interval between two ``on_train_batch_end`` calls:
   data loading, augmentation (spatial token mask, temporal interpolation), forward, InfoNCE,
   backward, gradient clipping and AdamW; after ``--warmup`` untimed steps, steps are timed
   until at least ``--steps`` and ``--min-seconds`` are reached (median). The per-patch
   embedding has its own weights for every 16-voxel patch, so parameters grow linearly with
   ``V``; the tokens per TR are ``V / 16`` and spatial self-attention over them makes compute
   grow ~quadratically. A step at 90,000 voxels and the configured batch (32) takes minutes on
   a CPU core, so every ``V`` is timed at the same small batch (``--batch``) and the per-sample
   time is scaled to the configured batch (no cross-sample term but the InfoNCE logits).
2. **Preprocessing vs runs.** A cc2017 replica with the standard 91,282-grayordinate CIFTI
   layout (``neurocine.rehearsal.release``'s ``build_cc2017_tree(standard=True)``: coded 64 × 80
   movies, runs of ``--volumes`` kept volumes; each CIFTI header is made once per run length by
   nibabel and the data appended raw, as ``bench/preprocess_scale.py`` does) is converted by
   ``neurocine preprocess cc2017`` with ``data_modules/cc2017.yaml`` (cortex, nilearn cleaning,
   reproducibility selection of the ``top_n`` best as ``bench/preprocess_scale.py`` does below a
   full subject), each size in its own subprocess (``bench.preprocess_scale.run_child``). Size
   ``s`` = ``2s`` training segments × 2 repeats + ``s`` test segments × 2 repeats = ``6s`` runs.
   Output frames are the replica's tiny 16 × 20 at 2 fps, so this measures the fMRI side; movie
   decoding at full size is ``bench/preprocess_scale.py``'s figure.

Usage: ``python -m bench.scale [--voxels 1000 5000 20000 90000] [--batch 2] [--steps 1]
[--min-seconds 4] [--sizes 1 2 4] [--volumes 48] [--threads 1] [--only stage1|preprocess]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE1 = ROOT / "experiments" / "stage1.yaml"
CC2017 = ROOT / "data_modules" / "cc2017.yaml"
NAME = "scale"
TITLE = "Scaling: stage 1 vs voxels, preprocessing vs runs (bench/scale.py)"
TOP_N = 3000  # reproducibility selection below a full subject (bench/preprocess_scale.py's)
# The stage-1 subject: 4 training runs (the last 2 validation, as in data_modules/simulated.yaml)
# and 1 test run of 12 TRs; 1 frame of 16 × 20 per TR (stage 1 reads no frames).
SUBJECT = {"train_runs": 4, "test_runs": 1, "trs_per_run": 12, "frames_per_tr": 1}


def _tests_on_path() -> None:
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


# -- 1. stage 1 vs voxels -------------------------------------------------------------------------


def clip_width() -> int:
    """Width of the CLIP targets stage 1 trains against (``experiments/stage1.yaml``'s clip)."""
    from neurocine.config import load_config
    from neurocine.models.clip_targets import clip_embedding_dim, load_clip

    return clip_embedding_dim(load_clip(load_config(STAGE1).clip)[0])


def write_stage1_subject(path: Path, n_voxels: int, clip_dim: int) -> Path:
    """A subject file of ``n_voxels`` voxels with CLIP targets (tests/factories.py's writer)."""
    _tests_on_path()
    from factories import write_tiny_subject

    return write_tiny_subject(path, n_voxels=n_voxels, clip_dim=clip_dim, **SUBJECT)


def stage1_worker(data: Path, args: argparse.Namespace, out: Path) -> None:
    """Train ``args.warmup`` untimed steps, then timed ones until ``args.steps`` and
    ``args.min_seconds`` are both reached (at most ``args.max_steps``); write the step wall/CPU
    times and the parameter counts."""
    import logging
    import warnings

    import lightning as L
    import torch

    from neurocine.config import load_config
    from neurocine.data.datamodule import FMRIVideoDataModule
    from neurocine.lit.stage1 import build_module
    from neurocine.training import trainer_kwargs

    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    warmup = args.warmup
    cfg = load_config(STAGE1, [f"data.path={data}", f"data.batch_size={args.batch}"])
    datamodule = FMRIVideoDataModule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.marks: list[tuple[float, float]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if not self.marks:  # the first step starts here (its batch is already loaded)
                self.marks.append((time.perf_counter(), time.process_time()))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.marks.append((time.perf_counter(), time.process_time()))
            timed = len(self.marks) - 1 - warmup
            if timed >= args.steps:
                elapsed = self.marks[-1][0] - self.marks[warmup][0]
                trainer.should_stop = trainer.should_stop or elapsed >= args.min_seconds

    timer = StepTimer()
    kwargs = trainer_kwargs(cfg)
    kwargs.update(
        max_steps=warmup + max(args.steps, args.max_steps),
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer = L.Trainer(callbacks=[timer], **kwargs)
    trainer.fit(module, datamodule=datamodule)
    walls = [b[0] - a[0] for a, b in itertools.pairwise(timer.marks)]
    cpus = [b[1] - a[1] for a, b in itertools.pairwise(timer.marks)]
    encoder = module.encoder
    grows = ("patch_embed", "pos_embed", "proj_head.channel_mapper")
    result = {
        "wall": walls[warmup:],
        "cpu": cpus[warmup:],
        "warmup_wall": walls[:warmup],
        "params": sum(p.numel() for p in module.parameters()),
        "params_voxel_dependent": sum(
            p.numel() for n, p in encoder.named_parameters() if n.startswith(grows)
        ),
        "tokens_per_tr": math.ceil(datamodule.n_voxels / int(encoder.config.patch_size)),
        "configured_batch": int(load_config(STAGE1).data.batch_size),
        "threads": torch.get_num_threads(),
    }
    out.write_text(json.dumps(result))


def run_forked(fn, *args) -> dict:
    """Run ``fn(*args)`` in a forked child; its wall/CPU seconds and own peak RSS (``wait4``).

    The parent has imported torch, Lightning and neurocine already, so the child starts as a
    fresh process would after its imports (its RSS includes them) without paying for them again.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            fn(*args)
        except BaseException:  # report, never return into the parent's code
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"{fn.__name__}{args[:1]} failed in its child process (exit {code})")
    return {
        "wall_s": time.perf_counter() - start,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def measure_stage1(args: argparse.Namespace, workdir: Path) -> list[dict]:
    import lightning  # noqa: F401 (imported once, before the forks)
    import torch

    import neurocine.data.datamodule  # noqa: F401
    import neurocine.lit.stage1  # noqa: F401

    torch.set_num_threads(1)  # no worker threads in the parent: none cross a fork
    clip_dim = clip_width()
    rows = []
    for n_voxels in args.voxels:
        data = write_stage1_subject(workdir / f"subject_{n_voxels}.h5", n_voxels, clip_dim)
        out = workdir / f"stage1_{n_voxels}.json"
        measured = run_forked(stage1_worker, data, args, out)
        result = json.loads(out.read_text())
        s_step = statistics.median(result["wall"])
        rows.append(
            {
                "voxels": n_voxels,
                "tokens_per_tr": result["tokens_per_tr"],
                "batch": args.batch,
                "s_per_step": s_step,
                "cpu_s_per_step": statistics.median(result["cpu"]),
                "s_per_sample": s_step / args.batch,
                "est_s_per_step_configured": s_step / args.batch * result["configured_batch"],
                "configured_batch": result["configured_batch"],
                "peak_rss_mb": measured["peak_rss_mb"],
                "process_wall_s": measured["wall_s"],
                "params": result["params"],
                "params_voxel_dependent": result["params_voxel_dependent"],
                "step_walls": result["wall"],
                "warmup_walls": result["warmup_wall"],
                "threads": result["threads"],
            }
        )
        data.unlink()
        print(f"stage 1, {n_voxels} voxels: {rows[-1]}", flush=True)
    return rows


# -- 2. preprocessing vs runs ---------------------------------------------------------------------


def segment_lists(size: int) -> tuple[list[int], list[int]]:
    """Training and test segments of size ``s``: ``2s`` and ``s`` (2 repeats each: 6s runs)."""
    return list(range(1, 2 * size + 1)), list(range(1, size + 1))


def templated_dtseries_writer(workdir: Path):
    """A drop-in for ``cc2017_tree.write_dtseries`` that writes each header once per run length.

    nibabel rebuilds the 91,282-grayordinate CIFTI XML for every file (seconds each); as in
    ``bench/preprocess_scale.py``, the header of a ``[n_volumes, 91282]`` series is made once by
    nibabel (``cifti_template``) and the float32 data are appended raw (``[grayordinate, time]``
    C order = NIfTI's Fortran order of ``[time, grayordinate]``).
    """
    import numpy as np

    from bench.preprocess_scale import TR_S, cifti_template

    headers: dict[int, bytes] = {}

    def write(path: Path, data, bm, tr_s: float = TR_S) -> Path:
        if tr_s != TR_S:
            raise ValueError(f"templated CIFTI writer: TR {tr_s} s, templates are {TR_S} s")
        n_volumes = int(data.shape[0])
        if n_volumes not in headers:
            headers[n_volumes] = cifti_template(n_volumes, bm, workdir)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(headers[n_volumes])
            fh.write(np.ascontiguousarray(data.T, dtype=np.float32).tobytes())
        return path

    return write


def measure_preprocess(args: argparse.Namespace, workdir: Path) -> tuple[list[dict], dict]:
    """Generate the largest replica once; convert each size (a subset of its segments)."""
    from unittest import mock

    from bench.preprocess_scale import run_child

    _tests_on_path()
    from neurocine.rehearsal import release as cc2017_tree

    train, test = segment_lists(max(args.sizes))
    start = time.perf_counter()
    writer = templated_dtseries_writer(workdir)
    with mock.patch.object(cc2017_tree, "write_dtseries", writer):
        tree = cc2017_tree.build_cc2017_tree(
            workdir / "cc2017",
            standard=True,
            train_segments=tuple(train),
            test_segments=tuple(test),
            test_repeats=(1, 2),
            n_kept=args.volumes,
        )
    generated = {
        "s": time.perf_counter() - start,
        "mb_per_run": statistics.mean(p.stat().st_size for p in tree.files.values()) / 1e6,
    }
    print(f"generated the replica in {generated['s']:.0f} s", flush=True)
    fixed = [o for o in tree.overrides if not o.startswith(("train.segments", "test.segments"))]
    rows = []
    for size in args.sizes:
        train, test = segment_lists(size)
        out = workdir / f"subject_{size}.h5"
        cmd = [sys.executable, "-m", "neurocine", "preprocess", "cc2017", "--root",
               str(tree.root), "--subject", str(tree.subject), "--out", str(out), "--config",
               str(CC2017), "--no-progress", *fixed,
               f"train.segments=[{','.join(map(str, train))}]",
               f"test.segments=[{','.join(map(str, test))}]",
               f"voxels.reproducibility.top_n={TOP_N}"]  # fmt: skip
        measured = run_child(cmd, workdir / f"preprocess_{size}.log")
        runs = 2 * len(train) + 2 * len(test)
        rows.append(
            {
                "size": size,
                "runs": runs,
                "train_segments": len(train),
                "test_segments": len(test),
                "input_mb": runs * generated["mb_per_run"],
                "output_mb": out.stat().st_size / 1e6,
                **measured,
            }
        )
        out.unlink()
        print(f"preprocess, {runs} runs: {rows[-1]}", flush=True)
    return rows, generated


# -- report ---------------------------------------------------------------------------------------


def growth(rows: list[dict], key: str) -> list[float]:
    """Each row's ``key`` relative to the first (smallest) row's."""
    return [r[key] / rows[0][key] for r in rows]


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through ``(x, y)``."""
    mx, my = statistics.mean(x), statistics.mean(y)
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def render(data: dict) -> tuple[str, str]:
    from bench.common import markdown_table

    tables, notes = [], []
    if "stage1" in data:
        rows, how = data["stage1"], data["stage1_steps"]
        t_growth, c_growth, m_growth, p_growth = (
            growth(rows, k) for k in ("s_per_step", "cpu_s_per_step", "peak_rss_mb", "params")
        )
        batch, configured = rows[0]["batch"], rows[0]["configured_batch"]
        tables.append(
            markdown_table(
                [
                    "voxels",
                    "tokens / TR",
                    f"s / step (batch {batch})",
                    "× (wall)",
                    "CPU s / step",
                    "× (CPU)",
                    f"est. s / step at batch {configured}",
                    "peak RSS (MB)",
                    "× (RSS)",
                    "parameters (V-dependent)",
                    "× (params)",
                ],
                [
                    [
                        r["voxels"],
                        r["tokens_per_tr"],
                        r["s_per_step"],
                        tg,
                        r["cpu_s_per_step"],
                        cg,
                        r["est_s_per_step_configured"],
                        r["peak_rss_mb"],
                        mg,
                        f"{r['params'] / 1e6:.3f} M ({r['params_voxel_dependent'] / 1e6:.3f} M)",
                        pg,
                    ]
                    for r, tg, cg, mg, pg in zip(
                        rows, t_growth, c_growth, m_growth, p_growth, strict=True
                    )
                ],
            )  # fmt: skip
        )
        ratio_v = rows[-1]["voxels"] / rows[0]["voxels"]
        exponent = math.log(c_growth[-1] / c_growth[-2]) / math.log(
            rows[-1]["voxels"] / rows[-2]["voxels"]
        )
        counts = ", ".join(str(len(r["step_walls"])) for r in rows)
        notes.append(
            f"Stage 1: experiments/stage1.yaml's encoder (patch 16, width 32, depth 2, per-patch "
            f"embedding), loss, augmentations and optimiser under a Lightning Trainer, each V in "
            f"a process of its own (forked after the imports). Per V the median of the timed "
            f"steps ({counts}: at least {how['steps']}, and until {how['min_seconds']:g} s were "
            f"timed) after {how['warmup']} warm-up step(s), all at batch {batch}; the configured "
            f"batch is {configured}, its step time is estimated as s / sample × {configured} (an "
            f"upper bound at small V, where the per-step overhead would be paid once, not "
            f"{configured // batch} times). "
            f"Torch threads {rows[0]['threads']}. Over {ratio_v:.0f}× the voxels the CPU time per "
            f"step grew {c_growth[-1]:.0f}× (wall {t_growth[-1]:.0f}×), the parameters "
            f"{p_growth[-1]:.0f}× and the peak RSS {m_growth[-1]:.1f}× (RSS includes Python, "
            f"torch and Lightning: {rows[0]['peak_rss_mb']:.0f} MB at the smallest V). Between the "
            f"two largest V the CPU time grew as V^{exponent:.2f}: tokens per TR = V / 16 and "
            "spatial self-attention over them is quadratic in V, the per-patch embedding (own "
            "weights per 16-voxel patch) linear. Synthetic fMRI "
            "(tests/factories.py), not neurocine simulate."
        )
    if "preprocess" in data:
        rows = data["preprocess"]
        w_growth, c_growth, m_growth = (growth(rows, k) for k in ("wall_s", "cpu_s", "peak_rss_mb"))
        tables.append(
            markdown_table(
                [
                    "runs (train + test)",
                    "input (MB)",
                    "wall (s)",
                    "× (wall)",
                    "CPU (s)",
                    "× (CPU)",
                    "peak RSS (MB)",
                    "× (RSS)",
                    "output (MB)",
                ],
                [
                    [
                        f"{r['runs']} ({2 * r['train_segments']} + {2 * r['test_segments']})",
                        r["input_mb"],
                        r["wall_s"],
                        wg,
                        r["cpu_s"],
                        cg,
                        r["peak_rss_mb"],
                        mg,
                        r["output_mb"],
                    ]
                    for r, wg, cg, mg in zip(rows, w_growth, c_growth, m_growth, strict=True)
                ],
            )  # fmt: skip
        )
        gen = data["generate"]
        fixed_cpu, per_run_cpu = linear_fit([r["runs"] for r in rows], [r["cpu_s"] for r in rows])
        fixed_wall, per_run_wall = linear_fit(
            [r["runs"] for r in rows], [r["wall_s"] for r in rows]
        )
        notes.append(
            f"Preprocessing: `neurocine preprocess cc2017` on a replica of 91,282-grayordinate "
            f"CIFTI runs of {data['volumes']} kept volumes ({gen['mb_per_run']:.1f} MB each; a "
            f"real run keeps 240) and coded 64 × 80 movies (output 16 × 20 at 2 fps), "
            f"reproducibility selection of the {TOP_N} best vertices; generated once in "
            f"{gen['s']:.0f} s, each size converts a subset of its segments. Over "
            f"{rows[-1]['runs'] / rows[0]['runs']:.0f}× the runs the wall time grew "
            f"{w_growth[-1]:.1f}×, CPU {c_growth[-1]:.1f}×. "
            f"Least-squares line: CPU ≈ {fixed_cpu:.1f} s + {per_run_cpu:.3f} s per run, wall ≈ "
            f"{fixed_wall:.1f} s + {per_run_wall:.3f} s per run: the fixed part (start-up, "
            f"imports, the CIFTI layout, the HDF5 file) is {fixed_wall / rows[-1]['wall_s']:.0%} "
            f"of the largest conversion's wall time at this run length, the rest grows linearly "
            f"with the runs (≈ {per_run_wall * 240 / data['volumes']:.1f} s per real 240-volume "
            f"run if the cost scales with run length; movie decoding not included). Runs are "
            f"streamed one at a time: peak RSS {m_growth[-1]:.2f}× over "
            f"{rows[-1]['runs'] / rows[0]['runs']:.0f}× the runs."
        )
    load = data["load_avg"]
    notes.append(
        f"Shared 2-core machine: 1-min load average {load[0]:.2f} at the start and "
        f"{load[1]:.2f} at the end (other jobs were running): read growth factors within one "
        f"table, not absolute seconds across runs. Whole bench {data['total_s']:.0f} s."
    )
    return "\n\n".join(tables), " ".join(notes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, nargs="+", default=[1000, 5000, 20000, 90000])
    parser.add_argument("--batch", type=int, default=2, help="stage-1 batch for every V")
    parser.add_argument("--warmup", type=int, default=1, help="untimed stage-1 steps")
    parser.add_argument("--steps", type=int, default=1, help="least timed stage-1 steps")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="least timed seconds per V")
    parser.add_argument("--max-steps", type=int, default=40, help="most timed steps per V")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in stage 1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4], help="6·s runs each")
    parser.add_argument("--volumes", type=int, default=48, help="kept volumes per replica run")
    parser.add_argument("--only", choices=("stage1", "preprocess"), default=None)
    parser.add_argument("--workdir", default=None, help="parent of the temp dir (default: TMP)")
    parser.add_argument(
        "--render", action="store_true", help="rebuild table and notes from the saved result"
    )
    args = parser.parse_args()
    if args.render:  # the measured run's command, machine and date stay as they were
        from bench.common import RESULTS

        path = RESULTS / f"{NAME}.json"
        result = json.loads(path.read_text())
        result["table"], result["notes"] = render(result["data"])
        path.write_text(json.dumps(result, indent=2))
        return 0

    from bench.common import write_result

    args.voxels, args.sizes = sorted(args.voxels), sorted(args.sizes)
    load_before = os.getloadavg()
    started = time.perf_counter()
    data: dict = {"volumes": args.volumes}
    workdir = Path(tempfile.mkdtemp(prefix="neurocine-bench-scale-", dir=args.workdir))
    try:
        if args.only in (None, "stage1"):
            data["stage1"] = measure_stage1(args, workdir)
            data["stage1_steps"] = {
                "warmup": args.warmup,
                "steps": args.steps,
                "min_seconds": args.min_seconds,
                "max_steps": args.max_steps,
            }
        if args.only in (None, "preprocess"):
            data["preprocess"], data["generate"] = measure_preprocess(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data["total_s"] = time.perf_counter() - started
    data["load_avg"] = [load_before[0], os.getloadavg()[0]]
    table, notes = render(data)
    write_result(NAME, TITLE, table, data, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
