"""Reverse mean propagation (RMP; Xue, Cai, Yuan and Gao, arXiv 2410.05646).

RMP estimates the posterior mean ``E[x_0 | y]`` without drawing posterior
samples.  Along the reverse diffusion it carries one mean ``m``; at each
step it fits a Gaussian ``q = N(mu, v I)`` to the reverse conditional

    p(x' | x = m, y)  ~  p(x = m | x') p_{sigma'}(x') p(y | x'),

by minimising the reverse KL divergence ``KL(q || p)`` with a few
natural-gradient steps driven by scores, and propagates ``m <- mu``.  Its
result is the final mean; it needs gradients of the forward model.
"""

from __future__ import annotations

import math

import numpy as np

from .._backend import get_namespace, move_like
from ._base import FitContext, SafePoint, check_is_fitted
from ._edm import EDMSolver
from ._gradients import misfit_gradient
from ._observation import inverse_noise_variance
from ._params import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Interval, Options, solver_parameters
from ._protocol import Fitted
from ._registry import register_solver

__all__ = ["RMPSolver"]


@register_solver("rmp", derivative_free=False, rank=70, quick={"n_steps": 6})
@solver_parameters
class RMPSolver(EDMSolver):
    """Reverse mean propagation with a natural-gradient inner loop (VE / EDM form).

    No public code exists; this is built from the paper's description
    (``seeds/004``), and these are the decisions that description left open:

    * **Diffusion form.**  The VE form ("VE-RMP", which the paper runs with
      ``T = 30`` steps) on EDM's rho-schedule of ``n_steps`` levels from
      ``sigma_max`` to ``sigma_min``.  The transition between consecutive
      levels ``sigma > sigma'`` is ``p(x | x') = N(x; x', (sigma^2 - sigma'^2) I)``.
    * **Start.**  ``m = 0`` at ``sigma_max`` (the mean of ``x_T`` is the prior
      mean, unknown in general; its error is shrunk by about
      ``var / sigma_max^2`` along the way).
    * **Target of each step.**  Its score is the paper's sum
      ``(m - x') / (sigma^2 - sigma'^2) + s(x', sigma') + gamma grad log p(y | D(x', sigma'))``,
      with the prior score ``s = (D - x') / sigma'^2`` and the likelihood
      approximated at the denoised point, ``p(y | x') ~ N(y; G(D(x', sigma')), Gamma)``
      (the gradient goes through the denoiser and ``G`` by torch autograd).
      ``gamma = likelihood_weight`` (default 1, the Bayesian value).
    * **Variational family and natural gradient.**  ``q = N(mu, v I)`` with
      one variance.  Its natural-gradient step on ``KL(q || p)`` (the
      Bayesian learning rule) is ``P <- (1 - beta) P + beta h``,
      ``mu <- mu + beta E_q[grad log p] / P`` with ``P = 1 / v`` and ``h`` the
      mean diagonal of ``E_q[-Hess log p]``: exactly
      ``1 / (sigma^2 - sigma'^2)`` for the transition plus a Stein-identity
      estimate ``-mean(P (x - mu) * score_rest(x))`` for the rest (clipped at
      zero), so no Hessian is ever formed.  Expectations use
      ``n_particles`` draws from ``q`` in antithetic pairs (an odd count adds
      the mean itself), fixed for the whole step (common random numbers),
      which removes the first-order noise of the Stein estimate and makes
      the step's objective deterministic.
    * **Mean step.**  With one variance, ``E_q[score] / P`` is badly scaled
      wherever the likelihood is much stiffer than the transition (the
      data directions when the noise is small): ``mean_step="natural"``
      (the plain rule above) diverges on the linear-Gaussian test case with
      noise 0.1.  The default ``mean_step="cg"`` therefore moves the mean by
      non-linear conjugate gradients (Polak-Ribiere) on the same Monte Carlo
      objective, each with an exact line step from the curvature along the
      direction (one extra score evaluation at a nearby point, same draws):
      for a Gaussian target it converges to the natural-gradient fixed point
      ``mu = E_p`` in a few iterations.  The variance follows the learning
      rule once per reverse step (``h`` from the last iteration).
    * **End.**  The mean at ``sigma_min`` is the estimate (its Tweedie
      correction is of order ``sigma_min^2``); ``particles_`` are draws from
      the last ``q``, whose spread is one reverse step's width, **not** a
      posterior uncertainty.

    Accuracy (linear-Gaussian, ``d = 8``, ``m = 4``): with the *exact*
    noised likelihood ``N(y; A D(x'), A Sigma_{0|sigma'} A^T + Gamma)`` and an
    exact inner solve, mean propagation reproduces the exact posterior mean
    (relative error 1e-4), confirming the paper's claim; the paper's
    approximation ``p(y | x') ~ p(y | D(x'))`` leaves a bias of 9% (noise
    0.1) and 11% (noise 0.5) even with an exact inner solve, and this
    implementation (defaults) reaches that floor: 9% and 11%, against 48%
    for the prior mean.

    Against the prior mean (docs/benchmarks.md, "Defaults against the prior mean", 30 random
    linear-Gaussian problems): the default estimate is closer to the exact posterior mean than the
    prior mean is on 23 of 30, above the 11.6 expected of 2 *exact* posterior samples; three
    failures, at noise below 1.2% of the signal, are its own.

    Parameters
    ----------
    prior : Prior
        Diffusion prior whose ``denoise`` torch autograd can differentiate.
    n_particles : int, default 2
        Monte Carlo draws from ``q`` per inner iteration (one antithetic
        pair); not an ensemble: RMP propagates one mean.
    n_steps : int, default 30
        Noise levels (``n_steps - 1`` reverse steps).
    n_inner : int, default 5
        Inner iterations per reverse step (the paper's ``T_in``).
    step_size : float, default 0.5
        ``beta`` of the learning rule, in (0, 1] (the variance update; with
        ``mean_step="natural"`` also the mean's step).
    mean_step : {"cg", "natural"}, default "cg"
        How the mean moves in the inner loop (see above); ``"cg"`` costs two
        score evaluations per iteration, ``"natural"`` one.
    trust_radius : float, default 3.0
        ``"cg"`` only: a line step moves the mean by at most this many
        standard deviations of ``q`` (root mean square over coordinates), a
        guard against a non-convex target (a non-linear ``G``), where the
        curvature estimate can be tiny or negative.
    likelihood_weight : float, default 1.0
        ``gamma``, the weight of the likelihood score.  The approximate
        likelihood ignores the denoiser's uncertainty and is far too
        confident at large ``sigma``; on a strongly non-linear ``G`` the
        mean can then walk off (the small Navier-Stokes problem diverges
        with 1 and 0.05 and is stable with 0.01).
    noise_floor : float, default 1e-3
        Smallest noise standard deviation used in the likelihood.
    %(common)s
    on_failure : {"raise", "resample"}, default "raise"
        ``"resample"`` averages over the draws whose forward value is finite
        (at least two are needed).
    %(shared)s

    Attributes
    ----------
    mean_ : array ``x_shape``
        The posterior-mean estimate (what :meth:`reconstruct` returns).
    particles_ : array ``(J, *event_shape)``
        Draws from the last variational Gaussian.
    stats_ : dict
        The common counts and times, plus ``n_forward_vjps``,
        ``n_denoiser_vjps`` (backward passes, per draw) and ``time_gradient_s``.
    history_ : list of dict
        One record per reverse step: step, sigma, precision ``P``, Stein
        curvature ``h``, misfit statistics, counts.
    """

    _EQUIVALENT_PARAMETERS = {
        "updates": "its inner iterations per reverse step are n_inner",
        "queries": "each inner iteration evaluates the forward model once or twice per draw (n_particles)",
    }

    n_steps: int = 30
    n_inner: int = 5
    step_size: float = 0.5
    mean_step: str = "cg"
    trust_radius: float = 3.0
    likelihood_weight: float = 1.0
    noise_floor: float = 1e-3

    # -- validation ------------------------------------------------------------
    _param_constraints = {
        "n_inner": [POSITIVE_INT],
        "n_steps": [Interval("int", 2, None)],
        "step_size": [Interval("real", 0, 1, closed="right")],
        "mean_step": [Options("cg", "natural")],
        "trust_radius": [POSITIVE],
        "likelihood_weight": [NON_NEGATIVE],
        "noise_floor": [POSITIVE],
    }

    def _planned_counts(self, problem, n_particles: int) -> dict[str, int]:
        """Denoiser, forward and backward evaluations by formula (the problem does not change them).

        Exact, except where the mean score vanishes exactly (a zero search
        direction): the line step's probe is then skipped.
        """
        J = n_particles
        per_iter = 2 if self.mean_step == "cg" else 1
        seq = (int(self.n_steps) - 1) * int(self.n_inner) * per_iter
        return {
            "n_denoiser_evals": J * seq,
            "n_sequential_denoiser_evals": seq,
            "n_forward_evals": J * seq,
            "n_sequential_forward_evals": seq,
            "n_forward_vjps": J * seq,
            "n_denoiser_vjps": J * seq,
        }

    def _n_progress_steps(self) -> int | None:
        return int(self.n_steps) - 1

    # -- the loop --------------------------------------------------------------
    def _iterate(self, ctx: FitContext, state: dict | None):
        if state is not None and "final" in state:
            return state["final"]  # reconstruct() then takes the mean of the centred draws
        xp = ctx.xp
        weights = inverse_noise_variance(ctx.problem, ctx.y, float(self.noise_floor))
        sigmas = self.noise_levels(append_zero=False)
        if state is None:
            m, h_rest, start = xp.zeros((1, *ctx.x_shape), dtype=ctx.y.dtype), 0.0, 0
        else:
            m, h_rest, start = state["m"], float(state["h_rest"]), int(state["i"])
        X = None
        for i in range(start, len(sigmas) - 1):
            yield SafePoint(i, {"m": m, "h_rest": h_rest, "i": i})
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            delta = s**2 - s_next**2
            precision = 1.0 / delta + h_rest
            mu, direction, g_prev = m, None, None
            eps = self._draws(ctx, precision)  # common random numbers for the whole step
            for _ in range(int(self.n_inner)):
                X, g, h_est, misfit = yield from self._estimate(
                    ctx, mu, eps, precision, m, s_next, delta, weights
                )
                if self.mean_step == "natural":
                    mu = mu + (float(self.step_size) / precision) * g
                    continue
                direction = g if direction is None else g + self._polak_ribiere(ctx, g, g_prev) * direction
                t = yield from self._line_step(
                    ctx, mu, eps, g, direction, m, s_next, delta, weights, precision
                )
                mu = mu + t * direction
                g_prev = g
            beta = float(self.step_size)
            h_rest = (1.0 - beta) * h_rest + beta * h_est
            precision = 1.0 / delta + h_rest
            m = mu
            ctx.record(
                step=i,
                sigma=s_next,
                precision=precision,
                curvature=h_rest,
                misfit=misfit,
                spread=ctx.spread(X),
            )
            if ctx.stopped_early:
                break
        return Fitted(X, {"mean_": m[0, ...], "_final_std": 1.0 / math.sqrt(precision)})

    def _draws(self, ctx: FitContext, precision: float):
        """Offsets of ``n_particles`` draws of ``N(0, I / precision)``: antithetic pairs (and 0 if odd)."""
        xp = ctx.xp
        J = int(self.n_particles)
        half = ctx.rng.normal((J // 2, *ctx.x_shape), like=ctx.like())
        parts = [half, -half]
        if J % 2:
            parts.append(xp.zeros((1, *ctx.x_shape), dtype=half.dtype))
        return xp.concat(parts, axis=0) / math.sqrt(precision)

    def _scores(self, ctx: FitContext, X, m, sigma: float, delta: float, weights):
        """Scores of the step's target at the draws ``X``: ``(transition, rest, ok mask, misfits)``.

        A generator: it asks for the forward values and the VJP at the draws' denoised points.
        """
        res = yield from misfit_gradient(ctx, X, weights, through=lambda t: ctx.denoise(t, sigma))
        ok = ctx.handle_failures(res.failed)
        rest = (res.Z - X) / sigma**2 - float(self.likelihood_weight) * res.grad
        return self._keep(ctx, X, ok), self._keep(ctx, rest, ok), ok, res.misfit

    def _keep(self, ctx: FitContext, A, ok: np.ndarray):
        if ok.all():
            return A
        return ctx.xp.reshape(ctx.take_ok(self._flat(A), ok), (-1, *ctx.x_shape))

    def _estimate(self, ctx: FitContext, mu, eps, precision: float, m, sigma: float, delta: float, weights):
        """Monte Carlo ``E_q[score]`` and the Stein curvature of the non-transition part.

        Returns the draws, the mean score ``(1, *x_shape)``, ``h`` (float) and the draws' misfits.
        """
        xp = ctx.xp
        X = mu + eps
        X_ok, rest, _, misfit = yield from self._scores(ctx, X, m, sigma, delta, weights)
        mean_score = xp.mean((m - X_ok) / delta + rest, axis=0, keepdims=True)
        # Stein: E_q[-Hess f] = -E_q[P (x - mu) grad f(x)^T]; its mean diagonal for the isotropic family.
        h = -precision * float(xp.mean((X_ok - mu) * (rest - xp.mean(rest, axis=0, keepdims=True))))
        return X, mean_score, max(h, 0.0), misfit

    @staticmethod
    def _polak_ribiere(ctx: FitContext, g, g_prev) -> float:
        """Polak-Ribiere coefficient (clipped at zero, which restarts along the score)."""
        xp = ctx.xp
        den = float(xp.sum(g_prev * g_prev))
        return max(float(xp.sum(g * (g - g_prev))) / den, 0.0) if den > 0 else 0.0

    def _line_step(
        self, ctx: FitContext, mu, eps, g, direction, m, sigma: float, delta: float, weights, precision: float
    ):
        """Step ``t`` of ``mu + t d`` minimising the KL along ``d`` for a locally quadratic target.

        The curvature ``c = -u^T Hess u`` along ``u = d / |d|`` comes from the
        mean score at ``mu + r u`` with the same draws (common random
        numbers), so ``t = (g . d) / (c |d|^2)``; ``c`` is kept above half
        the transition's exact ``1 / delta``.
        """
        xp = ctx.xp
        dnorm = math.sqrt(float(xp.sum(direction * direction)))
        if dnorm == 0:
            return 0.0
        r = 1e-3 * math.sqrt(delta)
        u = direction / dnorm
        X_ok, rest, _, _ = yield from self._scores(ctx, mu + r * u + eps, m, sigma, delta, weights)
        g2 = xp.mean((m - X_ok) / delta + rest, axis=0, keepdims=True)
        c = max(-float(xp.sum(u * (g2 - g))) / r, 0.5 / delta)
        t = float(xp.sum(g * u)) / (c * dnorm)
        # Trust region: move at most `trust_radius` standard deviations of q (per coordinate, rms).
        limit = float(self.trust_radius) * math.sqrt(math.prod(u.shape) / precision) / dnorm
        return max(min(t, limit), -limit)

    def reconstruct(self, return_std: bool = False):
        """The posterior-mean estimate ``mean_``, in the namespace and device of ``y``.

        Parameters
        ----------
        return_std : bool
            Also return the last variational Gaussian's standard deviation
            (same shape; one reverse step's width, not a posterior spread).
        """
        check_is_fitted(self, "particles_")
        mean = getattr(self, "mean_", None)
        if mean is None:  # resumed from a finished checkpoint: the draws are centred on the mean
            mean = get_namespace(self.particles_).mean(self.particles_, axis=0)
        mean = move_like(mean, self._y_like)
        if not return_std:
            return mean
        xp = get_namespace(mean)
        return mean, xp.full(tuple(mean.shape), getattr(self, "_final_std", 0.0), dtype=mean.dtype)
