"""Gaussian prior ``N(mean, cov)`` with an exact EDM denoiser and exact linear-Gaussian posteriors.

Noising a Gaussian in the EDM convention keeps it Gaussian: if
``x_0 ~ N(mu, Sigma)`` and ``x_sigma = x_0 + sigma * eps`` then
``x_sigma ~ N(mu, Sigma + sigma**2 I)`` and the posterior-mean denoiser is

    D(x, sigma) = mu + Sigma (Sigma + sigma**2 I)^-1 (x - mu)
                = mu + U diag(l / (l + sigma**2)) U^T (x - mu),

with ``Sigma = U diag(l) U^T``.  The eigendecomposition is computed once, in
NumPy float64, at construction; each call only needs two matrix products
(none at all for diagonal or isotropic covariances), so it runs in any array
namespace (NumPy, ``array_api_strict``, CuPy, torch with autograd).

This module also holds the small helpers that the mixture and random-field
priors share: covariance parsing, the per-namespace constant cache and exact
Gaussian conditioning.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .._backend import RandomSource, array_device, asarray_like, get_namespace, to_numpy
from ._base import Prior, sigma_column

__all__ = ["GaussianPrior"]

_LOG_2PI = math.log(2.0 * math.pi)
# Relative tolerances for accepting a covariance: rounding in products such as
# a posterior covariance leaves tiny asymmetries and tiny negative eigenvalues.
_SYM_RTOL = 1e-8
_PSD_RTOL = 1e-10


# --------------------------------------------------------------------------
# shared helpers (also used by mixture.py and grf.py)
# --------------------------------------------------------------------------


def _float_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a finite NumPy float64 array, or a ValueError naming ``name``."""
    try:
        arr = np.asarray(to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a real numeric array (got {type(value).__name__}).") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf.")
    return arr


def _parse_cov(cov: np.ndarray, d: int, name: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Split a covariance given as scalar, vector or matrix into eigenvalues and eigenvectors.

    Returns ``(evals, evecs, kind)``: ``evals`` of shape ``(d,)`` (clipped at
    zero), ``evecs`` of shape ``(d, d)`` with ``cov = evecs @ diag(evals) @
    evecs.T`` or ``None`` when the covariance is diagonal in the standard basis,
    and ``kind`` in ``{"isotropic", "diagonal", "full"}``.
    """
    if cov.ndim == 0:
        if cov < 0:
            raise ValueError(f"{name} (a scalar variance) must be >= 0 (got {float(cov)}).")
        return np.full(d, float(cov)), None, "isotropic"
    if cov.shape == (d,):
        if np.any(cov < 0):
            raise ValueError(f"{name} (a vector of variances) must be >= 0 (min {cov.min():.3g}).")
        return cov.copy(), None, "diagonal"
    if cov.shape == (d, d):
        scale = max(float(np.max(np.abs(cov))), np.finfo(np.float64).tiny)
        if np.max(np.abs(cov - cov.T)) > _SYM_RTOL * scale:
            raise ValueError(f"{name} must be a symmetric matrix.")
        evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
        if evals[0] < -_PSD_RTOL * max(float(evals[-1]), scale) * d:
            raise ValueError(f"{name} must be positive semi-definite (smallest eigenvalue {evals[0]:.3g}).")
        return np.clip(evals, 0.0, None), evecs, "full"
    raise ValueError(
        f"{name} must be a scalar, a vector of length {d} or a ({d}, {d}) matrix (got shape {cov.shape})."
    )


def _dense(evals: np.ndarray, evecs: np.ndarray | None) -> np.ndarray:
    """Dense covariance ``U diag(l) U^T`` (or ``diag(l)``)."""
    if evecs is None:
        return np.diag(evals)
    return (evecs * evals) @ evecs.T


def _check_n(n: Any) -> int:
    if not isinstance(n, (numbers.Integral, np.integer)) or n < 0:
        raise ValueError(f"n (the number of samples) must be a non-negative integer (got {n!r}).")
    return int(n)


class _Constants:
    """NumPy constants converted once per (namespace, dtype, device) of the data.

    Values may be NumPy arrays, ``None`` or lists of NumPy arrays (converted
    element-wise), so per-component arrays can be used without indexing,
    which ``array_api_strict`` restricts.
    """

    def __init__(self, **host):
        self._host = host
        self._cache: dict = {}

    def get(self, like) -> dict:
        xp = get_namespace(like)
        key = (getattr(xp, "__name__", str(xp)), str(like.dtype), str(array_device(like)))
        out = self._cache.get(key)
        if out is None:
            out = {k: self._convert(v, like) for k, v in self._host.items()}
            self._cache[key] = out
        return out

    @staticmethod
    def _convert(value, like):
        if value is None:
            return None
        if isinstance(value, list):
            return [None if v is None else asarray_like(v, like) for v in value]
        return asarray_like(value, like)

    def __getstate__(self):
        # Converted arrays may live on a GPU; rebuild them after unpickling.
        return {"_host": self._host, "_cache": {}}


def _shrink(evals, s2, xp):
    """``l / (l + s2)`` with ``0`` where ``l + s2 == 0`` (a zero-variance direction at ``sigma = 0``)."""
    den = evals + s2
    return evals / (den + xp.astype(den == 0, den.dtype))


def _to_coords(xc, evecs):
    """Coordinates of centred rows ``xc`` (n, d) in the eigenbasis."""
    return xc if evecs is None else xc @ evecs


def _from_coords(z, evecs_t):
    """Rows back from eigen-coordinates: ``z @ U^T``."""
    return z if evecs_t is None else z @ evecs_t


def _noise_cov_matrix(noise_cov: Any, m: int) -> np.ndarray:
    """Dense ``(m, m)`` observation-noise covariance from a scalar, a vector or a matrix."""
    arr = _float_array(noise_cov, "noise_cov")
    evals, evecs, _ = _parse_cov(arr, m, "noise_cov")
    return _dense(evals, evecs)


def _check_linear(A: Any, y: Any, d: int) -> tuple[np.ndarray, np.ndarray]:
    A = _float_array(A, "A")
    if A.ndim != 2 or A.shape[1] != d:
        raise ValueError(f"A must be a matrix of shape (m, {d}) acting on x.ravel() (got shape {A.shape}).")
    y = _float_array(y, "y").reshape(-1)
    if y.shape[0] != A.shape[0]:
        raise ValueError(f"y has {y.shape[0]} entries but A has {A.shape[0]} rows.")
    return A, y


def _gaussian_condition(mean, cov, A, y, noise):
    """Condition ``x ~ N(mean, cov)`` on ``y = A x + eta``, ``eta ~ N(0, noise)`` (all float64 NumPy).

    Returns ``(post_mean, post_cov, log_evidence)`` where ``log_evidence`` is
    ``log N(y; A mean, A cov A^T + noise)``.  The gain comes from a Cholesky
    solve and the covariance from the Joseph form
    ``(I - K A) cov (I - K A)^T + K noise K^T``, which stays symmetric
    positive semi-definite under rounding.
    """
    from scipy import linalg as sla  # here, not at module level: keeps `import kalmandiff` light

    m, d = A.shape
    a_cov = A @ cov
    innov = a_cov @ A.T + noise
    innov = 0.5 * (innov + innov.T)
    try:
        chol = np.linalg.cholesky(innov)
    except np.linalg.LinAlgError as exc:
        raise ValueError(
            "A @ cov @ A.T + noise_cov is not positive definite: the observation does not "
            "determine a proper Gaussian (add observation noise or check A)."
        ) from exc
    gain = sla.cho_solve((chol, True), a_cov).T  # K = cov A^T S^-1, shape (d, m)
    resid = y - A @ mean
    post_mean = mean + gain @ resid
    ika = np.eye(d) - gain @ A
    post_cov = ika @ cov @ ika.T + gain @ noise @ gain.T
    post_cov = 0.5 * (post_cov + post_cov.T)
    white = sla.solve_triangular(chol, resid, lower=True)
    log_evidence = -0.5 * float(white @ white) - float(np.sum(np.log(np.diag(chol)))) - 0.5 * m * _LOG_2PI
    return post_mean, post_cov, log_evidence


# --------------------------------------------------------------------------
# the prior
# --------------------------------------------------------------------------


class GaussianPrior(Prior):
    """Gaussian prior ``x_0 ~ N(mean, cov)`` with its exact EDM denoiser.

    Parameters
    ----------
    mean : array_like, shape event_shape
        Prior mean; its shape is the event shape (any shape; the covariance
        acts on ``mean.ravel()``, of length ``d``).  Any namespace; stored as
        NumPy float64.
    cov : float, array_like of shape (d,) or (d, d)
        Prior covariance in the units of ``mean`` squared: a scalar variance
        (isotropic, ``cov * I``), a vector of variances (diagonal) or a
        symmetric positive semi-definite matrix.  Singular covariances are
        allowed (the denoiser then projects onto the support).

    Attributes
    ----------
    event_shape : tuple of int
        Shape of one sample.
    dim : int
        ``d = prod(event_shape)``.
    cov_kind : {"isotropic", "diagonal", "full"}
        How ``cov`` was given; isotropic and diagonal covariances never build
        a ``d x d`` matrix in :meth:`denoise` or :meth:`sample`.

    Notes
    -----
    ``denoise(x, sigma) = mean + cov (cov + sigma**2 I)^-1 (x - mean)``, the
    exact ``E[x_0 | x_0 + sigma * eps = x]``; ``posterior`` conditions on a
    linear observation exactly.

    Examples
    --------
    >>> import numpy as np
    >>> prior = GaussianPrior(np.zeros(2), np.array([1.0, 4.0]))
    >>> prior.denoise(np.array([[1.0, 1.0]]), 1.0)
    array([[0.5, 0.8]])
    """

    def __init__(self, mean: Any, cov: Any):
        mean = _float_array(mean, "mean")
        if mean.size == 0:
            raise ValueError("mean must have at least one element.")
        self._setup(mean, *_parse_cov(_float_array(cov, "cov"), int(mean.size), "cov"))

    @classmethod
    def _from_eigen(cls, mean: Any, evals: Any, evecs: Any, kind: str) -> GaussianPrior:
        """The prior of a stored eigendecomposition (what ``_parse_cov`` returned), bit for bit
        (:func:`kalmandiff.load`: decomposing a dense covariance again would differ in rounding)."""
        mean, evals = _float_array(mean, "mean"), _float_array(evals, "evals")
        evecs = None if evecs is None else _float_array(evecs, "evecs")
        d = int(mean.size)
        expected_evecs = None if kind in ("isotropic", "diagonal") else (d, d)
        if (
            kind not in ("isotropic", "diagonal", "full")
            or d == 0
            or evals.shape != (d,)
            or (None if evecs is None else evecs.shape) != expected_evecs
        ):
            raise ValueError(f"not the eigendecomposition of a {d}-dimensional {kind!r} covariance.")
        self = cls.__new__(cls)
        self._setup(mean, evals, evecs, kind)
        return self

    def _setup(self, mean: np.ndarray, evals: np.ndarray, evecs, kind: str) -> None:
        self.event_shape = tuple(mean.shape)
        self.dim = int(mean.size)
        self._mean = mean.reshape(-1)
        self.cov_kind = kind
        self._evals = evals
        self._evecs = evecs
        self._consts = _Constants(
            mean=self._mean,
            evals=evals,
            sqrt_evals=np.sqrt(evals),
            evecs=evecs,
            evecs_t=None if evecs is None else np.ascontiguousarray(evecs.T),
        )

    # ---------------------------------------------------------------- views
    @property
    def mean(self) -> np.ndarray:
        """Prior mean, NumPy float64 of shape ``event_shape``."""
        return self._mean.reshape(self.event_shape).copy()

    @property
    def cov(self) -> np.ndarray:
        """Dense prior covariance, NumPy float64 of shape ``(d, d)`` (acting on ``x.ravel()``)."""
        return _dense(self._evals, self._evecs)

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of ``cov`` (NumPy, shape ``(d,)``; not sorted for diagonal covariances)."""
        return self._evals.copy()

    def marginal_std(self, sigma: float = 0.0) -> np.ndarray:
        """Pointwise standard deviation of ``x_sigma``, ``sqrt(diag(cov) + sigma**2)``, shape ``event_shape``."""
        if self._evecs is None:
            var = self._evals
        else:
            var = np.einsum("ij,j,ij->i", self._evecs, self._evals, self._evecs)
        return np.sqrt(var + float(sigma) ** 2).reshape(self.event_shape)

    def noised(self, sigma: float) -> GaussianPrior:
        """The law of ``x_sigma = x_0 + sigma * eps``: ``N(mean, cov + sigma**2 I)``, same cov kind."""
        s2 = float(sigma) ** 2
        if self.cov_kind == "isotropic":
            cov = self._evals[0] + s2
        elif self.cov_kind == "diagonal":
            cov = self._evals + s2
        else:
            cov = self.cov + s2 * np.eye(self.dim)
        return GaussianPrior(self.mean, cov)

    def __repr__(self) -> str:
        return f"GaussianPrior(event_shape={self.event_shape}, cov_kind={self.cov_kind!r})"

    # ------------------------------------------------------------ denoising
    def denoise(self, x, sigma):
        """Exact posterior mean ``E[x_0 | x_sigma = x]``.

        Parameters
        ----------
        x : array, shape (n, *event_shape)
            Noisy batch in any supported namespace (real floating dtype).
        sigma : float or array of shape (n,)
            EDM noise level(s), same units as ``x``; one per particle if an array.

        Returns
        -------
        array, shape (n, *event_shape)
            ``mean + cov (cov + sigma**2 I)^-1 (x - mean)``, in x's namespace,
            device and dtype.
        """
        xp, xf = self._flat(x)
        c = self._consts.get(x)
        s2 = sigma_column(sigma, xf) ** 2
        z = _to_coords(xf - c["mean"], c["evecs"])
        out = c["mean"] + _from_coords(z * _shrink(c["evals"], s2, xp), c["evecs_t"])
        return xp.reshape(out, x.shape)

    def log_prob(self, x, sigma=0.0):
        """Log density of ``x_sigma``, ``log N(x; mean, cov + sigma**2 I)``.

        Parameters
        ----------
        x : array, shape (n, *event_shape)
        sigma : float or array of shape (n,), optional
            Noise level; ``0`` (default) gives the prior's own log density,
            which needs a non-singular ``cov``.

        Returns
        -------
        array, shape (n,)
            In x's namespace and dtype.
        """
        if isinstance(sigma, numbers.Number) and sigma == 0 and np.min(self._evals) <= 0:
            raise ValueError("log_prob at sigma=0 needs a non-singular cov.")
        xp, xf = self._flat(x)
        c = self._consts.get(x)
        s2 = sigma_column(sigma, xf) ** 2
        var = c["evals"] + s2
        z = _to_coords(xf - c["mean"], c["evecs"])
        maha = xp.sum(z * z / var, axis=-1)
        logdet = xp.sum(xp.log(var), axis=-1)
        return -0.5 * (maha + logdet + self.dim * _LOG_2PI)

    # ------------------------------------------------------------- sampling
    def sample(self, n: int, random_state: Any = None, like: Any = None):
        """Draw ``n`` samples ``mean + U diag(sqrt(l)) z``, ``z ~ N(0, I)``.

        Parameters
        ----------
        n : int
            Number of samples.
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
        out = c["mean"] + _from_coords(z * c["sqrt_evals"], c["evecs_t"])
        return xp.reshape(out, (n, *self.event_shape))

    # ------------------------------------------------------------ posterior
    def posterior(self, A: Any, y: Any, noise_cov: Any) -> GaussianPrior:
        """Exact posterior given ``y = A @ x.ravel() + eta``, ``eta ~ N(0, noise_cov)``.

        Parameters
        ----------
        A : array_like, shape (m, d)
            Linear forward operator acting on the flattened ``x``.
        y : array_like, m entries
            Observation (any shape with ``m`` elements; flattened).
        noise_cov : float, array_like of shape (m,) or (m, m)
            Observation-noise covariance (a variance, not a standard
            deviation): scalar, vector of variances or matrix.

        Returns
        -------
        GaussianPrior
            ``N(m_post, C_post)`` with ``K = cov A^T (A cov A^T + noise_cov)^-1``,
            ``m_post = mean + K (y - A mean)``, ``C_post = (I - K A) cov``
            (computed in float64 with Cholesky solves and the Joseph form).
        """
        return GaussianPrior(*self._condition(A, y, noise_cov)[:2])

    def log_evidence(self, A: Any, y: Any, noise_cov: Any) -> float:
        """``log p(y) = log N(y; A mean, A cov A^T + noise_cov)`` for the linear model of :meth:`posterior`."""
        return self._condition(A, y, noise_cov)[2]

    def _condition(self, A, y, noise_cov):
        A, y = _check_linear(A, y, self.dim)
        noise = _noise_cov_matrix(noise_cov, A.shape[0])
        post_mean, post_cov, log_ev = _gaussian_condition(self._mean, self.cov, A, y, noise)
        return post_mean.reshape(self.event_shape), post_cov, log_ev
