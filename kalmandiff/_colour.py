"""Colour scales shared by the figures of :mod:`kalmandiff.plotting` and :mod:`kalmandiff.compare`.

A module of its own below both, so that neither imports the other for it.
"""

from __future__ import annotations

import numpy as np

from ._backend import to_numpy

__all__ = ["colour_limits"]


def colour_limits(arr) -> tuple[float, float]:
    """``(vmin, vmax)`` for showing ``arr``: symmetric about zero for signed data, so that a
    diverging colour map's centre (white in ``RdBu_r``) is zero; the data's range otherwise."""
    a = np.asarray(to_numpy(arr), dtype=float)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return (0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    if lo < 0:
        vmax = max(abs(lo), abs(hi)) or 1.0
        return (-vmax, vmax)
    return (lo, hi if hi > lo else lo + 1.0)
