"""Every registered solver, at its defaults, is closer to the exact posterior mean than the prior mean is.

The property (DESIGN.md, "The algorithms"): on linear-Gaussian problems of any shape and scale,
``||x_hat - mu_post|| < ||mu_prior - mu_post||``, ``mu_post`` the closed-form posterior mean
(``GaussianPrior.posterior``).  The problems are :func:`kalmandiff.testing.random_linear_gaussian_case`
with seeds 0-29, none chosen by hand: ``d`` 4-256, ``m`` 1-d, noise 1e-3 to 1 of the signal, scales
1e-3 to 1e3, half of the maps ill-conditioned (up to 1e6); problem, truth (a prior draw), noise and
solver on independent streams.  Measured tables: docs/benchmarks.md, "Defaults against the prior mean".

Budgets: every solver runs at its class defaults except where ``BUDGETS`` says otherwise, and
only for CI time: DPG, GSG and SCG evaluate the forward model on 5000 / 1024 / 512 points at each of
their 1000 steps (5 million forward evaluations for DPG on one sample); here they take 200 steps and
64 points per step, and DPS 200 steps, every other setting (the "auto" guidance, ``data_scale``,
``n_particles=1``) at its default.  Known failures are marked ``xfail(strict=True)`` per case with the measured reason, so
a fix shows up as an unexpected pass.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators import registered_solvers
from kalmandiff.testing import random_linear_gaussian_case

N_CASES = 30

#: reduced budgets (CI time only; see the module docstring): solver name -> parameters
BUDGETS = {
    "DPGSolver": dict(n_steps=200, n_queries=64),
    "GSGSolver": dict(n_steps=200, n_queries=64),
    "SCGSolver": dict(n_steps=200, n_queries=64),
    "DPSSolver": dict(n_steps=200),
}

#: every registered solver, by class name (the registry is the one list of solvers)
SOLVERS = [spec.cls.__name__ for spec in registered_solvers()]

#: Measured failures at the defaults (docs/benchmarks.md), each a strict xfail: (solver, case,
#: measured error / prior-mean error, probability that the mean of n_particles exact posterior samples
#: beats the prior mean there).  ``python -m benchmarks defaults --known-failures`` regenerates
#: it from the result files in benchmarks/results/defaults/ after a change to a solver's defaults.
#: The guided samplers return one posterior sample, about sqrt(tr Sigma_post) from the posterior mean:
#: more than the prior mean is wherever the data explain less than half of the prior variance, which
#: is most of these problems (m << d, or weak data); hence p = 0.00 for most of their rows.
KNOWN_FAILURES: list[tuple[str, int, float, float]] = [
    ("EKISolver", 20, 11.788, 0.00),
    ("DiffPIRSolver", 2, 1.268, 0.00),
    ("DiffPIRSolver", 4, 1.104, 0.06),
    ("DiffPIRSolver", 7, 1.810, 0.00),
    ("DiffPIRSolver", 12, 1.733, 0.00),
    ("DiffPIRSolver", 13, 1.065, 0.00),
    ("DiffPIRSolver", 15, 1.266, 0.57),
    ("DiffPIRSolver", 17, 1.695, 0.08),
    ("DiffPIRSolver", 20, 59.370, 0.00),
    ("DiffPIRSolver", 22, 2.656, 0.00),
    ("DiffPIRSolver", 29, 2.929, 0.00),
    ("RMPSolver", 0, 8.845, 1.00),
    ("RMPSolver", 2, 60.990, 0.00),
    ("RMPSolver", 9, 2.295, 1.00),
    ("RMPSolver", 11, 52.080, 1.00),
    ("RMPSolver", 13, 1.314, 0.00),
    ("RMPSolver", 17, 1.968, 0.00),
    ("RMPSolver", 20, 78.205, 0.00),
    ("DPSSolver", 2, 3.645, 0.00),
    ("DPSSolver", 3, 1.269, 0.55),
    ("DPSSolver", 4, 2.397, 0.00),
    ("DPSSolver", 5, 1.924, 0.01),
    ("DPSSolver", 7, 5.103, 0.00),
    ("DPSSolver", 10, 2.748, 0.22),
    ("DPSSolver", 12, 5.749, 0.00),
    ("DPSSolver", 13, 3.177, 0.00),
    ("DPSSolver", 14, 2.939, 0.00),
    ("DPSSolver", 15, 1.965, 0.01),
    ("DPSSolver", 16, 1.018, 0.86),
    ("DPSSolver", 17, 2.700, 0.00),
    ("DPSSolver", 18, 2.605, 0.00),
    ("DPSSolver", 19, 1.635, 0.16),
    ("DPSSolver", 20, 178.061, 0.00),
    ("DPSSolver", 21, 1.688, 0.00),
    ("DPSSolver", 22, 10.025, 0.00),
    ("DPSSolver", 23, 2.061, 0.00),
    ("DPSSolver", 24, 1.541, 0.00),
    ("DPSSolver", 27, 2.131, 0.00),
    ("DPSSolver", 28, 2.366, 0.00),
    ("DPSSolver", 29, 15.164, 0.00),
    ("SCGSolver", 2, 3.925, 0.00),
    ("SCGSolver", 4, 2.197, 0.00),
    ("SCGSolver", 5, 2.797, 0.01),
    ("SCGSolver", 7, 5.076, 0.00),
    ("SCGSolver", 10, 11.724, 0.22),
    ("SCGSolver", 12, 9.647, 0.00),
    ("SCGSolver", 13, 2.846, 0.00),
    ("SCGSolver", 14, 5.729, 0.00),
    ("SCGSolver", 15, 1.786, 0.01),
    ("SCGSolver", 17, 4.966, 0.00),
    ("SCGSolver", 18, 2.709, 0.00),
    ("SCGSolver", 19, 1.898, 0.16),
    ("SCGSolver", 20, 156.778, 0.00),
    ("SCGSolver", 21, 4.584, 0.00),
    ("SCGSolver", 22, 10.687, 0.00),
    ("SCGSolver", 23, 2.809, 0.00),
    ("SCGSolver", 24, 1.563, 0.00),
    ("SCGSolver", 25, 1.359, 0.61),
    ("SCGSolver", 27, 1.848, 0.00),
    ("SCGSolver", 28, 1.099, 0.00),
    ("SCGSolver", 29, 15.384, 0.00),
    ("GSGSolver", 2, 3.384, 0.00),
    ("GSGSolver", 4, 3.149, 0.00),
    ("GSGSolver", 5, 1.616, 0.01),
    ("GSGSolver", 7, 5.559, 0.00),
    ("GSGSolver", 10, 2.696, 0.22),
    ("GSGSolver", 12, 8.238, 0.00),
    ("GSGSolver", 13, 3.005, 0.00),
    ("GSGSolver", 14, 2.226, 0.00),
    ("GSGSolver", 15, 2.174, 0.01),
    ("GSGSolver", 16, 1.041, 0.86),
    ("GSGSolver", 17, 2.444, 0.00),
    ("GSGSolver", 18, 2.694, 0.00),
    ("GSGSolver", 19, 1.121, 0.16),
    ("GSGSolver", 20, 199.856, 0.00),
    ("GSGSolver", 21, 4.863, 0.00),
    ("GSGSolver", 22, 11.485, 0.00),
    ("GSGSolver", 23, 1.836, 0.00),
    ("GSGSolver", 24, 1.736, 0.00),
    ("GSGSolver", 25, 1.308, 0.61),
    ("GSGSolver", 27, 1.975, 0.00),
    ("GSGSolver", 28, 1.845, 0.00),
    ("GSGSolver", 29, 14.227, 0.00),
    ("DPGSolver", 2, 3.036, 0.00),
    ("DPGSolver", 3, 1.489, 0.55),
    ("DPGSolver", 4, 3.533, 0.00),
    ("DPGSolver", 5, 2.251, 0.01),
    ("DPGSolver", 7, 5.533, 0.00),
    ("DPGSolver", 10, 2.118, 0.22),
    ("DPGSolver", 12, 9.501, 0.00),
    ("DPGSolver", 13, 3.433, 0.00),
    ("DPGSolver", 14, 3.215, 0.00),
    ("DPGSolver", 15, 3.031, 0.01),
    ("DPGSolver", 17, 2.435, 0.00),
    ("DPGSolver", 18, 3.730, 0.00),
    ("DPGSolver", 19, 1.749, 0.16),
    ("DPGSolver", 20, 210.541, 0.00),
    ("DPGSolver", 21, 7.631, 0.00),
    ("DPGSolver", 22, 13.787, 0.00),
    ("DPGSolver", 23, 2.331, 0.00),
    ("DPGSolver", 24, 1.518, 0.00),
    ("DPGSolver", 25, 1.359, 0.61),
    ("DPGSolver", 27, 2.033, 0.00),
    ("DPGSolver", 28, 2.344, 0.00),
    ("DPGSolver", 29, 25.868, 0.00),
]


_FAILURE_REASONS = {
    (name, seed): f"measured {ratio} x the prior mean's error at the defaults; the mean of as many exact "
    f"posterior samples as the solver's n_particles beats the prior mean here with probability {p:.2f}"
    for name, seed, ratio, p in KNOWN_FAILURES
}


def error_ratio(x_hat, case) -> float:
    """``||x_hat - mu_post|| / ||mu_prior - mu_post||``: below 1 beats the prior mean."""
    x_hat = np.asarray(x_hat, dtype=float).reshape(-1)
    return float(np.linalg.norm(x_hat - case.mean) / np.linalg.norm(case.prior_mean - case.mean))


def fitted_ratio(name: str, case, seed: int) -> float:
    solver = getattr(kd, name)(case.prior, random_state=seed, verbose=False, **BUDGETS.get(name, {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kd.CostWarning)  # the guided defaults plan millions of evaluations
        solver.fit(case.y, case.forward)
    return error_ratio(solver.reconstruct(), case)


def _params():
    for name in SOLVERS:
        for seed in range(N_CASES):
            marks = [pytest.mark.slow] if name in BUDGETS or name == "RMPSolver" else []
            reason = _FAILURE_REASONS.get((name, seed))
            if reason is not None:
                marks.append(pytest.mark.xfail(strict=True, reason=reason))
            yield pytest.param(name, seed, marks=marks, id=f"{name}-case{seed}")


@pytest.fixture(scope="module")
def cases():
    return {}


def _case(cache, seed):
    if seed not in cache:
        cache[seed] = random_linear_gaussian_case(seed)
    return cache[seed]


@pytest.mark.parametrize("name, seed", list(_params()))
def test_defaults_beat_the_prior_mean(name, seed, cases):
    case = _case(cases, seed)
    ratio = fitted_ratio(name, case, seed)
    assert ratio < 1.0, (name, case.info, ratio)


def test_the_problems_span_the_advertised_ranges(cases):
    info = [_case(cases, s).info for s in range(N_CASES)]
    d = [i["d"] for i in info]
    assert min(d) <= 8 and max(d) >= 128 and all(4 <= v <= 256 for v in d)
    assert any(i["m"] == 1 for i in info) and any(i["m"] == i["d"] for i in info)
    assert all(1 <= i["m"] <= i["d"] for i in info)
    scales = [i["scale"] for i in info]
    assert min(scales) < 1e-2 and max(scales) > 1e2
    ratios = [i["noise_ratio"] for i in info]
    assert min(ratios) < 3e-3 and max(ratios) > 0.3
    assert sum(i["condition"] == 1.0 for i in info) >= 5 and max(i["condition"] for i in info) > 1e5


def test_each_problem_is_exactly_conditioned(cases):
    # The case's posterior mean (GaussianPrior.posterior) against textbook conditioning by hand.
    for seed in (0, 9, 27):
        case = _case(cases, seed)
        A, y, R = case.A, case.y, case.noise_std**2 * np.eye(case.A.shape[0])
        S, mu = np.asarray(case.prior.cov), case.prior_mean
        mean = mu + S @ A.T @ np.linalg.solve(A @ S @ A.T + R, y - A @ mu)
        np.testing.assert_allclose(case.mean, mean, rtol=1e-6, atol=1e-9 * np.abs(mean).max())


class IgnoresTheData:
    """Purpose-built wrong solvers: fit ignores ``y``.

    ``"prior mean"`` returns the prior mean; ``"prior draws"`` the mean of ``n`` prior samples
    (what an ensemble method that never assimilates would return).
    """

    def __init__(self, prior, kind: str, n: int = 256, seed: int = 0):
        self.prior, self.kind, self.n, self.seed = prior, kind, n, seed

    def fit(self, y, forward):
        if self.kind == "prior mean":
            self.x_ = np.asarray(self.prior.mean)
        else:
            self.x_ = np.asarray(self.prior.sample(self.n, random_state=self.seed)).mean(0)
        return self

    def reconstruct(self):
        return self.x_


@pytest.mark.parametrize("kind", ["prior mean", "prior draws"])
def test_the_check_fails_for_a_solver_that_ignores_the_data(kind, cases):
    # The prior mean scores exactly 1 on every problem.  The mean of 256 prior draws adds a Monte
    # Carlo error independent of mu_post - mu_prior: about half the problems then score just below 1
    # and half just above, never far from it.  The property (all 30 below 1) rejects both.
    ratios = []
    for seed in range(N_CASES):
        case = _case(cases, seed)
        x_hat = IgnoresTheData(case.prior, kind, seed=seed).fit(case.y, case.forward).reconstruct()
        ratios.append(error_ratio(x_hat, case))
    ratios = np.array(ratios)
    assert not np.all(ratios < 1.0)
    assert np.sum(ratios < 1.0) <= (0 if kind == "prior mean" else 0.75 * N_CASES), ratios
    assert ratios.min() > 0.75, ratios.min()  # measured 0.82; the EnKG default: 0.19 in the median
