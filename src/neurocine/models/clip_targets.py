"""CLIP models that provide stage 1's targets, and the image/text embedding functions.

:func:`load_clip` is the one seam: ``cfg.clip.preset`` picks a loader that returns
``(model, image_preprocess, tokenizer)``:

- ``random``: a small :class:`transformers.CLIPModel` built from a :class:`CLIPConfig` in code,
  initialised from ``cfg.clip.seed``, with an offline word-level tokenizer over a fixed
  vocabulary (:data:`TINY_VOCAB`; unknown words → ``<unk>``). It needs no file or download: the
  tests and the demo use it. Its embeddings are random features of the frames, not semantics.
- ``pretrained``: ``CLIPModel`` / ``CLIPProcessor.from_pretrained(cfg.clip.pretrained)`` from
  local files (a directory, or a hub id already in the local cache).

- ``tiny``: the CLIP trained on the simulated world and shipped with the package
  (``neurocine/pretrained/clip``, ``neurocine pretrain clip``; or ``cfg.clip.pretrained``),
  loaded by the ``pretrained`` path. Its embeddings carry the simulated world's semantics.
- ``tiny_eval``: a second shipped tiny CLIP (``neurocine/pretrained/clip_eval``: another seed,
  other simulated scenes) that only scores reconstructions, so that evaluation is not done by
  the CLIP the model was trained and conditioned on.

A new preset is one more entry in :data:`LOADERS`.

Embeddings are L2-normalised. An image embedding of a TR is the mean of its frames' normalised
embeddings, normalised again (``frame_reduce="mean"``), or the middle frame's (``"middle"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neurocine.errors import CheckpointError, ConfigError

ImagePreprocess = Callable[[np.ndarray], torch.Tensor]
FRAME_REDUCE = ("mean", "middle")

# Fixed vocabulary of the offline tokenizer: its ids must never change, or the random preset's
# text embeddings would. Covers the simulated dataset's captions and common caption words.
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
TINY_VOCAB: tuple[str, ...] = SPECIAL_TOKENS + tuple(
    """
    a an the this that of on in over under at to from with and or by near behind above below
    across through into out is are moving moves standing still stands static slow slowly fast
    quickly left right up down -  , . small large big tiny medium little huge
    red green blue yellow cyan magenta orange white black gray grey purple pink brown
    circle square triangle diamond star cross ring crescent rectangle ellipse line dot shape
    object objects stripes striped checkerboard checker checkered dots dotted gradient waves wavy
    plain background texture scene clip frame video image photo picture shot
    person man woman people face animal dog cat bird car tree water sky building
    one two three many some
    """.split()
)
TEXT_MAX_LENGTH = 32


# --- the offline tokenizer ---------------------------------------------------------------------


def build_tiny_tokenizer(max_length: int = TEXT_MAX_LENGTH):
    """A word-level ``PreTrainedTokenizerFast`` over :data:`TINY_VOCAB`, built without files.

    Lower-cases, splits on whitespace and punctuation ("up-right" → "up", "-", "right"), wraps a
    caption as ``<bos> … <eos>`` and maps unknown words to ``<unk>``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(TINY_VOCAB)}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>",
        special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


# --- image preprocessing -----------------------------------------------------------------------

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_normalize(image_size: int, mean=CLIP_MEAN, std=CLIP_STD) -> ImagePreprocess:
    """uint8 frames ``[N, H, W, 3]`` → CLIP pixel values ``[N, 3, S, S]`` (torch, batched).

    Resizes the shorter side to ``S`` (bicubic, antialiased), centre-crops, normalises.
    """
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)

    def preprocess(frames: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
        height, width = x.shape[-2:]
        scale = image_size / min(height, width)
        size = (max(image_size, round(height * scale)), max(image_size, round(width * scale)))
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
        x = x[..., top : top + image_size, left : left + image_size].clamp(0.0, 1.0)
        return (x - mean_t) / std_t

    return preprocess


# --- loaders -----------------------------------------------------------------------------------


def tiny_clip_config(
    vocab_size: int = len(TINY_VOCAB),
    max_length: int = TEXT_MAX_LENGTH,
    image_size: int = 32,
    patch_size: int = 8,
    projection_dim: int | None = None,
):
    """A 2-layer ViT and a 2-layer text model of width 64 over the offline vocabulary.

    The defaults are the random preset's architecture (32 px, patch 8); other image, patch,
    text-length and projection sizes give narrowed versions of real CLIPs' layouts.
    """
    from transformers import CLIPConfig

    width = 64
    return CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": width,
            "intermediate_size": 4 * width,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": max_length,
            "pad_token_id": SPECIAL_TOKENS.index("<pad>"),
            "bos_token_id": SPECIAL_TOKENS.index("<bos>"),
            "eos_token_id": SPECIAL_TOKENS.index("<eos>"),
        },
        vision_config={
            "hidden_size": width,
            "intermediate_size": 4 * width,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=projection_dim or width,
    )


def _random_clip(clip_cfg: Any):
    """A seeded, randomly initialised tiny CLIP + offline tokenizer (the ``random`` preset)."""
    from transformers import CLIPModel

    config = tiny_clip_config()
    # transformers initialises from the global RNG: fork it so the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(clip_cfg.seed))
        model = CLIPModel(config)
    return model, resize_normalize(config.vision_config.image_size), build_tiny_tokenizer()


def _pretrained_clip(clip_cfg: Any):
    """``CLIPModel`` + ``CLIPProcessor`` from local files (``clip.pretrained``)."""
    from transformers import CLIPModel, CLIPProcessor

    source = clip_cfg.pretrained
    if not source:
        raise ConfigError(
            "clip.preset=pretrained needs clip.pretrained=PATH (a local CLIP directory)"
        )
    try:
        model = CLIPModel.from_pretrained(str(source), local_files_only=True)
        processor = CLIPProcessor.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"clip.pretrained={source}: cannot load CLIP offline: {first}"
        ) from exc
    image_processor = processor.image_processor

    def preprocess(frames: np.ndarray) -> torch.Tensor:
        return image_processor(images=list(frames), return_tensors="pt")["pixel_values"]

    return model, preprocess, processor.tokenizer


# The tiny CLIP trained on the simulated world and shipped with the package (``neurocine
# pretrain clip``); saved like any CLIP, so it loads through the ``pretrained`` path.
TINY_CLIP_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "clip"
# A second tiny CLIP (another seed, other simulated scenes) that only scores reconstructions:
# the semantic columns of `neurocine evaluate` are not measured by the conditioning CLIP.
TINY_EVAL_CLIP_DIR = TINY_CLIP_DIR.parent / "clip_eval"
# shipped preset → its folder, as provenance names it
SHIPPED_DIRS = {"tiny": "neurocine/pretrained/clip", "tiny_eval": "neurocine/pretrained/clip_eval"}


def _shipped_clip(clip_cfg: Any, default: Path):
    """A shipped tiny CLIP (or ``clip.pretrained``: a retrained copy), via ``from_pretrained``."""
    source = Path(clip_cfg.pretrained) if clip_cfg.pretrained else default
    if not (source / "config.json").is_file():
        raise CheckpointError(
            f"{source}: the tiny CLIP is missing: run `make pretrained` or use clip.preset=random"
        )
    return _pretrained_clip(SimpleNamespace(pretrained=str(source)))


LOADERS: dict[str, Callable[[Any], tuple]] = {
    "random": _random_clip,
    "pretrained": _pretrained_clip,
    "tiny": lambda cfg: _shipped_clip(cfg, TINY_CLIP_DIR),
    "tiny_eval": lambda cfg: _shipped_clip(cfg, TINY_EVAL_CLIP_DIR),
}


def load_clip(clip_cfg: Any) -> tuple[Any, ImagePreprocess, Any]:
    """Load the CLIP of ``cfg.clip``: ``(model in eval mode, image_preprocess, tokenizer)``.

    Parameters
    ----------
    clip_cfg : ClipConfig or DictConfig
        ``preset`` (one of :data:`LOADERS`), ``pretrained``, ``seed``.

    Returns
    -------
    model : transformers.CLIPModel
    image_preprocess : callable
        uint8 frames ``[N, H, W, 3]`` → pixel values ``[N, 3, S, S]``.
    tokenizer : transformers tokenizer
    """
    preset = effective_preset(clip_cfg)
    if preset not in LOADERS:
        raise ConfigError(f"clip.preset='{preset}': expected one of {tuple(LOADERS)}")
    if clip_cfg.frame_reduce not in FRAME_REDUCE:
        raise ConfigError(f"clip.frame_reduce='{clip_cfg.frame_reduce}': expected {FRAME_REDUCE}")
    model, preprocess, tokenizer = LOADERS[preset](clip_cfg)
    return model.eval(), preprocess, tokenizer


def effective_preset(clip_cfg: Any) -> str:
    """``clip.preset``, except that ``clip.pretrained=PATH`` with the default ``random`` preset
    means ``pretrained`` (so ``neurocine embed FILE clip.pretrained=PATH`` does what it says)."""
    preset = str(clip_cfg.preset)
    if preset == "random" and clip_cfg.pretrained:
        return "pretrained"
    return preset


def describe_clip(clip_cfg: Any) -> str:
    """Provenance of the embeddings (stored with them): ``random(seed=0)`` or the path.

    A shipped preset is named by its folder, not by ``clip.seed``, which only seeds the random
    preset (the shipped models' own seeds are in their model cards).
    """
    preset = effective_preset(clip_cfg)
    if preset == "pretrained":
        return f"pretrained({clip_cfg.pretrained})"
    if preset in SHIPPED_DIRS:
        return f"{preset}({clip_cfg.pretrained or SHIPPED_DIRS[preset]})"
    return f"{preset}(seed={clip_cfg.seed})"


# --- embeddings --------------------------------------------------------------------------------


def pooled_features(output: Any) -> torch.Tensor:
    """The projected embedding from ``get_image_features``/``get_text_features``.

    transformers < 5 returns a tensor; transformers 5 returns ``BaseModelOutputWithPooling``
    whose ``pooler_output`` holds the projection (or a tuple when ``return_dict=False``).
    """
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is not None:
        return pooled
    if isinstance(output, tuple) and len(output) > 1:
        return output[1]
    raise TypeError(f"unexpected CLIP feature output of type {type(output).__name__}")


@torch.no_grad()
def frame_embeddings(model: Any, preprocess: ImagePreprocess, frames: np.ndarray) -> torch.Tensor:
    """CLIP image embedding of every frame: uint8 ``[N, F, H, W, 3]`` → ``[N, F, D]``.

    float32, unit norm, on the CPU (the input of :func:`neurocine.metrics.clip_pcc`).
    """
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ConfigError(f"frames: shape {frames.shape}, expected [N, F, H, W, 3]")
    n, n_frames = frames.shape[:2]
    device = next(model.parameters()).device
    pixels = preprocess(frames.reshape(n * n_frames, *frames.shape[2:])).to(device)
    feats = pooled_features(model.get_image_features(pixel_values=pixels)).float()
    return F.normalize(feats, dim=-1).view(n, n_frames, -1).cpu()


@torch.no_grad()
def image_embeddings(
    model: Any,
    preprocess: ImagePreprocess,
    frames: np.ndarray,
    frame_reduce: str = "mean",
) -> torch.Tensor:
    """CLIP image embedding of each TR's clip.

    Parameters
    ----------
    model : transformers.CLIPModel
    preprocess : callable
        From :func:`load_clip`.
    frames : uint8 ndarray of shape (N, F, H, W, 3)
    frame_reduce : {"mean", "middle"}, default="mean"

    Returns
    -------
    Tensor of shape (N, D), float32, unit norm, on the CPU.
    """
    if frame_reduce not in FRAME_REDUCE:
        raise ConfigError(f"clip.frame_reduce='{frame_reduce}': expected one of {FRAME_REDUCE}")
    if frames.ndim == 5 and frame_reduce == "middle":
        n_frames = frames.shape[1]
        frames = frames[:, n_frames // 2 : n_frames // 2 + 1]
    return reduce_frame_embeddings(frame_embeddings(model, preprocess, frames), frame_reduce)


def reduce_frame_embeddings(frames: torch.Tensor, frame_reduce: str = "mean") -> torch.Tensor:
    """Per-frame embeddings ``[N, F, D]`` (unit norm) → one per clip ``[N, D]`` (unit norm).

    ``mean``: the normalised mean over frames; ``middle``: the middle frame's.
    """
    if frame_reduce not in FRAME_REDUCE:
        raise ConfigError(f"clip.frame_reduce='{frame_reduce}': expected one of {FRAME_REDUCE}")
    if frame_reduce == "middle":
        return frames[:, frames.shape[1] // 2]
    return F.normalize(frames.mean(dim=1), dim=-1)


@torch.no_grad()
def text_embeddings(model: Any, tokenizer: Any, captions: Sequence[str]) -> torch.Tensor:
    """CLIP text embedding of each caption: ``[N, D]`` float32, unit norm, on the CPU."""
    device = next(model.parameters()).device
    max_length = int(model.config.text_config.max_position_embeddings)
    tokens = tokenizer(
        list(captions), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    out = model.get_text_features(
        input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
    )
    return F.normalize(pooled_features(out).float(), dim=-1).cpu()


def clip_embedding_dim(model: Any) -> int:
    """Width of the model's joint embedding space (``projection_dim``)."""
    return int(model.config.projection_dim)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"clip.device='{name}': {exc}") from exc
