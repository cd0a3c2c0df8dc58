"""The notebooks execute unchanged, kernel in ``notebooks/``, on runs where ``make demo`` and
``make sweep`` put them; a missing run is one line naming the command that makes it."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from stage2_helpers import TINY_UNET
from test_demo import TINY_DEMO, TINY_SIM

from neurocine.demo import run_demo
from neurocine.sweep import run_sweep

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
NAMES = ("inspect_run.ipynb", "compare_sweep.ipynb")
TINY_ENCODER = "{patch_size: 8, embed_dim: 12, depth: 1, num_heads: 3, out_tokens: 5, out_dim: 14}"


@contextmanager
def working_folder(path: Path):
    before = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


def new_project(root: Path) -> Path:
    """A project folder as a checkout has it: a ``Makefile`` and a copy of ``notebooks/``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Makefile").write_text("")
    shutil.copytree(NOTEBOOKS, root / "notebooks")
    return root


def tiny_demo_files(root: Path) -> Path:
    """experiments/ of ``root``: a tiny demo named ``demo`` with the shipped relative paths."""
    shutil.copytree(REPO / "data_modules", root / "data_modules")
    exp = root / "experiments"
    (exp / "sweeps").mkdir(parents=True)
    trainer = "trainer: {max_epochs: 2, limit_train_batches: 2, log_every_n_steps: 1}"
    (exp / "s1.yaml").write_text(
        f"stage: stage1\ndata_module: simulated\nencoder: {TINY_ENCODER}\n{trainer}\n"
    )
    (exp / "s2.yaml").write_text(
        f"stage: stage2\ndata_module: simulated\nencoder: {TINY_ENCODER}\n"
        "sampling: {steps: 2, batch_size: 8}\n"
        "trainer: {max_epochs: 1, limit_train_batches: 2, limit_val_batches: 1}\n"
    )
    overrides = [
        *TINY_SIM,
        "data.path=data/sim/subject1.h5",
        "runs_dir=runs",
        *TINY_DEMO,
    ]
    (exp / "demo.yaml").write_text(
        "name: demo\nstage1: experiments/s1.yaml\nstage2: experiments/s2.yaml\n"
        f"overrides: {json.dumps(overrides)}\nstage2_overrides: {json.dumps(TINY_UNET)}\n"
    )
    (exp / "sweeps" / f"{default_sweep()}.yaml").write_text(
        "base: experiments/s1.yaml\n"
        "sweep: {data.augment.mask_ratio: [0.0, 0.5], sampling.steps: [2, 3]}\n"
        "seeds: [0, 1]\nreference: {data.augment.mask_ratio: 0.0}\n"
        "overrides: [data.batch_size=16, data.val_runs=1, trainer.enable_progress_bar=false]\n"
    )
    return root


def default_parameter(name: str, key: str) -> str:
    """The value of ``key = "…"`` in a notebook's ``parameters`` cell."""
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    line = next(line for line in cell.source.splitlines() if line.startswith(f"{key} ="))
    return line.split("=", 1)[1].split("#")[0].strip().strip("\"'")


def default_sweep() -> str:
    """The sweep compare_sweep.ipynb opens by default (``runs/sweeps/<name>``)."""
    return Path(default_parameter("compare_sweep.ipynb", "sweep_dir")).name


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project whose runs/ holds a tiny ``make demo`` and a tiny 2 × 2 ``make sweep`` over 2
    seeds, made from its root with the relative paths the shipped files use."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tiny_demo_files(new_project(tmp_path_factory.mktemp("project")))
    with working_folder(root):
        run_demo("experiments/demo.yaml", progress=False, log=lambda _: None)
        run_sweep(f"experiments/sweeps/{default_sweep()}.yaml", progress=False, log=lambda _: None)
    torch.set_num_threads(threads)
    return root


def execute(path: Path, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Run a notebook unchanged with the kernel in its own folder (as Jupyter starts it)."""
    book = nbformat.read(path, as_version=4)
    client = NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    saved = dict(os.environ)
    os.environ.pop("NEUROCINE_ROOT", None)
    os.environ.update(env or {})
    try:
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return book


def outputs(book: nbformat.NotebookNode, mime: str) -> list:
    return [
        out["data"][mime]
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if mime in out.get("data", {})
    ]


def error_outputs(book: nbformat.NotebookNode) -> list[str]:
    """Every error output of the executed cells, and stderr text naming an error (warnings are
    not errors)."""
    found = []
    for cell in (c for c in book.cells if c.cell_type == "code"):
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                found.append("\n".join(out["traceback"]))
            elif out["output_type"] == "stream" and out["name"] == "stderr":
                if "Traceback" in out["text"] or "Error" in out["text"]:
                    found.append(out["text"])
    return found


def check_inspect_run(book: nbformat.NotebookNode) -> None:
    text = "\n".join(
        "".join(o.get("text", "")) for c in book.cells for o in c.get("outputs", [])
    ) + "\n".join(outputs(book, "text/plain"))
    assert "Run('runs/demo/stage2/" in text and "data data/sim/subject1.h5" in text
    assert "tensorboard --logdir runs/demo" in text
    tables = outputs(book, "text/markdown")
    assert any("| NeuroCine |" in t and "| oracle (fmri_clean) |" in t for t in tables)
    assert any("NeuroCine minus | mean training frame |" in t and "| ssim |" in t for t in tables)
    # stage-1 curves, stage-2 loss, still grid, score histogram, best, worst, brain map
    assert len(outputs(book, "image/png")) >= 7
    assert outputs(book, "image/gif")  # the playable grid


def test_inspect_run_as_shipped_after_make_demo(project):
    book = execute(project / "notebooks" / "inspect_run.ipynb")
    assert error_outputs(book) == []
    check_inspect_run(book)


def test_compare_sweep_as_shipped_after_make_sweep(project):
    book = execute(project / "notebooks" / "compare_sweep.ipynb")
    assert error_outputs(book) == []
    assert len(outputs(book, "image/png")) == 3  # error bars, heatmap, validation curves
    tables = outputs(book, "text/html")
    assert any("val/top1_50way_se" in t and "verdict" in t for t in tables)
    assert outputs(book, "text/plain")[-1] == "8"  # 4 points × 2 seeds read back


def test_the_root_comes_from_neurocine_root_too(project, tmp_path):
    """Outside any project (no marker above the folder), NEUROCINE_ROOT names it."""
    folder = tmp_path / "elsewhere"
    shutil.copytree(NOTEBOOKS, folder)
    book = execute(folder / "compare_sweep.ipynb", {"NEUROCINE_ROOT": str(project)})
    assert error_outputs(book) == []


@pytest.mark.parametrize(
    ("name", "command"),
    [("inspect_run.ipynb", "make demo"), ("compare_sweep.ipynb", "make sweep SWEEP={sweep}")],
)
def test_a_missing_run_is_one_line_naming_the_command(tmp_path, name, command):
    command = command.format(sweep=default_sweep())
    assert default_parameter("inspect_run.ipynb", "run_dir") == "runs/demo/stage2/latest"
    root = new_project(tmp_path / "empty")
    with pytest.raises(CellExecutionError):
        execute(root / "notebooks" / name)
    book = nbformat.read(root / "notebooks" / name, as_version=4)  # unchanged on disk
    client = NotebookClient(
        book, kernel_name="python3", allow_errors=True,
        resources={"metadata": {"path": str(root / "notebooks")}},
    )  # fmt: skip
    client.execute()
    errors = error_outputs(book)
    assert len(errors) >= 1
    first = errors[0]
    assert "\n" not in first and "Traceback" not in first
    assert f"make it with `{command}`" in first and "not found" in first


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_stored_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_hold_no_training_code(name):
    source = "\n".join(
        c.source for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells
        if c.cell_type == "code"
    )  # fmt: skip
    for banned in ("neurocine.training", "neurocine.sweep import", "run_sweep", "fit(", "Trainer"):
        assert banned not in source, banned


@pytest.mark.slow  # the shipped demo: ~4 min on a shared 2-core machine
def test_inspect_run_after_the_shipped_demo(tmp_path, monkeypatch):
    root = new_project(tmp_path / "project")
    monkeypatch.chdir(REPO)
    overrides = [
        f"data.path={root / 'data' / 'sim' / 'subject1.h5'}",
        f"runs_dir={root / 'runs'}",
    ]
    run_demo("experiments/demo.yaml", overrides, progress=False, log=lambda _: None)
    book = execute(root / "notebooks" / "inspect_run.ipynb")
    assert error_outputs(book) == []
    tables = outputs(book, "text/markdown")
    assert any("| ridge fMRI → pixels |" in t for t in tables)
    assert len(outputs(book, "image/png")) >= 7
