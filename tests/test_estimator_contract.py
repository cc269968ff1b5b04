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

# Accuracy (check_posterior_accuracy[gaussian], check_answer_follows_y) on the case whose
# posterior lies far from the prior (kalmandiff.testing.accuracy_case): at most mean_tol = 0.5 times
# the prior mean's error.  Measured 2026-12-04 (ratio to the prior mean's error):
# EnKG, EKI, DiffPIR pass at their quick settings (8 particles, 6 steps / 20 iterations);
# SCG (0.67), RMP (8.1), DPG (1.4) and DiffPIR's gradient data step (0.52) miss it at 6 steps
# and pass at 30.  DPS (0.87-0.92) and GSG
# (0.84-0.93) miss it even at 30 steps and 32 particles: they hardly move towards data that are
# surprising under the prior, so their accuracy on this case is left out here (not loosened), and
# only that the answer follows y is checked, at 30 steps (GSG with 32 particles).
_MORE_STEPS = {k: {"n_steps": 30} for k in ("SCG", "RMP", "DPG", "DiffPIR-gradient")}
_WEAK = {"DPS": {"n_steps": 30}, "GSG": {"n_steps": 30, "n_particles": 32}}
_DEFAULT = [k for k in FACTORIES if k not in {**_MORE_STEPS, **_WEAK}]


@parametrize_with_checks({k: FACTORIES[k] for k in _DEFAULT})
def test_registered_solver_contract(check):
    check()


@pytest.mark.parametrize("name", list(_MORE_STEPS))
def test_registered_solver_accuracy_with_more_steps(name):
    from kalmandiff.testing import check_solver

    check_solver(FACTORIES[name], accuracy_params=_MORE_STEPS[name])


@pytest.mark.parametrize("name", list(_WEAK))
def test_registered_solver_contract_weak_on_surprising_data(name):
    from kalmandiff.testing import check_solver

    check_solver(FACTORIES[name], accuracy_params=_WEAK[name], exclude=["check_posterior_accuracy[gaussian]"])


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
