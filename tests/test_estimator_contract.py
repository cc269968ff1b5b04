"""The solver contract for every registered solver, through kalmandiff.testing's named checks.

The checks themselves (scikit-learn's API checks, store-only ``__init__``,
same seed same result, bad input refused before any evaluation, the
``stats_`` / ``history_`` schema, checkpoint/resume, ask/tell, failure
policies, accuracy against an exact posterior) live in
:mod:`kalmandiff.testing`, so that users' solvers are held to the same
contract; this file applies them over the registry and adds the project's
own wording of errors.
"""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators import NotFittedError, registered_solvers
from kalmandiff.testing import gaussian_case, parametrize_with_checks, solver_factory

FACTORIES = {
    spec.cls.__name__.removesuffix("Solver"): solver_factory(spec.name) for spec in registered_solvers()
}
# DiffPIR's gradient data step has its own loop (and its own checkpoints).
FACTORIES["DiffPIR-gradient"] = solver_factory("diffpir", data_step="gradient")

# Accuracy at the quick settings (8 particles, few steps) on the 4-dimensional Gaussian case: at
# most mean_tol times the prior mean's error.  GSG's quick settings just miss 1.0 (1.1x).  DPG at
# 8 particles is far off this case (error 33x the prior mean's at its six quick steps, still 3x at
# 50 steps; spread 15-145x the exact one), so its accuracy is left to the posterior-accuracy tests
# and benchmarks; the rest of its contract is checked here.
_DEFAULT = [k for k in FACTORIES if k not in ("GSG", "DPG")]


@parametrize_with_checks({k: FACTORIES[k] for k in _DEFAULT})
def test_registered_solver_contract(check):
    check()


@parametrize_with_checks({"GSG": FACTORIES["GSG"]}, mean_tol=1.5)
def test_registered_solver_contract_gsg(check):
    check()


@parametrize_with_checks({"DPG": FACTORIES["DPG"]}, cases=())
def test_registered_solver_contract_dpg(check):
    check()


# -- the project's own wording, beyond the generic contract ----------------

CASE = gaussian_case(3, 2, 0.1, seed=0)
SOLVERS = [pytest.param(FACTORIES[k], id=k) for k in FACTORIES if k != "DiffPIR-gradient"]


def test_not_fitted_error_is_both_value_and_attribute_error():
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


@pytest.mark.parametrize("make", SOLVERS)
def test_html_repr(make):
    assert "<" in make(CASE.prior)._repr_html_()


@pytest.mark.parametrize("make", SOLVERS)
def test_gradient_solvers_name_the_derivative_free_alternatives(make):
    est = make(CASE.prior)
    name = type(est).__name__
    if name in kd.estimators.derivative_free_solvers():
        return
    with pytest.raises(
        ValueError, match=f"{name} differentiates the forward model.*not differentiable.*EnKGSolver"
    ):
        make(CASE.prior).fit(CASE.y, lambda X: np.asarray(X) @ CASE.A.T, noise_std=0.1)


def test_the_stats_keys_are_what_accounting_reports():
    from kalmandiff.estimators import STATS_KEYS
    from kalmandiff.estimators._evaluation import Accounting

    assert tuple(Accounting().as_dict()) == STATS_KEYS
