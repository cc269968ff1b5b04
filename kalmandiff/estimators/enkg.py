"""Ensemble Kalman Diffusion Guidance (EnKG; Zheng et al., arXiv 2409.20175).

An ensemble of ``J`` particles walks the probability-flow ODE of the prior
from ``sigma_max`` to zero.  Inside a correction window each step first
moves the particles towards the data with an ensemble update that only
*calls* the forward model: every particle is mapped to a clean estimate
``x0_j = phi(x_j)`` by a short deterministic ODE solve, the forward model
is evaluated there, and the particles are moved along the statistically
linearised gradient.  Then one unconditional Euler step follows.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ..diffusion import euler_step, heun_step, solve_to_zero
from ._base import FitContext, ForwardRequest, SafePoint
from ._edm import EDMSolver
from ._enkg_plan import EnKGPlan
from ._ensemble import kalman_update, normalised_gradient_update, sqrt_kalman_update
from ._params import FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, Options, solver_parameters
from ._protocol import Fitted
from ._registry import register_solver
from ._tempering import LikelihoodTempering
from .localization import check_localization, make_localizer

__all__ = ["EnKGSolver"]

_UPDATES = ("auto", "paper", "kalman", "kalman-sqrt")
_CALIBRATED = ("kalman", "kalman-sqrt")
_ODE_METHODS = ("euler", "heun")
_INITS = ("auto", "random", "centred", "prior-centred")
_TEMPERINGS = ("fixed", "adaptive")


@register_solver("enkg", derivative_free=True, rank=0, quick={"n_steps": 6})
@solver_parameters
class EnKGSolver(EnKGPlan, EDMSolver):
    """Ensemble Kalman Diffusion Guidance; by default the calibrated square-root Kalman update.

    ``update="auto"`` (the default) runs ``"kalman-sqrt"``, a square-root
    Kalman gain tempered over the correction window so that the ensemble
    approximates the posterior, when every ``noise_std > 0``, and the paper's
    update on noiseless data (``update_`` says which ran).  ``"paper"`` is
    the paper's normalised-gradient step exactly as the authors' code (a
    MAP-like optimiser whose ensemble collapses); ``defaults_for("navier-stokes")``
    gives the paper's whole configuration (``J = 2048``, 80 Euler steps, two
    updates per step with ``h = 2``, ``phi_factor = 4``).

    The defaults were chosen on 30 random linear-Gaussian problems (``d``
    4-256, scales 1e-3 to 1e3, noise 1e-3 to 1 of the signal): they beat the
    prior mean on all 30, with an error 0.19 of the prior mean's in the
    median (``J = 64``: 0.35, ``J = 1024``: 0.10), where the paper's update
    fails 24; at ``N = 20`` the spread is 10-15% below the exact posterior's
    on a Gaussian ``d = 16`` case (docs/benchmarks.md, "Defaults against the
    prior mean").

    Parameters
    ----------
    prior : Prior
        Diffusion prior with ``denoise(x, sigma)`` and ``event_shape``.
    n_particles : int, default 256
        Ensemble size ``J`` (the reference code's default is 1024; the paper
        uses 2048 for Navier-Stokes).
    n_steps : int, default 20
        Number ``N`` of noise levels of the sampling schedule (the paper: 80).
    guidance_scale : float, default 2.0
        ``h``: the step of the normalised update (``update="paper"``).
    n_updates : int, default 2
        Ensemble updates per correction step; ``phi`` and the forward model
        are re-evaluated before each.
    threshold_start, threshold_end : float, default 0.05
        The correction runs at steps ``threshold_start*N < i < N - int(threshold_end*N)``.
    lr_min_ratio : float, default 0.0
        If positive, ``h`` decays linearly with the step index as in the
        reference code: ``h_i = h (1 - r) (N - i) / N + r``.
    %(common)s
    phi_factor : int or "auto", default "auto"
        The likelihood map ``phi`` solves the ODE to zero in
        ``k_i = min(1 + (N - i) // phi_factor, phi_max_steps)`` steps; the
        public EnKG code uses 4, InverseBench 8.  ``"auto"``: 4 with
        ``update="paper"``, 1 with the calibrated updates (``phi`` then walks
        as many steps as the prediction has left, up to ``phi_max_steps``;
        measured decisive at noise below 1% of the signal).
    phi_max_steps : int, default 20
        Cap of ``k_i``.
    ode_method : {"euler", "heun"}, default "euler"
        Integrator of the prediction step (and of ``phi``).  Heun costs a
        second denoiser call per step.
    update : {"auto", "paper", "kalman", "kalman-sqrt"}, default "auto"
        ``"auto"``: ``"kalman-sqrt"`` when every ``noise_std > 0``, else
        ``"paper"`` (:meth:`resolved_update`).
        ``"paper"``: the paper's normalised-gradient update
        ``x <- x - h/||C||_F C (x - mean x)`` (a MAP-like point; the ensemble
        collapses), ``C`` weighting the residuals by ``Gamma^{-1}`` as in
        Algorithm 1.  The public code uses the plain residual ``G - y`` on
        Navier-Stokes and images, the same update for a scalar ``noise_std``
        (a scalar weight cancels in ``C / ||C||_F``); with unequal levels
        this reproduces the paper (pass a scalar ``noise_std`` for the
        code's).  ``"kalman"``: an ensemble Kalman update with perturbed
        observations, tempered over the window as in ES-MDA, so that the
        ensemble approximates the posterior (exact for linear-Gaussian
        problems as ``J`` grows).  ``"kalman-sqrt"``: the same with a
        deterministic square-root (ETKF) update.  Both need a positive
        ``noise_std``.  ``"kalman-sqrt"`` is the default: better than the
        prior mean on exact posteriors where ``"paper"`` is worse, as
        accurate on Navier-Stokes and phase retrieval, and it fits closure
        phases to the noise (chi^2 1.0 against 11; docs/benchmarks.md,
        "EnKG updates").
    kalman_inflation : float or None, default None
        Inflation ``a`` of the noise covariance in each Kalman update; None
        uses the number of updates in the window, so that the inverses add
        up to one.
    tempering : {"fixed", "adaptive"}, default "fixed"
        How the calibrated updates share the likelihood: ``"fixed"``, the
        same inflation ``a`` at every update (ES-MDA); ``"adaptive"``, the
        data-misfit controller of Iglesias and Yang (as :class:`EKISolver`)
        picks each ``dt = 1 / a``, at least ``(1 - t) / (updates left)``, so
        that the steps add up to one by the window's end (later updates then
        leave the ensemble as it is, their forward evaluations still run).
        Not the default: worse than ``"fixed"`` on exact posteriors and the
        CPU suite's images (docs/benchmarks.md, "EnKG updates").  Needs
        ``kalman_inflation=None``.
    localization : "auto", None, "secnice", "sec", float or callable, default "auto"
        Covariance localisation of the calibrated updates: the gain becomes
        ``(rho_xG o C_xG) (rho_GG o C_GG + a Gamma)^{-1}``, which removes the
        spurious sample correlations of a small ensemble (``J << d``) and
        lets the update leave the ensemble's span.  ``"auto"``: a candidate
        (a Gaspari-Cohn taper of half-width ``c = max(l, 1.5 h, reach / 2)``
        when the problem declares a local map, its ``geometry``, and the
        prior's correlation length ``l`` is known and at most 0.25 of the
        domain; else ``"secnice"`` when ``J < d``) runs only where it passes
        :func:`~kalmandiff.estimators.localization.prior_check` on the prior
        or, for a linear problem, on the exact posterior; off with
        ``update="paper"``, on phase retrieval and Navier-Stokes (declared),
        with a learned prior, and beyond the size limit (what ran and why is in
        ``localization_``).  ``"secnice"`` / ``"sec"`` /
        :class:`~kalmandiff.estimators.SamplingErrorCorrection`: shrink the
        sample correlations of ``C_xG`` and ``C_GG`` by a function of
        themselves and ``J`` (Vishny et al. 2024, parameter-free; Lee 2021,
        ``r |r|^2``) at every update, no positions needed.  A float ``c``:
        the Gaspari-Cohn half-width in units of the domain side,
        ``0 < c <= 0.25`` (support ``2c``), or ``math.inf`` (the unlocalised
        gain), on the positions the problem declares (ValueError at ``fit``
        when it declares none, as a plain callable, or a non-local map).  A
        callable ``f(x_shape, y_shape) -> (taper_xy, taper_yy)`` gives the
        tapers (NumPy, ``(d, m)`` and symmetric positive semi-definite
        ``(m, m)``), e.g.
        :class:`~kalmandiff.estimators.localization.GaspariCohnTaper` with
        explicit positions.  None: off.  Memory ``O(d m + m^2)`` (an
        explicit localiser is refused beyond ``2**24`` entries), an
        ``m x m`` solve or eigendecomposition per update.  The rules are
        measured (docs/benchmarks.md, "Localisation: which default"): with
        ``J < d`` ``"secnice"`` was never worse than none on exact
        posteriors (with ``J >= d`` it sometimes was); on a blurred,
        subsampled 32 x 32 field (``J = 64``) the error was 0.18 with
        ``"secnice"``, 0.08 with the taper and 0.61 unlocalised.
    init : {"auto", "random", "centred", "prior-centred"}, default "auto"
        Initial ensemble ``x_j = sigma_max z_j``, ``z_j ~ N(0, I)``.
        ``"centred"`` subtracts the sample mean of the ``z_j`` (rescaled to
        keep their variance), which removes the initial draw's Monte Carlo
        error from the ensemble mean.  ``"prior-centred"``: centred, then
        shifted by ``D(0, sigma_max)`` (one denoiser call), the mean of the
        ``sigma_max``-marginal, without which weak data leave a bias of about
        ``prior std / sigma_max`` of the prior mean.  ``"auto"``:
        ``"random"`` with ``update="paper"`` (the reference code),
        ``"prior-centred"`` otherwise.
    data_scale : float or "auto", default "auto"
        Unit ``c`` of the noise schedule: ``sigma_min`` and ``sigma_max`` are
        multiplied by it (EDM's schedule run on ``x / c``).  ``"auto"``: 1 with
        ``update="paper"`` (the reference's units), else the prior's pointwise
        standard deviation where its moments are known (1 for a network prior,
        which should be trained on data of unit scale), so that ``sigma_max``
        stays far above the prior's spread at any scale.
    on_failure : {"raise", "resample"}, default "raise"
        Policy for failed members (an exception or timeout inside
        :class:`~kalmandiff.problems.BlackBox`, or non-finite output):
        ``"raise"`` stops with :class:`MemberFailureError` naming them;
        ``"resample"`` updates with the successful members and redraws the
        failed ones from a Gaussian fitted to them (never re-running them
        inside the update).
    %(shared)s

    Notes
    -----
    Cost: ``expected_evaluations()`` gives the counts by formula; at the
    defaults each particle takes 395 sequential denoiser and 34 forward
    evaluations (the paper's 80 steps: 1,588 and 142).  The solver's own work
    is under 1% of a run.  What accuracy each setting buys is measured in
    ``docs/benchmarks.md`` (speed suite; error against ``J`` and ``N`` on
    Navier-Stokes).

    Attributes
    ----------
    update_ : str
        The update that ran (``"auto"`` resolved).
    particles_ : array ``(J, *event_shape)``
        Final ensemble at ``sigma = 0``.
    stats_ : dict
        Evaluation counts (total and sequential), times, failures.
    history_ : list of dict
        One record per step: step, sigma, misfit statistics, spread, counts.
    localization_ : str or None
        The localisation that ran (e.g. ``"gaspari-cohn c=0.1085"``,
        ``"SamplingErrorCorrection('secnice', delta=1.0)"``), None when off.
    """

    _EQUIVALENT_PARAMETERS = {
        "updates": "its ensemble updates per corrected noise level are n_updates",
        "queries": "each ensemble update evaluates the forward model once per member (n_particles)",
    }

    #: the updates whose ensemble approximates the posterior (kalmandiff.diagnostics.promises_calibration);
    #: "auto" resolves to "kalman-sqrt" whenever the data are noisy
    calibrated_when: ClassVar[dict] = {"update": (*_CALIBRATED, "auto")}
    #: the promise is for the full schedule: the testing kit's calibration check runs at these settings
    calibration_check_params: ClassVar[dict] = {"n_steps": 80}

    n_particles: int = 256
    n_steps: int = 20
    guidance_scale: float = 2.0
    n_updates: int = 2
    threshold_start: float = 0.05
    threshold_end: float = 0.05
    lr_min_ratio: float = 0.0
    phi_factor: int | str = "auto"
    phi_max_steps: int = 20
    ode_method: str = "euler"
    update: str = "auto"
    kalman_inflation: float | None = None
    tempering: str = "fixed"
    localization: Any = "auto"

    init: str = "auto"
    data_scale: float | str = "auto"

    # -- validation ----------------------------------------------------------
    _param_constraints = {
        "n_updates": [POSITIVE_INT],
        "phi_factor": [POSITIVE_INT, Options("auto")],
        "phi_max_steps": [POSITIVE_INT],
        "guidance_scale": [POSITIVE],
        "lr_min_ratio": [NON_NEGATIVE],
        "threshold_start": [FRACTION],
        "threshold_end": [FRACTION],
        "update": [Options(*_UPDATES)],
        "ode_method": [Options(*_ODE_METHODS)],
        "init": [Options(*_INITS)],
        "kalman_inflation": [None, POSITIVE],
        "data_scale": [POSITIVE, Options("auto")],
        "tempering": [Options(*_TEMPERINGS)],
    }

    def _check_more(self) -> None:
        # "auto" may still resolve to "paper" (noiseless data): checked again at fit, in _iterate
        check_localization(self.localization, self.update)
        if self.tempering == "adaptive" and self.kalman_inflation is not None:
            raise ValueError(
                "tempering='adaptive' chooses the inflation of each update; leave kalman_inflation=None."
            )

    # -- the loop --------------------------------------------------------------
    def _iterate(self, ctx: FitContext, state: dict | None):
        update = self.resolved_update(np.asarray(self._noise_std_host(ctx)))
        if update == "paper":
            check_localization(self.localization, update)  # "auto" resolved to paper: refuse an explicit one
        taper, localization = make_localizer(
            self.localization, self.prior, ctx.problem, ctx.y, update, n_particles=int(self.n_particles)
        )
        fitted = {"update_": update, "localization_": localization}
        if state is not None and "final" in state:
            return Fitted(state["final"], fitted)
        J, N = int(self.n_particles), int(self.n_steps)
        c = self.resolved_data_scale(update)
        sigmas = self.noise_levels(c)
        window = set(self.correction_steps())
        noise_std = ctx.positive_noise_std(update) if update != "paper" else None
        fixed = self.kalman_inflation or max(len(window) * self.n_updates, 1)
        step = heun_step if self.ode_method == "heun" else euler_step

        if state is None:
            x, start, t = self._initial_ensemble(ctx, J, update, c * self.sigma_max), 0, 0.0
        else:
            x, start, t = state["x"], int(state["i"]), float(state.get("t", 0.0))
        tempering = LikelihoodTempering(self.tempering, fixed, t)
        for i in range(start, N):
            yield SafePoint(i, {"i": i, "x": x, "t": tempering.t})
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            misfit = None
            if i in window:
                later = sum(1 for k in window if k >= i)
                for u in range(self.n_updates):
                    left = later * self.n_updates - u
                    x, misfit = yield from self._correct(
                        ctx, x, i, s, noise_std, tempering, left, taper, update, c
                    )
            x = step(ctx.denoise, x, s, s_next)
            ctx.record(
                step=i,
                sigma=s,
                corrected=i in window,
                misfit=misfit,
                spread=ctx.spread(x),
            )
            if ctx.stopped_early:
                break
        return Fitted(x, fitted)

    def _initial_ensemble(self, ctx: FitContext, J: int, update: str, sigma_max: float):
        """``sigma_max * z`` with ``z ~ N(0, I)``, centred (and shifted) as ``init`` says."""
        init = self.resolved_init(update)
        z = ctx.rng.normal((J, *ctx.x_shape), like=ctx.like())
        if init in ("centred", "prior-centred"):
            # Remove the sample mean of the initial noise: the ensemble mean then
            # carries no Monte Carlo error from the draw (antithetic-style).
            z = (z - ctx.xp.mean(z, axis=0, keepdims=True)) * math.sqrt(J / (J - 1))
        x = sigma_max * z
        if init == "prior-centred":
            # The sigma_max-marginal has the prior's mean, which D(0, sigma_max) gives to a relative
            # (prior std / sigma_max)^2; a zero-mean start would leave about prior std / sigma_max of
            # the prior mean's offset in the result, a bias that weak data cannot correct.
            x = x + ctx.denoise(ctx.xp.zeros_like(x[:1, ...]), sigma_max)
        return x

    def _correct(
        self,
        ctx: FitContext,
        x,
        i,
        sigma,
        noise_std,
        tempering: LikelihoodTempering,
        left: int,
        taper=None,
        update: str = "paper",
        scale: float = 1.0,
    ):
        """One ensemble update at noise level ``sigma`` (a generator: it asks for forward values).

        ``left`` counts the updates still to come in the window, this one
        included.  Returns the updated particles and the members' misfits
        (before the update).
        """
        xp = ctx.xp
        x0 = solve_to_zero(
            ctx.denoise,
            x,
            sigma,
            self.phi_steps(i, update),
            scale * self.sigma_min,
            self.rho,
            method=self.ode_method,
        )
        G, failed = yield ForwardRequest(x0)
        ok = ctx.handle_failures(failed)
        X = self._flat(x)
        G_ok = ctx.take_ok(G, ok)
        misfit = ctx.misfit(G_ok)
        inflation = None
        if update != "paper":
            inflation = tempering.inflation(misfit, int(ctx.y_flat.shape[0]), left)
            if inflation is None:  # the likelihood is used up: nothing left to assimilate
                return x, misfit
        X_ok = self._apply_update(ctx, ctx.take_ok(X, ok), G_ok, i, noise_std, inflation, taper, update)
        Xn = ctx.merge_successes(X, X_ok, ok)
        return xp.reshape(Xn, tuple(x.shape)), misfit

    def _apply_update(
        self, ctx: FitContext, X, G, i: int, noise_std, inflation: float, taper=None, update="paper"
    ):
        if update == "paper":
            Xn, _ = normalised_gradient_update(X, ctx.weighted_residual(G), G, self.step_size(i))
            return Xn
        residual = ctx.flat_residual
        if update == "kalman-sqrt":
            return sqrt_kalman_update(X, G, ctx.y_flat, noise_std, inflation, residual=residual, taper=taper)
        return kalman_update(X, G, ctx.y_flat, noise_std, inflation, ctx.rng, residual=residual, taper=taper)

    @staticmethod
    def _noise_std_host(ctx: FitContext):
        from .._backend import to_numpy

        return to_numpy(ctx.problem.noise_std_array(like=ctx.y))
