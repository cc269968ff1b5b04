"""A small noise-conditioned U-Net, the backbone of the priors trained by :mod:`.training`.

It computes the raw network ``F(c_in x, c_noise)`` of EDM's preconditioning
(:class:`kalmandiff.priors.adapters.EDMPrecond` turns it into a denoiser).
Residual blocks with group norm and SiLU, the noise level entering every
block as a learned scale and shift (FiLM), average-pool downsampling,
nearest-neighbour upsampling and skip connections; no attention, so that a
network of a few hundred thousand parameters trains on a CPU in minutes.
Convolutions pad circularly by default, the right boundary condition for
periodic fields such as the Navier-Stokes vorticity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SmallUNet"]


def _groups(channels: int) -> int:
    """Largest divisor of ``channels`` not above 8, the group count of GroupNorm."""
    return max(g for g in range(1, 9) if channels % g == 0)


class _FourierEmbedding(nn.Module):
    """Sinusoidal embedding of the scalar noise input ``c_noise``, shape ``(b,) -> (b, dim)``."""

    def __init__(self, dim: int, max_period: float = 1e3):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs)

    def forward(self, c_noise):
        # EDM's c_noise = ln(sigma) / 4 lies in about [-2, 1]: scale it so the low frequencies resolve it.
        arg = 100.0 * c_noise[:, None].to(self.freqs.dtype) * self.freqs[None, :]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with a noise-dependent scale and shift after the first norm."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, padding_mode: str):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode=padding_mode)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, padding_mode=padding_mode)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        # Start each block as the identity map: a standard trick for stable early training.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x, emb):
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = nn.functional.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class SmallUNet(nn.Module):
    """A compact U-Net ``F(x, c_noise)`` for images of shape ``(C, H, W)``.

    Parameters
    ----------
    in_channels, out_channels : int, default 1
        Image channels in and out.
    model_channels : int, default 32
        Channels at full resolution; level ``i`` has ``model_channels * channel_mult[i]``.
    channel_mult : tuple of int, default (1, 2, 2)
        One entry per resolution level; ``H`` and ``W`` must be divisible by
        ``2 ** (len(channel_mult) - 1)``.
    num_blocks : int, default 1
        Residual blocks per level on each side.
    emb_dim : int, optional
        Width of the noise embedding (default ``4 * model_channels``).
    padding : {"circular", "zeros"}, default "circular"
        Boundary condition of the convolutions.

    Notes
    -----
    ``forward(x, c_noise)`` takes ``x`` of shape ``(b, C, H, W)`` and
    ``c_noise`` of shape ``(b,)`` and returns ``(b, out_channels, H, W)``.
    With the defaults it has about 0.62 M parameters; the shipped
    Navier-Stokes prior (``model_channels=16, channel_mult=(1, 2, 4)``) has 0.36 M.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        model_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_blocks: int = 1,
        emb_dim: int | None = None,
        padding: str = "circular",
    ):
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("model_channels", model_channels),
            ("num_blocks", num_blocks),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int (got {value!r}).")
        channel_mult = tuple(int(m) for m in channel_mult)
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(
                f"channel_mult must be a non-empty tuple of positive ints (got {channel_mult!r})."
            )
        if padding not in ("circular", "zeros"):
            raise ValueError(f"padding must be 'circular' or 'zeros' (got {padding!r}).")
        emb_dim = 4 * model_channels if emb_dim is None else int(emb_dim)
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "model_channels": model_channels,
            "channel_mult": list(channel_mult),
            "num_blocks": num_blocks,
            "emb_dim": emb_dim,
            "padding": padding,
        }
        self.n_levels = len(channel_mult)
        self.embed = nn.Sequential(
            _FourierEmbedding(model_channels),
            nn.Linear(model_channels, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.stem = nn.Conv2d(in_channels, model_channels, 3, padding=1, padding_mode=padding)
        self.down = nn.ModuleList()
        widths = [model_channels]
        c = model_channels
        for mult in channel_mult:
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(_ResBlock(c, model_channels * mult, emb_dim, padding))
                c = model_channels * mult
            self.down.append(blocks)
            widths.append(c)
        self.mid = _ResBlock(c, c, emb_dim, padding)
        self.up = nn.ModuleList()
        for level in reversed(range(self.n_levels)):
            blocks = nn.ModuleList()
            skip = widths.pop()
            for b in range(num_blocks):
                blocks.append(
                    _ResBlock(
                        c + (skip if b == 0 else 0), model_channels * channel_mult[level], emb_dim, padding
                    )
                )
                c = model_channels * channel_mult[level]
            self.up.append(blocks)
        self.head_norm = nn.GroupNorm(_groups(c), c)
        self.head = nn.Conv2d(c, out_channels, 3, padding=1, padding_mode=padding)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x, c_noise):
        """Raw network output ``F(x, c_noise)``, shape ``(b, out_channels, H, W)``."""
        factor = 2 ** (self.n_levels - 1)
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(f"H and W must be divisible by {factor} (got {tuple(x.shape[-2:])}).")
        emb = self.embed(c_noise)
        h = self.stem(x)
        skips = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if level < self.n_levels - 1:
                h = nn.functional.avg_pool2d(h, 2)
        h = self.mid(h, emb)
        for i, blocks in enumerate(self.up):
            if i > 0:
                h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
        return self.head(nn.functional.silu(self.head_norm(h)))
