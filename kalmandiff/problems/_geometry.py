"""What a forward problem declares about where its unknowns and data live.

Localisation with a spatial taper (Gaspari-Cohn, in
:mod:`kalmandiff.estimators.localization`) needs two facts that no array
shape can tell: the *positions* of the unknowns and of the data, and
whether the map is *local* (each datum depends only on unknowns near it).
A blur keeps a datum next to the pixels it averages; a Fourier magnitude
(phase retrieval) or a closure phase (interferometry) depends on every
pixel, although its array may have the same shape as an image.  So a
:class:`~kalmandiff.problems.ForwardProblem` states these facts in its
``geometry`` attribute, and a plain callable, which states nothing, only
gets the geometry-free localiser.

Positions are on the unit periodic square ``[0, 1)^2`` (the torus; distances
are the shorter way round each axis), in units of the domain side.  A
problem on a non-periodic image declares its pixels there too: the periodic
distance is never longer than the straight one, so a taper on it only keeps
a few extra (sampling-noise) correlations across opposite edges.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["Geometry", "grid_positions", "grid_geometry", "NON_LOCAL"]


def grid_positions(shape, *, stride: int = 1, offset: float = 0.5) -> np.ndarray:
    """Positions in ``[0, 1)^2`` of the entries of an array whose last two axes are a grid.

    Parameters
    ----------
    shape : tuple of int
        ``(..., h, w)``: the array (leading axes, e.g. channels, repeat the grid).
    stride : int, default 1
        The grid is every ``stride``-th point of a grid ``stride`` times finer
        (``h * stride`` by ``w * stride`` cells): entry ``(i, j)`` sits at
        fine cell ``(i * stride + offset, j * stride + offset)``.
    offset : float, default 0.5
        Where in its fine cell an entry sits, in fine cells (0.5: the centre).
        Block averages of ``stride x stride`` fine cells sit at
        ``offset = stride / 2``.

    Returns
    -------
    numpy.ndarray, shape ``(prod(shape), 2)``
        Row ``p``: the position of the ``p``-th entry in C order, in units of
        the domain side.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"a grid needs at least two axes (got shape {shape}).")
    h, w = shape[-2:]
    rows = (np.arange(h) * stride + offset) / (h * stride)
    cols = (np.arange(w) * stride + offset) / (w * stride)
    grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1).reshape(-1, 2)
    return np.tile(grid, (math.prod(shape[:-2]), 1)) % 1.0


class Geometry:
    """A forward problem's declaration: where its unknowns and data live, and how far its map reaches.

    Parameters
    ----------
    local : bool
        True when datum ``k`` depends only on unknowns within ``reach`` of
        its position (a blur, a mask, a block average); False when a datum
        may depend on unknowns anywhere (Fourier magnitudes, closure phases).
    x_coords : array_like ``(d, 2)``, optional
        Positions of the flattened unknowns in ``[0, 1)^2`` (C order).
        Required when ``local``.
    y_coords : array_like ``(m, 2)``, optional
        Positions of the flattened data.  Required when ``local``.
    reach : float, optional
        Required when ``local``: the distance (units of the domain side,
        ``>= 0``) beyond which an unknown has no (or negligible, as the
        problem documents) effect on a datum.
    note : str, optional
        How the declaration was obtained (e.g. a measurement), for people.
    sampling_error_correction : bool, default True
        Whether ``localization="auto"`` may apply the geometry-free
        sampling-error correction to this (non-local) map; False where it
        was measured worse than no localisation (phase retrieval, Navier-Stokes).

    Attributes
    ----------
    local, x_coords, y_coords, reach, note, sampling_error_correction
        As given (coordinates as float64 NumPy arrays, or None).
    """

    def __init__(
        self,
        local: bool,
        x_coords=None,
        y_coords=None,
        reach: float | None = None,
        note: str = "",
        sampling_error_correction: bool = True,
    ):
        self.local = bool(local)
        self.sampling_error_correction = bool(sampling_error_correction)
        self.x_coords = None if x_coords is None else _check_coords(x_coords, "x_coords")
        self.y_coords = None if y_coords is None else _check_coords(y_coords, "y_coords")
        self.note = str(note)
        if reach is not None:
            ok = isinstance(reach, numbers.Real) and not isinstance(reach, bool) and math.isfinite(reach)
            if not ok or reach < 0:
                raise ValueError(f"reach must be a finite number >= 0 (got {reach!r}).")
            reach = float(reach)
        self.reach = reach
        if self.local and (self.x_coords is None or self.y_coords is None or reach is None):
            raise ValueError("a local Geometry needs x_coords, y_coords and reach.")

    def check_sizes(self, d: int, m: int) -> None:
        """Raise ValueError unless the declared positions number ``d`` unknowns and ``m`` data."""
        for coords, n, what in ((self.x_coords, d, "unknowns"), (self.y_coords, m, "data")):
            if coords is not None and coords.shape[0] != n:
                raise ValueError(
                    f"the problem's geometry declares {coords.shape[0]} positions for {n} {what}."
                )

    def __repr__(self) -> str:
        if not self.local:
            extra = "" if self.sampling_error_correction else ", sampling_error_correction=False"
            return f"Geometry(local=False{extra})"
        return (
            f"Geometry(local=True, {self.x_coords.shape[0]} unknowns, {self.y_coords.shape[0]} data, "
            f"reach={self.reach:.4g})"
        )


#: The declaration of a map whose data may depend on every unknown.
NON_LOCAL = Geometry(local=False)


def _check_coords(c, name: str) -> np.ndarray:
    c = np.array(c, dtype=float)
    if c.ndim != 2 or c.shape[1] != 2 or not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be a finite array of shape (n, 2) (got shape {c.shape}).")
    return c


def grid_geometry(
    x_shape, y_shape, reach: float, *, y_stride: int | None = None, y_offset=None, note=""
) -> Geometry:
    """A local :class:`Geometry` for unknowns and data on grids of one square domain.

    Parameters
    ----------
    x_shape : tuple ``(..., H, W)``
        The unknowns, at cell centres of an ``H x W`` grid.
    y_shape : tuple ``(..., h, w)``
        The data on a grid of the same domain, ``H / h = W / w = s`` an
        integer (the stride).
    reach : float
        See :class:`Geometry`.
    y_stride : int, optional
        ``s``; default ``H // h``.
    y_offset : float, optional
        Where each datum sits inside its ``s x s`` block, in fine cells
        (default ``s / 2``: the block's centre, right for block averages and
        for resampling kernels centred on the coarse cells; strided
        sampling ``x[::s, ::s]`` sits at 0.5).
    note : str
        See :class:`Geometry`.
    """
    H, W = (int(v) for v in tuple(x_shape)[-2:])
    h, w = (int(v) for v in tuple(y_shape)[-2:])
    s = H // h if y_stride is None else int(y_stride)
    if h * s != H or w * s != W:
        raise ValueError(f"the data grid {h} x {w} is not the unknowns' grid {H} x {W} with stride {s}.")
    offset = s / 2 if y_offset is None else float(y_offset)
    return Geometry(
        True,
        grid_positions(x_shape),
        grid_positions(y_shape, stride=s, offset=offset),
        reach=reach,
        note=note,
    )


def matrix_reach(M: np.ndarray, out_offset: float, stride: int, tol: float = 1e-3) -> float:
    """Reach along one axis of a 1-D linear map ``M`` (``(n_out, n)``), in units of the axis length.

    The largest distance from output ``i`` (at fine cell ``i * stride +
    out_offset``) to an input ``j`` (at ``j + 1/2``) with
    ``|M[i, j]| > tol * max_j |M[i, j]|``, measured the shorter way round.
    """
    M = np.abs(np.asarray(M, dtype=float))
    n_out, n = M.shape
    out_pos = np.arange(n_out)[:, None] * stride + out_offset
    in_pos = np.arange(n)[None, :] + 0.5
    delta = np.abs(out_pos - in_pos) % n
    delta = np.minimum(delta, n - delta)
    big = M > tol * M.max(axis=1, keepdims=True)
    return float(np.max(np.where(big, delta, 0.0))) / n
