"""``neurocine embed``: write CLIP image and text targets into a subject file.

For every split, the clip of each TR (``/<split>/frames``) becomes ``/<split>/clip_image`` and
its caption (``/<split>/caption``, when the split has one) ``/<split>/clip_text``, float16
``[T, D]``, unit-norm (docs/design.md §3). Rows are read and embedded in batches of
``cfg.clip.batch_size`` with a progress bar. The file is rewritten atomically: embeddings are
computed first, then written into a temporary copy that is validated and renamed onto the file,
so an interrupted run leaves it unchanged. Each dataset records the CLIP that made it in its
``clip_model`` and ``frame_reduce`` attributes.

Idempotent: a file whose splits already hold their embeddings from the same CLIP (same
``clip_model`` and ``frame_reduce`` attributes) is left alone unless ``force``; embeddings that
another CLIP made are recomputed (the report says so), and embeddings without provenance (written
by another tool) are kept unless ``force``.
This module lives at the package top level because ``neurocine.data`` must not import
``neurocine.models``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from neurocine.data.schema import SPLITS, read_strings, validate
from neurocine.errors import SchemaError
from neurocine.fileio import atomic_path
from neurocine.models.clip_targets import (
    describe_clip,
    image_embeddings,
    load_clip,
    resolve_device,
    text_embeddings,
)


@dataclass
class EmbedReport:
    """What :func:`embed_subject` did: the datasets written (``"train/clip_image": D``)."""

    path: Path
    written: dict[str, int] = field(default_factory=dict)
    skipped: bool = False
    clip_model: str = ""
    replaced: str = ""  # provenance of the embeddings that were recomputed, if any

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"{self.path}: embeddings already present (use --force to recompute)"]
        datasets = ", ".join(f"{k}[{d}]" for k, d in self.written.items())
        out = [f"{self.path}: wrote {datasets} with CLIP {self.clip_model}"]
        if self.replaced:
            out.append(f"{self.path}: replaced embeddings made by CLIP {self.replaced}")
        return out


def _targets(f: h5py.File) -> dict[str, list[str]]:
    """Per split, the embedding datasets it should have (image always, text with captions)."""
    wanted = {}
    for split in SPLITS:
        if split not in f:
            continue
        if "frames" not in f[split]:
            raise SchemaError(
                f"{f.filename}: /{split}/frames: missing dataset (CLIP image targets need clips)"
            )
        wanted[split] = ["clip_image"] + (["clip_text"] if "caption" in f[split] else [])
    return wanted


def _stale(f: h5py.File, wanted: dict[str, list[str]], clip_model: str, frame_reduce: str) -> str:
    """Provenance of present embeddings that another CLIP (or frame reduction) made, or ""."""
    for split, names in wanted.items():
        for name in names:
            if name not in f[split]:
                continue
            attrs = f[split][name].attrs
            made_by = attrs.get("clip_model")
            if made_by is None:
                continue  # written by another tool: kept unless --force
            reduce = str(attrs.get("frame_reduce", frame_reduce))
            if str(made_by) != clip_model or (name == "clip_image" and reduce != frame_reduce):
                return f"{made_by} (frame_reduce={reduce})"
    return ""


def is_embedded(path: str | Path) -> bool:
    """True when every split holds its ``clip_image`` (and ``clip_text`` if it has captions)."""
    validate(path)
    with h5py.File(path, "r") as f:
        return all(name in f[split] for split, names in _targets(f).items() for name in names)


def _embed_split(
    group: h5py.Group, names: list[str], model, preprocess, tokenizer, cfg, bar: tqdm
) -> dict[str, np.ndarray]:
    n_rows = group["fmri"].shape[0]
    batch = max(1, int(cfg.clip.batch_size))
    out: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, n_rows, batch):
        stop = min(start + batch, n_rows)
        frames = group["frames"][start:stop]
        emb = image_embeddings(model, preprocess, frames, str(cfg.clip.frame_reduce))
        out["clip_image"].append(emb.numpy().astype(np.float16))
        if "clip_text" in out:
            captions = read_strings(group["caption"], slice(start, stop))
            out["clip_text"].append(
                text_embeddings(model, tokenizer, captions).numpy().astype(np.float16)
            )
        bar.update(stop - start)
    return {name: np.concatenate(parts, axis=0) for name, parts in out.items()}


def embed_subject(
    path: str | Path, cfg: Any, force: bool = False, progress: bool = True
) -> EmbedReport:
    """Write CLIP image/text embeddings into a subject file.

    Parameters
    ----------
    path : str or Path
        A valid subject HDF5 file with frames (and optionally captions).
    cfg : DictConfig
        The experiment config; reads ``cfg.clip`` (preset, pretrained, frame_reduce,
        batch_size, seed, device).
    force : bool, default=False
        Recompute even when the embeddings are present.
    progress : bool, default=True
        Show a progress bar over TRs.

    Returns
    -------
    EmbedReport
    """
    path = Path(path)
    validate(path)
    with h5py.File(path, "r") as f:
        wanted = _targets(f)
        done = all(name in f[s] for s, names in wanted.items() for name in names)
        total = sum(f[s]["fmri"].shape[0] for s in wanted)
        report = EmbedReport(path=path, clip_model=describe_clip(cfg.clip))
        report.replaced = _stale(f, wanted, report.clip_model, str(cfg.clip.frame_reduce))
    if done and not force and not report.replaced:
        report.skipped = True
        return report

    model, preprocess, tokenizer = load_clip(cfg.clip)
    model.to(resolve_device(str(cfg.clip.device)))
    results: dict[str, dict[str, np.ndarray]] = {}
    with (
        h5py.File(path, "r") as f,
        tqdm(total=total, desc="embed", unit="TR", disable=not progress) as bar,
        torch.inference_mode(),
    ):
        for split, names in wanted.items():
            results[split] = _embed_split(f[split], names, model, preprocess, tokenizer, cfg, bar)

    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            for split, arrays in results.items():
                for name, values in arrays.items():
                    if name in f[split]:
                        del f[split][name]
                    dset = f[split].create_dataset(
                        name, data=values, chunks=(max(1, min(len(values), 4096)), values.shape[1])
                    )
                    dset.attrs["clip_model"] = report.clip_model
                    dset.attrs["frame_reduce"] = str(cfg.clip.frame_reduce)
                    report.written[f"{split}/{name}"] = int(values.shape[1])
        validate(tmp, display_name=str(path))
    return report
