"""``neurocine evaluate``: score a run's reconstructions beside the baselines (``metrics.json``).

Rows of the table, all scored on the same clips (the reconstructed ones, minus clips that span
a scene cut when the data have scene ids, docs/design.md §10):

- ``neurocine``: the run's reconstructions (``reconstructions.h5`` of ``neurocine reconstruct``).
- ``mean_frame``: every frame is the mean training frame. SSIM rewards blur (the mean image
  scores SSIM 0.294 on the demo's test clips, above NeuroCine's 0.243), so every SSIM needs
  this row beside it.
- ``ridge``: ridge regression from the fMRI window to the pixels (:mod:`baselines.pixel_ridge`).
- ``oracle``: the same stage-2 model and seeds, conditioned on the noise-free ``fmri_clean``
  (simulated data only): the ceiling of the simulated benchmark.
- ``clip_oracle`` (asked for by name): the same stage-2 model and seeds, conditioned on each
  clip's true CLIP image embedding (``/<split>/clip_image``, stage 1's target) in place of the
  encoder's prediction: stage 2's ceiling given a perfect stage 1, on any embedded data. Only
  for a decoder whose condition adapter takes a CLIP embedding (the shipped tiny prior's).

Both baselines learn from the DataModule's ``train`` samples (the runs the model trained on).
Metrics per row: SSIM (``evaluation.ssim``: MinD-Video's per-frame scikit-image call by
default), PSNR, n-way top-1 for each ``evaluation.n_ways`` — frame-based (image classifier per
frame) and video-based (one prediction per clip) — under MinD-Video's protocol (any of the
ground truth's top ``k_true`` classes; ``video_50way``) and the strict one (its top-1 class only;
``video_50way_strict``), the CLIP image-embedding cosine similarity to the ground truth, and
CLIP-pcc, the cosine of the CLIP embeddings of adjacent frames (``clip_pcc``; all frame pairs:
``clip_pcc_all``), which the ``ground_truth`` row reports too. On cc2017 the table ends with the
published results beside the run (:mod:`neurocine.analysis.published`, docs/published.md).
The classifier is the trained evaluator on simulated data (:mod:`neurocine.evaluator`) or
MinD-Video's pretrained ViT / VideoMAE loaded by path on real data.

Where things are: ``evaluate_run(path)`` accepts a stage-2 run directory whose reconstructions
are in ``<run>/samples/`` (``neurocine reconstruct --run RUN --out RUN/samples``, what the demo
does), or the reconstruction folder itself (its ``reconstructions.h5`` names the run). It
writes ``metrics.json`` and ``metrics.md`` (the markdown table) into the run directory, or into
``out_dir``. The oracles' samples are cached as ``oracle.h5`` and ``clip_oracle.h5`` beside the
reconstructions.

Modules: :mod:`~neurocine.evaluation.inputs` (finding the reconstructions, the paired clips),
:mod:`~neurocine.evaluation.scoring` (the metrics of one row),
:mod:`~neurocine.evaluation.statistics` (paired differences and their standard errors),
:mod:`~neurocine.evaluation.report` (the table, ``metrics.json``/``metrics.md``),
:mod:`~neurocine.evaluation.baselines` (the baselines' and the oracles' predictions) and
:mod:`~neurocine.evaluation.run` (:func:`evaluate_run`, which puts them together).
"""

from neurocine.analysis.runs import SAMPLES_DIR
from neurocine.evaluation.baselines import (
    BASELINES,
    baseline_predictions,
    clip_oracle_samples,
    oracle_samples,
)
from neurocine.evaluation.inputs import PairedClips, RunSamples, find_reconstructions
from neurocine.evaluation.report import (
    LABELS,
    METRICS_JSON,
    METRICS_MD,
    flat_metrics,
    markdown_table,
    metric_columns,
    paired_note,
    write_report,
)
from neurocine.evaluation.run import Evaluation, evaluate_run
from neurocine.evaluation.scoring import Scorer
from neurocine.evaluation.statistics import paired_differences

__all__ = [
    "BASELINES",
    "LABELS",
    "METRICS_JSON",
    "METRICS_MD",
    "SAMPLES_DIR",
    "Evaluation",
    "PairedClips",
    "RunSamples",
    "Scorer",
    "baseline_predictions",
    "clip_oracle_samples",
    "evaluate_run",
    "find_reconstructions",
    "flat_metrics",
    "markdown_table",
    "metric_columns",
    "oracle_samples",
    "paired_differences",
    "paired_note",
    "write_report",
]
