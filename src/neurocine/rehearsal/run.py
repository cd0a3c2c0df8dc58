"""``neurocine rehearse`` (``make rehearse``): the real cc2017 chain, end to end, on a CPU.

Writes under ``out`` (default ``rehearsal/``): ``release/`` (a miniature cc2017 release from
:func:`~neurocine.rehearsal.release.build_cc2017_tree`: 6 training and 2 test segments of 12 TRs,
CIFTI-2 dense time series + H.264 movies), ``models/`` (:func:`~neurocine.rehearsal.models.
write_models`), then runs ``neurocine pipeline --config experiments/rehearsal.yaml`` over them:
``preprocess cc2017`` (cleaning, reproducibility voxel selection, 6 frames of 64 × 64 per TR),
CLIP embeddings, stage 1 and stage 2 of ``experiments/stage{1,2}_full.yaml`` (77 × 768
conditioning tokens, the ``sd15`` UNet preset with the motion adapter, VAE latents), DDIM
reconstruction of every test clip and evaluation with the ViT and VideoMAE classifiers (2- and
50-way). A rerun reuses what exists. The weights are random: the numbers mean nothing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from neurocine.fileio import atomic_path
from neurocine.pipeline import run_pipeline
from neurocine.rehearsal.models import write_models
from neurocine.rehearsal.release import build_cc2017_tree

WIRING_NOTE = (
    "REHEARSAL: random weights and generated data. This run proves the wiring of the real chain "
    "(file layouts, model classes, every step); its metrics say nothing about quality."
)
VIDEO = ["video.fps=3", "video.height=64", "video.width=64", "video.block_trs=4"]


def rehearse(
    out: str | Path = "rehearsal",
    config: str | Path = "experiments/rehearsal.yaml",
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
):
    """Generate the data and models if missing, then run the pipeline; return its result."""

    out = Path(out).resolve()
    log(WIRING_NOTE)
    release = out / "release"
    recorded = out / "release_overrides.json"  # the tree's preprocess settings, written last
    if not recorded.is_file():
        log(f"[rehearse] writing a miniature cc2017 release → {release}")
        shutil.rmtree(release, ignore_errors=True)  # a half-written tree from a killed run
        tree = build_cc2017_tree(release)
        with atomic_path(recorded) as tmp:
            tmp.write_text(json.dumps(tree.overrides))
    source_overrides = json.loads(recorded.read_text())
    log(f"[rehearse] random-weight model directories → {out / 'models'}")
    models = write_models(out / "models")
    source = [t for t in source_overrides if not t.startswith("video.")]
    source += [*VIDEO, "voxels.reproducibility.top_n=64"]
    tokens = [
        f"source.root={release}",
        f"source.overrides={json.dumps(source)}",
        *(f"models.{k}={v}" for k, v in models.items()),
        f"data.path={out / 'data' / 'subject1.h5'}",
        f"runs_dir={out / 'runs'}",
        *overrides,
    ]
    result = run_pipeline(config, tokens, progress=progress, log=log)
    log("")
    log(result.table)
    log(f"stage 2 run: {result.stage2_run}")
    log(WIRING_NOTE)
    return result
