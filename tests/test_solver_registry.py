"""One registry lists the solvers; everything that enumerates solvers derives from it (issue 14, item 4)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff import cli
from kalmandiff.estimators import BaseSolver, available_solvers, derivative_free_solvers, registered_solvers
from kalmandiff.estimators._params import solver_parameters
from kalmandiff.estimators._registry import register_solver, unregister_solver

DOCS = Path(__file__).resolve().parents[1] / "docs"
API_PAGE = DOCS / "api.rst"


def _docs_extension():
    """docs/_ext/registered_solvers.py, the Sphinx extension that writes the API page's solver tables."""
    pytest.importorskip("sphinx")
    spec = importlib.util.spec_from_file_location(
        "registered_solvers", DOCS / "_ext" / "registered_solvers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_solver_is_public_listed_and_documented():
    page = API_PAGE.read_text()
    epilog = cli._parser().epilog
    for spec in registered_solvers():
        name = spec.cls.__name__
        assert getattr(kd, name) is spec.cls and name in kd.__all__
        assert getattr(kd.estimators, name) is spec.cls and name in kd.estimators.__all__
        assert spec.name in epilog
        assert name not in page, f"{name} is listed by hand in docs/api.rst; the registry lists it"
    assert list(available_solvers()) == [s.name for s in registered_solvers()]
    # The API page's solver tables come from the registry: one per kind, together every solver.
    assert ".. registered-solvers::\n   :derivative-free:" in page
    assert ".. registered-solvers::\n   :gradient-based:" in page
    ext = _docs_extension()
    documented = ext.solver_names(derivative_free=True) + ext.solver_names(derivative_free=False)
    assert sorted(documented) == sorted(f"kalmandiff.{s.cls.__name__}" for s in registered_solvers())
    assert ext.solver_names() == [f"kalmandiff.{s.cls.__name__}" for s in registered_solvers()]


def test_derivative_free_list_comes_from_the_registry():
    free = derivative_free_solvers()
    assert free == ("EnKGSolver", "EKISolver", "DPGSolver", "SCGSolver", "GSGSolver")
    assert set(available_solvers(derivative_free=False)) == {"dps", "diffpir", "rmp", "map"}
    from kalmandiff.estimators import diffpir

    assert diffpir.DERIVATIVE_FREE_SOLVERS == free


def test_every_solver_has_expected_evaluations_with_the_same_signature():
    for spec in registered_solvers():
        solver = spec.cls(None, **spec.quick)
        counts = solver.expected_evaluations(None, n_particles=3)
        assert set(counts) == {
            "n_denoiser_evals",
            "n_sequential_denoiser_evals",
            "n_forward_evals",
            "n_sequential_forward_evals",
            "n_forward_vjps",
            "n_denoiser_vjps",
        }
        double = solver.expected_evaluations(n_particles=6)
        assert double["n_forward_evals"] == 2 * counts["n_forward_evals"]
        assert double["n_sequential_forward_evals"] == counts["n_sequential_forward_evals"]


@solver_parameters
class _ToySolver(BaseSolver):
    """A derivative-free toy: the prior's samples, unchanged."""

    n_particles: int = 4
    verbose: bool = False

    def expected_evaluations(self, n_particles=None):
        return dict.fromkeys(("n_denoiser_evals", "n_forward_evals", "n_sequential_forward_evals"), 0)

    def _iterate(self, ctx, state):
        return ctx.xp.asarray(
            self.prior.sample(int(self.n_particles), random_state=ctx.rng.numpy, like=ctx.like())
        )
        yield  # pragma: no cover


@pytest.fixture
def toy():
    cls = register_solver("toy", derivative_free=True)(_ToySolver)
    yield cls
    unregister_solver("toy")


def test_a_registered_toy_solver_appears_everywhere(toy):
    assert available_solvers()["toy"] is toy
    assert "_ToySolver" in derivative_free_solvers()
    assert "toy" in cli._parser().epilog
    assert "kalmandiff._ToySolver" in _docs_extension().solver_names(derivative_free=True)
    prior = kd.priors.GaussianPrior(np.zeros(3), 1.0)
    forward = kd.problems.LinearProblem(np.eye(3), (3,), noise_std=0.1)
    with pytest.raises(ValueError, match="_ToySolver"):  # gradient-based solvers name it as an alternative
        kd.DiffPIRSolver(prior, data_step="gradient", n_steps=2).fit(
            np.zeros(3), lambda x: np.asarray(x), noise_std=0.1
        )
    est = toy(prior, random_state=0).fit(np.zeros(3), forward)
    assert est.particles_.shape == (4, 3)


def test_every_parameter_is_documented_with_the_shared_block():
    from kalmandiff.estimators._docstrings import SHARED_PARAMETERS

    first = SHARED_PARAMETERS.splitlines()[0]
    for spec in registered_solvers():
        doc = spec.cls.__doc__
        assert "%(" not in doc and first in doc, spec.name
        for name in spec.cls().get_params():
            assert name in doc, f"{spec.cls.__name__} does not document {name}"


def test_reference_settings_are_keyed_by_problem_name():
    """Family defaults are filed under registered problem names; aliases resolve in the problem registry."""
    assert kd.problems.lookup_keys("black-hole") == ("interferometry",)
    assert kd.problems.lookup_keys("super-resolution") == ("super-resolution", "images")
    for spec in registered_solvers():
        table = spec.cls._FAMILY_DEFAULTS
        assert set(table) <= set(kd.problems.available()) | {"images"}, spec.name
        if "interferometry" in table:
            assert spec.cls.defaults_for("black-hole") == spec.cls.defaults_for("interferometry")
    assert kd.EnKGSolver.defaults_for("deblur") == kd.EnKGSolver.defaults_for("images")
    assert not hasattr(kd.estimators.BaseSolver, "_FAMILY_ALIASES")


def test_no_behaviour_flags_remain():
    """What a solver needs follows from the step protocol (ask/tell, graphs, checkpointed tensors) or from
    the registry (gradients), not from flags on the class (issue 14)."""
    for flag in ("_supports_ask_tell", "_uses_denoiser", "_needs_graph", "_tensor_state"):
        assert not hasattr(BaseSolver, flag), flag
        for spec in registered_solvers():
            assert not hasattr(spec.cls, flag), (spec.name, flag)
