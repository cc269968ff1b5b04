"""Analytic priors: exact denoisers, scores, samples and posteriors against independent oracles.

Oracles: linear solves on joint Gaussians written here, ``scipy.stats.multivariate_normal``,
``scipy.special.logsumexp``, explicit DFT matrices, Monte Carlo and grid integration.
"""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from kalmandiff._backend import to_numpy
from kalmandiff.priors import GaussianMixturePrior, GaussianPrior, GaussianRandomFieldPrior


def _np(a):
    return np.asarray(to_numpy(a), dtype=np.float64)


def _spd(rng, d, rank=None):
    """A random covariance; positive definite, or of the given rank."""
    if rank is None:
        b = rng.normal(size=(d, d))
        return b @ b.T / d + 0.2 * np.eye(d)
    b = rng.normal(size=(d, rank))
    return b @ b.T


def _condition_joint(mean, cov, n_a, value):
    """Textbook conditioning of a joint Gaussian: law of the first ``n_a`` coordinates given the rest.

    ``value`` has shape (n, len(mean) - n_a); returns means (n, n_a) and the covariance.
    """
    mu_a, mu_b = mean[:n_a], mean[n_a:]
    s_ab, s_bb = cov[:n_a, n_a:], cov[n_a:, n_a:]
    cond_mean = mu_a[None, :] + np.linalg.solve(s_bb, (value - mu_b).T).T @ s_ab.T
    cond_cov = cov[:n_a, :n_a] - s_ab @ np.linalg.solve(s_bb, s_ab.T)
    return cond_mean, cond_cov


def _joint_denoiser(mean, cov, x, sigma):
    """E[x0 | x_sigma = x] from the joint law of (x0, x0 + sigma eps)."""
    d = mean.size
    joint = np.block([[cov, cov], [cov, cov + sigma**2 * np.eye(d)]])
    out, _ = _condition_joint(np.concatenate([mean.ravel(), mean.ravel()]), joint, d, x.reshape(len(x), d))
    return out


def _gmm_logpdf(x, weights, means, covs):
    """log sum_i w_i N(x; mu_i, C_i) with scipy."""
    terms = [np.log(w) + stats.multivariate_normal(m, c).logpdf(x) for w, m, c in zip(weights, means, covs)]
    return logsumexp(np.stack(terms, axis=-1), axis=-1)


def _fd_grad(f, x, h=1e-5):
    """Central finite-difference gradient of a scalar function of a vector."""
    grad = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        grad[j] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


def _gmm_example(rng, d=2, k=3):
    weights = rng.uniform(0.2, 1.0, size=k)
    weights /= weights.sum()
    means = rng.normal(scale=2.0, size=(k, d))
    covs = np.stack([_spd(rng, d) for _ in range(k)])
    return weights, means, covs


# ------------------------------------------------------------------------ Gaussian denoiser


@pytest.mark.parametrize("rank", [None, 3], ids=["full-rank", "rank-3"])
def test_gaussian_denoiser_matches_joint_conditioning(xp, rank):
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(2, 3))
    cov = _spd(rng, 6, rank)
    x = rng.normal(size=(4, 2, 3))
    prior = GaussianPrior(xp.asarray(mean), xp.asarray(cov))
    for sigma in (0.05, 0.7, 20.0):
        out = prior.denoise(xp.asarray(x), sigma)
        assert out.shape == x.shape
        np.testing.assert_allclose(_np(out).reshape(4, 6), _joint_denoiser(mean, cov, x, sigma), atol=1e-10)


def test_gaussian_cov_forms_agree(xp):
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(2, 3))
    x = xp.asarray(rng.normal(size=(5, 2, 3)))
    c, v = 1.7, rng.uniform(0.1, 3.0, size=6)
    iso, diag_c, full_c = (
        GaussianPrior(mean, c),
        GaussianPrior(mean, np.full(6, c)),
        GaussianPrior(mean, c * np.eye(6)),
    )
    diag_v, full_v = GaussianPrior(mean, v), GaussianPrior(mean, np.diag(v))
    assert (iso.cov_kind, diag_v.cov_kind, full_v.cov_kind) == ("isotropic", "diagonal", "full")
    for sigma in (0.3, 2.0):
        ref = _np(full_c.denoise(x, sigma))
        np.testing.assert_allclose(_np(iso.denoise(x, sigma)), ref, atol=1e-12)
        np.testing.assert_allclose(_np(diag_c.denoise(x, sigma)), ref, atol=1e-12)
        np.testing.assert_allclose(_np(diag_v.denoise(x, sigma)), _np(full_v.denoise(x, sigma)), atol=1e-12)
    np.testing.assert_allclose(iso.cov, c * np.eye(6))
    np.testing.assert_allclose(diag_v.cov, np.diag(v))


def test_gaussian_denoiser_at_zero_noise(xp):
    rng = np.random.default_rng(2)
    mean, cov = rng.normal(size=4), _spd(rng, 4, rank=2)
    # x in the support (mean + range of cov) is left unchanged; full-rank priors return x itself.
    x = mean + (cov @ rng.normal(size=(4, 3))).T
    np.testing.assert_allclose(_np(GaussianPrior(mean, cov).denoise(xp.asarray(x), 0.0)), x, atol=1e-10)
    z = rng.normal(size=(3, 4))
    np.testing.assert_allclose(
        _np(GaussianPrior(mean, _spd(rng, 4)).denoise(xp.asarray(z), 0.0)), z, atol=1e-10
    )


def test_gaussian_log_prob_noised_and_marginal_std(xp):
    rng = np.random.default_rng(3)
    mean, cov = rng.normal(size=3), _spd(rng, 3)
    x = rng.normal(size=(4, 3))
    prior = GaussianPrior(mean, cov)
    for sigma in (0.0, 0.8):
        ref = stats.multivariate_normal(mean, cov + sigma**2 * np.eye(3)).logpdf(x)
        np.testing.assert_allclose(_np(prior.log_prob(xp.asarray(x), sigma)), ref, rtol=1e-12)
        np.testing.assert_allclose(_np(prior.noised(sigma).log_prob(xp.asarray(x))), ref, rtol=1e-12)
        np.testing.assert_allclose(prior.marginal_std(sigma), np.sqrt(np.diag(cov) + sigma**2), rtol=1e-12)
    sig = np.array([0.1, 0.5, 1.0, 2.0])
    per_row = [stats.multivariate_normal(mean, cov + s**2 * np.eye(3)).logpdf(xi) for s, xi in zip(sig, x)]
    np.testing.assert_allclose(_np(prior.log_prob(xp.asarray(x), xp.asarray(sig))), per_row, rtol=1e-12)


# ------------------------------------------------------------------------ per-particle sigma


def _make_gaussian_full():
    rng = np.random.default_rng(4)
    return GaussianPrior(rng.normal(size=(2, 2)), _spd(rng, 4))


def _make_gaussian_diag():
    return GaussianPrior(np.arange(4.0), np.array([0.5, 1.0, 2.0, 4.0]))


def _make_gmm():
    rng = np.random.default_rng(5)
    w, m, c = _gmm_example(rng, d=4, k=3)
    return GaussianMixturePrior(w, m.reshape(3, 2, 2), c)


def _make_gmm_diag():
    return GaussianMixturePrior(
        [0.3, 0.7],
        np.array([[-1.0, 0.0, 2.0], [1.0, 1.0, -2.0]]),
        np.array([[1.0, 2.0, 0.5], [0.3, 0.3, 3.0]]),
    )


def _make_grf():
    return GaussianRandomFieldPrior((2, 4, 5), alpha=2.0, tau=2.0, mean=0.5)


FACTORIES = {
    "gaussian-full": _make_gaussian_full,
    "gaussian-diag": _make_gaussian_diag,
    "gmm-full": _make_gmm,
    "gmm-diag": _make_gmm_diag,
    "grf": _make_grf,
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_per_particle_sigma_matches_loop(xp, name):
    prior = FACTORIES[name]()
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, *prior.event_shape))
    sigma = np.array([0.1, 1.0, 5.0])
    batched = _np(prior.denoise(xp.asarray(x), xp.asarray(sigma)))
    for i, s in enumerate(sigma):
        single = _np(prior.denoise(xp.asarray(x[i : i + 1]), float(s)))
        np.testing.assert_allclose(batched[i : i + 1], single, atol=1e-12)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_dtype_and_namespace_preserved(xp, name):
    prior = FACTORIES[name]()
    x64 = np.random.default_rng(7).normal(size=(2, *prior.event_shape))
    x = xp.asarray(x64, dtype=xp.float32)
    out = prior.denoise(x, 0.5)
    assert type(out) is type(x) and out.dtype == xp.float32 and out.shape == x.shape
    np.testing.assert_allclose(_np(out), _np(prior.denoise(xp.asarray(x64), 0.5)), atol=1e-4)
    s = prior.sample(3, random_state=0, like=x)
    assert type(s) is type(x) and s.dtype == xp.float32 and s.shape == (3, *prior.event_shape)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_sample_reproducible(xp, name):
    prior = FACTORIES[name]()
    like = xp.asarray([0.0])
    a = _np(prior.sample(6, random_state=3, like=like))
    b = _np(prior.sample(6, random_state=3, like=like))
    c = _np(prior.sample(6, random_state=4, like=like))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Draws do not depend on the (NumPy-like) namespace.
    np.testing.assert_allclose(prior.sample(6, random_state=3), a, atol=1e-14)
    assert prior.sample(6, random_state=3).shape == (6, *prior.event_shape)


# ------------------------------------------------------------------------ scores


def test_gaussian_score_matches_finite_difference(xp):
    rng = np.random.default_rng(8)
    mean, cov = rng.normal(size=3), _spd(rng, 3)
    prior = GaussianPrior(mean, cov)
    x = rng.normal(size=(3, 3))
    for sigma in (0.2, 1.5):
        logpdf = stats.multivariate_normal(mean, cov + sigma**2 * np.eye(3)).logpdf
        score = _np(prior.score(xp.asarray(x), sigma))
        for i in range(3):
            np.testing.assert_allclose(score[i], _fd_grad(logpdf, x[i]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cov_kind", ["full", "diagonal", "isotropic"])
def test_gmm_score_and_log_prob_match_scipy(xp, cov_kind):
    rng = np.random.default_rng(9)
    w, m, covs = _gmm_example(rng, d=3, k=4)
    if cov_kind == "diagonal":
        vec = rng.uniform(0.3, 2.0, size=(4, 3))
        covs, given = np.stack([np.diag(v) for v in vec]), vec
    elif cov_kind == "isotropic":
        sc = rng.uniform(0.3, 2.0, size=4)
        covs, given = np.stack([s * np.eye(3) for s in sc]), sc
    else:
        given = covs
    prior = GaussianMixturePrior(xp.asarray(w), xp.asarray(m), xp.asarray(given))
    x = rng.normal(scale=2.0, size=(3, 3))
    for sigma in (0.3, 1.0):
        noised = covs + sigma**2 * np.eye(3)
        score = _np(prior.score(xp.asarray(x), sigma))
        for i in range(3):
            fd = _fd_grad(lambda v, nc=noised: _gmm_logpdf(v, w, m, nc), x[i])
            np.testing.assert_allclose(score[i], fd, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(
            _np(prior.log_prob(xp.asarray(x), sigma)), _gmm_logpdf(x, w, m, noised), rtol=1e-12
        )


# ------------------------------------------------------------------------ mixtures


def test_gmm_single_component_equals_gaussian(xp):
    rng = np.random.default_rng(10)
    mean, cov = rng.normal(size=(2, 2)), _spd(rng, 4)
    gmm, gauss = GaussianMixturePrior([2.5], mean[None], cov[None]), GaussianPrior(mean, cov)
    x = xp.asarray(rng.normal(size=(5, 2, 2)))
    for sigma in (0.1, 1.0):
        np.testing.assert_allclose(_np(gmm.denoise(x, sigma)), _np(gauss.denoise(x, sigma)), atol=1e-12)
        np.testing.assert_allclose(_np(gmm.log_prob(x, sigma)), _np(gauss.log_prob(x, sigma)), rtol=1e-12)
    A, y = rng.normal(size=(2, 4)), rng.normal(size=2)
    pg, pm = gauss.posterior(A, y, 0.3), gmm.posterior(A, y, 0.3)
    np.testing.assert_allclose(pm.weights, [1.0])
    np.testing.assert_allclose(pm.means[0], pg.mean, atol=1e-12)
    np.testing.assert_allclose(pm.covs[0], pg.cov, atol=1e-12)


def test_gmm_far_components_are_stable(xp):
    rng = np.random.default_rng(11)
    d = 3
    means = np.array([[0.0, 0.0, 0.0], [1e3, 0.0, 0.0], [-1e3, 500.0, 0.0]])
    covs = np.stack([0.01 * np.eye(d), _spd(rng, d) * 0.02, np.diag([0.01, 0.02, 0.03])])
    w = np.array([0.2, 0.5, 0.3])
    prior = GaussianMixturePrior(w, means, covs)
    x = np.concatenate([means + 0.1 * rng.normal(size=(3, d)), [[500.0, 0.0, 0.0], [-1e3, 499.0, 0.3]]])
    sigma = 0.05
    # Direct oracle with scipy's logsumexp; Mahalanobis distances reach ~1e8 here.
    noised = covs + sigma**2 * np.eye(d)
    logits = np.stack(
        [np.log(wi) + stats.multivariate_normal(mi, ci).logpdf(x) for wi, mi, ci in zip(w, means, noised)],
        axis=1,
    )
    gamma = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    comp = np.stack(
        [mi + np.linalg.solve(ni, (x - mi).T).T @ ci.T for mi, ci, ni in zip(means, covs, noised)], axis=1
    )
    ref = np.einsum("nk,nkd->nd", gamma, comp)
    out = _np(prior.denoise(xp.asarray(x), sigma))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(_np(prior.responsibilities(xp.asarray(x), sigma)), gamma, atol=1e-12)
    np.testing.assert_allclose(
        _np(prior.log_prob(xp.asarray(x), sigma)), logsumexp(logits, axis=1), rtol=1e-12
    )
    out32 = _np(prior.denoise(xp.asarray(x, dtype=xp.float32), sigma))
    assert np.all(np.isfinite(out32))
    np.testing.assert_allclose(out32, ref, atol=1e-2)


def test_gmm_zero_weight_component_is_ignored(xp):
    means, covs = np.array([[0.0, 0.0], [5.0, 5.0]]), np.array([1.0, 2.0])
    with_zero = GaussianMixturePrior([1.0, 0.0], means, covs)
    alone = GaussianPrior(means[0], 1.0)
    x = xp.asarray(np.random.default_rng(12).normal(size=(4, 2)))
    np.testing.assert_allclose(_np(with_zero.denoise(x, 0.5)), _np(alone.denoise(x, 0.5)), atol=1e-12)
    np.testing.assert_allclose(_np(with_zero.responsibilities(x, 0.5))[:, 1], 0.0)
    assert np.all(_np(with_zero.sample(50, random_state=0)) < 4.5)


def test_gmm_moments_and_sample_statistics(xp):
    rng = np.random.default_rng(13)
    w, m, covs = _gmm_example(rng, d=2, k=3)
    prior = GaussianMixturePrior(w, m, covs)
    # Mixture moments written out here.
    mean = sum(wi * mi for wi, mi in zip(w, m))
    cov = sum(wi * (ci + np.outer(mi - mean, mi - mean)) for wi, mi, ci in zip(w, m, covs))
    np.testing.assert_allclose(prior.mean, mean, atol=1e-12)
    np.testing.assert_allclose(prior.cov, cov, atol=1e-12)
    n = 40000
    s = _np(prior.sample(n, random_state=0, like=xp.asarray([0.0])))
    std = np.sqrt(np.diag(cov))
    assert np.all(np.abs(s.mean(axis=0) - mean) < 5 * std / math.sqrt(n))
    np.testing.assert_allclose(np.cov(s.T), cov, atol=0.05 * np.max(np.diag(cov)))
    # E_x[P(component i | x)] = w_i, with the responsibilities computed by scipy.
    logits = np.stack(
        [np.log(wi) + stats.multivariate_normal(mi, ci).logpdf(s) for wi, mi, ci in zip(w, m, covs)]
    )
    gamma = np.exp(logits - logsumexp(logits, axis=0))
    assert np.all(np.abs(gamma.mean(axis=1) - w) < 2.5 / math.sqrt(n))


def test_gaussian_sample_statistics(xp):
    rng = np.random.default_rng(14)
    mean, cov = rng.normal(size=(3,)), _spd(rng, 3)
    n = 40000
    for prior, c in (
        (GaussianPrior(mean, cov), cov),
        (GaussianPrior(mean, np.diag(cov)), np.diag(np.diag(cov))),
    ):
        s = _np(prior.sample(n, random_state=1, like=xp.asarray([0.0])))
        std = np.sqrt(np.diag(c))
        assert np.all(np.abs(s.mean(axis=0) - mean) < 5 * std / math.sqrt(n))
        np.testing.assert_allclose(np.cov(s.T), c, atol=0.04 * np.max(np.diag(c)))


# ------------------------------------------------------------------------ posteriors


def _noise_forms(rng, m):
    mat = _spd(rng, m) * 0.3
    vec = rng.uniform(0.1, 0.5, size=m)
    return {"scalar": (0.2, 0.2 * np.eye(m)), "vector": (vec, np.diag(vec)), "matrix": (mat, mat)}


@pytest.mark.parametrize("noise_kind", ["scalar", "vector", "matrix"])
def test_gaussian_posterior_matches_joint_conditioning(xp, noise_kind):
    rng = np.random.default_rng(15)
    d, m = 4, 3
    mean, cov = rng.normal(size=(2, 2)), _spd(rng, d)
    A, y = rng.normal(size=(m, d)), rng.normal(size=m)
    given, noise = _noise_forms(rng, m)[noise_kind]
    mu = mean.ravel()
    joint_mean = np.concatenate([mu, A @ mu])
    joint = np.block([[cov, cov @ A.T], [A @ cov, A @ cov @ A.T + noise]])
    ref_mean, ref_cov = _condition_joint(joint_mean, joint, d, y[None])
    prior = GaussianPrior(xp.asarray(mean), xp.asarray(cov))
    post = prior.posterior(xp.asarray(A), xp.asarray(y), given if np.ndim(given) == 0 else xp.asarray(given))
    assert isinstance(post, GaussianPrior) and post.event_shape == (2, 2)
    np.testing.assert_allclose(post.mean.ravel(), ref_mean[0], atol=1e-12)
    np.testing.assert_allclose(post.cov, ref_cov, atol=1e-12)
    ref_ev = stats.multivariate_normal(A @ mu, A @ cov @ A.T + noise).logpdf(y)
    np.testing.assert_allclose(prior.log_evidence(A, y, given), ref_ev, rtol=1e-12)


def test_gaussian_posterior_matches_importance_sampling():
    rng = np.random.default_rng(16)
    mean, cov = np.array([0.5, -1.0]), np.array([[1.0, 0.6], [0.6, 2.0]])
    A, y, noise = np.array([[1.0, 1.0]]), np.array([1.2]), 0.3
    post = GaussianPrior(mean, cov).posterior(A, y, noise)
    xs = rng.multivariate_normal(mean, cov, size=400_000)
    logw = -0.5 * (y[0] - xs @ A[0]) ** 2 / noise
    wts = np.exp(logw - logw.max())
    wts /= wts.sum()
    mc_mean = wts @ xs
    mc_cov = (xs - mc_mean).T @ ((xs - mc_mean) * wts[:, None])
    np.testing.assert_allclose(post.mean, mc_mean, atol=0.01)
    np.testing.assert_allclose(post.cov, mc_cov, atol=0.01)


@pytest.mark.parametrize("n_obs", [1, 2])
def test_gmm_posterior_matches_grid_integration(n_obs):
    rng = np.random.default_rng(17)
    w = np.array([0.3, 0.5, 0.2])
    means = np.array([[-2.0, 0.0], [1.5, 1.0], [0.0, -2.5]])
    covs = np.stack([_spd(rng, 2) * 0.5 for _ in range(3)])
    A = rng.normal(size=(n_obs, 2))
    noise = 0.4 * np.eye(n_obs)
    y = A @ np.array([0.5, 0.2]) + 0.3
    post = GaussianMixturePrior(w, means, covs).posterior(A, y, noise if n_obs > 1 else 0.4)
    # Riemann sums on a fine uniform grid are spectrally accurate for Gaussians.
    g = np.linspace(-10.0, 10.0, 801)
    xx = np.stack(np.meshgrid(g, g, indexing="ij"), axis=-1).reshape(-1, 2)
    lik = stats.multivariate_normal(np.zeros(n_obs), noise).pdf(y - xx @ A.T)
    dens = np.stack(
        [wi * stats.multivariate_normal(mi, ci).pdf(xx) * lik for wi, mi, ci in zip(w, means, covs)]
    )
    mass = dens.sum(axis=1)
    np.testing.assert_allclose(post.weights, mass / mass.sum(), rtol=1e-8)
    for i in range(3):
        p = dens[i] / mass[i]
        m_i = p @ xx
        c_i = (xx - m_i).T @ ((xx - m_i) * p[:, None])
        np.testing.assert_allclose(post.means[i], m_i, atol=1e-8)
        np.testing.assert_allclose(post.covs[i], c_i, atol=1e-8)
    total = dens.sum(axis=0) / mass.sum()
    np.testing.assert_allclose(post.mean, total @ xx, atol=1e-8)


# ------------------------------------------------------------------------ Gaussian random field


def _dft_cov(shape, alpha, tau, length, amplitude):
    """Covariance F^-1 diag(mu) F of one channel, with explicit DFT matrices (test's own)."""
    _, h, w = shape
    fh = np.exp(-2j * np.pi * np.outer(np.arange(h), np.arange(h)) / h)
    fw = np.exp(-2j * np.pi * np.outer(np.arange(w), np.arange(w)) / w)
    f = np.kron(fh, fw)
    kh = np.array([j if j <= h // 2 else j - h for j in range(h)], dtype=float)
    kw = np.array([j if j <= w // 2 else j - w for j in range(w)], dtype=float)
    mu = np.array([[(4 * np.pi**2 * (a**2 + b**2) / length**2 + tau**2) ** (-alpha) for b in kw] for a in kh])
    mu[0, 0] = 0.0
    mu *= amplitude if amplitude is not None else h * w * tau ** (2 * alpha - 2)
    block = np.linalg.solve(f, mu.reshape(-1)[:, None] * f)
    assert np.max(np.abs(block.imag)) < 1e-10
    return block.real, mu


@pytest.mark.parametrize("shape", [(1, 6, 6), (2, 4, 5), (1, 5, 3), (6, 6)])
def test_grf_matches_dense_gaussian(xp, shape):
    alpha, tau, length = 2.0, 1.5, 3.0
    prior = GaussianRandomFieldPrior(shape, alpha=alpha, tau=tau, length=length)
    full = (1, *shape) if len(shape) == 2 else shape
    assert prior.event_shape == full
    block, mu = _dft_cov(full, alpha, tau, length, None)
    cov = np.kron(np.eye(full[0]), block)
    np.testing.assert_allclose(prior.spectrum, mu, rtol=1e-12)
    np.testing.assert_allclose(prior.cov_matrix(), cov, atol=1e-12 * np.max(cov))
    rng = np.random.default_rng(18)
    mean = rng.normal(size=full)
    prior_m = GaussianRandomFieldPrior(shape, alpha=alpha, tau=tau, length=length, mean=mean)
    x = rng.normal(size=(3, *full))
    sigma = np.array([0.05, 0.4, 3.0]) * prior.pointwise_std
    out = _np(prior_m.denoise(xp.asarray(x), xp.asarray(sigma)))
    for i, s in enumerate(sigma):
        ref = _joint_denoiser(mean, cov, x[i : i + 1], s)
        np.testing.assert_allclose(out[i].ravel(), ref[0], atol=1e-10 * prior.pointwise_std)
    dense = GaussianPrior(mean, cov)
    np.testing.assert_allclose(out, _np(dense.denoise(xp.asarray(x), xp.asarray(sigma))), atol=1e-10)
    # The exact posterior of the field is the dense Gaussian's.
    A = rng.normal(size=(2, cov.shape[0]))
    post = prior_m.posterior(A, np.array([0.1, -0.2]), 0.05)
    ref_mean, ref_cov = _condition_joint(
        np.concatenate([mean.ravel(), A @ mean.ravel()]),
        np.block([[cov, cov @ A.T], [A @ cov, A @ cov @ A.T + 0.05 * np.eye(2)]]),
        cov.shape[0],
        np.array([[0.1, -0.2]]),
    )
    np.testing.assert_allclose(post.mean.ravel(), ref_mean[0], atol=1e-10)
    np.testing.assert_allclose(post.cov, ref_cov, atol=1e-10)


def test_grf_sample_covariance_and_zero_spatial_mean(xp):
    shape = (2, 3, 4)
    prior = GaussianRandomFieldPrior(shape, alpha=2.0, tau=2.0, mean=3.0)
    n = 40000
    s = prior.sample(n, random_state=0, like=xp.asarray([0.0]))
    assert s.dtype == xp.float64 and s.shape == (n, *shape)
    s = _np(s)
    var = prior.pointwise_std**2
    np.testing.assert_allclose(s.mean(axis=(-2, -1)), 3.0, atol=1e-12 * (1 + prior.pointwise_std))
    flat = s.reshape(n, -1) - 3.0
    emp = flat.T @ flat / n
    block, _ = _dft_cov(shape, 2.0, 2.0, 2 * np.pi, None)
    # Entries' sampling sd is about var * sqrt(2 / n) = 0.007 var; 0.05 var is far beyond it.
    np.testing.assert_allclose(emp, np.kron(np.eye(2), block), atol=0.05 * var)


def test_grf_scale_and_default_normalisation(xp):
    prior = GaussianRandomFieldPrior((1, 8, 6), alpha=2.5, tau=3.0, scale=0.7)
    np.testing.assert_allclose(np.diag(prior.cov_matrix()), 0.49, rtol=1e-12)
    np.testing.assert_allclose(prior.pointwise_std, 0.7, rtol=1e-12)
    s = _np(prior.sample(20000, random_state=2, like=xp.asarray([0.0])))
    np.testing.assert_allclose(s.std(axis=0), 0.7, rtol=0.05)
    # Default: pixel variance tau^(2 alpha - 2) * sum_{k != 0} lambda_k, nearly resolution-free.
    alpha, tau = 2.5, 3.0
    variances = []
    for n in (32, 64):
        k = np.fft.fftfreq(n) * n
        lam = (k[:, None] ** 2 + k[None, :] ** 2 + tau**2) ** (-alpha)
        lam[0, 0] = 0.0
        default = GaussianRandomFieldPrior((n, n), alpha=alpha, tau=tau)
        np.testing.assert_allclose(default.pointwise_std**2, tau ** (2 * alpha - 2) * lam.sum(), rtol=1e-12)
        variances.append(default.pointwise_std**2)
    assert abs(variances[0] / variances[1] - 1) < 0.02


# ------------------------------------------------------------------------ bad input


def _not_psd():
    return np.array([[1.0, 2.0], [2.0, 1.0]])


@pytest.mark.parametrize(
    "build",
    [
        lambda: GaussianPrior(np.zeros(2), _not_psd()),
        lambda: GaussianPrior(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])),
        lambda: GaussianPrior(np.zeros(2), np.eye(3)),
        lambda: GaussianPrior(np.zeros(2), np.array([1.0, -1.0])),
        lambda: GaussianPrior(np.zeros(2), -1.0),
        lambda: GaussianPrior(np.zeros(2), np.array([[np.nan, 0.0], [0.0, 1.0]])),
        lambda: GaussianMixturePrior([0.5, -0.5], np.zeros((2, 2)), 1.0),
        lambda: GaussianMixturePrior([0.0, 0.0], np.zeros((2, 2)), 1.0),
        lambda: GaussianMixturePrior([0.5, 0.5], np.zeros((3, 2)), 1.0),
        lambda: GaussianMixturePrior([0.5, 0.5], np.zeros((2, 2)), np.ones((2, 3))),
        lambda: GaussianMixturePrior([0.5, 0.5], np.zeros((2, 2)), np.stack([np.eye(2), _not_psd()])),
        lambda: GaussianRandomFieldPrior((1, 2, 3, 4)),
        lambda: GaussianRandomFieldPrior((1, 1, 1)),
        lambda: GaussianRandomFieldPrior((4, 4), alpha=-1.0),
        lambda: GaussianRandomFieldPrior((4, 4), tau=0.0),
        lambda: GaussianRandomFieldPrior((4, 4), scale=-2.0),
        lambda: GaussianRandomFieldPrior((4, 4), mean=np.zeros(3)),
    ],
)
def test_bad_constructor_arguments(build):
    with pytest.raises(ValueError):
        build()


def test_bad_call_arguments(xp):
    g = _make_gaussian_full()
    x = xp.asarray(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError):
        g.denoise(xp.asarray(np.zeros((3, 4))), 1.0)
    with pytest.raises(ValueError):
        g.denoise(x, xp.asarray(np.ones(2)))
    with pytest.raises(ValueError):
        g.posterior(np.ones((2, 3)), np.ones(2), 1.0)
    with pytest.raises(ValueError):
        g.posterior(np.ones((2, 4)), np.ones(3), 1.0)
    with pytest.raises(ValueError):
        g.posterior(np.ones((2, 4)), np.ones(2), np.ones(3))
    with pytest.raises(ValueError):
        g.sample(-1)
    with pytest.raises(ValueError):
        _make_grf().denoise(xp.asarray(np.zeros((2, 1, 4, 5))), 1.0)
    with pytest.raises(ValueError):
        GaussianRandomFieldPrior((1, 64, 64)).cov_matrix(max_dim=100)
    with pytest.raises(ValueError):
        GaussianPrior(np.zeros(2), np.diag([1.0, 0.0])).log_prob(xp.asarray(np.zeros((1, 2))))


# ------------------------------------------------------------------------ torch


@pytest.mark.parametrize("name", ["gaussian-full", "gmm-full", "grf"])
def test_torch_denoise_and_gradcheck(name):
    torch = pytest.importorskip("torch")
    prior = FACTORIES[name]()
    x = np.random.default_rng(19).normal(size=(2, *prior.event_shape))
    sigma = np.array([0.3, 1.2])
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    out = prior.denoise(xt, torch.tensor(sigma))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), prior.denoise(x, sigma), atol=1e-12)
    assert torch.autograd.gradcheck(lambda v: prior.denoise(v, 0.7), (xt,))
