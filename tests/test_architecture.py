"""Layering of the package (docs/design.md §11), checked on the source with ``ast``.

Every ``import`` / ``from … import`` that targets ``neurocine``, at any depth (function-local
imports included, relative imports resolved), is an edge of the module graph.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import neurocine

SRC = Path(neurocine.__file__).parent
RUNNERS = ("training", "sweep", "evaluation", "reconstruct", "demo")


def _modules(root: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """``{dotted name: (file, is_package)}`` of every module under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _owner(name: str, modules: dict) -> str | None:
    """The module that defines ``name`` (itself, or the nearest enclosing package/module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path, is_package: bool, modules: dict):
    """``(target module, imported name or None, line)`` of each neurocine import in a file."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "neurocine":
                    yield _owner(alias.name, modules), None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "neurocine":
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                target = full if full in modules else _owner(source, modules)
                yield target, (None if full in modules else alias.name), node.lineno


def import_graph(root: Path = SRC) -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` over all neurocine modules."""
    modules = _modules(root)
    graph = {}
    for module, (path, is_package) in modules.items():
        edges: dict[str, int] = {}
        for target, _, line in _imports(module, path, is_package, modules):
            if target is not None and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle ``[a, b, …, a]`` of the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, {}))))
    return None


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return (
        " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:], strict=False))
        + f" -> {cycle[-1]}"
    )


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "neurocine.evaluation" in graph["neurocine.sweep"]
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {_describe(cycle, graph)}"


def test_the_cycle_finder_sees_function_local_and_relative_imports(tmp_path):
    pkg = tmp_path / "neurocine"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from neurocine.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .c import g\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from ..a import x\n")
    graph = import_graph(pkg)
    assert graph["neurocine.sub.b"] == {"neurocine.sub.c": 2}
    cycle = find_cycle(graph)
    assert cycle is not None and set(cycle) == {"neurocine.a", "neurocine.sub.b", "neurocine.sub.c"}
    assert "line 2" in _describe(cycle, graph)
    (pkg / "sub" / "c.py").write_text("import neurocine.sub\n")
    assert find_cycle(import_graph(pkg)) is None


def _reachable(graph: dict[str, dict[str, int]], start: str) -> dict[str, str]:
    """``{module reachable from start: the module that imports it}``."""
    seen, todo = {start: start}, [start]
    while todo:
        current = todo.pop()
        for nxt in graph.get(current, {}):
            if nxt not in seen:
                seen[nxt] = current
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("runner", RUNNERS)
def test_analysis_imports_no_runner(runner):
    graph = import_graph()
    assert any(m.startswith("neurocine.analysis.") for m in graph)
    prefix = f"neurocine.{runner}"
    for module in (m for m in graph if m.split(".")[:2] == ["neurocine", "analysis"]):
        for target, line in graph[module].items():
            assert not (target == prefix or target.startswith(prefix + ".")), (
                f"{module} (line {line}) imports the runner {target}"
            )


def test_layers_data_models_metrics_know_nothing_of_training_or_the_cli():
    graph = import_graph()
    for module, edges in graph.items():
        layer = module.split(".")[1] if "." in module else ""
        for target in edges:
            if layer in ("data", "models", "metrics"):
                assert not target.startswith("neurocine.lit"), (module, target)
            if layer != "cli" and module != "neurocine.__main__":
                assert not target.startswith("neurocine.cli"), (module, target)


def test_models_never_import_lightning():
    for path in (SRC / "models").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in ("lightning", "pytorch_lightning"), (path, name)


def test_no_private_name_is_imported_across_modules():
    modules = _modules()
    found = []
    for module, (path, is_package) in modules.items():
        for target, name, line in _imports(module, path, is_package, modules):
            private = name is not None and name.startswith("_") and not name.startswith("__")
            if private and target != module:
                found.append(f"{module} (line {line}): from {target} import {name}")
    assert not found, "private names imported across modules:\n" + "\n".join(found)


# The command line imports its sub-commands' modules on demand so that `neurocine --help` and
# `neurocine pretrain --help` stay fast; everywhere else a neurocine import sits at the top.
def _lazy_importer(module: str) -> bool:
    return module.startswith("neurocine.cli") or module == "neurocine.pretrain"


def _local_neurocine_imports(path: Path) -> list[int]:
    """Lines of neurocine imports (absolute or relative) inside functions of a file."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom):
                if inner.level or (inner.module or "").split(".")[0] == "neurocine":
                    lines.append(inner.lineno)
            elif isinstance(inner, ast.Import):
                if any(a.name.split(".")[0] == "neurocine" for a in inner.names):
                    lines.append(inner.lineno)
    return lines


def test_function_local_neurocine_imports_only_in_the_lazy_command_line():
    found = [
        f"{module} line {line}"
        for module, (path, _) in _modules().items()
        if not _lazy_importer(module)
        for line in _local_neurocine_imports(path)
    ]
    assert not found, "neurocine imported inside a function:\n" + "\n".join(sorted(set(found)))


def test_the_local_import_finder_sees_absolute_and_relative_imports(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\n\ndef f():\n    import neurocine.fileio\n    from . import x\n"
                    "    from os import path\n")  # fmt: skip
    assert _local_neurocine_imports(path) == [4, 5]
