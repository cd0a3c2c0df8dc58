"""Argument helpers shared by the sub-command modules."""

from __future__ import annotations

import argparse

from omegaconf import DictConfig

from neurocine.config import load_config


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config FILE`` plus trailing ``key=value`` overrides."""
    parser.add_argument("--config", default=default, help="experiment YAML (experiments/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")


def config_from_args(args: argparse.Namespace) -> DictConfig:
    return load_config(args.config, args.overrides)
