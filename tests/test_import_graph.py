"""The package's import graph has no cycle, and no estimator module outgrows one idea.

The graph is read from the source with :mod:`ast`, not by importing: every
``import kalmandiff...`` and ``from ... import ...`` counts, at module level
and inside functions alike, because an import hidden in a function is still
a dependency (it only moves the circle from import time to call time).  A
parent package that Python initialises on the way to a submodule is not an
edge: only what a statement names is.

:func:`test_a_planted_cycle_is_found` shows the check fails on a circle: it
plants one (two throw-away modules importing each other, one of them inside
a function) and asserts :func:`find_cycle` reports it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kalmandiff

PACKAGE_ROOT = Path(kalmandiff.__file__).resolve().parent

#: files another branch is shrinking below the limit (removed from this list at their merge)
MAX_ESTIMATOR_LINES = 400


def module_names(root: Path, package: str) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``root`` (a package's ``__init__`` is the package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def _base_package(module: str, path: Path, level: int) -> str:
    """The package a relative import of ``level`` dots in ``module`` starts from."""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]  # a plain module's own package
    return ".".join(parts[: len(parts) - (level - 1)] if level > 1 else parts)


def imports_of(module: str, path: Path, modules: dict[str, Path], package: str) -> set[str]:
    """The modules of ``package`` that ``module`` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _base_package(module, path, node.level)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != package:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # ``from pkg import submodule`` depends on the submodule, ``from pkg import name`` on pkg
                found.add(sub if sub in modules else target)
    return {name for name in found if name in modules and name != module}


def import_graph(root: Path = PACKAGE_ROOT, package: str = "kalmandiff") -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every module of the package under ``root``."""
    modules = module_names(root, package)
    return {name: imports_of(name, path, modules, package) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and graph["kalmandiff.estimators._base"], "the graph was not read"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_planted_cycle_is_found(tmp_path):
    pkg = tmp_path / "toypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .sub import b\n\ndef f():\n    return b.g()\n")
    (pkg / "sub" / "__init__.py").write_text("")
    # the circle closes inside a function, where an import-time check would not see it
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..a import f\n    return f\n")
    graph = import_graph(pkg, "toypkg")
    assert graph["toypkg.a"] == {"toypkg.sub.b"} and graph["toypkg.sub.b"] == {"toypkg.a"}
    assert find_cycle(graph) == ["toypkg.a", "toypkg.sub.b", "toypkg.a"]
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1\n")
    assert find_cycle(import_graph(pkg, "toypkg")) is None


def _estimator_files():
    return sorted((PACKAGE_ROOT / "estimators").glob("*.py"))


@pytest.mark.parametrize("path", _estimator_files(), ids=lambda p: p.name)
def test_no_estimator_module_is_over_the_line_limit(path):
    n_lines = len(path.read_text().splitlines())
    assert n_lines <= MAX_ESTIMATOR_LINES, f"{path.name} has {n_lines} lines"
