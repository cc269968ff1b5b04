"""Ensemble Kalman updates written once against the array API.

These are the pieces that EnKG and EKI share, kept apart from any forward
model (as EnsembleKalmanProcesses.jl keeps its update apart from ``G``).
Particles arrive flattened: ``X`` of shape ``(J, d)`` and forward values
``G`` of shape ``(J, m)``.  No ``d x d`` or ``m x m`` matrix is ever formed:
every update works in the ``J``-dimensional span of the ensemble, at a cost
of ``O(J^2 (d + m))`` per update.
"""

from __future__ import annotations

import math

from .._backend import RandomSource, get_namespace

__all__ = [
    "centred",
    "coefficient_matrix",
    "normalised_gradient_update",
    "kalman_update",
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


def kalman_update(X, G, y, noise_std, inflation: float, rng: RandomSource, residual=None):
    """Stochastic ensemble Kalman update with perturbed observations.

    ``x_j <- x_j + C_xG (C_GG + a Gamma)^{-1} (y + sqrt(a) eta_j - G_j)``,
    ``eta_j ~ N(0, Gamma)``, ``Gamma = diag(noise_std**2)``, ``a = inflation``.
    With inflations ``a_l`` whose inverses sum to one, repeated updates are
    ES-MDA: exact for linear-Gaussian problems as ``J -> infinity``.

    The gain is applied in ensemble space: with whitened anomalies
    ``Ghat = (G - mean G) Gamma^{-1/2}``, the push-through identity gives
    ``Ghat^T (Ghat Ghat^T + (J-1) a I)^{-1}``, a ``J x J`` solve (float64).

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
        ``residual(G_perturbed_data, ...)``: maps ``(y + noise) - G`` style
        innovations; defaults to plain subtraction.  Problems whose data are
        angles pass a wrapping residual.
    """
    xp = get_namespace(X)
    J = X.shape[0]
    perturbed = y + math.sqrt(inflation) * noise_std * rng.normal(tuple(G.shape), like=G)
    innov = perturbed - G if residual is None else -residual(G, perturbed)
    Gw = centred(G) / noise_std
    Rw = innov / noise_std
    f64 = xp.float64
    Gw64 = xp.astype(Gw, f64)
    gram = Gw64 @ Gw64.T + (J - 1) * inflation * xp.eye(J, dtype=f64, device=_device(X))
    W = xp.linalg.solve(gram, Gw64 @ xp.astype(Rw, f64).T)  # (J, J): column j is the weights of member j
    return X + xp.astype(W.T, X.dtype) @ centred(X)


def _device(x):
    from array_api_compat import device

    return device(x)


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
