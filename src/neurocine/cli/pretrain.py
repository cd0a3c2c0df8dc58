"""``neurocine pretrain clip|vae|prior --out DIR [key=value …]``: train a shipped tiny model."""

from __future__ import annotations

import argparse
import json

RECIPES = {
    "clip": "tiny CLIP: image/text contrastive training on simulated frames and captions",
    "vae": "tiny VAE (diffusers AutoencoderKL): simulated frames → a 4×8×8 latent",
    "prior": "tiny video prior: the stage-2 video UNet trained as text-to-video on VAE latents",
}


def _pretrain(args: argparse.Namespace) -> int:
    from neurocine.pretrain import run_recipe

    quality = run_recipe(args.model, args.out, args.overrides)
    print(f"{args.out}: tiny {args.model} written (MODEL_CARD.md); quality:")
    print(json.dumps(quality, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="train the tiny CLIP / VAE / video prior on simulated clips (make pretrained)",
        description="Train one of the pretrained stand-ins shipped in neurocine/pretrained/ on "
        "clips of the simulated world (no fMRI), measure it on held-out clips and write it with "
        "its MODEL_CARD.md. Overrides are recipe keys (steps=, batch_size=, lr=, threads=, "
        "data.n_train=, …; see the recipe.yaml beside each shipped model).",
    )
    p.add_argument(
        "model", choices=tuple(RECIPES), help="; ".join(f"{k}: {v}" for k, v in RECIPES.items())
    )
    p.add_argument("--out", required=True, help="output directory (replaced when complete)")
    p.add_argument("overrides", nargs="*", help="recipe key=value overrides")
    p.set_defaults(func=_pretrain)
