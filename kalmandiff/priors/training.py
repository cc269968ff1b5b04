"""Train a small EDM denoiser on a stack of images (Karras et al. 2022, "EDM").

Loss: for a clean batch ``y``, ``ln sigma ~ N(P_mean, P_std^2)`` and
``n ~ N(0, sigma^2 I)``, minimise ``lambda(sigma) |D(y + n, sigma) - y|^2``
with ``lambda = (sigma^2 + sd^2) / (sigma sd)^2`` and ``D`` the
:class:`~kalmandiff.priors.adapters.EDMPrecond` of a
:class:`~kalmandiff.priors.unet.SmallUNet`.  Adam with a linear warm-up, an
exponential moving average of the weights (the EMA network is the one to
sample with), optional checkpoints that a rerun resumes from, and a
``tqdm.auto`` progress bar.  Runs on CPU for small images and on a GPU when
one is given or available.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._backend import check_random_state, to_numpy
from .adapters import EDMPrecond, save_edm_checkpoint
from .unet import SmallUNet

__all__ = ["train_denoiser", "TrainResult", "random_roll", "edm_loss"]


def edm_loss(net: EDMPrecond, y, generator=None, P_mean: float = -1.2, P_std: float = 1.2):
    """EDM's weighted denoising loss of ``net`` on a clean batch ``y`` ``(b, C, H, W)``, a scalar tensor."""
    b = y.shape[0]
    rnd = torch.randn(b, generator=generator, device=y.device, dtype=y.dtype)
    sigma = torch.exp(P_mean + P_std * rnd)
    n = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype) * sigma.reshape(-1, 1, 1, 1)
    sd = net.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    err = (net(y + n, sigma) - y) ** 2
    return (weight.reshape(-1, 1, 1, 1) * err).mean()


def random_roll(steps: tuple[int, int] = (1, 1)):
    """Augmentation: a random circular shift of each batch by multiples of ``steps`` along ``(H, W)``.

    Shifts are symmetries of periodic fields; ``steps`` restricts them where
    something breaks translation invariance (the Kolmogorov forcing
    ``-4 cos(4 y)`` on an ``R``-grid allows ``(1, R // 4)``).  Returns a
    callable ``f(batch, generator) -> batch`` for :func:`train_denoiser`.
    """
    sh, sw = (int(s) for s in steps)
    if sh < 1 or sw < 1:
        raise ValueError(f"steps must be two positive ints (got {steps!r}).")

    def roll(batch, generator=None):
        h, w = batch.shape[-2:]
        dh = int(torch.randint(0, max(h // sh, 1), (1,), generator=generator)) * sh
        dw = int(torch.randint(0, max(w // sw, 1), (1,), generator=generator)) * sw
        return torch.roll(batch, shifts=(dh, dw), dims=(-2, -1))

    return roll


@dataclass
class TrainResult:
    """What :func:`train_denoiser` returns.

    Attributes
    ----------
    net : EDMPrecond
        The trained network (last weights).
    ema : EDMPrecond
        The exponential moving average of the weights, in ``eval()`` mode: use this one.
    config : dict
        ``unet`` (SmallUNet keyword arguments), ``sigma_data``, ``event_shape`` and the training settings.
    losses : list of float
        Training loss per step.
    steps : int
        Steps done (including those of a resumed checkpoint).
    wall_time_s : float
        Wall-clock seconds of this call.
    """

    net: EDMPrecond
    ema: EDMPrecond
    config: dict
    losses: list = field(default_factory=list)
    steps: int = 0
    wall_time_s: float = 0.0

    def save(self, path, extra: dict | None = None, ema_only: bool = False):
        """Write the weights with the config (:func:`~.adapters.save_edm_checkpoint`).

        ``ema_only`` stores just the EMA weights (half the size; enough to sample).
        ``extra`` entries (plain Python data) are stored alongside.
        """
        save_edm_checkpoint(
            path,
            self.ema if ema_only else self.net,
            self.config,
            ema=None if ema_only else self.ema,
            losses=[float(v) for v in self.losses[-1000:]],
            **(extra or {}),
        )

    def denoiser(self, **kwargs):
        """The EMA network as a :class:`~kalmandiff.priors.TorchDenoiser` (keywords passed on)."""
        from .torch_denoiser import TorchDenoiser

        return TorchDenoiser(self.ema, tuple(self.config["event_shape"]), **kwargs)


def _as_tensor(data) -> torch.Tensor:
    """Training images as a float32 CPU tensor ``(N, C, H, W)``."""
    t = data.detach().cpu() if torch.is_tensor(data) else torch.from_numpy(np.asarray(to_numpy(data)))
    t = t.to(torch.float32)
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[0] < 1:
        raise ValueError(f"data must have shape (N, C, H, W) or (N, H, W) (got {tuple(t.shape)}).")
    if not torch.isfinite(t).all():
        raise ValueError("data contains NaN or infinite values.")
    return t.contiguous()


def _positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int (got {value!r}).")
    return int(value)


def _save_state(path, net, ema, opt, step, losses, gen, config):
    tmp = f"{path}.tmp"
    torch.save(
        {
            "config": config,
            "net": net.state_dict(),
            "ema": ema.state_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "losses": losses,
            "generator": gen.get_state(),
        },
        tmp,
    )
    os.replace(tmp, path)  # never leave a half-written checkpoint


def train_denoiser(
    data,
    *,
    sigma_data: float | None = None,
    model_channels: int = 32,
    channel_mult: tuple[int, ...] = (1, 2, 2),
    num_blocks: int = 1,
    padding: str = "circular",
    n_steps: int = 10_000,
    batch_size: int = 64,
    lr: float = 1e-3,
    warmup_steps: int = 200,
    ema_halflife_steps: float = 500.0,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    augment=None,
    max_minutes: float | None = None,
    checkpoint=None,
    checkpoint_every: int = 1000,
    device=None,
    random_state: Any = None,
    progress: bool = True,
) -> TrainResult:
    """Train an EDM-preconditioned :class:`~kalmandiff.priors.unet.SmallUNet` denoiser on ``data``.

    Parameters
    ----------
    data : array of shape (N, C, H, W) or (N, H, W)
        Clean training images in network units (NumPy, torch, or any
        supported array); kept on the host, batches are moved to ``device``.
    sigma_data : float, optional
        Data standard deviation of EDM's preconditioning (default: measured on ``data``).
    model_channels, channel_mult, num_blocks, padding
        The U-Net (see :class:`~kalmandiff.priors.unet.SmallUNet`).
    n_steps : int, default 10000
        Optimiser steps (total, counting a resumed checkpoint's).
    batch_size : int, default 64
    lr : float, default 1e-3
        Adam learning rate after a linear warm-up of ``warmup_steps``.
    ema_halflife_steps : float, default 500
        Half-life of the weight average, in steps.
    P_mean, P_std : float, default -1.2, 1.2
        Log-normal distribution of training noise levels (EDM).
    augment : callable, optional
        ``augment(batch, generator) -> batch`` on each batch (e.g. :func:`random_roll`).
    max_minutes : float, optional
        Stop after this much wall-clock time even if ``n_steps`` is not reached.
    checkpoint : str or os.PathLike, optional
        File to save the training state to every ``checkpoint_every`` steps
        and at the end; if it exists and its config matches, training resumes from it.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    random_state : None, int or numpy.random.Generator
        Seeds the initial weights, the batches and the noise.
    progress : bool, default True
        Show a ``tqdm.auto`` progress bar.

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    images = _as_tensor(data)
    n_steps = _positive_int(n_steps, "n_steps")
    batch_size = _positive_int(batch_size, "batch_size")
    checkpoint_every = _positive_int(checkpoint_every, "checkpoint_every")
    if sigma_data is None:
        sigma_data = float(images.std())
    if not (lr > 0 and ema_halflife_steps > 0 and P_std > 0):
        raise ValueError("lr, ema_halflife_steps and P_std must be positive.")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    seed = int(check_random_state(random_state, "training").integers(0, 2**62))
    torch.manual_seed(seed)  # initial weights: torch's module init draws from the global generator

    unet_kwargs = {
        "in_channels": images.shape[1],
        "out_channels": images.shape[1],
        "model_channels": model_channels,
        "channel_mult": list(channel_mult),
        "num_blocks": num_blocks,
        "padding": padding,
    }
    config = {
        "unet": unet_kwargs,
        "sigma_data": float(sigma_data),
        "event_shape": list(images.shape[1:]),
        "P_mean": P_mean,
        "P_std": P_std,
        "batch_size": batch_size,
        "lr": lr,
        "ema_halflife_steps": ema_halflife_steps,
    }
    net = EDMPrecond(SmallUNet(**unet_kwargs), sigma_data=float(sigma_data)).to(device)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    step, losses = 0, []

    if checkpoint is not None and os.path.isfile(checkpoint):
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state.get("config") != config:
            raise ValueError(f"checkpoint {checkpoint!r} was written with another configuration.")
        net.load_state_dict(state["net"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        step, losses = int(state["step"]), list(state["losses"])
        gen.set_state(state["generator"])

    decay = 0.5 ** (1.0 / ema_halflife_steps)
    t0 = time.perf_counter()
    bar = tqdm(total=n_steps, initial=step, disable=not progress, desc="train_denoiser")
    net.train()
    while step < n_steps:
        if max_minutes is not None and time.perf_counter() - t0 > 60.0 * max_minutes:
            break
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        batch = images[idx]
        if augment is not None:
            batch = augment(batch, gen)
        noise_gen = gen if device.type == "cpu" else None
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / max(warmup_steps, 1))
        loss = edm_loss(net, batch.to(device), noise_gen, P_mean, P_std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), net.parameters()):
                p_ema.lerp_(p, 1.0 - decay)
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if checkpoint is not None and step % checkpoint_every == 0:
            _save_state(checkpoint, net, ema, opt, step, losses, gen, config)
    bar.close()
    if checkpoint is not None:
        _save_state(checkpoint, net, ema, opt, step, losses, gen, config)
    net.eval()
    if not math.isfinite(losses[-1] if losses else 0.0):
        raise FloatingPointError("training diverged (non-finite loss); lower lr.")
    return TrainResult(net, ema, config, losses, step, time.perf_counter() - t0)
