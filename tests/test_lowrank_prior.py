"""The low-rank plus ridge Gaussian prior against the dense Gaussian it stands for, and the built-in prior it
became for large images.

Oracles: :class:`GaussianPrior` built from the same covariance as a dense
matrix (its own tests check it against textbook conditioning), the sample
covariance of many draws, and the dense fit of
:func:`kalmandiff.problems.fitted_gaussian_prior`.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff._backend import to_numpy
from kalmandiff.priors import GaussianRandomFieldPrior, LowRankGaussianPrior
from kalmandiff.problems import _fixtures
from kalmandiff.problems.imaging import GaussianDeblur, Inpainting


def _np(a):
    return np.asarray(to_numpy(a), dtype=np.float64)


def _random_lowrank(rng, shape=(2, 3, 4), k=5, residual=0.3):
    d = int(np.prod(shape))
    U = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    return LowRankGaussianPrior(
        rng.standard_normal(shape), U.reshape(k, *shape), rng.uniform(0.5, 4.0, k), residual
    )


@pytest.mark.parametrize("residual", [0.3, 0.0])
def test_denoise_equals_the_dense_gaussian(xp, residual):
    rng = np.random.default_rng(0)
    prior = _random_lowrank(rng, residual=residual)
    dense = prior.as_gaussian()
    x = 2.0 * rng.standard_normal((6, *prior.event_shape))
    for sigma in (0.05, 1.0, 30.0, np.array([0.01, 0.1, 0.5, 1.0, 3.0, 100.0])):
        s = sigma if np.ndim(sigma) == 0 else xp.asarray(sigma)
        got = _np(prior.denoise(xp.asarray(x), s))
        np.testing.assert_allclose(got, dense.denoise(x, sigma), rtol=0, atol=1e-10)
    # at sigma = 0 the dense eigendecomposition's rounding decides what a zero eigenvalue is; the
    # exact answer: x itself for a non-singular prior, else its projection onto the support
    U, mean = prior.components, prior.mean.reshape(-1)
    flat = x.reshape(6, -1)
    expected = flat if residual > 0 else mean + (flat - mean) @ U.T @ U
    got = _np(prior.denoise(xp.asarray(x), 0.0)).reshape(6, -1)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # the score follows the denoiser
    np.testing.assert_allclose(_np(prior.score(xp.asarray(x), 0.7)), dense.score(x, 0.7), atol=1e-11)


def test_log_prob_and_marginal_std_equal_the_dense_gaussian(xp):
    rng = np.random.default_rng(1)
    prior = _random_lowrank(rng)
    dense = prior.as_gaussian()
    x = rng.standard_normal((4, *prior.event_shape))
    for sigma in (0.0, 0.4, np.array([0.1, 0.2, 0.3, 5.0])):
        s = sigma if np.ndim(sigma) == 0 else xp.asarray(sigma)
        np.testing.assert_allclose(
            _np(prior.log_prob(xp.asarray(x), s)), dense.log_prob(x, sigma), rtol=1e-12
        )
        if np.ndim(sigma) == 0:
            np.testing.assert_allclose(prior.marginal_std(sigma), dense.marginal_std(sigma), rtol=1e-12)
    singular = LowRankGaussianPrior(np.zeros(3), np.eye(3)[:1], [1.0], 0.0)
    with pytest.raises(ValueError, match="non-singular"):
        singular.log_prob(np.zeros((1, 3)))


def test_sample_covariance_converges_to_the_model_covariance():
    rng = np.random.default_rng(2)
    prior = _random_lowrank(rng, shape=(12,), k=3, residual=0.2)
    n = 40_000
    draws = prior.sample(n, random_state=7)
    assert draws.shape == (n, 12)
    np.testing.assert_array_equal(draws, prior.sample(n, random_state=7))
    cov = prior.cov
    scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    # each entry's standard error is at most sqrt(2 / n) of sqrt(C_ii C_jj): allow 5 of them
    assert np.max(np.abs(np.cov(draws, rowvar=False) - cov) / scale) < 5 * np.sqrt(2 / n)
    assert np.max(np.abs(draws.mean(0) - prior.mean) / np.sqrt(np.diag(cov))) < 5 / np.sqrt(n)


def test_samples_follow_the_namespace_of_like(xp):
    prior = _random_lowrank(np.random.default_rng(3))
    like = xp.zeros(1, dtype=xp.float32)
    draws = prior.sample(3, random_state=0, like=like)
    assert draws.dtype == xp.float32 and tuple(draws.shape) == (3, *prior.event_shape)


def test_from_samples_with_every_direction_is_the_dense_fit():
    rng = np.random.default_rng(4)
    images = rng.standard_normal((30, 1, 5, 6)).cumsum(axis=-1)
    dense = kd.problems.fitted_gaussian_prior(images)
    full = LowRankGaussianPrior.from_samples(images)
    assert full.n_components == 29
    np.testing.assert_allclose(full.cov, dense.cov, atol=1e-12)
    np.testing.assert_allclose(full.mean, dense.mean, atol=1e-14)
    x = rng.standard_normal((3, 1, 5, 6))
    np.testing.assert_allclose(full.denoise(x, 0.3), dense.denoise(x, 0.3), atol=1e-12)


def test_from_samples_keeps_a_fraction_of_the_variance_and_spreads_the_rest():
    rng = np.random.default_rng(5)
    images = rng.standard_normal((60, 40)) * np.linspace(3.0, 0.1, 40)
    prior = LowRankGaussianPrior.from_samples(images, n_components=0.9, ridge=0.0)
    evals = np.sort(np.linalg.eigvalsh(np.cov(images, rowvar=False)))[::-1]
    k = prior.n_components
    assert evals[:k].sum() >= 0.9 * evals.sum() > evals[: k - 1].sum()
    np.testing.assert_allclose(prior.variances, evals[:k], rtol=1e-10)
    # probabilistic PCA: the trace is kept, the discarded variance spread evenly
    np.testing.assert_allclose(np.trace(prior.cov), evals.sum(), rtol=1e-10)
    np.testing.assert_allclose(prior.residual_variance, evals[k:].sum() / (40 - k), rtol=1e-10)
    assert LowRankGaussianPrior.from_samples(images, n_components=4).n_components == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"components": np.ones((2, 6))}, "orthonormal"),
        ({"components": np.eye(5)}, "shape"),
        ({"variances": [1.0, -1.0]}, ">= 0"),
        ({"variances": [1.0]}, "one entry per component"),
        ({"residual_variance": -0.1}, "non-negative"),
        ({"residual_variance": np.nan}, "non-negative"),
    ],
)
def test_bad_parameters_are_refused(kwargs, match):
    args = {
        "mean": np.zeros(6),
        "components": np.eye(6)[:2],
        "variances": [1.0, 2.0],
        "residual_variance": 0.1,
    }
    with pytest.raises(ValueError, match=match):
        LowRankGaussianPrior(**{**args, **kwargs})


def test_from_samples_refuses_bad_input():
    with pytest.raises(ValueError, match="n >= 2"):
        LowRankGaussianPrior.from_samples(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="n_components"):
        LowRankGaussianPrior.from_samples(np.random.default_rng(0).standard_normal((5, 4)), n_components=9)
    with pytest.raises(ValueError, match="n_components"):
        LowRankGaussianPrior.from_samples(np.random.default_rng(0).standard_normal((5, 4)), n_components=1.5)


# -- exact posteriors without a dense matrix -------------------------------


def test_posterior_mean_equals_the_dense_posterior_for_a_matrix():
    rng = np.random.default_rng(6)
    prior = _random_lowrank(rng, shape=(24,), k=4, residual=0.05)
    A = rng.standard_normal((10, 24))
    y = rng.standard_normal(10)
    for noise in (0.01, rng.uniform(0.01, 0.5, 10)):
        exact = prior.posterior(A, y, noise).mean
        np.testing.assert_allclose(prior.posterior_mean(A, y, noise), exact, atol=1e-9)


@pytest.mark.parametrize(
    "make_problem",
    [
        lambda: GaussianDeblur((1, 8, 8), 5, 1.0, 0.05),
        lambda: Inpainting((1, 8, 8), box=(2, 2, 4, 3), noise_std=0.1),
    ],
)
def test_posterior_mean_through_forward_and_adjoint_equals_the_dense_posterior(make_problem):
    problem = make_problem()
    rng = np.random.default_rng(7)
    images = rng.standard_normal((40, 1, 8, 8)).cumsum(axis=-1).cumsum(axis=-2) / 8
    prior = LowRankGaussianPrior.from_samples(images, n_components=10)
    y = problem.observe(images[0], random_state=1)
    exact = prior.posterior(problem.as_matrix(), y, problem.noise_cov(diagonal=True)).mean
    np.testing.assert_allclose(prior.posterior_mean(problem, y), exact, atol=1e-8)
    # the GRF gets the same matrix-free solve
    grf = GaussianRandomFieldPrior((1, 8, 8), alpha=2.0, tau=3.0, scale=0.5, mean=0.1)
    exact = grf.posterior(problem.as_matrix(), y, problem.noise_cov(diagonal=True)).mean
    np.testing.assert_allclose(grf.posterior_mean(problem, y), exact, atol=1e-8)


def test_posterior_mean_refuses_zero_noise_and_warns_when_cut_short():
    prior = _random_lowrank(np.random.default_rng(8), shape=(10,), k=3)
    A = np.random.default_rng(9).standard_normal((6, 10))
    with pytest.raises(ValueError, match="positive"):
        prior.posterior_mean(A, np.zeros(6), 0.0)
    with pytest.raises(ValueError, match="noise_cov is required"):
        prior.posterior_mean(A, np.zeros(6))
    with pytest.warns(RuntimeWarning, match="raise maxiter"):
        prior.posterior_mean(A, np.ones(6), 1e-4, maxiter=1)


def test_memory_stays_order_d_k():
    # 64 x 64 unknown: a dense covariance would be 128 MiB; the prior and a denoise of 32 particles
    # allocate a few MiB
    d, k = 4096, 50
    rng = np.random.default_rng(10)
    U = np.linalg.qr(rng.standard_normal((d, k)))[0].T
    prior = LowRankGaussianPrior(np.zeros((1, 64, 64)), U, np.linspace(1, 5, k), 0.01)
    x = rng.standard_normal((32, 1, 64, 64))
    tracemalloc.start()
    prior.denoise(x, 0.5)
    prior.sample(32, random_state=0)
    prior.marginal_std()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16 * 2**20  # bytes; d**2 * 8 would be 128 MiB
    with pytest.raises(ValueError, match="max_dim"):
        prior.as_gaussian(max_dim=1024)


# -- the built-in prior of large image problems ------------------------------


def test_large_image_problems_get_the_low_rank_prior_from_their_own_stream():
    a = kd.problems.make("deblur", size="medium", random_state=1)
    b = kd.problems.make("inpainting", size="medium", random_state=2, family="smooth")
    prior = a.prior
    assert isinstance(prior, LowRankGaussianPrior) and b.prior is prior
    assert prior.event_shape == (1, 64, 64) and 0 < prior.n_components < _fixtures.PRIOR_FIT_SIZE
    # fitted to the "prior-fit" stream: refitting without the cache gives the same prior, and it does
    # not depend on an instance's seed
    _fixtures.smooth_image_prior.cache_clear()
    again = kd.problems.make("deblur", size="medium", random_state=99).prior
    np.testing.assert_array_equal(again.mean, prior.mean)
    np.testing.assert_array_equal(again.components, prior.components)


def test_the_low_rank_default_beats_the_old_grf_fallback_on_64x64_deblurring():
    from benchmarks.studies.large_image_prior import old_grf_fallback

    inst = kd.problems.make("deblur", size="medium", random_state=1)
    err = {
        label: kd.metrics.relative_l2(prior.posterior_mean(inst.problem, inst.y), inst.x_true)
        for label, prior in (("low-rank", inst.prior), ("grf", old_grf_fallback()))
    }
    assert err["low-rank"] < 0.2 < 0.5 < err["grf"]


def test_interferometry_on_a_64_pixel_grid_gets_a_low_rank_prior():
    prior = kd.problems.crescent_prior(64)
    assert isinstance(prior, LowRankGaussianPrior) and prior.event_shape == (1, 64, 64)
    truth = kd.problems.make("interferometry", size="medium", random_state=3).x_true[None]
    sigma = 0.5 * float(truth.std())
    noisy = truth + sigma * np.random.default_rng(0).standard_normal(truth.shape)
    assert np.linalg.norm(prior.denoise(noisy, sigma) - truth) < 0.5 * np.linalg.norm(noisy - truth)
