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

__all__ = ["train_denoiser", "TrainResult", "random_roll", "edm_loss", "validation_loss"]


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
    val_losses : list of (int, float)
        ``(step, validation loss of the EMA network)``, when ``validation_data`` was given.
    """

    net: EDMPrecond
    ema: EDMPrecond
    config: dict
    losses: list = field(default_factory=list)
    steps: int = 0
    wall_time_s: float = 0.0
    val_losses: list = field(default_factory=list)

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


def _save_state(path, net, ema, opt, sched, step, losses, val_losses, gen, config):
    tmp = f"{path}.tmp"
    torch.save(
        {
            "config": config,
            "net": net.state_dict(),
            "ema": ema.module.state_dict(),
            "ema_n_averaged": int(ema.n_averaged),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "step": step,
            "losses": losses,
            "val_losses": val_losses,
            "generator": gen.get_state(),
        },
        tmp,
    )
    os.replace(tmp, path)  # never leave a half-written checkpoint


def _resumable(saved: dict | None, config: dict) -> bool:
    """Whether a checkpoint's config continues this run: equal, except that a constant
    learning rate lets ``n_steps`` grow (a cosine schedule is tied to its ``n_steps``)."""
    if saved is None:
        return False
    if config["lr_schedule"] == "constant":
        saved, config = dict(saved), dict(config)
        saved.pop("n_steps", None)
        config.pop("n_steps", None)
    return saved == config


def _lr_factor(schedule: str, warmup_steps: int, n_steps: int, min_lr_ratio: float):
    """``step -> lr multiplier``: linear warm-up, then constant or cosine decay to ``min_lr_ratio``."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(warmup_steps, 1))
        if schedule == "constant" or step < warmup_steps:
            return warm
        frac = min(1.0, (step - warmup_steps) / max(n_steps - warmup_steps, 1))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))

    return factor


def validation_loss(
    net: EDMPrecond,
    data,
    seed: int = 0,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    batch_size: int = 256,
    repeats: int = 4,
) -> float:
    """EDM loss of ``net`` on held-out images ``data`` ``(N, C, H, W)`` with fixed noise draws, a float.

    The noise levels and noise come from a generator seeded with ``seed``,
    so two calls (or two networks) see the same draws and their losses
    compare without sampling noise; ``repeats`` passes over the data
    average over that many noise draws per image.
    """
    images = _as_tensor(data)
    device = next(net.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    total, count = 0.0, 0
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for _ in range(int(repeats)):
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size]
                b = batch.shape[0]
                sigma = torch.exp(P_mean + P_std * torch.randn(b, generator=gen))
                noise = torch.randn(batch.shape, generator=gen) * sigma.reshape(-1, 1, 1, 1)
                sd = net.sigma_data
                weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
                out = net((batch + noise).to(device), sigma.to(device)).cpu()
                err = ((out - batch) ** 2).mean(dim=(1, 2, 3))
                total += float((weight * err).sum())
                count += b
    net.train(was_training)
    return total / count


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
    lr_schedule: str = "constant",
    min_lr_ratio: float = 0.05,
    ema_halflife_steps: float = 500.0,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    augment=None,
    validation_data=None,
    validate_every: int = 500,
    max_minutes: float | None = None,
    stop_step: int | None = None,
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
        The U-Net (see :class:`~kalmandiff.priors.unet.SmallUNet`); a larger
        network takes more channels, more levels or ``num_blocks=2``.
    n_steps : int, default 10000
        Optimiser steps (total, counting a resumed checkpoint's).
    batch_size : int, default 64
    lr : float, default 1e-3
        Adam learning rate after a linear warm-up of ``warmup_steps``.
    lr_schedule : {"constant", "cosine"}, default "constant"
        After the warm-up: keep ``lr``, or decay it along a half cosine to
        ``min_lr_ratio * lr`` at ``n_steps`` (a run stopped early by
        ``max_minutes`` ends higher on the curve).
    min_lr_ratio : float, default 0.05
        Final learning rate of the cosine schedule, as a fraction of ``lr``.
    ema_halflife_steps : float, default 500
        Half-life of the weight average (:class:`torch.optim.swa_utils.AveragedModel`), in steps.
    P_mean, P_std : float, default -1.2, 1.2
        Log-normal distribution of training noise levels (EDM).
    augment : callable, optional
        ``augment(batch, generator) -> batch`` on each batch (e.g. :func:`random_roll`).
    validation_data : array of shape (M, C, H, W), optional
        Held-out images: every ``validate_every`` steps and at ``n_steps``, the
        EMA network's :func:`validation_loss` on them (the fixed noise draws
        of seed 0, the same for every run, so runs compare) is appended to
        ``TrainResult.val_losses`` as ``(step, loss)``.
    validate_every : int, default 500
    max_minutes : float, optional
        Stop after this much wall-clock time even if ``n_steps`` is not reached.
    stop_step : int, optional
        Stop when this step is reached, the learning-rate schedule still
        spanning ``n_steps``: a run cut short deterministically (unlike
        ``max_minutes``), or split across calls that resume from ``checkpoint``.
    checkpoint : str or os.PathLike, optional
        File to save the training state to (weights, EMA, optimiser,
        schedule, random generator, losses) every ``checkpoint_every`` steps
        and at the end; if it exists and its config matches, training
        resumes from it exactly where it stopped.
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
    val_images = None if validation_data is None else _as_tensor(validation_data)
    n_steps = _positive_int(n_steps, "n_steps")
    batch_size = _positive_int(batch_size, "batch_size")
    checkpoint_every = _positive_int(checkpoint_every, "checkpoint_every")
    validate_every = _positive_int(validate_every, "validate_every")
    last_step = n_steps if stop_step is None else min(_positive_int(stop_step, "stop_step"), n_steps)
    if sigma_data is None:
        sigma_data = float(images.std())
    if not (lr > 0 and ema_halflife_steps > 0 and P_std > 0):
        raise ValueError("lr, ema_halflife_steps and P_std must be positive.")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine' (got {lr_schedule!r}).")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must lie in [0, 1] (got {min_lr_ratio!r}).")
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
        "lr_schedule": lr_schedule,
        "min_lr_ratio": min_lr_ratio,
        "warmup_steps": warmup_steps,
        "n_steps": n_steps,
        "ema_halflife_steps": ema_halflife_steps,
    }
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    net = EDMPrecond(SmallUNet(**unet_kwargs), sigma_data=float(sigma_data)).to(device)
    decay = 0.5 ** (1.0 / ema_halflife_steps)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _lr_factor(lr_schedule, warmup_steps, n_steps, min_lr_ratio)
    )
    gen = torch.Generator().manual_seed(seed)
    step, losses, val_losses = 0, [], []

    if checkpoint is not None and os.path.isfile(checkpoint):
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if not _resumable(state.get("config"), config):
            raise ValueError(f"checkpoint {checkpoint!r} was written with another configuration.")
        net.load_state_dict(state["net"])
        ema.module.load_state_dict(state["ema"])
        ema.n_averaged.fill_(int(state["ema_n_averaged"]))
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, losses = int(state["step"]), list(state["losses"])
        val_losses = [tuple(v) for v in state.get("val_losses", [])]
        gen.set_state(state["generator"])

    def validate():
        if val_images is not None and (not val_losses or val_losses[-1][0] != step):
            val_losses.append((step, validation_loss(ema.module, val_images, P_mean=P_mean, P_std=P_std)))

    t0 = time.perf_counter()
    bar = tqdm(total=n_steps, initial=step, disable=not progress, desc="train_denoiser")
    net.train()
    while step < last_step:
        if max_minutes is not None and time.perf_counter() - t0 > 60.0 * max_minutes:
            break
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        batch = images[idx]
        if augment is not None:
            batch = augment(batch, gen)
        noise_gen = gen if device.type == "cpu" else None
        loss = edm_loss(net, batch.to(device), noise_gen, P_mean, P_std)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(net)
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if step % validate_every == 0:
            validate()
        if checkpoint is not None and step % checkpoint_every == 0:
            _save_state(checkpoint, net, ema, opt, sched, step, losses, val_losses, gen, config)
    bar.close()
    if step == n_steps:  # the run's end (a stop_step or max_minutes pause validates on schedule only)
        validate()
    if checkpoint is not None:
        _save_state(checkpoint, net, ema, opt, sched, step, losses, val_losses, gen, config)
    net.eval()
    if not math.isfinite(losses[-1] if losses else 0.0):
        raise FloatingPointError("training diverged (non-finite loss); lower lr.")
    ema_net = ema.module.eval().requires_grad_(False)
    return TrainResult(net, ema_net, config, losses, step, time.perf_counter() - t0, val_losses)
