"""Gaussian-mixture prior with an exact EDM denoiser and exact linear-Gaussian posteriors.

Noising ``x_0 ~ sum_i w_i N(mu_i, Sigma_i)`` in the EDM convention gives
``x_sigma ~ sum_i w_i N(mu_i, Sigma_i + sigma**2 I)``, and the posterior mean
is the responsibility-weighted sum of the component denoisers:

    D(x, sigma) = sum_i gamma_i(x) [mu_i + Sigma_i (Sigma_i + sigma**2 I)^-1 (x - mu_i)],
    gamma_i(x) ∝ w_i N(x; mu_i, Sigma_i + sigma**2 I).

Responsibilities are formed in log space with a running maximum (an online
log-sum-exp), so components whose Mahalanobis distances are in the millions
neither underflow nor produce NaN.  The array API has no ``logsumexp``; the
max-subtraction is written out here.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._backend import RandomSource, asarray_like, get_namespace
from ._base import Prior, sigma_column
from .gaussian import (
    _LOG_2PI,
    GaussianPrior,
    _check_linear,
    _check_n,
    _Constants,
    _dense,
    _float_array,
    _from_coords,
    _gaussian_condition,
    _noise_cov_matrix,
    _parse_cov,
    _shrink,
    _to_coords,
)

__all__ = ["GaussianMixturePrior"]


def _parse_weights(weights: Any) -> np.ndarray:
    w = _float_array(weights, "weights")
    if w.ndim != 1 or w.shape[0] < 1:
        raise ValueError(f"weights must be a non-empty vector of shape (K,) (got shape {w.shape}).")
    if np.any(w < 0):
        raise ValueError(f"weights must be >= 0 (min {w.min():.3g}).")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights must have a positive sum.")
    return w / total


def _parse_covs(covs: np.ndarray, k: int, d: int):
    """Per-component ``(evals, evecs)`` lists from ``(K, d, d)``, ``(K, d)``, ``(K,)`` or a scalar."""
    if covs.ndim == 0:
        covs = np.full(k, float(covs))
    if covs.shape not in {(k, d, d), (k, d), (k,)}:
        raise ValueError(
            f"covs must have shape ({k}, {d}, {d}) (full), ({k}, {d}) (diagonal), ({k},) (isotropic) "
            f"or be a scalar (got shape {covs.shape})."
        )
    parsed = [_parse_cov(covs[i], d, f"covs[{i}]") for i in range(k)]
    return [p[0] for p in parsed], [p[1] for p in parsed], parsed[0][2]


class GaussianMixturePrior(Prior):
    """Gaussian mixture ``sum_i w_i N(mu_i, Sigma_i)`` with its exact EDM denoiser.

    Parameters
    ----------
    weights : array_like, shape (K,)
        Non-negative mixture weights (normalised to sum to one).
    means : array_like, shape (K, *event_shape)
        Component means; ``means.shape[1:]`` is the event shape, of size ``d``.
    covs : array_like, shape (K, d, d), (K, d) or (K,), or a float
        Component covariances (units of ``means`` squared), acting on the
        flattened sample: full symmetric positive semi-definite matrices,
        vectors of variances (diagonal) or scalar variances (isotropic; a
        single float is shared by every component).

    Attributes
    ----------
    event_shape : tuple of int
    dim : int
        ``d``.
    n_components : int
        ``K``.

    Notes
    -----
    ``denoise`` costs one ``(n, d) @ (d, d)`` product per component and
    direction (none for diagonal or isotropic covariances) and keeps memory
    at ``O(n d)`` whatever ``K``.  At ``sigma = 0`` every component with a
    singular covariance makes the responsibilities undefined; use ``sigma > 0``.

    Examples
    --------
    >>> import numpy as np
    >>> prior = GaussianMixturePrior([0.5, 0.5], np.array([[-2.0], [2.0]]), 1.0)
    >>> prior.denoise(np.array([[0.0]]), 1.0)
    array([[0.]])
    """

    def __init__(self, weights: Any, means: Any, covs: Any):
        w = _parse_weights(weights)
        means = _float_array(means, "means")
        k = w.shape[0]
        if means.ndim < 2 or means.shape[0] != k:
            raise ValueError(
                f"means must have shape (K, *event_shape) with K = {k} (the length of weights); "
                f"got shape {means.shape}."
            )
        self.event_shape = tuple(means.shape[1:])
        self.dim = int(np.prod(self.event_shape))
        self.n_components = k
        self._weights = w
        self._means = means.reshape(k, self.dim)
        self._evals, self._evecs, self.cov_kind = _parse_covs(_float_array(covs, "covs"), k, self.dim)
        self._set_constants()

    @classmethod
    def _from_eigen(cls, weights: Any, means: Any, evals: Any, evecs: Any, kind: str) -> GaussianMixturePrior:
        """The prior of stored per-component eigendecompositions (what ``_parse_covs`` returned), bit
        for bit (:func:`kalmandiff.load`: decomposing dense covariances again would differ in rounding)."""
        self = cls(weights, means, 1.0)  # validates weights and means
        k, d = self.n_components, self.dim
        evals = [_float_array(e, "evals") for e in evals]
        evecs = [None if u is None else _float_array(u, "evecs") for u in evecs]
        full = kind == "full"
        if (
            kind not in ("isotropic", "diagonal", "full")
            or len(evals) != k
            or len(evecs) != k
            or any(e.shape != (d,) for e in evals)
            or any((u is None) == full or (u is not None and u.shape != (d, d)) for u in evecs)
        ):
            raise ValueError(f"not the eigendecompositions of {k} {d}-dimensional {kind!r} covariances.")
        self._evals, self._evecs, self.cov_kind = evals, evecs, kind
        self._set_constants()
        return self

    def _set_constants(self) -> None:
        k, w = self.n_components, self._weights
        # Components of zero weight never contribute; skipping them avoids -inf - -inf.
        self._active = [i for i in range(k) if w[i] > 0]
        self._consts = _Constants(
            means=[self._means[i] for i in range(k)],
            evals=self._evals,
            sqrt_evals=[np.sqrt(e) for e in self._evals],
            evecs=self._evecs,
            evecs_t=[None if u is None else np.ascontiguousarray(u.T) for u in self._evecs],
        )

    # ---------------------------------------------------------------- views
    @property
    def weights(self) -> np.ndarray:
        """Normalised weights, NumPy shape ``(K,)``."""
        return self._weights.copy()

    @property
    def means(self) -> np.ndarray:
        """Component means, NumPy shape ``(K, *event_shape)``."""
        return self._means.reshape(self.n_components, *self.event_shape).copy()

    @property
    def covs(self) -> np.ndarray:
        """Dense component covariances, NumPy shape ``(K, d, d)``."""
        return np.stack([_dense(e, u) for e, u in zip(self._evals, self._evecs)])

    @property
    def mean(self) -> np.ndarray:
        """Mixture mean ``sum_i w_i mu_i``, NumPy shape ``event_shape``."""
        return (self._weights @ self._means).reshape(self.event_shape)

    @property
    def cov(self) -> np.ndarray:
        """Mixture covariance ``sum_i w_i (Sigma_i + mu_i mu_i^T) - mean mean^T``, shape ``(d, d)``."""
        mean = self._weights @ self._means
        second = np.einsum("k,kij->ij", self._weights, self.covs)
        second += np.einsum("k,ki,kj->ij", self._weights, self._means, self._means)
        return second - np.outer(mean, mean)

    def component(self, i: int) -> GaussianPrior:
        """Component ``i`` as a :class:`GaussianPrior`."""
        return GaussianPrior(self._means[i].reshape(self.event_shape), _dense(self._evals[i], self._evecs[i]))

    def __repr__(self) -> str:
        return (
            f"GaussianMixturePrior(n_components={self.n_components}, event_shape={self.event_shape}, "
            f"cov_kind={self.cov_kind!r})"
        )

    # ------------------------------------------------------------ internals
    def _prepare(self, x, sigma):
        self._check_batch(x)
        if isinstance(sigma, numbers.Number) and sigma == 0 and min(e.min() for e in self._evals) <= 0:
            raise ValueError("sigma=0 is undefined for a mixture with a singular component covariance.")
        xp = get_namespace(x)
        xf = xp.reshape(x, (x.shape[0], self.dim))
        s2 = sigma_column(sigma, xf) ** 2
        return xp, xf, s2, self._consts.get(x)

    def _component_terms(self, i, xf, s2, c, xp):
        """Log of ``w_i N(x; mu_i, Sigma_i + s2 I)`` without ``d log(2 pi) / 2``, and the eigen-coordinates."""
        z = _to_coords(xf - c["means"][i], c["evecs"][i])
        var = c["evals"][i] + s2
        logit = -0.5 * (xp.sum(z * z / var, axis=-1) + xp.sum(xp.log(var), axis=-1))
        return logit + math.log(self._weights[i]), z

    def _logits(self, x, sigma):
        xp, xf, s2, c = self._prepare(x, sigma)
        return xp, [self._component_terms(i, xf, s2, c, xp)[0] for i in self._active]

    # ------------------------------------------------------------ denoising
    def denoise(self, x, sigma):
        """Exact posterior mean ``E[x_0 | x_sigma = x]`` of the mixture.

        Parameters
        ----------
        x : array, shape (n, *event_shape)
            Noisy batch in any supported namespace (real floating dtype).
        sigma : float or array of shape (n,)
            EDM noise level(s), same units as ``x``.

        Returns
        -------
        array, shape (n, *event_shape)
            ``sum_i gamma_i(x) [mu_i + Sigma_i (Sigma_i + sigma**2 I)^-1 (x - mu_i)]``
            in x's namespace, device and dtype.
        """
        xp, xf, s2, c = self._prepare(x, sigma)
        run_max = acc = total = None
        for i in self._active:
            logit, z = self._component_terms(i, xf, s2, c, xp)
            d_i = c["means"][i] + _from_coords(z * _shrink(c["evals"][i], s2, xp), c["evecs_t"][i])
            if run_max is None:
                run_max, acc, total = logit, d_i, xp.ones_like(logit)
                continue
            # Online log-sum-exp: rescale what has been accumulated to the new maximum.
            new_max = xp.maximum(run_max, logit)
            old_scale = xp.exp(run_max - new_max)
            new_scale = xp.exp(logit - new_max)
            acc = acc * old_scale[:, None] + d_i * new_scale[:, None]
            total = total * old_scale + new_scale
            run_max = new_max
        return xp.reshape(acc / total[:, None], x.shape)

    def responsibilities(self, x, sigma):
        """Posterior component probabilities ``gamma_i(x)`` at noise level ``sigma``.

        Returns
        -------
        array, shape (n, K)
            Rows sum to one; zero-weight components get zero.
        """
        xp, logits = self._logits(x, sigma)
        stacked = xp.stack(logits, axis=1)
        stacked = stacked - xp.max(stacked, axis=1, keepdims=True)
        probs = xp.exp(stacked)
        probs = probs / xp.sum(probs, axis=1, keepdims=True)
        if len(self._active) == self.n_components:
            return probs
        cols = [xp.zeros_like(probs[:, 0])] * self.n_components
        for j, i in enumerate(self._active):
            cols[i] = probs[:, j]
        return xp.stack(cols, axis=1)

    def log_prob(self, x, sigma=0.0):
        """Log density of ``x_sigma``, ``log sum_i w_i N(x; mu_i, Sigma_i + sigma**2 I)``.

        Parameters
        ----------
        x : array, shape (n, *event_shape)
        sigma : float or array of shape (n,), optional
            Noise level (default 0: the prior itself; needs non-singular covariances).

        Returns
        -------
        array, shape (n,)
        """
        xp, logits = self._logits(x, sigma)
        stacked = xp.stack(logits, axis=1)
        top = xp.max(stacked, axis=1)
        lse = top + xp.log(xp.sum(xp.exp(stacked - top[:, None]), axis=1))
        return lse - 0.5 * self.dim * _LOG_2PI

    # ------------------------------------------------------------- sampling
    def sample(self, n: int, random_state: Any = None, like: Any = None):
        """Draw ``n`` samples: a component by weight, then a Gaussian draw from it.

        Parameters
        ----------
        n : int
        random_state : None, int, numpy.random.Generator or RandomSource
            Seed; the same value gives the same samples.
        like : array, optional
            Namespace, device and dtype of the result (default NumPy float64).

        Returns
        -------
        array, shape (n, *event_shape)
        """
        n = _check_n(n)
        rs = RandomSource(random_state, stream="prior-sample")
        labels = rs.numpy.choice(self.n_components, size=n, p=self._weights)
        z = rs.normal((n, self.dim), like=like)
        xp = get_namespace(z)
        c = self._consts.get(z)
        # Transform contiguous blocks of one component each, then undo the sort.
        order = np.argsort(labels, kind="stable")
        z = xp.take(z, asarray_like(order, z, dtype=xp.int64), axis=0)
        bounds = np.searchsorted(labels[order], np.arange(self.n_components + 1))
        blocks = []
        for i in range(self.n_components):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            if hi > lo:
                zi = z[lo:hi, :] * c["sqrt_evals"][i]
                blocks.append(c["means"][i] + _from_coords(zi, c["evecs_t"][i]))
        out = xp.concat(blocks, axis=0) if blocks else z
        out = xp.take(out, asarray_like(np.argsort(order), z, dtype=xp.int64), axis=0)
        return xp.reshape(out, (n, *self.event_shape))

    # ------------------------------------------------------------ posterior
    def posterior(self, A: Any, y: Any, noise_cov: Any) -> GaussianMixturePrior:
        """Exact posterior mixture given ``y = A @ x.ravel() + eta``, ``eta ~ N(0, noise_cov)``.

        Parameters
        ----------
        A : array_like, shape (m, d)
        y : array_like, m entries
        noise_cov : float, array_like of shape (m,) or (m, m)
            Observation-noise covariance (variance units).

        Returns
        -------
        GaussianMixturePrior
            Components conditioned one by one (see :meth:`GaussianPrior.posterior`),
            weights ``∝ w_i N(y; A mu_i, A Sigma_i A^T + noise_cov)`` normalised in log space.
        """
        A, y = _check_linear(A, y, self.dim)
        noise = _noise_cov_matrix(noise_cov, A.shape[0])
        means, covs, log_w = [], [], []
        for i in range(self.n_components):
            cov_i = _dense(self._evals[i], self._evecs[i])
            m_i, c_i, ev_i = _gaussian_condition(self._means[i], cov_i, A, y, noise)
            means.append(m_i)
            covs.append(c_i)
            log_w.append(np.log(self._weights[i]) if self._weights[i] > 0 else -np.inf)
            log_w[-1] += ev_i
        log_w = np.asarray(log_w)
        from scipy.special import logsumexp  # here, not at module level: keeps `import kalmandiff` light

        weights = np.exp(log_w - logsumexp(log_w))
        means = np.stack(means).reshape(self.n_components, *self.event_shape)
        return GaussianMixturePrior(weights, means, np.stack(covs))
