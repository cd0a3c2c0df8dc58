"""``neurocine embed FILE``: write CLIP image/text targets into a subject file."""

from __future__ import annotations

import argparse

from neurocine.cli.common import add_config_arguments
from neurocine.config import load_config


def _embed(args: argparse.Namespace) -> int:
    from neurocine.embedding import embed_subject

    cfg = load_config(args.config, args.overrides)
    report = embed_subject(args.file, cfg, force=args.force, progress=not args.no_progress)
    for line in report.lines():
        print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="write CLIP image/text embeddings (clip_image, clip_text) into a subject file",
        description="Embed each TR's frames and caption with CLIP (cfg.clip: preset=random | "
        "pretrained, pretrained=PATH, frame_reduce=mean | middle). Skips files that already have "
        "their embeddings unless --force.",
    )
    p.add_argument("file", help="subject HDF5 file")
    p.add_argument("--force", action="store_true", help="recompute existing embeddings")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(p)
    p.set_defaults(func=_embed)
