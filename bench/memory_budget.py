"""Stage 2's memory budget by component at the paper's size, measured on CPU.

For ``experiments/stage2_full.yaml`` (every UNet weight trains, AdamW) and
``experiments/stage2_24gb.yaml`` (motion modules + LoRA train, the 2-D UNet frozen in bf16,
8-bit AdamW): weights (trainable / frozen, as stored), gradients (float32, one per trainable
weight) and optimizer state (AdamW: two float32 states per trainable weight; bitsandbytes'
8-bit AdamW: two bytes, its per-block scales aside) from the exact parameter counts of Stable
Diffusion 1.5's UNet inflated with the motion modules (the stage-1 encoder and SD's VAE are
frozen, float32).

Activations at batch 1 are measured, not estimated: one forward pass of the real UNet (random
weights) under bf16 autocast in training mode, counting the bytes of every tensor autograd
saves for backward (``torch.autograd.graph.saved_tensors_hooks``, each storage once, the
module's parameters excluded). Gradient checkpointing is accounted block by block: the
checkpointed blocks' inputs are what stays held until backward, and backward recomputes one
block at a time, so the largest block's saved tensors come on top. Measured at clips reduced
from 6 × 32 × 32 latents (6 × 256² pixels) to ``--sizes`` and extrapolated linearly in
latent positions (frames × h × w), which the two measured sizes check.

    python -m bench.memory_budget [--sizes 2x8 2x16]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.utils.checkpoint
from diffusers import AutoencoderKL

from bench.common import markdown_table, write_result
from neurocine.config import load_config
from neurocine.lit.stage2 import FROZEN_DTYPES
from neurocine.models.encoder_factory import build_encoder
from neurocine.models.full_size import SD15_VAE_CONFIG, sd15_unet2d
from neurocine.models.video_unet import inflate_unet, predict_noise, set_trainable

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
FULL_FRAMES, FULL_LATENT = 6, 32
VOXELS, CLIP_DIM, TOKENS, CROSS = 4003, 768, 77, 768
RECIPES = ("stage2_full", "stage2_24gb")


class SavedBytes:
    """Bytes autograd saves, split into outside / per checkpointed block / block inputs."""

    def __init__(self, exclude: set[int]) -> None:
        self.seen = set(exclude)
        self.outside = 0
        self.blocks: list[int] = []
        self.block_inputs = 0
        self._current: list[int] = []

    def _add(self, tensor: torch.Tensor) -> int:
        storage = tensor.untyped_storage()
        if storage.data_ptr() in self.seen or tensor.device.type == "meta":
            return 0
        self.seen.add(storage.data_ptr())
        return storage.nbytes()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        n = self._add(tensor)
        if self._current:
            self._current[-1] += n
        else:
            self.outside += n
        return tensor

    def checkpoint(self, module: Callable, *args: Any) -> Any:
        """diffusers' gradient-checkpointing hook: count the block's inputs and its own saves."""
        if not self._current:
            self.block_inputs += sum(self._add(a) for a in args if isinstance(a, torch.Tensor))
        self._current.append(0)
        try:
            return module(*args)
        finally:
            self.blocks.append(self._current.pop())


def measure_activations(unet: torch.nn.Module, frames: int, latent: int) -> dict[str, float]:
    """Saved-for-backward bytes of one batch-1 forward pass at ``frames × latent²`` latents."""
    counter = SavedBytes({p.untyped_storage().data_ptr() for p in unet.parameters()})
    unet.enable_gradient_checkpointing(gradient_checkpointing_func=counter.checkpoint)
    unet.train()
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, frames, latent, latent, generator=g)
    cond = torch.randn(1, TOKENS, CROSS, generator=g)
    with (
        torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t),
        torch.autocast("cpu", dtype=torch.bfloat16),
    ):
        out = predict_noise(unet, sample, torch.tensor([500]), cond)
    del out
    unet.disable_gradient_checkpointing()
    no_ckpt = counter.outside + sum(counter.blocks)
    ckpt = counter.outside + counter.block_inputs + max(counter.blocks, default=0)
    return {"positions": frames * latent * latent, "no_checkpointing_gib": no_ckpt / GIB,
            "checkpointing_gib": ckpt / GIB, "largest_block_gib": max(counter.blocks) / GIB,
            "blocks": len(counter.blocks)}  # fmt: skip


def extrapolate(points: list[dict], key: str, positions: int, batch: int = 1) -> float:
    """Linear in latent positions through the two measured sizes: the intercept (bf16 copies of
    trainable weights, per-block constants) once, the slope per position × ``batch``."""
    (x0, y0), (x1, y1) = [(p["positions"], p[key]) for p in points[-2:]]
    slope = (y1 - y0) / (x1 - x0)
    return y1 - slope * x1 + slope * positions * batch


def static_budget(unet: torch.nn.Module, recipe: Any) -> dict[str, float]:
    """GiB of the UNet's weights, gradients and optimizer state for ``recipe`` (its config)."""
    params = list(unet.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen_bytes = FROZEN_DTYPES[str(recipe.stage2.frozen_dtype)].itemsize
    frozen = sum(p.numel() for p in params if not p.requires_grad)
    state_bytes = 2 if str(recipe.stage2.optimizer) == "adamw_8bit" else 8
    return {
        "trainable_params": trainable,
        "trainable_weights_gib": trainable * 4 / GIB,
        "frozen_unet_weights_gib": frozen * frozen_bytes / GIB,
        "gradients_gib": trainable * 4 / GIB,
        "optimizer_state_gib": trainable * state_bytes / GIB,
    }


def frozen_parts_gib() -> dict[str, float]:
    """The frozen float32 stage-1 encoder (MinD-Video's sizes) and SD's VAE (meta device)."""
    cfg = load_config(None, ["encoder.preset=mindvideo"])
    with torch.device("meta"):
        encoder = build_encoder(cfg.encoder, VOXELS, 2, CLIP_DIM)
        vae = AutoencoderKL.from_config(dict(SD15_VAE_CONFIG))
    return {
        "encoder_gib": sum(p.numel() for p in encoder.parameters()) * 4 / GIB,
        "vae_gib": sum(p.numel() for p in vae.parameters()) * 4 / GIB,
    }


def random_weights(inflate: Callable, unet2d: Callable) -> torch.nn.Module:
    """The inflated SD 1.5 UNet with N(0, 0.02) weights: built on the meta device, then filled
    (seconds instead of a minute of initialisers; what autograd saves depends on shapes only)."""
    with torch.device("meta"):
        unet = inflate(unet2d(), motion_num_attention_heads=8)
    unet.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0.0, 0.02, generator=g)
        for b in unet.buffers():  # the motion modules' sinusoidal positions: any finite values
            b.zero_()
    return unet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs=2, default=["2x8", "2x16"],
                        help="frames x latent side of the two measured clips")  # fmt: skip
    args = parser.parse_args()
    start = time.perf_counter()
    torch.set_num_threads(1)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    fixed = frozen_parts_gib()
    unet = random_weights(inflate_unet, sd15_unet2d)
    rows, data = [], {"sizes": sizes, "frozen": fixed, "recipes": {}}
    full_positions = FULL_FRAMES * FULL_LATENT**2
    for name in RECIPES:
        recipe = load_config(ROOT / "experiments" / f"{name}.yaml", ["unet.pretrained=/unused"])
        s2 = recipe.stage2
        set_trainable(unet, str(s2.unet_trainable), int(s2.lora_rank), float(s2.lora_alpha),
                      tuple(s2.lora_targets))  # fmt: skip
        for p in unet.parameters():
            if not p.requires_grad:
                p.data = p.data.to(FROZEN_DTYPES[str(s2.frozen_dtype)])
        budget = static_budget(unet, recipe)
        points = [measure_activations(unet, f, h) for f, h in sizes]
        act = {k: extrapolate(points, k, full_positions)
               for k in ("no_checkpointing_gib", "checkpointing_gib")}  # fmt: skip
        total = (budget["trainable_weights_gib"] + budget["frozen_unet_weights_gib"]
                 + budget["gradients_gib"] + budget["optimizer_state_gib"]
                 + fixed["encoder_gib"] + fixed["vae_gib"])  # fmt: skip
        data["recipes"][name] = {**budget, "points": points, "activations": act, "static": total}
        batch = int(recipe.data.batch_size)
        act["checkpointing_micro_batch_gib"] = extrapolate(
            points, "checkpointing_gib", full_positions, batch
        )
        rows.append([name, f"{budget['trainable_params'] / 1e6:.1f} M",
                     budget["trainable_weights_gib"], budget["frozen_unet_weights_gib"],
                     budget["gradients_gib"], budget["optimizer_state_gib"],
                     fixed["encoder_gib"] + fixed["vae_gib"], act["checkpointing_gib"],
                     act["no_checkpointing_gib"], total + act["checkpointing_gib"],
                     f"{total + act['checkpointing_micro_batch_gib']:.1f} (batch {batch})",
                     ])  # fmt: skip
        unet.float()  # back to the plain model for the next recipe
        if name == "stage2_24gb":
            unet.unload_lora()
    table = markdown_table(
        ["recipe", "trainable", "trainable weights (f32)", "frozen UNet weights",
         "gradients (f32)", "optimizer state", "frozen encoder + VAE (f32)",
         "activations, batch 1, checkpointing", "activations, batch 1, no checkpointing",
         "total at batch 1", "total at the YAML's micro-batch"], rows)  # fmt: skip
    points = "; ".join(
        f"{n}: " + ", ".join(
            f"{p['positions']} positions → {p['checkpointing_gib']:.3f} / "
            f"{p['no_checkpointing_gib']:.3f} GiB ({p['blocks']} checkpointed blocks)"
            for p in r["points"])
        for n, r in data["recipes"].items()
    )  # fmt: skip
    notes = (
        "GiB (2^30 bytes). Weights, gradients and optimizer state from exact parameter counts "
        "(stage 1's encoder at 4003 voxels, MinD-Video's sizes). Activations: saved-for-backward "
        f"bytes of a batch-1 bf16-autocast forward measured at {', '.join(args.sizes)} "
        "(frames × latent side) and extrapolated linearly to 6 × 32 × 32 latents (6 × 256² "
        f"pixels; the intercept, mostly autocast's bf16 copies of the trainable float32 weights, "
        f"counts once per step, the slope per sample): {points}. With checkpointing, the "
        "blocks' inputs stay held and backward recomputes the largest block on top; without, "
        "everything stays. Not counted: the "
        "CUDA context and allocator slack (~1 GiB), transient gradients of activations, the "
        "VAE's encoding of the batch (no gradient), 8-bit AdamW's per-block scales (< 1 %). "
        f"The GPU check (bench/gpu_check.py) measures the real peak. Run time "
        f"{time.perf_counter() - start:.0f} s."
    )
    write_result("memory_budget", "Stage-2 memory budget by component (bench/memory_budget.py)",
                 table, data, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
