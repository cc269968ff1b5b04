"""The check behind ``localization="auto"``: does a localiser bring ``J`` draws closer to their covariance?

See :mod:`._auto_localization` for why and how the rule uses it.
"""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import numpy as np

from ._sampling_error import SamplingErrorCorrection

__all__ = [
    "CHECK_DRAWS",
    "CHECK_MARGIN",
    "CHECK_MAX_UNKNOWNS",
    "PriorCheck",
    "prior_check",
    "prior_covariance",
    "posterior_covariance",
]

#: The prior check averages this many draws of ``J`` members (a fixed stream: the choice is deterministic).
CHECK_DRAWS = 4
#: The prior check looks at most at this many unknowns (evenly chosen): its covariances are ``n x n``.
CHECK_MAX_UNKNOWNS = 1024
#: Largest ``d`` whose dense prior covariance the check forms (a GRF needs none: its spectrum gives it).
_CHECK_MAX_DENSE = 4096
_CHECK_SEED = 20261204
#: A localiser passes the prior check only if it lowers the unlocalised error by at least this
#: fraction: within it the draws do not tell them apart (digits at J = 64: SECNice 0.429 against
#: 0.431, and measured worse than none on the posterior), and a tie goes to no localisation.
CHECK_MARGIN = 0.05
_CHECK_CACHE: dict = {}


class PriorCheck(NamedTuple):
    """Mean relative Frobenius errors ``||C_hat - C||_F / ||C||_F`` of ``J``-member sample covariances.

    Attributes
    ----------
    J : int
    n : int
        Unknowns looked at (all of them up to :data:`CHECK_MAX_UNKNOWNS`).
    none, taper, secnice : float or None
        Unlocalised, Gaspari-Cohn tapered (None when no taper was offered)
        and SECNice-corrected (None when ``J >= d``).
    stage : str
        ``"prior"`` or ``"posterior"``: whose covariance was sampled.
    """

    J: int
    n: int
    none: float
    taper: float | None
    secnice: float | None
    stage: str = "prior"

    def describe(self) -> str:
        parts = [f"none {self.none:.3f}"]
        parts += [f"taper {self.taper:.3f}"] if self.taper is not None else []
        parts += [f"secnice {self.secnice:.3f}"] if self.secnice is not None else []
        return f"{self.stage} check at J = {self.J} on {self.n} unknowns: covariance error " + ", ".join(
            parts
        )

    def passes(self, name: str) -> bool:
        """Whether localiser ``name`` ("taper" or "secnice") lowers the error by :data:`CHECK_MARGIN`."""
        value = getattr(self, name)
        return value is not None and value < (1.0 - CHECK_MARGIN) * self.none


def _check_indices(d: int) -> np.ndarray:
    return np.unique(np.linspace(0, d - 1, min(d, CHECK_MAX_UNKNOWNS)).astype(int))


def prior_covariance(prior, d: int):
    """The prior's covariance on an even subset of the flattened unknowns: ``(C (n, n), indices (n,))``.

    Known for a Gaussian random field (from its ``spectrum``, any size) and
    for priors with a dense ``cov`` (Gaussian, low-rank, mixture) up to
    ``d = 4096``; None otherwise (a learned prior, an unknown one).
    """
    if prior is None or getattr(prior, "learned", False):
        return None
    keep = _check_indices(d)
    spectrum = getattr(prior, "spectrum", None)
    shape = tuple(getattr(prior, "event_shape", ()))
    if (
        spectrum is not None
        and len(shape) >= 2
        and np.shape(spectrum) == shape[-2:]
        and math.prod(shape) == d
    ):
        h, w = shape[-2:]
        r = np.fft.ifft2(np.asarray(spectrum, dtype=float)).real
        c, rest = np.divmod(keep, h * w)
        i, j = np.divmod(rest, w)
        C = r[(i[:, None] - i[None, :]) % h, (j[:, None] - j[None, :]) % w]
        return C * (c[:, None] == c[None, :]), keep
    if d > _CHECK_MAX_DENSE or not hasattr(type(prior), "cov"):
        return None
    try:
        C = np.asarray(prior.cov, dtype=float)
    except (TypeError, ValueError, NotImplementedError):
        return None
    if C.shape != (d, d):
        return None
    return C[np.ix_(keep, keep)], keep


def prior_check(C, J: int, taper_rho=None, secnice: bool = True, stage: str = "prior") -> PriorCheck:
    """Compare localisers on ``J`` draws from ``N(0, C)`` (:class:`PriorCheck`).

    Parameters
    ----------
    C : ndarray ``(n, n)``
        The prior covariance (on the unknowns looked at).
    J : int
    taper_rho : ndarray ``(n, n)``, optional
        The Gaspari-Cohn taper on the same unknowns.
    secnice : bool
        Whether to try SECNice.
    stage : str
        A label (``"prior"``, ``"posterior"``) for the reason ``"auto"`` gives.

    Notes
    -----
    Cost: an ``n x n`` eigendecomposition and :data:`CHECK_DRAWS` sample covariances,
    ``O(n^3 + J n^2)``; results are cached per (covariance, ``J``, taper).  Measured on one
    loaded core (2026-12-04): the whole ``"auto"`` choice for the 32 x 32 smooth deblur problem
    (``n = 1024``, prior and posterior checks) 2.5 s the first time for a ``J``, 0.8 s after;
    16 x 16 digits 0.08 s.
    """
    key = (_digest(C), int(J), None if taper_rho is None else _digest(taper_rho), bool(secnice))
    if key not in _CHECK_CACHE:
        if len(_CHECK_CACHE) >= 32:  # a few priors per session: keep memory bounded
            _CHECK_CACHE.clear()
        _CHECK_CACHE[key] = _run_prior_check(C, int(J), taper_rho, secnice)
    return _CHECK_CACHE[key]._replace(stage=stage)


def _digest(a) -> str:
    return hashlib.sha1(np.ascontiguousarray(a, dtype=float).tobytes()).hexdigest()


def _run_prior_check(C, J: int, taper_rho, secnice: bool) -> PriorCheck:
    n = C.shape[0]
    w, V = np.linalg.eigh(C)
    root = V * np.sqrt(np.clip(w, 0.0, None))
    rng = np.random.default_rng(_CHECK_SEED)
    corrector = SamplingErrorCorrection("secnice")
    scale = np.linalg.norm(C)
    errors = {"none": [], "taper": [], "secnice": []}
    for _ in range(CHECK_DRAWS):
        X = rng.standard_normal((J, n)) @ root.T
        A = X - X.mean(axis=0)
        C_hat = A.T @ A / (J - 1)
        errors["none"].append(np.linalg.norm(C_hat - C) / scale)
        if taper_rho is not None:
            errors["taper"].append(np.linalg.norm(C_hat * taper_rho - C) / scale)
        if secnice:
            sd = np.sqrt(np.diag(C_hat))
            inv = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
            R = np.clip(C_hat * np.outer(inv, inv), -1.0, 1.0)
            errors["secnice"].append(np.linalg.norm(corrector.correct(R, J) * np.outer(sd, sd) - C) / scale)
    mean = {k: (float(np.mean(v)) if v else None) for k, v in errors.items()}
    return PriorCheck(int(J), int(n), mean["none"], mean["taper"], mean["secnice"])


def posterior_covariance(C, problem):
    """The exact posterior covariance ``C - C A^T (A C A^T + Gamma)^+ A C`` of a linear problem, or None.

    Only for a problem that gives its matrix (``problem.as_matrix()``, ``(m, d)``: the linear
    image problems, :class:`~kalmandiff.problems.LinearProblem`) with ``d`` at most
    :data:`CHECK_MAX_UNKNOWNS` (``C`` is then the whole prior covariance); ``Gamma`` is the
    diagonal of ``problem.noise_std ** 2``.  It does not depend on the data.
    """
    as_matrix = getattr(problem, "as_matrix", None)
    d = C.shape[0]
    if not callable(as_matrix) or d != math.prod(tuple(problem.x_shape)):
        return None
    try:
        A = np.asarray(as_matrix(), dtype=float)
    except (ValueError, MemoryError, NotImplementedError):
        return None
    noise = np.broadcast_to(
        np.asarray(getattr(problem, "noise_std", 0.0), dtype=float), tuple(problem.y_shape)
    )
    if A.shape != (noise.size, d):
        return None
    CA = C @ A.T
    S = A @ CA
    S[np.diag_indices_from(S)] += noise.ravel() ** 2
    try:
        P = C - CA @ np.linalg.solve(S, CA.T)
    except np.linalg.LinAlgError:  # noiseless data on a rank-deficient map
        P = C - CA @ np.linalg.pinv(S, hermitian=True) @ CA.T
    return 0.5 * (P + P.T)
