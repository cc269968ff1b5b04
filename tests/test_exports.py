"""Both ``__init__`` files import explicitly, and the solver names they export are the registry's.

A solver module registers itself by existing (the package imports every
public module of ``kalmandiff.estimators``); its class name must also be
written out in both ``__init__`` files.  A registered solver left out, or
an exported name that is not registered, fails here.
"""

import ast
import importlib
import sys
from pathlib import Path

import pytest

import kalmandiff as kd
from kalmandiff.estimators import BaseSolver, registered_solvers

ROOT = Path(kd.__file__).resolve().parent
INITS = (ROOT / "__init__.py", ROOT / "estimators" / "__init__.py")


def _exported_solver_classes(module) -> set[str]:
    return {
        name
        for name in module.__all__
        if isinstance(getattr(module, name), type) and issubclass(getattr(module, name), BaseSolver)
    } - {"BaseSolver"}


def test_exported_solvers_are_exactly_the_registered_ones():
    registered = {spec.cls.__name__ for spec in registered_solvers()}
    assert _exported_solver_classes(kd) == registered
    assert _exported_solver_classes(kd.estimators) == registered
    assert set(kd.estimators.SOLVER_CLASSES) == registered


@pytest.mark.parametrize("path", INITS, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_init_files_import_explicitly_and_never_swallow_an_import_error(path):
    tree = ast.parse(path.read_text())
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "globals" not in calls, "export names by importing them, not through globals().update"
    handlers = [h for n in ast.walk(tree) if isinstance(n, ast.Try) for h in n.handlers]
    assert not handlers, "an __init__ must let a failed import fail"
    star = [
        n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)
    ]
    assert not star


def test_a_solver_module_that_fails_to_import_fails_the_package(tmp_path, monkeypatch):
    """A public module of kalmandiff.estimators whose import raises makes the package import raise."""
    broken = ROOT / "estimators" / "zz_broken_for_test.py"
    broken.write_text("raise ImportError('a dependency this solver needs is missing')\n")
    saved = {k: v for k, v in sys.modules.items() if k == "kalmandiff" or k.startswith("kalmandiff.")}
    try:
        for name in saved:
            del sys.modules[name]
        with pytest.raises(ImportError, match="dependency this solver needs"):
            importlib.import_module("kalmandiff")
    finally:
        broken.unlink()
        for name in [k for k in sys.modules if k == "kalmandiff" or k.startswith("kalmandiff.")]:
            del sys.modules[name]
        sys.modules.update(saved)
