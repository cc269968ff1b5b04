"""Maximum a posteriori estimation with autograd through the forward model: what do the data allow?

``MAPSolver`` minimises, for each of ``n_particles`` restarts (prior draws by default),

    f(x) = 1/2 sum_k w_k (G(x) - y)_k**2  -  log p(x),      w_k = 1 / noise_std_k**2,

by L-BFGS (or Adam) on the step protocol: every iteration asks for the forward values of all
restarts and one vector-Jacobian product (``ForwardRequest(X, vjp=True)``, then ``VJPRequest``),
so ``fit`` differentiates the forward model with torch autograd and ask/tell hands both requests
to the user.  It is no sampler: the restarts' spread says how far the optimiser's answers
disagree, not how uncertain ``x`` is.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._backend import asarray_like, get_namespace, move_like, to_numpy
from ._base import BaseSolver, FitContext, SafePoint, check_is_fitted
from ._gradients import misfit_gradient
from ._lbfgs import backtrack, empty_memory, push_pair, two_loop
from ._params import POSITIVE, POSITIVE_INT, Interval, Options, solver_parameters
from ._registry import register_solver

__all__ = ["MAPSolver"]

#: Armijo's sufficient-decrease constant (Nocedal and Wright's usual 1e-4)
_ARMIJO = 1e-4


@register_solver("map", derivative_free=False, rank=80, quick={"max_iter": 8})
@solver_parameters
class MAPSolver(BaseSolver):
    """MAP estimate (or maximum likelihood) by gradient descent through the forward model.

    Objective of each restart: the data misfit ``1/2 sum w (G(x) - y)**2`` (weights
    ``1 / noise_std**2``; ``1 / noise_floor**2`` for noiseless data) plus the prior's negative log density, where the prior
    has one:

    * ``prior_term="log_prob"`` (what ``"auto"`` picks when the prior has ``log_prob``: the Gaussian,
      low-rank Gaussian and Gaussian-mixture priors): the exact ``-log p(x)``, differentiated with
      torch autograd.  With a Gaussian prior and a linear ``G`` the objective is quadratic and its
      minimiser is the exact posterior mean.
    * ``prior_term="score"`` (``"auto"`` for every other prior: a Gaussian random field, a
      network): the gradient is the Tweedie score at a small noise level,
      ``grad log p(x) ~ (D(x, s) - x) / s**2`` with ``s = score_sigma`` (one denoiser call per
      restart and iteration), i.e. the MAP of the prior smoothed by ``N(0, s**2 I)``.  Such a prior
      has no density value, so the line search measures the change of ``-log p`` along a step
      by the trapezoid rule on the scores at its two ends, exact for a Gaussian (a Gaussian random
      field's is then the MAP of ``N(mu, C + s**2 I)``).
    * ``prior_term="none"``: maximum likelihood (least squares); with a full-rank linear ``G``
      the answer is the least-squares solution.

    The optimiser runs exactly ``max_iter`` iterations (so the planned evaluations are the spent
    ones); each evaluates the forward model and its VJP once at every restart's trial point.
    ``"lbfgs"``: limited-memory BFGS (``memory`` pairs, Nocedal and Wright's two-loop recursion),
    per restart, with backtracking: a trial point that fails Armijo's sufficient-decrease test
    (or whose forward value failed) is not taken and the next iteration tries a shorter step (the
    minimiser of the quadratic through the two objective values and the slope, 0.1-0.5 times
    the last).
    The first step is ``-g / max(1, ||g||_inf)``; the curvature pairs set the scale afterwards, so
    the data and the unknowns may have any units.  ``"adam"``: Adam with step ``learning_rate``
    (in units of ``x``), no line search.

    Parameters
    ----------
    prior : Prior
        ``sample`` gives the restarts; ``log_prob`` or ``denoise`` gives the prior term.
    n_particles : int, default 4
        Restarts (they do not interact); one is allowed, a single run.
    init : {"prior", "mean"}, default "prior"
        Where the restarts start: each at its own prior draw, or all at the prior's ``mean``
        (deterministic; then ``n_particles=1`` is enough).
    max_iter : int, default 200
        Iterations (one forward evaluation and one VJP per restart each; the starting point takes
        one more).
    optimizer : {"lbfgs", "adam"}, default "lbfgs"
    memory : int, default 10
        ``"lbfgs"``: curvature pairs kept.
    learning_rate : float, default 0.01
        ``"adam"``: the step, in units of ``x``.
    prior_term : {"auto", "log_prob", "score", "none"}, default "auto"
        The prior's part of the objective (see above).
    score_sigma : float, default 0.002
        ``prior_term="score"``: the noise level ``s`` of the score, in units of ``x`` (0.002 is the
        smallest level of the EDM schedule, where networks are trained).
    noise_floor : float, default 1e-3
        The standard deviation that data with ``noise_std = 0`` are weighted by, in units of ``y``.
        It sets how strongly a prior term competes with noiseless data.
    on_failure : {"raise", "resample"}, default "raise"
        ``"resample"``: a failed trial point is not taken (the step is shortened); a restart whose
        starting point fails is redrawn from the successful ones.
    %(shared)s

    Attributes
    ----------
    particles_ : array ``(n_particles, *event_shape)``
        The restarts' final points, best (lowest objective) first.  With ``prior_term="score"``
        the objective's value is unknown and they are ranked by data misfit.
    stats_ : dict
        The common counts and times, plus ``n_forward_vjps`` and ``n_denoiser_evals`` (score only).
    history_ : list of dict
        One record per iteration: the restarts' data misfits at their current points, their
        spread, ``objective_min`` (the lowest objective, relative to the restart's start for
        ``prior_term="score"``) and ``n_accepted`` (restarts whose trial point was taken).

    Notes
    -----
    :meth:`reconstruct` returns the best restart, ``particles_[0]``, and with ``return_std=True``
    the standard deviation over the restarts: how far the optimiser's answers disagree (zero when
    they all reach one optimum), **not** a posterior standard deviation.
    """

    _BUDGET_PARAMETERS = ("n_particles", "max_iter")
    _EQUIVALENT_PARAMETERS = {
        "steps": "its iteration count is max_iter",
        "updates": "every iteration moves every restart at most once (max_iter sets how many)",
        "queries": "each iteration evaluates the forward model once per restart (n_particles)",
    }

    n_particles: int = 4
    init: str = "prior"
    max_iter: int = 200
    optimizer: str = "lbfgs"
    memory: int = 10
    learning_rate: float = 0.01
    prior_term: str = "auto"
    score_sigma: float = 0.002
    noise_floor: float = 1e-3

    _param_constraints = {
        "n_particles": [POSITIVE_INT],
        "init": [Options("prior", "mean")],
        "max_iter": [POSITIVE_INT],
        "optimizer": [Options("lbfgs", "adam")],
        "memory": [POSITIVE_INT],
        "learning_rate": [POSITIVE],
        "prior_term": [Options("auto", "log_prob", "score", "none")],
        "score_sigma": [POSITIVE],
        "noise_floor": [Interval("real", 0, None, closed="neither")],
    }

    # -- planning ----------------------------------------------------------------
    def _prior_mode(self) -> str:
        if self.prior_term != "auto":
            return self.prior_term
        return "log_prob" if hasattr(self.prior, "log_prob") else "score"

    def _planned_counts(self, problem, n_particles: int) -> dict[str, int]:
        """Exact: ``max_iter + 1`` evaluations of every restart (the start, then one per iteration)."""
        seq = int(self.max_iter) + 1
        den = seq if self._prior_mode() == "score" else 0
        return {
            "n_denoiser_evals": n_particles * den,
            "n_sequential_denoiser_evals": den,
            "n_forward_evals": n_particles * seq,
            "n_sequential_forward_evals": seq,
            "n_forward_vjps": n_particles * seq,
            "n_denoiser_vjps": 0,
        }

    def _n_progress_steps(self) -> int | None:
        return int(self.max_iter)

    # -- the objective -------------------------------------------------------------
    def _failures(self, ctx: FitContext, failed: np.ndarray, start: bool) -> np.ndarray:
        """The failure policy: ``"raise"`` raises; under ``"resample"`` a failed *trial* point is only a
        rejected step (nothing to redraw, so one restart is enough), a failed start is redrawn."""
        if self.on_failure == "raise" or start:
            return ctx.handle_failures(failed)
        ctx.acct.n_failed += int(failed.sum())
        return ~failed

    def _evaluate(self, ctx: FitContext, X, weights, start: bool = False):
        """Data term, prior term and gradient at ``X`` (flat ``(J, d)``); a generator (step protocol).

        Returns ``(data (J,), prior (J,) or scores, grad (J, d), recorded misfit (J,), ok (J,))`` as
        ``ctx.xp`` arrays except the NumPy ``misfit`` and ``ok``; the prior entry is ``-log p`` for
        ``"log_prob"``, the score ``(J, d)`` for ``"score"`` and None for ``"none"``.
        """
        xp = ctx.xp
        J = X.shape[0]
        res = yield from misfit_gradient(ctx, xp.reshape(X, (J, *ctx.x_shape)), weights)
        ok = self._failures(ctx, res.failed, start)
        r = ctx.flat_residual(res.G, xp.reshape(ctx.y_flat, (1, -1)))
        w = xp.reshape(asarray_like(weights, r), (1, -1))
        data = 0.5 * xp.sum(w * r**2, axis=1)
        grad = self._flat(res.grad)
        mode = self._prior_mode()
        prior = None
        if mode == "log_prob":
            prior, prior_grad = self._neg_log_prior(ctx, X)
            grad = grad + prior_grad
        elif mode == "score":
            s = float(self.score_sigma)
            D = ctx.denoise(xp.reshape(X, (J, *ctx.x_shape)), s)
            prior = (self._flat(D) - X) / s**2
            grad = grad - prior
        bad = asarray_like(~ok, X, dtype=xp.bool)
        data = xp.where(bad, xp.full_like(data, math.inf), data)
        grad = xp.where(bad[:, None], xp.zeros_like(grad), grad)
        return data, prior, grad, res.misfit, ok

    def _neg_log_prior(self, ctx: FitContext, X):
        """``-log p(x)`` ``(J,)`` and its gradient ``(J, d)`` by torch autograd through ``prior.log_prob``."""
        import torch

        Xt = torch.from_numpy(np.array(to_numpy(X), dtype=np.float64)).requires_grad_(True)
        with torch.enable_grad():
            value = -self.prior.log_prob(Xt.reshape((X.shape[0], *ctx.x_shape)))
            (grad,) = torch.autograd.grad(value.sum(), Xt)
        return asarray_like(value.detach().numpy(), X), asarray_like(grad.numpy(), X)

    @staticmethod
    def _objective(data, prior):
        """The objective where ``prior`` is ``-log p`` (or absent); None where it has no value (scores)."""
        if prior is None:
            return data
        if prior.ndim == 1:
            return data + prior
        return None

    def _weights(self, ctx: FitContext):
        """``1 / noise_std**2`` per datum ``(m,)``; a datum with zero noise gets ``noise_floor`` instead."""
        xp = ctx.xp
        std = xp.reshape(ctx.problem.noise_std_array(like=ctx.y), (-1,))
        std = xp.where(std > 0, std, xp.full_like(std, float(self.noise_floor)))
        return 1.0 / std**2

    # -- the loop ----------------------------------------------------------------
    def _iterate(self, ctx: FitContext, state: dict | None):
        if state is not None and "final" in state:
            return state["final"]
        xp = ctx.xp
        J = int(self.n_particles)
        weights = self._weights(ctx)
        if state is None:
            X = self._flat(xp.asarray(self._starts(ctx, J), dtype=ctx.y.dtype))
            state = yield from self._start(ctx, X, weights)
        step = self._lbfgs_step if self.optimizer == "lbfgs" else self._adam_step
        while int(state["it"]) < int(self.max_iter):
            it = int(state["it"])
            yield SafePoint(it, state)
            state = yield from step(ctx, state, weights)
            ctx.record(
                step=it,
                misfit=state["misfit"],
                spread=ctx.spread(state["X"]),
                objective_min=_finite_min(state["f"]),
                n_accepted=int(state["n_accepted"]),
            )
            if ctx.stopped_early:
                break
        order = np.argsort(self._rank_key(state), kind="stable")
        best_first = xp.take(state["X"], asarray_like(order, state["X"], dtype=xp.int64), axis=0)
        return xp.reshape(best_first, (J, *ctx.x_shape))

    def _starts(self, ctx: FitContext, J: int):
        """The restarts' starting points ``(J, *x_shape)``: prior draws, or the prior's mean."""
        if self.init == "prior":
            return self.prior.sample(J, random_state=ctx.rng.numpy, like=ctx.like())
        mean = getattr(self.prior, "mean", None)
        if mean is None:
            raise ValueError(f"init='mean' needs a prior with a mean; {type(self.prior).__name__} has none.")
        mean = asarray_like(np.reshape(to_numpy(mean), (1, *ctx.x_shape)), ctx.like())
        return ctx.xp.concat([mean] * J, axis=0)

    def _rank_key(self, state) -> np.ndarray:
        """What the restarts are ranked by: the objective, or the data misfit for a score prior."""
        key = to_numpy(state["misfit"] if self._prior_mode() == "score" else state["f"])
        return np.where(np.isfinite(key), key, np.inf)

    def _start(self, ctx: FitContext, X, weights):
        """Evaluate the starting points (redrawing failed ones); the optimiser's initial state."""
        xp = ctx.xp
        data, prior, g, misfit, ok = yield from self._evaluate(ctx, X, weights, start=True)
        X = ctx.resample_failed(X, ok)  # a redrawn start is evaluated at the first trial (zero step)
        f = self._objective(data, prior)
        f = data if f is None else f  # a score prior: f counts from the start's unknown -log p
        J = X.shape[0]
        state = {
            "X": X,
            "f": f,
            "g": g,
            "misfit": misfit,
            "it": 0,
            "n_accepted": J,
            "p": -g / xp.reshape(xp.clip(xp.max(xp.abs(g), axis=1), 1.0, None), (-1, 1)),
            "t": xp.ones(J, dtype=X.dtype),
            **empty_memory(xp, int(self.memory), X),
            "m": xp.zeros_like(X),
            "v": xp.zeros_like(X),
        }
        if prior is not None and prior.ndim == 2:
            state["score"], state["f_data"] = prior, data
        return state

    def _trial(self, ctx: FitContext, state: dict, Z, weights):
        """Evaluate the trial points ``Z``; the objective change and Armijo's test against ``state``."""
        xp = ctx.xp
        data, prior, g, misfit, ok = yield from self._evaluate(ctx, Z, weights)
        f_new = self._objective(data, prior)
        if f_new is None:  # scores: -log p changes by the trapezoid rule along the step
            dlog = 0.5 * xp.sum((state["score"] + prior) * (Z - state["X"]), axis=1)
            f_new = state["f"] + (data - state["f_data"]) - dlog
            f_new = xp.where(xp.isfinite(state["f"]), f_new, data)  # a redrawn start counts from itself
        return f_new, data, prior, g, misfit, ok

    def _lbfgs_step(self, ctx: FitContext, state: dict, weights):
        """One L-BFGS iteration of every restart: try ``x + t p``, keep it if Armijo holds, else halve ``t``."""
        xp = ctx.xp
        X, f, g, p, t = state["X"], state["f"], state["g"], state["p"], state["t"]
        Z = X + t[:, None] * p
        f_new, data, prior, g_new, misfit, ok = yield from self._trial(ctx, state, Z, weights)
        slope = xp.sum(g * p, axis=1)
        # the slack admits a rise within rounding of f: near the optimum the decrease drowns in it
        slack = 8 * float(np.finfo(to_numpy(f).dtype).eps) * xp.abs(f)
        accept = xp.isfinite(f_new) & (f_new <= f + _ARMIJO * t * slope + slack)
        accept = accept | ~xp.isfinite(f)  # a redrawn start takes its first finite value
        accept = accept & asarray_like(ok, accept)
        a = accept[:, None]
        new = dict(state)
        s, yv = Z - X, g_new - g
        sy = xp.sum(s * yv, axis=1)
        pair = accept & (sy > 1e-10 * xp.sqrt(xp.sum(s * s, axis=1) * xp.sum(yv * yv, axis=1)))
        new.update(push_pair(ctx.xp, state, s, yv, sy, pair))
        new["X"] = xp.where(a, Z, X)
        new["g"] = xp.where(a, g_new, g)
        new["f"] = xp.where(accept, f_new, f)
        new["misfit"] = np.where(to_numpy(accept), misfit, to_numpy(state["misfit"]))
        if "score" in state:
            new["score"] = xp.where(a, prior, state["score"])
            new["f_data"] = xp.where(accept, data, state["f_data"])
        direction = two_loop(ctx.xp, new, -new["g"])
        descent = xp.sum(direction * new["g"], axis=1) < 0
        direction = xp.where(descent[:, None], direction, -new["g"])
        new["p"] = xp.where(a, direction, p)
        new["t"] = xp.where(accept, xp.ones_like(t), backtrack(ctx.xp, t, f, f_new, slope))
        new["it"] = int(state["it"]) + 1
        new["n_accepted"] = int(np.sum(to_numpy(accept)))
        return new

    def _adam_step(self, ctx: FitContext, state: dict, weights):
        """One Adam step of every restart (Kingma and Ba's defaults beta = (0.9, 0.999), eps = 1e-8)."""
        xp = ctx.xp
        it = int(state["it"]) + 1
        m = 0.9 * state["m"] + 0.1 * state["g"]
        v = 0.999 * state["v"] + 0.001 * state["g"] ** 2
        step = float(self.learning_rate) * (m / (1 - 0.9**it)) / (xp.sqrt(v / (1 - 0.999**it)) + 1e-8)
        Z = state["X"] - step
        f_new, data, prior, g_new, misfit, ok = yield from self._trial(ctx, state, Z, weights)
        okx = asarray_like(ok, f_new, dtype=xp.bool)
        new = dict(state, m=m, v=v, it=it, n_accepted=int(ok.sum()))
        new["X"] = xp.where(okx[:, None], Z, state["X"])
        new["g"] = xp.where(okx[:, None], g_new, state["g"])
        new["f"] = xp.where(okx, f_new, state["f"])
        new["misfit"] = np.where(ok, misfit, to_numpy(state["misfit"]))
        if "score" in state:
            new["score"] = xp.where(okx[:, None], prior, state["score"])
            new["f_data"] = xp.where(okx, data, state["f_data"])
        return new

    # -- the answer ----------------------------------------------------------------
    def reconstruct(self, return_std: bool = False):
        """The best restart, ``particles_[0]``, in the namespace and device of ``y``.

        Parameters
        ----------
        return_std : bool
            Also return the standard deviation over the restarts (same shape): how far the
            optimiser's answers disagree, not a posterior standard deviation.
        """
        check_is_fitted(self, "particles_")
        X = self.particles_
        best = move_like(X[0, ...], self._y_like)
        if not return_std:
            return best
        if X.shape[0] == 1:
            warnings.warn(
                "MAPSolver ran one restart, so reconstruct(return_std=True) returns a spread of exactly 0.",
                UserWarning,
                stacklevel=2,
            )
        return best, move_like(get_namespace(X).std(X, axis=0), self._y_like)


def _finite_min(values) -> float | None:
    """The smallest finite entry (None when there is none): a history value that JSON can hold."""
    v = to_numpy(values)
    v = v[np.isfinite(v)]
    return float(v.min()) if v.size else None
