"""Fourier phase retrieval: ``y = |F(pad(x))| + noise``.

The image is zero-padded (oversampled) and the magnitude of its centred,
unitary 2-D Fourier transform is observed, as in the DPS and EnKG image
experiments.  The phase is lost, so the map is invariant to a global sign
flip and to moving the image within the padded canvas (circular shifts);
it is the paper's one non-linear image problem.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import array_device, get_namespace, to_numpy
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

    def symmetries(self, x) -> np.ndarray:
        """The images the map cannot tell from ``x``: ``x``, ``-x``, ``x`` turned 180 degrees, and minus that.

        ``|F|`` of a real image is unchanged by a global sign and by the
        point reflection of the canvas (``F`` becomes its complex conjugate);
        turning the ``H x W`` window by 180 degrees is that reflection up to a
        circular shift of the canvas, which ``|F|`` ignores too.  So the four
        images have exactly the same noiseless data; as the map acts on each
        channel alone, each channel of a multi-channel image may take any of
        the four independently.  Circular shifts within the padded canvas
        also keep the data, but move an image out of its window unless it has
        zero margins: they are symmetries only of such images and are not
        listed here.

        Parameters
        ----------
        x : array of shape ``(..., C, H, W)``
            An image (or a batch), any supported namespace.

        Returns
        -------
        ndarray of shape ``(4, ..., C, H, W)``, NumPy float64
            ``[x, -x, rot180(x), -rot180(x)]``, in this order.
        """
        x = np.asarray(to_numpy(x), dtype=float)
        turned = x[..., ::-1, ::-1]
        return np.stack([x, -x, turned, -turned])

    def symmetry_index(self, x_hat, x_true) -> np.ndarray:
        """Per channel, which of :meth:`symmetries` of the estimate ``x_hat`` is closest to ``x_true``.

        Parameters
        ----------
        x_hat, x_true : arrays of shape ``x_shape`` ``(C, H, W)``

        Returns
        -------
        ndarray of shape ``(C,)``, int, values 0-3
        """
        x_true = np.asarray(to_numpy(x_true), dtype=float)
        distances = np.sum((self.symmetries(x_hat) - x_true) ** 2, axis=(-2, -1))  # (4, C)
        return np.argmin(distances, axis=0)

    def align(self, x_hat, x_true) -> np.ndarray:
        """``x_hat`` moved by the map's symmetries (:meth:`symmetries`) to the copy closest to ``x_true``.

        Score a phase-retrieval estimate after this: the data cannot decide
        between the copies, so an estimate is as good as its closest one.
        The L2 distance adds over channels, so each channel is aligned alone.

        Parameters
        ----------
        x_hat : array of shape ``x_shape`` or ``(J, *x_shape)``
            An estimate, or an ensemble (each member aligned on its own).
        x_true : array of shape ``x_shape``

        Returns
        -------
        ndarray, NumPy float64, the shape of ``x_hat``
        """
        x_hat = np.asarray(to_numpy(x_hat), dtype=float)
        x_true = np.asarray(to_numpy(x_true), dtype=float)
        if x_hat.ndim == x_true.ndim + 1:
            return np.stack([self.align(member, x_true) for member in x_hat])
        index = self.symmetry_index(x_hat, x_true)
        return self.symmetries(x_hat)[index, np.arange(x_hat.shape[0])]

    def __repr__(self) -> str:
        return f"PhaseRetrieval(shape={self.x_shape}, oversample={self.oversample}, noise_std={self.noise_std!r})"
