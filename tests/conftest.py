"""Shared fixtures. Nothing here touches the network: hub access is switched off."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from factories import write_tiny_subject  # noqa: E402


@pytest.fixture(scope="session")
def tiny_subject(tmp_path_factory):
    """A small valid subject file (V=61, 4 train runs + 2 test runs of 10 TRs, F=4, 16×20)."""
    return write_tiny_subject(tmp_path_factory.mktemp("subject") / "tiny.h5")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Torch on one thread in every test: the models are tiny, and on a shared 2-core machine a
    second thread fights other processes for a core instead of helping."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
