"""What every benchmark records: the machine, the command, the figures as a markdown table.

A benchmark script calls :func:`write_result`; ``bench/run_all.py`` (``make bench``) runs every
script and rebuilds ``docs/benchmarks.md`` from ``bench/results/*.json``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from neurocine.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children) in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, title: str, table: str, data: dict, notes: str = "") -> Path:
    """Write ``bench/results/<name>.json`` (title, command, machine, date, table, notes, data)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "title": title,
        "command": "python -m bench."
        + name
        + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "table": table,
        "notes": notes,
        "data": data,
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    print(f"## {title}\n\n{table}\n\n{notes}")
    return path
