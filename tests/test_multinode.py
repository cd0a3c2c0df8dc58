"""Two "nodes" of one process each, launched by torchrun on loopback (c10d, gloo).

Each node runs the real stage-1 module and DataModule through a Lightning Trainer with
``num_nodes=2``; the test checks that the ranks read disjoint shards of the training windows and
end with identical weights (DDP averaged their gradients).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from factories import write_tiny_subject

NODE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import lightning as L, torch
    from neurocine.config import load_config
    from neurocine.data.datamodule import FMRIVideoDataModule
    from neurocine.lit.stage1 import build_module

    class Seen(L.Callback):
        def __init__(self):
            self.indices = []
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.indices += [[trainer.current_epoch, i] for i in batch["index"].tolist()]

    path, out = sys.argv[1], sys.argv[2]
    cfg = load_config(None, [f"data.path={path}", "data.batch_size=4", "encoder.patch_size=8",
                             "encoder.embed_dim=16", "encoder.depth=1", "encoder.num_heads=2",
                             "encoder.out_tokens=2", "encoder.out_dim=8", "stage1.n_way=8",
                             "stage1.n_way_trials=2"])
    L.seed_everything(0)
    dm = FMRIVideoDataModule(cfg)
    dm.setup("fit")
    module = build_module(cfg, dm)
    seen = Seen()
    trainer = L.Trainer(accelerator="cpu", devices=1, num_nodes=2, strategy="ddp", max_epochs=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[seen])
    trainer.fit(module, datamodule=dm)
    rank = trainer.global_rank
    torch.save(module.state_dict(), f"{out}.{rank}.pt")
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump({"indices": seen.indices, "world": trainer.world_size,
                   "node": trainer.node_rank}, f)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_nodes_disjoint_shards_identical_weights(tmp_path):
    subject = write_tiny_subject(tmp_path / "s.h5")
    script = tmp_path / "node.py"
    script.write_text(NODE_SCRIPT)
    out = tmp_path / "rank"
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "neurocine-test"]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [*torchrun, str(script), str(subject), str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(log[-2000:] for log in logs)
    ranks = [json.loads(out.with_name(f"rank.{r}.json").read_text()) for r in (0, 1)]
    assert {r["node"] for r in ranks} == {0, 1} and all(r["world"] == 2 for r in ranks)
    first, second = ({tuple(pair) for pair in r["indices"]} for r in ranks)
    assert first and second and not first & second  # disjoint shards within every epoch
    assert {e for e, _ in first} == {0, 1}
    weights = [torch.load(out.with_name(f"rank.{r}.pt"), weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.slow
def test_torchrun_two_nodes_through_the_neurocine_command(tmp_path):
    """The same, as a user runs it: `torchrun … -m neurocine train stage1 … num_nodes=2`."""
    from neurocine.lit.stage1 import steps_per_epoch

    subject = write_tiny_subject(tmp_path / "s.h5")
    epochs, port = 2, _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "neurocine-cli"]  # fmt: skip
    train = ["-m", "neurocine", "train", "stage1", f"data.path={subject}",
             f"runs_dir={tmp_path / 'runs'}", "name=twonodes", "data.batch_size=4",
             "encoder.patch_size=8", "encoder.embed_dim=16", "encoder.depth=1",
             "encoder.num_heads=2", "encoder.out_tokens=2", "encoder.out_dim=8", "stage1.n_way=8",
             "stage1.n_way_trials=2", f"trainer.max_epochs={epochs}", "trainer.num_nodes=2",
             "trainer.strategy=ddp", "trainer.enable_progress_bar=false"]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [*torchrun, *train],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(log[-2000:] for log in logs)
    names = {p.name for p in (tmp_path / "runs" / "twonodes").iterdir()}
    assert "latest" in names and len({n for n in names if n[0] not in ".l"}) == 1  # one run
    run_dir = (tmp_path / "runs" / "twonodes" / "latest").resolve()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    # 2 training runs of 10 TRs (val_runs 2 of 4): 20 windows, 10 per node, batches of 4.
    assert ckpt["global_step"] == epochs * steps_per_epoch(20, 4, world_size=2) == epochs * 2
    assert (run_dir / "encoder" / "config.json").is_file()
