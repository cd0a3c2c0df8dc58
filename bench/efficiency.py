"""CPU efficiency of the stage-1 and stage-2 training steps on the demo presets.

For each stage, built exactly as ``neurocine train <stage> --config experiments/<stage>.yaml``
builds it (config, DataModule, ``neurocine.lit.<stage>.build_module``) on the simulated demo
subject:

* **FLOPs** of one training step (forward + backward) counted with
  ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention; CPU's fused
  attention kernel is counted with the library's own attention formula, which it lacks for CPU);
* **step time**, optimizer included (``training_step``, backward, gradient clipping, AdamW, LR
  schedule), on real training batches, and the achieved FLOP/s as a share of the **dense-matmul
  peak** measured in the same process with the same thread count (best of square fp32 matmuls);
* **data wait**: the time from the end of one step to the moment the next batch is ready (read
  from the real train dataloader, augmented as ``on_after_batch_transfer`` does), as a share of
  the step cycle; and the gap between Lightning's ``on_train_batch_end`` and the next
  ``on_train_batch_start`` in a short real ``trainer.fit`` (data + the loop's own bookkeeping).

Stage 1 also gets a ``torch.profiler`` table (top ops by self CPU time), the before/after ratios
of the encoder's broadcast temporal attention (the fused-kernel path is kept behind
``SpatioTemporalBlock.broadcast_max_window = 0`` and both run interleaved in this process), and
what lifts its FLOP/s (width, heads, dropout, batch).

Times are taken with both the wall clock and the process CPU clock: on a shared machine the CPU
clock measures the work itself, the wall clock adds the waits for a core (load average recorded).

    python -m bench.efficiency [--threads 1] [--data subject.h5] [--pairs 10] [--render]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from bench.common import RESULTS, markdown_table, write_result
from bench.stage1_quality import ensure_data
from neurocine.config import load_config
from neurocine.errors import CheckpointError, ConfigError
from neurocine.models.fmri_encoder import SpatioTemporalBlock
from neurocine.training import build_system, build_trainer

ROOT = Path(__file__).resolve().parent.parent
STAGE1 = ROOT / "experiments" / "stage1.yaml"
STAGE2 = ROOT / "experiments" / "stage2.yaml"
TITLE = "Training-step CPU efficiency (bench/efficiency.py)"
MATMUL_SIZES = (256, 512, 1024)
TARGET_PEAK, TARGET_WAIT = 0.30, 0.10
# What would lift stage 1's FLOP/s: overrides of experiments/stage1.yaml, measured one by one.
EVIDENCE = {
    "encoder.dropout=0": ["encoder.dropout=0"],
    "encoder.num_heads=1": ["encoder.num_heads=1"],
    "data.batch_size=128": ["data.batch_size=128"],
    "encoder.embed_dim=128": ["encoder.embed_dim=128"],
    "embed_dim=128, dropout=0": ["encoder.embed_dim=128", "encoder.dropout=0"],
}


# -- clocks and the machine's matmul peak ---------------------------------------------------------


def now() -> tuple[float, float]:
    """(wall, process CPU) seconds."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


def matmul_peak(sizes: tuple[int, ...] = MATMUL_SIZES, seconds: float = 0.25) -> dict:
    """Best GFLOP/s of square fp32 ``torch.mm`` (wall and CPU clock), per size and overall."""
    per_size = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        torch.mm(a, b, out=out)
        flops = 2 * n**3
        best_wall = best_cpu = 0.0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = now()
            torch.mm(a, b, out=out)
            wall, cpu = since(start)
            best_wall = max(best_wall, flops / wall / 1e9)
            best_cpu = max(best_cpu, flops / max(cpu, 1e-9) / 1e9)
        per_size[n] = {"wall": best_wall, "cpu": best_cpu}
    return {
        "per_size": per_size,
        "wall": max(v["wall"] for v in per_size.values()),
        "cpu": max(v["cpu"] for v in per_size.values()),
    }


# -- FLOP counting --------------------------------------------------------------------------------


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def count_flops(fn: Callable[[], None]) -> tuple[int, dict[str, int]]:
    """FLOPs of ``fn()`` by ``FlopCounterMode`` (total and per aten op).

    The counter has attention formulas for the CUDA kernels only; CPU's fused attention
    (``_scaled_dot_product_flash_attention_for_cpu`` and its backward) gets the same formulas.
    """
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_sdpa_backward
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


# -- one training step outside Lightning ----------------------------------------------------------


@contextlib.contextmanager
def broadcast_window(limit: int) -> Iterator[None]:
    """Run with ``SpatioTemporalBlock.broadcast_max_window = limit`` (0: the fused-kernel path)."""
    previous = SpatioTemporalBlock.broadcast_max_window
    SpatioTemporalBlock.broadcast_max_window = limit
    try:
        yield
    finally:
        SpatioTemporalBlock.broadcast_max_window = previous


class Stage:
    """A stage's config, DataModule and module as ``neurocine.training.fit`` builds them."""

    def __init__(self, stage: str, experiment: Path, overrides: list[str]) -> None:
        self.name = stage
        self.cfg = load_config(experiment, overrides)
        self.dm, self.module, _ = build_system(self.cfg)
        self.module.log = lambda *args, **kwargs: None  # no Trainer here: logging is a no-op
        optim = self.module.configure_optimizers()
        self.optimizer = optim["optimizer"]
        self.scheduler = optim["lr_scheduler"]["scheduler"]
        self.clip = self.cfg.trainer.gradient_clip_val
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.module.train()

    def ready(self, batch: dict) -> dict:
        """What ``on_after_batch_transfer`` makes of a training batch (augmentation)."""
        if self.dm.augment:
            batch = self.dm.augment_batch(batch)
        batch.pop("fmri_next", None)
        return batch

    def first_batch(self) -> dict:
        return self.ready(next(iter(self.dm.train_dataloader())))

    def loss(self, batch: dict) -> torch.Tensor:
        if hasattr(self.module, "on_train_batch_start"):
            self.module.on_train_batch_start(batch, 0)
        return self.module.training_step(batch, 0)

    def step(self, batch: dict) -> None:
        """One optimisation step as Lightning's automatic optimisation runs it."""
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, float(self.clip))
        self.optimizer.step()
        self.scheduler.step()

    def flops(self, batch: dict) -> tuple[int, dict[str, int]]:
        """FLOPs of forward + backward (model FLOPs: counted on the fused-attention path)."""
        with broadcast_window(0):
            total, by_op = count_flops(lambda: self.loss(batch).backward())
        self.optimizer.zero_grad(set_to_none=True)
        return total, by_op

    def time_steps(self, batch: dict, steps: int) -> list[tuple[float, float]]:
        """(wall, CPU) seconds of ``steps`` steps on one batch, after one warm-up step."""
        self.step(batch)
        times = []
        for _ in range(steps):
            start = now()
            self.step(batch)
            times.append(since(start))
        return times

    def loader_loop(self, max_steps: int) -> dict:
        """Steps on the real train dataloader: data wait vs step time (first cycle dropped)."""
        waits, steps = [], []
        batches = iter(self.dm.train_dataloader())
        end = now()
        for i in range(max_steps + 1):
            try:
                batch = self.ready(next(batches))
            except StopIteration:
                break
            wait = since(end)
            start = now()
            self.step(batch)
            step = since(start)
            end = now()
            if i:  # the first batch includes the loader's start-up and the warm-up step
                waits.append(wait)
                steps.append(step)
        return cycle_summary(waits, steps)


def cycle_summary(waits: list, steps: list) -> dict:
    """Medians of the step and the wait (wall, CPU) and the wait's share of the cycle."""

    def share(k: int) -> float:
        total_wait = sum(w[k] for w in waits)
        return total_wait / (total_wait + sum(s[k] for s in steps))

    return {
        "cycles": len(steps),
        "step_wall_s": statistics.median(s[0] for s in steps),
        "step_cpu_s": statistics.median(s[1] for s in steps),
        "wait_wall_s": statistics.median(w[0] for w in waits),
        "wait_cpu_s": statistics.median(w[1] for w in waits),
        "wait_share_wall": share(0),
        "wait_share_cpu": share(1),
    }


class StepTimer(L.Callback):
    """Times each training step and the gap before the next one inside ``trainer.fit``."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float]] = []
        self.gaps: list[tuple[float, float]] = []
        self._start: tuple[float, float] | None = None
        self._end: tuple[float, float] | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._end = None  # the epoch's first batch waits for the loader's start-up

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._end is not None:
            self.gaps.append(since(self._end))
        self._start = now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(since(self._start))
        self._end = now()


def lightning_fit(stage: str, experiment: Path, overrides: list[str], run_dir: Path):
    """The ``neurocine.training.fit`` sequence with a :class:`StepTimer` (no validation)."""
    cfg = load_config(experiment, overrides)
    dm, module, callbacks = build_system(cfg)
    timer = StepTimer()
    trainer = build_trainer(cfg, run_dir, [*callbacks, timer], None)
    trainer.fit(module, datamodule=dm)
    # the first step warms up (allocations, first-call dispatch); its gap was not recorded
    return cycle_summary(timer.gaps, timer.steps[1:]), module


# -- torch.profiler ------------------------------------------------------------------------------


def profile_steps(stage: Stage, batch: dict, steps: int, top: int = 20) -> dict[str, dict]:
    """Self CPU time per step (ms), calls per step and share of the ``top`` ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    stage.step(batch)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            stage.step(batch)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    return {
        e.key: {
            "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
            "calls_per_step": e.count / steps,
            "share": e.self_cpu_time_total / total,
        }
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    }


# -- the two stages -------------------------------------------------------------------------------


def rates(flops: int, step_wall: float, step_cpu: float, peak: dict) -> dict:
    wall, cpu = flops / step_wall / 1e9, flops / step_cpu / 1e9
    return {
        "gflops_wall": wall,
        "gflops_cpu": cpu,
        "peak_share_wall": wall / peak["wall"],
        "peak_share_cpu": cpu / peak["cpu"],
    }


def median_pair(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def stage1(data: Path, workdir: Path, args, peak: dict) -> dict:
    overrides = [f"data.path={data}", *args.overrides]
    s1 = Stage("stage1", STAGE1, overrides)
    batch = s1.first_batch()
    flops, by_op = s1.flops(batch)
    enc = s1.cfg.encoder
    result: dict[str, Any] = {
        "flops_per_step": flops,
        "flops_by_op": by_op,
        "batch_size": int(s1.cfg.data.batch_size),
        "encoder": {
            k: enc[k]
            for k in ("embed_dim", "depth", "num_heads", "patch_size", "dropout", "patch_embedding")
        },
        "window": int(s1.cfg.data.window),
        "pairs": args.pairs,
        "n_voxels": int(s1.dm.n_voxels),
    }
    # Before/after, alternating step by step so that both see the same load.
    limits = {
        "fused kernel (before)": 0,
        "broadcast (after)": SpatioTemporalBlock.broadcast_max_window,
    }
    paired: dict[str, list] = {name: [] for name in limits}
    for window_limit in limits.values():  # warm-up
        with broadcast_window(window_limit):
            s1.step(batch)
    for _ in range(args.pairs):
        for name, window_limit in limits.items():
            with broadcast_window(window_limit):
                start = now()
                s1.step(batch)
                paired[name].append(since(start))
    result["variants"] = {}
    for name, times in paired.items():
        wall, cpu = median_pair(times)
        result["variants"][name] = {
            "step_wall_s": wall,
            "step_cpu_s": cpu,
            "flops": flops,
            **rates(flops, wall, cpu, peak),
        }
    before, after = paired.values()  # median of the ratios of neighbouring steps
    result["speedup_cpu"] = statistics.median(
        b[1] / a[1] for b, a in zip(before, after, strict=True)
    )
    result["speedup_wall"] = statistics.median(
        b[0] / a[0] for b, a in zip(before, after, strict=True)
    )
    with broadcast_window(0):
        result["profile_before"] = profile_steps(s1, batch, args.profile_steps)
    result["profile_after"] = profile_steps(s1, batch, args.profile_steps)
    result["loader"] = s1.loader_loop(args.loader_steps)
    result["loader"].update(
        rates(flops, result["loader"]["step_wall_s"], result["loader"]["step_cpu_s"], peak)
    )
    # What lifts the FLOP/s: the same measurement with one knob changed.
    result["evidence"], result["evidence_steps"] = {}, args.steps
    for name, extra in EVIDENCE.items():
        s = Stage("stage1", STAGE1, overrides + extra)
        b = s.first_batch()
        f, _ = s.flops(b)
        wall, cpu = median_pair(s.time_steps(b, args.steps))
        result["evidence"][name] = {
            "overrides": extra,
            "flops": f,
            "step_wall_s": wall,
            "step_cpu_s": cpu,
            **rates(f, wall, cpu, peak),
        }
    # The real training loop (no validation); its encoder feeds stage 2.
    fit_overrides = overrides + [
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=0",
        f"trainer.limit_train_batches={args.loader_steps + 1}",
        "trainer.enable_progress_bar=false",
    ]
    result["lightning"], module = lightning_fit("stage1", STAGE1, fit_overrides, workdir / "s1")
    result["lightning"].update(
        rates(flops, result["lightning"]["step_wall_s"], result["lightning"]["step_cpu_s"], peak)
    )
    module.export(workdir / "s1")
    return result


def stage2(data: Path, workdir: Path, args, peak: dict) -> dict:
    overrides = [f"data.path={data}", f"stage2.encoder_ckpt={workdir / 's1' / 'encoder'}"]
    try:
        s2 = Stage("stage2", STAGE2, overrides + args.overrides2)
    except (CheckpointError, ConfigError) as exc:  # e.g. unet.preset=tiny without its weights
        return {"skipped": str(exc).splitlines()[0]}
    batch = s2.first_batch()
    flops, by_op = s2.flops(batch)
    result: dict[str, Any] = {
        "unet_preset": str(s2.cfg.unet.preset),
        "batch_size": int(s2.cfg.data.batch_size),
        "flops_per_step": flops,
        "flops_by_op": by_op,
        "unet_params": sum(p.numel() for p in s2.module.unet.parameters()),
    }
    result["loader"] = s2.loader_loop(args.steps2)
    result["loader"].update(
        rates(flops, result["loader"]["step_wall_s"], result["loader"]["step_cpu_s"], peak)
    )
    fit_overrides = (
        overrides
        + args.overrides2
        + [
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=0",
            f"trainer.limit_train_batches={args.steps2 + 2}",
            "trainer.enable_progress_bar=false",
        ]
    )
    result["lightning"], _ = lightning_fit("stage2", STAGE2, fit_overrides, workdir / "s2")
    result["lightning"].update(
        rates(flops, result["lightning"]["step_wall_s"], result["lightning"]["step_cpu_s"], peak)
    )
    return result


# -- report ---------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def report(data: dict) -> tuple[str, str]:
    """The markdown tables and the notes of a result (from the JSON's ``data``)."""
    peak = data["peak"]
    s1, s2 = data["stage1"], data["stage2"]
    header = [
        "stage (loop)",
        "GFLOP / step",
        "s / step (CPU)",
        "s / step (wall)",
        "GFLOP/s (CPU)",
        "% of matmul peak (CPU / wall)",
        "data wait (CPU / wall)",
    ]
    rows = []
    stages = [("stage 1", s1)] + ([("stage 2", s2)] if "skipped" not in s2 else [])
    for label, s in stages:
        for loop, key in (("dataloader loop", "loader"), ("Lightning fit", "lightning")):
            r = s[key]
            rows.append(
                [
                    f"{label} ({loop})",
                    s["flops_per_step"] / 1e9,
                    r["step_cpu_s"],
                    r["step_wall_s"],
                    r["gflops_cpu"],
                    f"{pct(r['peak_share_cpu'])} / {pct(r['peak_share_wall'])}",
                    f"{pct(r['wait_share_cpu'])} / {pct(r['wait_share_wall'])}",
                ]
            )
    tables = [markdown_table(header, rows)]
    ref = s1["variants"]["fused kernel (before)"]
    var_rows = [
        [
            name,
            v["flops"] / 1e9,
            1e3 * v["step_cpu_s"],
            v["gflops_cpu"],
            pct(v["peak_share_cpu"]),
            ref["step_cpu_s"] / v["step_cpu_s"],
        ]
        for name, v in {**s1["variants"], **s1["evidence"]}.items()
    ]
    tables.append(
        markdown_table(
            [
                "stage-1 step variant",
                "GFLOP / step",
                "CPU ms / step",
                "GFLOP/s (CPU)",
                "% of peak (CPU)",
                "speed vs before (per step)",
            ],
            var_rows,
        )
    )
    before, after = s1["profile_before"], s1["profile_after"]
    top = list(before)[:8]
    prof_rows = [
        [
            f"`{op}`",
            before[op]["self_ms_per_step"],
            pct(before[op]["share"]),
            after.get(op, {}).get("self_ms_per_step", 0.0),
            pct(after.get(op, {}).get("share", 0.0)),
        ]
        for op in top
    ]
    tables.append(
        markdown_table(
            [
                "op (top self CPU, stage 1 before)",
                "ms / step before (profiler clock)",
                "share before",
                "ms / step after",
                "share after",
            ],
            prof_rows,
        )
    )

    def share_of(profile: dict, *needles: str) -> float:
        return sum(v["share"] for k, v in profile.items() if any(n in k for n in needles))

    attention = share_of(after, "scaled_dot_product")
    dropout = share_of(after, "bernoulli")
    gemm = share_of(after, "aten::mm", "aten::addmm", "aten::bmm")
    loader1 = s1["loader"]
    meets = loader1["peak_share_cpu"] >= TARGET_PEAK
    optimised = s1["variants"]["broadcast (after)"]

    def rel(name: str) -> str:
        v = s1["evidence"][name]
        same = abs(v["flops"] - optimised["flops"]) < 1e-3 * optimised["flops"]
        return f"{name}: {pct(v['peak_share_cpu'])} of peak, " + (
            f"same FLOPs, {optimised['step_cpu_s'] / v['step_cpu_s']:.2f}× faster"
            if same
            else f"{v['flops'] / optimised['flops']:.1f}× the FLOPs"
        )

    enc = s1["encoder"]
    head_dim = enc["embed_dim"] // enc["num_heads"]
    notes = [
        f"Threads: {data['threads']} (the bench pins them: peak and steps share one setting; "
        "`neurocine train` uses torch's default, one per core). Load average (1 min) "
        f"{data['load_start']:.1f} at the start, {data['load_end']:.1f} at the end: the machine "
        "was shared, so wall times include waits for a core; the CPU clock (process time) "
        "measures the work, and every ratio here was measured within this one run.",
        f"Dense fp32 matmul peak (best of {', '.join(map(str, MATMUL_SIZES))}² `torch.mm`): "
        f"{peak['cpu']:.1f} GFLOP/s (CPU clock), {peak['wall']:.1f} GFLOP/s (wall). FLOPs by "
        "`FlopCounterMode` on forward + backward (matmuls, attention, convolutions; "
        "element-wise ops, norms, softmax and the optimizer count 0), step time with AdamW, "
        "clipping and the LR schedule. Data wait = end of a step → next batch ready "
        "(augmented), as a share of the cycle; in the Lightning rows it is the gap between "
        "`on_train_batch_end` and the next `on_train_batch_start` (data + the loop's logging).",
        f"Stage 1 reaches {pct(loader1['peak_share_cpu'])} of the matmul peak "
        f"({'meets' if meets else 'misses'} the {pct(TARGET_PEAK)} target); data wait "
        f"{pct(loader1['wait_share_cpu'])} of the cycle (target ≤ {pct(TARGET_WAIT)}). "
        f"Optimisation: the temporal attention over the W = {s1['window']} TRs of each patch "
        "now runs by broadcasting instead of the fused CPU attention kernel on "
        f"B·P·heads sequences of length {s1['window']} (same function and dropout masks; "
        f"tests/test_encoder_window_attention.py): {s1['speedup_cpu']:.2f}× per step (CPU "
        f"clock, median of the ratios of {s1['pairs']} pairs of alternating steps; "
        f"{s1['speedup_wall']:.2f}× wall). The optimised step's CPU time measured three "
        f"ways in this run — alternating {1e3 * optimised['step_cpu_s']:.0f} ms, dataloader "
        f"loop {1e3 * loader1['step_cpu_s']:.0f} ms, Lightning "
        f"{1e3 * s1['lightning']['step_cpu_s']:.0f} ms — shows the noise of one measurement "
        "on this shared machine; the before/after ratio comes from neighbouring steps. "
        f"torch.compile: {data['compile_note']}",
        f"Bottleneck after it (profile shares of self time; the profiler's clock is the wall "
        f"clock, inflated by the load, so read the shares): attention {pct(attention)}, "
        f"dropout's random masks (`bernoulli_`) {pct(dropout)}, matmuls {pct(gemm)}. At width "
        f"{enc['embed_dim']} with {enc['num_heads']} heads the head dimension is {head_dim}: an "
        f"attention score costs 2·{head_dim} FLOPs to compute and as many to apply, while the "
        "softmax and its backward read and write it several times, so attention over "
        f"{math.ceil(s1['n_voxels'] / enc['patch_size'])} tokens per TR is memory-bound; and "
        f"matmuls with {enc['embed_dim']}-wide operands stay far from peak. Evidence, one knob "
        f"at a time against the optimised step: {'; '.join(rel(n) for n in s1['evidence'])} "
        f"({s1['evidence_steps']} steps each, one variant after the other, not alternated: "
        "they carry the machine's drift, see the three measurements of one step above). "
        "What lifts the rate is wider operands (head dimension, width), not a bigger batch; "
        "those are model changes that quality and the 3-minute budget of `make train-stage1` "
        "decide, not made here.",
    ]
    if "skipped" in s2:
        notes.append(f"Stage 2 skipped: {s2['skipped']}")
    else:
        notes.append(
            f"Stage 2: `unet.preset: {s2['unet_preset']}` as experiments/stage2.yaml says "
            f"({s2['unet_params'] / 1e6:.2f} M UNet parameters, batch {s2['batch_size']}): "
            f"{pct(s2['loader']['peak_share_cpu'])} of peak, data wait "
            f"{pct(s2['loader']['wait_share_cpu'])} (frames read per batch)."
        )
    return "\n\n".join(tables), "\n\n".join(notes)


# torch.compile was checked once by hand (not rerun here: the compile alone takes minutes):
# 2026-11-26, this 2-core AMD EPYC, 1 thread, load average ~6, the demo encoder (broadcast path).
COMPILE_NOTE = (
    "checked once by hand, not rerun here: inductor works (g++ is present) but compiling the "
    "demo encoder took 272 s wall, and its forward + backward then took 345 ms CPU against "
    "343 ms eager (no gain: the time is in the fused attention kernel and dropout's random "
    "masks, which it does not fuse), so it is not used."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data", default=None, help="an embedded simulated subject to reuse")
    parser.add_argument("--pairs", type=int, default=10, help="alternating before/after steps")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per stage-1 variant")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--loader-steps", type=int, default=12, help="stage-1 loader cycles")
    parser.add_argument("--steps2", type=int, default=3, help="timed stage-2 steps")
    parser.add_argument(
        "--override2",
        dest="overrides2",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="stage-2 override (repeatable)",
    )
    parser.add_argument(
        "--render", action="store_true", help="rebuild table and notes from the saved result"
    )
    parser.add_argument("overrides", nargs="*", help="stage-1 key=value overrides")
    args = parser.parse_args()
    if args.render:  # the measured run's command, machine and date stay as they were
        path = RESULTS / "efficiency.json"
        result = json.loads(path.read_text())
        result["table"], result["notes"] = report(result["data"])
        path.write_text(json.dumps(result, indent=2))
        return 0
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="efficiency-bench-") as tmp:
        workdir = Path(tmp)
        data_path = Path(args.data) if args.data else workdir / "sim" / "subject1.h5"
        data_path.parent.mkdir(parents=True, exist_ok=True)
        seconds = {}
        start = now()
        ensure_data(data_path, [f"data.path={data_path}"])  # torch's default threads
        seconds["data"] = since(start)
        torch.set_num_threads(args.threads)
        peak_start = matmul_peak()
        start = now()
        s1 = stage1(data_path, workdir, args, peak_start)
        seconds["stage1"] = since(start)
        start = now()
        s2 = stage2(data_path, workdir, args, peak_start)
        seconds["stage2"] = since(start)
        peak_end = matmul_peak()
    data = {
        "threads": torch.get_num_threads(),
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "peak": peak_start,
        "peak_end": peak_end,
        "compile_note": COMPILE_NOTE,
        "bench_seconds_wall_cpu": seconds,
        "stage1": s1,
        "stage2": s2,
    }
    table, notes = report(data)
    write_result("efficiency", TITLE, table, data, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
