"""The prepared GPU check: stage 1 and stage 2 at the paper's sizes on one GPU, in ≤ 8 minutes.

For each configuration (random weights; the architectures of ``experiments/stage1_full.yaml``,
``stage2_full.yaml`` and ``stage2_24gb.yaml``; bf16 autocast, gradient checkpointing, SDPA
attention), a few optimisation steps on random batches of the real shapes → step time,
samples/s, ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``; stage 2 also times DDIM
sampling of one batch. Each configuration gets a one-line verdict: fits / does not fit in
``--budget-gib`` (24 GiB by default; 1 GiB is kept for the CUDA context). An out-of-memory error
is recorded as "does not fit", not a failure. Writes ``bench/results/gpu_check.json``.

    python -m bench.gpu_check               # make bench-gpu: on the GPU, full sizes
    python -m bench.gpu_check --tiny        # CPU dry run at tiny sizes (tests/test_gpu_check.py)

``make bench`` skips it (no GPU there); ``python -m bench.run_all --only-docs`` then puts its
figures in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from bench.common import markdown_table, write_result
from neurocine.config import load_config
from neurocine.diffusion.sampling import ddim_sample
from neurocine.diffusion.scheduler import training_scheduler
from neurocine.lit.stage1 import ContrastiveEncoderModule
from neurocine.lit.stage2 import VideoDiffusionModule, condition_adapter
from neurocine.models.encoder_factory import build_encoder
from neurocine.models.full_size import SD15_UNET_CONFIG, SD15_VAE_CONFIG, sd15_unet2d
from neurocine.models.video_unet import Denoiser, LatentCodec, inflate_unet

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ("stage1_full", "stage2_full", "stage2_24gb")
CONTEXT_GIB = 1.0  # what the CUDA context and kernels take beside PyTorch's allocations


@dataclass(frozen=True)
class Sizes:
    """Data and model sizes of one run of the check (full: the paper's; tiny: the dry run)."""

    voxels: int = 4003  # a cc2017-like count (not a multiple of the patch size)
    frames: int = 6
    pixels: int = 256
    clip_dim: int = 768
    encoder: tuple[str, ...] = ()  # overrides of encoder.* (tiny: small widths)
    unet: dict | None = None  # None: Stable Diffusion 1.5's UNet / VAE
    vae: dict | None = None
    motion_heads: int = 8
    batch: dict | None = None  # per experiment; None: the YAML's data.batch_size
    lora_rank: int | None = None  # None: the YAML's


FULL = Sizes()
TINY = Sizes(
    voxels=61, frames=2, pixels=16, clip_dim=12,
    encoder=("encoder.preset=tiny", "encoder.embed_dim=16", "encoder.depth=1",
             "encoder.num_heads=2", "encoder.out_tokens=5", "encoder.out_dim=12"),
    unet={"attention_head_dim": 2, "block_out_channels": [8, 16], "cross_attention_dim": 12,
          "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
          "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "layers_per_block": 1,
          "norm_num_groups": 4, "sample_size": 8},
    vae={"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"] * 2,
         "up_block_types": ["UpDecoderBlock2D"] * 2, "layers_per_block": 1,
         "norm_num_groups": 4, "sample_size": 16},
    motion_heads=2, batch={"stage1_full": 3, "stage2_full": 2, "stage2_24gb": 1}, lora_rank=2,
)  # fmt: skip


def gib(n_bytes: float) -> float:
    return n_bytes / 2**30


class Device:
    """Synchronised timing and peak memory on CUDA; wall time only elsewhere (dry run)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peaks(self) -> dict[str, float | None]:
        if not self.cuda:
            return {"peak_allocated_gib": None, "peak_reserved_gib": None}
        return {
            "peak_allocated_gib": gib(torch.cuda.max_memory_allocated(self.device)),
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved(self.device)),
        }

    def timed(self, fn: Callable[[], Any]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start


def experiment(name: str, sizes: Sizes, device: torch.device) -> Any:
    """The experiment's config; its required paths are placeholders (only sizes are read)."""
    overrides = ["unet.pretrained=/unused", "clip.pretrained=/unused", *sizes.encoder]
    if sizes.lora_rank is not None:
        overrides.append(f"stage2.lora_rank={sizes.lora_rank}")
    if device.type != "cuda":
        overrides.append("stage2.optimizer=adamw")  # 8-bit AdamW is CUDA only
    return load_config(ROOT / "experiments" / f"{name}.yaml", overrides)


def build_stage1(cfg: Any, sizes: Sizes, device: torch.device) -> ContrastiveEncoderModule:
    """``stage1_full.yaml``'s encoder (initialised on the CPU: its seeded generator) + loss."""
    encoder = build_encoder(cfg.encoder, sizes.voxels, int(cfg.data.window), sizes.clip_dim)
    s1 = cfg.stage1
    module = ContrastiveEncoderModule(encoder, lr=float(s1.lr), warmup_steps=int(s1.warmup_steps),
                                      weight_decay=float(s1.weight_decay))  # fmt: skip
    return module.to(device)


def build_stage2(cfg: Any, sizes: Sizes, device: torch.device) -> VideoDiffusionModule:
    """Stable Diffusion 1.5's UNet (random) inflated as ``build_denoiser`` inflates real weights,
    the stage-1 encoder of ``stage1_full.yaml`` (frozen) and the YAML's stage-2 settings."""
    s2 = cfg.stage2
    encoder_cfg = load_config(None, ["encoder.preset=mindvideo", *sizes.encoder]).encoder
    encoder = build_encoder(encoder_cfg, sizes.voxels, int(cfg.data.window), sizes.clip_dim)
    encoder.to(device)
    with device:  # initialised where they run: seconds on a GPU, not minutes on its host
        unet = inflate_unet(sd15_unet2d(sizes.unet or SD15_UNET_CONFIG),
                            motion_num_attention_heads=sizes.motion_heads)  # fmt: skip
        codec = LatentCodec(AutoencoderKL.from_config(dict(sizes.vae or SD15_VAE_CONFIG)))
    unet.enable_gradient_checkpointing()
    adapter = condition_adapter(str(s2.condition), encoder, Denoiser(unet, codec.vae, codec))
    scheduler = training_scheduler(dependent_ratio=float(s2.noise.ratio), clip_sample=False)
    module = VideoDiffusionModule(
        encoder, adapter, unet, codec, scheduler,
        frames_shape=(sizes.frames, sizes.pixels, sizes.pixels), lr=float(s2.lr),
        weight_decay=float(s2.weight_decay), unet_trainable=str(s2.unet_trainable),
        lora_rank=int(s2.lora_rank), lora_alpha=float(s2.lora_alpha),
        lora_targets=tuple(s2.lora_targets), frozen_dtype=str(s2.frozen_dtype),
        optimizer=str(s2.optimizer),
    )  # fmt: skip
    return module.to(device)


def random_batch(name: str, batch: int, sizes: Sizes, window: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {"fmri": torch.randn(batch, window, sizes.voxels, generator=g)}
    if name == "stage1_full":
        out["clip_image"] = torch.randn(batch, sizes.clip_dim, generator=g)
        out["clip_text"] = torch.randn(batch, sizes.clip_dim, generator=g)
    else:
        shape = (batch, sizes.frames, sizes.pixels, sizes.pixels, 3)
        out["frames"] = torch.randint(0, 256, shape, generator=g).to(torch.uint8)
    return {k: v.to(device) for k, v in out.items()}


def param_budget(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """GiB of weights (trainable / frozen, as stored), gradients and optimizer state."""
    params = list(module.parameters())
    trainable = [p for p in params if p.requires_grad]
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    return {
        "trainable_params": sum(p.numel() for p in trainable),
        "all_params": sum(p.numel() for p in params),
        "trainable_weights_gib": gib(sum(p.numel() * p.element_size() for p in trainable)),
        "frozen_weights_gib": gib(
            sum(p.numel() * p.element_size() for p in params if not p.requires_grad)
        ),
        "gradients_gib": gib(sum(p.numel() * 4 for p in trainable)),  # float32 master weights
        "optimizer_state_gib": gib(sum(t.numel() * t.element_size() for t in state)),
    }


def check(name: str, sizes: Sizes, dev: Device, steps: int, ddim_steps: int, budget: float):
    """Build, train ``steps`` steps (after one warm-up), sample; the row of the report."""
    cfg = experiment(name, sizes, dev.device)
    batch_size = (sizes.batch or {}).get(name, int(cfg.data.batch_size))
    dev.reset()
    row: dict[str, Any] = {"config": name, "batch": batch_size}
    try:
        torch.manual_seed(0)
        build = build_stage1 if name == "stage1_full" else build_stage2
        module = build(cfg, sizes, dev.device).train()
        module.log = lambda *args, **kwargs: None  # no Trainer attached: logging is a no-op
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the adamw_8bit fallback off CUDA
            optimizer = module.configure_optimizers()["optimizer"]
        row["optimizer"] = f"{type(optimizer).__module__}.{type(optimizer).__name__}"
        data = random_batch(name, batch_size, sizes, int(cfg.data.window), dev.device)
        params = [p for g in optimizer.param_groups for p in g["params"]]

        def step() -> None:
            with torch.autocast(dev.device.type, dtype=torch.bfloat16):
                loss = module.training_step(data, 0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, float(cfg.trainer.gradient_clip_val))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        dev.timed(step)  # warm-up: kernels, optimizer state
        times = [dev.timed(step) for _ in range(steps)]
        row.update(param_budget(module, optimizer))
        row["step_s"] = statistics.median(times)
        row["samples_per_s"] = batch_size / row["step_s"]
        row.update(dev.peaks())
        if name != "stage1_full":
            row["ddim_s"] = ddim_seconds(module, data, ddim_steps, dev)
            row["ddim_steps"] = ddim_steps
            row["ddim_peak_reserved_gib"] = dev.peaks()["peak_reserved_gib"]
        peak = row["peak_reserved_gib"]
        row["fits"] = None if peak is None else peak + CONTEXT_GIB <= budget
    except torch.cuda.OutOfMemoryError as exc:
        row.update(fits=False, error=f"CUDA out of memory: {str(exc).splitlines()[0][:160]}")
    finally:
        module = optimizer = data = None  # free before the next configuration
        dev.reset()
    return row


def ddim_seconds(module: VideoDiffusionModule, data: dict, steps: int, dev: Device) -> float:
    """Seconds of one guided DDIM sampling of the batch + VAE decoding (bf16 autocast)."""
    module.eval()
    try:
        with torch.no_grad(), torch.autocast(dev.device.type, dtype=torch.bfloat16):
            cond = module(data["fmri"])
            shape = module.codec.latent_shape(*module.frames_shape)
            generator = torch.Generator(device=dev.device).manual_seed(0)

            def sample() -> None:
                latents = ddim_sample(module.unet, module.noise_scheduler, cond,
                                      module.adapter.null(cond.shape[0]).to(cond.dtype), shape,
                                      steps=steps, generator=generator)  # fmt: skip
                module.codec.decode(latents)

            return dev.timed(sample)
    finally:
        module.train()


def verdict(row: dict, budget: float) -> str:
    if row.get("error"):
        return f"{row['config']}: does not fit ({row['error']})"
    if row["fits"] is None:
        return f"{row['config']}: dry run on CPU, no GPU memory figure (step {row['step_s']:.2f} s)"
    word = "fits" if row["fits"] else "does not fit"
    return (
        f"{row['config']}: {word} in {budget:g} GiB (peak reserved {row['peak_reserved_gib']:.1f}"
        f" GiB + {CONTEXT_GIB:g} context; batch {row['batch']}, {row['samples_per_s']:.2f} "
        f"samples/s)"
    )


def fmt(value: Any) -> Any:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 3)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU dry run at tiny sizes")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--ddim-steps", type=int, default=25)
    parser.add_argument("--budget-gib", type=float, default=24.0)
    parser.add_argument("--only", nargs="*", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    args = parser.parse_args(argv)
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or --tiny for the CPU dry run")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    sizes = TINY if args.tiny else FULL
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    dev = Device(device)
    start = time.perf_counter()
    rows = [check(n, sizes, dev, args.steps, args.ddim_steps, args.budget_gib) for n in args.only]
    total = time.perf_counter() - start
    lines = [verdict(r, args.budget_gib) for r in rows]
    print("\n".join(lines))
    keys = ["config", "batch", "trainable_params", "step_s", "samples_per_s",
            "peak_allocated_gib", "peak_reserved_gib", "ddim_s", "fits"]  # fmt: skip
    table = markdown_table(keys, [[fmt(r.get(k)) for k in keys] for r in rows])
    kind = "CPU dry run at tiny sizes (no memory figures)" if args.tiny else "full sizes"
    notes = (
        f"{kind}; {args.steps} timed steps after one warm-up (median), bf16 autocast, gradient "
        f"checkpointing, SDPA attention, random weights and batches; DDIM: {args.ddim_steps} "
        f"guided steps + VAE decoding of one batch. Verdicts ({args.budget_gib:g} GiB budget, "
        f"{CONTEXT_GIB:g} GiB kept for the CUDA context): " + "; ".join(lines) + f". Total "
        f"{total:.0f} s."
    )
    write_result("gpu_check", "GPU check at the paper's sizes (bench/gpu_check.py)", table,
                 {"rows": rows, "tiny": args.tiny, "total_s": total,
                  "budget_gib": args.budget_gib}, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
