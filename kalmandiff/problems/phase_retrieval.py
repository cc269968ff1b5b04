"""Fourier phase retrieval: ``y = |F(pad(x))| + noise``.

The image is zero-padded (oversampled) and the magnitude of its centred,
unitary 2-D Fourier transform is observed, as in the DPS and EnKG image
experiments.  The phase is lost, so the map is invariant to a global sign
flip and to moving the image within the padded canvas (circular shifts);
it is the paper's one non-linear image problem.
"""

from __future__ import annotations

from typing import Any

from .._backend import array_device, get_namespace
from ._geometry import Geometry
from .imaging import ImageProblem, _check_image_shape
from .linear import _check_noise_std

__all__ = ["PhaseRetrieval"]

_AXES = (-2, -1)


class PhaseRetrieval(ImageProblem):
    """Oversampled Fourier phase retrieval on images ``(C, H, W)``.

    ``y = |F_c(pad(x))|`` with ``F_c = fftshift(fftn(ifftshift(.), norm="ortho"))``
    over the two image axes, per channel; ``pad`` adds
    ``int(oversample / 8 * n)`` zeros on each side of an axis of length n
    (64 pixels per side at 256 pixels with ``oversample=2``).  The
    transform is unitary, so ``||y|| = ||x||`` without noise.

    Parameters
    ----------
    shape : tuple (C, H, W)
    oversample : float
        Oversampling ratio setting the padding (the paper's 2.0).
    noise_std : float
        Standard deviation of the Gaussian noise added to the magnitudes.

    Attributes
    ----------
    pad : tuple (pad_h, pad_w)
        Zeros added on each side of the rows and columns.
    y_shape : tuple
        ``(C, H + 2 pad_h, W + 2 pad_w)``.
    differentiable : bool
        True; ``|.|`` has a kink where a Fourier coefficient vanishes, which
        generic images avoid.
    """

    differentiable = True
    #: Not local: every Fourier magnitude depends on every pixel.  The geometry-free correction is
    #: off under ``localization="auto"``: measured worse than none here (32 x 32, J = 64, EnKG
    #: kalman-sqrt, 20 steps: relative L2 0.59 against 0.37, and 130x the time; docs/benchmarks.md).
    geometry = Geometry(
        local=False,
        sampling_error_correction=False,
        note="sampling-error correction measured worse than none (docs/benchmarks.md)",
    )

    def __init__(self, shape=(3, 256, 256), oversample: float = 2.0, noise_std: Any = 0.05):
        self.x_shape = _check_image_shape(shape)
        oversample = float(oversample)
        if not oversample >= 0 or oversample == float("inf"):
            raise ValueError(f"oversample must be a non-negative finite number (got {oversample!r}).")
        self.oversample = oversample
        C, H, W = self.x_shape
        self.pad = (int(oversample / 8 * H), int(oversample / 8 * W))
        self.y_shape = (C, H + 2 * self.pad[0], W + 2 * self.pad[1])
        self.noise_std = _check_noise_std(noise_std, self.y_shape)

    def pad_image(self, X):
        """Zero-pad a batch ``(J, C, H, W)`` to ``(J, *y_shape)`` (concatenation, autograd-safe)."""
        xp = get_namespace(X)
        J, C, H, W = X.shape
        ph, pw = self.pad
        dev = array_device(X)
        if pw:
            side = xp.zeros((J, C, H, pw), dtype=X.dtype, device=dev)
            X = xp.concat([side, X, side], axis=-1)
        if ph:
            top = xp.zeros((J, C, ph, W + 2 * pw), dtype=X.dtype, device=dev)
            X = xp.concat([top, X, top], axis=-2)
        return X

    def forward(self, X):
        """``|F_c(pad(X))|``: a batch ``(J, C, H, W)`` to ``(J, *y_shape)``, real."""
        xp = get_namespace(X)
        # The standard's fftn takes complex input only.
        cdtype = xp.complex128 if X.dtype == xp.float64 else xp.complex64
        Z = xp.fft.ifftshift(xp.astype(self.pad_image(X), cdtype), axes=_AXES)
        Z = xp.fft.fftn(Z, axes=_AXES, norm="ortho")
        return xp.abs(xp.fft.fftshift(Z, axes=_AXES))

    def __repr__(self) -> str:
        return f"PhaseRetrieval(shape={self.x_shape}, oversample={self.oversample}, noise_std={self.noise_std!r})"
