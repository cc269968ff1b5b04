"""The EDM probability-flow ODE: noise schedules, Euler and Heun steps, solves to sigma = 0.

Convention (Karras et al. 2022, "EDM"): a noised sample is
``x_sigma = x_0 + sigma * eps``, a prior is its denoiser
``D(x, sigma) ~ E[x_0 | x_sigma = x]`` and the probability-flow ODE is

    dx / dsigma = (x - D(x, sigma)) / sigma.

Every function here takes the denoiser as a callable ``denoise(x, sigma)``
on a batch ``x`` of shape ``(n, *event_shape)``, so the same code serves an
analytic prior, a torch network and a counting/chunking wrapper.
Schedules are NumPy float64 vectors; the arrays that flow through the ODE
keep their own namespace, device and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._backend import RandomSource, namespace_for_device

__all__ = [
    "edm_sigma_schedule",
    "VPSchedule",
    "vp_schedule",
    "euler_step",
    "heun_step",
    "solve_to_zero",
    "sample",
]

Denoiser = Callable[[Any, Any], Any]


def edm_sigma_schedule(
    n_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    append_zero: bool = True,
) -> np.ndarray:
    """EDM's rho-schedule of noise levels, decreasing from ``sigma_max`` to ``sigma_min``.

    ``sigma_i = (sigma_max**(1/rho) + i/(n-1) * (sigma_min**(1/rho) - sigma_max**(1/rho)))**rho``
    for ``i = 0..n-1``, followed by a final ``0`` when ``append_zero``.

    Parameters
    ----------
    n_steps : int
        Number of noise levels ``n >= 1`` before the final zero.  With
        ``n_steps == 1`` the schedule is ``[sigma_max]``.
    sigma_min, sigma_max : float
        Smallest and largest noise level, in the units of the data.
    rho : float
        Curvature of the schedule (7 in EDM and EnKG).
    append_zero : bool
        Append ``sigma = 0`` so that ``n_steps`` ODE steps reach clean data.

    Returns
    -------
    ndarray of shape ``(n_steps + append_zero,)``, float64.
    """
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int (got {n_steps!r}).")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max (got {sigma_min}, {sigma_max}).")
    n = int(n_steps)
    if n == 1:
        sig = np.array([float(sigma_max)])
    else:
        ramp = np.arange(n, dtype=np.float64) / (n - 1)
        lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
        sig = (hi + ramp * (lo - hi)) ** rho
    if append_zero:
        sig = np.concatenate([sig, [0.0]])
    return sig


def euler_step(denoise: Denoiser, x, sigma: float, sigma_next: float, denoised=None):
    """One Euler step of the PF-ODE from ``sigma`` to ``sigma_next``.

    ``x_next = x + (sigma_next - sigma) * (x - D(x, sigma)) / sigma``.  A step
    to ``sigma_next = 0`` returns ``D(x, sigma)`` exactly (Tweedie).
    ``denoised`` may pass a ``D(x, sigma)`` already computed.
    """
    if denoised is None:
        denoised = denoise(x, sigma)
    if sigma_next == 0:
        return denoised
    return x + (sigma_next - sigma) / sigma * (x - denoised)


def heun_step(denoise: Denoiser, x, sigma: float, sigma_next: float, denoised=None):
    """One Heun (trapezoidal, second-order) step of the PF-ODE, as EDM's sampler.

    The correction needs ``D(x_euler, sigma_next)``; a step to
    ``sigma_next = 0`` falls back to Euler (the slope is undefined there).
    Costs two denoiser calls, one for a final step.
    """
    if denoised is None:
        denoised = denoise(x, sigma)
    slope = (x - denoised) / sigma
    x_euler = x + (sigma_next - sigma) * slope
    if sigma_next == 0:
        return x_euler
    slope_next = (x_euler - denoise(x_euler, sigma_next)) / sigma_next
    return x + (sigma_next - sigma) * 0.5 * (slope + slope_next)


_STEPPERS = {"euler": euler_step, "heun": heun_step}


def _stepper(method: str):
    try:
        return _STEPPERS[method]
    except KeyError:
        raise ValueError(f"method must be one of {sorted(_STEPPERS)} (got {method!r}).") from None


def solve_to_zero(
    denoise: Denoiser,
    x,
    sigma_start: float,
    n_steps: int,
    sigma_min: float = 0.002,
    rho: float = 7.0,
    method: str = "euler",
):
    """Integrate the PF-ODE from ``sigma_start`` down to ``sigma = 0`` in ``n_steps`` steps.

    The levels are the rho-schedule from ``sigma_start`` to ``sigma_min``
    (``n_steps`` of them) followed by zero, as EnKG's likelihood map does;
    ``n_steps = 1`` is the one-step Tweedie estimate ``D(x, sigma_start)``.
    If ``sigma_start <= sigma_min`` a single Tweedie step is taken.

    Returns the clean estimate, same shape and namespace as ``x``.
    """
    step = _stepper(method)
    if sigma_start <= sigma_min:
        levels = np.array([sigma_start, 0.0])
    else:
        levels = edm_sigma_schedule(n_steps, sigma_min, sigma_start, rho)
    for s, s_next in zip(levels[:-1], levels[1:]):
        x = step(denoise, x, float(s), float(s_next))
    return x


def sample(
    denoise: Denoiser,
    n: int,
    event_shape: tuple[int, ...],
    n_steps: int = 80,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    method: str = "heun",
    random_state: Any = None,
    like: Any = None,
    device: str | None = None,
):
    """Draw ``n`` unconditional samples by solving the PF-ODE from ``N(0, sigma_max^2 I)``.

    Parameters
    ----------
    denoise : callable ``(x, sigma) -> D``
    n : int
        Number of samples.
    event_shape : tuple of int
        Shape of one sample.
    n_steps, sigma_min, sigma_max, rho : schedule, see :func:`edm_sigma_schedule`.
    method : {"heun", "euler"}
    random_state : None, int or numpy.random.Generator
    like : array, optional
        Namespace, device and dtype of the result (default NumPy float64, or
        the namespace of ``device``).
    device : {None, "cpu", "cuda"}

    Returns
    -------
    array of shape ``(n, *event_shape)``.
    """
    rng = RandomSource(random_state, stream="diffusion-sample")
    shape = (int(n), *tuple(event_shape))
    if like is not None:
        x = sigma_max * rng.normal(shape, like=like)
    else:
        xp = namespace_for_device(device)
        x = sigma_max * rng.normal(shape, like=xp.zeros(1, dtype=xp.float64))
    step = _stepper(method)
    levels = edm_sigma_schedule(n_steps, sigma_min, sigma_max, rho)
    for s, s_next in zip(levels[:-1], levels[1:]):
        x = step(denoise, x, float(s), float(s_next))
    return x


# --------------------------------------------------------------------------
# the VP-SDE schedule of the reference baselines (DPS, GSG, DPG, SCG)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class VPSchedule:
    """The reference sampler's VP-SDE discretisation (``N`` steps).

    Attributes
    ----------
    t : ndarray ``(N + 1,)``
        Diffusion times, decreasing from 1.
    sigma : ndarray ``(N + 1,)``
        EDM noise levels ``sigma(t)``.
    scale : ndarray ``(N + 1,)``
        VP scalings ``s(t) = (1 + sigma**2)**(-1/2)``.
    scaling_factor : ndarray ``(N,)``
        ``1 - s'(t_i) / s(t_i) (t_i - t_{i+1})``, the drift on ``x``.
    factor : ndarray ``(N,)``
        ``f_i = 2 s_i**2 sigma_i sigma'_i (t_i - t_{i+1})``: the weight of the
        score and the variance of the injected noise.
    """

    t: np.ndarray
    sigma: np.ndarray
    scale: np.ndarray
    scaling_factor: np.ndarray
    factor: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.factor.size)


def vp_schedule(
    n_steps: int, beta_d: float = 19.9, beta_min: float = 0.1, t_min: float = 1e-3, sigma_final: float = 0.01
) -> VPSchedule:
    """Build the VP-SDE schedule of the reference sampler.

    Parameters
    ----------
    n_steps : int
        Number ``N`` of reverse steps (1000 in the reference).
    beta_d, beta_min : float
        VP noise schedule (19.9 and 0.1, as the EDM ``VPPrecond``).
    t_min : float
        Last grid time ``t_{N-1}`` (1e-3).
    sigma_final : float
        Noise level after the last step: ``t_N = sigma^{-1}(sigma_final)``
        (the reference appends the time of its ``sigma_min``, 0.01).

    Returns
    -------
    VPSchedule
    """

    def exponent(t):
        return 0.5 * beta_d * t**2 + beta_min * t

    if n_steps == 1:
        t = np.array([1.0])
    else:
        t = 1.0 - np.arange(n_steps) * (1.0 - t_min) / (n_steps - 1)
    t_final = (math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(sigma_final**2)) - beta_min) / beta_d
    t = np.append(t, t_final)
    sigma = np.sqrt(np.expm1(exponent(t)))
    scale = np.exp(-0.5 * exponent(t))
    rate = beta_d * t + beta_min  # d exponent / dt
    dt = t[:-1] - t[1:]
    # s'/s = -rate/2 and sigma sigma' = rate exp(exponent)/2, hence:
    scaling_factor = 1.0 + 0.5 * rate[:-1] * dt
    factor = scale[:-1] ** 2 * rate[:-1] * np.exp(exponent(t[:-1])) * dt
    return VPSchedule(
        t=t, sigma=sigma, scale=scale, scaling_factor=scaling_factor, factor=np.maximum(factor, 0)
    )
