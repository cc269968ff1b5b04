"""Ensemble Kalman inversion (Iglesias, Law and Stuart 2013) from a prior ensemble.

No diffusion model is involved: the prior enters only through its samples,
which form the initial ensemble.  Two updates are offered:

* ``"kalman"``: the stochastic (perturbed-observation) Kalman-gain update
  ``u_j <- u_j + C_uG (C_GG + dt^{-1} Gamma)^{-1} (y + eta_j - G(u_j))``,
  ``eta_j ~ N(0, dt^{-1} Gamma)``, with pseudo-time steps ``dt`` chosen by the
  Iglesias-Yang data-misfit controller until they add up to one.  For a
  linear forward map and a Gaussian prior this is a full Bayesian update:
  the ensemble mean tends to the exact posterior mean as ``J`` grows.
* ``"kalman-sqrt"``: the same schedule with a deterministic square-root
  (ETKF) update: no observation perturbations (EnsembleKalmanProcesses.jl's
  ``TransformInversion``).
* ``"paper"`` (``"normalized"`` is a deprecated alias): the Kovachki-Stuart continuous-time update with the
  adaptive step ``h / ||D||_F`` (the form in the EnKG reference code),
  an optimiser of the data misfit over the span of the ensemble.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from ._base import BaseSolver, FitContext, ForwardRequest, SafePoint
from ._ensemble import data_misfit_step, kalman_update, normalised_gradient_update, sqrt_kalman_update
from ._params import POSITIVE, POSITIVE_INT, Interval, Options, solver_parameters
from ._protocol import Fitted
from ._registry import register_solver
from .localization import check_localization, make_localizer

__all__ = ["EKISolver"]

_UPDATES = ("kalman", "kalman-sqrt", "paper", "normalized")
_NORMALISED = ("paper", "normalized")  # one update, EnKG's name for it first; "normalized" is deprecated
_CALIBRATED = ("kalman", "kalman-sqrt")


@register_solver("eki", derivative_free=True, rank=10, quick={"max_iter": 20})
@solver_parameters
class EKISolver(BaseSolver):
    """Ensemble Kalman inversion.

    Against the prior mean (docs/benchmarks.md, "Defaults against the prior mean", 30 random
    linear-Gaussian problems): the default ensemble mean is closer to the exact posterior mean than
    the prior mean is on 29 of 30, as the mean of 512 *exact* posterior samples would be (29.0); the
    failure (``d = 41``, ``m = 1``) is where the prior mean lies closer to the posterior mean than
    the Monte Carlo error of a 512-member ensemble.

    Parameters
    ----------
    prior : Prior
        Any prior with ``sample(n, random_state, like)`` and ``event_shape``.
    n_particles : int, default 512
        Ensemble size ``J`` (the reference EKI baseline uses 512).
    update : {"kalman", "kalman-sqrt", "paper"}, default "kalman"
        ``"paper"`` is the normalised update of :class:`EnKGSolver`'s
        ``update="paper"`` (same name, same step parameter; ``"normalized"`` is a
        deprecated alias).
    dt : float or None, default None
        ``"kalman"`` only: a fixed pseudo-time step (the run ends when the
        steps add up to one); None uses the data-misfit controller.
    guidance_scale : float, default 2.0
        ``"paper"`` only: ``h`` in ``h / ||D||_F`` (reference: 2), as in
        :class:`EnKGSolver`.
    step : float or None, default None
        Deprecated name of ``guidance_scale`` (a DeprecationWarning; when
        given it is used).
    max_iter : int, default 500
        Iteration cap (the reference's 500 iterations for ``"paper"``).
    localization : "auto", None, "secnice", "sec", float or callable, default "auto"
        Covariance localisation of the Kalman updates (an explicit one is
        refused with ``"paper"``), as in :class:`EnKGSolver`: ``"auto"`` runs
        a Gaspari-Cohn taper on a declared local map, else ``"secnice"``
        when ``J < d``, only where the candidate passes
        :func:`~kalmandiff.estimators.localization.prior_check` (what ran and why is in
        ``localization_``); a float is a Gaspari-Cohn half-width on the
        declared positions (``0 < c <= 0.25`` or ``math.inf``).  Measured
        (docs/benchmarks.md, "Localisation: which default", EKI rows):
        with ``J < d`` SECNice was better than none on every exact
        posterior (a 32 x 32 random field through a plain callable,
        ``J = 64``: error 0.19 against 0.59, spread 0.84 against 0.20);
        with ``J >= d`` it was sometimes worse, hence off there.
        Localised updates need several pseudo-time steps: a single full
        step (``dt=1``) over-disperses (measured with the taper on a
        32 x 32 Gaussian random field with ``J = 64``: spread 1.33 times the
        exact posterior's, mean error 0.23), ``dt=0.5`` gives 1.02-1.04 and
        0.10, and the data-misfit controller's 7 steps 0.96-0.98 and
        0.08-0.09.
    on_failure : {"raise", "resample"}
        Failed-member policy, as in :class:`EnKGSolver`.
    %(shared)s

    Attributes
    ----------
    particles_ : array ``(J, *event_shape)``
    stats_ : dict
    history_ : list of dict
        One record per iteration: iteration, pseudo-time ``t`` and ``dt``,
        misfit statistics, spread, counts.
    n_iter_ : int
        Iterations run.
    localization_ : str or None
        The localisation that ran, None when off (see ``localization``).
    """

    # The reference EKI baseline (enkg-pytorch algo/eki.py): the normalised update, h = 2,
    # 500 iterations, 512 members, used for Navier-Stokes; no other family has settings.
    _FAMILY_DEFAULTS = {
        "navier-stokes": dict(n_particles=512, update="paper", guidance_scale=2.0, max_iter=500),
    }

    _BUDGET_PARAMETERS = ("n_particles", "max_iter")
    _EQUIVALENT_PARAMETERS = {
        "steps": "its iteration count is max_iter (a cap under the data-misfit controller, dt=None)",
        "updates": "every iteration is one ensemble update (max_iter sets how many)",
        "queries": "each iteration evaluates the forward model once per member (n_particles)",
    }

    #: the updates whose ensemble approximates the posterior (kalmandiff.diagnostics.promises_calibration)
    calibrated_when: ClassVar[dict] = {"update": _CALIBRATED}

    n_particles: int = 512
    update: str = "kalman"
    dt: float | None = None
    guidance_scale: float = 2.0
    step: float | None = None
    max_iter: int = 500
    localization: Any = "auto"

    _param_constraints = {
        "update": [Options(*_UPDATES)],
        "dt": [None, Interval("real", 0, 1, closed="right")],
        "guidance_scale": [POSITIVE],
        "step": [None, POSITIVE],
        "max_iter": [POSITIVE_INT],
    }

    def _check_more(self) -> None:
        check_localization(self.localization, self.update)
        if self.update == "normalized":
            warnings.warn(
                "EKISolver(update='normalized') is now update='paper', the name EnKGSolver uses for the "
                "same normalised update.",
                DeprecationWarning,
                stacklevel=5,
            )
        if self.step is not None:
            warnings.warn(
                "EKISolver(step=...) is now guidance_scale=..., the name EnKGSolver uses for the same h.",
                DeprecationWarning,
                stacklevel=5,
            )

    @property
    def _normalised(self) -> bool:
        return self.update in _NORMALISED

    def _h(self) -> float:
        """``h`` of the normalised update (the deprecated ``step`` wins when given)."""
        return float(self.guidance_scale if self.step is None else self.step)

    def _planned_counts(self, problem, n_particles: int) -> dict[str, int]:
        """Forward evaluations by formula (EKI calls no denoiser).

        The number of iterations is ``max_iter`` for ``"paper"`` and
        the number of pseudo-time steps ``dt`` that add up to one for a fixed
        ``dt``.  With the data-misfit controller (``dt=None``) it depends on
        the data: the counts are then an upper bound (``max_iter``
        iterations, flagged ``upper_bound``); the controller typically needs 5-15.
        """
        J = n_particles
        n_iter = int(self.max_iter)
        if not self._normalised and self.dt is not None:
            t, n_iter = 0.0, 0
            while n_iter < int(self.max_iter):
                t += min(float(self.dt), 1.0 - t)
                n_iter += 1
                if t >= 1.0 - 1e-12:
                    break
        return {
            "n_denoiser_evals": 0,
            "n_sequential_denoiser_evals": 0,
            "n_forward_evals": J * n_iter,
            "n_sequential_forward_evals": n_iter,
            "n_forward_vjps": 0,
            "n_denoiser_vjps": 0,
        }

    def _planned_is_bound(self) -> bool:
        return not self._normalised and self.dt is None

    def _n_progress_steps(self) -> int | None:
        # an upper bound where the data-misfit controller may stop earlier; the bar is
        # set to the true total when the run ends
        return int(self._planned_counts(None, int(self.n_particles))["n_sequential_forward_evals"])

    def _iterate(self, ctx: FitContext, state: dict | None):
        xp = ctx.xp
        J = int(self.n_particles)
        if state is not None and "final" in state:
            return Fitted(state["final"], {"n_iter_": len(ctx.history)})
        std = ctx.positive_noise_std(self.update) if not self._normalised else None
        taper, localization = make_localizer(
            self.localization, self.prior, ctx.problem, ctx.y, self.update, n_particles=int(self.n_particles)
        )
        if state is None:
            u = self.prior.sample(J, random_state=ctx.rng.numpy, like=ctx.like())
            X, t, it = self._flat(xp.asarray(u, dtype=ctx.y.dtype)), 0.0, 0
        else:
            X, t, it = state["X"], float(state["t"]), int(state["it"])
        while it < self.max_iter:
            yield SafePoint(it, {"X": X, "t": t, "it": it})
            G, failed = yield ForwardRequest(xp.reshape(X, (J, *ctx.x_shape)))
            X, (phi, dt) = ctx.failures.update(
                X, G, failed, lambda Xg, Gg, t=t: self._step(ctx, Xg, Gg, std, t, taper)
            )
            t += dt or 0.0
            it += 1
            ctx.record(
                step=it - 1,
                t=t,
                dt=dt,
                misfit=phi,
                spread=ctx.spread(X),
            )
            if ctx.stopped_early or (not self._normalised and t >= 1.0 - 1e-12):
                break
        return Fitted(xp.reshape(X, (J, *ctx.x_shape)), {"n_iter_": it, "localization_": localization})

    def _step(self, ctx: FitContext, X, G, std, t: float, taper=None):
        """The update of the successful members and what is recorded: ``(X, (misfit, dt))``."""
        phi = ctx.misfit(G)
        X, dt = self._update(ctx, X, G, phi, std, t, taper)
        return X, (phi, dt)

    def _update(self, ctx: FitContext, X, G, phi, std, t: float, taper=None):
        """One EKI update of the successful members; returns them and the pseudo-time step (or None)."""
        if self._normalised:
            X, _ = normalised_gradient_update(X, ctx.weighted_residual(G), G, self._h())
            return X, None
        m = int(ctx.y_flat.shape[0])
        dt = self.dt if self.dt is not None else data_misfit_step(np.asarray(phi), m, t)
        dt = min(dt, 1.0 - t)
        if self.update == "kalman":
            X = kalman_update(
                X, G, ctx.y_flat, std, 1.0 / dt, ctx.rng, residual=ctx.flat_residual, taper=taper
            )
        else:
            X = sqrt_kalman_update(X, G, ctx.y_flat, std, 1.0 / dt, residual=ctx.flat_residual, taper=taper)
        return X, dt
