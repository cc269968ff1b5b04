"""A user's test file: a solver, a forward model and a prior checked with kalmandiff.testing.

Run with ``pytest test_my_solver.py``; the fixtures ``kd_problem`` and
``kd_posterior_case`` come from kalmandiff's pytest plugin (installed with
the package, nothing to configure).
"""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.problems import ForwardProblem
from kalmandiff.testing import (
    check_forward,
    check_prior,
    check_solver,
    parametrize_with_checks,
    posterior_scores,
)


# -- my solver settings: EnKG, small enough for a test ------------------------
def my_solver(prior):
    return kd.EnKGSolver(prior, n_particles=16, n_steps=10, update="kalman", random_state=0, verbose=False)


# Every contract check as its own test, named e.g. "my-enkg-check_same_seed_same_result".
@parametrize_with_checks({"my-enkg": my_solver}, cases=("gaussian", "mixture"))
def test_my_solver_contract(check):
    check()


# Or all at once: one AssertionError lists every failed check by name.
def test_my_solver_all_checks_at_once():
    report = check_solver(my_solver, select=["check_same_seed_same_result", "check_failure_resample"])
    assert report.passed == ["check_same_seed_same_result", "check_failure_resample"]


# -- the plugin's fixtures --------------------------------------------------------
@pytest.mark.parametrize("kd_posterior_case", ["gaussian", "grf"], indirect=True)
def test_my_solver_against_exact_posteriors(kd_posterior_case):
    case = kd_posterior_case
    solver = my_solver(case.prior).set_params(n_particles=256).fit(case.y, case.forward)
    err, prior_err, spread = posterior_scores(solver, case)
    assert err < prior_err  # the data help
    assert 0.5 < spread < 1.5  # a calibrated ensemble


@pytest.mark.parametrize("kd_problem", ["linear-gaussian", "navier-stokes"], indirect=True)
def test_my_solver_runs_on_registered_problems(kd_problem):
    prior = kd_problem.prior
    solver = my_solver(prior).fit(kd_problem.y, kd_problem.problem)
    assert np.all(np.isfinite(solver.reconstruct()))


# -- my forward model and my prior ------------------------------------------------
class Smoothing(ForwardProblem):
    """y = a moving average of x, observed at every other point (linear, with an adjoint)."""

    differentiable = True

    def __init__(self, n=8, noise_std=0.1):
        self.x_shape, self.y_shape, self.noise_std = (n,), (n // 2,), noise_std
        idx = np.arange(n)
        self.A = ((np.abs(idx[:, None] - idx[None, :]) <= 1) / 3.0)[::2]

    def forward(self, X):
        return X @ self._A(X).T

    def adjoint(self, Y):
        return Y @ self._A(Y)

    def _A(self, like):
        from array_api_compat import array_namespace

        xp = array_namespace(like)
        return xp.asarray(self.A, dtype=like.dtype, device=getattr(like, "device", None))


def test_my_forward_model():
    check_forward(Smoothing())  # shapes, batch = per-sample, adjointness, autograd


def test_my_prior():
    check_prior(kd.priors.GaussianPrior(np.zeros(8), 0.5))  # shape/dtype, D -> x as sigma -> 0, Tweedie
