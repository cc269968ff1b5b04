"""Ask/tell: the user evaluates G; the particles are exactly those of fit()."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.testing import gaussian_case, parametrize_with_checks, solver_factory

CASE = gaussian_case(5, 3, 0.2, seed=2)


def forward(X):
    return X @ CASE["A"].T


SOLVERS = {
    "enkg-paper": lambda: kd.EnKGSolver(
        CASE["prior"], n_particles=10, n_steps=12, random_state=1, verbose=False
    ),
    "enkg-kalman": lambda: kd.EnKGSolver(
        CASE["prior"], n_particles=10, n_steps=12, update="kalman", random_state=1, verbose=False
    ),
    "eki": lambda: kd.EKISolver(CASE["prior"], n_particles=10, random_state=1, verbose=False),
}


# ask/tell gives fit's particles: kalmandiff.testing's check, for these settings too
# (every registered solver runs it in test_estimator_contract.py).
@parametrize_with_checks(
    {
        "enkg-paper": solver_factory("enkg", n_particles=10, n_steps=12, random_state=1),
        "enkg-kalman": solver_factory("enkg", n_particles=10, n_steps=12, update="kalman", random_state=1),
        "eki": solver_factory("eki", n_particles=10, max_iter=500, random_state=1),
    },
    select=["check_ask_tell"],
)
def test_ask_tell_reproduces_fit(check):
    check()


def test_ask_tell_with_a_plain_noise_std_reproduces_fit():
    fitted = SOLVERS["eki"]().fit(CASE["y"], forward, noise_std=0.2)
    solver = SOLVERS["eki"]().start(CASE["y"], noise_std=0.2)
    while (X := solver.ask()) is not None:
        solver.tell(X @ CASE["A"].T)  # e.g. results read back from files of a SLURM array
    np.testing.assert_array_equal(solver.particles_, fitted.particles_)
    np.testing.assert_array_equal(solver.reconstruct(), fitted.reconstruct())


def test_ask_tell_with_a_problem_and_failed_members():
    problem = kd.problems.LinearProblem(CASE["A"], (5,), noise_std=0.2)
    solver = kd.EnKGSolver(
        CASE["prior"], n_particles=10, n_steps=12, random_state=1, verbose=False, on_failure="resample"
    ).start(CASE["y"], problem)
    first = True
    while (X := solver.ask()) is not None:
        G = problem(X)
        if first:
            G[2] = np.nan  # member 2's simulation crashed
            first = False
        solver.tell(G)
    assert solver.stats_["n_failed"] == 1 and np.all(np.isfinite(solver.particles_))


def test_tell_checks_the_shape_and_order_of_calls():
    solver = SOLVERS["eki"]()
    with pytest.raises(kd.NotFittedError):
        solver.ask()
    solver.start(CASE["y"], noise_std=0.2)
    X = solver.ask()
    with pytest.raises(ValueError, match="shape"):
        solver.tell(np.zeros((X.shape[0], 4)))
    solver2 = SOLVERS["eki"]()
    with pytest.raises(RuntimeError, match="start"):
        solver2.tell(np.zeros((10, 3)))
