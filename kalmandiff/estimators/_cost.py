"""Planned cost in seconds: a timed probe of the forward model and the denoiser.

``expected_evaluations()`` counts what a run will call; how long that takes
depends on the forward model, the prior and the machine, and for an adaptive
simulator (Navier-Stokes' CFL step) on how rough its inputs are.
:func:`probe_costs` times a few evaluations on representative inputs (prior
draws, and the same draws with added noise at a few levels, as solvers
evaluate near-prior and perturbed fields) and :meth:`CostProbe.seconds`
turns planned counts into an estimated wall time.

The estimate assumes per-sample times from small batches; large batches are
usually cheaper per sample (vectorised), so the estimate tends to be an
upper bound for batched NumPy/torch models and about right for a black box
evaluated one member at a time.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import asarray_like, to_numpy

__all__ = ["CostProbe", "probe_costs", "format_seconds", "VJP_COST_FACTOR"]

#: a vector-Jacobian product (one backward pass) costs about this many forward passes (a rule of
#: thumb for reverse-mode autodiff; the probe does not time backward passes)
VJP_COST_FACTOR = 3.0

#: noise levels added to the probe's prior draws, in units of the draws' RMS
PROBE_NOISE_LEVELS = (0.0, 1.0, 4.0)


#: Extra seconds rough inputs must cost before a message mentions them.
ROUGH_MIN_EXTRA_S = 0.1


@dataclass(frozen=True)
class CostProbe:
    """Measured cost of the forward model and the denoiser: ``t(n) = per_call + n * per_sample`` seconds.

    A batched call of ``n`` members costs a fixed part (Python overhead,
    kernel launches, a time loop's bookkeeping) and a part per member; the
    two are fitted from calls of one member and of several, so a plan of
    ``n_sequential`` calls totalling ``n`` evaluations costs
    ``n_sequential * per_call + n * per_sample``.

    Attributes
    ----------
    forward_call_s, forward_sample_s : float
        Seconds per forward call and per member, from one prior draw called
        alone and repeated ``batch`` times.
    forward_spread_factor : float
        A batch of distinct prior draws over the repeated one (>= 1): an
        adaptive simulator steps a batch as long as its slowest member needs.
    forward_rough_factor : float
        The slowest probed batch (the noisiest inputs) over the repeated one
        (>= 1): how much slower rough inputs are (Navier-Stokes' CFL step).
    denoiser_call_s, denoiser_sample_s : float
        The same for the denoiser (0 without a prior).
    n_forward, n_denoiser : int
        Evaluations the probe itself made.
    n_rough_levels : int
        How many noisier input batches were timed (0: the budget ran out
        first, and ``forward_rough_factor`` is 1 for want of a measurement).
    """

    forward_call_s: float
    forward_sample_s: float
    forward_spread_factor: float
    forward_rough_factor: float
    denoiser_call_s: float
    denoiser_sample_s: float
    n_forward: int
    n_denoiser: int
    n_rough_levels: int = 0

    @property
    def forward_s(self) -> float:
        """Seconds of one forward evaluation called alone."""
        return self.forward_call_s + self.forward_sample_s

    @property
    def denoiser_s(self) -> float:
        """Seconds of one denoiser evaluation called alone."""
        return self.denoiser_call_s + self.denoiser_sample_s

    def seconds(self, planned: dict) -> tuple[float, float]:
        """Estimated wall time ``(typical, rough)`` in seconds of a run planning ``planned``.

        Parameters
        ----------
        planned : dict
            ``expected_evaluations()``: the totals ``n_forward_evals``,
            ``n_denoiser_evals``, their ``n_sequential_*`` call counts and the
            VJP totals (a VJP charged :data:`VJP_COST_FACTOR` times a member's
            evaluation).

        Returns
        -------
        (float, float)
            On inputs like prior draws, and with every forward evaluation as
            slow as the slowest (roughest) probe input.
        """

        def count(key):
            return float(planned.get(key, 0) or 0)

        forward = (
            count("n_sequential_forward_evals") * self.forward_call_s
            + (count("n_forward_evals") + VJP_COST_FACTOR * count("n_forward_vjps")) * self.forward_sample_s
        )
        denoiser = (
            count("n_sequential_denoiser_evals") * self.denoiser_call_s
            + (count("n_denoiser_evals") + VJP_COST_FACTOR * count("n_denoiser_vjps"))
            * self.denoiser_sample_s
        )
        return forward * self.forward_spread_factor + denoiser, forward * self.forward_rough_factor + denoiser

    def describe(self, planned: dict) -> str:
        """``"about 3 min (up to 9 min on rough inputs)"`` for a run planning ``planned``."""
        typical, rough = self.seconds(planned)
        text = f"about {format_seconds(typical)}"
        # Below a tenth of a second the smooth/rough difference is timer noise, not the simulator.
        if rough > 1.5 * typical and rough - typical >= ROUGH_MIN_EXTRA_S:
            text += f" (up to {format_seconds(rough)} on rough inputs)"
        return text


def format_seconds(seconds: float) -> str:
    """A duration for people: ``'0.4 s'``, ``'12 min'``, ``'3.1 h'``, ``'11 days'``."""
    if not math.isfinite(seconds):
        return "unknown"
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0)):
        if seconds >= size or unit == "s":
            value = seconds / size
            return f"{value:.2g} {unit}" if value < 10 else f"{value:,.0f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _prior_draws(prior, n: int, rng: np.random.Generator):
    """``n`` prior draws; a learned prior draws with a short ODE (a probe needs shape and roughness only)."""
    try:
        accepts_steps = "n_steps" in inspect.signature(prior.sample).parameters
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature
        accepts_steps = False
    kwargs = {"n_steps": 4} if accepts_steps else {}
    return np.asarray(to_numpy(prior.sample(n, random_state=rng, **kwargs)), dtype=float)


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _call_and_sample_costs(t_one: float, t_many: float, n: int) -> tuple[float, float]:
    """Fit ``t(m) = per_call + m * per_sample`` through ``t(1) = t_one`` and ``t(n) = t_many``."""
    if n <= 1:
        return 0.0, t_many
    per_sample = max(t_many - t_one, 0.0) / (n - 1)
    if per_sample == 0.0:  # timer noise: a call of n no slower than a call of one
        return t_many, 0.0
    return max(t_one - per_sample, 0.0), per_sample


def probe_costs(
    problem,
    prior=None,
    like: Any = None,
    batch: int = 8,
    budget_s: float = 2.0,
    random_state: Any = 0,
) -> CostProbe:
    """Time the forward model (and the prior's denoiser) on a few representative inputs.

    The inputs are ``batch`` prior draws, then the same draws plus Gaussian
    noise of standard deviation ``level * rms(draws)`` for each level of
    :data:`PROBE_NOISE_LEVELS` (without a prior, standard normal fields).
    A warm-up call on one draw pays one-off set-up (caches, lazy imports);
    then one draw alone and repeated ``batch`` times (the same work per
    member) separate the per-call from the per-member cost, the distinct
    draws measure how much a batch's slowest member costs (an adaptive
    simulator steps a batch until its slowest member is done), and the
    noisy batches how much slower rough inputs are.  The denoiser is timed
    alike at the draws' noise level.  No call starts once ``budget_s``
    seconds are spent: a slow simulator is called once, on one member, and
    that call's time is taken as the cost per member.

    Parameters
    ----------
    problem : ForwardProblem
        Called as ``problem(X)`` on batches ``(m, *x_shape)``.
    prior : Prior, optional
        Supplies the inputs and the denoiser timing.
    like : array, optional
        Namespace, device and dtype for the inputs (default NumPy float64).
    batch : int, default 8
    budget_s : float, default 2.0
        Seconds after which no further probe call is started.
    random_state : None, int or numpy.random.Generator, default 0
        The probe's own stream (it never touches a solver's).

    Returns
    -------
    CostProbe
    """
    rng = np.random.default_rng(random_state)
    shape = tuple(problem.x_shape)
    base = _prior_draws(prior, batch, rng) if prior is not None else rng.standard_normal((batch, *shape))
    rms = float(np.sqrt(np.mean(base**2))) or 1.0

    def convert(X):
        return X if like is None else asarray_like(X, like)

    n_fwd = 1
    spent = warm = _timed(problem, convert(base[:1]))  # one member: a slow simulator is called once
    if spent > budget_s:  # then the warm-up is the measurement
        den_call, den_sample, n_den = _denoiser_costs(prior, base, rms, convert)
        return CostProbe(0.0, warm, 1.0, 1.0, den_call, den_sample, n_fwd, n_den)
    # One member alone and repeated: the same work per member, so the difference is the per-member
    # cost (an adaptive simulator's batch runs as many steps as its slowest member needs).
    t_one = _timed(problem, convert(base[:1]))
    t_same = _timed(problem, convert(np.repeat(base[:1], batch, axis=0)))
    t_distinct = _timed(problem, convert(base))  # timed again, without the warm-up's set-up
    n_fwd += 1 + 2 * batch
    spent += t_one + t_same + t_distinct
    ratios = [t_distinct / t_same if t_same > 0 else 1.0]
    for level in PROBE_NOISE_LEVELS:
        if level == 0.0 or spent > budget_s:
            continue
        t = _timed(problem, convert(base + level * rms * rng.standard_normal(base.shape)))
        n_fwd += batch
        spent += t
        ratios.append(t / t_same if t_same > 0 else 1.0)
    call_s, sample_s = _call_and_sample_costs(t_one, t_same, batch)
    den_call, den_sample, n_den = _denoiser_costs(prior, base, rms, convert)
    spread, rough = max(ratios[0], 1.0), max(max(ratios), 1.0)
    return CostProbe(call_s, sample_s, spread, rough, den_call, den_sample, n_fwd, n_den, len(ratios) - 1)


def _denoiser_costs(prior, base, rms: float, convert) -> tuple[float, float, int]:
    """``(per_call, per_sample, evaluations made)`` of the prior's denoiser at noise level ``rms``."""
    if prior is None:
        return 0.0, 0.0, 0
    X = convert(base + rms * np.random.default_rng(1).standard_normal(base.shape))
    _timed(prior.denoise, X, rms)  # warm-up
    t_one = _timed(prior.denoise, X[:1], rms)
    t_many = _timed(prior.denoise, X, rms)
    return (*_call_and_sample_costs(t_one, t_many, base.shape[0]), 2 * base.shape[0] + 1)
