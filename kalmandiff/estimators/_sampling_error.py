"""Sampling-error correction: localisation without positions (Lee 2021; Vishny, Morzfeld et al. 2024).

Each sample correlation of the ensemble is shrunk towards zero by a function
of itself and of ``J``; only the two covariance blocks the updates use are
formed.  See the docstring of :mod:`kalmandiff.estimators.localization`.
"""

from __future__ import annotations

import math
import numbers

from .._backend import get_namespace

__all__ = ["SamplingErrorCorrection", "correlation_std"]


def correlation_std(r, J: int):
    """Standard deviation of a sample correlation of ``J`` Gaussian pairs whose correlation is ``r``.

    From Fisher's transformation (``atanh`` of a sample correlation is about
    normal with standard deviation ``s = 1 / sqrt(J - 3)``): half the width
    of ``tanh(atanh(r) +- s)``, as Flowerdew (2015) does; about
    ``(1 - r^2) / sqrt(J - 3)`` for small ``s``.  ``J <= 4`` uses ``s = 1``.

    Parameters
    ----------
    r : array
        Correlations in ``[-1, 1]``, any shape, any array namespace.
    J : int
        Ensemble size.

    Returns
    -------
    array, shape of ``r``
        Dimensionless; 0 at ``|r| = 1``.
    """
    xp = get_namespace(r)
    s = 1.0 / math.sqrt(max(J - 3, 1))
    z = xp.atanh(xp.clip(r, -1.0 + 1e-12, 1.0 - 1e-12))
    return 0.5 * (xp.tanh(z + s) - xp.tanh(z - s))


class SamplingErrorCorrection:
    """Geometry-free localisation: shrink the ensemble's correlations by a function of themselves and ``J``.

    The updates use the covariances ``C_xG`` (``d x m``) and ``C_GG``
    (``m x m``).  Each is written ``V R W`` with the ensemble standard
    deviations on the diagonals of ``V`` and ``W`` and the sample
    correlations ``R``; the correction replaces ``R`` entrywise and the
    covariance is rebuilt with the same standard deviations (so variances
    are kept: the diagonal of ``R_GG`` stays 1).  Only these two blocks are
    formed, never the ``(d + m) x (d + m)`` joint covariance: memory
    ``O(d m + m^2)``, refused beyond ``d m + m^2 = MAX_TAPER_ENTRIES``.

    Parameters
    ----------
    method : {"secnice", "sec"}, default "secnice"
        ``"sec"`` (Lee 2021): ``R' = R |R|^alpha``, then entries with
        ``|R'| <= cutoff`` set to zero.  ``"secnice"`` (Vishny, Morzfeld et
        al. 2024), parameter-free: for each block separately, with
        ``tol = delta ||sd(R)||_F`` the Frobenius norm of the sampling
        standard deviations of its correlations (:func:`correlation_std`),
        find the smallest even ``g`` in 2, 4, ..., 10 with
        ``||R^(g+1) - R||_F > tol`` (powers entrywise; odd powers of a
        correlation matrix stay positive semi-definite, by the Schur product
        theorem), then take the largest ``t`` in ``[0, 1]`` with
        ``||(1 - t) R^(g-1) + t R^(g+1) - R||_F <= tol`` (a quadratic in
        ``t``, solved exactly; EnsembleKalmanProcesses.jl scans ten values),
        and ``R' = (1 - t) R^(g-1) + t R^(g+1)``.  If no ``g <= 10`` exceeds
        the tolerance, ``R' = R^11``.
    alpha : float, default 2.0
        ``"sec"`` only: the exponent (Lee's ``R |R|^2``).
    cutoff : float, default 0.0
        ``"sec"`` only: corrected correlations of at most this magnitude
        become zero.  A positive cutoff can make ``C_GG`` indefinite.
    delta : float, default 1.0
        ``"secnice"`` only: the discrepancy-principle factor (larger: more
        shrinkage).

    Examples
    --------
    >>> kd.EnKGSolver(prior, update="kalman-sqrt", localization="secnice")  # doctest: +SKIP
    >>> kd.EnKGSolver(prior, localization=SamplingErrorCorrection("sec", alpha=2.0))  # doctest: +SKIP
    """

    max_exponent = 10

    def __init__(self, method: str = "secnice", alpha: float = 2.0, cutoff: float = 0.0, delta: float = 1.0):
        if method not in ("sec", "secnice"):
            raise ValueError(f"SamplingErrorCorrection method must be 'sec' or 'secnice' (got {method!r}).")
        for name, value, low in (("alpha", alpha, 0.0), ("cutoff", cutoff, 0.0), ("delta", delta, 0.0)):
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value < low or (name == "delta" and value == 0):
                raise ValueError(
                    f"SamplingErrorCorrection {name} must be a finite number >= 0 (got {value!r})."
                )
        if cutoff >= 1:
            raise ValueError(f"SamplingErrorCorrection cutoff must be below 1 (got {cutoff!r}).")
        self.method, self.alpha, self.cutoff, self.delta = method, float(alpha), float(cutoff), float(delta)

    def correct(self, R, J: int):
        """The corrected correlations ``R'`` of one block (any shape, any namespace)."""
        xp = get_namespace(R)
        if self.method == "sec":
            out = R * xp.abs(R) ** self.alpha
            return xp.where(xp.abs(out) > self.cutoff, out, xp.zeros_like(out)) if self.cutoff else out
        tol = self.delta * float(xp.sqrt(xp.sum(correlation_std(R, J) ** 2)))
        R2 = R * R
        low, high, g = R, R * R2, 2  # R^(g-1), R^(g+1)
        while _frobenius(high - R) <= tol and g < self.max_exponent:
            low, high, g = high, high * R2, g + 2
        a, b = low - R, high - low
        aa, ab, bb = (float(xp.sum(u * v)) for u, v in ((a, a), (a, b), (b, b)))
        if bb == 0.0 or aa + 2 * ab + bb <= tol**2:
            return high
        # ||a + t b||^2 = tol^2: the larger root; aa <= tol^2, so it lies in [0, 1].
        t = (-ab + math.sqrt(max(ab * ab - bb * (aa - tol**2), 0.0))) / bb
        t = min(max(t, 0.0), 1.0)
        return (1.0 - t) * low + t * high

    def localise(self, Cxg, Cgg, A, Gw):
        """Corrected ``(C_xG, C_GG)`` from the ensemble's covariances and anomalies.

        Parameters
        ----------
        Cxg : array ``(d, m)``
        Cgg : array ``(m, m)``
            Ensemble covariances (divisor ``J - 1``), float64.
        A : array ``(J, d)``
            Anomalies of the unknowns (rows minus their mean), float64.
        Gw : array ``(J, m)``
            Anomalies of the (whitened) forward values, float64.
        """
        xp = get_namespace(Cxg)
        J = A.shape[0]
        sx = _inverse_or_zero(xp.sqrt(xp.sum(A * A, axis=0) / (J - 1)))
        sg = _inverse_or_zero(xp.sqrt(xp.linalg.diagonal(Cgg)))
        Rxg = self.correct(xp.clip(Cxg * sx[:, None] * sg[None, :], -1.0, 1.0), J)
        Rgg = self.correct(xp.clip(Cgg * sg[:, None] * sg[None, :], -1.0, 1.0), J)
        vx, vg = _inverse_or_zero(sx), _inverse_or_zero(sg)
        return Rxg * vx[:, None] * vg[None, :], Rgg * vg[:, None] * vg[None, :]

    def __repr__(self) -> str:
        if self.method == "secnice":
            return f"SamplingErrorCorrection('secnice', delta={self.delta!r})"
        return f"SamplingErrorCorrection('sec', alpha={self.alpha!r}, cutoff={self.cutoff!r})"


def _frobenius(B) -> float:
    xp = get_namespace(B)
    return float(xp.sqrt(xp.sum(B * B)))


def _inverse_or_zero(s):
    """``1 / s`` entrywise, 0 where ``s`` is 0 (a member-constant quantity has no correlations)."""
    xp = get_namespace(s)
    zero = s == 0
    return xp.where(zero, xp.zeros_like(s), 1.0 / xp.where(zero, xp.ones_like(s), s))
