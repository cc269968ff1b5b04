"""DiffPIR: diffusion plug-and-play image restoration (Zhu et al., CVPR 2023).

Every step of the reverse diffusion splits into three parts (half-quadratic
splitting):

1. denoise: ``x0 = D(x_i, sigma_i)``;
2. data step: ``x0_hat = argmin_x 1/2 ||y - G(x)||^2_{Gamma^{-1}} + rho_i/2 ||x - x0||^2``
   with ``rho_i = lam / sigma_i**2``: in closed form for a linear ``G``,
   one gradient step ``x0_hat = x0 - grad / rho_i`` otherwise;
3. re-noise: ``x_{i+1} = x0_hat + sigma_{i+1} (sqrt(1 - zeta) eps_hat + sqrt(zeta) eps)``,
   ``eps_hat = (x_i - x0_hat) / sigma_i``, ``eps ~ N(0, I)``.

The gradient step uses :func:`~kalmandiff.estimators._gradients.misfit_gradient`,
shared with the other gradient-based solvers (re-exported here).
"""

from __future__ import annotations

import math
import warnings

from .._backend import array_device, asarray_like
from ._base import FitContext, ForwardRequest, SafePoint
from ._edm import EDMSolver
from ._gradients import misfit_gradient, require_gradient  # noqa: F401 - re-exported
from ._linear_prox import LinearProx
from ._observation import inverse_noise_variance
from ._params import POSITIVE, POSITIVE_INT, Interval, Options, solver_parameters
from ._protocol import Fitted
from ._registry import derivative_free_solvers, register_solver

__all__ = ["DiffPIRSolver", "misfit_gradient", "require_gradient"]

_DATA_STEPS = ("auto", "closed-form", "gradient")
_GRAD_STEPS = ("line", "paper")


def __getattr__(name):
    # DERIVATIVE_FREE_SOLVERS: the solvers that only call the forward model, from the registry.
    if name == "DERIVATIVE_FREE_SOLVERS":
        return derivative_free_solvers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@register_solver("diffpir", derivative_free=False, rank=60, quick={"n_steps": 6})
@solver_parameters
class DiffPIRSolver(EDMSolver):
    """Diffusion plug-and-play restoration (DiffPIR) in the EDM convention.

    ``n_particles`` independent chains run side by side; the reconstruction
    is their mean.  The VP quantities of the paper map onto EDM ones as
    ``sigma_bar_t = sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t) = sigma``, so
    the data step's weight is ``rho_i = lam / sigma_i**2`` relative to the
    ``Gamma^{-1}``-weighted misfit, and the re-noising step is the paper's
    ``x_{t-1}`` divided by ``sqrt(alpha_bar_{t-1})``.

    Decisions (documented departures): the noise levels are EDM's
    rho-schedule (``sigma`` from 80 to 0.002, ``rho = 7``) instead of the
    paper's VP 'quad' skip of 1000 DDPM steps; noise levels below
    ``noise_floor`` are raised to it in the data step (the reference code
    uses ``max(0.001, noise)`` as well), so that noiseless data still give
    a well-posed proximal problem.

    Against the prior mean (docs/benchmarks.md, "Defaults against the prior mean", 30 random
    linear-Gaussian problems): the mean of the default 4 draws is closer to the exact posterior mean
    than the prior mean is on 20 of 30, above the 16.3 expected of 4 *exact* posterior samples; its
    failures are cases where that 4-sample floor fails too.

    Parameters
    ----------
    prior : Prior
        Diffusion prior with ``denoise(x, sigma)`` and ``event_shape``.
    n_particles : int, default 4
        Number of independent chains ``J``.
    n_steps : int, default 100
        Noise levels, one denoiser call each (the reference's 100 NFE).
    lam : float, default 1.0
        ``lambda`` of the data-step weight: the DiffPIR repository's default
        (InverseBench uses 8).  On the 8-dimensional linear-Gaussian test
        case (noise 0.1, 200 chains) the posterior-mean error is 5% with
        ``lam=1`` and 11% with ``lam=8``.
    zeta : float, default 1.0
        Share of fresh noise in the re-noising step, in [0, 1]: 1 gives an
        ancestral (DDPM-like) sampler, 0 a deterministic (DDIM-like) one.
        InverseBench uses 1; the DiffPIR repository uses 0.1 to 1.0.
    data_step : {"auto", "closed-form", "gradient"}, default "auto"
        ``"auto"``: closed form for a
        :class:`~kalmandiff.problems.LinearOperatorProblem`, a gradient step
        (torch autograd through the forward model) otherwise.
    grad_step : {"line", "paper"}, default "line"
        Gradient data step only.  ``"paper"``: ``x0 - grad / rho`` as in
        DiffPIR; its step ``sigma**2 / lam`` overshoots by orders of
        magnitude at large ``sigma`` wherever the misfit's curvature exceeds
        ``rho`` (the run diverges on the linear-Gaussian test case).
        ``"line"`` (a departure, on by default): ``x0 - grad / (rho + L)``,
        ``L`` the Gauss-Newton curvature of the misfit along ``grad`` from
        one extra forward evaluation (the exact minimiser along ``grad`` of
        the linearised proximal objective); it equals the paper's step
        where ``L << rho``, i.e. at the small noise levels.
    noise_floor : float, default 1e-3
        Smallest noise standard deviation used in the data step.
    dense_max : int, default 4096
        Closed form: largest ``prod(x_shape)`` solved densely (float64
        eigendecomposition of ``A^T Gamma^{-1} A``, computed once); larger
        problems use conjugate gradients with ``forward``/``adjoint``.
    cg_tol : float, default 1e-8
        Relative residual at which conjugate gradients stop.
    cg_max_iter : int, default 200
    %(common)s
    on_failure : {"raise", "resample"}, default "raise"
        Gradient data step only (the closed form never calls the forward
        model on particles): ``"resample"`` redraws failed chains from a
        Gaussian fitted to the successful ones.
    %(shared)s

    Attributes
    ----------
    particles_ : array ``(J, *event_shape)``
        The chains' final clean estimates.
    stats_ : dict
        The common counts and times (the same keys for every solver):
        ``n_forward_vjps`` counts adjoint or autograd backward passes through
        the forward model, per particle; ``n_denoiser_vjps`` is always 0.
        The dense closed form evaluates no forward model on particles: its
        ``n_forward_evals`` is 0 (the matrix is built once, before the run).
    data_step_ : str
        The data step used: ``"closed-form-dense"``, ``"closed-form-cg"`` or
        ``"gradient"``.
    history_ : list of dict
        One record per step: step, sigma, ``data_weight`` (the data step's
        ``rho_i = lam / sigma_i**2``, not the schedule's ``rho``), misfit
        statistics (gradient step only), spread, counts.
    """

    _EQUIVALENT_PARAMETERS = {
        "queries": "its data step evaluates the forward model once or twice per chain and step "
        "(none in the dense closed form of a linear problem; n_particles chains)"
    }

    n_particles: int = 4
    n_steps: int = 100
    lam: float = 1.0
    zeta: float = 1.0
    data_step: str = "auto"
    grad_step: str = "line"
    noise_floor: float = 1e-3
    dense_max: int = 4096
    cg_tol: float = 1e-8
    cg_max_iter: int = 200

    # -- validation ------------------------------------------------------------
    _param_constraints = {
        "dense_max": [POSITIVE_INT],
        "cg_max_iter": [POSITIVE_INT],
        "lam": [POSITIVE],
        "noise_floor": [POSITIVE],
        "cg_tol": [POSITIVE],
        "zeta": [Interval("real", 0, 1)],
        "grad_step": [Options(*_GRAD_STEPS)],
        "data_step": [Options(*_DATA_STEPS)],
    }

    def resolve_data_step(self, problem) -> str:
        """``"closed-form"`` or ``"gradient"`` for this problem; raises if neither is possible."""
        linear = bool(getattr(problem, "linear_operator", False))
        mode = self.data_step
        if mode == "auto":
            mode = "closed-form" if linear else "gradient"
        if mode == "closed-form" and not linear:
            raise ValueError(
                "data_step='closed-form' needs a linear problem (a kd.problems.LinearOperatorProblem such "
                f"as LinearProblem); got {type(problem).__name__}."
            )
        return mode

    def _differentiates_forward(self, problem) -> bool:
        return self.resolve_data_step(problem) == "gradient"

    def expected_evaluations(self, problem=None, *, n_particles: int | None = None, data_step=None):
        """Denoiser, forward and VJP evaluations by formula; see :meth:`BaseSolver.expected_evaluations`.

        Parameters
        ----------
        problem : ForwardProblem or callable, optional
            Decides the data step under ``data_step="auto"``: a
            :class:`~kalmandiff.problems.LinearOperatorProblem` gets the
            closed form (no forward evaluations when dense; conjugate
            gradients, counted as an upper bound, beyond ``dense_max``),
            anything else the gradient step.  Without it, ``"auto"`` plans
            the gradient step and says so (``exact`` False).
        n_particles : int, optional
            Defaults to the solver's ``n_particles``.
        data_step : {"closed-form-dense", "closed-form-cg", "gradient"}, optional
            Count this data step instead of the one the problem resolves to.
        """
        if isinstance(problem, str):  # the old signature, expected_evaluations(data_step)
            warnings.warn(
                "expected_evaluations(data_step) is deprecated: pass data_step=... as a keyword "
                "(the first argument is the problem, as on every solver).",
                DeprecationWarning,
                stacklevel=2,
            )
            problem, data_step = None, problem
        return super().expected_evaluations(problem, n_particles=n_particles, data_step=data_step)

    def planned_data_step(self, problem=None, data_step=None) -> str | None:
        """The data step a run on ``problem`` takes: ``"closed-form-dense"``, ``"closed-form-cg"``,
        ``"gradient"``, or None when ``data_step="auto"`` and no problem is given."""
        if data_step is not None:
            return data_step
        if problem is None:
            if self.data_step == "auto":
                return None
            mode, shape = self.data_step, getattr(self.prior, "event_shape", None)
        else:
            mode, shape = self.resolve_data_step(problem), problem.x_shape
        if mode == "gradient":
            return "gradient"
        dense = shape is None or math.prod(shape) <= int(self.dense_max)
        return "closed-form-dense" if dense else "closed-form-cg"

    def _planned_counts(self, problem, n_particles: int, data_step=None) -> dict[str, int]:
        mode = self.planned_data_step(problem, data_step) or "gradient"
        J, N = n_particles, int(self.n_steps)
        if mode == "gradient":
            vjp = N
            fwd = vjp * (2 if self.grad_step == "line" else 1)
        elif mode == "closed-form-cg":  # one normal-equation product to start, then up to cg_max_iter
            vjp = fwd = N * (1 + int(self.cg_max_iter))
        else:
            vjp = fwd = 0
        return {
            "n_denoiser_evals": J * N,
            "n_sequential_denoiser_evals": N,
            "n_forward_evals": J * fwd,
            "n_sequential_forward_evals": fwd,
            "n_forward_vjps": J * vjp,
            "n_denoiser_vjps": 0,
        }

    def _plan_certainty(self, problem, data_step=None) -> tuple[bool, bool, str]:
        mode = self.planned_data_step(problem, data_step)
        if mode is None:
            return (
                False,
                False,
                "data_step='auto' without the problem: planned for the gradient data step (a nonlinear "
                "problem); a linear one takes the closed form, which makes no forward evaluations when "
                "dense. Pass the problem: expected_evaluations(problem).",
            )
        if mode == "closed-form-cg":
            return True, False, "conjugate gradients stop when converged: at most cg_max_iter per step."
        return False, True, ""

    # -- the loop --------------------------------------------------------------
    def _iterate(self, ctx: FitContext, state: dict | None):
        mode = self.resolve_data_step(ctx.problem)
        weights = inverse_noise_variance(ctx.problem, ctx.y, float(self.noise_floor))
        prox = None
        if mode == "closed-form":
            prox = LinearProx(
                ctx.problem, ctx.y, weights, int(self.dense_max), float(self.cg_tol), int(self.cg_max_iter)
            )
            mode = "closed-form-dense" if prox.dense else "closed-form-cg"
        fitted = {"data_step_": mode}
        if state is not None and "final" in state:
            return Fitted(state["final"], fitted)
        J, N = int(self.n_particles), int(self.n_steps)
        sigmas = self.noise_levels()
        if state is None:
            x, start = self.sigma_max * ctx.rng.normal((J, *ctx.x_shape), like=ctx.like()), 0
        else:
            x, start = state["x"], int(state["i"])
        x0_hat = x
        for i in range(start, N):
            yield SafePoint(i, {"x": x, "i": i})
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            rho = float(self.lam) / s**2
            x0 = ctx.denoise(x, s)
            misfit = None
            if prox is not None:
                x0_hat = yield from prox(x0, rho)
            else:
                x0_hat, misfit = yield from self._gradient_step(ctx, x0, rho, weights)
            x = self._renoise(ctx, x, x0_hat, s, s_next)
            ctx.record(
                step=i,
                sigma=s,
                data_weight=rho,
                misfit=misfit,
                spread=ctx.spread(x0_hat),
            )
            if ctx.stopped_early:
                return Fitted(x0_hat, fitted)
        return Fitted(x, fitted)

    def _gradient_step(self, ctx: FitContext, x0, rho: float, weights):
        """One gradient step on the proximal objective from ``x0``; failed chains redrawn.

        ``grad_step="paper"``: ``x0 - g / rho``.  ``"line"``: ``x0 - g / (rho + L)``
        with ``L = ||W^(1/2) (G(x0 + delta u) - G(x0))||^2 / delta^2``, ``u = g / ||g||``,
        the Gauss-Newton curvature of the misfit along ``g`` by one forward
        difference: the exact minimiser along ``g`` of the linearised
        proximal objective, which stays bounded where ``rho`` is tiny.
        A generator (forward values and VJPs are asked for).
        """
        xp = ctx.xp
        res = yield from misfit_gradient(ctx, x0, weights)
        failed = res.failed
        g = self._flat(res.grad)
        if self.grad_step == "paper":
            step = xp.full((g.shape[0],), 1.0 / rho, dtype=g.dtype, device=array_device(g))
        else:
            X0 = self._flat(x0)
            gnorm = xp.sqrt(xp.sum(g * g, axis=1))
            safe = xp.where(gnorm > 0, gnorm, xp.ones_like(gnorm))
            delta = 1e-4 * (xp.sqrt(xp.sum(X0 * X0, axis=1)) + 1e-4)
            probe = X0 + (delta / safe)[:, None] * g
            G1, failed1 = yield ForwardRequest(xp.reshape(probe, tuple(x0.shape)))
            failed = failed | failed1
            w = asarray_like(weights, G1)
            dG = G1 - res.G
            curv = xp.sum(w[None, :] * dG * dG, axis=1) / delta**2
            curv = xp.where(xp.isfinite(curv), curv, xp.zeros_like(curv))
            step = 1.0 / (rho + curv)
        ok = ctx.handle_failures(failed)
        out = self._flat(x0) - step[:, None] * g
        if not ok.all():
            out = ctx.resample_failed(out, ok)
        return xp.reshape(out, tuple(x0.shape)), res.misfit

    def _renoise(self, ctx: FitContext, x, x0_hat, s: float, s_next: float):
        """DiffPIR's step to the next level: a ``zeta``-mix of the implied and fresh noise."""
        if s_next == 0:
            return x0_hat
        eps_hat = (x - x0_hat) / s
        zeta = float(self.zeta)
        if zeta > 0:
            eps = ctx.rng.normal(tuple(x.shape), like=x)
            eps_hat = math.sqrt(1.0 - zeta) * eps_hat + math.sqrt(zeta) * eps
        return x0_hat + s_next * eps_hat
