"""Both ``__init__`` files import explicitly, and the solver names they export are the registry's.

A solver module registers itself by existing (the package imports every
public module of ``kalmandiff.estimators``).  The built-in solvers are
written out in both ``__init__`` files; a new solver module is reachable
there by class name through the modules' ``__getattr__`` without editing
them, so adding a solver inside the package touches one file (tested here
with a planted module).
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


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchSolver"):
        kd.NoSuchSolver  # noqa: B018
    with pytest.raises(AttributeError, match="NoSuchSolver"):
        kd.estimators.NoSuchSolver  # noqa: B018


_PLANTED = """
from kalmandiff.estimators import BaseSolver, ForwardRequest, register_solver, solver_parameters


@register_solver("planted", derivative_free=True, rank=999)
@solver_parameters
class PlantedSolver(BaseSolver):
    \"\"\"A test's solver: the prior draws, after one forward evaluation.\"\"\"

    n_particles: int = 4

    def _planned_counts(self, problem, n_particles):
        return {"forward": n_particles, "denoiser": 0}

    def _iterate(self, ctx, state):
        X = self.prior.sample(int(self.n_particles), random_state=ctx.rng.numpy, like=ctx.like())
        yield ForwardRequest(X)
        return X
"""


def _fresh_kalmandiff():
    for name in [k for k in sys.modules if k == "kalmandiff" or k.startswith("kalmandiff.")]:
        del sys.modules[name]
    return importlib.import_module("kalmandiff")


def test_a_new_solver_module_is_one_file():
    """A solver file dropped into the package is registered, exported by name and on the command line."""
    planted = ROOT / "estimators" / "zz_planted_solver_for_test.py"
    planted.write_text(_PLANTED)
    saved = {k: v for k, v in sys.modules.items() if k == "kalmandiff" or k.startswith("kalmandiff.")}
    try:
        fresh = _fresh_kalmandiff()
        cls = fresh.estimators.available_solvers()["planted"]
        assert fresh.PlantedSolver is cls and fresh.estimators.PlantedSolver is cls
        assert "PlantedSolver" in fresh.estimators.SOLVER_CLASSES
        from kalmandiff.cli import _parser

        assert "planted" in _parser().format_help()
        inst = fresh.problems.make("linear-gaussian", random_state=0)
        solver = cls(inst.prior, random_state=0).fit(inst.y, inst.problem)
        assert solver.stats_["n_forward_evals"] == solver.expected_evaluations(inst.problem)["forward"] == 4
    finally:
        planted.unlink()
        for name in [k for k in sys.modules if k == "kalmandiff" or k.startswith("kalmandiff.")]:
            del sys.modules[name]
        sys.modules.update(saved)


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
