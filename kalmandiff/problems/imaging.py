"""Linear image-restoration problems: box inpainting, super-resolution, Gaussian deblurring.

Images are channels-first, ``x_shape = (C, H, W)``, with values in
[-1, 1] as in the EnKG paper's FFHQ experiments (noise ``sigma_y = 0.05`` on
that scale).  Super-resolution and deblurring are separable: along each
image axis they are a small dense matrix, so the forward map is
``M_h @ X @ M_w.T`` and its exact adjoint ``M_h.T @ Y @ M_w`` (boundary
handling included).  This keeps the code in the array API (NumPy, CuPy,
torch, ``array_api_strict``) and differentiable by torch autograd.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backend import check_random_state, to_numpy
from ._base import ForwardProblem
from ._geometry import Geometry, grid_geometry, matrix_reach
from .linear import LinearOperatorProblem, _check_noise_std, _ConstantCache

__all__ = [
    "ImageProblem",
    "Inpainting",
    "SuperResolution",
    "GaussianDeblur",
    "smooth_test_image",
    "avgpool_matrix",
    "bicubic_matrix",
    "blur_matrix",
]

# The paper's images are 256 x 256; box sizes and margins are quoted at that size.
_PAPER_SIDE = 256


def _check_image_shape(shape: Any) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as exc:
        raise ValueError(f"shape must be a tuple (C, H, W) of positive ints (got {shape!r}).") from exc
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple (C, H, W) of positive ints (got {shape!r}).")
    return shape


# --------------------------------------------------------------------------
# shared image behaviour
# --------------------------------------------------------------------------


class ImageProblem(ForwardProblem):
    """Mix-in for problems whose unknown is an image ``(C, H, W)`` in [-1, 1].

    Gives image metrics (PSNR, SSIM, relative L2) and an image plot.
    """

    def metrics(self, x_hat, x_true) -> dict[str, float]:
        """PSNR (dB), SSIM and relative L2 error of ``x_hat`` against ``x_true``.

        PSNR and SSIM are computed on ``x_hat`` clipped to [-1, 1] with
        data range 2 (the same as on [0, 1] images with data range 1, as the
        paper evaluates); relative L2 on the raw estimate.  SSIM is NaN for
        images smaller than its 11-pixel window.  An ensemble ``(J, C, H,
        W)`` is scored member by member and averaged.
        """
        from ..metrics import psnr, relative_l2, ssim

        x_hat = np.asarray(to_numpy(x_hat), dtype=float)
        x_true = np.asarray(to_numpy(x_true), dtype=float)
        clipped = np.clip(x_hat, -1.0, 1.0)
        small = min(x_true.shape[-2:]) < 11
        return {
            "psnr": psnr(clipped, x_true, data_range=2.0),
            "ssim": float("nan") if small else ssim(clipped, x_true, data_range=2.0),
            "relative_l2": relative_l2(x_hat, x_true),
        }

    def plot(self, x=None, y=None, x_true=None, ax=None):  # pragma: no cover - graphics
        """Show truth, estimate and observation as images (matplotlib imported lazily)."""
        import matplotlib.pyplot as plt

        panels = [
            (n, a) for n, a in (("truth", x_true), ("estimate", x), ("observation", y)) if a is not None
        ]
        if ax is None:
            fig, ax = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
            ax = ax[0]
        for a, (name, arr) in zip(np.atleast_1d(ax), panels):
            arr = np.asarray(to_numpy(arr), dtype=float)
            if arr.ndim == 3:
                arr = np.moveaxis(arr, 0, -1)
                arr = arr[..., 0] if arr.shape[-1] == 1 else np.clip((arr + 1) / 2, 0, 1)
            a.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
            a.set_title(name)
            a.set_axis_off()
        return ax


class _SeparableImageProblem(ImageProblem, LinearOperatorProblem):
    """A linear image map acting as ``M_h`` on rows and ``M_w`` on columns, per channel."""

    def _set_matrices(self, Mh: np.ndarray, Mw: np.ndarray) -> None:
        self._Mh = np.asarray(Mh, dtype=float)
        self._Mw = np.asarray(Mw, dtype=float)
        C = self.x_shape[0]
        self.y_shape = (C, self._Mh.shape[0], self._Mw.shape[0])
        self._cache = _ConstantCache()

    @property
    def row_matrix(self) -> np.ndarray:
        """``M_h``, shape ``(H_out, H)``: the map along the image rows."""
        return self._Mh.copy()

    @property
    def col_matrix(self) -> np.ndarray:
        """``M_w``, shape ``(W_out, W)``: the map along the image columns."""
        return self._Mw.copy()

    @property
    def geometry(self) -> Geometry:
        """Local: pixels on the grid of the image, data at the centres of their output cells.

        The reach is measured from the matrices: per axis, the farthest input
        pixel whose weight in an output exceeds ``1e-3`` of that output's
        largest weight (:func:`~kalmandiff.problems._geometry.matrix_reach`),
        the two axes combined as ``hypot``.
        """
        if getattr(self, "_geometry", None) is None:
            _, H, W = self.x_shape
            _, h, w = self.y_shape
            s = H // h
            reach = math.hypot(matrix_reach(self._Mh, s / 2, s), matrix_reach(self._Mw, s / 2, s))
            self._geometry = grid_geometry(self.x_shape, self.y_shape, reach, note="reach from the matrices")
        return self._geometry

    @geometry.setter
    def geometry(self, value) -> None:
        self._geometry = value

    def forward(self, X):
        """``M_h @ X @ M_w.T`` per channel: ``(J, C, H, W) -> (J, *y_shape)``."""
        Mh = self._cache.get("Mh", self._Mh, X)
        MwT = self._cache.get("MwT", self._Mw.T, X)
        return Mh @ X @ MwT

    def _adjoint(self, Y):
        MhT = self._cache.get("MhT", self._Mh.T, Y)
        Mw = self._cache.get("Mw", self._Mw, Y)
        return MhT @ Y @ Mw

    def as_matrix(self, max_entries: int = 2**26) -> np.ndarray:
        """Dense matrix ``I_C (x) M_h (x) M_w`` on row-major flattened images (small sizes only)."""
        C = self.x_shape[0]
        d = int(np.prod(self.x_shape))
        m = int(np.prod(self.y_shape))
        if d * m > max_entries:
            raise ValueError(f"as_matrix would build a {m} x {d} matrix (> max_entries={max_entries}).")
        return np.kron(np.eye(C), np.kron(self._Mh, self._Mw))


# --------------------------------------------------------------------------
# inpainting
# --------------------------------------------------------------------------


class Inpainting(ImageProblem, LinearOperatorProblem):
    """Box inpainting: ``y = x * M + noise``, M zero on one rectangle, one elsewhere.

    The observation keeps the image's shape, with the masked pixels set to
    zero before the noise is added (as in the EnKG/InverseBench code), so
    ``y_shape == x_shape``; the masked entries of y are pure noise and carry
    no information about x.  The same box masks every channel.

    Parameters
    ----------
    shape : tuple (C, H, W)
        Image shape.
    box : tuple (top, left, height, width), optional
        The masked rectangle in pixels.  By default it is drawn from
        ``random_state``: height and width uniformly in
        ``[box_size_range[0], box_size_range[1])`` and the position uniformly
        with at least ``margin`` pixels to every edge.
    box_size_range : tuple of int, optional
        Range of box sides in pixels; default (105, 180) scaled from 256
        pixels to the image size (the paper's setting).
    margin : int, optional
        Minimum distance of the box to the image edges in pixels; default 32
        scaled from 256 pixels.
    noise_std : float
        Standard deviation of the Gaussian noise on y (image units).
    random_state : None, int or numpy.random.Generator
        Seeds the box; the same value gives the same box.

    Attributes
    ----------
    box : tuple (top, left, height, width)
    mask : ndarray of bool, shape (H, W)
        True on observed pixels.
    """

    def __init__(
        self,
        shape=(3, 256, 256),
        box=None,
        box_size_range=None,
        margin=None,
        noise_std: Any = 0.05,
        random_state: Any = None,
    ):
        self.x_shape = _check_image_shape(shape)
        self.y_shape = self.x_shape
        self.noise_std = _check_noise_std(noise_std, self.y_shape)
        _, H, W = self.x_shape
        if box is None:
            box = self._draw_box(H, W, box_size_range, margin, check_random_state(random_state, "setting"))
        self.box = self._check_box(box, H, W)
        top, left, h, w = self.box
        mask = np.ones((H, W), dtype=bool)
        mask[top : top + h, left : left + w] = False
        self.mask = mask
        self._cache = _ConstantCache()

    @staticmethod
    def _check_box(box, H, W) -> tuple[int, int, int, int]:
        try:
            top, left, h, w = (int(v) for v in box)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"box must be (top, left, height, width) (got {box!r}).") from exc
        if h < 1 or w < 1 or top < 0 or left < 0 or top + h > H or left + w > W:
            raise ValueError(f"box {box!r} must be a non-empty rectangle inside the {H} x {W} image.")
        return top, left, h, w

    @staticmethod
    def _draw_box(H, W, box_size_range, margin, rng) -> tuple[int, int, int, int]:
        def scaled(value, side):
            return int(np.round(value * side / _PAPER_SIDE))

        sides = []
        for side in (H, W):
            if box_size_range is None:
                lo = max(1, scaled(105, side))
                hi = max(lo + 1, scaled(180, side))
            else:
                try:
                    lo, hi = (int(v) for v in box_size_range)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"box_size_range must be (low, high) (got {box_size_range!r}).") from exc
            m = scaled(32, side) if margin is None else int(margin)
            if lo < 1 or hi <= lo or m < 0 or (hi - 1) + 2 * m > side:
                raise ValueError(
                    f"box_size_range ({lo}, {hi}) with margin {m} does not fit an image side of {side} "
                    "pixels: need 1 <= low < high and high - 1 + 2 * margin <= side."
                )
            sides.append((lo, hi, m))
        (lo_h, hi_h, m_h), (lo_w, hi_w, m_w) = sides
        h = int(rng.integers(lo_h, hi_h))
        w = int(rng.integers(lo_w, hi_w))
        top = int(rng.integers(m_h, H - m_h - h + 1))
        left = int(rng.integers(m_w, W - m_w - w + 1))
        return top, left, h, w

    @property
    def geometry(self) -> Geometry:
        """Local with reach 0: each datum is its own pixel (masked ones are zero)."""
        if getattr(self, "_geometry", None) is None:
            self._geometry = grid_geometry(
                self.x_shape, self.y_shape, 0.0, note="a mask: each datum is its pixel"
            )
        return self._geometry

    @geometry.setter
    def geometry(self, value) -> None:
        self._geometry = value

    def forward(self, X):
        """``X * M``: masked pixels set to zero, shape kept."""
        return X * self._cache.get("mask", self.mask.astype(float), X)

    def _adjoint(self, Y):
        return Y * self._cache.get("mask", self.mask.astype(float), Y)

    def as_matrix(self, max_entries: int = 2**26) -> np.ndarray:
        """Diagonal matrix of the mask repeated over channels (small sizes only)."""
        d = int(np.prod(self.x_shape))
        if d * d > max_entries:
            raise ValueError(f"as_matrix would build a {d} x {d} matrix (> max_entries={max_entries}).")
        C = self.x_shape[0]
        return np.diag(np.tile(self.mask.astype(float).ravel(), C))

    def __repr__(self) -> str:
        return f"Inpainting(shape={self.x_shape}, box={self.box}, noise_std={self.noise_std!r})"


# --------------------------------------------------------------------------
# super-resolution
# --------------------------------------------------------------------------


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a``, support [-2, 2]."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t**2 + 1
    far = a * (((t - 5) * t + 8) * t - 4)
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def avgpool_matrix(n: int, factor: int) -> np.ndarray:
    """Average pooling by ``factor`` along one axis, shape ``(n // factor, n)``."""
    M = np.zeros((n // factor, n))
    for i in range(n // factor):
        M[i, i * factor : (i + 1) * factor] = 1.0 / factor
    return M


def bicubic_matrix(n_in: int, n_out: int, antialias: bool = True) -> np.ndarray:
    """Bicubic resampling from ``n_in`` to ``n_out`` samples along one axis, shape ``(n_out, n_in)``.

    Pixel centres are aligned as ``align_corners=False``: output sample i
    sits at input coordinate ``(i + 0.5) * n_in / n_out - 0.5``.

    With ``antialias=True`` (PIL's and torchvision's ``antialias=True``) the
    Keys kernel with ``a = -0.5`` is stretched by the downsampling factor,
    truncated to the input and renormalised to sum to one in every row.
    With ``antialias=False`` it is torch's plain bicubic: the unstretched
    kernel with ``a = -0.75`` on the 4 nearest samples, indices clamped to
    the edge.
    """
    scale = n_in / n_out
    M = np.zeros((n_out, n_in))
    if antialias:
        stretch = max(scale, 1.0)
        support = 2.0 * stretch
        for i in range(n_out):
            centre = (i + 0.5) * scale
            # int() truncates toward zero, like the C code of PIL and torch.
            lo = max(int(centre - support + 0.5), 0)
            hi = min(int(centre + support + 0.5), n_in)
            j = np.arange(lo, hi)
            w = _cubic((j - centre + 0.5) / stretch, a=-0.5)
            M[i, lo:hi] = w / w.sum()
    else:
        for i in range(n_out):
            src = (i + 0.5) * scale - 0.5
            base = int(np.floor(src))
            t = src - base
            for k in range(-1, 3):
                M[i, min(max(base + k, 0), n_in - 1)] += _cubic(np.asarray(k - t), a=-0.75)
    return M


class SuperResolution(_SeparableImageProblem):
    """Downsampling by an integer factor: ``y = D x + noise``.

    Parameters
    ----------
    shape : tuple (C, H, W)
        High-resolution image shape; H and W must be multiples of ``factor``.
    factor : int
        Downsampling factor (the paper uses 4, and 2 in an ablation).
    kind : {"bicubic", "avgpool"}
        ``"bicubic"``: the paper's ``resize(..., BICUBIC, antialias=True)``,
        the same as ``torch.nn.functional.interpolate(mode="bicubic",
        antialias=True, align_corners=False)``.  ``"avgpool"``: the mean of
        each ``factor x factor`` block.
    antialias : bool
        For ``kind="bicubic"`` only: stretch the kernel (True, default) or
        use torch's plain bicubic (False).
    noise_std : float
        Standard deviation of the Gaussian noise on y (image units).

    Attributes
    ----------
    y_shape : tuple
        ``(C, H // factor, W // factor)``.
    """

    def __init__(
        self, shape=(3, 256, 256), factor: int = 4, kind: str = "bicubic", antialias=True, noise_std=0.05
    ):
        self.x_shape = _check_image_shape(shape)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be a positive int (got {factor!r}).")
        factor = int(factor)
        _, H, W = self.x_shape
        if H % factor or W % factor:
            raise ValueError(f"image sides ({H}, {W}) must be multiples of factor={factor}.")
        if kind not in ("bicubic", "avgpool"):
            raise ValueError(f"kind must be 'bicubic' or 'avgpool' (got {kind!r}).")
        self.factor, self.kind, self.antialias = factor, kind, bool(antialias)
        if kind == "avgpool":
            self._set_matrices(avgpool_matrix(H, factor), avgpool_matrix(W, factor))
        else:
            self._set_matrices(
                bicubic_matrix(H, H // factor, self.antialias), bicubic_matrix(W, W // factor, self.antialias)
            )
        self.noise_std = _check_noise_std(noise_std, self.y_shape)

    def __repr__(self) -> str:
        return (
            f"SuperResolution(shape={self.x_shape}, factor={self.factor}, kind={self.kind!r}, "
            f"noise_std={self.noise_std!r})"
        )


# --------------------------------------------------------------------------
# Gaussian deblurring
# --------------------------------------------------------------------------


def _mirror(j: np.ndarray, n: int) -> np.ndarray:
    """Reflect indices about the edge samples without repeating them (d c b | a b c d | c b a).

    This is torch's ``ReflectionPad2d``, NumPy's ``pad(mode="reflect")`` and
    ``scipy.ndimage``'s ``mode="mirror"``; folding repeatedly lets the
    padding exceed the image size.
    """
    if n == 1:
        return np.zeros_like(j)
    period = 2 * (n - 1)
    j = np.mod(j, period)
    return np.where(j > n - 1, period - j, j)


def blur_matrix(weights: np.ndarray, n: int) -> np.ndarray:
    """Convolution with a centred odd-length 1-D kernel and mirror padding, shape ``(n, n)``.

    Row i holds ``sum_k weights[k] * x[mirror(i + k - r)]`` with ``r = len(weights) // 2``
    (a correlation; the same as a convolution for the symmetric kernels used here).
    """
    weights = np.asarray(weights, dtype=float)
    r = weights.size // 2
    M = np.zeros((n, n))
    rows = np.arange(n)
    for k, wk in enumerate(weights):
        np.add.at(M, (rows, _mirror(rows + k - r, n)), wk)
    return M


class GaussianDeblur(_SeparableImageProblem):
    """Gaussian blur with reflection padding: ``y = k * x + noise``, same size as x.

    The kernel is ``scipy.ndimage.gaussian_filter`` applied to a centred
    ``kernel_size x kernel_size`` delta (the paper's 61 x 61 kernel with
    standard deviation 3, which sums to one and is the outer product of
    its 1-D profile).  The image is reflection-padded by
    ``kernel_size // 2`` and convolved depthwise, as ``ReflectionPad2d``
    followed by ``conv2d`` in the reference code; this equals
    ``scipy.ndimage.convolve(x, kernel, mode="mirror")`` per channel.

    Parameters
    ----------
    shape : tuple (C, H, W)
    kernel_size : int
        Odd kernel width in pixels.
    kernel_std : float
        Standard deviation of the Gaussian in pixels.
    noise_std : float
        Standard deviation of the Gaussian noise on y (image units).

    Attributes
    ----------
    kernel : ndarray of shape (kernel_size, kernel_size)
    kernel_1d : ndarray of shape (kernel_size,)
        The separable factor: ``kernel == outer(kernel_1d, kernel_1d)``.
    """

    def __init__(self, shape=(3, 256, 256), kernel_size: int = 61, kernel_std: float = 3.0, noise_std=0.05):
        from scipy.ndimage import gaussian_filter, gaussian_filter1d

        self.x_shape = _check_image_shape(shape)
        if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive int (got {kernel_size!r}).")
        if not np.isfinite(kernel_std) or kernel_std <= 0:
            raise ValueError(f"kernel_std must be a positive number of pixels (got {kernel_std!r}).")
        self.kernel_size, self.kernel_std = int(kernel_size), float(kernel_std)
        c = self.kernel_size // 2
        delta = np.zeros((self.kernel_size, self.kernel_size))
        delta[c, c] = 1.0
        self.kernel = gaussian_filter(delta, sigma=self.kernel_std)
        self.kernel_1d = gaussian_filter1d(delta[c], sigma=self.kernel_std)
        _, H, W = self.x_shape
        self._set_matrices(blur_matrix(self.kernel_1d, H), blur_matrix(self.kernel_1d, W))
        self.noise_std = _check_noise_std(noise_std, self.y_shape)

    def __repr__(self) -> str:
        return (
            f"GaussianDeblur(shape={self.x_shape}, kernel_size={self.kernel_size}, "
            f"kernel_std={self.kernel_std}, noise_std={self.noise_std!r})"
        )


# --------------------------------------------------------------------------
# ground truth and registry factories
# --------------------------------------------------------------------------


def smooth_test_image(shape=(1, 32, 32), random_state: Any = 0) -> np.ndarray:
    """A smooth synthetic image in [-0.9, 0.9]: a few Gaussian blobs and a soft-edged disc.

    Deterministic given ``random_state``; every channel has its own
    amplitudes, so colour images are not grey.

    Parameters
    ----------
    shape : tuple (C, H, W)
    random_state : None, int or numpy.random.Generator

    Returns
    -------
    ndarray of float64, shape (C, H, W)
    """
    C, H, W = _check_image_shape(shape)
    rng = check_random_state(random_state, "truth")
    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    field = np.zeros((C, H, W))
    for _ in range(4):
        cy, cx = rng.uniform(0.15, 0.85, size=2)
        width = rng.uniform(0.08, 0.25)
        amp = rng.uniform(-1.2, 1.2, size=(C, 1, 1))
        field += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    radius = rng.uniform(0.12, 0.25)
    edge = 2.0 / max(H, W)  # about two pixels wide, so the disc stays smooth at any size
    disc = 0.5 * (1 - np.tanh((np.hypot(yy - cy, xx - cx) - radius) / edge))
    field += rng.uniform(0.6, 1.2, size=(C, 1, 1)) * disc
    # Stretch affinely to [-0.9, 0.9]: the full range of the paper's images, without saturating.
    span = field.max() - field.min()
    return -0.9 + 1.8 * (field - field.min()) / (span if span > 0 else 1.0)


_IMAGE_SIZES = {"small": (1, 32, 32), "medium": (1, 64, 64), "paper": (3, 256, 256)}
