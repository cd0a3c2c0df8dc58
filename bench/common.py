"""What every benchmark records: the machine, the command, the figures as a markdown table.

A benchmark script calls :func:`write_result`; ``bench/run_all.py`` (``make bench``) runs every
script and rebuilds ``docs/benchmarks.md`` from ``bench/results/*.json``.
"""

from __future__ import annotations

import json
import re
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def command_line(name: str, argv: list[str] | None = None) -> str:
    """The command that ran: ``python -m`` the running module (``bench.<name>`` when unknown)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    module = spec.name if spec is not None and spec.name.startswith("bench.") else f"bench.{name}"
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", module, *args])


def path_options(command: str) -> dict[str, str]:
    """Absolute paths given to the command's ``--option`` s, each with a placeholder ``OPTION``.

    An absolute path after ``--workdir`` (or ``--workdir=``) maps to ``WORKDIR``, after
    ``--demo-dir`` to ``DEMO_DIR`` (a usage line's names: markdown would hide ``<workdir>``); a
    path inside the working folder is left to :func:`portable`, which makes it relative.
    """
    words = shlex.split(command)
    pairs = [tuple(w.split("=", 1)) for w in words if w.startswith("--") and "=" in w]
    pairs += [(a, b) for a, b in zip(words, words[1:], strict=False) if a.startswith("--")]
    return {
        value.rstrip("/"): option[2:].upper().replace("-", "_")
        for option, value in pairs
        if value.startswith("/") and not _inside_cwd(value)
    }


def _inside_cwd(path: str) -> bool:
    return Path(path).resolve().is_relative_to(Path.cwd().resolve())


def portable(value: Any, places: Mapping[str | Path, str] | None = None) -> Any:
    """``value`` (a string, or lists and dicts of them) without this machine's absolute paths.

    In order: each folder of ``places`` becomes its placeholder (a ``{folder: "WORKDIR"}`` map),
    the working folder becomes relative paths (``.`` alone), the temporary folder ``$TMPDIR`` and
    the home folder ``~``. Results and docs are read on other machines, where these folders mean
    nothing.
    """
    if isinstance(value, str):
        return _replace_paths(value, places or {})
    if isinstance(value, Mapping):
        return {key: portable(item, places) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable(item, places) for item in value]
    return value


def _replace_paths(text: str, places: Mapping[str | Path, str]) -> str:
    cwd = [str(Path.cwd()), str(Path.cwd().resolve())]
    temp = [tempfile.gettempdir(), str(Path(tempfile.gettempdir()).resolve())]
    home = [str(Path.home())]
    rules = [(str(folder), name) for folder, name in places.items()]
    rules += [(f, ".") for f in cwd] + [(f, "$TMPDIR") for f in temp] + [(f, "~") for f in home]
    for folder, name in sorted(set(rules), key=lambda rule: -len(rule[0])):
        folder = folder.rstrip("/")
        if not folder:
            continue
        end = r"(?![\w-]|\.\w)"  # the whole folder name, not a prefix of a longer one
        if name == ".":  # inside the working folder: relative
            text = re.sub(re.escape(folder) + "/", "", text)
        text = re.sub(re.escape(folder) + end, lambda _, name=name: name, text)
    return text


def write_result(name: str, title: str, table: str, data: dict, notes: str = "",
                 places: Mapping[str | Path, str] | None = None) -> Path:  # fmt: skip
    """Write ``bench/results/<name>.json`` (title, command, machine, date, table, notes, data).

    Absolute paths go through :func:`portable`: those given to the command's options become
    their placeholders (``--workdir WORKDIR``), and so does each folder of ``places``.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = command_line(name)
    places = {**path_options(command), **{str(k): v for k, v in (places or {}).items()}}
    result = {
        "title": title,
        "command": command,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "table": table,
        "notes": notes,
        "data": data,
    }
    result = portable(result, places)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    print(f"## {result['title']}\n\n{result['table']}\n\n{result['notes']}")
    return path
