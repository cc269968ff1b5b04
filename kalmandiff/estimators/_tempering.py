"""How EnKG's calibrated updates share the likelihood over the correction window.

Each calibrated (Kalman) update assimilates ``1 / a`` of the likelihood, ``a``
the inflation of the noise covariance; over the window the shares add up to
one, so that the ensemble ends on the posterior (ES-MDA for a fixed ``a``).
"""

from __future__ import annotations

from ._ensemble import data_misfit_step

__all__ = ["LikelihoodTempering"]


class LikelihoodTempering:
    """The share ``1 / a`` of the likelihood each calibrated update assimilates.

    ``"fixed"``: ``a`` the same at every update (by default the number of
    updates in the window, so that the ``1 / a`` add up to one, as ES-MDA).
    ``"adaptive"``: the data-misfit controller of Iglesias and Yang picks
    each ``dt = 1 / a`` from the members' misfits, at least the share
    ``(1 - t) / (updates left)`` of what is left so that the steps add up to
    one by the end of the window, whatever its length.  ``t`` (the
    pseudo-time used so far) is the only state; it is checkpointed.

    Parameters
    ----------
    mode : {"fixed", "adaptive"}
    fixed_inflation : float
        ``a`` of every update in ``"fixed"`` mode.
    t : float, default 0.0
        Pseudo-time already used (a resumed run's).
    """

    def __init__(self, mode: str, fixed_inflation: float, t: float = 0.0):
        self.mode, self.fixed_inflation, self.t = mode, float(fixed_inflation), float(t)

    def inflation(self, phi, n_data: int, updates_left: int) -> float | None:
        """``a`` for the next update, or None when the whole likelihood has been assimilated.

        Parameters
        ----------
        phi : array ``(J,)``
            The members' data misfits before the update.
        n_data : int
            Number of data ``m``.
        updates_left : int
            Updates still to come in the window, this one included.
        """
        if self.mode == "fixed":
            return self.fixed_inflation
        left = 1.0 - self.t
        if left <= 1e-12:
            return None
        dt = max(data_misfit_step(phi, n_data, self.t), left / max(updates_left, 1))
        dt = min(dt, left)
        self.t += dt
        return 1.0 / dt
