"""The loop shared by the guided baselines of the EnKG paper: DPS, GSG, DPG and SCG.

The public EnKG code runs these baselines on one sampler, an EDM-generalised
variance-preserving SDE (``utils/scheduler.Scheduler(schedule="vp",
timestep="vp", scaling="vp")``, research notes ``enkg-reference-code.md``
section 2).  In EDM terms, with our denoiser ``D(x, sigma)``:

* noise level ``sigma(t) = sqrt(exp(beta_d t**2 / 2 + beta_min t) - 1)``,
  scaling ``s(t) = 1 / sqrt(1 + sigma(t)**2)``, ``beta_d = 19.9``,
  ``beta_min = 0.1``;
* times ``t_i = 1 - i (1 - t_min) / (N - 1)``, ``t_min = 1e-3``, ``N = 1000``;
* the state is the *scaled* ``x = s (x0 + sigma eps)``, its score
  ``(D(x / s, sigma) - x / s) / (sigma**2 s)``;
* one Euler-Maruyama step of the reverse SDE
  ``x' = x (1 - s'/s dt) + f score + sqrt(f) eps`` with
  ``f = 2 s**2 sigma sigma' dt``.

A solver built on :class:`GuidedSolver` writes only its guidance rule: the
generator method ``_guided_step(ctx, step, state)`` receives a
:class:`GuidedStep` (state, denoised estimate, score and the step's
coefficients) and returns the next state.  Helpers here evaluate the loss
``l(x0) = ||W^(1/2) (G(x0) - y)||**2`` of a batch of clean estimates (through
the ask/tell protocol, so these solvers never differentiate ``G``) and
chain a cotangent through the denoiser (a vector-Jacobian product).

Particles live in torch (autograd is needed for the denoiser's VJP); the
data and every forward evaluation stay in the namespace of ``y``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from .._backend import from_torch, to_numpy, to_torch
from ..diffusion import VPSchedule, vp_schedule
from ._base import BaseSolver, FitContext, ForwardRequest, SafePoint
from ._docstrings import GUIDED_PARAMETERS
from ._params import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Interval, Options, solver_parameters
from ._prior_scale import prior_scale

__all__ = ["VPSchedule", "vp_schedule", "GuidedStep", "GuidedSolver"]


# --------------------------------------------------------------------------
# one step, as the guidance rule sees it
# --------------------------------------------------------------------------


@dataclass
class GuidedStep:
    """What a guidance rule sees at step ``i``.

    Attributes
    ----------
    i : int
    x : torch.Tensor ``(P, *x_shape)``
        The scaled state at ``t_i``; it requires grad when the step takes a
        denoiser VJP (``_per_step_counts(i)["vjp"] > 0``).
    denoised : torch.Tensor ``(P, *x_shape)``
        ``D(x / s_i, sigma_i)``, connected to ``x`` when it requires grad.
    score : torch.Tensor
        ``(D - x / s) / (sigma**2 s)``, detached.
    sigma, scale, sigma_next, scale_next, scaling_factor, factor : float
        The schedule at this step.
    last : bool
        True at the final step.
    """

    i: int
    x: Any
    denoised: Any
    score: Any
    sigma: float
    scale: float
    sigma_next: float
    scale_next: float
    scaling_factor: float
    factor: float
    last: bool

    def mean(self, score=None):
        """Deterministic part of the SDE step, ``x (1 - s'/s dt) + f score``."""
        score = self.score if score is None else score
        return self.x.detach() * self.scaling_factor + self.factor * score


# --------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------


@solver_parameters
class GuidedSolver(BaseSolver):
    """Base of the solvers that guide the reference VP-SDE sampler (DPS, GSG, DPG, SCG).

    Subclasses implement ``_guided_step`` and ``_per_step_counts`` (the cost
    of step ``i``; a step whose count has a denoiser VJP is denoised with a
    gradient graph), declare ``_param_constraints`` for the rule's
    parameters, and list reference settings in ``_FAMILY_DEFAULTS``.  The
    rule's state (``_initial_rule_state``) is checkpointed with it; torch
    tensors in it come back as torch tensors on the samples' device.

    ``n_particles`` is the number of independent samples run side by side
    (the reference runs one); :meth:`reconstruct` returns their mean.
    """

    _BUDGET_PARAMETERS = ("n_particles", "n_steps")
    _EQUIVALENT_PARAMETERS = {
        "steps": "its number of reverse-SDE steps is n_steps",
        "updates": "it makes one guided correction per step (n_steps sets how many)",
        "queries": "it evaluates the forward model once per step and sample (n_particles samples)",
    }
    #: the per-step forward-query budget's phrase, for the solvers that have one (DPG, GSG, SCG)
    _QUERIES = "its forward-model queries per step and sample are n_queries"

    n_particles: int = 1
    n_steps: int = 1000
    beta_d: float = 19.9
    beta_min: float = 0.1
    t_min: float = 1e-3
    sigma_final: float = 0.01
    data_scale: float | str = "auto"
    batch_size: int | None = 64

    _COMMON_PARAMETERS_DOC: ClassVar[str] = GUIDED_PARAMETERS

    # -- validation ----------------------------------------------------------
    _param_constraints = {
        "n_particles": [POSITIVE_INT],  # independent samples, not an ensemble
        "n_steps": [POSITIVE_INT],
        "beta_d": [POSITIVE],
        "beta_min": [POSITIVE],
        "t_min": [Interval("real", 0, 1, closed="neither")],
        "sigma_final": [NON_NEGATIVE],
        "data_scale": [POSITIVE, Options("auto")],
    }
    #: parameters whose numbers were calibrated on the unit schedule: when one of them is a
    #: number, ``data_scale="auto"`` resolves to 1 (the reference's schedule), so it keeps its meaning
    _UNIT_SCALE_PARAMETERS: ClassVar[tuple[str, ...]] = ("guidance_scale",)

    def _check_more(self) -> None:
        super()._check_more()
        sigma_last = math.sqrt(math.expm1(0.5 * self.beta_d * self.t_min**2 + self.beta_min * self.t_min))
        if self.sigma_final >= sigma_last:
            raise ValueError(
                f"sigma_final must be below the last grid noise level sigma(t_min) = {sigma_last:.4g} "
                f"(got {self.sigma_final!r})."
            )

    # -- the schedule and the cost formula --------------------------------------
    def resolved_data_scale(self) -> float:
        """The unit ``c`` of the noise schedule that ``data_scale`` stands for (see the parameter)."""
        if not isinstance(self.data_scale, str):
            return float(self.data_scale)
        if any(not isinstance(getattr(self, name, "auto"), str) for name in self._UNIT_SCALE_PARAMETERS):
            return 1.0
        return prior_scale(self.prior) or 1.0

    def schedule(self) -> VPSchedule:
        """The VP-SDE schedule this solver walks (noise levels in units of ``x``)."""
        sched = vp_schedule(self.n_steps, self.beta_d, self.beta_min, self.t_min, self.sigma_final)
        c = self.resolved_data_scale()
        if c == 1.0:
            return sched
        # The reference sampler run on x / c: noise levels times c, noise variances times c**2.
        return replace(sched, sigma=sched.sigma * c, factor=sched.factor * c**2)

    def _per_step_counts(self, i: int) -> dict[str, int]:
        """Per-particle evaluations at step ``i`` (override): keys as in :meth:`expected_evaluations`."""
        return {"denoiser": 1, "denoiser_calls": 1, "forward": 0, "forward_calls": 0, "vjp": 0}

    def _progress_weights(self) -> list[int]:
        """Per-step cost (evaluations per sample), so the bar's ETA counts the guided steps to come."""
        return [
            max(1, sum(v for k, v in self._per_step_counts(i).items() if not k.endswith("_calls")))
            for i in range(self.n_steps)
        ]

    def _planned_counts(self, problem, n_particles: int) -> dict[str, int]:
        """Denoiser, forward and VJP evaluations by formula (exact; the problem does not change them).

        Totals count single-sample evaluations (``P`` samples); sequential
        counts are the number of batched calls (the depth when every sample
        and query runs in parallel).
        """
        P = n_particles
        tot = {"denoiser": 0, "denoiser_calls": 0, "forward": 0, "forward_calls": 0, "vjp": 0}
        for i in range(self.n_steps):
            for k, v in self._per_step_counts(i).items():
                tot[k] += v
        return {
            "n_denoiser_evals": P * tot["denoiser"],
            "n_sequential_denoiser_evals": tot["denoiser_calls"],
            "n_forward_evals": P * tot["forward"],
            "n_sequential_forward_evals": tot["forward_calls"],
            "n_forward_vjps": 0,
            "n_denoiser_vjps": P * tot["vjp"],
        }

    # -- the loop ----------------------------------------------------------------
    def _iterate(self, ctx: FitContext, state: dict | None):
        import torch

        if state is not None and "final" in state:
            return state["final"]
        sched = self.schedule()
        N, P = sched.n_steps, int(self.n_particles)
        like = self._torch_like(ctx)
        if state is None:
            z = ctx.rng.normal((P, *ctx.x_shape), like=like)
            x, start, rule_state = float(sched.sigma[0] * sched.scale[0]) * z, 0, self._initial_rule_state()
        else:
            x, start = to_torch(state["x"], device=like.device).to(like.dtype), int(state["i"])
            rule_state = {**state["rule"], **self._from_host(state.get("rule_tensors", {}), like)}
        for i in range(start, N):
            tensors = {k for k, v in rule_state.items() if isinstance(v, torch.Tensor)}
            yield SafePoint(
                i,
                {
                    "i": i,
                    "x": from_torch(x, like=ctx.y),
                    # torch tensors are saved as arrays of y's namespace and restored as tensors
                    "rule": {k: v for k, v in rule_state.items() if k not in tensors},
                    "rule_tensors": {k: from_torch(rule_state[k], like=ctx.y) for k in tensors},
                },
            )
            step = self._prepare(ctx, x, i, sched)
            x, info = yield from self._guided_step(ctx, step, rule_state)
            x = x.detach()
            ctx.record(i, sigma=step.sigma, spread=self._spread(x), **info)
            if ctx.stopped_early:
                break
        return from_torch(x / float(sched.scale[N]), like=ctx.y)

    @staticmethod
    def _from_host(arrays: dict, like) -> dict:
        """Saved rule tensors (arrays of y's namespace) as torch tensors with the samples' device and dtype."""
        return {k: to_torch(v, device=like.device).to(like.dtype) for k, v in arrays.items()}

    def _initial_rule_state(self) -> dict:
        """Rule state carried between steps (momentum, running averages); override."""
        return {}

    def _guided_step(self, ctx: FitContext, step: GuidedStep, state: dict):  # pragma: no cover - abstract
        """Return ``(x_next, record)``; a generator that may yield ForwardRequests.

        ``record`` holds ``misfit``, the samples' misfits (or None), and any
        rule-specific diagnostics, for :meth:`FitContext.record`.
        """
        raise NotImplementedError
        yield

    @staticmethod
    def _torch_like(ctx: FitContext):
        """A zero-size torch tensor with the dtype and device the particles use."""
        y = to_torch(ctx.y)
        return y.new_zeros((1,))

    def _prepare(self, ctx: FitContext, x, i: int, sched: VPSchedule) -> GuidedStep:
        """Denoise the state (with a graph when the rule needs one) and form the score."""
        import torch

        s, sigma = float(sched.scale[i]), float(sched.sigma[i])
        needs_graph = self._per_step_counts(i)["vjp"] > 0  # the rule chains a cotangent through D
        xg = x.detach().requires_grad_(needs_graph)
        with torch.set_grad_enabled(needs_graph):
            denoised = ctx.denoise(xg / s, sigma)
        if not isinstance(denoised, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__} runs its samples in torch; the prior's denoise must accept and "
                f"return torch tensors (got {type(denoised).__name__})."
            )
        if needs_graph and not denoised.requires_grad:
            raise ValueError(
                f"{type(self).__name__} differentiates the denoiser, but the prior's denoise returned a "
                "tensor without a gradient graph; use a torch-differentiable prior (the analytic priors "
                "and TorchDenoiser modules are)."
            )
        score = (denoised.detach() - x.detach() / s) / (sigma**2 * s)
        return GuidedStep(
            i=i,
            x=xg,
            denoised=denoised,
            score=score,
            sigma=sigma,
            scale=s,
            sigma_next=float(sched.sigma[i + 1]),
            scale_next=float(sched.scale[i + 1]),
            scaling_factor=float(sched.scaling_factor[i]),
            factor=float(sched.factor[i]),
            last=i == sched.n_steps - 1,
        )

    # -- helpers for the rules -------------------------------------------------------
    @staticmethod
    def _noise_step(ctx: FitContext, step: GuidedStep, score=None):
        """One Euler-Maruyama step of the reverse SDE with the given score."""
        mean = step.mean(score)
        return mean + math.sqrt(step.factor) * ctx.rng.normal(tuple(mean.shape), like=mean)

    def _losses(self, ctx: FitContext, X0):
        """``l(x0) = ||W^(1/2)(G(x0) - y)||**2`` of a torch batch ``(n, *x_shape)`` (a generator).

        Asks for the forward values through a :class:`ForwardRequest` (in the
        namespace of ``y``) and applies the failure policy.  Returns
        ``(losses (n,) ndarray, ok (n,) bool ndarray, misfits (n,) ndarray)``:
        the guidance loss (unit weights for a scalar noise level) and the
        recorded misfit :meth:`FitContext.misfit`; failed members have NaN.
        """
        G, failed = yield ForwardRequest(from_torch(X0.detach(), like=ctx.y))
        ok = ctx.handle_failures(failed)
        losses = np.array(to_numpy(ctx.observation.guidance_losses(G)), dtype=float, copy=True)
        losses[~ok] = np.nan
        phi = np.array(ctx.misfit(G), dtype=float, copy=True)
        phi[~ok] = np.nan
        return losses, ok, phi

    def _denoiser_vjp(self, ctx: FitContext, step: GuidedStep, cotangent):
        """``J_D(x)^T v``: chain a cotangent on the denoised estimate back to the state."""
        import torch

        t0 = time.perf_counter()
        (grad,) = torch.autograd.grad(step.denoised, step.x, grad_outputs=cotangent)
        ctx.acct.count_vjps(
            int(step.x.shape[0]), forward=False, denoiser=True, seconds=time.perf_counter() - t0
        )
        return grad

    # -- the scale-aware guidance weights ("auto") ------------------------------
    #: DPG's ``guidance_scale="auto"``: the guidance direction's weight as a fraction of ``||score||``
    _AUTO_SCORE_FRACTION: ClassVar[float] = 1.0

    @staticmethod
    def _noise_loss(ctx: FitContext) -> float:
        """``l_noise``: the expected guidance loss at the truth (:meth:`Observation.noise_loss`)."""
        return ctx.observation.noise_loss()

    def _likelihood_weight(self, ctx: FitContext, step: GuidedStep, losses, ll_grad) -> np.ndarray:
        """Per-sample ``zeta_i`` of ``guidance_scale="auto"`` (derived in the DPS docstring).

        ``min(f_i m sqrt(l) / max(l, l_noise), (sqrt(l) - sqrt(l_noise))_+ / ||ll_grad||**2)``:
        the likelihood step with the data variance estimated from the
        residual, capped where the linearised ``||r||`` would reach the noise
        level.  ``losses`` are the guidance losses ``l`` (NaN counts as 0),
        ``ll_grad`` is ``grad_x sqrt(l)`` (torch ``(P, ...)``).
        """
        loss = np.nan_to_num(np.asarray(to_numpy(losses), dtype=float).reshape(-1), nan=0.0)
        m, P = int(ctx.y_flat.shape[0]), loss.size
        l_noise = self._noise_loss(ctx)
        tiny = np.finfo(float).tiny
        likelihood = step.factor * m * np.sqrt(loss) / np.maximum(np.maximum(loss, l_noise), tiny)
        g2 = np.asarray(to_numpy((ll_grad.detach().reshape(P, -1) ** 2).sum(dim=1)), dtype=float)
        excess = np.maximum(np.sqrt(loss) - math.sqrt(l_noise), 0.0)
        trust = np.where(g2 > 0, excess / np.maximum(g2, tiny), np.inf)
        return np.nan_to_num(np.minimum(likelihood, trust), nan=0.0, posinf=0.0)

    def _dps_scale(self, ctx: FitContext, step: GuidedStep, losses, ll_grad):
        """The step ``zeta`` on ``grad_x ||r||`` (DPS, GSG): the number ``guidance_scale``, or the
        per-sample ``"auto"`` weight broadcast against ``ll_grad``."""
        if not isinstance(self.guidance_scale, str):
            return self.guidance_scale
        return self._per_sample(self._likelihood_weight(ctx, step, losses, ll_grad), ll_grad)

    @staticmethod
    def _spread(x) -> float:
        if x.shape[0] < 2:
            return 0.0
        return float(x.reshape(x.shape[0], -1).std(dim=0).mean())

    @staticmethod
    def _per_sample(values, like):
        """Broadcast a per-sample vector (NumPy or torch, ``(P,)``) against ``like`` ``(P, ...)``."""
        t = to_torch(np.asarray(values)) if isinstance(values, np.ndarray) else values
        t = t.to(dtype=like.dtype, device=like.device)
        return t.reshape((like.shape[0],) + (1,) * (like.ndim - 1))
