"""Periodic Gaussian random field prior, diagonal in Fourier space, with an exact EDM denoiser.

On an ``H x W`` periodic grid of side ``L`` the field has covariance
``Sigma = F^-1 diag(mu) F`` (``F`` the unnormalised 2-D DFT), one independent
copy per channel, with spectrum

    mu_k = c * (4 pi^2 |k|^2 / L^2 + tau^2)^(-alpha),   mu_0 = 0,

``k`` the integer frequencies of the grid (``fftfreq(n) * n`` per axis).
Because ``F / sqrt(HW)`` is unitary, ``mu_k`` are exactly the eigenvalues of
``Sigma``; the pointwise variance is their mean, ``sum_k mu_k / (H W)``.

Sampling: ``x = ifft(sqrt(mu) * fft(z))`` with white real noise ``z ~ N(0, I)``
has covariance ``F^-1 diag(sqrt mu) F F^H diag(sqrt mu) F^-H = F^-1 diag(mu) F``
(``F F^H = HW I`` and ``F^-H = F / HW``).  Denoising:
``D(x, sigma) = ifft(fft(x) * mu / (mu + sigma**2))``, which is
``Sigma (Sigma + sigma**2 I)^-1 x`` written in the eigenbasis.  Real FFTs
(``rfftn`` / ``irfftn``) do both, since ``mu`` is real and even in ``k``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backend import RandomSource, get_namespace
from ._base import Prior, sigma_column
from .gaussian import GaussianPrior, _check_n, _Constants, _float_array, _shrink

__all__ = ["GaussianRandomFieldPrior"]

# cov_matrix() refuses dense matrices beyond this many rows unless asked.
_MAX_DENSE_DIM = 4096


def _grf_spectrum(h: int, w: int, alpha: float, tau: float, length: float) -> np.ndarray:
    """Unscaled spectrum ``(4 pi^2 |k|^2 / L^2 + tau^2)^(-alpha)`` on the FFT grid, zero mean mode."""
    k1 = np.fft.fftfreq(h) * h
    k2 = np.fft.fftfreq(w) * w
    k_sq = k1[:, None] ** 2 + k2[None, :] ** 2
    lam = (4.0 * math.pi**2 * k_sq / length**2 + tau**2) ** (-alpha)
    lam[0, 0] = 0.0
    return lam


def _positive(value: Any, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a positive number (got {value!r}).") from exc
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number (got {value}).")
    return value


class GaussianRandomFieldPrior(Prior):
    """Isotropic periodic Gaussian random field ``N(mean, c (-Laplacian + tau^2)^(-alpha))`` on a grid.

    Parameters
    ----------
    shape : tuple of int
        ``(C, H, W)``: ``C`` independent channels of ``H x W`` fields, or
        ``(H, W)``, treated as ``(1, H, W)`` (the event shape is then
        ``(1, H, W)``).  ``H * W >= 2``.
    alpha : float, default 2.5
        Smoothness exponent (larger is smoother).
    tau : float, default 3.0
        Inverse correlation length (in units of ``2 pi / L``).
    scale : float, optional
        Pointwise marginal standard deviation of the field.  If given, ``c``
        is set so that ``Var x[p] = scale**2`` at every pixel.  If ``None``,
        ``c = H * W * tau**(2 alpha - 2)``; see Notes.
    length : float, default ``2 pi``
        Side ``L`` of the periodic domain (the grid spacing is ``L / H``, ``L / W``).
    mean : float or array_like broadcastable to the event shape, default 0
        Mean field added to the zero-mean fluctuation.

    Attributes
    ----------
    event_shape : tuple of int
        ``(C, H, W)``.
    spectrum : numpy.ndarray, shape (H, W)
        ``mu_k`` on the unshifted FFT grid (the eigenvalues of each channel's covariance).
    pointwise_std : float
        ``sqrt(mean(mu))``, the standard deviation of every pixel.

    Notes
    -----
    The mean Fourier mode has zero variance: every sample's spatial mean
    over each channel equals that of ``mean`` exactly, and ``denoise``
    restores it (it removes the spatial mean of ``x - mean``).

    Default normalisation: with ``sigma_g**2 = tau**(2 alpha - 2)`` (the
    ``d = 2`` case of ``tau**(2 alpha - d)`` used by the FNO / PINO
    generators), we take ``c = H W sigma_g**2``.  Then
    ``Var x[p] = sigma_g**2 * sum_{k != 0} lambda_k``, which does not depend
    on the resolution (for ``alpha > 1`` the sum converges as the grid is
    refined), whereas ``c = sigma_g**2`` would make the field vanish as
    ``1 / (H W)`` on finer grids.  For ``length = 1`` this is exactly the
    covariance of FNO's ``GaussianRF`` sampler; PINO's ``GaussianRF2d``
    (``length = 2 pi``) has twice this variance on most modes (and an
    anisotropic half on two columns of its half-plane).

    Examples
    --------
    >>> prior = GaussianRandomFieldPrior((1, 16, 16), alpha=2.5, tau=3.0, scale=1.0)
    >>> x = prior.sample(4, random_state=0)
    >>> x.shape
    (4, 1, 16, 16)
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        alpha: float = 2.5,
        tau: float = 3.0,
        scale: float | None = None,
        length: float = 2.0 * math.pi,
        mean: Any = 0.0,
    ):
        shape = self._parse_shape(shape)
        self.event_shape = shape
        self.shape = shape
        self.alpha = _positive(alpha, "alpha")
        self.tau = _positive(tau, "tau")
        self.length = _positive(length, "length")
        self.scale = None if scale is None else _positive(scale, "scale")
        _, h, w = shape
        lam = _grf_spectrum(h, w, self.alpha, self.tau, self.length)
        if self.scale is None:
            self.amplitude = h * w * self.tau ** (2.0 * self.alpha - 2.0)
        else:
            self.amplitude = self.scale**2 / float(lam.mean())
        self.spectrum = self.amplitude * lam
        self.pointwise_std = math.sqrt(float(self.spectrum.mean()))
        mean = _float_array(mean, "mean")
        try:
            self._mean = np.broadcast_to(mean, shape).copy()
        except ValueError as exc:
            raise ValueError(f"mean must broadcast to shape {shape} (got shape {mean.shape}).") from exc
        # Half-plane spectra for rfftn / irfftn.
        half = self.spectrum[:, : w // 2 + 1]
        self._consts = _Constants(
            mean=None if not np.any(self._mean) else self._mean,
            mu=np.ascontiguousarray(half),
            sqrt_mu=np.ascontiguousarray(np.sqrt(half)),
        )

    @staticmethod
    def _parse_shape(shape) -> tuple[int, int, int]:
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError as exc:
            raise ValueError(f"shape must be (C, H, W) or (H, W) (got {shape!r}).") from exc
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or min(shape) < 1 or shape[1] * shape[2] < 2:
            raise ValueError(
                f"shape must be (C, H, W) or (H, W) with positive sizes and H * W >= 2 (got {shape})."
            )
        return shape

    @property
    def mean(self) -> np.ndarray:
        """Mean field, NumPy float64 of shape ``event_shape``."""
        return self._mean.copy()

    def __repr__(self) -> str:
        return (
            f"GaussianRandomFieldPrior(shape={self.shape}, alpha={self.alpha}, tau={self.tau}, "
            f"scale={self.scale}, length={self.length})"
        )

    def _filter(self, x, gain):
        """``irfftn(rfftn(x - mean) * gain) + mean`` over the last two axes."""
        xp = get_namespace(x)
        c = self._consts.get(x)
        hw = self.shape[1:]
        xc = x if c["mean"] is None else x - c["mean"]
        out = xp.fft.irfftn(xp.fft.rfftn(xc, axes=(-2, -1)) * gain, s=hw, axes=(-2, -1))
        return out if c["mean"] is None else out + c["mean"]

    def denoise(self, x, sigma):
        """Exact posterior mean ``mean + ifft(fft(x - mean) * mu / (mu + sigma**2))`` per channel.

        Parameters
        ----------
        x : array, shape (n, C, H, W)
            Noisy batch in any supported namespace (real floating dtype).
        sigma : float or array of shape (n,)
            EDM noise level(s), same units as ``x``.

        Returns
        -------
        array, shape (n, C, H, W)
            In x's namespace, device and dtype.
        """
        self._check_batch(x)
        xp = get_namespace(x)
        mu = self._consts.get(x)["mu"]
        s2 = sigma_column(sigma, x) ** 2
        return self._filter(x, _shrink(mu, s2, xp))

    def sample(self, n: int, random_state: Any = None, like: Any = None):
        """Draw ``n`` fields ``mean + ifft(sqrt(mu) * fft(z))``, ``z ~ N(0, I)`` real white noise.

        Parameters
        ----------
        n : int
        random_state : None, int, numpy.random.Generator or RandomSource
            Seed; the same value gives the same samples.
        like : array, optional
            Namespace, device and dtype of the result (default NumPy float64).

        Returns
        -------
        array, shape (n, C, H, W)
            Real fields; each channel's spatial mean equals that of ``mean``.
        """
        n = _check_n(n)
        z = RandomSource(random_state, stream="prior-sample").normal((n, *self.shape), like=like)
        return self._filter(z, self._consts.get(z)["sqrt_mu"]) if n else z

    def cov_matrix(self, max_dim: int = _MAX_DENSE_DIM) -> np.ndarray:
        """Dense covariance of the flattened field, NumPy float64 of shape ``(d, d)``, ``d = C H W``.

        Block diagonal over channels; each block is the circulant
        ``Sigma[p, q] = r[(p - q) mod (H, W)]`` with ``r = ifft2(mu)`` real.
        Refuses ``d > max_dim`` (memory grows as ``d**2``).
        """
        c, h, w = self.shape
        d = c * h * w
        if d > max_dim:
            raise ValueError(
                f"cov_matrix would have {d} rows (> max_dim={max_dim}); raise max_dim to force it."
            )
        r = np.fft.ifft2(self.spectrum).real
        ii, jj = np.divmod(np.arange(h * w), w)
        block = r[(ii[:, None] - ii[None, :]) % h, (jj[:, None] - jj[None, :]) % w]
        return np.kron(np.eye(c), block)

    def as_gaussian(self, max_dim: int = _MAX_DENSE_DIM) -> GaussianPrior:
        """The same prior as a :class:`GaussianPrior` with a dense covariance (small grids only)."""
        return GaussianPrior(self._mean, self.cov_matrix(max_dim))

    def posterior(self, A: Any, y: Any, noise_cov: Any) -> GaussianPrior:
        """Exact posterior for ``y = A @ x.ravel() + eta`` (small grids), see :meth:`GaussianPrior.posterior`."""
        return self.as_gaussian().posterior(A, y, noise_cov)

    def posterior_mean(self, A: Any, y: Any, noise_cov: Any = None, tol: float = 1e-10, maxiter=None):
        """Exact posterior mean for ``y = A x + eta`` on any grid, matrix-free (conjugate gradients).

        ``A`` is an ``(m, d)`` matrix or a linear forward problem (applied through
        its ``forward`` / ``adjoint``); see
        :meth:`LowRankGaussianPrior.posterior_mean <kalmandiff.priors.LowRankGaussianPrior.posterior_mean>`
        for the parameters.  Returns a NumPy array of shape ``event_shape``.
        """
        from .lowrank import whitened_posterior_mean

        sqrt_mu = self._consts.get(np.zeros(1))["sqrt_mu"]
        hw = self.shape[1:]

        def cov_sqrt(w):
            field = np.fft.irfftn(
                np.fft.rfftn(w.reshape(self.shape), axes=(-2, -1)) * sqrt_mu, s=hw, axes=(-2, -1)
            )
            return field.reshape(-1)

        return whitened_posterior_mean(
            self._mean.reshape(-1), cov_sqrt, A, y, noise_cov, self.event_shape, tol=tol, maxiter=maxiter
        )
