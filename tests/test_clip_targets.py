"""CLIP targets: offline tokenizer, presets, embedding functions, `neurocine embed`."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from factories import tiny_subject_arrays, write_tiny_subject
from omegaconf import OmegaConf

from neurocine.cli import main
from neurocine.config import ClipConfig, load_config
from neurocine.data.datamodule import FMRIVideoDataModule
from neurocine.data.schema import validate, write_subject
from neurocine.embedding import embed_subject, is_embedded
from neurocine.errors import CheckpointError, ConfigError, SchemaError
from neurocine.models.clip_targets import (
    build_tiny_tokenizer,
    describe_clip,
    image_embeddings,
    load_clip,
    pooled_features,
    text_embeddings,
)


@pytest.fixture(scope="module")
def clip():
    return load_clip(OmegaConf.structured(ClipConfig(preset="random", seed=0)))


def frames(seed: int = 0, n: int = 3, n_frames: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, n_frames, 16, 20, 3), dtype=np.uint8)


def test_tokenizer_is_offline_and_maps_unknown_words():
    tok = build_tiny_tokenizer()
    ids = tok("A large red triangle moving up-right over a checkerboard")["input_ids"]
    words = tok.convert_ids_to_tokens(ids)
    assert words == ["<bos>", "a", "large", "red", "triangle", "moving", "up", "-", "right",
                     "over", "a", "checkerboard", "<eos>"]  # fmt: skip
    assert tok.convert_ids_to_tokens(tok("a zebra")["input_ids"]) == [
        "<bos>",
        "a",
        "<unk>",
        "<eos>",
    ]


def test_random_preset_is_seeded():
    cfg = OmegaConf.structured(ClipConfig(preset="random", seed=0))
    a, _, _ = load_clip(cfg)
    b, _, _ = load_clip(cfg)
    cfg.seed = 1
    c, _, _ = load_clip(cfg)
    wa, wb, wc = (m.visual_projection.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unknown_preset_and_missing_pretrained_path(tmp_path):
    with pytest.raises(ConfigError, match="clip.preset='vit-h'"):
        load_clip(OmegaConf.structured(ClipConfig(preset="vit-h")))
    with pytest.raises(ConfigError, match="needs clip.pretrained"):
        load_clip(OmegaConf.structured(ClipConfig(preset="pretrained")))
    with pytest.raises(CheckpointError, match="cannot load CLIP offline"):
        load_clip(OmegaConf.structured(ClipConfig(preset="pretrained", pretrained=str(tmp_path))))


def test_pooled_features_handles_every_return_type(clip):
    model, preprocess, _ = clip
    pixels = preprocess(frames()[:, 0])
    out = model.get_image_features(pixel_values=pixels)  # transformers 5: a ModelOutput
    emb = pooled_features(out)
    assert emb.shape == (3, 64)
    assert torch.equal(pooled_features(emb), emb)
    as_tuple = model.get_image_features(pixel_values=pixels, return_dict=False)
    torch.testing.assert_close(pooled_features(as_tuple), emb)


def test_image_embeddings_reduce_frames(clip):
    model, preprocess, _ = clip
    x = frames()
    mean = image_embeddings(model, preprocess, x, "mean")
    assert mean.shape == (3, 64) and mean.dtype == torch.float32
    torch.testing.assert_close(mean.norm(dim=1), torch.ones(3))
    per_frame = torch.stack(
        [image_embeddings(model, preprocess, x[:, f : f + 1]) for f in range(4)]
    )
    expected = torch.nn.functional.normalize(per_frame.mean(0), dim=1)
    torch.testing.assert_close(mean, expected, atol=1e-5, rtol=1e-5)
    middle = image_embeddings(model, preprocess, x, "middle")
    torch.testing.assert_close(middle, per_frame[2], atol=1e-5, rtol=1e-5)
    # Row i depends on clip i only, and distinct clips give distinct embeddings.
    torch.testing.assert_close(image_embeddings(model, preprocess, x[1:2]), mean[1:2])
    assert (mean @ mean.T).fill_diagonal_(0).max() < 0.9999


def test_text_embeddings_ignore_padding(clip):
    model, _, tok = clip
    short = "a red circle"
    alone = text_embeddings(model, tok, [short])
    batch = text_embeddings(model, tok, ["a large blue star moving down-left over waves", short])
    torch.testing.assert_close(batch[1:], alone, atol=1e-5, rtol=1e-5)
    assert float(batch[0] @ batch[1]) < 0.999


def _subject(path, **kwargs):
    return write_tiny_subject(path, clip_dim=None, **kwargs)


def _cfg(*overrides):
    return load_config(None, ["clip.preset=random", "clip.batch_size=7", *overrides])


def test_embed_subject_writes_float16_targets_and_is_idempotent(tmp_path):
    path = _subject(tmp_path / "s.h5")
    assert not is_embedded(path)
    report = embed_subject(path, _cfg(), progress=False)
    assert report.written == {"train/clip_image": 64, "train/clip_text": 64,
                              "test/clip_image": 64, "test/clip_text": 64}  # fmt: skip
    summary = validate(path)
    assert summary.splits["train"].embeddings == {"clip_image": 64, "clip_text": 64}
    with h5py.File(path, "r") as f:
        image = f["train/clip_image"][()]
        assert image.dtype == np.float16 and image.shape == (40, 64)
        assert f["train/clip_image"].attrs["clip_model"] == "random(seed=0)"
        np.testing.assert_allclose(np.linalg.norm(image.astype(np.float32), axis=1), 1, atol=2e-3)
        frames_0 = f["train/frames"][3:4]
        caption_0 = [f["train/caption"].asstr()[3]]
        text = f["train/clip_text"][3]
    model, preprocess, tok = load_clip(_cfg().clip)
    expected = image_embeddings(model, preprocess, frames_0)[0].numpy()
    np.testing.assert_allclose(image[3], expected, atol=2e-3)  # row 3 is clip 3 (no shuffling)
    np.testing.assert_allclose(text, text_embeddings(model, tok, caption_0)[0].numpy(), atol=2e-3)
    assert is_embedded(path)

    mtime = path.stat().st_mtime_ns
    assert embed_subject(path, _cfg(), progress=False).skipped
    assert path.stat().st_mtime_ns == mtime
    forced = embed_subject(path, _cfg(), force=True, progress=False)
    assert not forced.skipped and not forced.replaced
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["train/clip_image"][()], image)  # deterministic
    # Embeddings of another CLIP are not "present" for this one: recomputed without --force.
    other = embed_subject(path, _cfg("clip.seed=1"), progress=False)
    assert not other.skipped and other.replaced == "random(seed=0) (frame_reduce=mean)"
    assert "replaced embeddings made by CLIP random(seed=0)" in other.lines()[1]
    with h5py.File(path, "r") as f:
        assert f["train/clip_image"].attrs["clip_model"] == "random(seed=1)"
        assert not np.allclose(f["train/clip_image"][()], image)
    assert embed_subject(path, _cfg("clip.seed=1"), progress=False).skipped
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]  # no temporary left behind


def test_embedded_file_feeds_the_datamodule(tmp_path):
    path = _subject(tmp_path / "s.h5")
    cfg = load_config(None, [f"data.path={path}", "data.batch_size=5"])
    dm = FMRIVideoDataModule(cfg)
    dm.setup("fit")
    assert dm.clip_dim is None
    embed_subject(path, _cfg(), progress=False)
    dm = FMRIVideoDataModule(cfg)
    dm.setup("fit")
    assert dm.clip_dim == 64
    batch = next(iter(dm.val_dataloader()))
    assert batch["clip_image"].shape == (5, 64) and batch["clip_text"].dtype == torch.float32


def test_split_without_captions_gets_image_targets_only(tmp_path):
    arrays = tiny_subject_arrays(clip_dim=None)
    del arrays["splits"]["test"]["caption"]
    path = write_subject(tmp_path / "s.h5", **arrays)
    report = embed_subject(path, _cfg(), progress=False)
    assert "test/clip_text" not in report.written and "test/clip_image" in report.written
    assert embed_subject(path, _cfg(), progress=False).skipped


def test_file_without_frames_is_a_schema_error(tmp_path):
    arrays = tiny_subject_arrays(clip_dim=None)
    for split in arrays["splits"].values():
        del split["frames"]
    arrays["meta"]["frames_per_tr"] = 0
    path = write_subject(tmp_path / "s.h5", **arrays)
    with pytest.raises(SchemaError, match="/train/frames: missing dataset"):
        embed_subject(path, _cfg(), progress=False)


def test_cli_embed(tmp_path, capsys):
    path = _subject(tmp_path / "s.h5")
    assert main(["embed", "--no-progress", str(path), "clip.batch_size=16"]) == 0
    assert "wrote train/clip_image[64]" in capsys.readouterr().out
    assert main(["embed", str(path), "--no-progress"]) == 0
    assert "already present" in capsys.readouterr().out
    assert main(["embed", str(path), "clip.colour=red"]) == 2
    assert "clip.colour" in capsys.readouterr().err


def test_embeddings_without_provenance_are_kept(tmp_path):
    path = write_tiny_subject(tmp_path / "s.h5", clip_dim=12)  # written by "another tool"
    assert embed_subject(path, _cfg(), progress=False).skipped
    assert validate(path).splits["train"].embeddings == {"clip_image": 12, "clip_text": 12}
    assert embed_subject(path, _cfg(), force=True, progress=False).written["train/clip_image"] == 64


def test_pretrained_path_loads_offline_and_implies_the_preset(tmp_path, clip):
    from transformers import CLIPImageProcessor, CLIPProcessor

    model, preprocess, tok = clip
    model.save_pretrained(tmp_path / "clip")
    size = {"shortest_edge": 32}
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size=size, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
    )
    processor.save_pretrained(tmp_path / "clip")
    cfg = OmegaConf.structured(ClipConfig(pretrained=str(tmp_path / "clip")))  # preset: random
    loaded, loaded_preprocess, loaded_tok = load_clip(cfg)
    x = frames()
    torch.testing.assert_close(
        image_embeddings(loaded, loaded_preprocess, x), image_embeddings(model, preprocess, x),
        atol=2e-3, rtol=0,
    )  # fmt: skip
    caption = ["a small green star moving up over dots"]
    torch.testing.assert_close(
        text_embeddings(loaded, loaded_tok, caption), text_embeddings(model, tok, caption)
    )


def test_provenance_names_a_shipped_clip_by_its_folder_and_a_random_one_by_its_seed():
    cfg = OmegaConf.structured(ClipConfig)
    cfg.seed = 7
    cfg.preset = "tiny_eval"
    assert describe_clip(cfg) == "tiny_eval(neurocine/pretrained/clip_eval)"
    cfg.preset = "tiny"
    assert describe_clip(cfg) == "tiny(neurocine/pretrained/clip)"
    cfg.preset = "random"
    assert describe_clip(cfg) == "random(seed=7)"
