"""``make bench``: run every ``bench/*.py`` benchmark, then rebuild ``docs/benchmarks.md``.

Each benchmark writes ``bench/results/<name>.json`` through :func:`bench.common.write_result`;
the page is rebuilt from all result files, so a benchmark run alone (``python -m bench.<name>``)
followed by ``python -m bench.run_all --only-docs`` updates just its figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS

ROOT = Path(__file__).resolve().parent.parent
SELECTION = ROOT / "bench" / "selection.md"  # which split chose each recipe setting (by hand)
SKIP = {"__init__", "common", "run_all", "gpu_check"}  # gpu_check: `make bench-gpu`, on a GPU
# Arguments that keep `make bench` within its 20-minute budget on a 2-core machine; the
# full-size figures (python -m bench.preprocess_scale) are kept under their own names.
QUICK_ARGS = {"preprocess_scale": ["--fraction", "0.12", "--video-size", "160"]}
# Quality benchmarks that train whole models (10–15 minutes each on 2 cores): `make bench-all`
# runs them too; `make bench` keeps their last recorded result (with its date and command).
QUALITY = {
    "brain_maps",
    "evaluator_epochs",
    "noise_ratio",
    "stage1_levers",
    "stage1_quality",
    "demo",
    "demo_robustness",
    "pretrained_quality",
    "sampling_start",
    "stage2_finetune",
    "stage2_levers",
    "shipped_sweeps",
    "sweep_workers",
    "training_size",
}
# Full-size measurements on the CPU (they build the paper's 1.3 B-parameter UNet: minutes and
# ~6 GB each): `make bench-all` runs them, `make bench` keeps their last result.
FULL_SIZE = {"memory_budget"}
HEADER = """# Benchmarks

Every figure below comes from a script in `bench/` on the machine named with it, with the exact
command under its table. `make bench` reruns the speed benchmarks (≤ 20 minutes on 2 cores) and
rebuilds this page; `make bench-all` also reruns the quality benchmarks that train whole models
({quality}) and the full-size CPU measurements ({full_size}), whose sections otherwise keep the
date of their last run. Numbers from different
machines are not comparable; ratios measured in one run are.
"""


def benchmarks(include_quality: bool = False) -> list[str]:
    """The benchmark modules ``bench/<name>.py`` to run (quality ones only when asked)."""
    names = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in SKIP)
    return [n for n in names if include_quality or n not in QUALITY | FULL_SIZE]


NO_GPU = """## GPU check at the paper's sizes (bench/gpu_check.py)

No GPU figures yet: no GPU was lent to the sessions that prepared `bench/gpu_check.py`. On one,
`make bench-gpu` (≤ 8 minutes) writes `bench/results/gpu_check.json` and this section.
"""


def render() -> str:
    def listed(names: set[str]) -> str:
        return ", ".join(f"`bench/{n}.py`" for n in sorted(names))

    parts = [
        HEADER.format(quality=listed(QUALITY), full_size=listed(FULL_SIZE)),
        SELECTION.read_text(),
    ]
    if not (RESULTS / "gpu_check.json").is_file():
        parts.append(NO_GPU)
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        parts.append(
            f"## {result['title']}\n\n"
            f"Command: `{result['command']}`  \nMachine: {result['machine']}  \n"
            f"Date: {result['date']}\n\n{result['table']}\n"
            + (f"\n{result['notes']}\n" if result.get("notes") else "")
        )
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only-docs", action="store_true", help="rebuild the page, run nothing")
    parser.add_argument("--all", action="store_true", help="include the quality benchmarks")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: the speed ones)")
    args = parser.parse_args()
    failed = []
    if not args.only_docs:
        total = time.perf_counter()
        for name in args.names or benchmarks(include_quality=args.all):
            start = time.perf_counter()
            print(f"== bench/{name}.py", flush=True)
            command = [sys.executable, "-m", f"bench.{name}", *QUICK_ARGS.get(name, [])]
            proc = subprocess.run(command, cwd=ROOT, check=False)
            print(
                f"== bench/{name}.py: exit {proc.returncode}, {time.perf_counter() - start:.0f} s"
            )
            if proc.returncode:
                failed.append(name)
        print(f"== all benchmarks: {time.perf_counter() - total:.0f} s")
    out = ROOT / "docs" / "benchmarks.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(render())
    tmp.replace(out)
    print(f"wrote {out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
