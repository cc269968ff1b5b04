"""Inverse problems whose exact posterior is known, and small instances of every registered problem.

The exact posterior moments are computed here with textbook formulas
(Kalman gain, mixture reweighting), apart from the solvers under test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PosteriorCase",
    "gaussian_case",
    "mixture_case",
    "grf_case",
    "posterior_case",
    "posterior_cases",
    "posterior_scores",
    "random_spd",
    "TEST_PROBLEM_SETTINGS",
    "problem_instance",
]


@dataclass
class PosteriorCase:
    """A linear inverse problem ``y = A x + noise`` with its exact posterior moments.

    Item access (``case["mean"]``) reads the attribute of that name.

    Attributes
    ----------
    name : str
        ``"gaussian"``, ``"mixture"`` or ``"grf"``.
    prior : Prior
        The prior of ``x`` (exact denoiser).
    forward : LinearProblem
        The forward model ``G(x) = A @ x.ravel()`` with the case's noise level.
    y : numpy.ndarray of shape ``forward.y_shape``
        One noisy observation.
    mean : numpy.ndarray of shape ``forward.x_shape``
        The exact posterior mean.
    std : numpy.ndarray of shape ``forward.x_shape``
        The exact posterior marginal standard deviations.
    A : numpy.ndarray of shape ``(m, d)``
        The forward matrix.
    noise_std : float
        Standard deviation of the observation noise.
    prior_mean : numpy.ndarray of shape ``forward.x_shape``
        The prior mean (the estimate that ignores ``y``).
    x_true : numpy.ndarray of shape ``forward.x_shape``
        The draw from the prior that ``y`` observes.
    """

    name: str
    prior: Any
    forward: Any
    y: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    A: np.ndarray
    noise_std: float
    prior_mean: np.ndarray
    x_true: np.ndarray
    info: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def random_spd(d: int, rng: np.random.Generator, lo: float = 0.5, hi: float = 2.0) -> np.ndarray:
    """A random symmetric positive definite ``(d, d)`` matrix with eigenvalues in ``[lo, hi]``.

    Parameters
    ----------
    d : int
        Dimension.
    rng : numpy.random.Generator
        Source of the random rotation and eigenvalues.
    lo, hi : float
        Range of the eigenvalues.

    Returns
    -------
    numpy.ndarray of shape ``(d, d)``
    """
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (Q * rng.uniform(lo, hi, d)) @ Q.T


def _offset(rng, offset: float, std: np.ndarray) -> np.ndarray:
    """``offset`` standard deviations (per coordinate) along a random unit direction; zeros (and no
    draw) when ``offset`` is 0."""
    if not offset:
        return np.zeros_like(std)
    u = rng.standard_normal(std.shape)
    return float(offset) * np.sqrt(std.size) * std * u / np.linalg.norm(u)


def _linear(A, x_shape, noise):
    from ..problems import LinearProblem

    return LinearProblem(A, x_shape, noise_std=noise)


def _condition(mu, S, A, y, noise):
    """Textbook Gaussian conditioning: posterior mean and covariance."""
    m = A.shape[0]
    K = S @ A.T @ np.linalg.inv(A @ S @ A.T + noise**2 * np.eye(m))
    return mu + K @ (y - A @ mu), S - K @ A @ S


def gaussian_case(
    d: int = 4, m: int = 3, noise: float = 0.1, seed: int = 0, offset: float = 0.0
) -> PosteriorCase:
    """A Gaussian prior ``N(mu, S)`` observed through a random linear map.

    Parameters
    ----------
    d : int, default 4
        Dimension of ``x``.
    m : int, default 3
        Number of data.
    noise : float, default 0.1
        Standard deviation of the observation noise.
    seed : int, default 0
        Seeds the prior, the map, the truth and the noise (deterministic).
    offset : float, default 0.0
        Moves the truth this many prior standard deviations (per
        coordinate, along a random unit direction) away from its draw from
        the prior: with ``offset=3`` and ``m = d`` the data are surprising
        under the prior, and the posterior lies far from it, so an estimate
        that ignores ``y`` scores far worse than one that uses it.  The
        exact posterior conditions on ``y`` whatever the truth.

    Returns
    -------
    PosteriorCase
        With the exact posterior mean and standard deviation.

    Examples
    --------
    >>> from kalmandiff.testing import gaussian_case
    >>> case = gaussian_case(d=4, m=3, noise=0.1)
    >>> case.mean.shape, case.y.shape
    ((4,), (3,))
    """
    from ..priors import GaussianPrior

    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d)
    S = random_spd(d, rng)
    A = rng.standard_normal((m, d)) / np.sqrt(d)
    x = rng.multivariate_normal(mu, S)
    e = noise * rng.standard_normal(m)
    x = x + _offset(rng, offset, np.sqrt(np.diag(S)))  # drawn last: offset=0 keeps the default case
    y = A @ x + e
    mean, cov = _condition(mu, S, A, y, noise)
    return PosteriorCase(
        name="gaussian",
        prior=GaussianPrior(mu, S),
        forward=_linear(A, (d,), noise),
        y=y,
        mean=mean,
        std=np.sqrt(np.diag(cov)),
        A=A,
        noise_std=float(noise),
        prior_mean=mu,
        x_true=x,
    )


def mixture_case(
    d: int = 4,
    m: int = 3,
    noise: float = 0.1,
    seed: int = 0,
    K: int = 3,
    spread: float = 2.0,
    offset: float = 0.0,
) -> PosteriorCase:
    """A ``K``-component Gaussian-mixture prior observed through a random linear map.

    The posterior is again a mixture (reweighted, conditioned components);
    its mean and marginal standard deviations are returned.

    Parameters
    ----------
    d, m : int
        Dimensions of ``x`` and ``y``.
    noise : float
        Standard deviation of the observation noise.
    seed : int
        Seeds everything (deterministic).
    K : int, default 3
        Number of components.
    spread : float, default 2.0
        Scale of the component means.
    offset : float, default 0.0
        Moves the truth this many standard deviations of its component
        away from its draw (see :func:`gaussian_case`).

    Returns
    -------
    PosteriorCase
    """
    from ..priors import GaussianMixturePrior

    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, K)
    w /= w.sum()
    means = spread * rng.standard_normal((K, d))
    covs = np.stack([random_spd(d, rng, 0.3, 1.0) for _ in range(K)])
    A = rng.standard_normal((m, d)) / np.sqrt(d)
    k = rng.choice(K, p=w)
    x = rng.multivariate_normal(means[k], covs[k])
    e = noise * rng.standard_normal(m)
    x = x + _offset(rng, offset, np.sqrt(np.diag(covs[k])))
    y = A @ x + e
    R = noise**2 * np.eye(m)
    logw, ms, Cs = [], [], []
    for i in range(K):
        P = A @ covs[i] @ A.T + R
        r = y - A @ means[i]
        _, logdet = np.linalg.slogdet(P)
        logw.append(np.log(w[i]) - 0.5 * (r @ np.linalg.solve(P, r) + logdet))
        mi, Ci = _condition(means[i], covs[i], A, y, noise)
        ms.append(mi)
        Cs.append(Ci)
    logw = np.array(logw)
    wt = np.exp(logw - logw.max())
    wt /= wt.sum()
    mean = sum(wt[i] * ms[i] for i in range(K))
    second = sum(wt[i] * (Cs[i] + np.outer(ms[i], ms[i])) for i in range(K))
    cov = second - np.outer(mean, mean)
    return PosteriorCase(
        name="mixture",
        prior=GaussianMixturePrior(w, means, covs),
        forward=_linear(A, (d,), noise),
        y=y,
        mean=mean,
        std=np.sqrt(np.diag(cov)),
        A=A,
        noise_std=float(noise),
        prior_mean=w @ means,
        x_true=x,
        # the posterior's components: weights, means and marginal stds, for exact interval masses and scores
        info={"weights": wt, "means": np.stack(ms), "stds": np.sqrt(np.stack([np.diag(C) for C in Cs]))},
    )


def grf_case(n: int = 8, n_obs: int = 6, noise: float = 0.1, seed: int = 0, **grf) -> PosteriorCase:
    """A Gaussian random field on an ``n x n`` periodic grid, observed at a few nearby pixels.

    The observation is local: ``n_obs`` pixels of one row segment near the
    centre, so the posterior differs from the prior near them and hardly at
    all far away (a test of localisation and of spatial structure).

    Parameters
    ----------
    n : int, default 8
        Grid side (the unknown has shape ``(1, n, n)``).
    n_obs : int, default 6
        Number of observed pixels.
    noise : float, default 0.1
        Standard deviation of the observation noise.
    seed : int, default 0
        Seeds the truth and the noise.
    **grf
        Passed to :class:`~kalmandiff.priors.GaussianRandomFieldPrior`
        (default ``alpha=2.5, tau=3.0``).

    Returns
    -------
    PosteriorCase
        ``mean`` and ``std`` have shape ``(1, n, n)``.
    """
    from ..priors import GaussianRandomFieldPrior

    if not 1 <= n_obs <= n * n:
        raise ValueError(f"n_obs must lie in [1, {n * n}] (got {n_obs}).")
    prior = GaussianRandomFieldPrior(shape=(1, n, n), **{"alpha": 2.5, "tau": 3.0, **grf})
    d = n * n
    S = np.asarray(prior.cov_matrix(), dtype=float)
    mu = np.asarray(prior.mean, dtype=float).ravel()
    start = (n // 2) * n + max(n // 2 - n_obs // 2, 0)
    idx = (start + np.arange(n_obs)) % d
    A = np.zeros((n_obs, d))
    A[np.arange(n_obs), idx] = 1.0
    rng = np.random.default_rng(seed)
    x = mu + np.linalg.cholesky(S + 1e-12 * np.eye(d)) @ rng.standard_normal(d)
    y = A @ x + noise * rng.standard_normal(n_obs)
    mean, cov = _condition(mu, S, A, y, noise)
    shape = (1, n, n)
    return PosteriorCase(
        name="grf",
        prior=prior,
        forward=_linear(A, shape, noise),
        y=y,
        mean=mean.reshape(shape),
        std=np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape),
        A=A,
        noise_std=float(noise),
        prior_mean=mu.reshape(shape),
        x_true=x.reshape(shape),
        info={"observed": idx},
    )


#: the exact-posterior case builders, by name
_CASES = {"gaussian": gaussian_case, "mixture": mixture_case, "grf": grf_case}


def posterior_cases() -> list[str]:
    """Names of the exact-posterior cases (``"gaussian"``, ``"mixture"``, ``"grf"``).

    Returns
    -------
    list of str
    """
    return list(_CASES)


def posterior_case(name: str, **kwargs) -> PosteriorCase:
    """Build an exact-posterior case by name.

    Parameters
    ----------
    name : str
        One of :func:`posterior_cases`.
    **kwargs
        Passed to the builder (:func:`gaussian_case`, :func:`mixture_case`,
        :func:`grf_case`).

    Returns
    -------
    PosteriorCase
    """
    if name not in _CASES:
        raise ValueError(f"unknown posterior case {name!r}; available: {', '.join(_CASES)}.")
    return _CASES[name](**kwargs)


def posterior_scores(solver, case: PosteriorCase) -> tuple[float, float, float]:
    """How close a fitted solver is to the exact posterior.

    Parameters
    ----------
    solver : fitted solver
        Anything with ``reconstruct(return_std=True)``.
    case : PosteriorCase

    Returns
    -------
    mean_error : float
        ``||x_hat - mean|| / ||mean||``.
    prior_error : float
        The same for the prior mean (what ignoring the data scores).
    spread_ratio : float
        Mean ensemble standard deviation over the mean exact one (1 is calibrated).
    """
    from .._backend import to_numpy

    x_hat, x_std = solver.reconstruct(return_std=True)
    x_hat, x_std = to_numpy(x_hat), to_numpy(x_std)
    norm = np.linalg.norm(case.mean)
    return (
        float(np.linalg.norm(x_hat - case.mean) / norm),
        float(np.linalg.norm(case.prior_mean - case.mean) / norm),
        float(np.mean(x_std) / np.mean(case.std)),
    )


#: keyword arguments that make each registered problem a test-size instance (seconds or less)
TEST_PROBLEM_SETTINGS: dict[str, dict] = {
    "linear-gaussian": {},
    "inpainting": {"shape": (1, 8, 8)},
    "super-resolution": {"shape": (1, 8, 8)},
    "deblur": {"shape": (1, 8, 8), "kernel_size": 5},
    "phase-retrieval": {"shape": (1, 8, 8)},
    "interferometry": {"npix": 16},
    "navier-stokes": {"resolution": 16},
}


def problem_instance(name: str, random_state: Any = 0, **kwargs):
    """A small deterministic instance of a registered problem, at test size.

    Parameters
    ----------
    name : str
        One of :func:`kalmandiff.problems.available`.
    random_state : int, default 0
        Seeds the truth and the noise (same value, same instance).
    **kwargs
        Override the test-size settings (:data:`TEST_PROBLEM_SETTINGS`).

    Returns
    -------
    kalmandiff.problems.ProblemInstance
        ``size="small"`` with the unknown shrunk (8 x 8 images, a 16 x 16
        Navier-Stokes grid, a 16-pixel interferometric image); a problem
        registered without test settings is built at ``size="small"``.
    """
    from .. import problems

    settings = {**TEST_PROBLEM_SETTINGS.get(problems.lookup_keys(name)[0], {}), **kwargs}
    return problems.make(name, size="small", random_state=random_state, **settings)
