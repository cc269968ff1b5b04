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
localised one.  During a fit the ensemble moves from the prior towards the
posterior, so where the problem gives its matrix (a linear problem,
``d <= CHECK_MAX_UNKNOWNS``) the same check also runs on the exact
posterior covariance (:func:`posterior_covariance`): deblurring the digits
at ``J = 64`` fails the prior check but passes this one, and the taper was
measured better there.  A localiser is used only where it brings the
ensemble's covariance at least :data:`CHECK_MARGIN` closer in one of the
checks.  Priors whose covariance is unknown keep the rule measured before
(a taper where the correlation length is short and declared positions
allow it, else SECNice when ``J < d``); learned priors are off (measured
worse).
"""

from __future__ import annotations

import math

import numpy as np

from ._prior_check import (
    CHECK_MARGIN,
    posterior_covariance,
    prior_check,
    prior_covariance,
)
from ._tapers import MAX_RADIUS, GaspariCohnTaper, gaspari_cohn, periodic_distance

__all__ = [
    "AUTO_RADIUS_CORRELATION_LENGTHS",
    "AUTO_RADIUS_GRID_CELLS",
    "correlation_length",
    "grid_spacing",
    "auto_radius",
    "AUTO_GEOMETRY_FREE",
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
    first candidate that passes :func:`prior_check` on the prior or (a linear problem that gives
    its matrix) on the exact posterior (error at least :data:`CHECK_MARGIN` below the unlocalised
    one) is used, or
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
