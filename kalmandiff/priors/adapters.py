"""Adapters that turn trained networks of other conventions into EDM denoisers ``D(x, sigma)``.

Every class here is a :class:`torch.nn.Module` whose ``forward(x, sigma)``
takes ``x`` of shape ``(b, ...)`` in EDM variables (``x = x_0 + sigma * eps``)
and ``sigma`` of shape ``(b,)``, and returns ``D(x, sigma) ~ E[x_0 | x]``,
ready for :class:`kalmandiff.priors.TorchDenoiser`.

Variance-preserving (DDPM) models see ``x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps``.
Dividing by ``sqrt(abar)`` gives the EDM variable with ``sigma^2 = (1 - abar) / abar``,
so with ``abar = 1 / (1 + sigma^2)``::

    x_t = x / sqrt(1 + sigma^2),
    epsilon prediction:  D = x - sigma * eps_hat(x_t, t)
    v prediction:        D = sqrt(abar) * x_t - sqrt(1 - abar) * v_hat(x_t, t)
    score prediction:    eps_hat = -sqrt(1 - abar) * score(x_t, t)
    sample prediction:   D = x0_hat(x_t, t)

where ``t`` is the model's time input at which its schedule has this
``abar``.  Data-range conversions (images in ``[0, 1]`` versus a network
trained on ``[-1, 1]``, vorticity in physical units versus the network's
``x / 10``) are affine maps handled by :class:`ScaledDenoiser`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "EDMPrecond",
    "VPDenoiser",
    "ScoreDenoiser",
    "ScaledDenoiser",
    "from_diffusers",
    "load_edm_checkpoint",
    "save_edm_checkpoint",
]

_PREDICTIONS = ("epsilon", "v_prediction", "sample", "score")


def _column(sigma, x):
    """``sigma`` of shape ``(b,)`` (or scalar) reshaped to broadcast against ``x`` ``(b, ...)``."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


class EDMPrecond(nn.Module):
    """EDM's preconditioning: ``D = c_skip x + c_out F(c_in x, c_noise)`` (Karras et al. 2022, Table 1).

    ``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
    ``c_in = 1 / sqrt(sigma^2 + sd^2)``, ``c_noise = ln(sigma) / 4`` with ``sd = sigma_data``.

    Parameters
    ----------
    model : torch.nn.Module
        The raw network ``F(x, c_noise)``, ``x`` of shape ``(b, C, H, W)``
        and ``c_noise`` of shape ``(b,)``.
    sigma_data : float, default 0.5
        Standard deviation of the training data (network units).
    """

    def __init__(self, model: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        if not (isinstance(sigma_data, (int, float)) and math.isfinite(sigma_data) and sigma_data > 0):
            raise ValueError(f"sigma_data must be a positive number (got {sigma_data!r}).")
        self.model = model
        self.sigma_data = float(sigma_data)

    def forward(self, x, sigma):
        """``D(x, sigma)`` for ``x`` ``(b, C, H, W)`` and ``sigma`` ``(b,)`` (or scalar)."""
        s = _column(sigma, x)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / torch.sqrt(s**2 + sd2)
        c_in = 1.0 / torch.sqrt(s**2 + sd2)
        c_noise = torch.log(s.reshape(-1)) / 4.0
        f = self.model(c_in * x, c_noise)
        return c_skip * x + c_out * f.to(x.dtype)


class VPDenoiser(nn.Module):
    """A variance-preserving (DDPM-type) network in the EDM convention.

    Parameters
    ----------
    model : callable
        ``model(x_t, t) -> prediction`` with ``x_t`` ``(b, ...)`` and ``t`` ``(b,)``.
    alphas_cumprod : array_like of shape (T,), optional
        Discrete schedule ``abar_0 > ... > abar_{T-1}`` (a diffusers
        scheduler's ``alphas_cumprod``); the model's time input is the index
        ``t``.  ``None``: the continuous VP-SDE of Song et al. with
        ``abar(t) = exp(-beta_d t^2 / 2 - beta_min t)``, ``t`` in ``(0, 1]``,
        fed to the model as ``time_scale * t``.
    prediction : {"epsilon", "v_prediction", "sample", "score"}, default "epsilon"
        What the model predicts (diffusers' ``prediction_type`` names).
    timestep : {"continuous", "nearest"}, default "continuous"
        Discrete schedules only: feed the fractional index that matches
        ``sigma`` (interpolated in ``log sigma``), or round it to the nearest
        trained index.  Either way the input is scaled with the exact
        ``sigma``; the denoiser is exact at the schedule's own levels.
    beta_d, beta_min, time_scale : float
        Continuous schedule (EDM's VP defaults 19.9, 0.1; ``time_scale = 999``
        as in EDM's ``VPPrecond``).

    Notes
    -----
    ``sigma`` outside the discrete schedule's range is clamped to it for
    the time input only.
    """

    def __init__(
        self,
        model: Callable,
        alphas_cumprod: Any = None,
        prediction: str = "epsilon",
        timestep: str = "continuous",
        beta_d: float = 19.9,
        beta_min: float = 0.1,
        time_scale: float = 999.0,
    ):
        super().__init__()
        if prediction not in _PREDICTIONS:
            raise ValueError(f"prediction must be one of {_PREDICTIONS} (got {prediction!r}).")
        if timestep not in ("continuous", "nearest"):
            raise ValueError(f"timestep must be 'continuous' or 'nearest' (got {timestep!r}).")
        self.model = model
        self.prediction = prediction
        self.timestep = timestep
        self.beta_d, self.beta_min, self.time_scale = float(beta_d), float(beta_min), float(time_scale)
        if alphas_cumprod is None:
            self.log_sigmas = None
        else:
            abar = np.asarray(
                alphas_cumprod.detach().cpu() if torch.is_tensor(alphas_cumprod) else alphas_cumprod,
                dtype=np.float64,
            )
            if abar.ndim != 1 or abar.size < 2 or np.any(abar <= 0) or np.any(abar >= 1):
                raise ValueError("alphas_cumprod must be a 1-D array of at least 2 values in (0, 1).")
            log_sigmas = 0.5 * np.log((1.0 - abar) / abar)
            if np.any(np.diff(log_sigmas) <= 0):
                raise ValueError("alphas_cumprod must be strictly decreasing.")
            self.register_buffer("log_sigmas", torch.as_tensor(log_sigmas), persistent=False)

    def sigma_to_t(self, sigma):
        """The model's time input ``(b,)`` at which its schedule has noise level ``sigma`` ``(b,)``."""
        if self.log_sigmas is None:
            log1p = torch.log1p(sigma.double() ** 2)
            t = (torch.sqrt(self.beta_min**2 + 2.0 * self.beta_d * log1p) - self.beta_min) / self.beta_d
            return (self.time_scale * t).to(sigma.dtype)
        ls = self.log_sigmas.to(sigma.device)
        log_s = torch.log(sigma.double()).clamp(ls[0], ls[-1])
        hi = torch.searchsorted(ls, log_s).clamp(1, ls.numel() - 1)
        lo = hi - 1
        t = lo + (log_s - ls[lo]) / (ls[hi] - ls[lo])
        if self.timestep == "nearest":
            t = torch.round(t)
        return t.to(sigma.dtype)

    def forward(self, x, sigma):
        """``D(x, sigma)`` for ``x`` ``(b, ...)`` and ``sigma`` ``(b,)`` (or scalar)."""
        s = _column(sigma, x)
        root = torch.sqrt(1.0 + s**2)
        x_t = x / root
        pred = self.model(x_t, self.sigma_to_t(s.reshape(-1)))
        pred = getattr(pred, "sample", pred).to(x.dtype)
        if self.prediction == "epsilon":
            return x - s * pred
        if self.prediction == "score":
            # eps = -sqrt(1 - abar) * score with sqrt(1 - abar) = sigma / sqrt(1 + sigma^2).
            return x + s**2 / root * pred
        if self.prediction == "v_prediction":
            # x0 = sqrt(abar) x_t - sqrt(1 - abar) v with sqrt(abar) = 1 / sqrt(1 + sigma^2).
            return (x_t - s * pred) / root
        return pred


class ScoreDenoiser(nn.Module):
    """A variance-exploding score network ``s(x, sigma) ~ grad log p_sigma(x)`` as ``D = x + sigma^2 s``.

    Parameters
    ----------
    model : callable
        ``model(x, sigma) -> score`` in EDM variables, ``sigma`` of shape ``(b,)``.
        (For VP score networks use ``VPDenoiser(model, prediction="score")``.)
    """

    def __init__(self, model: Callable):
        super().__init__()
        self.model = model

    def forward(self, x, sigma):
        """``D(x, sigma) = x + sigma^2 * score(x, sigma)``."""
        s = _column(sigma, x)
        return x + s**2 * self.model(x, s.reshape(-1)).to(x.dtype)


class ScaledDenoiser(nn.Module):
    """A denoiser in network units seen in data units: ``x = scale * u + shift``.

    ``D_x(x, sigma) = scale * D_u((x - shift) / scale, sigma / scale) + shift``,
    exact for any affine change of units.  Examples: a network trained on
    ``[-1, 1]`` images used on ``[0, 1]`` data is ``scale=0.5, shift=0.5``;
    the Navier-Stokes prior trained on ``x / 10`` is ``scale=10``.

    Parameters
    ----------
    denoiser : callable
        ``D_u(u, sigma_u)`` in network units.
    scale : float
        Data units per network unit (non-zero).
    shift : float, default 0.0
        Data value of the network's zero.
    """

    def __init__(self, denoiser: Callable, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale != 0):
            raise ValueError(f"scale must be a finite non-zero number (got {scale!r}).")
        if not (isinstance(shift, (int, float)) and math.isfinite(shift)):
            raise ValueError(f"shift must be a finite number (got {shift!r}).")
        self.denoiser = denoiser
        self.scale, self.shift = float(scale), float(shift)

    @classmethod
    def unit_to_symmetric(cls, denoiser: Callable) -> ScaledDenoiser:
        """Data in ``[0, 1]``, network trained on ``[-1, 1]``."""
        return cls(denoiser, scale=0.5, shift=0.5)

    def forward(self, x, sigma):
        """``scale * D_u((x - shift) / scale, sigma / scale) + shift``."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        u = (x - self.shift) / self.scale
        return self.scale * self.denoiser(u, sigma / abs(self.scale)) + self.shift


def from_diffusers(unet, scheduler, timestep: str = "continuous") -> VPDenoiser:
    """Wrap a diffusers ``UNet2DModel`` and its DDPM/DDIM scheduler as an EDM denoiser.

    Parameters
    ----------
    unet : diffusers.UNet2DModel
        Called as ``unet(x_t, t).sample``.
    scheduler : diffusers scheduler
        Supplies ``alphas_cumprod`` and ``config.prediction_type``
        (``"epsilon"``, ``"v_prediction"`` or ``"sample"``).
    timestep : {"continuous", "nearest"}
        See :class:`VPDenoiser`.

    Returns
    -------
    VPDenoiser
        ``forward(x, sigma)`` in EDM variables, data in the unet's range
        (usually ``[-1, 1]``; compose with :meth:`ScaledDenoiser.unit_to_symmetric`
        for ``[0, 1]`` data).
    """
    prediction = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
    return VPDenoiser(unet, scheduler.alphas_cumprod, prediction=prediction, timestep=timestep)


# --------------------------------------------------------------------------
# checkpoints (state dict + config, never pickled code)
# --------------------------------------------------------------------------


def save_edm_checkpoint(path, model: EDMPrecond, config: dict, ema: EDMPrecond | None = None, **extra):
    """Save an EDM-preconditioned :class:`SmallUNet` as ``{"config", "ema", "net", ...}`` with ``torch.save``.

    ``config`` holds ``unet`` (the keyword arguments of
    :class:`~kalmandiff.priors.unet.SmallUNet`), ``sigma_data`` and
    ``event_shape``; ``extra`` entries (plain Python data) are stored next to them.
    """
    payload = {"config": dict(config), "net": model.state_dict()}
    if ema is not None:
        payload["ema"] = ema.state_dict()
    payload.update(extra)
    torch.save(payload, os.fspath(path))


def load_edm_checkpoint(
    path,
    model_factory: Callable[[dict], nn.Module] | None = None,
    key: str | None = None,
    map_location: Any = "cpu",
) -> EDMPrecond:
    """Load an EDM-style checkpoint (state dict + config) from a local file; nothing is downloaded.

    The file is read with ``torch.load(weights_only=True)``: plain tensors and
    Python containers only, no pickled code.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_edm_checkpoint` (or any dict with a
        ``"config"`` and a state dict under ``"ema"``, ``"net"``,
        ``"state_dict"`` or ``"model"``).
    model_factory : callable, optional
        ``model_factory(config) -> raw network F``; default builds a
        :class:`~kalmandiff.priors.unet.SmallUNet` from ``config["unet"]``.
    key : str, optional
        Which state dict to load (default: the first of ``ema``, ``net``,
        ``state_dict``, ``model`` present).
    map_location : default "cpu"
        Passed to :func:`torch.load`.

    Returns
    -------
    EDMPrecond
        In ``eval()`` mode, with the checkpoint's ``config`` (and any extra
        entries) as attribute ``checkpoint_info``.
    """
    from .unet import SmallUNet

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}.")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or "config" not in payload:
        raise ValueError(f"{path!r} is not an EDM-style checkpoint (a dict with 'config' and a state dict).")
    config = payload["config"]
    if key is None:
        key = next((k for k in ("ema", "net", "state_dict", "model") if k in payload), None)
    if key not in payload:
        raise ValueError(f"{path!r} holds no state dict under {key!r} (keys: {sorted(payload)}).")
    raw = model_factory(config) if model_factory is not None else SmallUNet(**config["unet"])
    net = EDMPrecond(raw, sigma_data=float(config.get("sigma_data", 0.5)))
    net.load_state_dict(payload[key])
    net.checkpoint_info = {k: v for k, v in payload.items() if k not in ("ema", "net", "state_dict", "model")}
    return net.eval()
