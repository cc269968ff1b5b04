"""Figures of merit, computed on NumPy copies of the inputs (any namespace accepted).

Every function accepts an estimate with one extra leading axis (an
ensemble of reconstructions); it then scores each member against the truth
and averages the scores, which is how the EnKG paper reports its tables.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._backend import to_numpy

__all__ = ["relative_l2", "psnr", "ssim"]


def relative_l2(x_hat, x_true) -> float:
    """Relative L2 error ``||x_hat - x_true|| / ||x_true||``.

    With a leading ensemble axis on ``x_hat`` (one more dimension than
    ``x_true``) the error of each member is averaged, as the EnKG paper
    reports it.
    """
    x_hat = np.asarray(to_numpy(x_hat), dtype=float)
    x_true = np.asarray(to_numpy(x_true), dtype=float)
    if x_hat.ndim == x_true.ndim + 1:
        return float(np.mean([relative_l2(m, x_true) for m in x_hat]))
    if x_hat.shape != x_true.shape:
        raise ValueError(f"shapes differ: {x_hat.shape} vs {x_true.shape}.")
    return float(np.linalg.norm(x_hat - x_true) / np.linalg.norm(x_true))


def _pair(x_hat, x_true):
    """NumPy float64 copies; ``members`` is True when x_hat carries an ensemble axis."""
    x_hat = np.asarray(to_numpy(x_hat), dtype=float)
    x_true = np.asarray(to_numpy(x_true), dtype=float)
    members = x_hat.ndim == x_true.ndim + 1
    if (x_hat.shape[1:] if members else x_hat.shape) != x_true.shape:
        raise ValueError(f"shapes differ: {x_hat.shape} vs {x_true.shape}.")
    return x_hat, x_true, members


def _check_range(data_range) -> float:
    data_range = float(data_range)
    if not np.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive number (got {data_range!r}).")
    return data_range


def psnr(x_hat, x_true, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)``, in dB.

    Parameters
    ----------
    x_hat : array of shape ``x_true.shape`` or ``(J, *x_true.shape)``
        Estimate, or an ensemble of estimates (their PSNRs are averaged).
    x_true : array
        Reference (any shape).
    data_range : float
        Peak-to-peak range of the images: 2 for images in [-1, 1] (the
        default), 1 for [0, 1], 255 for 8-bit.

    Returns
    -------
    float
        ``inf`` when the images are identical.
    """
    data_range = _check_range(data_range)
    x_hat, x_true, members = _pair(x_hat, x_true)
    if members:
        return float(np.mean([psnr(m, x_true, data_range) for m in x_hat]))
    mse = float(np.mean((x_hat - x_true) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def _gaussian_window(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    w = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return w / w.sum()


def _filter_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Separable filtering of the last two axes, keeping only windows inside the image."""
    k = w.size
    img = sliding_window_view(img, k, axis=-2) @ w
    return sliding_window_view(img, k, axis=-1) @ w


def ssim(
    x_hat,
    x_true,
    data_range: float = 2.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity index (Wang, Bovik, Sheikh and Simoncelli, 2004).

    Local means, variances and covariance are taken under a normalised
    ``win_size x win_size`` Gaussian window of standard deviation ``sigma``
    pixels, at every position where the window lies inside the image (no
    padding); the SSIM map is averaged over those positions and over
    channels.  With the defaults this is the paper's SSIM, the same as
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=...)`` and piq's
    ``ssim`` at 256 pixels.

    Parameters
    ----------
    x_hat : array of shape ``x_true.shape`` or ``(J, *x_true.shape)``
        Estimate, or an ensemble of estimates (their SSIMs are averaged).
    x_true : array of shape (H, W) or (C, H, W)
        Reference image; a 3-D array is channels-first.
    data_range : float
        Peak-to-peak range of the images (2 for [-1, 1]).
    win_size : int
        Odd window width in pixels; the images must be at least this large.
    sigma : float
        Standard deviation of the Gaussian window, in pixels.
    k1, k2 : float
        Stabilising constants ``C1 = (k1 L)**2``, ``C2 = (k2 L)**2``.

    Returns
    -------
    float
        1 for identical images.
    """
    data_range = _check_range(data_range)
    x_hat, x_true, members = _pair(x_hat, x_true)
    if x_true.ndim not in (2, 3):
        raise ValueError(f"ssim expects images of shape (H, W) or (C, H, W) (got {x_true.shape}).")
    if int(win_size) != win_size or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd positive int (got {win_size!r}).")
    if min(x_true.shape[-2:]) < win_size:
        raise ValueError(
            f"images of size {x_true.shape[-2:]} are smaller than the SSIM window ({win_size} pixels)."
        )
    if members:
        return float(np.mean([ssim(m, x_true, data_range, win_size, sigma, k1, k2) for m in x_hat]))
    w = _gaussian_window(int(win_size), float(sigma))
    mu_x, mu_y = _filter_valid(x_hat, w), _filter_valid(x_true, w)
    var_x = _filter_valid(x_hat * x_hat, w) - mu_x**2
    var_y = _filter_valid(x_true * x_true, w) - mu_y**2
    cov = _filter_valid(x_hat * x_true, w) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(num / den))
