"""Imports point one way: no import circle in ``src/resilient`` and no production module
importing a testing module.

The graph is read from the source with :mod:`ast`, not from ``sys.modules``: every ``import``
and ``from ... import`` counts wherever it stands (module level, inside a function, under
``if TYPE_CHECKING:``), because a late import hides a circle without removing it. Relative
imports are resolved against the importing module. An edge from a module to one of its own
parent packages (``from .. import _sleeping`` names ``resilient`` too) is left out: a package's
``__init__`` re-exporting its children is how a package is built, not a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "resilient"

TESTING_MODULES = frozenset(
    {
        "resilient.testing",
        "resilient.testing._helpers",
        "resilient.testing.pytest_plugin",
        "resilient.saga.testing",
    }
)


def _module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package at ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(module: str, is_package: bool, tree: ast.AST) -> Iterator[str]:
    """Every dotted name ``tree`` imports, anywhere in the file, with relative imports
    resolved (a ``from X import Y`` yields ``X`` and ``X.Y``: Y may be a submodule)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            for alias in node.names:
                yield f"{target}.{alias.name}"


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (parent packages left out)."""
    modules = _module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = {
            target
            for target in _imported(name, is_package, tree)
            if target in modules and target != name and not name.startswith(target + ".")
        }
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm,
    iterative so a deep package cannot hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def production_imports_of_testing(
    graph: dict[str, set[str]], testing: frozenset[str] = TESTING_MODULES
) -> list[tuple[str, str]]:
    """(production module, testing module) for every production module importing one."""
    return sorted(
        (module, target)
        for module, targets in graph.items()
        if module not in testing
        for target in targets & testing
    )


def _describe(cycle: frozenset[str], graph: dict[str, set[str]]) -> str:
    edges = sorted(f"{a} -> {b}" for a in cycle for b in graph[a] & cycle)
    return "{" + ", ".join(sorted(cycle)) + "}: " + "; ".join(edges)


# -- the package -----------------------------------------------------------------------------------
def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(SRC)
    cycles = list(import_cycles(graph))
    assert not cycles, "import circles:\n" + "\n".join(_describe(c, graph) for c in cycles)


def test_no_production_module_imports_a_testing_module() -> None:
    graph = import_graph(SRC)
    assert production_imports_of_testing(graph) == []


def test_the_graph_covers_the_package() -> None:
    graph = import_graph(SRC)
    assert graph.keys() >= TESTING_MODULES
    # a few edges the package is known to have, one of each kind the reader must resolve
    assert "resilient.saga._saga" in graph["resilient.saga"]  # from ._saga import Saga
    assert "resilient._sleeping" in graph["resilient.saga._drivers"]  # from .. import _sleeping
    assert "resilient.saga._crash" in graph["resilient.saga.testing"]


# -- the checker itself --------------------------------------------------------------------------
def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return pkg


def test_a_circle_through_a_function_level_relative_import_is_found(tmp_path: Path) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "from .sub import a\n",
            "sub/__init__.py": "",
            "sub/a.py": "from . import b\n",
            "sub/b.py": "def late():\n    from ..sub.a import x\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\n",
            "d.py": "from .c import y\n",
            "e.py": "from . import sub\n",
        },
    )
    graph = import_graph(pkg)
    assert sorted(map(sorted, import_cycles(graph))) == [
        ["pkg.c", "pkg.d"],
        ["pkg.sub.a", "pkg.sub.b"],
    ]
    # "from . import b" also names the parent package pkg.sub: not an edge (pkg.sub's
    # __init__ may re-export its children without that being a circle)
    assert graph["pkg.sub.a"] == {"pkg.sub.b"}
    assert graph["pkg.e"] == {"pkg.sub"}


@pytest.mark.parametrize(
    "line",
    ["from .testing import Ledger", "import pkg.saga.testing", "from . import testing"],
)
def test_a_testing_import_is_found(tmp_path: Path, line: str) -> None:
    pkg = _write(
        tmp_path,
        {
            "__init__.py": "",
            "saga/__init__.py": "",
            "saga/testing.py": "",
            "saga/engine.py": f"def hook():\n    {line}\n",
        },
    )
    found = production_imports_of_testing(import_graph(pkg), frozenset({"pkg.saga.testing"}))
    assert found == [("pkg.saga.engine", "pkg.saga.testing")]
