"""What EnKG's settings make it do, before it runs, and the paper's settings.

The reference configurations of the paper's scripts (``defaults_for``), the
update that ``"auto"`` stands for, the correction window, the likelihood
map's step counts, the guidance step sizes and the evaluations they cost:
pure functions of the parameters (and of the problem's noise level), shared
by the loop, the cost planner and the user who asks before fitting.
"""

from __future__ import annotations

import numpy as np

from ._prior_scale import prior_scale

__all__ = ["EnKGPlan"]

#: what the reference scripts share (enkg-pytorch scripts/*.sh, research notes section 1 table)
_PAPER_SETTINGS = dict(
    update="paper",
    n_steps=80,
    n_updates=2,
    guidance_scale=2.0,
    threshold_start=0.05,
    threshold_end=0.05,
    lr_min_ratio=0.0,
    batch_size=64,
)


class EnKGPlan:
    """The planning half of :class:`~kalmandiff.estimators.EnKGSolver` (a mixin: no parameters of its own).

    Reads the solver's parameters (``update``, ``n_steps``, ``threshold_start``,
    ``threshold_end``, ``phi_factor``, ``phi_max_steps``, ``guidance_scale``,
    ``lr_min_ratio``, ``init``, ``data_scale``, ``ode_method``, ``n_updates``).
    """

    _FAMILY_DEFAULTS = {
        "navier-stokes": {**_PAPER_SETTINGS, "n_particles": 2048},
        "interferometry": {
            **_PAPER_SETTINGS,
            "n_particles": 1024,
            "n_updates": 1,
            "guidance_scale": 3.5,
            "threshold_start": 0.1,
            "threshold_end": 0.1,
            "lr_min_ratio": 1e-3,
        },
        "images": {**_PAPER_SETTINGS, "n_particles": 1024},
    }

    # -- what "auto" stands for ----------------------------------------------
    def resolved_update(self, noise_std=None) -> str:
        """The update that runs: ``"auto"`` is ``"kalman-sqrt"`` if every ``noise_std > 0``, else ``"paper"``.

        ``noise_std`` (float or array) is the problem's noise level; None (not
        known yet, e.g. when planning a cost before ``fit``) counts as positive.
        """
        if self.update != "auto":
            return self.update
        if noise_std is None:
            return "kalman-sqrt"
        return "kalman-sqrt" if bool(np.all(np.asarray(noise_std, dtype=float) > 0)) else "paper"

    def _for_update(self, update: str | None) -> str:
        return self.resolved_update() if update is None else update

    def resolved_phi_factor(self, update: str | None = None) -> int:
        """``phi_factor`` in effect: ``"auto"`` is 4 (the reference code) with ``"paper"``, 1 otherwise."""
        if self.phi_factor != "auto":
            return int(self.phi_factor)
        return 4 if self._for_update(update) == "paper" else 1

    def resolved_init(self, update: str | None = None) -> str:
        """``init`` in effect: ``"auto"`` is ``"random"`` with ``"paper"``, ``"prior-centred"`` otherwise."""
        if self.init != "auto":
            return self.init
        return "random" if self._for_update(update) == "paper" else "prior-centred"

    def resolved_data_scale(self, update: str | None = None) -> float:
        """Unit ``c`` of the noise schedule: ``"auto"`` is 1 with ``"paper"``, else the prior's pointwise std."""
        if self.data_scale != "auto":
            return float(self.data_scale)
        if self._for_update(update) == "paper":
            return 1.0
        return prior_scale(self.prior) or 1.0

    # -- the schedule --------------------------------------------------------
    def correction_steps(self) -> list[int]:
        """Indices ``i`` of the steps at which the ensemble is corrected."""
        N = self.n_steps
        return [i for i in range(N) if self.threshold_start * N < i < N - int(self.threshold_end * N)]

    def phi_steps(self, i: int, update: str | None = None) -> int:
        """Number of ODE steps ``k_i`` of the likelihood map at step ``i`` (for the resolved ``update``)."""
        return min(1 + (self.n_steps - i) // self.resolved_phi_factor(update), self.phi_max_steps)

    def step_size(self, i: int) -> float:
        """Guidance scale ``h_i`` at step ``i`` (reference ``get_lr``)."""
        r = self.lr_min_ratio
        if r > 0:
            return self.guidance_scale * (1 - r) * (self.n_steps - i) / self.n_steps + r
        return float(self.guidance_scale)

    def _planned_counts(self, problem, n_particles: int) -> dict[str, int]:
        """Denoiser and forward evaluations by formula (exact; the problem does not change them).

        Sequential counts are per particle (the depth if every particle ran
        in parallel); totals multiply by ``J``.
        """
        J = n_particles
        # "auto" runs the paper's schedule on noiseless data: plan with the update that will run
        update = self.resolved_update(getattr(problem, "noise_std", None))
        per_call = 2 if self.ode_method == "heun" else 1
        seq_den = 0
        for i in range(self.n_steps):
            last = i == self.n_steps - 1
            seq_den += 1 if (last or per_call == 1) else 2
        window = self.correction_steps()
        for i in window:
            k = self.phi_steps(i, update)
            seq_den += self.n_updates * (k if per_call == 1 else 2 * k - 1)
        seq_fwd = len(window) * self.n_updates
        start = (
            1 if self.resolved_init(update) == "prior-centred" else 0
        )  # D(0, sigma_max): one call, one row
        return {
            "n_sequential_denoiser_evals": seq_den + start,
            "n_denoiser_evals": J * seq_den + start,
            "n_sequential_forward_evals": seq_fwd,
            "n_forward_evals": J * seq_fwd,
            "n_forward_vjps": 0,
            "n_denoiser_vjps": 0,
        }
