"""``neurocine pipeline``: a real dataset to the metrics table in one command.

Six steps, each with an output that says whether it is finished::

    data         source → subject HDF5 (``preprocess cc2017`` / ``preprocess nifti`` /
                 ``import mindvideo``; ``hdf5``: an existing subject file)       data.path
    embed        CLIP image/text targets written into it (``embed``)            data.path
    stage1       contrastive fMRI encoder  → runs/<name>/stage1/<timestamp>/    encoder/
    stage2       video diffusion on it     → runs/<name>/stage2/<timestamp>/    model/
    reconstruct  test clips                → <stage-2 run>/samples/             reconstructions.h5
    evaluate     NeuroCine vs baselines    → <stage-2 run>/                     metrics.json

A step whose output is complete and valid is skipped (:attr:`Step.is_done`), so running the
same command again continues where it stopped; a training step that was killed continues its
unfinished run from ``checkpoints/last.ckpt``. Every step prints its output folder. A failing
step raises :class:`PipelineError` whose one line names the step; the outputs of the steps
before it are left as they were.

The pipeline YAML (:class:`PipelineSpec`) names the source, the two experiments (as the demo
does, ``neurocine.demo.stage_configs``) and the local model directories; ``key=value``
arguments that name a :class:`PipelineSpec` field (``source.root=…``, ``models.clip=…``,
``name=…``) change the spec, any other applies to both stages (``trainer.devices=4``,
``stage2.lr=…``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
from omegaconf import MISSING, DictConfig

from neurocine.analysis.runs import SAMPLES_DIR
from neurocine.config import (
    load_saved_config,
    merge_layer,
    parse_overrides,
    require,
    resolve_data_module,
)
from neurocine.data.cc2017 import preprocess_cc2017
from neurocine.data.mindvideo import import_mindvideo
from neurocine.data.nifti import preprocess_nifti
from neurocine.data.preprocess_config import (
    Cc2017Config,
    MindVideoConfig,
    NiftiConfig,
    load_preprocess_config,
)
from neurocine.data.schema import validate
from neurocine.demo import stage_configs
from neurocine.embedding import embed_subject, embeddings_current
from neurocine.errors import ConfigError, NeuroCineError
from neurocine.evaluation import evaluate_run, markdown_table
from neurocine.evaluation.report import METRICS_JSON
from neurocine.reconstruct import reconstruct
from neurocine.slurm import resume_checkpoint
from neurocine.sweep import with_values
from neurocine.training import fit

SOURCES = ("cc2017", "mindvideo", "nifti", "hdf5")
RECONSTRUCTIONS = "reconstructions.h5"  # what neurocine.reconstruct writes in SAMPLES
METRICS = METRICS_JSON
SAMPLES = SAMPLES_DIR


class PipelineError(NeuroCineError):
    """A pipeline step failed; the message names the step."""


@dataclass
class SourceSpec:
    """Where the subject file comes from (``data.path`` of the experiments is where it goes)."""

    kind: str = "hdf5"  # cc2017 | mindvideo | nifti | hdf5 (data.path exists already)
    root: str | None = None  # release folder (cc2017), data directory (mindvideo), NIfTI root
    subject: str = "1"  # cc2017: N; mindvideo: subjectN or N
    config: str | None = None  # data module (name or YAML) with the preprocess: block
    overrides: list[str] = field(default_factory=list)  # key=value of the preprocess: block


@dataclass
class ModelsSpec:
    """Local model directories, written into both stages' configs when not null.

    Required (``???``): a pipeline YAML says ``null`` for a model its experiments do not use.
    """

    clip: str | None = MISSING  # transformers CLIPModel directory → clip.pretrained
    stable_diffusion: str | None = MISSING  # diffusers SD 1.x directory → unet.pretrained
    image_classifier: str | None = MISSING  # ViT classifier → evaluation.image_classifier
    video_classifier: str | None = MISSING  # VideoMAE classifier → evaluation.video_classifier


@dataclass
class PipelineSpec:
    """The schema of a pipeline YAML (module docstring)."""

    name: str = "pipeline"  # runs go to <runs_dir>/<name>/stage1|stage2/<timestamp>
    source: SourceSpec = field(default_factory=SourceSpec)
    models: ModelsSpec = field(default_factory=ModelsSpec)
    stage1: str = MISSING
    stage2: str = MISSING
    overrides: list[str] = field(default_factory=list)  # both stages
    stage1_overrides: list[str] = field(default_factory=list)
    stage2_overrides: list[str] = field(default_factory=list)
    reconstruct_device: str | None = None  # None: CUDA when available


MODEL_KEYS = {
    "clip": ["clip.preset=pretrained", "clip.pretrained={}"],
    "stable_diffusion": ["unet.pretrained={}"],
    "image_classifier": ["evaluation.image_classifier={}"],
    "video_classifier": ["evaluation.video_classifier={}"],
}


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> tuple[DictConfig, list[str]]:
    """The validated spec and the overrides left for the stages (module docstring)."""
    spec = load_saved_config(path, schema=PipelineSpec)  # read + validate against the schema
    # `stage2=FILE` is the spec's; `stage2.lr=…` is the experiments' (their stage2 section).
    own = {f.name for f in fields(PipelineSpec)}
    keys = [t.split("=", 1)[0] for t in overrides]
    mine = [t for t, k in zip(overrides, keys, strict=True)
            if k in own or k.split(".", 1)[0] in ("source", "models")]  # fmt: skip
    rest = [t for t in overrides if t not in mine]
    spec = merge_layer(spec, parse_overrides(mine), "overrides")
    require(spec, "stage1", "stage2", *(f"models.{k}" for k in MODEL_KEYS))
    if spec.source.kind not in SOURCES:
        raise ConfigError(f"key 'source.kind': '{spec.source.kind}' is not one of {SOURCES}")
    if spec.source.kind in ("cc2017", "mindvideo") and not spec.source.root:
        raise ConfigError(f"key 'source.root' is required for source.kind={spec.source.kind}")
    return spec, rest


def model_overrides(models: DictConfig) -> list[str]:
    """``key=value`` tokens that put the set model directories into the stage configs."""
    tokens = []
    for key, templates in MODEL_KEYS.items():
        if models[key]:
            tokens += [t.format(models[key]) for t in templates]
    return tokens


@dataclass
class Context:
    """What the steps read: the spec, both stages' configs and how to report."""

    spec: DictConfig
    stage1: DictConfig
    stage2: DictConfig
    progress: bool = True
    log: Callable[[str], None] = print

    @property
    def data(self) -> Path:
        return Path(self.stage1.data.path)

    def runs(self, stage: str) -> Path:
        return Path(self[stage].runs_dir) / stage

    def __getitem__(self, stage: str) -> DictConfig:
        return {"stage1": self.stage1, "stage2": self.stage2}[stage]

    def latest(self, stage: str) -> Path | None:
        link = self.runs(stage) / "latest"
        return link.resolve() if link.exists() else None


@dataclass
class Step:
    """One pipeline step: where it writes, whether that is finished, and how to make it."""

    name: str
    output: Callable[[Context], Path | None]
    is_done: Callable[[Context], bool]
    run: Callable[[Context], None]


# --- data --------------------------------------------------------------------------------------


def _data_done(ctx: Context) -> bool:

    if not ctx.data.is_file():
        return False
    try:
        validate(ctx.data)
    except NeuroCineError:
        return False
    return True


def _data_run(ctx: Context) -> None:

    source = ctx.spec.source
    if source.kind == "hdf5":
        raise ConfigError(
            f"{ctx.data}: not a valid subject file, and source.kind=hdf5 converts nothing "
            "(set source.kind to cc2017, mindvideo or nifti)"
        )
    schema = {"cc2017": Cc2017Config, "mindvideo": MindVideoConfig, "nifti": NiftiConfig}
    module = resolve_data_module(source.config or source.kind, None)
    cfg = load_preprocess_config(schema[source.kind], module, list(source.overrides))
    if source.kind == "cc2017":
        preprocess_cc2017(cfg, source.root, int(source.subject), ctx.data, progress=ctx.progress)
    elif source.kind == "mindvideo":
        import_mindvideo(cfg, source.root, source.subject, ctx.data, progress=ctx.progress)
    else:
        root = Path(source.root) if source.root else module.parent
        preprocess_nifti(cfg, root, ctx.data, progress=ctx.progress)


# --- embed -------------------------------------------------------------------------------------


def _embed_done(ctx: Context) -> bool:

    return embeddings_current(ctx.data, ctx.stage1)


def _embed_run(ctx: Context) -> None:

    for line in embed_subject(ctx.data, ctx.stage1, progress=ctx.progress).lines():
        ctx.log(f"  {line}")


# --- training ----------------------------------------------------------------------------------

EXPORTS = {"stage1": "encoder", "stage2": "model"}
# The file each export writes last-but-atomically (the directories are renamed into place).
EXPORT_MARKERS = {"stage1": "encoder/config.json", "stage2": "model/stage2.json"}


def _trained_on(run: Path) -> DictConfig | None:
    try:
        return load_saved_config(run / "config.yaml")
    except NeuroCineError:
        return None


def _encoder(ctx: Context) -> Path | None:
    run = ctx.latest("stage1")
    return run / EXPORTS["stage1"] if run is not None else None


def _stage_done(stage: str) -> Callable[[Context], bool]:
    def done(ctx: Context) -> bool:
        run = ctx.latest(stage)
        if run is None or not (run / EXPORT_MARKERS[stage]).is_file():
            return False
        saved = _trained_on(run)
        if saved is None or Path(saved.data.path).resolve() != ctx.data.resolve():
            return False
        if stage == "stage2":  # trained on the current stage-1 encoder
            encoder = _encoder(ctx)
            return encoder is not None and Path(saved.stage2.encoder_ckpt).resolve() == encoder
        return True

    return done


def unfinished_run(runs: Path, export: str) -> Path | None:
    """The newest run under ``runs`` with a checkpoint but no export (killed mid-training).

    Its checkpoint is :func:`neurocine.slurm.resume_checkpoint`: ``last.ckpt`` or a newer
    preemption checkpoint.
    """
    if not runs.is_dir():
        return None
    candidates = [
        p
        for p in runs.iterdir()
        if p.is_dir()
        and not p.is_symlink()
        and not p.name.startswith(".")
        and resume_checkpoint(p) is not None
        and not (p / export).exists()
    ]
    return max(candidates, key=lambda p: p.name) if candidates else None


def _stage_run(stage: str) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:

        cfg = ctx[stage]
        if stage == "stage2":
            cfg = with_values(cfg, **{"stage2.encoder_ckpt": str(_encoder(ctx))})
        unfinished = unfinished_run(ctx.runs(stage), EXPORTS[stage])
        if unfinished is not None:
            ctx.log(f"  continuing the unfinished run {unfinished}")
            cfg = with_values(cfg, ckpt_path=str(resume_checkpoint(unfinished)))
        fit(cfg)

    return run


# --- reconstruct and evaluate ------------------------------------------------------------------


def _samples(ctx: Context) -> Path | None:
    run = ctx.latest("stage2")
    return run / SAMPLES if run is not None else None


def _reconstruct_done(ctx: Context) -> bool:
    samples = _samples(ctx)
    if samples is None or not (samples / RECONSTRUCTIONS).is_file():
        return False
    try:  # the checks of analysis.runs.read_reconstructions, without reading the frames
        with h5py.File(samples / RECONSTRUCTIONS, "r") as f:
            frames, index = f.get("frames"), f.get("index")
            return (
                isinstance(frames, h5py.Dataset)
                and isinstance(index, h5py.Dataset)
                and frames.ndim == 5
                and frames.shape[0] == index.shape[0] > 0
            )
    except OSError:
        return False


def _latest_stage2(ctx: Context) -> Path:
    run = ctx.latest("stage2")
    if run is None:
        raise NeuroCineError(f"{ctx.runs('stage2')}: no finished stage-2 run (its latest link)")
    return run


def _reconstruct_run(ctx: Context) -> None:

    limit = ctx.stage2.evaluation.reconstruct_limit
    run = _latest_stage2(ctx)
    reconstruct(
        run, run / SAMPLES, limit=limit, device=ctx.spec.reconstruct_device, progress=ctx.progress
    )


def _evaluate_done(ctx: Context) -> bool:
    run = ctx.latest("stage2")
    if run is None or not (run / METRICS).is_file() or not _reconstruct_done(ctx):
        return False
    try:
        metrics = json.loads((run / METRICS).read_text())
    except (OSError, ValueError):
        return False
    h5 = run / SAMPLES / RECONSTRUCTIONS
    fresh = (run / METRICS).stat().st_mtime_ns >= h5.stat().st_mtime_ns
    return fresh and isinstance(metrics, dict) and bool(metrics.get("rows"))


def _evaluate_run(ctx: Context) -> None:

    evaluate_run(_latest_stage2(ctx), progress=ctx.progress)


STEPS = (
    Step("data", lambda ctx: ctx.data.parent, _data_done, _data_run),
    Step("embed", lambda ctx: ctx.data.parent, _embed_done, _embed_run),
    Step(
        "stage1",
        lambda ctx: ctx.latest("stage1") or ctx.runs("stage1"),
        _stage_done("stage1"),
        _stage_run("stage1"),
    ),  # fmt: skip
    Step(
        "stage2",
        lambda ctx: ctx.latest("stage2") or ctx.runs("stage2"),
        _stage_done("stage2"),
        _stage_run("stage2"),
    ),  # fmt: skip
    Step("reconstruct", _samples, _reconstruct_done, _reconstruct_run),
    Step("evaluate", lambda ctx: ctx.latest("stage2"), _evaluate_done, _evaluate_run),
)


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did: per step ``"skipped"`` or ``"ran"``, and the table."""

    status: dict[str, str]
    stage2_run: Path | None  # None (and table "") when the steps stopped before stage 2
    table: str


def build_context(
    config: str | Path,
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Context:
    """Validate the spec and both stages' configs (before anything runs)."""

    spec, rest = load_spec(config, overrides)
    stage1, stage2 = stage_configs(spec, [*model_overrides(spec.models), *rest])
    return Context(spec, stage1, stage2, progress, log)


def run_pipeline(
    config: str | Path,
    overrides: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
    steps: Sequence[Step] = STEPS,
) -> PipelineResult:
    """Run the steps that are not finished (module docstring) and return the metrics table."""

    ctx = build_context(config, overrides, progress, log)
    status = {}
    for k, step in enumerate(steps, 1):
        head = f"[pipeline] {k}/{len(steps)} {step.name}"
        if step.is_done(ctx):
            log(f"{head}: finished earlier, skipped → {step.output(ctx)}")
            status[step.name] = "skipped"
            continue
        log(f"{head}: running")
        try:
            step.run(ctx)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            kind = "" if isinstance(exc, NeuroCineError) else f"unexpected {type(exc).__name__}: "
            raise PipelineError(f"pipeline step '{step.name}' failed: {kind}{first}") from exc
        if not step.is_done(ctx):
            raise PipelineError(
                f"pipeline step '{step.name}' ran but its output is not complete: "
                f"{step.output(ctx)}"
            )
        log(f"{head}: done → {step.output(ctx)}")
        status[step.name] = "ran"
    run2 = ctx.latest("stage2")
    metrics = run2 / METRICS if run2 is not None else None
    table = markdown_table(json.loads(metrics.read_text())) if metrics and metrics.is_file() else ""
    return PipelineResult(status, run2, table)
