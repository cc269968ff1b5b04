"""What ``localization="auto"`` chooses, and why: the rule of :func:`.localization.make_localizer`.

A localiser trades sampling noise for bias: it removes the noise of the
ensemble's correlations and, where the true correlations are not small,
cuts (a taper beyond its support) or shrinks (sampling-error correction)
real ones.  Which side wins depends on ``J`` against the prior's effective
dimension, and on whether its correlations really decay with distance.  A
Gaussian random field (participation ratio ``tr(C)^2 / ||C||_F^2`` about 50,
correlations that decay with distance) gains at every ``J`` measured; the
Gaussian fitted to the digits (participation ratio 11, 45 eigen-directions
hold 99% of its variance, real correlations between distant strokes) loses
from ``J = 64`` on, with either localiser.

So ``"auto"`` asks the prior, where its covariance ``C`` is known (an
analytic prior): :func:`prior_check` draws ``J`` members from ``N(0, C)``
on a fixed stream (:data:`CHECK_DRAWS` times) and compares the Frobenius
error ``||C_hat - C||_F`` of their sample covariance with that of the
localised one.  A localiser is used only where it brings the ensemble's
covariance closer to the prior's (by :data:`CHECK_MARGIN` at least).  Priors whose covariance is unknown keep
the rule measured before (a taper where the correlation length is short
and declared positions allow it, else SECNice when ``J < d``); learned
priors are off (measured worse).
"""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import numpy as np

from ._sampling_error import SamplingErrorCorrection
from ._tapers import MAX_RADIUS, GaspariCohnTaper, gaspari_cohn, periodic_distance

__all__ = [
    "AUTO_RADIUS_CORRELATION_LENGTHS",
    "AUTO_RADIUS_GRID_CELLS",
    "correlation_length",
    "grid_spacing",
    "auto_radius",
    "AUTO_GEOMETRY_FREE",
    "CHECK_DRAWS",
    "CHECK_MARGIN",
    "CHECK_MAX_UNKNOWNS",
    "PriorCheck",
    "prior_check",
    "prior_covariance",
    "posterior_covariance",
]

#: ``localization="auto"``: the Gaspari-Cohn half-width is at least this many prior correlation lengths.
AUTO_RADIUS_CORRELATION_LENGTHS = 1.0
#: ``localization="auto"``: ... and at least this many cells of the coarser of the data and unknown grids.
AUTO_RADIUS_GRID_CELLS = 1.5


def correlation_length(prior, coords=None) -> float | None:
    """The prior's e-folding correlation length in units of the domain side, or None if unknown.

    A :class:`~kalmandiff.priors.GaussianPrior` with a full covariance and
    the unknowns' positions ``coords`` (``(d, 2)``): the distance at which
    the mean correlation of pairs at that distance (bins one
    :func:`grid_spacing` wide, at most 2048 of the positions, evenly
    chosen) first falls below ``1/e``, linearly interpolated between bin
    centres; 0.5 if it never does.  A diagonal or isotropic covariance: 0.

    Known for priors with a 2-D ``spectrum`` attribute holding the
    eigenvalues of a stationary periodic covariance on the FFT grid of the
    last two axes of ``event_shape``
    (:class:`~kalmandiff.priors.GaussianRandomFieldPrior`): the correlation
    function is ``ifft2(spectrum)``, and the length is the distance at which
    it first falls below ``1/e`` along each grid axis (linearly
    interpolated), averaged over the two axes.  A correlation that stays
    above ``1/e`` to half the domain gives ``0.5``.
    """
    spectrum = getattr(prior, "spectrum", None)
    shape = tuple(getattr(prior, "event_shape", ()))
    if spectrum is None and coords is not None and getattr(prior, "cov_kind", None) is not None:
        return _covariance_correlation_length(prior, np.asarray(coords, dtype=float))
    if spectrum is None or len(shape) < 2:
        return None
    spectrum = np.asarray(spectrum, dtype=float)
    if spectrum.shape != shape[-2:]:
        return None
    r = np.fft.ifft2(spectrum).real
    if not r[0, 0] > 0:
        return None
    lengths = []
    for profile in (r[:, 0] / r[0, 0], r[0, :] / r[0, 0]):
        n = profile.size
        half = profile[: n // 2 + 1]
        below = np.flatnonzero(half < math.exp(-1.0))
        if below.size == 0:
            lengths.append(0.5)
            continue
        k = int(below[0])
        frac = (half[k - 1] - math.exp(-1.0)) / (half[k - 1] - half[k])
        lengths.append((k - 1 + frac) / n)
    return float(np.mean(lengths))


def _covariance_correlation_length(prior, coords) -> float | None:
    if prior.cov_kind != "full":
        return 0.0
    C = np.asarray(prior.cov, dtype=float)
    if C.shape != (coords.shape[0], coords.shape[0]):
        return None
    keep = np.unique(np.linspace(0, coords.shape[0] - 1, min(coords.shape[0], 2048)).astype(int))
    C, coords = C[np.ix_(keep, keep)], coords[keep]
    sd = np.sqrt(np.diag(C))
    if not np.all(sd > 0):
        return None
    R, D = C / np.outer(sd, sd), periodic_distance(coords, coords)
    h = grid_spacing(coords) if coords.shape[0] == len(keep) else 1.0 / 32
    centres, means = [], []
    for lo in np.arange(0.0, D.max() + h, h):
        inside = (D >= lo) & (D < lo + h)
        if inside.any():
            centres.append(float(D[inside].mean()))
            means.append(float(R[inside].mean()))
    below = np.flatnonzero(np.array(means) < math.exp(-1.0))
    if below.size == 0:
        return 0.5
    k = int(below[0])
    if k == 0:
        return 0.0
    frac = (means[k - 1] - math.exp(-1.0)) / (means[k - 1] - means[k])
    return centres[k - 1] + frac * (centres[k] - centres[k - 1])


def grid_spacing(coords) -> float:
    """The spacing of a square grid with as many distinct positions as ``coords`` (units of the domain side).

    ``1 / sqrt(n)`` for ``n`` distinct positions: exactly the cell side of
    an ``n = k x k`` grid, and of the grid repeated over channels.
    """
    n = np.unique(np.round(np.asarray(coords, dtype=float), 12), axis=0).shape[0]
    return 1.0 / math.sqrt(max(n, 1))


def auto_radius(prior, geometry) -> float:
    """The Gaspari-Cohn half-width that ``localization="auto"`` uses on a local geometry (domain side units).

    ``c = max(l, 1.5 h, reach / 2)``, capped at ``MAX_RADIUS`` (0.25):
    ``l`` is the prior's :func:`correlation_length` (taken as 0 when the
    prior has none, e.g. a score network: then give a radius if its fields
    are correlated over more than a cell or two), ``h`` the
    :func:`grid_spacing` of the coarser of the declared data and unknown
    positions, and ``reach`` the declared reach of the map, so that the
    taper's support ``2c`` always covers it.  The factors
    (:data:`AUTO_RADIUS_CORRELATION_LENGTHS`, :data:`AUTO_RADIUS_GRID_CELLS`)
    come from Gaussian random fields on a 32 x 32 grid observed through a
    Gaussian blur and 2x subsampling (``tests/test_localization.py``): with
    ``J = 64`` the posterior-mean error was smallest for ``c`` between 0.08
    and 0.1 both for ``l = 0.11`` and for ``l = 0.058`` (``1.5 h = 0.094``);
    with ``J = 128`` radii up to 0.125 did as well.

    Parameters
    ----------
    prior : Prior
    geometry : Geometry
        Local (positions and reach declared).

    Returns
    -------
    float
    """
    if geometry is None or not geometry.local:
        raise ValueError("auto_radius needs a local Geometry (positions and reach).")
    ell = correlation_length(prior, geometry.x_coords) or 0.0
    h = max(grid_spacing(geometry.x_coords), grid_spacing(geometry.y_coords))
    c = max(AUTO_RADIUS_CORRELATION_LENGTHS * ell, AUTO_RADIUS_GRID_CELLS * h, geometry.reach / 2.0)
    return min(c, MAX_RADIUS)


# --------------------------------------------------------------------------
# the prior check and the rule
# --------------------------------------------------------------------------

#: What ``localization="auto"`` uses where no taper applies: chosen by measurement
#: (docs/benchmarks.md, "Localisation: which default").
AUTO_GEOMETRY_FREE = "secnice"
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


def _candidate_taper(prior, geometry):
    """The Gaspari-Cohn taper "auto" offers on a declared local geometry, or None."""
    if geometry is None or not geometry.local or geometry.reach / 2.0 > MAX_RADIUS:
        return None
    # Only a prior known to be correlated within the largest radius is offered a taper: beyond it
    # the taper cuts true correlations wholesale.
    ell = correlation_length(prior, geometry.x_coords)
    if ell is None or ell > MAX_RADIUS:
        return None
    return GaspariCohnTaper(auto_radius(prior, geometry))


def _auto_choice(prior, problem, geometry, n_particles=None):
    """``"auto"``: ``(localiser, why)``; the localiser is None where it stays off.

    Off where the problem declares that the correction does not help it (phase retrieval,
    Navier-Stokes) and for a learned prior (``prior.learned``, True for a score network: on the
    digits inpainting problem with the shipped network, J = 64, SECNice raised EnKG's error from
    0.152 / 0.084 to 0.191 / 0.211, instances 1 / 2; docs/benchmarks.md, top section).  Else the
    candidates are the Gaspari-Cohn taper (declared local geometry, prior correlation length at
    most the largest radius) and SECNice (``J < d``; with ``J >= d`` it was measured no better
    than none, and on 8 unknowns worse).  With the prior's covariance known and ``J`` given, the
    first candidate that passes :func:`prior_check` (error at least :data:`CHECK_MARGIN` below
    the unlocalised one) is used, or
    none; otherwise the first candidate.  ``why`` says which and gives the check's numbers.
    """
    if geometry is not None and not geometry.local and not geometry.sampling_error_correction:
        return None, f"{type(problem).__name__} declares that sampling-error correction does not help it"
    if getattr(prior, "learned", False):
        return None, f"a learned prior ({type(prior).__name__}); measured worse with the corrector"
    d = math.prod(tuple(problem.x_shape))
    taper = _candidate_taper(prior, geometry)
    geometry_free = n_particles is None or n_particles < d
    known = None if n_particles is None else prior_covariance(prior, d)
    if known is None:
        if taper is not None:
            return taper, "a declared local map and a prior of short correlation length"
        if geometry_free:
            return AUTO_GEOMETRY_FREE, "no taper applies; the prior's covariance is unknown"
        return None, f"J = {n_particles} >= d = {d} and no taper applies"
    C, keep = known
    rho = None
    if taper is not None:
        px = geometry.x_coords[keep]
        rho = gaspari_cohn(periodic_distance(px, px) / taper.radius)
    checks = [prior_check(C, int(n_particles), rho, secnice=geometry_free)]
    # The ensemble moves from the prior towards the posterior during a fit: where the posterior is
    # known (a linear problem that gives its matrix), a localiser that helps there counts too.
    P = posterior_covariance(C, problem) if len(keep) == d else None
    if P is not None:
        checks.append(prior_check(P, int(n_particles), rho, secnice=geometry_free, stage="posterior"))
    why = "; ".join(check.describe() for check in checks)
    if any(check.passes("taper") for check in checks):
        return taper, why
    if any(check.passes("secnice") for check in checks):
        return AUTO_GEOMETRY_FREE, why
    off = f"no localiser brings J draws {CHECK_MARGIN:.0%} closer to the covariance"
    if not geometry_free:
        off += f" (SECNice not tried: J = {n_particles} >= d = {d})"
    return None, f"{off}; {why}"
