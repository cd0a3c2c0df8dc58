"""The simulated fMRI–video dataset: the embedded default that the demo and the tests run on.

A stand-in for cc2017 (Wen et al. 2018) built from a known generative model, so that every
stage of the framework has ground truth to be checked against:

1. **Stimulus** (:mod:`neurocine.data.render`): procedural clips of coloured shapes moving
   over textured backgrounds, cut into scenes of ~``scene_mean_s`` seconds, ``fps`` frames per
   second (3 fps × 2 s TR = 6 frames per TR). Per TR: a caption of the generating attributes,
   a category label (shape × colour, 64 classes) and a scene id (``"12-13"`` when the TR's
   2 s span contains a cut).
2. **Voxels** (:mod:`neurocine.data.cortex`): ``n_voxels`` voxels in occipital/temporal cortex
   of the MNI152 brain mask with ROI labels. Retinotopic voxels sum local contrast, motion and
   colour-opponent energy inside a Gaussian pRF; a fraction ``semantic_fraction`` are tuned to
   the scene's attributes (shape, colour, motion direction/speed, size, background). Each
   voxel's drive is z-scored on the training stimuli, then drives are smoothed over MNI
   distance (``signal_fwhm_mm``) so that neighbours share signal.
3. **BOLD**: the frame-rate drive convolved with nilearn's Glover HRF, sampled once per TR at
   the middle of the TR. The stimulus/response lag is kept (the clip of TR t peaks in the BOLD
   at TR t+2…t+3), the DataModule's ``lag_trs`` handles it. The clean BOLD is scaled per voxel
   so that its standard deviation on the training runs is ``snr``; noise is AR(1) in time
   (``ar1``, per run, stationary), spatially correlated (``noise_fwhm_mm``) and of unit
   variance, so ``snr = std(signal) / std(noise)`` per voxel of single-repeat data.
   With ``signal_fraction < 1`` only that share of the voxels carries the stimulus: they are
   the top of a smooth random field over MNI space (FWHM ``SIGNAL_BLOB_FWHM_MM``), so signal
   comes in blobs, and the other voxels' clean BOLD is zero (noise only). The mask is stored
   as ``/voxels/signal``: the ground truth that brain maps are scored against.
4. **Splits**: train runs are shown once; test runs ``test_repeats`` times with independent
   noise and averaged (cc2017's protocol), which raises their SNR by ``sqrt(test_repeats)``.

Stored scales: ``/<split>/fmri`` is the noisy BOLD (test: the repeat average) z-scored per run
and voxel; ``/<split>/fmri_clean`` is the noise-free BOLD z-scored per run and voxel with its
*own* statistics, so the oracle input lives on the same unit scale as ``fmri`` (it is not
``fmri`` minus the noise, which would have variance ``snr² / (1 + snr²)``).

Calibration (defaults, seed 0): a linear ridge decoder from the fMRI window at TR t+2, t+3 to
the one-hot category (α = 1e3, test TRs without a cut) reaches top-1 ≈ 0.18–0.21 of 64 classes
(chance 0.016), 50-way top-1 ≈ 0.23 (chance 0.02), shape ≈ 0.9 and colour ≈ 0.8 of 8; from
``fmri_clean`` ≈ 0.47 of 64. ``snr`` moves this steeply (0.3: 64-way ≈ 0.13; 0.6: ≈ 0.27).
The default size takes ~4 s of CPU to simulate and write, plus ~4 s of imports and mask.

Everything is a deterministic function of ``seed``: independent streams (spawned from one
``numpy.random.SeedSequence``) draw the brain, the train and test stimuli and the noise, so
changing ``snr`` or ``test_repeats`` leaves stimuli and voxels as they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from omegaconf import DictConfig, OmegaConf
from scipy import sparse

from neurocine.config import check_config as check_config_ranges
from neurocine.data import render
from neurocine.data.cortex import (
    Cortex,
    build_cortex,
    candidate_voxels,
    gaussian_kernel,
    mni_mask,
    retinotopic_gains,
    semantic_gains,
)
from neurocine.data.schema import SubjectWriter
from neurocine.errors import ConfigError

POOL = 2  # feature maps are pooled 2 × 2 before the pRFs read them
FEATURES = ("contrast", "motion", "red-green", "blue-yellow")
SEMANTIC_MIX = 0.3  # weight of a semantic voxel's own (coarse) retinotopic drive
DATASET = "simulated"
PROVENANCE = "simulation"  # root attribute: the simulation config as JSON
SIGNAL_BLOB_FWHM_MM = 20.0  # smoothness of the field whose top voxels carry signal


@dataclass
class SplitArrays:
    """One split of the simulation (``T`` TRs, ``N = T · F`` frames, ``V`` voxels)."""

    frames: np.ndarray  # uint8 [T, F, H, W, 3] frames shown during each TR
    run: np.ndarray  # int32 [T]
    caption: list[str]  # [T] scene at the TR's middle frame
    label: np.ndarray  # int32 [T] shape * 8 + colour of that scene
    scene: list[str]  # [T] scene id, "a-b" when the TR contains a cut
    attributes: dict[str, np.ndarray]  # int64 [T] each: shape, colour, background, direction
    drive: np.ndarray  # float32 [N, V] neural drive at frame rate (ground truth)
    bold_clean: np.ndarray  # float32 [T, V] noise-free BOLD in noise units (std = snr on train)
    bold: np.ndarray  # float32 [R, T, V] noisy single-repeat BOLD (R = 1 for train)
    fmri: np.ndarray  # float32 [T, V] stored: mean over repeats, z-scored per run
    fmri_clean: np.ndarray  # float32 [T, V] stored: clean BOLD z-scored per run

    def drive_per_tr(self) -> np.ndarray:
        """``[T, V]`` mean drive over the frames of each TR (the stimulus side of the lag)."""
        t, f = self.frames.shape[:2]
        return self.drive.reshape(t, f, -1).mean(1)


@dataclass
class Simulation:
    """Everything :func:`simulate_arrays` makes; :func:`simulate_subject` writes it."""

    cortex: Cortex
    frames_per_tr: int
    signal: np.ndarray  # bool [V] voxels whose BOLD carries the stimulus (the rest: noise only)
    train: SplitArrays
    test: SplitArrays


def check_config(cfg: DictConfig) -> int:
    """Validate a :class:`~neurocine.config.SimulationConfig`; return frames per TR.

    The ranges of single fields are declared in the schema; this adds the rules between them.

    Raises
    ------
    ConfigError
        Naming the key and the value.
    """

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"simulate: {key}={cfg[key]!r}: {why}")

    check_config_ranges(cfg, "simulate")  # each field's declared range
    for key in ("height", "width"):
        if cfg[key] < 8 or cfg[key] % POOL:
            raise bad(key, f"must be a multiple of {POOL} and at least 8 pixels")
    frames = cfg.tr_s * cfg.fps
    if abs(frames - round(frames)) > 1e-6 or round(frames) < 1:
        raise bad("fps", f"tr_s × fps = {frames:g} must be a whole number of frames per TR")
    if cfg.scene_mean_s < cfg.tr_s:
        raise bad("scene_mean_s", f"must be at least tr_s={cfg.tr_s:g} (scenes last ≥ 1 TR)")
    return int(round(frames))


# --- stimulus features -------------------------------------------------------------------------


def frame_features(frames: np.ndarray, run_frames: int) -> np.ndarray:
    """Local feature energy that retinotopic voxels read, pooled ``POOL × POOL``.

    Parameters
    ----------
    frames : ndarray of uint8, shape (N, H, W, 3)
        Consecutive frames; runs of ``run_frames`` frames (motion restarts at a run's start).

    Returns
    -------
    ndarray of float32, shape (N, 4, H / POOL, W / POOL)
        Channels :data:`FEATURES`: luminance contrast (deviation from the 3 × 3 mean), motion
        energy (absolute frame difference), and the two colour-opponent signals.
    """
    from scipy import ndimage

    n, h, w, _ = frames.shape
    rgb = frames.astype(np.float32) / 255.0
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    contrast = np.abs(lum - ndimage.uniform_filter(lum, size=(1, 3, 3), mode="nearest"))
    runs = lum.reshape(n // run_frames, run_frames, h, w)
    motion = np.zeros_like(runs)
    motion[:, 1:] = np.abs(np.diff(runs, axis=1))
    red_green = rgb[..., 0] - rgb[..., 1]
    blue_yellow = rgb[..., 2] - 0.5 * (rgb[..., 0] + rgb[..., 1])
    maps = np.stack([contrast, motion.reshape(n, h, w), red_green, blue_yellow], axis=1)
    return maps.reshape(n, 4, h // POOL, POOL, w // POOL, POOL).mean((3, 5))


def scene_attributes(scenes: render.Scenes) -> np.ndarray:
    """Per-frame attribute code that semantic voxels read, ``[N, A]`` float32.

    One-hot shape, colour, motion direction and background, then the object's size and speed
    (standardised over their sampling ranges).
    """
    blocks = [
        np.eye(len(names), dtype=np.float32)[scenes.per_frame(field)]
        for field, names in (
            ("shape", render.SHAPES),
            ("colour", render.COLOURS),
            ("direction", render.DIRECTIONS),
            ("background", render.BACKGROUNDS),
        )
    ]
    size = (scenes.per_frame("radius") - 0.21) / 0.05
    speed = (scenes.per_frame("speed") - 0.1) / 0.1
    return np.concatenate(blocks + [np.stack([size, speed], 1).astype(np.float32)], axis=1)


def _attribute_gain_columns(gains: np.ndarray) -> np.ndarray:
    """Expand ``[V, 4]`` gains (shape, colour, motion, scene) to the attribute columns."""
    sizes = (len(render.SHAPES), len(render.COLOURS), len(render.DIRECTIONS))
    cols = [np.repeat(gains[:, k : k + 1], n, axis=1) for k, n in enumerate(sizes)]
    cols.append(np.repeat(gains[:, 3:4], len(render.BACKGROUNDS) + 1, axis=1))  # bg + size
    cols.append(gains[:, 2:3])  # speed goes with motion
    return np.concatenate(cols, axis=1)


# --- the voxel model ---------------------------------------------------------------------------


def prf_weights(cortex: Cortex, height: int, width: int) -> np.ndarray:
    """Gaussian pRFs on the pooled feature grid, ``[G, V]``, each integrating to ~1."""
    side = float(min(height, width))
    cols = (np.arange(width // POOL) + 0.5) * POOL
    rows = (np.arange(height // POOL) + 0.5) * POOL
    gx = (cols - width / 2) / (side / 2)
    gy = (height / 2 - rows) / (side / 2)
    gx, gy = np.meshgrid(gx, gy)  # [h, w], row-major like the feature maps
    d2 = (gx.reshape(-1, 1) - cortex.prf_x) ** 2 + (gy.reshape(-1, 1) - cortex.prf_y) ** 2
    sigma2 = cortex.prf_sigma**2
    cell = (2 * POOL / side) ** 2
    return (np.exp(-d2 / (2 * sigma2)) * cell / (2 * np.pi * sigma2)).astype(np.float32)


@dataclass
class _Stimulus:
    scenes: render.Scenes
    frames: np.ndarray  # uint8 [N, H, W, 3]
    features: np.ndarray  # float32 [N, 4 · G]
    attributes: np.ndarray  # float32 [N, A]


def _stimulus(rng: np.random.Generator, cfg: DictConfig, n_runs: int, f: int) -> _Stimulus:
    run_frames = cfg.trs_per_run * f
    scenes = render.sample_scenes(
        rng,
        [run_frames] * n_runs,
        fps=cfg.fps,
        min_frames=f,
        scene_mean_s=cfg.scene_mean_s,
        aspect=cfg.width / cfg.height,
    )
    frames = render.render(scenes, cfg.height, cfg.width, cfg.fps)
    feats = frame_features(frames, run_frames)
    return _Stimulus(scenes, frames, feats.reshape(feats.shape[0], -1), scene_attributes(scenes))


def _voxel_weights(
    rng: np.random.Generator, cfg: DictConfig, cortex: Cortex, train: _Stimulus
) -> np.ndarray:
    """``[4·G + A, V]`` weights from (features, attributes) to each voxel's drive."""
    v = cortex.index.shape[0]
    n_feat = train.features.shape[1]
    # Feature channels on a common scale (std over the training frames).
    chan_std = train.features.reshape(-1, len(FEATURES), n_feat // len(FEATURES)).std((0, 2))
    ret_gain = retinotopic_gains(cortex.roi)
    chan = np.stack(
        [
            ret_gain[:, 0] * rng.uniform(0.5, 1.5, v),
            ret_gain[:, 1] * rng.uniform(0.5, 1.5, v),
            ret_gain[:, 2] * rng.normal(0, 1, v),
            ret_gain[:, 2] * rng.normal(0, 1, v),
        ],
        axis=1,
    ) / np.maximum(chan_std, 1e-8)  # [V, 4]
    prf = prf_weights(cortex, cfg.height, cfg.width)  # [G, V]
    w_ret = (chan.T[:, None, :] * prf[None]).reshape(n_feat, v).astype(np.float32)
    gains = _attribute_gain_columns(semantic_gains(cortex.roi))  # [V, A]
    w_sem = (rng.normal(0, 1, gains.shape) * gains).T.astype(np.float32)  # [A, V]

    # z-score each source on the training stimuli (every 4th frame is plenty), then mix.
    sd_ret = (train.features[::4] @ w_ret).std(0)
    sd_sem = (train.attributes @ w_sem).std(0)
    a = np.where(cortex.semantic, SEMANTIC_MIX, 1.0)
    b = np.where(cortex.semantic, 1.0, 0.0)
    w = np.concatenate(
        [w_ret * (a / np.maximum(sd_ret, 1e-12)), w_sem * (b / np.maximum(sd_sem, 1e-12))]
    )
    # Neighbouring voxels share signal: smoothing is linear, so it folds into the weights.
    smooth = gaussian_kernel(cortex.coords, cfg.signal_fwhm_mm, "sum")
    return np.ascontiguousarray((smooth @ w.T).T, dtype=np.float32)


def signal_voxels(rng: np.random.Generator, coords: np.ndarray, fraction: float) -> np.ndarray:
    """``[V]`` bool: the ``round(fraction · V)`` voxels where a smooth random field is highest.

    The field is white noise smoothed over MNI distance (FWHM :data:`SIGNAL_BLOB_FWHM_MM`), so
    the signal voxels form blobs. ``fraction = 1`` selects every voxel and draws nothing.
    """
    v = coords.shape[0]
    n = max(1, int(round(fraction * v)))
    if n >= v:
        return np.ones(v, dtype=bool)
    field = gaussian_kernel(coords, SIGNAL_BLOB_FWHM_MM, "l2") @ rng.standard_normal(v)
    mask = np.zeros(v, dtype=bool)
    mask[np.argpartition(-field, n - 1)[:n]] = True
    return mask


def _drive(stim: _Stimulus, w: np.ndarray) -> np.ndarray:
    """``[N, V]`` drive of each voxel at each frame (before centring)."""
    n_feat = stim.features.shape[1]
    return stim.features @ w[:n_feat] + stim.attributes @ w[n_feat:]


def hrf_matrix(cfg: DictConfig, f: int) -> np.ndarray:
    """``[T_run, T_run · F]``: frame-rate drive of a run → BOLD sampled at each TR's middle.

    The kernel is nilearn's Glover HRF at the frame rate (peak 1); the volume of TR t is read
    at frame ``t · F + F // 2``, i.e. ``t · tr_s + tr_s / 2`` seconds.
    """
    from nilearn.glm.first_level import glover_hrf

    hrf = glover_hrf(t_r=cfg.tr_s, oversampling=f, time_length=32.0)
    hrf = hrf / hrf.max()
    t_run, n = cfg.trs_per_run, cfg.trs_per_run * f
    lag = (np.arange(t_run) * f + f // 2)[:, None] - np.arange(n)[None, :]
    inside = (lag >= 0) & (lag < hrf.shape[0])
    return np.where(inside, hrf[np.clip(lag, 0, hrf.shape[0] - 1)], 0.0).astype(np.float32)


def _convolve(drive: np.ndarray, hrf: np.ndarray) -> np.ndarray:
    """Per-run HRF convolution and TR sampling: ``[R·n, V]`` → ``[R·T_run, V]``."""
    t_run, n = hrf.shape
    runs = drive.reshape(-1, n, drive.shape[1])
    return np.matmul(hrf, runs).reshape(-1, drive.shape[1])


def temporal_noise(
    rng: np.random.Generator,
    repeats: int,
    n_runs: int,
    trs_per_run: int,
    spatial: sparse.csr_matrix,
    ar1: float,
) -> np.ndarray:
    """Unit-variance noise, AR(1) within each run and spatially mixed by ``spatial``.

    Returns
    -------
    ndarray of float32, shape (repeats, n_runs · trs_per_run, V)
    """
    v = spatial.shape[0]
    e = rng.standard_normal((repeats * n_runs * trs_per_run, v), dtype=np.float32)
    e = np.asarray((spatial @ e.T).T, dtype=np.float32).reshape(repeats, n_runs, trs_per_run, v)
    out = np.empty_like(e)
    out[:, :, 0] = e[:, :, 0]  # the stationary distribution: unit variance from the start
    innov = np.float32(np.sqrt(1.0 - ar1**2))
    for t in range(1, trs_per_run):
        out[:, :, t] = np.float32(ar1) * out[:, :, t - 1] + innov * e[:, :, t]
    return out.reshape(repeats, n_runs * trs_per_run, v)


def zscore_runs(x: np.ndarray, trs_per_run: int) -> np.ndarray:
    """Z-score ``[T, V]`` per run and voxel (a constant voxel becomes 0)."""
    runs = x.reshape(-1, trs_per_run, x.shape[1]).astype(np.float64)
    sd = runs.std(1, keepdims=True)
    z = (runs - runs.mean(1, keepdims=True)) / np.where(sd > 0, sd, 1.0)
    return z.reshape(x.shape).astype(np.float32)


def _per_tr(stim: _Stimulus, f: int, first_scene: int) -> dict:
    """Captions, labels, scene ids and attributes per TR."""
    sc = stim.scenes
    frame_scene = np.repeat(np.arange(len(sc)), sc.length).reshape(-1, f)
    mid = frame_scene[:, f // 2]
    first, last = frame_scene[:, 0] + first_scene, frame_scene[:, -1] + first_scene
    scene = [str(a) if a == b else f"{a}-{b}" for a, b in zip(first, last, strict=True)]
    captions = [render.caption(sc, i) for i in range(len(sc))]
    return {
        "caption": [captions[i] for i in mid],
        "label": sc.label[mid].astype(np.int32),
        "scene": scene,
        "attributes": {
            k: getattr(sc, k)[mid] for k in ("shape", "colour", "background", "direction")
        },
    }


def simulate_arrays(cfg: DictConfig) -> Simulation:
    """Simulate a subject in memory (see the module docstring for the model).

    Parameters
    ----------
    cfg : DictConfig
        A structured :class:`~neurocine.config.SimulationConfig`.

    Returns
    -------
    Simulation
        Voxels, ground-truth drives, clean and noisy BOLD, and the arrays of the subject file.

    Raises
    ------
    ConfigError
        An invalid value (named), or more voxels than the cortical shell holds.
    """
    f = check_config(cfg)
    n_cand = candidate_voxels()[0].shape[0]
    if cfg.n_voxels > n_cand:
        raise ConfigError(
            f"simulate: n_voxels={cfg.n_voxels}: the simulated cortex holds at most {n_cand}"
        )
    streams = np.random.SeedSequence(cfg.seed).spawn(6)  # the first five as before: same data
    rng_brain, rng_train, rng_test, rng_noise_train, rng_noise_test, rng_signal = (
        np.random.default_rng(s) for s in streams
    )
    side = min(cfg.height, cfg.width)
    cortex = build_cortex(
        rng_brain, cfg.n_voxels, cfg.semantic_fraction, min_sigma=0.7 * 2 * POOL / side
    )
    train = _stimulus(rng_train, cfg, cfg.n_train_runs, f)
    test = _stimulus(rng_test, cfg, cfg.n_test_runs, f)
    w = _voxel_weights(rng_brain, cfg, cortex, train)
    hrf = hrf_matrix(cfg, f)
    spatial = gaussian_kernel(cortex.coords, cfg.noise_fwhm_mm, "l2")
    signal = signal_voxels(rng_signal, cortex.coords, cfg.signal_fraction)

    drives = {"train": _drive(train, w), "test": _drive(test, w)}
    mean = drives["train"].mean(0)  # centred on the training stimuli: no onset ramp per run
    for d in drives.values():
        d -= mean
    raw = {k: _convolve(d, hrf) for k, d in drives.items()}
    mu, sd = raw["train"].mean(0), raw["train"].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    out = {}
    first_scene = 0
    for split, stim, n_runs, repeats, rng, run0 in (
        ("train", train, cfg.n_train_runs, 1, rng_noise_train, 0),
        ("test", test, cfg.n_test_runs, cfg.test_repeats, rng_noise_test, cfg.n_train_runs),
    ):
        clean = (cfg.snr * (raw[split] - mu) / sd).astype(np.float32)
        clean = np.where(signal, clean, np.float32(0))  # all-signal (default): unchanged
        noise = temporal_noise(rng, repeats, n_runs, cfg.trs_per_run, spatial, cfg.ar1)
        bold = clean[None] + noise
        meta = _per_tr(stim, f, first_scene)
        first_scene += len(stim.scenes)
        t = clean.shape[0]
        out[split] = SplitArrays(
            frames=stim.frames.reshape(t, f, cfg.height, cfg.width, 3),
            run=np.repeat(np.arange(run0, run0 + n_runs, dtype=np.int32), cfg.trs_per_run),
            drive=drives[split].astype(np.float32),
            bold_clean=clean,
            bold=bold,
            fmri=zscore_runs(bold.mean(0), cfg.trs_per_run),
            fmri_clean=zscore_runs(clean, cfg.trs_per_run),
            **meta,
        )
    return Simulation(
        cortex=cortex, frames_per_tr=f, signal=signal, train=out["train"], test=out["test"]
    )


def simulate_subject(cfg: DictConfig, out: str | Path) -> Path:
    """Simulate a subject and write it as a subject HDF5 file (docs/design.md §3).

    The file appears only when complete and valid (temporary name, then rename); an invalid
    config raises :class:`~neurocine.errors.ConfigError` before anything is written.

    Parameters
    ----------
    cfg : DictConfig
        A structured :class:`~neurocine.config.SimulationConfig`.
    out : str or Path
        The subject file to write.

    Returns
    -------
    Path
        ``out``.
    """
    sim = simulate_arrays(cfg)
    cortex = sim.cortex
    grid = mni_mask()
    with SubjectWriter(
        out,
        dataset=DATASET,
        subject=str(cfg.subject),
        tr_s=cfg.tr_s,
        fps=cfg.fps,
        frames_per_tr=sim.frames_per_tr,
        voxel_index=cortex.index,
        voxel_coords=cortex.coords,
        voxel_roi=cortex.roi,
        voxel_signal=sim.signal,
        voxel_grid=(grid.shape, grid.affine),
        provenance={PROVENANCE: _config_json(cfg)},
    ) as writer:
        for split in ("train", "test"):
            arrays: SplitArrays = getattr(sim, split)
            writer.append(
                split,
                fmri=arrays.fmri,
                fmri_clean=arrays.fmri_clean,
                run=arrays.run,
                frames=arrays.frames,
                caption=arrays.caption,
                label=arrays.label,
                scene=arrays.scene,
            )
    return Path(out)


def _config_json(cfg: DictConfig) -> str:
    return json.dumps(OmegaConf.to_container(cfg), sort_keys=True)


def check_simulated_with(path: str | Path, cfg: DictConfig) -> None:
    """Raise :class:`~neurocine.errors.ConfigError` when ``path`` was simulated otherwise.

    A demo reuses an existing subject file; without this check a changed ``simulate.*`` key
    (``simulate.n_train_runs=54``) would silently run on the old data. Files that do not
    record their simulation config (written by older versions, or not simulated) pass.
    """
    with h5py.File(path, "r") as f:
        stored = f.attrs.get(PROVENANCE)
    if stored is None:
        return
    made, asked = json.loads(stored), json.loads(_config_json(cfg))
    changed = [k for k in sorted(set(made) | set(asked)) if made.get(k) != asked.get(k)]
    if changed:
        diff = ", ".join(f"simulate.{k}={made.get(k)} (asked {asked.get(k)})" for k in changed)
        raise ConfigError(
            f"{path}: simulated with {diff}; delete the file or set data.path to another one"
        )
