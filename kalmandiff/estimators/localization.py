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

``localization="auto"`` (the solvers' default, :func:`make_localizer`): a
Gaspari-Cohn taper on a declared local map under a prior whose correlation
length is known and at most :data:`MAX_RADIUS`; else SECNice when
``J < d``; else nothing (and nothing where the problem declares that the
correction does not help it, as phase retrieval and Navier-Stokes do).  Each branch was
admitted where it measured never worse than no localisation
(docs/benchmarks.md, "Localisation: which default").
"""

from __future__ import annotations

import hashlib
import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from .._backend import asarray_like, get_namespace
from ..problems._geometry import grid_positions

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
    "check_localization",
    "make_taper",
]

#: Largest ``d * m + m * m`` (entries of the two tapers) that is built.
MAX_TAPER_ENTRIES = 2**24
#: ``localization="auto"``: the Gaspari-Cohn half-width is at least this many prior correlation lengths.
AUTO_RADIUS_CORRELATION_LENGTHS = 1.0
#: ``localization="auto"``: ... and at least this many cells of the coarser of the data and unknown grids.
AUTO_RADIUS_GRID_CELLS = 1.5
#: Largest finite half-width: a support ``2c`` wider than half the periodic domain would reach
#: a point the long way round as well, and the wrapped taper would not stay positive definite.
MAX_RADIUS = 0.25


class Taper(NamedTuple):
    """The two localisation tapers of one fit, in the compute namespace (float64).

    Attributes
    ----------
    xy : array ``(d, m)``
        ``rho_xG``: weights of the cross-covariances of unknowns and data.
    yy : array ``(m, m)``
        ``rho_GG``: weights of the covariances between data, symmetric.
    """

    xy: Any
    yy: Any

    def localise(self, Cxg, Cgg, A, Gw):
        """Schur products ``(xy o Cxg, yy o Cgg)``; ``A`` and ``Gw`` (the anomalies) are not needed."""
        return Cxg * self.xy, Cgg * self.yy


def gaspari_cohn(r) -> np.ndarray:
    """Gaspari-Cohn fifth-order piecewise rational taper (Gaspari and Cohn 1999, eq. 4.10).

    Parameters
    ----------
    r : array_like
        Distance divided by the half-width ``c`` (dimensionless, any shape);
        the sign is ignored.

    Returns
    -------
    numpy.ndarray, float64, shape of ``r``
        1 at ``r = 0``, decreasing, 0.208 at ``r = 1`` and exactly 0 for
        ``r >= 2`` (compact support ``2c``); twice continuously
        differentiable.  ``r = inf`` gives 0.
    """
    r = np.abs(np.asarray(r, dtype=float))
    out = np.zeros_like(r)
    near = r <= 1.0
    far = (r > 1.0) & (r < 2.0)
    a = r[near]
    out[near] = (((-0.25 * a + 0.5) * a + 0.625) * a - 5.0 / 3.0) * a**2 + 1.0
    b = r[far]
    out[far] = ((((b / 12.0 - 0.5) * b + 0.625) * b + 5.0 / 3.0) * b - 5.0) * b + 4.0 - 2.0 / (3.0 * b)
    return out


def grid_coordinates(shape) -> np.ndarray:
    """Cell centres in ``[0, 1)^2`` of an array whose last two axes are a grid, shape ``(prod(shape), 2)``.

    The same as :func:`kalmandiff.problems.grid_positions` with stride 1:
    row ``p`` holds ``((i + 1/2) / H, (j + 1/2) / W)`` for the ``p``-th entry
    in C order (leading axes repeat the grid).  A helper for declaring
    positions; localisation never calls it on its own.
    """
    return grid_positions(shape)


def periodic_distance(p, q) -> np.ndarray:
    """Pairwise distances on the unit periodic square (the torus ``[0, 1)^2``).

    Parameters
    ----------
    p : array_like, shape ``(n, 2)``
    q : array_like, shape ``(k, 2)``
        Positions in units of the domain side.

    Returns
    -------
    numpy.ndarray, shape ``(n, k)``
        ``sqrt(sum_axis min(|p - q| mod 1, 1 - |p - q| mod 1)^2)``, in units
        of the domain side (at most ``sqrt(2) / 2``).
    """
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    out = np.zeros((p.shape[0], q.shape[0]))
    for axis in range(p.shape[1]):
        delta = np.abs(p[:, axis, None] - q[None, :, axis]) % 1.0
        out += np.minimum(delta, 1.0 - delta) ** 2
    return np.sqrt(out, out=out)


def _check_radius(radius, what: str = "localization radius") -> float:
    ok = isinstance(radius, numbers.Real) and not isinstance(radius, bool) and not math.isnan(radius)
    if not ok or radius <= 0:
        raise ValueError(
            f"{what} must be a positive number (the Gaspari-Cohn half-width in units of the domain "
            f"side), math.inf (no tapering), 'auto', a callable or None (got {radius!r})."
        )
    if radius > MAX_RADIUS and not math.isinf(radius):
        raise ValueError(
            f"{what} {radius!r} exceeds {MAX_RADIUS} of the domain side: the taper's support 2c would "
            "wrap around the periodic domain. Use a radius <= 0.25 or math.inf (no tapering)."
        )
    return float(radius)


class GaspariCohnTaper:
    """A localisation callable: Gaspari-Cohn tapers of half-width ``radius`` on given positions.

    ``localization=0.1`` is ``localization=GaspariCohnTaper(0.1)``, with the
    positions the problem declares (its ``geometry``).  Pass an instance with
    positions to localise a problem that declares none (a plain callable,
    a :class:`~kalmandiff.problems.LinearProblem`): giving them is declaring
    that the map is local at this radius.  A problem that declares a
    non-local map refuses it either way.

    Parameters
    ----------
    radius : float
        Half-width ``c`` in units of the side of the periodic domain
        ``[0, 1)^2`` (support ``2c``), ``0 < c <= 0.25``, or ``math.inf``
        (all-ones tapers: no localisation).
    x_coords : array_like ``(d, 2)``, optional
        Positions of the flattened unknowns in ``[0, 1)^2``; default: the
        problem's declared ones.
    y_coords : array_like ``(m, 2)``, optional
        Positions of the flattened data; default: the problem's declared ones.

    Examples
    --------
    >>> from kalmandiff.problems import grid_positions
    >>> taper = GaspariCohnTaper(0.125, grid_positions((1, 8, 8)), grid_positions((1, 4, 4), stride=2, offset=1))
    >>> xy, yy = taper((1, 8, 8), (1, 4, 4))
    >>> xy.shape, yy.shape
    ((64, 16), (16, 16))
    """

    def __init__(self, radius: float, x_coords=None, y_coords=None):
        self.radius = _check_radius(radius)
        self.x_coords = None if x_coords is None else self._coords(x_coords, "x_coords")
        self.y_coords = None if y_coords is None else self._coords(y_coords, "y_coords")

    @staticmethod
    def _coords(c, name: str) -> np.ndarray:
        c = np.array(c, dtype=float)
        if c.ndim != 2 or c.shape[1] != 2 or not np.all(np.isfinite(c)):
            raise ValueError(f"{name} must be a finite array of shape (n, 2) (got shape {c.shape}).")
        return c

    def __call__(self, x_shape, y_shape, geometry=None) -> tuple[np.ndarray, np.ndarray]:
        """The tapers ``(rho_xG (d, m), rho_GG (m, m))``, NumPy float64.

        Positions: this taper's own, else those of ``geometry`` (a local
        :class:`~kalmandiff.problems.Geometry`); neither is a ValueError,
        except for an infinite radius (all-ones tapers, no positions needed).
        """
        d, m = math.prod(tuple(x_shape)), math.prod(tuple(y_shape))
        _check_size(d, m)
        if math.isinf(self.radius):  # all ones: no positions needed
            return np.ones((d, m)), np.ones((m, m))
        px = _positions(self.x_coords, geometry, "x_coords", d, "unknowns")
        py = _positions(self.y_coords, geometry, "y_coords", m, "data")
        xy = gaspari_cohn(periodic_distance(px, py) / self.radius)
        yy = gaspari_cohn(periodic_distance(py, py) / self.radius)
        return xy, yy

    def __repr__(self) -> str:
        # Deterministic (checkpoint fingerprints compare parameters by repr).
        parts = [repr(self.radius)]
        for name in ("x_coords", "y_coords"):
            c = getattr(self, name)
            if c is not None:
                digest = hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest()[:12]
                parts.append(f"{name}=<{c.shape[0]} points, sha256 {digest}>")
        return f"GaspariCohnTaper({', '.join(parts)})"


def _positions(coords, geometry, name: str, n: int, what: str) -> np.ndarray:
    if coords is None and geometry is not None and geometry.local:
        coords = getattr(geometry, name)
    if coords is None:
        raise ValueError(
            f"a spatial taper needs the positions of the {what}, and none are declared: a plain callable "
            "declares no geometry, and array shapes are not positions. Use localization='secnice' (needs "
            "no positions), give a ForwardProblem with a local geometry, or pass "
            "GaspariCohnTaper(radius, x_coords=..., y_coords=...)."
        )
    if coords.shape[0] != n:
        raise ValueError(f"{coords.shape[0]} positions given for {n} {what}.")
    return coords


def _check_size(d: int, m: int) -> None:
    if d * m + m * m > MAX_TAPER_ENTRIES:
        raise ValueError(
            f"localization tapers for d = {d} unknowns and m = {m} data would hold d*m + m*m = "
            f"{d * m + m * m} entries (> {MAX_TAPER_ENTRIES}, {8 * MAX_TAPER_ENTRIES / 2**20:.0f} MB in "
            "float64); reduce the data or use the unlocalised update."
        )


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
# sampling-error correction: localisation without positions
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# the solvers' parameter
# --------------------------------------------------------------------------

#: What ``localization="auto"`` uses where no local geometry is declared: chosen by measurement
#: (docs/benchmarks.md, "Localisation: which default").
AUTO_GEOMETRY_FREE = "secnice"
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
        For ``"auto"`` (its correlation length).
    problem : ForwardProblem
        Its ``x_shape``, ``y_shape`` and declared ``geometry``.
    like : array
        Fixes namespace and device of the tapers.
    update : str
        The update that runs: the normalised one (``"paper"``) takes none.
    n_particles : int, optional
        ``J``.  ``"auto"`` uses the geometry-free correction only when
        ``J < d`` (measured: with ``J >= d`` it was no better than none,
        and on 8 unknowns worse; docs/benchmarks.md).

    Returns
    -------
    localizer : Taper, SamplingErrorCorrection or None
    description : str or None
        E.g. ``"gaspari-cohn c=0.1085"``, ``"SamplingErrorCorrection('secnice', delta=1.0)"``,
        or None (off); where ``"auto"`` turned itself off (``J >= d``, or
        beyond the size limit), a sentence starting with ``"off"``.
    """
    if localization is None or update in _NORMALISED:
        return None, None
    x_shape, y_shape = tuple(problem.x_shape), tuple(problem.y_shape)
    d, m = math.prod(x_shape), math.prod(y_shape)
    geometry = getattr(problem, "geometry", None)
    if geometry is not None:
        geometry.check_sizes(d, m)
    if isinstance(localization, str) and localization == "auto":
        localization, why_off = _auto_choice(prior, problem, geometry)
        if localization is None:
            return None, f"off: {why_off}"
        if isinstance(localization, str) and n_particles is not None and n_particles >= d:
            return None, f"off: J = {n_particles} >= d = {d} (no geometry declared)"
        if d * m + m * m > MAX_TAPER_ENTRIES:
            return None, f"off: d*m + m*m = {d * m + m * m} > {MAX_TAPER_ENTRIES} (the size limit)"
    if isinstance(localization, str):
        localization = SamplingErrorCorrection(localization)
    if isinstance(localization, SamplingErrorCorrection):
        _check_size(d, m)
        return localization, repr(localization)
    if not callable(localization):
        localization = GaspariCohnTaper(localization)
    spatial = isinstance(localization, GaspariCohnTaper) and not math.isinf(localization.radius)
    if geometry is not None and not geometry.local and spatial:
        raise ValueError(
            f"{type(problem).__name__} declares a non-local map (its data may depend on every unknown), so "
            "a spatial taper would cut true correlations. Use localization='secnice' (no positions needed) "
            "or None."
        )
    return make_taper(localization, prior, x_shape, y_shape, like, geometry), _describe(localization)


def _auto_choice(prior, problem, geometry):
    """``"auto"``: ``(localiser, None)``, or ``(None, why)`` where it stays off.

    A Gaspari-Cohn taper on a declared local geometry (reach at most twice the largest radius)
    for a prior of known correlation length at most the largest radius; else the geometry-free
    default, except where the problem declares that it does not help, or for a learned prior
    (``prior.learned``, True for a score network): on the digits inpainting problem with the
    shipped network, J = 64, SECNice raised EnKG's error from 0.152 / 0.084 to 0.191 / 0.211
    (instances 1 / 2; docs/benchmarks.md, top section).
    """
    if geometry is not None and geometry.local and geometry.reach / 2.0 <= MAX_RADIUS:
        # Only a prior known to be correlated within the largest radius gets a taper: beyond it the
        # taper cuts true correlations, and on the one prior of unknown length measured (a fitted
        # image Gaussian, before its length was computed) the corrector was as good or better.
        ell = correlation_length(prior, geometry.x_coords)
        if ell is not None and ell <= MAX_RADIUS:
            return GaspariCohnTaper(auto_radius(prior, geometry)), None
    if geometry is not None and not geometry.local and not geometry.sampling_error_correction:
        return None, f"{type(problem).__name__} declares that sampling-error correction does not help it"
    if getattr(prior, "learned", False):
        return None, f"a learned prior ({type(prior).__name__}); measured worse with the corrector"
    return AUTO_GEOMETRY_FREE, None


def _describe(localization) -> str:
    if isinstance(localization, GaspariCohnTaper):
        return f"gaspari-cohn c={localization.radius:.4g}"
    return f"callable {localization!r}"


def make_taper(localization, prior, x_shape, y_shape, like, geometry=None) -> Taper | None:
    """Build the tapers of one fit in the namespace and device of ``like`` (float64).

    Parameters
    ----------
    localization : None, float or callable
        A radius (a :class:`GaspariCohnTaper` on the declared positions) or a
        callable, called as ``localization(x_shape, y_shape)`` (a
        :class:`GaspariCohnTaper` also gets ``geometry``), returning
        ``(taper_xy, taper_yy)`` of shapes ``(d, m)`` and ``(m, m)``,
        ``taper_yy`` symmetric positive semi-definite.
    prior : Prior
        Unused (kept for callers that pass it).
    x_shape, y_shape : tuple of int
    like : array
        Fixes namespace and device.
    geometry : Geometry, optional
        The problem's declaration: where a :class:`GaspariCohnTaper` without
        positions of its own takes them.

    Returns
    -------
    Taper or None
        None when ``localization`` is None.
    """
    if localization is None:
        return None
    x_shape, y_shape = tuple(x_shape), tuple(y_shape)
    if not callable(localization):
        localization = GaspariCohnTaper(localization)
    # Gaspari-Cohn tapers are positive semi-definite by construction; others are checked.
    known_psd = isinstance(localization, GaspariCohnTaper)
    d, m = math.prod(x_shape), math.prod(y_shape)
    out = localization(x_shape, y_shape, geometry) if known_psd else localization(x_shape, y_shape)
    try:
        xy, yy = (np.asarray(t, dtype=float) for t in out)
    except (TypeError, ValueError) as exc:
        raise ValueError("a localization callable must return (taper_xy, taper_yy), two arrays.") from exc
    if xy.shape != (d, m) or yy.shape != (m, m):
        raise ValueError(
            f"localization tapers must have shapes ({d}, {m}) and ({m}, {m}) (got {xy.shape} and {yy.shape})."
        )
    if not (np.all(np.isfinite(xy)) and np.all(np.isfinite(yy))):
        raise ValueError("localization tapers must be finite.")
    if not np.allclose(yy, yy.T, rtol=0.0, atol=1e-12):
        raise ValueError("the data-data localization taper must be symmetric.")
    if not known_psd and m and np.linalg.eigvalsh(yy)[0] < -1e-10 * max(1.0, float(np.abs(yy).max())):
        raise ValueError(
            "the data-data localization taper must be positive semi-definite (its Schur product with "
            "the data covariance must stay a covariance)."
        )
    xp = get_namespace(like)
    return Taper(asarray_like(xy, like, dtype=xp.float64), asarray_like(yy, like, dtype=xp.float64))
