"""The shape of the core, checked from its source: no import cycle (``importlib.import_module`` strings
included), no function longer than 80 lines, no import of a model library or of a built-in plugin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "paraisite_bench"
PACKAGE = "paraisite_bench"
MAX_FUNCTION_LINES = 80
#: What the core must never import: model libraries and the built-in plugins (they come through hooks).
FORBIDDEN = ("matgl", "crabnet", "paraisite_megnet", "paraisite_crabnet", "paraisite_ltc",
             "paraisite_matbench", "paraisite_strategies", "paraisite_report", "paraisite_executors",
             "paraisite_baselines")


def module_name(path: Path, root: Path = CORE, package: str = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every module ``module`` imports: import statements (relative ones resolved), and string literals
    passed to ``importlib.import_module``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[:len(base) - node.level + 1]
                prefix = ".".join(anchor + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.add(prefix)
            out |= {f"{prefix}.{alias.name}" for alias in node.names}  # `from . import report`
        elif (isinstance(node, ast.Call)
              and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            out.add(node.args[0].value)
    return out


def import_graph(root: Path = CORE, package: str = PACKAGE) -> dict[str, set[str]]:
    files = {module_name(p, root, package): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        names = imported_names(ast.parse(path.read_text()), name, path.name == "__init__.py")
        graph[name] = {n for n in names if n in files and n != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles_through_import_module_strings(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("import importlib\nx = 1\ndef f():\n    importlib.import_module('pkg.c')\n")
    (pkg / "c.py").write_text("from pkg import a\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.b"] == {"pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("import json\n")
    assert find_cycle(import_graph(pkg, "pkg")) is None


def test_no_import_cycle_in_the_core():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def long_functions(root: Path = CORE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_core_function_is_longer_than_80_lines():
    assert long_functions() == []


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_the_core_imports_no_model_library_and_no_builtin_plugin(path):
    names = imported_names(ast.parse(path.read_text()), module_name(path), path.name == "__init__.py")
    bad = sorted(n for n in names if n.split(".")[0] in FORBIDDEN)
    assert bad == [], f"{path.name} imports {bad}: built-ins reach the core only through hooks"
