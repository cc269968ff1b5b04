"""Ensemble Kalman updates written once against the array API.

These are the pieces that EnKG and EKI share, kept apart from any forward
model (as EnsembleKalmanProcesses.jl keeps its update apart from ``G``).
Particles arrive flattened: ``X`` of shape ``(J, d)`` and forward values
``G`` of shape ``(J, m)``.  No ``d x d`` or ``m x m`` matrix is ever formed:
every update works in the ``J``-dimensional span of the ensemble, at a cost
of ``O(J^2 (d + m))`` per update.  The localised Kalman updates (a ``taper``
from :mod:`.localization`) are the exception: they form the tapered
``d x m`` cross-covariance and ``m x m`` data covariance, at a cost of
``O(J d m + J m^2 + m^3)`` per update and ``O(d m + m^2)`` memory.
"""

from __future__ import annotations

import math

from .._backend import RandomSource, array_device, get_namespace

__all__ = [
    "centred",
    "coefficient_matrix",
    "normalised_gradient_update",
    "kalman_update",
    "sqrt_kalman_update",
    "kalman_gain",
    "redraw_from_ensemble",
    "data_misfit_step",
]


def centred(A):
    """Rows of ``A`` (``(J, k)``) minus their mean over the ensemble axis."""
    xp = get_namespace(A)
    return A - xp.mean(A, axis=0, keepdims=True)


def coefficient_matrix(E, G):
    """EnKG / Kovachki-Stuart coefficient matrix ``C_jk = <E_j, G_k - mean G> / J``.

    Parameters
    ----------
    E : array ``(J, m)``
        Weighted residuals, ``Gamma^{-1} (G_j - y)`` (up to a scalar).
    G : array ``(J, m)``
        Forward values.

    Returns
    -------
    array ``(J, J)``
    """
    J = G.shape[0]
    return (E @ centred(G).T) / J


def normalised_gradient_update(X, E, G, step: float, eps: float = 0.0):
    """The EnKG paper's update: a statistically linearised gradient step.

    ``x_j <- x_j - step / ||C||_F * sum_k C_jk (x_k - mean x)`` with
    ``C = coefficient_matrix(E, G)``: the Kovachki-Stuart adaptive step of
    continuous-time ensemble Kalman inversion, as the reference EnKG code
    applies it to the noisy particles.

    Parameters
    ----------
    X : array ``(J, d)``
        Particles.
    E : array ``(J, m)``
        Weighted residuals.
    G : array ``(J, m)``
        Forward values.
    step : float
        ``h``, the guidance scale at this step.
    eps : float
        Added to ``||C||_F`` (the reference code uses none; a collapsed
        ensemble then gives ``C = 0`` and the update is skipped).

    Returns
    -------
    X_new : array ``(J, d)``
    norm : float
        ``||C||_F``.
    """
    xp = get_namespace(X)
    C = coefficient_matrix(E, G)
    norm = float(xp.sqrt(xp.sum(C * C)))
    if norm + eps == 0.0 or not math.isfinite(norm):
        return X, norm
    return X - (step / (norm + eps)) * (C @ centred(X)), norm


def kalman_update(X, G, y, noise_std, inflation: float, rng: RandomSource, residual=None, taper=None):
    """Stochastic ensemble Kalman update with perturbed observations.

    ``x_j <- x_j + C_xG (C_GG + a Gamma)^{-1} (y + sqrt(a) eta_j - G_j)``,
    ``eta_j ~ N(0, Gamma)``, ``Gamma = diag(noise_std**2)``, ``a = inflation``.
    With inflations ``a_l`` whose inverses sum to one, repeated updates are
    ES-MDA: exact for linear-Gaussian problems as ``J -> infinity``.

    The gain is applied in ensemble space: with whitened anomalies
    ``Ghat = (G - mean G) Gamma^{-1/2}`` the weights of the anomalies are
    ``Ghat (Ghat^T Ghat + c I)^{-1} = (Ghat Ghat^T + c I)^{-1} Ghat``,
    ``c = (J - 1) a``: an ``m x m`` or a ``J x J`` solve (float64), whichever
    is smaller, and ``O(J^2 (d + m))`` matrix products otherwise.

    Parameters
    ----------
    X : array ``(J, d)``
    G : array ``(J, m)``
    y : array ``(m,)``
    noise_std : array ``(m,)``
        Observation noise standard deviations, all positive.
    inflation : float
        ``a >= 1`` for a tempered step (``a = 1``: one full update).
    rng : RandomSource
        Draws the observation perturbations.
    residual : callable, optional
        ``residual(G, data) -> G - data`` on ``(J, m)`` rows; defaults to
        plain subtraction.  Problems whose data are angles (closure phases)
        pass a residual that wraps the difference.
    taper : Taper or SamplingErrorCorrection, optional
        Localisation (:func:`~kalmandiff.estimators.localization.make_localizer`):
        the gain becomes ``(rho_xG o C_xG) (rho_GG o C_GG + a Gamma)^{-1}``
        (Schur products with the tapers ``(d, m)`` and ``(m, m)``), or the
        same with the sampling-error-corrected covariances, applied to the
        same perturbed innovations; see :func:`kalman_gain`.  None: the
        unlocalised ensemble-space update above.
    """
    xp = get_namespace(X)
    J = X.shape[0]
    # Centred perturbations: their ensemble mean is zero, so they add spread
    # without moving the ensemble mean (a standard variance reduction).
    eta = centred(rng.normal(tuple(G.shape), like=G)) * math.sqrt(J / (J - 1))
    perturbed = y + math.sqrt(inflation) * noise_std * eta
    innov = perturbed - G if residual is None else -residual(G, perturbed)
    Gw = xp.astype(centred(G) / noise_std, xp.float64)
    Rw = xp.astype(innov / noise_std, xp.float64)
    if taper is not None:
        Cxg, S = _tapered_covariances(X, Gw, inflation, taper)
        # x_j += (rho o C_xG) S^{-1} r_j, whitened: an m x m solve for all members at once.
        return X + xp.astype((Cxg @ xp.linalg.solve(S, Rw.T)).T, X.dtype)
    c = (J - 1) * inflation
    m = Gw.shape[1]
    if m < J:
        # (Ghat^T Ghat + c I)^{-1} in data space: an m x m solve.
        gram = Gw.T @ Gw + c * xp.eye(m, dtype=xp.float64, device=array_device(X))
        W = Gw @ xp.linalg.solve(gram, Rw.T)
    else:
        # Push-through identity: the same gain from a J x J solve.
        gram = Gw @ Gw.T + c * xp.eye(J, dtype=xp.float64, device=array_device(X))
        W = xp.linalg.solve(gram, Gw @ Rw.T)
    # Column j of W holds the weights of the anomalies in member j's update.
    return X + xp.astype(W.T, X.dtype) @ centred(X)


def sqrt_kalman_update(X, G, y, noise_std, inflation: float, residual=None, taper=None):
    """Deterministic square-root (ETKF-style) ensemble Kalman update.

    The mean moves by the Kalman gain applied to the unperturbed innovation
    ``y - mean G``; the anomalies are transformed by
    ``T = (I + Ghat Ghat^T / c)^{-1/2}``, ``c = (J - 1) a``, which gives them
    exactly the analysis covariance of a linear-Gaussian update.  No
    observation perturbations, hence no extra sampling noise.  Computed from
    the thin SVD of the whitened anomalies ``Ghat`` (``J x m``), at a cost of
    ``O(J r (m + d))`` with ``r = min(J, m)``; no ``J x J`` matrix is formed.

    With a ``taper`` (localisation) no ensemble-space transform exists;
    the update is then written with gains in data space (whitened, so that
    ``Gamma = I``): with ``K = (rho_xG o C_xG) S^{-1}`` and
    ``S = rho_GG o C_GG + a I``, the mean moves by ``K (y - mean G)`` and the
    anomalies by ``A <- A - Ktilde (G - mean G)`` with the square-root gain
    ``Ktilde = (rho_xG o C_xG) S^{-1/2} (S^{1/2} + sqrt(a) I)^{-1}``, the
    matrix form of the serial square-root filter's factor
    ``1 / (1 + sqrt(a / s))`` (Whitaker and Hamill 2002; Andrews 1968).
    For an infinite radius (all-ones tapers) this is exactly the ETKF
    transform above, ``I - Ghat Ktilde_w = (I + Ghat Ghat^T / c)^{-1/2}``; for a
    finite one the anomalies' covariance is ``(I - Ktilde H) P (I - Ktilde H)^T``
    with the raw ensemble covariance ``P``, close to the localised analysis
    covariance when the updates are tempered (large ``a``).  Costs an
    ``m x m`` eigendecomposition per update.

    Parameters are those of :func:`kalman_update` (no random source).
    """
    xp = get_namespace(X)
    J = X.shape[0]
    c = (J - 1) * inflation
    gbar = xp.mean(G, axis=0, keepdims=True)
    innov = (y - gbar) if residual is None else -residual(gbar, xp.reshape(y, (1, -1)))
    Gw = xp.astype(centred(G) / noise_std, xp.float64)
    r = xp.astype(xp.reshape(innov / noise_std, (-1,)), xp.float64)
    if taper is not None:
        return _localised_sqrt_update(X, Gw, r, inflation, taper)
    U, s, Vt = xp.linalg.svd(Gw, full_matrices=False)
    coef = U @ ((s / (s**2 + c)) * (Vt @ r))  # (J,): weights of the anomalies in the mean shift
    A = centred(X)
    A64 = xp.astype(A, xp.float64)
    shrink = 1.0 / xp.sqrt(1.0 + s**2 / c) - 1.0
    A_new = A64 + U @ (shrink[:, None] * (U.T @ A64))
    mean = xp.mean(X, axis=0, keepdims=True) + xp.astype(xp.reshape(coef, (1, -1)) @ A64, X.dtype)
    return mean + xp.astype(A_new, X.dtype)


def _tapered_covariances(X, Gw, inflation: float, taper):
    """``rho_xG o C_xG`` (``(d, m)``) and ``S = rho_GG o C_GG + a I`` (``(m, m)``), whitened, float64.

    ``Gw`` are the whitened forward anomalies ``(G - mean G) Gamma^{-1/2}``
    (``(J, m)``, float64).  Whitening is a diagonal scaling, so it commutes
    with the Schur products.  ``taper`` is any localiser with
    ``localise(Cxg, Cgg, A, Gw) -> (Cxg', Cgg')``: a
    :class:`~kalmandiff.estimators.localization.Taper` (Schur products) or a
    :class:`~kalmandiff.estimators.localization.SamplingErrorCorrection`
    (corrected correlations, recomputed from this ensemble); ``taper=None``
    leaves the covariances as they are.
    """
    xp = get_namespace(X)
    J, m = Gw.shape
    A64 = xp.astype(centred(X), xp.float64)
    Cxg = (A64.T @ Gw) / (J - 1)
    Cgg = (Gw.T @ Gw) / (J - 1)
    if taper is not None:
        Cxg, Cgg = taper.localise(Cxg, Cgg, A64, Gw)
    return Cxg, Cgg + inflation * xp.eye(m, dtype=xp.float64, device=array_device(X))


def _localised_sqrt_update(X, Gw, r, inflation: float, taper):
    """Square-root update with tapered gains (see :func:`sqrt_kalman_update`); ``r`` the whitened innovation."""
    xp = get_namespace(X)
    Cxg, S = _tapered_covariances(X, Gw, inflation, taper)
    lam, Q = xp.linalg.eigh(S)  # S = Q diag(lam) Q^T, lam >= a > 0 for a PSD taper
    mean_w = Q @ ((Q.T @ r) / lam)  # S^{-1} r
    # S^{-1/2} (S^{1/2} + sqrt(a))^{-1} Ghat^T = Q diag(1 / (lam + sqrt(a lam))) Q^T Ghat^T.
    damp = 1.0 / (lam + xp.sqrt(inflation * lam))
    anom_w = Q @ (damp[:, None] * (Q.T @ Gw.T))  # (m, J)
    mean = xp.mean(X, axis=0, keepdims=True) + xp.astype(xp.reshape(Cxg @ mean_w, (1, -1)), X.dtype)
    A_new = xp.astype(centred(X), xp.float64) - (Cxg @ anom_w).T
    return mean + xp.astype(A_new, X.dtype)


def kalman_gain(X, G, noise_std, inflation: float = 1.0, taper=None):
    """The ensemble Kalman gain ``K = (rho_xG o C_xG) (rho_GG o C_GG + a Gamma)^{-1}``, ``(d, m)``.

    A diagnostic (the updates never form it): ``C_xG`` and ``C_GG`` are the
    ensemble covariances (divisor ``J - 1``) of ``X`` with ``G`` and of
    ``G``; without a ``taper`` the Schur products are dropped.

    Parameters
    ----------
    X : array ``(J, d)``
    G : array ``(J, m)``
    noise_std : array ``(m,)``
        Positive noise standard deviations, ``Gamma = diag(noise_std**2)``.
    inflation : float
        ``a``.
    taper : Taper, optional

    Returns
    -------
    array ``(d, m)``, float64
        In units of x per unit of y.
    """
    xp = get_namespace(X)
    std = xp.astype(noise_std, xp.float64)
    Cxg, S = _tapered_covariances(X, xp.astype(centred(G), xp.float64) / std, inflation, taper)
    # Whitened gain Cxg S^{-1} (S symmetric), then K = K_w Gamma^{-1/2}.
    return xp.linalg.solve(S, Cxg.T).T / std


def redraw_from_ensemble(X, n: int, rng: RandomSource):
    """Draw ``n`` members from the Gaussian fitted to the ensemble ``X`` (``(J, d)``).

    Samples ``mean + A^T z / sqrt(J - 1)`` with ``A`` the anomalies and
    ``z ~ N(0, I_J)``: the empirical Gaussian, without forming its ``d x d``
    covariance.  Used to replace failed members (EnsembleKalmanProcesses.jl's
    ``SampleSuccGauss``).
    """
    J = X.shape[0]
    if J < 2:
        raise RuntimeError("fewer than two successful members: cannot fit a Gaussian to redraw from.")
    xp = get_namespace(X)
    A = centred(X)
    z = rng.normal((n, J), like=X)
    return xp.mean(X, axis=0, keepdims=True) + (z @ A) / math.sqrt(J - 1)


def data_misfit_step(phi, n_data: int, elapsed: float, final_time: float = 1.0) -> float:
    """Iglesias-Yang data-misfit controller for the EKI pseudo-time step.

    ``dt = min(max(M / (2 mean Phi), sqrt(M / (2 var Phi))), T - elapsed)``
    where ``Phi_j = 0.5 ||Gamma^{-1/2} (G_j - y)||^2`` and ``M`` the number of data.

    Parameters
    ----------
    phi : array ``(J,)``
        Data misfits of the members.
    n_data : int
        ``M``.
    elapsed : float
        Pseudo-time already used.
    final_time : float
        ``T`` (1 for a full Bayesian update).
    """
    xp = get_namespace(phi)
    mean = float(xp.mean(phi))
    var = float(xp.var(phi))
    a = n_data / (2.0 * mean) if mean > 0 else math.inf
    b = math.sqrt(n_data / (2.0 * var)) if var > 0 else math.inf
    return min(max(a, b), final_time - elapsed)
