"""Metrics of reconstructed videos and of embeddings (docs/design.md §10).

Pixel level: ``video_ssim`` (MinD-Video's scikit-image SSIM, batched; other papers' variants
by name), ``video_psnr``; ``to_uint8`` turns [0, 1] floats into frames (MinD-Video truncates).
Semantic level: ``n_way_top_k`` on a classifier's output (``frame_based_n_way`` with an image
classifier per frame, ``video_based_n_way`` with a video classifier per clip; ``*_per_video``
for each clip's score; ``k_true=3`` is MinD-Video's protocol, ``k_true=1`` the strict one),
``clip_similarity``. Temporal: ``clip_pcc`` (cosine of frame embeddings).
Embedding retrieval: ``retrieval_top_k``, ``n_way_retrieval`` (``*_per_query`` for each query's
score) and their torchmetrics classes ``RetrievalTopK``, ``NWayRetrieval`` (stage 1).
``scene_mask`` selects the clips to score.
"""

from neurocine.metrics.consistency import clip_pcc
from neurocine.metrics.nway import (
    frame_based_n_way,
    frame_based_n_way_per_video,
    n_way_chance,
    n_way_top_k,
    true_classes_from_probs,
    video_based_n_way,
    video_based_n_way_per_video,
)
from neurocine.metrics.pixels import to_uint8
from neurocine.metrics.psnr import video_psnr, video_psnr_per_video
from neurocine.metrics.retrieval import (
    NWayRetrieval,
    RetrievalTopK,
    n_way_retrieval,
    n_way_retrieval_per_query,
    retrieval_top_k,
)
from neurocine.metrics.scenes import scene_mask
from neurocine.metrics.similarity import clip_similarity
from neurocine.metrics.ssim import video_ssim, video_ssim_per_video

__all__ = [
    "NWayRetrieval",
    "RetrievalTopK",
    "clip_pcc",
    "clip_similarity",
    "frame_based_n_way",
    "frame_based_n_way_per_video",
    "n_way_chance",
    "n_way_retrieval",
    "n_way_retrieval_per_query",
    "n_way_top_k",
    "retrieval_top_k",
    "scene_mask",
    "to_uint8",
    "true_classes_from_probs",
    "video_based_n_way",
    "video_based_n_way_per_video",
    "video_psnr",
    "video_psnr_per_video",
    "video_ssim",
    "video_ssim_per_video",
]
