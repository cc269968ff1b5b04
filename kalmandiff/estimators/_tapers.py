"""Gaspari-Cohn tapers on declared positions: the spatial localisers of :mod:`.localization`.

The Schur product of the ensemble covariances ``C_xG`` (``d x m``) and
``C_GG`` (``m x m``) with tapers of the distances between the declared
positions of the unknowns and the data (Houtekamer and Mitchell 2001;
Gaspari and Cohn 1999, eq. 4.10).  Why this form, its cost and its size
limit: the docstring of :mod:`kalmandiff.estimators.localization`.
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
    "MAX_RADIUS",
    "GaspariCohnTaper",
    "Taper",
    "gaspari_cohn",
    "grid_coordinates",
    "periodic_distance",
    "make_taper",
]

#: Largest ``d * m + m * m`` (entries of the two tapers) that is built.
MAX_TAPER_ENTRIES = 2**24
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
