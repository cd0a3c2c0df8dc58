"""Pretraining of the shipped tiny CLIP, VAE and video prior on the simulated world.

``neurocine pretrain clip|vae|prior --out DIR [key=value …]`` (``make pretrained``) runs one
recipe: :mod:`~neurocine.pretrain.clip`, :mod:`~neurocine.pretrain.vae`,
:mod:`~neurocine.pretrain.prior`. Each trains a LightningModule on rendered clips of the
simulated world (:mod:`~neurocine.pretrain.data`, videos and captions only), measures the model
on held-out clips and writes it in the format of the real model it stands in for, with a
``MODEL_CARD.md``. The shipped copies live in ``neurocine/pretrained/<name>``
(:func:`~neurocine.pretrain.common.shipped_dir`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

from neurocine.errors import ConfigError

# name → (module, recipe dataclass, run function)
RECIPES = {
    "clip": ("neurocine.pretrain.clip", "ClipRecipe", "pretrain_clip"),
    "vae": ("neurocine.pretrain.vae", "VaeRecipe", "pretrain_vae"),
    "prior": ("neurocine.pretrain.prior", "PriorRecipe", "pretrain_prior"),
}


def run_recipe(name: str, out: str | Path, overrides: Sequence[str] = ()) -> dict:
    """Run recipe ``name`` with ``key=value`` overrides, writing the model to ``out``.

    Returns
    -------
    dict
        The quality figures recorded in the model card.
    """
    if name not in RECIPES:
        raise ConfigError(f"pretrain: unknown model '{name}': expected one of {tuple(RECIPES)}")
    from neurocine.pretrain.common import load_recipe

    module_name, recipe_name, fn_name = RECIPES[name]
    module = importlib.import_module(module_name)
    recipe = load_recipe(getattr(module, recipe_name), overrides)
    return getattr(module, fn_name)(recipe, out)
