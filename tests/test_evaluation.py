"""``neurocine evaluate``: baselines, the trained evaluator, scoring, metrics.json, bad runs."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from factories import tiny_subject_arrays
from stage2_helpers import save_tiny_encoder, tiny_config

from neurocine.baselines.mean_frame import MeanFrame
from neurocine.baselines.pixel_ridge import PixelRidge
from neurocine.cli import main
from neurocine.config import load_config, save_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.data.schema import write_subject
from neurocine.errors import CheckpointError, DataError
from neurocine.evaluation import (
    Scorer,
    evaluate_run,
    find_reconstructions,
    flat_metrics,
    markdown_table,
    paired_differences,
    paired_note,
)
from neurocine.evaluator import (
    TrainedClassifier,
    data_fingerprint,
    default_dir,
    ensure_evaluator,
    fit_classifier,
    load_evaluator,
    predict_logits,
    read_evaluator_config,
    read_labelled_clips,
    train_evaluator,
)
from neurocine.metrics import clip_pcc, frame_based_n_way_per_video, video_ssim
from neurocine.reconstruct import reconstruct

N_CLASSES = 7
PALETTE = np.array(
    [[230, 30, 30], [30, 200, 30], [30, 30, 230], [230, 230, 30], [30, 230, 230], [230, 30, 230],
     [240, 240, 240]], dtype=np.int16,
)  # fmt: skip
FAST_EVAL = [
    "evaluation.evaluator.epochs=20",
    "evaluation.evaluator.lr=0.01",
    "evaluation.evaluator.width=8",
    "evaluation.evaluator.batch_size=8",
    "evaluation.evaluator.val_runs=1",
    "evaluation.ridge_alphas=[1.0,100.0,10000.0]",
    "evaluation.num_trials=20",
]


def coloured_subject(path, seed: int = 0, scenes: bool = True):
    """The tiny subject with learnable labels: a square of the label's colour on noise.

    Test clips 3, 7, 8 (and every 10th clip from 15 on) span a scene cut when ``scenes``.
    """
    arrays = tiny_subject_arrays(seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name, split in arrays["splits"].items():
        n = len(split["run"])
        label = rng.integers(0, N_CLASSES, n).astype(np.int32)
        frames = rng.integers(0, 90, split["frames"].shape).astype(np.int16)
        for i, c in enumerate(label):
            top, left = rng.integers(0, 8), rng.integers(0, 12)
            frames[i, :, top : top + 8, left : left + 8] = PALETTE[c]
        split["frames"] = frames.astype(np.uint8)
        split["label"] = label
        if scenes:
            ids = [f"s{i}" for i in range(n)]
            for i in range(n):
                if name == "test" and (i in (3, 7, 8) or (i >= 15 and i % 10 == 5)):
                    ids[i] = f"s{i}-s{i + 1}"
            split["scene"] = ids
    return write_subject(path, **arrays)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    return coloured_subject(tmp_path_factory.mktemp("coloured") / "sub.h5")


def exported_run(subject, root, *extra: str):
    """An exported (untrained) stage-2 model over ``subject`` in ``root / "run"``."""
    from neurocine.lit.stage2 import build_callbacks, build_module

    encoder = save_tiny_encoder(root / "encoder")
    cfg = tiny_config(
        subject, encoder, root / "runs", "sampling.steps=2", "sampling.batch_size=4", *FAST_EVAL,
        *extra,
    )  # fmt: skip
    run = root / "run"
    save_config(cfg, run / "config.yaml")
    datamodule = FMRIVideoDataModule(cfg, read_frames=True, augment=False)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    callback = build_callbacks(cfg)[0]
    callback.install(module, callback.ratio_at(epoch=0, step=0))
    module.export(run)
    return run


@pytest.fixture(scope="module")
def run_dir(subject, tmp_path_factory):
    """An exported (untrained) stage-2 model over the coloured subject, reconstructed."""
    run = exported_run(subject, tmp_path_factory.mktemp("evalrun"))
    reconstruct(run, run / "samples", limit=10, progress=False, videos=False)
    return run


@pytest.fixture(scope="module")
def embedding_run(subject, tmp_path_factory):
    """The same, its UNet conditioned on stage 1's CLIP embedding (the CLIP oracle applies)."""
    return exported_run(subject, tmp_path_factory.mktemp("embrun"), "stage2.condition=embedding")


# --- baselines ---------------------------------------------------------------------------------


def test_mean_frame_is_the_mean_of_all_training_frames():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 4, 6, 7, 3), dtype=np.uint8)
    whole = MeanFrame().fit(frames)
    chunked = MeanFrame().fit([frames[:2], frames[2:]])
    expected = frames.reshape(-1, 6, 7, 3).astype(np.float64).mean(axis=0)
    assert np.allclose(whole.mean_, expected) and np.allclose(chunked.mean_, expected)
    pred = whole.predict(3, 2)
    assert pred.shape == (3, 2, 6, 7, 3) and pred.dtype == np.uint8
    assert np.array_equal(pred[2, 1], np.rint(expected).astype(np.uint8))
    with pytest.raises(DataError, match="frame size"):
        MeanFrame().fit([frames, frames[:, :, :5]])


def test_pixel_ridge_recovers_a_linear_map_to_pixels():
    rng = np.random.default_rng(1)
    n, w, v, shape = 80, 2, 9, (4, 5, 6, 3)  # pairwise-distinct sizes
    weights = rng.normal(0, 12, (w * v, int(np.prod(shape))))

    def make(k):
        fmri = rng.standard_normal((k, w, v)).astype(np.float32)
        pixels = 128 + fmri.reshape(k, -1) @ weights
        return fmri, np.clip(np.rint(pixels), 0, 255).astype(np.uint8).reshape(k, *shape)

    fmri, frames = make(n)
    test_fmri, test_frames = make(20)
    ridge = PixelRidge(alphas=[0.01, 1.0, 100.0]).fit(fmri, frames)
    pred = ridge.predict(test_fmri)
    assert pred.shape == (20, *shape) and pred.dtype == np.uint8
    error = np.abs(pred.astype(float) - test_frames).mean()
    mean_error = np.abs(frames.reshape(n, -1).mean(0) - test_frames.reshape(20, -1)).mean()
    assert error < 0.2 * mean_error  # far better than the mean clip (clipping costs a little)
    with pytest.raises(DataError, match="do not pair"):
        PixelRidge().fit(fmri, frames[:-1])


# --- the trained evaluator ---------------------------------------------------------------------


def test_evaluator_learns_the_labels_saves_and_reloads(subject, tmp_path):
    cfg = load_config(None, FAST_EVAL)
    report = train_evaluator(subject, cfg.evaluation.evaluator, tmp_path / "ev", progress=False)
    assert report.n_classes == N_CLASSES and report.n_train == 30 and report.n_val == 10
    assert report.extra["test_video_acc"] > 0.6  # chance is 1/7
    config = read_evaluator_config(tmp_path / "ev")
    assert config["fingerprint"] == data_fingerprint(subject)
    model = load_evaluator(tmp_path / "ev")
    with h5py.File(subject) as f:
        frames = f["test/frames"][:5]
    frame_logits, video_logits = predict_logits(model, frames)
    assert frame_logits.shape == (5, 4, N_CLASSES) and video_logits.shape == (5, N_CLASSES)
    assert default_dir(subject).name == "sub.h5.evaluator"


def test_evaluator_training_is_reproducible_and_leaves_the_global_rng_alone(subject):
    # Its dropout draws from the global RNG: unseeded, two runs scored the same videos apart.
    cfg = load_config(None, [*FAST_EVAL, "evaluation.evaluator.epochs=2"]).evaluation.evaluator
    clips = read_labelled_clips(subject)
    torch.manual_seed(123)
    first, _ = fit_classifier(clips, cfg, progress=False)
    after_first = torch.rand(3)
    torch.manual_seed(456)
    second, _ = fit_classifier(clips, cfg, progress=False)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_first)  # the caller's stream is untouched


def test_scores_of_a_row_do_not_depend_on_the_rows_before(subject, tmp_path):
    """Rows are scored one after another on temporary arrays: nothing may leak between them."""
    cfg = load_config(None, FAST_EVAL)
    train_evaluator(subject, cfg.evaluation.evaluator, tmp_path / "ev", progress=False)
    trained = TrainedClassifier(load_evaluator(tmp_path / "ev"), "trained")
    with h5py.File(subject) as f:
        truth = f["test/frames"][:12]
    flat = MeanFrame().fit(truth).predict(12, truth.shape[1])
    scorer = Scorer(truth, classifier=trained, n_ways=[2, 5], num_trials=20)
    scorer.score(truth.copy())  # a temporary, freed before the next row is scored
    second = scorer.score(flat.copy())
    alone = Scorer(truth, classifier=trained, n_ways=[2, 5], num_trials=20).score(flat)
    assert second == alone and second["video_5way"] < 1.0


def test_evaluator_for_other_data_is_retrained(subject, tmp_path):
    other = coloured_subject(tmp_path / "other.h5", seed=5)
    cfg = load_config(None, [*FAST_EVAL, "evaluation.evaluator.epochs=1"])
    train_evaluator(other, cfg.evaluation.evaluator, tmp_path / "ev", progress=False)
    ensure_evaluator(subject, cfg.evaluation.evaluator, tmp_path / "ev", progress=False)
    assert read_evaluator_config(tmp_path / "ev")["fingerprint"] == data_fingerprint(subject)


def test_evaluator_with_other_settings_is_retrained(subject, tmp_path, capsys):
    cfg = load_config(None, [*FAST_EVAL, "evaluation.evaluator.epochs=1"])
    ensure_evaluator(subject, cfg.evaluation.evaluator, tmp_path / "ev", progress=False)
    ensure_evaluator(subject, cfg.evaluation.evaluator, tmp_path / "ev", progress=False)
    assert "retraining" not in capsys.readouterr().out  # same data, same settings: reused
    cfg = load_config(None, [*FAST_EVAL, "evaluation.evaluator.epochs=2"])
    ensure_evaluator(subject, cfg.evaluation.evaluator, tmp_path / "ev", progress=False)
    assert "other evaluation.evaluator settings; retraining" in capsys.readouterr().out
    assert read_evaluator_config(tmp_path / "ev")["recipe"]["epochs"] == 2


def test_subject_without_labels_has_no_trained_evaluator(tiny_subject, tmp_path):
    arrays = tiny_subject_arrays()
    for split in arrays["splits"].values():
        del split["label"]
    path = write_subject(tmp_path / "nolabel.h5", **arrays)
    cfg = load_config(None, FAST_EVAL)
    with pytest.raises(DataError, match="label: missing"):
        train_evaluator(path, cfg.evaluation.evaluator, progress=False)


# --- scoring -----------------------------------------------------------------------------------


class FixedClassifier:
    """Probabilities that depend on the mean colour of each frame (a real, simple classifier)."""

    name = "mean colour"

    def frame_probs(self, videos):
        mean = videos.reshape(*videos.shape[:2], -1, 3).mean(axis=2)  # [N, F, 3]
        logits = -((mean[..., None, :] - PALETTE[None, None]) ** 2).sum(-1) / 500.0
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)).astype(np.float32)

    def probs(self, videos):
        frame = self.frame_probs(videos)
        return frame, frame.mean(axis=1)


def test_scorer_perfect_and_trivial_predictions(subject):
    with h5py.File(subject) as f:
        truth = f["test/frames"][:12]
    scorer = Scorer(truth, classifier=FixedClassifier(), n_ways=[2, 50], num_trials=10)
    perfect = scorer.score(truth.copy())
    assert perfect["ssim"] == pytest.approx(1.0) and np.isinf(perfect["psnr"])
    assert perfect["frame_2way"] == 1.0 and perfect["video_2way"] == 1.0
    assert perfect["frame_2way_strict"] == 1.0 and perfect["video_2way_strict"] == 1.0
    assert "frame_50way" not in perfect  # 7 classes cannot make a 50-way trial
    assert any("50-way skipped" in n for n in scorer.notes)
    flat = MeanFrame().fit(truth).predict(12, truth.shape[1])
    trivial = scorer.score(flat)
    assert trivial["ssim"] == pytest.approx(video_ssim(flat, truth))
    assert trivial["ssim"] < 0.9
    # the strict protocol (top-1 true class) is scored beside MinD-Video's (top-3) on the same
    # classifier outputs, and equals n_way_top_k with k_true=1
    frame_probs, _ = FixedClassifier().probs(flat)
    gt_probs, _ = FixedClassifier().probs(truth)
    strict = frame_based_n_way_per_video(
        frame_probs, gt_probs, 2, 10, 1, 1, torch.Generator().manual_seed(0)
    )
    assert trivial["frame_2way_strict"] == pytest.approx(float(strict.double().mean()))
    assert trivial["frame_2way"] != trivial["frame_2way_strict"]
    with pytest.raises(DataError, match="differ"):
        scorer.score(truth[:3])


def test_paired_differences_cancel_what_the_rows_share():
    # Clip difficulty varies a lot and both rows share it: the paired SE sees only the gap.
    difficulty = np.linspace(0.0, 1.0, 20)
    per_clip = {
        "neurocine": {"video_50way": difficulty + 0.1, "ssim": difficulty},
        "ridge": {"video_50way": difficulty, "ssim": difficulty + np.tile([0.0, 0.2], 10)},
        "mean_frame": {"psnr": difficulty},  # no metric in common
    }
    paired = paired_differences(per_clip)
    assert paired["ridge"]["video_50way"] == {
        "diff": pytest.approx(0.1), "se": pytest.approx(0), "n": 20, "groups": 20
    }  # fmt: skip
    assert paired["ridge"]["ssim"]["diff"] == pytest.approx(-0.1)
    assert paired["ridge"]["ssim"]["se"] == pytest.approx(0.1 * np.sqrt(20 / 19) / np.sqrt(20))
    assert paired["mean_frame"] == {}
    result = {"rows": {k: {m: 0.0 for m in v} for k, v in per_clip.items()}, "paired": paired}
    assert paired_note(result) == (
        "NeuroCine minus each row, paired over the same clips and n-way draws "
        "(mean ± standard error): ridge fMRI → pixels: video 50-way +0.100 ± 0.000"
    )


def test_paired_standard_error_counts_scenes_not_clips():
    # Five scenes of four near-identical clips each: 5 independent differences, not 20.
    gaps = np.repeat([0.3, -0.1, 0.2, 0.0, 0.1], 4)
    per_clip = {"neurocine": {"ssim": gaps}, "ridge": {"ssim": np.zeros(20)}}
    scenes = np.repeat(list("abcde"), 4)
    by_clip = paired_differences(per_clip)["ridge"]["ssim"]
    by_scene = paired_differences(per_clip, groups=scenes)["ridge"]["ssim"]
    assert by_scene["diff"] == by_clip["diff"] == pytest.approx(0.1)
    assert by_scene["se"] == pytest.approx(gaps[::4].std(ddof=1) / np.sqrt(5))
    assert by_scene["se"] > 1.5 * by_clip["se"] and by_scene["groups"] == 5
    # A perfect clip (PSNR inf) has no finite difference: left out and counted.
    per_clip = {"neurocine": {"psnr": np.r_[np.inf, gaps[1:]]}, "ridge": {"psnr": np.zeros(20)}}
    psnr = paired_differences(per_clip, groups=scenes)["ridge"]["psnr"]
    assert psnr["n"] == 19 and psnr["diff"] == pytest.approx(gaps[1:].mean())


def test_markdown_table_has_a_row_per_model_and_the_chance_levels():
    result = {
        "rows": {
            "neurocine": {"ssim": 0.5, "psnr": 12.0, "video_2way": 0.8},
            "mean_frame": {"ssim": 0.6, "psnr": 14.0},
        },
        "chance": {"2": 0.75},
        "k_true": 3,
        "n_clips": 7,
        "split": "test",
        "n_excluded_scene_cut": 3,
    }
    table = markdown_table(result)
    lines = table.splitlines()
    assert lines[0] == "| | SSIM ↑ | PSNR dB ↑ | 2-way video ↑ |"
    assert lines[2] == "| NeuroCine | 0.500 | 12.00 | 0.800 |"
    assert lines[3] == "| mean training frame | 0.600 | 14.00 | – |"
    assert "2-way 0.750" in table and "3 spanning a scene cut" in table
    assert flat_metrics(result)["mean_frame/psnr"] == 14.0
    assert "Published cc2017" not in table  # not a cc2017 run


def test_a_cc2017_run_is_printed_beside_the_published_results():
    from neurocine.analysis.published import PUBLISHED

    result = {
        "rows": {"neurocine": {"ssim": 0.21, "psnr": 9.1, "video_50way": 0.15, "clip_pcc": 0.8}},
        "n_clips": 1188,
        "split": "test",
        "n_excluded_scene_cut": 12,
        "data_module": "cc2017",
        "protocol": {"ssim": "mindvideo", "uint8": "truncate", "nway": "top-3 true classes"},
    }
    table = markdown_table(result)
    published = table[table.index("| | Subject |") :]
    assert "| **NeuroCine** | this run | 0.210 | 9.10 |" in published
    for entry in PUBLISHED:
        assert f"| {entry.method} | {entry.subject} |" in published
    assert "| 0.190 |" in published  # MinD-Video's SSIM, same protocol: no mark
    assert "0.264?" in published  # SemVideo's 50-way video: its protocol was not read
    other = markdown_table({**result, "protocol": {**result["protocol"], "ssim": "neurons"}})
    assert "0.190†" in other  # beside a NEURONS-style SSIM, MinD-Video's differs


# --- the command -------------------------------------------------------------------------------


def test_evaluate_run_writes_metrics_with_all_rows(run_dir, subject):
    evaluation = evaluate_run(run_dir, progress=False)
    result = json.loads((run_dir / "metrics.json").read_text())
    assert (run_dir / "metrics.md").read_text() == evaluation.table
    rows = ["neurocine", "mean_frame", "ridge", "oracle"]
    assert list(result["rows"]) == [*rows, "ground_truth"]
    # 10 reconstructed test clips, 3 of them (rows 3, 7, 8) span a scene cut.
    assert result["n_reconstructed"] == 10 and result["n_clips"] == 7
    assert result["n_excluded_scene_cut"] == 3
    keep = np.array([i not in (3, 7, 8) for i in range(10)])
    with h5py.File(subject) as f:
        truth = f["test/frames"][:10][keep]
        train_frames = f["train/frames"][:30]  # the DataModule's train samples (val_runs=1)
    mean = MeanFrame().fit(train_frames).predict(len(truth), truth.shape[1])
    assert result["rows"]["mean_frame"]["ssim"] == pytest.approx(video_ssim(mean, truth))
    both = {"frame_2way", "video_2way", "frame_2way_strict", "video_2way_strict"}
    for name in rows:
        row = result["rows"][name]
        assert {"ssim", "psnr", "clip_similarity", "clip_pcc", "clip_pcc_all"} | both <= set(row)
        assert all(0.0 <= row[key] <= 1.0 for key in both)
    assert result["chance"] == {"2": pytest.approx(0.75)}
    assert result["chance_strict"] == {"2": pytest.approx(0.5)}
    assert "50-way skipped" in evaluation.table
    assert "| 2-way video strict ↑ |" in evaluation.table.splitlines()[0]
    assert "strict (its top-1 class only): 2-way 0.500" in evaluation.table
    # CLIP-pcc for every row, the ground truth's included, with the CLIP named
    assert set(result["rows"]["ground_truth"]) == {
        "clip_pcc", "clip_pcc_std", "clip_pcc_all", "clip_pcc_all_std"
    }  # fmt: skip
    assert f"CLIP image embeddings ({result['clip']})" in evaluation.table
    from neurocine.config import load_saved_config
    from neurocine.models.clip_targets import frame_embeddings, load_clip

    model, preprocess, _ = load_clip(load_saved_config(run_dir / "config.yaml").clip)
    truth_emb = frame_embeddings(model, preprocess, truth)
    for pairs, key in (("adjacent", "clip_pcc"), ("all", "clip_pcc_all")):
        assert result["rows"]["ground_truth"][key] == pytest.approx(
            float(clip_pcc(truth_emb, pairs).mean()), abs=1e-6
        )
    # every frame of the mean-frame row is the same image: CLIP-pcc 1
    assert result["rows"]["mean_frame"]["clip_pcc"] == pytest.approx(1.0, abs=1e-5)
    assert result["protocol"]["uint8"] == "truncate"  # sampling.uint8's default, recorded
    # Per-clip scores (in clip order) reproduce the row figures; paired differences follow them.
    assert len(result["clip_rows"]) == 7 and 3 not in result["clip_rows"]
    ours, ridge = result["per_clip"]["neurocine"], result["per_clip"]["ridge"]
    assert np.mean(ours["ssim"]) == pytest.approx(result["rows"]["neurocine"]["ssim"])
    d = np.subtract(ours["video_2way"], ridge["video_2way"])
    gap = result["paired"]["ridge"]["video_2way"]
    assert gap["diff"] == pytest.approx(d.mean()) and gap["n"] == 7
    with h5py.File(subject) as f:  # the standard error counts the kept clips' scenes
        scenes = f["test/scene"].asstr()[:10][keep]
    assert gap["groups"] == len(set(scenes))
    assert "NeuroCine minus each row, paired" in evaluation.table
    with h5py.File(run_dir / "samples" / "oracle.h5") as f:
        oracle_index = f["index"][()]
    assert list(oracle_index) == list(range(10))
    # Re-evaluating reuses the oracle's samples and gives the same figures.
    again = evaluate_run(run_dir, progress=False)
    assert again.result["rows"] == result["rows"]


def test_ssim_variant_and_the_clip_of_the_clip_metrics_are_options(run_dir, tmp_path):
    result = evaluate_run(
        run_dir,
        ["evaluation.baselines=[mean_frame]", "evaluation.ssim=gray_gaussian",
         "evaluation.clip=tiny"],
        out_dir=tmp_path,
        progress=False,
    ).result  # fmt: skip
    from neurocine.analysis.runs import read_reconstructions

    pred, _, _ = read_reconstructions(run_dir / "samples" / "reconstructions.h5")
    keep = [i not in (3, 7, 8) for i in range(10)]
    with h5py.File(result["data"]) as f:
        truth = f["test/frames"][:10][keep]
    expected = video_ssim(pred[keep], truth, variant="gray_gaussian")
    assert result["rows"]["neurocine"]["ssim"] == pytest.approx(expected)
    assert expected != pytest.approx(video_ssim(pred[keep], truth))
    assert result["protocol"]["ssim"] == "gray_gaussian"
    assert result["clip"].startswith("tiny(") and "clip_pcc" in result["rows"]["ground_truth"]
    # a local CLIP directory (real data: CLIP ViT-L/14); here the shipped tiny CLIP's own folder
    from neurocine.models.clip_targets import TINY_CLIP_DIR

    by_path = evaluate_run(
        run_dir,
        ["evaluation.baselines=[mean_frame]", f"evaluation.clip={TINY_CLIP_DIR}"],
        out_dir=tmp_path / "by_path",
        progress=False,
    ).result
    assert by_path["clip"] == f"pretrained({TINY_CLIP_DIR})"
    assert by_path["rows"]["ground_truth"] == result["rows"]["ground_truth"]
    assert by_path["rows"]["neurocine"]["clip_pcc"] == result["rows"]["neurocine"]["clip_pcc"]


def test_evaluate_prints_a_cc2017_run_beside_the_published_results(run_dir, tmp_path):
    overrides = ["evaluation.baselines=[mean_frame]", "evaluation.clip_similarity=false"]
    plain = evaluate_run(run_dir, overrides, out_dir=tmp_path / "plain", progress=False)
    assert "Published cc2017" not in plain.table  # simulated data: no published table
    cc2017 = evaluate_run(
        run_dir, [*overrides, "data_module=cc2017"], out_dir=tmp_path / "cc2017", progress=False
    )
    assert cc2017.result["protocol"]["nway"] == "top-3 true classes"
    assert "| **NeuroCine** | this run |" in cc2017.table
    assert "| MinD-Video | as stated |" in cc2017.table and "Published cc2017" in cc2017.table


def test_oracle_is_sampled_as_the_reconstructions_were(run_dir, tmp_path, monkeypatch):
    from neurocine.baselines.pixel_ridge import PixelRidge

    folder = tmp_path / "ridge_start"
    reconstruct(run_dir, folder, limit=4, progress=False, videos=False,
                overrides=["sampling.init=ridge", "sampling.strength=0.5"])  # fmt: skip
    fits = []
    fit = PixelRidge.fit
    monkeypatch.setattr(PixelRidge, "fit", lambda *a: fits.append(1) or fit(*a))
    result = evaluate_run(folder, ["evaluation.baselines=[ridge,oracle]",
                                   "evaluation.clip_similarity=false"],
                          out_dir=tmp_path / "eval", progress=False).result  # fmt: skip
    assert list(result["rows"]) == ["neurocine", "ridge", "oracle"]
    assert len(fits) == 1  # the ridge row and the oracle's ridge start share one fit
    with h5py.File(folder / "oracle.h5") as f:
        assert (f.attrs["init"], f.attrs["strength"], f.attrs["steps"]) == ("ridge", 0.5, 2)
        assert list(f["index"][()]) == [0, 1, 2, 3]


def conditions_sampled(monkeypatch) -> list[torch.Tensor]:
    """The UNet conditions of every stage-2 sampling from now on (DDIM's ``cond`` argument)."""
    from neurocine.diffusion import pipeline

    seen: list[torch.Tensor] = []
    ddim = pipeline.ddim_sample
    monkeypatch.setattr(
        pipeline, "ddim_sample", lambda unet, sched, cond, *a, **k: (
            seen.append(cond.detach().clone()) or ddim(unet, sched, cond, *a, **k)
        ),
    )  # fmt: skip
    return seen


def test_clip_oracle_conditions_stage2_on_the_true_clip_embeddings(
    embedding_run, subject, tmp_path, monkeypatch
):
    from neurocine.analysis.runs import comparison_rows, load_run, read_reconstructions
    from neurocine.diffusion.pipeline import VideoDecoder

    folder = tmp_path / "samples"
    reconstruct(embedding_run, folder, limit=6, progress=False, videos=False)
    seen = conditions_sampled(monkeypatch)
    overrides = ["evaluation.baselines=[clip_oracle]", "evaluation.clip_similarity=false"]
    result = evaluate_run(folder, overrides, out_dir=tmp_path / "eval", progress=False).result
    assert list(result["rows"]) == ["neurocine", "clip_oracle"]
    assert not any("clip_oracle" in note for note in result["notes"])
    assert result["labels"]["clip_oracle"] == "CLIP oracle (true image embedding)"
    # The condition is the adapter's projection of each clip's normalised clip_image (batches
    # of sampling.batch_size=4), not the encoder's prediction from the fMRI.
    decoder = VideoDecoder.load(embedding_run / "model")
    with h5py.File(subject) as f:
        clip_image = torch.from_numpy(f["test/clip_image"][:6].astype(np.float32))
        fmri = torch.from_numpy(f["test/fmri"][()])
    with torch.no_grad():
        expected = decoder.adapter(torch.nn.functional.normalize(clip_image, dim=-1)[:, None])
        from_fmri = decoder.condition(torch.stack([fmri[[r, r + 1]] for r in range(6)]))
    assert [len(c) for c in seen] == [4, 2]
    torch.testing.assert_close(torch.cat(seen), expected)
    assert not torch.allclose(expected, from_fmri, atol=1e-3)
    oracle, index, attrs = read_reconstructions(folder / "clip_oracle.h5")
    recon, _, _ = read_reconstructions(folder / "reconstructions.h5")
    assert list(index) == list(range(6)) and attrs["seed"] == 0 and attrs["steps"] == 2
    assert not np.array_equal(oracle, recon)  # same seeds, another condition
    # The run view (notebooks, the demo's still grid) shows the CLIP oracle beside NeuroCine.
    view = tmp_path / "run"
    view.mkdir()
    shutil.copy(embedding_run / "config.yaml", view / "config.yaml")
    (view / "samples").symlink_to(folder)
    shown = load_run(view).reconstructions()
    assert shown is not None and shown.oracle is None
    np.testing.assert_array_equal(shown.clip_oracle, oracle)
    assert comparison_rows(shown, n=3)[1] == ["ground truth", "NeuroCine", "CLIP oracle"]
    # Cached: re-evaluating samples nothing and scores the same videos.
    seen.clear()
    again = evaluate_run(folder, overrides, out_dir=tmp_path / "again", progress=False).result
    assert seen == [] and again["rows"]["clip_oracle"] == result["rows"]["clip_oracle"]
    # Reconstructions sampled otherwise (another seed): the cache is stale and resampled.
    reconstruct(embedding_run, folder, limit=6, progress=False, videos=False,
                overrides=["sampling.seed=1"])  # fmt: skip
    seen.clear()
    evaluate_run(folder, overrides, out_dir=tmp_path / "reseeded", progress=False)
    assert len(seen) == 2
    resampled, _, attrs = read_reconstructions(folder / "clip_oracle.h5")
    assert attrs["seed"] == 1 and not np.array_equal(resampled, oracle)
    # Another data file is resampled; so is the same file once its embeddings change.
    other = tmp_path / "other.h5"
    shutil.copy(subject, other)
    on_other = [*overrides, f"data.path={other}"]
    for changed in (False, True, False):
        if changed:
            with h5py.File(other, "r+") as f:
                f["test/clip_image"][...] = f["test/clip_image"][()][::-1]
        seen.clear()
        evaluate_run(folder, on_other, out_dir=tmp_path / f"other{changed}", progress=False)
        assert len(seen) == (2 if changed or attrs["data"] != str(other) else 0)
        _, _, attrs = read_reconstructions(folder / "clip_oracle.h5")
        assert attrs["data"] == str(other)


def test_clip_oracle_is_left_out_with_a_note_where_it_does_not_apply(
    run_dir, embedding_run, tmp_path
):
    from neurocine.evaluation.baselines import clip_oracle_problem

    overrides = [
        "evaluation.baselines=[mean_frame,clip_oracle]",
        "evaluation.clip_similarity=false",
    ]
    result = evaluate_run(run_dir, overrides, out_dir=tmp_path, progress=False).result
    assert list(result["rows"]) == ["neurocine", "mean_frame"]  # a tokens-conditioned decoder
    assert (
        "clip_oracle skipped: the decoder's condition adapter takes the encoder's tokens, "
        "not a CLIP embedding"
    ) in result["notes"]
    assert not (run_dir / "samples" / "clip_oracle.h5").exists()
    assert clip_oracle_problem(embedding_run, 12) is None
    assert "clip_image has 16 dims, the decoder's condition adapter takes 12" in str(
        clip_oracle_problem(embedding_run, 16)
    )


def test_evaluate_cli_and_a_reconstruction_folder(run_dir, tmp_path, capsys):
    code = main(
        ["evaluate", "--run", str(run_dir / "samples"), "--out", str(tmp_path), "--no-progress",
         "evaluation.baselines=[mean_frame]", "evaluation.clip_similarity=false"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "| NeuroCine |" in out and "| mean training frame |" in out and "ridge" not in out
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert list(result["rows"]) == ["neurocine", "mean_frame"]
    assert "clip_similarity" not in result["rows"]["neurocine"]


def test_evaluate_without_reconstructions_names_the_command(run_dir, tmp_path, capsys):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    with pytest.raises(CheckpointError, match="neurocine reconstruct --run"):
        find_reconstructions(bare)
    assert main(["evaluate", "--run", str(bare)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no reconstructions" in err[0]
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    (bare / "config.yaml").write_text("stage: stage1\n")
    with pytest.raises(CheckpointError, match="a stage-1 run has no reconstructions"):
        find_reconstructions(bare)


def test_pretrained_classifiers_load_by_path_and_score(tmp_path):
    """MinD-Video's classifiers are transformers checkpoints on disk: tiny random ones here."""
    from transformers import (
        VideoMAEConfig,
        VideoMAEForVideoClassification,
        VideoMAEImageProcessor,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessor,
    )

    from neurocine.evaluator import build_classifier

    vit = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=32, num_labels=60)  # fmt: skip
    ViTForImageClassification(vit).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    mae = VideoMAEConfig(image_size=32, patch_size=8, num_frames=2, tubelet_size=2, hidden_size=16,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         num_labels=55)  # fmt: skip
    VideoMAEForVideoClassification(mae).save_pretrained(tmp_path / "mae")
    VideoMAEImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path / "mae")
    cfg = load_config(
        None,
        [f"evaluation.image_classifier={tmp_path / 'vit'}",
         f"evaluation.video_classifier={tmp_path / 'mae'}"],
    )  # fmt: skip
    classifier = build_classifier(cfg)
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, (3, 4, 16, 20, 3), dtype=np.uint8)
    frame_probs, video_probs = classifier.probs(videos)
    assert frame_probs.shape == (3, 4, 60) and video_probs.shape == (3, 55)
    assert np.allclose(frame_probs.sum(-1), 1, atol=1e-5)
    scores = Scorer(videos, classifier=classifier, n_ways=[2, 50], num_trials=5).score(videos)
    assert scores["frame_50way"] == 1.0 and scores["video_50way"] == 1.0
    missing = load_config(None, [f"evaluation.image_classifier={tmp_path / 'nothing'}"])
    with pytest.raises(CheckpointError, match="cannot load the image classifier"):
        build_classifier(missing)


def test_train_evaluator_cli(subject, tmp_path, capsys):
    args = ["train-evaluator", "--no-progress", "--out", str(tmp_path / "ev"),
            f"data.path={subject}", *FAST_EVAL]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "evaluator of 7 classes trained on 30 clips" in out and "test accuracy" in out
    assert read_evaluator_config(tmp_path / "ev")["n_classes"] == N_CLASSES
    assert main(["train-evaluator", f"data.path={tmp_path / 'none.h5'}"]) == 2


def test_val_clips_need_an_evaluator_that_held_the_val_runs_out(run_dir, tmp_path, capsys):
    samples = tmp_path / "val_samples"
    reconstruct(run_dir, samples, split="val", limit=4, progress=False, videos=False)
    out = tmp_path / "scored"
    args = ["evaluate", "--run", str(samples), "--out", str(out), "--no-progress",
            "evaluation.baselines=[]", "evaluation.clip_similarity=false"]  # fmt: skip
    assert main([*args, "evaluation.evaluator.val_runs=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evaluation.split=val" in err[0] and "val_runs=1" in err[0]
    assert not out.exists()
    assert main(args) == 0  # the run's evaluator holds out its val run (val_runs=1)
    assert json.loads((out / "metrics.json").read_text())["split"] == "val"
