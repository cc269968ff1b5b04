"""kalmandiff.testing, part 1: exact-posterior cases, registered problems at test size, failing forwards."""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators import MemberFailureError
from kalmandiff.testing import (
    FailingForward,
    PosteriorCase,
    failing_problem,
    gaussian_case,
    grf_case,
    mixture_case,
    posterior_case,
    posterior_cases,
    problem_instance,
)


@pytest.mark.parametrize("name", posterior_cases())
def test_posterior_cases_are_deterministic_and_consistent(name):
    case = posterior_case(name)
    assert isinstance(case, PosteriorCase)
    again = posterior_case(name)
    np.testing.assert_array_equal(case.y, again.y)
    np.testing.assert_array_equal(case.mean, again.mean)
    shape = tuple(case.forward.x_shape)
    assert case.mean.shape == case.std.shape == case.prior_mean.shape == case.x_true.shape == shape
    assert tuple(case.prior.event_shape) == shape
    assert np.all(case.std > 0) and case["mean"] is case.mean  # item access reads attributes
    # y observes x_true through the forward model, up to the noise.
    resid = case.y - np.asarray(case.forward(case.x_true[None]))[0]
    assert np.sqrt(np.mean(resid**2)) < 4 * case.noise_std


@pytest.mark.parametrize("build", [gaussian_case, grf_case])
def test_gaussian_cases_agree_with_the_priors_own_exact_posterior(build):
    """The textbook formulas of the cases and the priors' ``posterior`` are computed apart."""
    case = build()
    post = case.prior.posterior(case.A, case.y, case.noise_std**2)
    np.testing.assert_allclose(np.asarray(post.mean).reshape(case.mean.shape), case.mean, atol=1e-8)
    std = np.sqrt(np.diag(np.asarray(post.cov))).reshape(case.std.shape)
    np.testing.assert_allclose(std, case.std, atol=1e-8)


def test_grf_observation_is_local():
    case = grf_case(n=8, n_obs=4)
    observed = np.zeros(64, bool)
    observed[case.info["observed"]] = True
    prior_std = np.sqrt(np.diag(case.prior.cov_matrix()))
    shrink = case.std.ravel() / prior_std
    assert shrink[observed].max() < 0.2 and shrink[~observed].max() <= 1.0 + 1e-12
    assert shrink.reshape(8, 8)[0].min() > 0.9  # far from the observed row segment: hardly informed


def test_mixture_case_by_monte_carlo():
    """Self-normalised importance sampling from the prior reproduces the mixture posterior mean."""
    case = mixture_case(d=2, m=2, noise=0.5, seed=3)
    X = np.asarray(case.prior.sample(200_000, random_state=0))
    r = case.y[None] - X @ case.A.T
    logw = -0.5 * np.sum(r**2, axis=1) / case.noise_std**2
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mean = w @ X
    std = np.sqrt(w @ (X - mean) ** 2)
    np.testing.assert_allclose(mean, case.mean, atol=0.03)
    np.testing.assert_allclose(std, case.std, rtol=0.05)


def test_unknown_case_is_refused():
    with pytest.raises(ValueError, match="unknown posterior case"):
        posterior_case("poisson")


@pytest.mark.parametrize("name", kd.problems.available())
def test_every_registered_problem_has_a_small_deterministic_instance(name):
    t0 = time.perf_counter()
    a, b = problem_instance(name), problem_instance(name)
    assert time.perf_counter() - t0 < 10
    np.testing.assert_array_equal(np.asarray(a.y), np.asarray(b.y))
    np.testing.assert_array_equal(np.asarray(a.x_true), np.asarray(b.x_true))
    assert tuple(np.shape(a.x_true)) == tuple(a.problem.x_shape)
    assert int(np.prod(a.problem.x_shape)) <= 256  # test size
    c = problem_instance(name, random_state=1)
    assert not np.array_equal(np.asarray(a.y), np.asarray(c.y))


def test_failing_forward_modes():
    A = np.eye(3)
    xs = np.random.default_rng(0).standard_normal((50, 3))
    raising = FailingForward(A, "raise", fraction=0.3)
    fails = [raising.fails(x) for x in xs]
    assert 5 < sum(fails) < 30
    for x, bad in zip(xs, fails):
        if bad:
            with pytest.raises(RuntimeError, match="diverged"):
                raising(x)
        else:
            np.testing.assert_array_equal(raising(x), x)
    nan = FailingForward(A, "nan", fraction=0.3)
    G = nan.batch(xs)
    np.testing.assert_array_equal(np.isnan(G).any(axis=1), fails)  # batch == per member
    assert all(np.isnan(nan(x)).all() == f for x, f in zip(xs, fails))
    with pytest.raises(ValueError, match="mode"):
        FailingForward(A, "explode")


def test_a_nan_problem_drives_both_policies():
    """(Raising and hanging members through a BlackBox: tests/test_failures.py.)"""
    mode = "nan"
    case = gaussian_case(4, 3, 0.1, seed=5)
    problem = failing_problem(case.A, (4,), 0.1, mode)

    def solver(policy):
        return kd.EnKGSolver(
            case.prior, n_particles=20, n_steps=12, random_state=0, on_failure=policy, verbose=False
        )

    with pytest.raises(MemberFailureError):
        solver("raise").fit(case.y, problem)
    s = solver("resample").fit(case.y, problem)
    assert s.stats_["n_failed"] > 0 and np.all(np.isfinite(s.particles_))


def test_a_hanging_problem_needs_an_executor_and_a_timeout():
    case = gaussian_case(4, 3, 0.1, seed=5)
    with pytest.raises(ValueError, match="executor"):
        failing_problem(case.A, (4,), 0.1, "hang")
    with ThreadPoolExecutor(max_workers=2) as pool:
        problem = failing_problem(case.A, (4,), 0.1, "hang", executor=pool, timeout=0.2, hang_call=1)
        try:
            G = problem(np.ones((3, 4)))
        finally:
            problem.failing.release()
    assert isinstance(problem, kd.problems.BlackBox)
    assert np.isnan(np.asarray(G)).any(axis=1).sum() == 1  # threads may run the calls out of order
