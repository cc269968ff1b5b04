"""The EDM family: the solvers that walk EDM's noise schedule (EnKG, DiffPIR, RMP).

Beside the VP family's :class:`~kalmandiff.estimators._guided.GuidedSolver`,
:class:`EDMSolver` declares, documents and validates once the parameters of
the schedule these solvers share, and builds the schedule from them
(:meth:`EDMSolver.noise_levels`).  The loops stay the solvers' own: EnKG's
ensemble Kalman correction, DiffPIR's half-quadratic splitting and RMP's
mean propagation only share the noise levels they walk.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..diffusion import edm_sigma_schedule
from ._base import BaseSolver
from ._params import EDM_SCHEDULE, POSITIVE_INT, solver_parameters

__all__ = ["EDMSolver", "EDM_PARAMETERS"]


#: The schedule's parameters, for the docstrings of the EDM family (``%(common)s``).
EDM_PARAMETERS = """sigma_min, sigma_max, rho : float, default 0.002, 80.0, 7.0
        EDM's noise schedule (Karras et al. 2022), ``n_steps`` levels
        ``sigma_i = (sigma_max**(1/rho) + i/(N-1) (sigma_min**(1/rho) - sigma_max**(1/rho)))**rho``
        from ``sigma_max`` down to ``sigma_min``, in units of ``x`` (of
        ``data_scale`` where the solver has one); :meth:`noise_levels`
        returns them.
    batch_size : int or None, default 64
        Denoiser chunk size (every particle is covered; None: all at once)."""


@solver_parameters
class EDMSolver(BaseSolver):
    """Base of the solvers that walk EDM's rho-schedule of noise levels (EnKG, DiffPIR, RMP).

    Subclasses redeclare ``n_steps`` with their default (its meaning, a
    number of noise levels, is common; what a level costs is the
    solver's), insert the family's parameter block with ``%(common)s`` in
    their docstring and write their own ``_iterate``.
    """

    _BUDGET_PARAMETERS = ("n_particles", "n_steps")
    _EQUIVALENT_PARAMETERS = {"steps": "its number of noise levels is n_steps"}

    n_steps: int = 20
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    batch_size: int | None = 64

    _COMMON_PARAMETERS_DOC: ClassVar[str] = EDM_PARAMETERS

    _param_constraints = {"n_steps": [POSITIVE_INT], **EDM_SCHEDULE}

    def noise_levels(self, scale: float = 1.0, *, append_zero: bool = True) -> np.ndarray:
        """The noise levels this solver walks, ``(n_steps,)``, or ``(n_steps + 1,)`` ending at 0.

        Parameters
        ----------
        scale : float, default 1.0
            Unit ``c`` of the schedule: ``sigma_min`` and ``sigma_max`` are
            multiplied by it (EnKG's ``data_scale``; 1 for DiffPIR and RMP).
        append_zero : bool, default True
            End with ``sigma = 0`` (the ODE's last step reaches clean data).

        Returns
        -------
        numpy.ndarray
            Decreasing noise levels, float64, in units of ``x``.
        """
        return edm_sigma_schedule(
            int(self.n_steps),
            scale * self.sigma_min,
            scale * self.sigma_max,
            self.rho,
            append_zero=append_zero,
        )
