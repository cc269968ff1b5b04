"""Covariance localisation of the calibrated ensemble Kalman updates.

With ``J`` members and ``d >> J`` unknowns the ensemble covariances have
rank ``J - 1``: the Kalman updates of :mod:`._ensemble` live in a
``J``-dimensional subspace, and sample correlations between far-apart
unknowns and data (pure sampling noise, of size ``1 / sqrt(J)``) enter the
gain.  Localisation removes them.  This module builds the tapers; the
localised updates themselves are in :mod:`._ensemble`.

The approach: a Schur (entrywise) product of the ensemble covariances with
the Gaspari-Cohn taper (Houtekamer and Mitchell 2001; Gaspari and Cohn
1999, eq. 4.10), applied to the cross-covariance ``C_xG`` (``d x m``) and
to the data covariance ``C_GG`` (``m x m``):

    K = (rho_xG o C_xG) (rho_GG o C_GG + a Gamma)^{-1}.

It is chosen over domain localisation (LETKF) because it is exact when the
radius is infinite (the taper is then all ones and the update is the
unlocalised one), needs no per-grid-point eigenproblems (LETKF solves ``d``
of them, ``O(d J^3)`` per update), keeps ``rho_GG o C_GG`` positive
semi-definite (the Gaspari-Cohn function is positive definite in up to
three dimensions; with a support ``2c <= 1/2`` its periodic version on the
unit torus is its periodisation, positive definite as well, so every
matrix of its values is positive semi-definite and, by the Schur product
theorem, so is the tapered covariance), and fits the data-space algebra
the tempered updates already use.  Its price is memory ``O(d m + m^2)``
for the tapers and ``C_xG`` and an ``m x m`` solve (``"kalman"``) or
eigendecomposition (``"kalman-sqrt"``) per update, ``O(J d m + m^3)``
time; the tapers are refused beyond :data:`MAX_TAPER_ENTRIES` entries
(``d m + m^2 <= 2**24``: e.g. ``d = 4096`` unknowns with up to ``m = 2048``
data; ``d = 4096, m = 1024`` takes 42 MB in float64).  Measured on one
core with ``J = 64``: ``d = 1024, m = 256`` costs 5 ms (``"kalman"``) and
12 ms (``"kalman-sqrt"``) per update against 1.5 and 2.4 ms unlocalised;
``d = 4096, m = 1024`` costs 94 and 334 ms against 5 and 8 ms, and building
its tapers once per fit 0.4 s.

Positions come only from what the problem declares
(:class:`~kalmandiff.problems.Geometry`, the ``geometry`` attribute of a
:class:`~kalmandiff.problems.ForwardProblem`): positions of the unknowns
and data on the unit periodic square ``[0, 1)^2``, whether the map is local,
and its reach.  Array shapes are never read as positions: a Fourier
magnitude has the shape of an image and depends on every pixel.  A plain
callable declares nothing, and a problem that declares a non-local map
(phase retrieval, interferometry, Navier-Stokes) refuses a spatial taper.

Without geometry.  Sampling-error correction (SEC) shrinks each sample
correlation towards zero by a factor that depends only on the correlation
and on ``J`` (:class:`SamplingErrorCorrection`): Lee (2021,
arXiv:2105.11341) replaces a correlation ``r`` by ``r |r|^alpha``; the
parameter-free variant of Vishny, Morzfeld et al. (2024, "SECNice",
doi:10.22541/essoar.171501094.44068137/v1) picks the exponent per block by a
discrepancy principle: the correction may change the block's correlations
by no more, in Frobenius norm, than their sampling noise.  Both were read in
EnsembleKalmanProcesses.jl (``src/Localizers.jl``), which corrects the whole
``(d + m) x (d + m)`` joint covariance; here only the two blocks the updates
use, ``C_xG`` and ``C_GG``, are formed and corrected, in the tapers' memory
``O(d m + m^2)`` (same size limit).  The correction changes with the
ensemble, so it is applied at every update.

``localization="auto"`` (the solvers' default, :func:`make_localizer`; the
rule is in :mod:`._auto_localization`): off where the problem declares that
the correction does not help it (phase retrieval, Navier-Stokes) and for a
learned prior.  Otherwise the candidates are a Gaspari-Cohn taper (a
declared local map, a prior whose correlation length is known and at most
:data:`MAX_RADIUS`) and SECNice (``J < d``).  Where the prior's covariance
is known (Gaussian, low-rank, mixture, random field), a candidate is used
only if it brings the sample covariance of ``J`` draws at least 5% closer
to the covariance they are drawn from (:func:`prior_check`): the prior's,
or, for a linear problem that gives its matrix, the exact posterior's
(:func:`posterior_covariance`).  A localiser trades sampling noise for
bias, and with ``J`` large against the effective dimension, or with real
long-range correlations (the digits Gaussian), the bias wins.  ``localization_`` says what ran and why.  Each branch was
measured never worse than no localisation (docs/benchmarks.md,
"Localisation: which default").
"""

from __future__ import annotations

import math

from ._auto_localization import (
    AUTO_GEOMETRY_FREE,
    AUTO_RADIUS_CORRELATION_LENGTHS,
    AUTO_RADIUS_GRID_CELLS,
    _auto_choice,
    auto_radius,
    correlation_length,
    grid_spacing,
)
from ._prior_check import (
    CHECK_DRAWS,
    CHECK_MARGIN,
    PriorCheck,
    posterior_covariance,
    prior_check,
    prior_covariance,
)
from ._sampling_error import SamplingErrorCorrection, correlation_std
from ._tapers import (
    MAX_RADIUS,
    MAX_TAPER_ENTRIES,
    GaspariCohnTaper,
    Taper,
    _check_radius,
    _check_size,
    gaspari_cohn,
    grid_coordinates,
    make_taper,
    periodic_distance,
)

__all__ = [
    "MAX_TAPER_ENTRIES",
    "AUTO_GEOMETRY_FREE",
    "SamplingErrorCorrection",
    "correlation_std",
    "make_localizer",
    "AUTO_RADIUS_CORRELATION_LENGTHS",
    "AUTO_RADIUS_GRID_CELLS",
    "GaspariCohnTaper",
    "Taper",
    "gaspari_cohn",
    "grid_coordinates",
    "periodic_distance",
    "correlation_length",
    "auto_radius",
    "grid_spacing",
    "MAX_RADIUS",
    "CHECK_DRAWS",
    "CHECK_MARGIN",
    "PriorCheck",
    "prior_check",
    "prior_covariance",
    "posterior_covariance",
    "check_localization",
    "make_taper",
]

# --------------------------------------------------------------------------
# the solvers' parameter
# --------------------------------------------------------------------------

_GEOMETRY_FREE = ("sec", "secnice")
_NORMALISED = ("paper", "normalized")


def check_localization(localization, update: str) -> None:
    """Validate a ``localization`` parameter at fit time (before any work).

    Raises
    ------
    ValueError
        Unknown value, non-positive or too large radius, or localisation
        asked explicitly of the normalised update (``"paper"``), which uses
        no Kalman gain.  ``"auto"`` is accepted with every update (it is off
        for ``"paper"``).
    """
    if localization is None:
        return
    if isinstance(localization, str):
        if localization not in ("auto", *_GEOMETRY_FREE):
            raise ValueError(
                "localization must be None, 'auto', 'sec', 'secnice', a radius, a SamplingErrorCorrection "
                f"or a callable (got {localization!r})."
            )
        if localization == "auto":
            return
    elif not (callable(localization) or isinstance(localization, SamplingErrorCorrection)):
        _check_radius(localization)
    if update in _NORMALISED:
        raise ValueError(
            f"localization applies to the calibrated updates ('kalman', 'kalman-sqrt'), not to "
            f"update={update!r}: that update does not use a Kalman gain. Set localization=None or 'auto', "
            "or choose a calibrated update."
        )


def make_localizer(
    localization, prior, problem, like, update: str = "kalman", n_particles: int | None = None
):
    """The localiser of one fit, and what it is in words.

    Parameters
    ----------
    localization : None, "auto", "sec", "secnice", float, SamplingErrorCorrection or callable
        As the solvers' parameter (validated by :func:`check_localization`).
    prior : Prior
        For ``"auto"`` (its correlation length and, where known, its covariance).
    problem : ForwardProblem
        Its ``x_shape``, ``y_shape`` and declared ``geometry``.
    like : array
        Fixes namespace and device of the tapers.
    update : str
        The update that runs: the normalised one (``"paper"``) takes none.
    n_particles : int, optional
        ``J``.  ``"auto"`` uses the geometry-free correction only when
        ``J < d`` (measured: with ``J >= d`` it was no better than none,
        and on 8 unknowns worse; docs/benchmarks.md), and with the prior's
        covariance known, only what passes :func:`prior_check` at this ``J``.

    Returns
    -------
    localizer : Taper, SamplingErrorCorrection or None
    description : str or None
        E.g. ``"gaspari-cohn c=0.1085"``, ``"SamplingErrorCorrection('secnice', delta=1.0)"``,
        or None (off); ``"auto"`` appends why (``" [auto: prior check at J = 64 ...]"``),
        and where it turned itself off (the prior check, ``J >= d``, the size
        limit, a declaration) gives a sentence starting with ``"off"``.
    """
    if localization is None or update in _NORMALISED:
        return None, None
    x_shape, y_shape = tuple(problem.x_shape), tuple(problem.y_shape)
    d, m = math.prod(x_shape), math.prod(y_shape)
    geometry = getattr(problem, "geometry", None)
    if geometry is not None:
        geometry.check_sizes(d, m)
    why = None
    if isinstance(localization, str) and localization == "auto":
        if d * m + m * m > MAX_TAPER_ENTRIES:
            return None, f"off: d*m + m*m = {d * m + m * m} > {MAX_TAPER_ENTRIES} (the size limit)"
        localization, why = _auto_choice(prior, problem, geometry, n_particles)
        if localization is None:
            return None, f"off: {why}"
    if isinstance(localization, str):
        localization = SamplingErrorCorrection(localization)
    if isinstance(localization, SamplingErrorCorrection):
        _check_size(d, m)
        return localization, _with_reason(repr(localization), why)
    if not callable(localization):
        localization = GaspariCohnTaper(localization)
    spatial = isinstance(localization, GaspariCohnTaper) and not math.isinf(localization.radius)
    if geometry is not None and not geometry.local and spatial:
        raise ValueError(
            f"{type(problem).__name__} declares a non-local map (its data may depend on every unknown), so "
            "a spatial taper would cut true correlations. Use localization='secnice' (no positions needed) "
            "or None."
        )
    taper = make_taper(localization, prior, x_shape, y_shape, like, geometry)
    return taper, _with_reason(_describe(localization), why)


def _with_reason(description: str, why) -> str:
    """``"auto"`` says why it chose what it runs: ``"<localiser> [auto: <why>]"``."""
    return description if why is None else f"{description} [auto: {why}]"


def _describe(localization) -> str:
    if isinstance(localization, GaspariCohnTaper):
        return f"gaspari-cohn c={localization.radius:.4g}"
    return f"callable {localization!r}"
