"""The demo's stage-2 model on the whole test split: is the demo's 24-clip table representative?

``make demo`` reconstructs and scores only ``evaluation.reconstruct_limit`` (24) test clips to
stay within 10 minutes, so its 50-way figures carry a standard error of about ±0.07. This
benchmark reconstructs every test clip with the demo's trained stage-2 model (``--run``, or a
fresh ``neurocine demo`` in a temporary folder when omitted) and scores them beside the same
baselines, with the demo's sampling settings and once more at a higher guidance scale.

    python -m bench.demo_full_split [--run RUNS/demo/stage2/<timestamp>]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from bench.common import markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("ssim", "frame_2way", "frame_50way", "video_2way", "video_50way", "clip_similarity")


def run(cmd: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "neurocine", *cmd], cwd=ROOT, check=True)


def demo_run(workdir: Path) -> Path:
    """Run ``neurocine demo`` into ``workdir``; its stage-2 run directory."""
    run(["demo", "--config", "experiments/demo.yaml", "--no-progress",
         f"data.path={workdir / 'subject1.h5'}", f"runs_dir={workdir / 'runs'}"])  # fmt: skip
    return (workdir / "runs" / "demo" / "stage2" / "latest").resolve()


def score(run_dir: Path, out: Path, overrides: list[str], baselines: bool) -> dict:
    """Reconstruct the whole test split with ``overrides``; evaluate → metrics.json content."""
    run(["reconstruct", "--run", str(run_dir), "--out", str(out / "samples"), "--no-videos",
         "--no-progress", *overrides])  # fmt: skip
    extra = [] if baselines else ["evaluation.baselines=[]"]
    run(["evaluate", "--run", str(out / "samples"), "--out", str(out), "--no-progress", *extra])
    return json.loads((out / "metrics.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a demo stage-2 run (default: run the demo)")
    parser.add_argument("--guidance", type=float, default=7.0, help="the second guidance scale")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="demo_full_split_") as tmp:
        run_dir = Path(args.run).resolve() if args.run else demo_run(Path(tmp))
        steps = OmegaConf.load(run_dir / "config.yaml").sampling.steps
        as_demo = score(run_dir, Path(tmp) / "demo", [], baselines=True)
        guided = score(run_dir, Path(tmp) / "guided",
                       [f"sampling.guidance_scale={args.guidance}"], baselines=False)  # fmt: skip
    names = {"neurocine": "NeuroCine (demo sampling)", "mean_frame": "mean training frame",
             "ridge": "ridge fMRI → pixels", "oracle": "oracle (fmri_clean)"}  # fmt: skip
    rows = [[label, *(as_demo["rows"][key].get(m, "") for m in METRICS)]
            for key, label in names.items() if key in as_demo["rows"]]  # fmt: skip
    rows.insert(1, [f"NeuroCine, guidance {args.guidance:g}",
                    *(guided["rows"]["neurocine"].get(m, "") for m in METRICS)])  # fmt: skip
    n = as_demo["n_clips"]
    ours = as_demo["rows"]["neurocine"]
    gaps = "; ".join(
        f"{row} {d[m]['diff']:+.3f} ± {d[m]['se']:.3f}"
        for row, d in as_demo["paired"].items()
        for m in ("video_50way",)
        if m in d
    )
    notes = (
        f"{n} test clips scored (clips spanning a scene cut left out), the demo's sampling "
        f"settings (DDIM steps {steps}) unless named; 1-minute load average {load:.1f}. "
        f"Video 50-way top-1: NeuroCine {ours['video_50way']:.3f}; NeuroCine minus each row, "
        f"paired over the same clips and distractors (± standard error): {gaps}. n-way chance "
        "with 3 true classes: 2-way 0.75, 50-way 0.058."
    )
    table = markdown_table(["row", *METRICS], rows)
    data = {"n_clips": n, "as_demo": as_demo["rows"], "paired": as_demo["paired"],
            "guided": guided["rows"], "guidance": args.guidance, "load": load}  # fmt: skip
    write_result("demo_full_split", "The demo's model on the whole test split "
                 "(bench/demo_full_split.py)", table, data, notes)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
