"""Low-rank plus ridge Gaussian prior: a PCA subspace and an isotropic residual, in O(d k) memory.

The covariance is given by its eigen-structure,

    Sigma = U^T diag(v) U + r (I - U^T U),

with ``U`` the ``(k, d)`` matrix of orthonormal components (rows), ``v``
the variances along them and ``r`` the variance in every direction
orthogonal to them.  ``Sigma`` is never formed: with ``P = U^T U`` and the
per-direction gains ``g(l) = l / (l + sigma**2)``,

    D(x, sigma) = mean + g(r) (x - mean) + U^T [(g(v) - g(r)) * U (x - mean)]

is the exact ``E[x_0 | x_0 + sigma * eps = x]`` (the GaussianPrior formula
in the eigenbasis, where the ``d - k`` residual eigenvalues are all ``r``),
and ``Sigma^(1/2)`` has the same form with ``sqrt``, which gives exact
samples.  Denoising ``n`` particles costs ``O(n d k)``, storage ``O(d k)``.

This is probabilistic PCA (Tipping and Bishop 1999) with a ridge: fitted to
``n`` images by :meth:`LowRankGaussianPrior.from_samples`, the top ``k``
sample eigenpairs are kept, the remaining sample variance is spread evenly
over the other ``d - k`` directions, and the ridge is added to every
eigenvalue.  With ``k = n - 1`` (all the sample's directions) it is exactly
the dense fit ``sample covariance + ridge * I`` of
:func:`kalmandiff.problems.fitted_gaussian_prior`.

Exact posteriors for a linear observation ``y = A x + eta`` need no dense
matrix either: :meth:`LowRankGaussianPrior.posterior_mean` solves the
whitened normal equations by conjugate gradients, with ``A`` as a matrix or
a linear forward problem (its ``forward`` / ``adjoint``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np

from .._backend import RandomSource, get_namespace, to_numpy
from ._base import Prior, sigma_column
from .gaussian import _LOG_2PI, GaussianPrior, _check_n, _Constants, _float_array, _shrink

__all__ = ["LowRankGaussianPrior", "whitened_posterior_mean"]

#: as_gaussian / posterior refuse dense matrices beyond this many rows unless asked
_MAX_DENSE_DIM = 4096
#: how far from orthonormal the given components may be (max |U U^T - I|)
_ORTHO_TOL = 1e-6


def _variance(value: Any, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a non-negative number (got {value!r}).") from exc
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a non-negative finite number (got {value}).")
    return value


class LowRankGaussianPrior(Prior):
    """Gaussian prior ``N(mean, U^T diag(v) U + r (I - U^T U))`` with exact denoiser, in O(d k) memory.

    Parameters
    ----------
    mean : array_like, shape event_shape
        Prior mean (``d`` elements).
    components : array_like, shape (k, d) or (k, *event_shape)
        Orthonormal directions (rows); ``0 <= k <= d``.
    variances : array_like, shape (k,)
        Variance of the prior along each component (``>= 0``).
    residual_variance : float
        Variance in every direction orthogonal to the components (``>= 0``;
        positive makes the covariance non-singular).

    Attributes
    ----------
    event_shape : tuple of int
    dim : int
        ``d``.
    n_components : int
        ``k``.

    Notes
    -----
    ``denoise``, ``sample``, ``log_prob`` and ``marginal_std`` are exact and
    cost ``O(n d k)`` for ``n`` particles; ``posterior_mean`` is exact up to
    the tolerance of its conjugate-gradient solve.  ``cov``,
    :meth:`as_gaussian` and :meth:`posterior` build dense ``d x d``
    matrices and are meant for small ``d`` (tests, comparisons).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> images = rng.standard_normal((50, 1, 8, 8)).cumsum(axis=-1)
    >>> prior = LowRankGaussianPrior.from_samples(images, n_components=10)
    >>> prior.denoise(images[:2], 0.5).shape
    (2, 1, 8, 8)
    """

    def __init__(self, mean: Any, components: Any, variances: Any, residual_variance: float):
        mean = _float_array(mean, "mean")
        self.event_shape = tuple(mean.shape)
        self.dim = d = int(mean.size)
        if d == 0:
            raise ValueError("mean must have at least one element.")
        U = _float_array(components, "components")
        if U.ndim == 0 or U.size % d or (U.ndim > 2 and tuple(U.shape[1:]) != self.event_shape):
            raise ValueError(
                f"components must have shape (k, {d}) or (k, *{self.event_shape}) (got {U.shape})."
            )
        U = U.reshape(-1, d) if U.size else np.zeros((0, d))
        k = U.shape[0]
        if k > d:
            raise ValueError(f"there can be at most d = {d} orthonormal components (got {k}).")
        if k and np.max(np.abs(U @ U.T - np.eye(k))) > _ORTHO_TOL:
            raise ValueError(
                "components must be orthonormal rows (U @ U.T == I); orthonormalise them first "
                "(e.g. np.linalg.qr) or fit with LowRankGaussianPrior.from_samples."
            )
        v = _float_array(variances, "variances").reshape(-1)
        if v.shape != (k,):
            raise ValueError(f"variances must have one entry per component ({k}) (got shape {v.shape}).")
        if np.any(v < 0):
            raise ValueError(f"variances must be >= 0 (min {v.min():.3g}).")
        self.n_components = k
        self._mean = mean.reshape(-1)
        self._U = np.ascontiguousarray(U)
        self._v = v
        self._r = _variance(residual_variance, "residual_variance")
        self._consts = _Constants(
            mean=self._mean,
            U=self._U,
            Ut=np.ascontiguousarray(self._U.T),
            v=self._v,
            sqrt_v=np.sqrt(self._v),
        )

    # -------------------------------------------------------------- fitting
    @classmethod
    def from_samples(
        cls, samples: Any, n_components: int | float | None = None, ridge: float | None = None
    ) -> LowRankGaussianPrior:
        """Probabilistic PCA of ``samples`` plus a ridge.

        Parameters
        ----------
        samples : array_like of shape (n, *event_shape)
            Training draws (``n >= 2``).
        n_components : int or float, optional
            Components kept: an int ``k``, or a fraction in ``(0, 1)``: the
            fewest components that hold that fraction of the sample
            variance.  Default: every direction the sample spans
            (``min(n - 1, d)``), which makes the covariance exactly the
            sample covariance plus ``ridge * I``.
        ridge : float, optional
            Added to every eigenvalue; default 1% of the mean pixel variance
            (as :func:`kalmandiff.problems.fitted_gaussian_prior`).

        Returns
        -------
        LowRankGaussianPrior
            Mean: the sample mean; components: the top sample eigenvectors;
            variances: their sample eigenvalues plus the ridge; residual
            variance: the mean of the other sample eigenvalues (over all
            ``d - k`` remaining directions) plus the ridge.

        Notes
        -----
        Memory ``O(n d)`` for the centred samples, time ``O(n^2 d)`` (a thin
        SVD).
        """
        X = _float_array(samples, "samples")
        if X.ndim < 2 or X.shape[0] < 2:
            raise ValueError(f"samples must have shape (n >= 2, *event_shape) (got {X.shape}).")
        n = X.shape[0]
        event_shape = X.shape[1:]
        X = X.reshape(n, -1)
        d = X.shape[1]
        mean = X.mean(axis=0)
        X = X - mean
        total = float(np.einsum("ij,ij->", X, X)) / (n - 1)  # trace of the sample covariance
        _, s, Vt = np.linalg.svd(X, full_matrices=False)
        del X
        evals = s**2 / (n - 1)
        rank = min(n - 1, d)
        k = _n_kept(n_components, evals[:rank], total, rank)
        if ridge is None:
            ridge = 0.01 * total / d
        ridge = _variance(ridge, "ridge")
        leftover = max(total - float(evals[:k].sum()), 0.0)
        residual = (leftover / (d - k) if d > k else 0.0) + ridge
        return cls(mean.reshape(event_shape), Vt[:k], evals[:k] + ridge, residual)

    # ---------------------------------------------------------------- views
    @property
    def mean(self) -> np.ndarray:
        """Prior mean, NumPy float64 of shape ``event_shape``."""
        return self._mean.reshape(self.event_shape).copy()

    @property
    def components(self) -> np.ndarray:
        """Orthonormal components, NumPy float64 of shape ``(k, d)``."""
        return self._U.copy()

    @property
    def variances(self) -> np.ndarray:
        """Variance along each component, shape ``(k,)``."""
        return self._v.copy()

    @property
    def residual_variance(self) -> float:
        """Variance in every direction orthogonal to the components."""
        return self._r

    @property
    def cov(self) -> np.ndarray:
        """Dense covariance, shape ``(d, d)``: ``d**2`` memory, for small ``d`` only."""
        U, v, r = self._U, self._v, self._r
        out = (U.T * (v - r)) @ U
        out[np.diag_indices_from(out)] += r
        return out

    def marginal_std(self, sigma: float = 0.0) -> np.ndarray:
        """Pointwise standard deviation of ``x_sigma``, shape ``event_shape`` (``O(d k)``)."""
        var = self._r + np.einsum("kd,k,kd->d", self._U, self._v - self._r, self._U)
        return np.sqrt(np.maximum(var, 0.0) + float(sigma) ** 2).reshape(self.event_shape)

    def as_gaussian(self, max_dim: int = _MAX_DENSE_DIM) -> GaussianPrior:
        """The same prior as a :class:`GaussianPrior` with a dense covariance (small ``d`` only)."""
        if self.dim > max_dim:
            raise ValueError(
                f"a dense covariance would have {self.dim} rows (> max_dim={max_dim}); use "
                "posterior_mean for large unknowns, or raise max_dim to force it."
            )
        return GaussianPrior(self.mean, self.cov)

    def __repr__(self) -> str:
        return (
            f"LowRankGaussianPrior(event_shape={self.event_shape}, n_components={self.n_components}, "
            f"residual_variance={self._r:.3g})"
        )

    # ------------------------------------------------------------ the maths
    def _apply(self, xc, gain_res, gain_comp, c):
        """``gain_res * xc + U^T ((gain_comp - gain_res) * (U xc))`` on rows of ``xc`` (n, d)."""
        out = gain_res * xc
        if self.n_components:
            out = out + ((xc @ c["Ut"]) * (gain_comp - gain_res)) @ c["U"]
        return out

    def denoise(self, x, sigma):
        """Exact posterior mean ``E[x_0 | x_sigma = x]``.

        Parameters
        ----------
        x : array, shape (n, *event_shape)
            Noisy batch in any supported namespace (real floating dtype).
        sigma : float or array of shape (n,)
            EDM noise level(s), same units as ``x``.

        Returns
        -------
        array, shape (n, *event_shape)
            ``mean + Sigma (Sigma + sigma**2 I)^-1 (x - mean)``, in x's
            namespace, device and dtype.
        """
        xp, xf = self._flat(x)
        c = self._consts.get(x)
        s2 = sigma_column(sigma, xf) ** 2
        r = self._r
        # _shrink gives 0 (a projection onto the support) where variance and sigma are both 0
        gain_res = (r / (r + s2)) if r > 0 else 0.0 * s2
        gain_comp = _shrink(c["v"], s2, xp)
        out = c["mean"] + self._apply(xf - c["mean"], gain_res, gain_comp, c)
        return xp.reshape(out, x.shape)

    def sample(self, n: int, random_state: Any = None, like: Any = None):
        """Draw ``n`` samples ``mean + Sigma^(1/2) z``, ``z ~ N(0, I_d)``.

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
        z = RandomSource(random_state, stream="prior-sample").normal((n, self.dim), like=like)
        xp = get_namespace(z)
        c = self._consts.get(z)
        out = c["mean"] + self._apply(z, math.sqrt(self._r), c["sqrt_v"], c)
        return xp.reshape(out, (n, *self.event_shape))

    def log_prob(self, x, sigma=0.0):
        """Log density of ``x_sigma``, ``log N(x; mean, Sigma + sigma**2 I)``, shape ``(n,)``.

        ``sigma = 0`` needs a non-singular covariance (positive variances).
        """
        singular = np.any(self._v <= 0) or (self._r <= 0 and self.n_components < self.dim)
        if isinstance(sigma, numbers.Number) and sigma == 0 and singular:
            raise ValueError("log_prob at sigma=0 needs a non-singular covariance.")
        xp, xf = self._flat(x)
        c = self._consts.get(x)
        s2 = sigma_column(sigma, xf) ** 2  # a float, or an array (n, 1) / ()
        xc = xf - c["mean"]
        z = xc @ c["Ut"]
        var_comp = c["v"] + s2
        maha = xp.sum(z * z / var_comp, axis=-1)
        logdet = xp.sum(xp.log(var_comp), axis=-1)
        n_res = self.dim - self.n_components
        if n_res:
            var_res = self._r + (s2 if isinstance(s2, float) else xp.reshape(s2, (-1,)))
            resid = xc - z @ c["U"]
            maha = maha + xp.sum(resid * resid, axis=-1) / var_res
            logdet = logdet + n_res * (math.log(var_res) if isinstance(var_res, float) else xp.log(var_res))
        return -0.5 * (maha + logdet + self.dim * _LOG_2PI)

    def _cov_sqrt(self, w: np.ndarray) -> np.ndarray:
        """``Sigma^(1/2) w`` for a NumPy vector ``w`` (d,)."""
        out = math.sqrt(self._r) * w
        if self.n_components:
            out = out + self._U.T @ ((np.sqrt(self._v) - math.sqrt(self._r)) * (self._U @ w))
        return out

    # ------------------------------------------------------------ posterior
    def posterior_mean(self, A: Any, y: Any, noise_cov: Any = None, tol: float = 1e-10, maxiter=None):
        """Exact posterior mean given ``y = A x + eta``, ``eta ~ N(0, noise_cov)``, without a dense matrix.

        Parameters
        ----------
        A : array_like of shape (m, d), or a linear forward problem
            The observation operator on ``x.ravel()``; a
            :class:`~kalmandiff.problems.LinearOperatorProblem` (inpainting,
            deblurring, super-resolution, ``LinearProblem``) is applied
            through its ``forward`` and ``adjoint``, never as a matrix.
        y : array_like, m entries
        noise_cov : float or array_like of m variances, optional
            Observation-noise variance (positive); default, for a problem,
            ``problem.noise_std**2``.
        tol : float
            Relative residual of the conjugate-gradient solve (see
            :func:`whitened_posterior_mean`).
        maxiter : int, optional
            Default ``d``.

        Returns
        -------
        numpy.ndarray of shape event_shape
        """
        return whitened_posterior_mean(
            self._mean, self._cov_sqrt, A, y, noise_cov, self.event_shape, tol=tol, maxiter=maxiter
        )

    def posterior(self, A: Any, y: Any, noise_cov: Any) -> GaussianPrior:
        """Exact posterior as a dense :class:`GaussianPrior` (small ``d`` only; see :meth:`posterior_mean`)."""
        return self.as_gaussian().posterior(A, y, noise_cov)


def _n_kept(n_components, evals: np.ndarray, total: float, rank: int) -> int:
    """How many of the sorted sample eigenvalues ``evals`` to keep."""
    if n_components is None:
        return rank
    if isinstance(n_components, (numbers.Integral, np.integer)) and not isinstance(n_components, bool):
        if not 0 <= n_components <= rank:
            raise ValueError(
                f"n_components must be between 0 and min(n - 1, d) = {rank} (got {n_components})."
            )
        return int(n_components)
    if isinstance(n_components, numbers.Real) and 0 < n_components < 1:
        if total <= 0:
            return 0
        held = np.cumsum(evals) / total
        return min(int(np.searchsorted(held, float(n_components))) + 1, rank)
    raise ValueError(
        "n_components must be an int (components) or a float in (0, 1) (a fraction of the variance) "
        f"(got {n_components!r})."
    )


# --------------------------------------------------------------------------
# matrix-free exact posterior mean
# --------------------------------------------------------------------------


def _operator(A: Any, d: int, event_shape):
    """``(forward, adjoint, m)`` on flat NumPy vectors for a dense matrix or a linear problem."""
    if hasattr(A, "adjoint") and hasattr(A, "x_shape"):
        x_shape, y_shape = tuple(A.x_shape), tuple(A.y_shape)
        if math.prod(x_shape) != d:
            raise ValueError(f"the problem's x_shape {x_shape} does not match the prior's {event_shape}.")

        def forward(v):
            return np.asarray(to_numpy(A(v.reshape(1, *x_shape))), dtype=np.float64).reshape(-1)

        def adjoint(u):
            return np.asarray(to_numpy(A.adjoint(u.reshape(1, *y_shape))), dtype=np.float64).reshape(-1)

        return forward, adjoint, math.prod(y_shape)
    A = _float_array(A, "A")
    if A.ndim != 2 or A.shape[1] != d:
        raise ValueError(f"A must be a matrix of shape (m, {d}) or a linear problem (got shape {A.shape}).")
    return (lambda v: A @ v), (lambda u: A.T @ u), A.shape[0]


def whitened_posterior_mean(
    mean, cov_sqrt, A, y, noise_cov=None, event_shape=None, tol: float = 1e-10, maxiter=None
) -> np.ndarray:
    """Posterior mean of ``N(mean, S S)`` given ``y = A x + eta`` by conjugate gradients, matrix-free.

    With ``x = mean + S w`` the posterior mean solves the symmetric positive
    definite system ``(I + S A^T N^-1 A S) w = S A^T N^-1 (y - A mean)``,
    whose eigenvalues are all ``>= 1``: the error in ``w`` is at most
    ``tol`` times the norm of the right-hand side, and only a few large
    eigenvalues (the directions the data inform) slow the solve.  Works for
    singular ``S``.  Memory: a few vectors of length ``d`` and ``m``.

    Parameters
    ----------
    mean : ndarray (d,)
    cov_sqrt : callable
        ``w -> S w`` on NumPy vectors (``S`` symmetric, ``S S`` the prior covariance).
    A : array_like (m, d) or linear forward problem
    y : array_like, m entries
    noise_cov : float or array_like (m,), optional
        Positive noise variances; default ``A.noise_std**2`` for a problem.
    event_shape : tuple, optional
        Shape of the result (default ``(d,)``).
    tol : float
    maxiter : int, optional
        Default ``d``; a warning is issued if the solve stops short of ``tol``.

    Returns
    -------
    numpy.ndarray of shape event_shape
    """
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    d = mean.size
    event_shape = (d,) if event_shape is None else tuple(event_shape)
    forward, adjoint, m = _operator(A, d, event_shape)
    y = _float_array(y, "y").reshape(-1)
    if y.size != m:
        raise ValueError(f"y has {y.size} entries but the operator gives {m}.")
    if noise_cov is None:
        if not hasattr(A, "noise_std"):
            raise ValueError("noise_cov is required with a matrix A.")
        noise_cov = np.asarray(to_numpy(A.noise_std), dtype=np.float64) ** 2
    noise = _float_array(noise_cov, "noise_cov").reshape(-1)
    if noise.size == 1:
        noise = np.full(m, noise[0])
    elif noise.size != m:
        raise ValueError(f"noise_cov must be a scalar or {m} variances (got {noise.size} entries).")
    if np.any(noise <= 0):
        raise ValueError("noise_cov must be positive (the whitened solve divides by it).")
    inv_noise = 1.0 / noise

    def normal(w):
        return w + cov_sqrt(adjoint(inv_noise * forward(cov_sqrt(w))))

    b = cov_sqrt(adjoint(inv_noise * (y - forward(mean))))
    w, converged, n_iter, rel = _conjugate_gradient(normal, b, tol, d if maxiter is None else int(maxiter))
    if not converged:
        warnings.warn(
            f"posterior_mean: conjugate gradients stopped after {n_iter} iterations at relative "
            f"residual {rel:.2e} (tol {tol:.1e}); raise maxiter for a more exact answer.",
            RuntimeWarning,
            stacklevel=3,
        )
    return (mean + cov_sqrt(w)).reshape(event_shape)


def _conjugate_gradient(apply, b: np.ndarray, tol: float, maxiter: int):
    """Solve ``apply(x) = b`` (symmetric positive definite); ``(x, converged, iterations, relative residual)``."""
    x = np.zeros_like(b)
    bnorm = float(np.linalg.norm(b))
    if bnorm == 0:
        return x, True, 0, 0.0
    r = b.copy()
    p = r.copy()
    rs = float(r @ r)
    for it in range(1, maxiter + 1):
        Ap = apply(p)
        alpha = rs / float(p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rs_new = float(r @ r)
        if math.sqrt(rs_new) <= tol * bnorm:
            return x, True, it, math.sqrt(rs_new) / bnorm
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x, False, maxiter, math.sqrt(rs) / bnorm
