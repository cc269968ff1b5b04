"""MAPSolver against closed forms: the Gaussian posterior mean, least squares, a GRF's smoothed MAP."""

from __future__ import annotations

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators.map import MAPSolver
from kalmandiff.testing import check_solver, gaussian_case, solver_factory

pytest.importorskip("torch")


def _fit(case, **params):
    settings = dict(n_particles=3, max_iter=300, random_state=0, verbose=False)
    return MAPSolver(case.prior, **{**settings, **params}).fit(case.y, case.forward)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# (d, m, noise, prior scale): a Gaussian prior and a linear map; the MAP is the posterior mean.
SHAPES = [(4, 4, 0.1, 1.0), (12, 5, 0.3, 1.0), (20, 8, 0.05, 1e-3), (16, 16, 1.0, 1e3)]


def _scaled_case(d, m, noise, scale, seed):
    case = gaussian_case(d, m, noise, seed=seed)
    if scale == 1.0:
        return case
    prior = kd.priors.GaussianPrior(
        np.asarray(case.prior.mean) * scale, np.asarray(case.prior.cov) * scale**2
    )
    problem = kd.problems.LinearProblem(case.A, (d,), noise * scale)
    y = np.asarray(case.y) * scale
    post = prior.posterior(case.A, y, (noise * scale) ** 2)
    return type("Scaled", (), dict(prior=prior, forward=problem, y=y, mean=np.asarray(post.mean)))


@pytest.mark.parametrize("d, m, noise, scale", SHAPES)
def test_map_is_the_exact_gaussian_posterior_mean(d, m, noise, scale):
    case = _scaled_case(d, m, noise, scale, seed=d)
    est = _fit(case)
    assert _rel(est.reconstruct(), case.mean) < 1e-6
    # every restart reaches the one optimum: the restarts' spread vanishes
    _, std = est.reconstruct(return_std=True)
    assert float(np.max(std)) < 1e-5 * float(np.max(np.abs(case.mean)))


def test_a_second_solver_seed_agrees():
    case = gaussian_case(12, 5, 0.3, seed=3)
    a, b = _fit(case, random_state=0).reconstruct(), _fit(case, random_state=1).reconstruct()
    assert _rel(a, case.mean) < 1e-6 and _rel(b, case.mean) < 1e-6


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_without_a_prior_term_it_is_least_squares(optimizer):
    rng = np.random.default_rng(7)
    d, m = 6, 10
    A = rng.standard_normal((m, d))
    problem = kd.problems.LinearProblem(A, (d,), 0.1)
    y = problem.observe(rng.standard_normal(d), random_state=1)
    prior = kd.priors.GaussianPrior(np.zeros(d), 1.0)
    params = dict(prior_term="none", n_particles=2, max_iter=100, random_state=0, verbose=False)
    if optimizer == "adam":
        params.update(optimizer="adam", max_iter=1500, learning_rate=0.02)
    x = MAPSolver(prior, **params).fit(y, problem).reconstruct()
    oracle = np.linalg.lstsq(A, np.asarray(y), rcond=None)[0]
    assert _rel(x, oracle) < (1e-8 if optimizer == "lbfgs" else 1e-3)


def test_score_prior_gives_the_map_of_the_smoothed_gaussian_random_field():
    # A GRF has no log_prob: the score (D(x, s) - x) / s^2 is that of N(0, C + s^2 I), whose MAP under a
    # linear map is that Gaussian's posterior mean (dense closed form on 8 x 8).
    prior = kd.priors.GaussianRandomFieldPrior(shape=(1, 8, 8), alpha=2.5, tau=3.0)
    d = 64
    rng = np.random.default_rng(2)
    A = rng.standard_normal((20, d)) / np.sqrt(d)
    problem = kd.problems.LinearProblem(A, (1, 8, 8), 0.05)
    y = problem.observe(np.asarray(prior.sample(1, random_state=3))[0], random_state=4)
    s = 0.05
    eye = np.eye(d)
    C = np.stack([np.asarray(prior.denoise(e.reshape(1, 1, 8, 8), 1.0)).ravel() for e in eye])
    C = C @ np.linalg.inv(eye - C)  # D(x, 1) = C (C + I)^-1 x recovers C
    Cs = C + s**2 * eye
    post = Cs @ A.T @ np.linalg.solve(A @ Cs @ A.T + 0.05**2 * np.eye(20), np.asarray(y))
    est = MAPSolver(prior, score_sigma=s, n_particles=2, max_iter=400, random_state=0, verbose=False)
    x = est.fit(y, problem).reconstruct()
    assert est.stats_["n_denoiser_evals"] == 2 * 401
    assert _rel(x, post) < 1e-5


class _SignFlipped(MAPSolver):
    """A purpose-built wrong MAP: the data gradient's sign flipped (ascends the misfit)."""

    def _evaluate(self, ctx, X, weights, start=False):
        data, prior, grad, misfit, ok = yield from super()._evaluate(ctx, X, weights, start)
        _, prior_grad = self._neg_log_prior(ctx, X)
        return data, prior, -(grad - prior_grad) + prior_grad, misfit, ok


def test_the_oracle_check_fails_on_a_sign_flipped_data_gradient():
    case = gaussian_case(12, 5, 0.3, seed=3)
    wrong = _SignFlipped(case.prior, n_particles=3, max_iter=300, random_state=0, verbose=False)
    x = wrong.fit(case.y, case.forward).reconstruct()
    assert _rel(x, case.mean) > 1e-2


def test_planned_is_spent_and_ask_tell_matches_fit():
    case = gaussian_case(5, 3, 0.2, seed=1)
    est = MAPSolver(case.prior, n_particles=3, max_iter=12, random_state=0, verbose=False)
    plan = est.expected_evaluations(case.forward)
    est.fit(case.y, case.forward)
    for key in ("n_forward_evals", "n_sequential_forward_evals", "n_forward_vjps"):
        assert est.stats_[key] == plan[key] == (3 if "sequential" not in key else 1) * 13
    other = MAPSolver(case.prior, n_particles=3, max_iter=12, random_state=0, verbose=False)
    other.start(case.y, case.forward)
    while (request := other.ask()) is not None:
        if isinstance(request, kd.estimators.VJPRequest):
            other.tell(case.forward.adjoint(request.cotangent))
        else:
            other.tell(case.forward(request))
    np.testing.assert_allclose(np.asarray(other.particles_), np.asarray(est.particles_), rtol=1e-10)


def test_restarts_are_ranked_best_first_by_objective():
    # A bimodal likelihood (y = x^2 in one coordinate): restarts end at +x or -x, the prior mean 0.5
    # breaks the tie, so the best restart is the positive one.
    d = 1
    prior = kd.priors.GaussianPrior(np.full(d, 0.5), 1.0)
    problem = kd.problems.CallableProblem(lambda X: X**2, (d,), (d,), 0.1, differentiable=True)
    y = np.array([1.0])
    est = MAPSolver(prior, n_particles=8, max_iter=60, random_state=0, verbose=False).fit(y, problem)
    ends = np.asarray(est.particles_).ravel()
    assert np.any(ends < 0) and np.any(ends > 0)  # both modes found
    assert est.reconstruct()[0] > 0.9


def test_check_solver_passes():
    check_solver(solver_factory("map"))


def test_one_run_from_the_prior_mean():
    case = gaussian_case(12, 5, 0.3, seed=3)
    est = _fit(case, n_particles=1, init="mean")
    assert _rel(est.reconstruct(), case.mean) < 1e-6
    with pytest.warns(UserWarning, match="one restart"):
        _, std = est.reconstruct(return_std=True)
    assert float(np.max(std)) == 0.0
    no_mean = kd.priors.TorchDenoiser.__new__(kd.priors.TorchDenoiser)  # a network prior: no mean
    with pytest.raises(ValueError, match="init='mean' needs a prior with a mean"):
        MAPSolver(no_mean, init="mean")._starts(None, 1)
