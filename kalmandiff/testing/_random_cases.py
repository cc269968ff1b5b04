"""Random linear-Gaussian inverse problems of many shapes, scales and conditionings.

Each problem is drawn from three independent streams of one integer seed
(:func:`kalmandiff._backend.stream_seed`): the problem itself (sizes, prior,
map, noise level), the truth (a draw from the prior) and the observation
noise.  A solver fitted with ``random_state=seed`` draws from yet another
stream, so nothing a solver does is correlated with the truth.
"""

from __future__ import annotations

import numpy as np

from .._backend import stream_seed
from ._cases import PosteriorCase, _linear

__all__ = ["random_linear_gaussian_case"]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _random_orthogonal(rng: np.random.Generator, n: int) -> np.ndarray:
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    return Q * np.sign(np.diag(R))  # Haar-distributed: fix the signs QR leaves arbitrary


def _random_map(rng: np.random.Generator, m: int, d: int, condition: float) -> np.ndarray:
    """``U diag(s) V^T`` with singular values log-spaced from 1 down to ``1 / condition``."""
    s = np.geomspace(1.0, 1.0 / condition, m)
    U = _random_orthogonal(rng, m)
    V = _random_orthogonal(rng, d)[:, :m]
    return (U * s) @ V.T


def random_linear_gaussian_case(seed: int) -> PosteriorCase:
    """A random problem ``y = A x + noise`` with a Gaussian prior and its exact posterior.

    Drawn from the ``"problem"`` stream of ``seed``: ``d`` log-uniform in
    ``[4, 256]``, ``m`` log-uniform in ``[1, d]``; a scale ``c`` log-uniform in
    ``[1e-3, 1e3]`` (prior mean ``c z``, prior covariance ``c^2 S`` with ``S``
    a random rotation of eigenvalues log-uniform in ``[0.1, 10]``); ``A`` with
    condition number 1 (half the problems) or log-uniform in ``[1e2, 1e6]``
    (the others), rescaled so that the prior predictive standard deviation of
    ``A x`` (the signal) is ``c`` per datum on average; noise standard deviation
    ``r c`` with ``r`` log-uniform in ``[1e-3, 1]``.  The truth is drawn from
    the prior (``"truth"`` stream), the noise from the ``"noise"`` stream.

    Parameters
    ----------
    seed : int
        Non-negative integer naming the problem.

    Returns
    -------
    PosteriorCase
        ``info`` holds ``d``, ``m``, ``scale``, ``noise_ratio`` and ``condition``.
    """
    from ..priors import GaussianPrior

    rng = np.random.default_rng(stream_seed(seed, "problem"))
    d = int(round(_log_uniform(rng, 4, 256)))
    m = max(1, min(d, int(round(_log_uniform(rng, 1, d)))))
    scale = _log_uniform(rng, 1e-3, 1e3)
    condition = 1.0 if rng.uniform() < 0.5 else _log_uniform(rng, 1e2, 1e6)
    noise_ratio = _log_uniform(rng, 1e-3, 1.0)
    mu = scale * rng.standard_normal(d)
    Q = _random_orthogonal(rng, d)
    S = scale**2 * (Q * np.exp(rng.uniform(np.log(0.1), np.log(10.0), d))) @ Q.T
    S = (S + S.T) / 2
    A = _random_map(rng, m, d, condition)
    A *= scale / np.sqrt(np.trace(A @ S @ A.T) / m)  # signal std per datum = scale
    noise = noise_ratio * scale

    prior = GaussianPrior(mu, S)
    x_true = np.asarray(prior.sample(1, random_state=np.random.default_rng(stream_seed(seed, "truth"))))[0]
    eps = np.random.default_rng(stream_seed(seed, "noise")).standard_normal(m)
    y = A @ x_true + noise * eps
    post = prior.posterior(A, y, noise**2)
    return PosteriorCase(
        name="gaussian",
        prior=prior,
        forward=_linear(A, (d,), noise),
        y=y,
        mean=np.asarray(post.mean).reshape(d),
        std=np.sqrt(np.diag(np.asarray(post.cov).reshape(d, d))),
        A=A,
        noise_std=float(noise),
        prior_mean=mu,
        x_true=x_true,
        info=dict(d=d, m=m, scale=scale, noise_ratio=noise_ratio, condition=condition),
    )
