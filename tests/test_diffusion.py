"""The EDM core against the exact probability-flow ODE of a Gaussian prior."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff._backend import to_numpy
from kalmandiff.diffusion import edm_sigma_schedule, euler_step, heun_step, sample, solve_to_zero


def exact_flow(x, mu, s2, sigma_from, sigma_to):
    """PF-ODE solution for the prior N(mu, s2 I): x(sigma) - mu scales as sqrt(s2 + sigma^2)."""
    return mu + np.sqrt((s2 + sigma_to**2) / (s2 + sigma_from**2)) * (x - mu)


def test_schedule_matches_the_edm_formula():
    n, lo, hi, rho = 18, 0.002, 80.0, 7.0
    sig = edm_sigma_schedule(n, lo, hi, rho)
    i = np.arange(n)
    expected = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    np.testing.assert_allclose(sig[:-1], expected, rtol=1e-14)
    assert sig[-1] == 0.0 and sig[0] == pytest.approx(hi) and sig[-2] == pytest.approx(lo)
    assert np.all(np.diff(sig) < 0)


def test_schedule_with_rho_one_is_linear():
    np.testing.assert_allclose(edm_sigma_schedule(5, 1.0, 5.0, rho=1.0, append_zero=False), [5, 4, 3, 2, 1])


@pytest.mark.parametrize("bad", [dict(n_steps=0), dict(n_steps=2.5), dict(n_steps=3, sigma_min=-1.0)])
def test_schedule_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        edm_sigma_schedule(**bad)


def test_euler_step_to_zero_is_tweedie(xp):
    prior = kd.priors.GaussianPrior(np.ones(3), 2.0)
    x = xp.asarray(np.random.default_rng(0).standard_normal((4, 3)))
    out = euler_step(prior.denoise, x, 1.5, 0.0)
    np.testing.assert_allclose(to_numpy(out), to_numpy(prior.denoise(x, 1.5)))
    np.testing.assert_allclose(to_numpy(solve_to_zero(prior.denoise, x, 1.5, 1)), to_numpy(out))


@pytest.mark.parametrize("method, order", [("euler", 1.0), ("heun", 2.0)])
def test_observed_order_against_the_exact_gaussian_flow(method, order):
    mu, s2 = 0.3, 0.5
    prior = kd.priors.GaussianPrior(np.full(2, mu), s2)
    x0 = np.array([[2.0, -1.0]])
    lo, hi = 0.5, 5.0
    exact = exact_flow(x0, mu, s2, hi, lo)
    step = euler_step if method == "euler" else heun_step
    errors = []
    for n in (16, 32, 64):
        levels = np.geomspace(hi, lo, n + 1)
        x = x0
        for a, b in zip(levels[:-1], levels[1:]):
            x = step(prior.denoise, x, float(a), float(b))
        errors.append(np.abs(x - exact).max())
    slopes = -np.diff(np.log(errors)) / np.log(2)
    assert np.all(np.abs(slopes - order) < 0.15), slopes


def test_solve_to_zero_converges_to_the_exact_map(xp):
    mu, s2 = -0.2, 1.3
    prior = kd.priors.GaussianPrior(np.full(4, mu), s2)
    x = np.random.default_rng(1).standard_normal((5, 4)) * 3
    exact = exact_flow(x, mu, s2, 3.0, 0.0)
    errors = [
        np.abs(to_numpy(solve_to_zero(prior.denoise, xp.asarray(x), 3.0, k, method="heun")) - exact).max()
        for k in (4, 16, 64)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3


def test_unknown_method_is_rejected():
    prior = kd.priors.GaussianPrior(np.zeros(2), 1.0)
    with pytest.raises(ValueError, match="method"):
        solve_to_zero(prior.denoise, np.zeros((1, 2)), 1.0, 3, method="rk4")


def test_unconditional_samples_have_the_prior_moments():
    mean = np.array([1.0, -2.0, 0.5])
    L = np.array([[1.0, 0, 0], [0.5, 0.8, 0], [-0.3, 0.2, 0.6]])
    cov = L @ L.T
    prior = kd.priors.GaussianPrior(mean, cov)
    x = sample(prior.denoise, 4000, (3,), n_steps=40, random_state=0)
    assert x.shape == (4000, 3)
    se = np.sqrt(np.diag(cov) / 4000)
    assert np.all(np.abs(x.mean(0) - mean) < 4 * se)
    np.testing.assert_allclose(np.cov(x.T), cov, atol=0.12)


def test_sampling_is_reproducible_and_namespace_generic(xp):
    prior = kd.priors.GaussianPrior(np.zeros(2), 1.0)
    like = xp.zeros(1, dtype=xp.float64)
    a = sample(prior.denoise, 8, (2,), n_steps=10, random_state=3, like=like)
    b = sample(prior.denoise, 8, (2,), n_steps=10, random_state=3, like=like)
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    np.testing.assert_allclose(to_numpy(a), sample(prior.denoise, 8, (2,), n_steps=10, random_state=3))
