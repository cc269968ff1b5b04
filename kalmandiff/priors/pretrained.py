"""Priors shipped with the package: small EDM networks trained on data the project generates itself.

``ns_vorticity_32.pt``: a :class:`~kalmandiff.priors.unet.SmallUNet` denoiser
of 32x32 Navier-Stokes vorticity fields (Kolmogorov forcing, Re 200), GRF
initial conditions evolved 5 time units, as the EnKG paper's data were made.
The network works on ``x / 10``; the loader returns it in physical units.
Reproduce it with ``python scripts/train_ns_prior.py`` (see that script).

``digits_16.pt``: a :class:`~kalmandiff.priors.unet.SmallUNet` denoiser of
scikit-learn's bundled handwritten digits upsampled to 16x16 in [-1, 1]
(:func:`kalmandiff.problems.digits.digits_split`, training part only);
reproduce it with ``python scripts/train_digits_prior.py``.

``ns_spunup_32.pt`` and ``ns_spunup_32_gaussian.npz``: the priors of the
spun-up Navier-Stokes family (GRF vorticities evolved one time unit at Re 200,
32x32): a :class:`~kalmandiff.priors.unet.SmallUNet` denoiser, and the best
stationary Gaussian of the same training fields (mean field and per-Fourier-mode
power); reproduce both with ``python scripts/train_ns_spunup_prior.py``.
"""

from __future__ import annotations

import os

import numpy as np

from .adapters import ScaledDenoiser, load_edm_checkpoint
from .torch_denoiser import TorchDenoiser

__all__ = [
    "load_navier_stokes_prior",
    "load_digits_prior",
    "load_ns_spunup_prior",
    "ns_spunup_gaussian_prior",
    "stationary_gaussian_cov",
    "NS_SCALE",
    "NS_PRIOR_PATH",
    "DIGITS_PRIOR_PATH",
]

#: Physical vorticity units per network unit of the Navier-Stokes prior.
NS_SCALE = 10.0

#: Location of the shipped Navier-Stokes weights.
NS_PRIOR_PATH = os.path.join(os.path.dirname(__file__), "data", "ns_vorticity_32.pt")

#: Location of the spun-up Navier-Stokes network (GRF vorticity evolved 1 time unit at Re 200).
NS_SPUNUP_PRIOR_PATH = os.path.join(os.path.dirname(__file__), "data", "ns_spunup_32.pt")

#: Mean field and per-mode power of the spun-up network's training fields.
NS_SPUNUP_GAUSSIAN_PATH = os.path.join(os.path.dirname(__file__), "data", "ns_spunup_32_gaussian.npz")

#: Location of the shipped 16x16 digits weights.
DIGITS_PRIOR_PATH = os.path.join(os.path.dirname(__file__), "data", "digits_16.pt")


def load_navier_stokes_prior(batch_size: int = 64, device=None, dtype=None, path=None) -> TorchDenoiser:
    """The shipped 32x32 Navier-Stokes vorticity prior, in physical vorticity units.

    Parameters
    ----------
    batch_size : int, default 64
        Chunk size of network calls (see :class:`TorchDenoiser`).
    device : str or torch.device, optional
        Default CPU.
    dtype : torch dtype, optional
        Default ``torch.float32``.
    path : str, optional
        Another checkpoint of the same format (default: the shipped one).

    Returns
    -------
    TorchDenoiser
        ``event_shape == (1, 32, 32)``; ``denoise(x, sigma)`` takes
        vorticity and ``sigma`` in physical units.  Its ``info`` attribute
        holds the checkpoint's config and data description.

    Examples
    --------
    >>> prior = load_navier_stokes_prior()
    >>> prior.event_shape
    (1, 32, 32)
    """
    return _shipped_prior(NS_PRIOR_PATH if path is None else path, NS_SCALE, batch_size, device, dtype)


def load_digits_prior(batch_size: int = 256, device=None, dtype=None, path=None) -> TorchDenoiser:
    """The shipped 16x16 handwritten-digits prior, on images in [-1, 1] (background -1).

    Parameters
    ----------
    batch_size : int, default 256
        Chunk size of network calls (see :class:`TorchDenoiser`).
    device : str or torch.device, optional
        Default CPU.
    dtype : torch dtype, optional
        Default ``torch.float32``.
    path : str, optional
        Another checkpoint of the same format (default: the shipped one).

    Returns
    -------
    TorchDenoiser
        ``event_shape == (1, 16, 16)``; ``denoise(x, sigma)`` takes images
        and ``sigma`` in image units.  Its ``info`` attribute holds the
        checkpoint's config, training command and validation losses.

    Examples
    --------
    >>> prior = load_digits_prior()
    >>> prior.event_shape
    (1, 16, 16)
    """
    return _shipped_prior(DIGITS_PRIOR_PATH if path is None else path, None, batch_size, device, dtype)


def load_ns_spunup_prior(batch_size: int = 64, device=None, dtype=None, path=None) -> TorchDenoiser:
    """The spun-up 32x32 Navier-Stokes vorticity network, in physical vorticity units.

    Trained on GRF initial vorticities evolved one time unit at Re 200
    (``scripts/train_ns_spunup_prior.py``); the prior of
    ``make("navier-stokes", family="spun-up")``.  Parameters and return as
    :func:`load_navier_stokes_prior` (``event_shape == (1, 32, 32)``).
    """
    return _shipped_prior(NS_SPUNUP_PRIOR_PATH if path is None else path, None, batch_size, device, dtype)


def stationary_gaussian_cov(power) -> np.ndarray:
    """The dense covariance ``(R*R, R*R)`` of a stationary field with per-Fourier-mode ``power`` ``(R, R)``.

    ``C v = ifft2(power * fft2(v))`` (numpy's unnormalised ``fft2``; ``power``
    is ``E|fft2(x - mean)|^2 / R^2``, so white noise of variance ``s^2`` has
    ``power == s^2``).  Its columns are the images of the pixel basis; real
    and symmetric when ``power`` is symmetric under ``k -> -k``, as the power
    of real fields is.
    """
    power = np.asarray(power, dtype=np.float64)
    n = power.size
    basis = np.eye(n).reshape(n, *power.shape)
    columns = np.real(np.fft.ifft2(power * np.fft.fft2(basis))).reshape(n, n)
    return 0.5 * (columns + columns.T)


def ns_spunup_gaussian_prior(path=None):
    """The best stationary Gaussian of the spun-up network's training fields, as an exact-denoiser prior.

    A :class:`~kalmandiff.priors.GaussianPrior` with the training fields'
    mean field and the dense ``1024 x 1024`` covariance of their
    per-Fourier-mode power (:func:`stationary_gaussian_cov`): its denoiser is
    the per-mode Wiener filter, in vorticity units; ``event_shape == (1, 32, 32)``.
    """
    from .gaussian import GaussianPrior

    saved = np.load(NS_SPUNUP_GAUSSIAN_PATH if path is None else path)
    return GaussianPrior(saved["mean"], stationary_gaussian_cov(saved["power"]))


def _shipped_prior(path, default_scale, batch_size, device, dtype) -> TorchDenoiser:
    """A checkpoint as a :class:`TorchDenoiser`, in data units when it (or ``default_scale``) names a scale."""
    net = load_edm_checkpoint(path)
    info = net.checkpoint_info
    scale = info.get("scale", default_scale)
    module = net if scale is None else ScaledDenoiser(net, scale=float(scale))
    prior = TorchDenoiser(
        module, tuple(info["config"]["event_shape"]), batch_size=batch_size, device=device, dtype=dtype
    )
    prior.info = info
    return prior
