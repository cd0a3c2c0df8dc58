"""The notebooks execute end to end on a tiny run and a tiny sweep (nbclient, parameter cell)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from factories import write_tiny_subject
from nbclient import NotebookClient
from stage2_helpers import TINY_UNET

from neurocine.config import load_config
from neurocine.evaluation import evaluate_run
from neurocine.reconstruct import reconstruct
from neurocine.sweep import run_sweep
from neurocine.training import fit

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A 2 × 2 stage-1 sweep over 2 seeds (sampling.steps shares stage 1), and a reconstructed,
    evaluated stage 2."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("notebook_runs")
    subject = write_tiny_subject(root / "tiny.h5", trs_per_run=60)
    experiment = root / "tiny_stage1.yaml"
    experiment.write_text(
        f"""
name: tiny
data: {{path: {subject}, window: 2, lag_trs: 0, val_runs: 1, batch_size: 16}}
encoder: {{patch_size: 8, embed_dim: 12, depth: 1, num_heads: 3, out_tokens: 5, out_dim: 14}}
trainer: {{max_epochs: 1, limit_train_batches: 2, enable_progress_bar: false, log_every_n_steps: 1}}
"""
    )
    spec = root / "tiny_sweep.yaml"
    spec.write_text(
        f"base: {experiment}\n"
        "sweep: {sampling.steps: [2, 3], data.augment.mask_ratio: [0.0, 0.5]}\n"
        "seeds: [0, 1]\nreference: {data.augment.mask_ratio: 0.0}\n"
        f"out_dir: {root / 'sweeps'}\n"
    )
    sweep = run_sweep(spec, progress=False, log=lambda _: None)
    stage1_run = Path(sweep.records[0]["runs"]["stage1"])
    cfg = load_config(
        None,
        [
            "stage=stage2",
            "name=stage2",
            f"runs_dir={root / 'runs'}",
            f"data.path={subject}",
            "data.batch_size=8",
            "data.val_runs=1",
            f"stage2.encoder_ckpt={stage1_run / 'encoder'}",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=2",
            "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
            "sampling.steps=2",
            "sampling.batch_size=6",
            "evaluation.baselines=[mean_frame,oracle]",
            "evaluation.evaluator.epochs=2",
            "evaluation.evaluator.width=4",
            f"evaluation.evaluator_dir={root / 'evaluator'}",
            *TINY_UNET,
        ],
    )
    run = fit(cfg)
    reconstruct(run, run / "samples", limit=6, progress=False)
    evaluate_run(run, progress=False)
    torch.set_num_threads(threads)
    return run, sweep.out_dir


def execute(path: Path, params: dict, cwd: Path) -> nbformat.NotebookNode:
    """Run a notebook with ``params`` injected after its ``parameters`` cell (papermill style)."""
    book = nbformat.read(path, as_version=4)
    index = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    book.cells.insert(index + 1, cell)
    client = NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return book


def outputs(book: nbformat.NotebookNode, mime: str) -> list:
    return [
        out["data"][mime]
        for cell in book.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if mime in out.get("data", {})
    ]


def test_inspect_run_executes_on_a_tiny_run(tiny_runs, tmp_path):
    run, _ = tiny_runs
    book = execute(NOTEBOOKS / "inspect_run.ipynb", {"run_dir": str(run)}, tmp_path)
    tables = outputs(book, "text/markdown")
    assert any("| NeuroCine |" in t and "| oracle (fmri_clean) |" in t for t in tables)
    assert len(outputs(book, "image/png")) >= 3  # loss curves, grid, brain map
    assert outputs(book, "image/gif")  # the playable grid


def test_compare_sweep_executes_on_a_tiny_sweep(tiny_runs, tmp_path):
    _, sweep_dir = tiny_runs
    book = execute(NOTEBOOKS / "compare_sweep.ipynb", {"sweep_dir": str(sweep_dir)}, tmp_path)
    assert len(outputs(book, "image/png")) == 3  # error bars, heatmap, validation curves
    tables = outputs(book, "text/html")
    assert any("val/top1_50way_se" in t and "verdict" in t for t in tables)
    assert outputs(book, "text/plain")[-1] == "8"  # 4 points × 2 seeds read back


@pytest.mark.parametrize("name", ["inspect_run.ipynb", "compare_sweep.ipynb"])
def test_notebooks_are_stored_without_outputs(name):
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(book)
    code = [c for c in book.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
