"""The registered problem instances: each family's ``make`` factory, with a truth and a prior.

The factories live here, beside the registry (:mod:`._registry`), so that the
forward-model modules import no priors.  Every factory attaches a matching
prior: the exact :class:`~kalmandiff.priors.GaussianPrior` for the
linear-Gaussian case, the Gaussian-random-field preset for Navier-Stokes, and
for the image and interferometry problems a Gaussian fitted to a few hundred
images drawn the way the truths are drawn (:func:`smooth_image_prior`,
:func:`crescent_prior`), from a fixed stream of their own, so the fit never
consumes or correlates with an instance's ``random_state``: a dense
covariance up to :data:`DENSE_PRIOR_MAX_DIM` pixels, a low-rank plus ridge
one (:class:`~kalmandiff.priors.LowRankGaussianPrior`, memory ``O(d k)``)
beyond.  A forward model never needs a prior.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .._backend import spawn_streams, stream_seed
from ..priors.gaussian import GaussianPrior
from ..priors.lowrank import LowRankGaussianPrior
from ._registry import ProblemInstance, register
from .imaging import (
    _IMAGE_SIZES,
    GaussianDeblur,
    Inpainting,
    SuperResolution,
    _check_image_shape,
    smooth_test_image,
)
from .interferometry import ClosurePhaseInterferometry, crescent_image
from .linear import LinearProblem
from .navier_stokes import NavierStokes2D, _positive, ns_grf_params, sample_ns_grf
from .phase_retrieval import PhaseRetrieval

__all__ = [
    "smooth_image_prior",
    "crescent_prior",
    "digits_gaussian_prior",
    "fitted_gaussian_prior",
    "default_prior",
]

#: the seed whose ``"prior-fit"`` stream draws the images a built-in prior is fitted to
PRIOR_FIT_SEED = 20261201
#: how many images a built-in prior is fitted to (a fraction of a second at 32x32)
PRIOR_FIT_SIZE = 400
#: the largest unknown (pixels) that gets a dense fitted Gaussian; larger ones get a low-rank
#: plus ridge Gaussian (a dense eigendecomposition of a 4096 x 4096 covariance alone takes ~15 s
#: on one core, and d**2 memory)
DENSE_PRIOR_MAX_DIM = 1024
#: fraction of the training images' variance that a low-rank prior's components keep
LOW_RANK_VARIANCE = 0.9999
#: bytes the training images of a low-rank fit may take: fewer images for larger unknowns
#: (400 at 64 x 64, 85 at 3 x 256 x 256)
_LOW_RANK_FIT_BYTES = 128 * 2**20


# --------------------------------------------------------------------------
# the built-in priors
# --------------------------------------------------------------------------


def _fit_rng() -> np.random.Generator:
    """The fitting draws' own stream: fixed, independent of every instance's ``random_state``."""
    return np.random.default_rng(stream_seed(PRIOR_FIT_SEED, "prior-fit"))


def fitted_gaussian_prior(images: Any, ridge: float | None = None) -> GaussianPrior:
    """A Gaussian prior with the sample mean and covariance of ``images``.

    Parameters
    ----------
    images : array_like of shape (n, *event_shape)
        Training images (``n >= 2``).
    ridge : float, optional
        Added to the covariance's diagonal so that it is well conditioned;
        default 1% of the mean pixel variance.

    Returns
    -------
    GaussianPrior
        With event shape ``images.shape[1:]`` and a full covariance.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim < 2 or images.shape[0] < 2:
        raise ValueError(f"images must have shape (n >= 2, *event_shape) (got {images.shape}).")
    X = images.reshape(images.shape[0], -1)
    cov = np.cov(X, rowvar=False)
    if ridge is None:
        ridge = 0.01 * float(np.mean(np.diag(cov)))
    cov[np.diag_indices_from(cov)] += ridge
    return GaussianPrior(X.mean(0).reshape(images.shape[1:]), cov)


def _grf_fallback(images: np.ndarray):
    """A GRF with the images' mean level and pixel spread (for instances without an image generator)."""
    from ..priors import GaussianRandomFieldPrior

    shape = images.shape[1:]
    level = float(images.mean())
    spread = float(images.std())
    if images.min() >= 0:  # non-negative images (interferometry): a GRF around the mean brightness
        return GaussianRandomFieldPrior(shape=shape, alpha=2.0, tau=3.0, scale=level, mean=level)
    return GaussianRandomFieldPrior(shape=shape, alpha=2.0, tau=3.0, scale=spread, mean=level)


def _n_fit_images(n: int, shape) -> int:
    """How many training images to draw: ``n``, fewer where the unknown is large."""
    d = int(np.prod(shape))
    if d <= DENSE_PRIOR_MAX_DIM:
        return int(n)
    return max(2, min(int(n), _LOW_RANK_FIT_BYTES // (8 * d)))


def _prior_from_images(images: np.ndarray):
    """Dense fitted Gaussian for small unknowns, low-rank plus ridge (same mean and ridge) beyond."""
    if int(np.prod(images.shape[1:])) <= DENSE_PRIOR_MAX_DIM:
        return fitted_gaussian_prior(images)
    return LowRankGaussianPrior.from_samples(images, n_components=LOW_RANK_VARIANCE)


@functools.lru_cache(maxsize=8)
def smooth_image_prior(shape: tuple[int, int, int] = (1, 32, 32), n: int = PRIOR_FIT_SIZE):
    """The prior that :func:`make` attaches to the image problems (deblur, inpainting, ...).

    A Gaussian fitted to ``n`` :func:`~kalmandiff.problems.smooth_test_image`
    draws (how those problems draw their truths), taken from a fixed stream of
    their own (:data:`PRIOR_FIT_SEED`, ``"prior-fit"``).  Unknowns larger than
    :data:`DENSE_PRIOR_MAX_DIM` pixels get a
    :class:`~kalmandiff.priors.LowRankGaussianPrior` instead of a dense
    covariance: the principal components holding :data:`LOW_RANK_VARIANCE`
    of the images' variance, the rest spread evenly over the other
    directions, the same 1% ridge (fitted to fewer images where one image
    is large: at most 128 MiB of them).  Cached per shape.

    Parameters
    ----------
    shape : tuple (C, H, W)
    n : int
        Number of training images.

    Returns
    -------
    GaussianPrior or LowRankGaussianPrior
    """
    shape = _check_image_shape(shape)
    rng = _fit_rng()
    images = np.stack([smooth_test_image(shape, rng) for _ in range(_n_fit_images(n, shape))])
    return _prior_from_images(images)


def _crescent_shape(u) -> dict:
    """The crescent parameters ``make("interferometry")`` draws from four uniforms."""
    return {
        "diameter_uas": float(38.0 + 4.0 * u[0]),
        "width_uas": float(5.0 + 2.0 * u[1]),
        "asymmetry": float(0.4 + 0.3 * u[2]),
        "position_angle_deg": float(150.0 + 60.0 * u[3]),
    }


@functools.lru_cache(maxsize=8)
def crescent_prior(npix: int = 32, fov_uas: float = 160.0, n: int = PRIOR_FIT_SIZE):
    """The prior that :func:`make` attaches to ``"interferometry"``.

    A Gaussian fitted to ``n`` crescents drawn as the instances' truths are
    (diameter 38-42 uas, width 5-7 uas, asymmetry 0.4-0.7, position angle
    150-210 deg, 0.6 Jy) on an ``npix`` grid, from the fixed ``"prior-fit"``
    stream; the ridge is 1% of the mean pixel variance.  Grids larger than
    :data:`DENSE_PRIOR_MAX_DIM` pixels get a low-rank plus ridge Gaussian
    instead, as in :func:`smooth_image_prior`.  Cached per grid.

    Parameters
    ----------
    npix : int
    fov_uas : float
    n : int
        Number of training crescents.

    Returns
    -------
    GaussianPrior or LowRankGaussianPrior
    """
    u = _fit_rng().random((_n_fit_images(n, (int(npix), int(npix))), 4))
    images = np.stack(
        [crescent_image(int(npix), float(fov_uas), flux_jy=0.6, **_crescent_shape(row)) for row in u]
    )
    return _prior_from_images(images)


#: image side of the digits family at each ``size`` (the shipped network is 16x16)
_DIGITS_SIDES = {"small": 16, "medium": 32, "paper": 64}
#: image families of the image problems: name -> description (``make(..., family=...)``)
IMAGE_FAMILIES = ("digits", "smooth")


@functools.lru_cache(maxsize=8)
def digits_gaussian_prior(side: int = 16):
    """The best Gaussian of the digits family: mean and covariance of the network's training digits.

    A Gaussian fitted (:func:`fitted_gaussian_prior`, 1% ridge) to the
    1,597 training images of :func:`~kalmandiff.problems.digits.digits_split`
    at ``side x side``, the same images the shipped network was trained on;
    a low-rank plus ridge one beyond :data:`DENSE_PRIOR_MAX_DIM` pixels.
    Cached per side.

    Returns
    -------
    GaussianPrior or LowRankGaussianPrior
        Event shape ``(1, side, side)``.
    """
    from .digits import digits_split

    train, _ = digits_split(int(side))
    return _prior_from_images(np.asarray(train, dtype=np.float64))


def _digits_network_prior(side: int):
    """The shipped network of ``side x side`` digits, or None where none ships."""
    if side != 16:
        return None
    try:
        from ..priors.pretrained import load_digits_prior
    except ImportError:  # torch is optional: no network without it
        return None
    return load_digits_prior()


def _check_family(family: str) -> str:
    if family not in IMAGE_FAMILIES:
        raise ValueError(f"family must be one of {IMAGE_FAMILIES} (got {family!r}).")
    return family


def _digits_shape(size: str, kwargs: dict) -> tuple[int, int, int]:
    if size not in _DIGITS_SIDES:
        raise ValueError(f"size must be one of {sorted(_DIGITS_SIDES)} (got {size!r}).")
    side = _DIGITS_SIDES[size]
    shape = _check_image_shape(kwargs.pop("shape", (1, side, side)))
    if shape[0] != 1 or shape[1] != shape[2] or shape[1] % 8:
        raise ValueError(
            f"the digits family has shapes (1, S, S) with S a multiple of 8 (got {shape}); "
            "family='smooth' takes any image shape."
        )
    return shape


def _choose_prior(family: str, shape, prior: str | None):
    """``(prior object, "network" | "gaussian")`` for an image instance of ``family`` and ``shape``."""
    network = _digits_network_prior(shape[1]) if family == "digits" and prior != "gaussian" else None
    if prior is None:
        prior = "network" if network is not None else "gaussian"
    if prior not in ("network", "gaussian"):
        raise ValueError(f"prior must be 'network' or 'gaussian' (got {prior!r}).")
    if prior == "network":
        if network is None:
            raise ValueError(
                f"no network prior ships for the {family!r} family at shape {tuple(shape)} "
                "(the digits family's is 16x16 and needs torch); use prior='gaussian'."
            )
        return network, "network"
    if family == "digits":
        return digits_gaussian_prior(shape[1]), "gaussian"
    return smooth_image_prior(tuple(shape)), "gaussian"


def _draw_digit(shape, truth_rng) -> tuple[np.ndarray, int]:
    """A held-out test digit (never seen by the network) chosen by the truth stream, and its index."""
    from .digits import digits_split

    _, test = digits_split(shape[1])
    index = int(truth_rng.integers(test.shape[0]))
    return np.array(test[index], dtype=np.float64), index


def default_prior(inst: ProblemInstance):
    """The instance's own prior, or a generic smooth prior (a GRF) of its unknown's shape.

    Used by the command line for instances whose factory attaches none (a
    registered third-party factory, say).

    Parameters
    ----------
    inst : ProblemInstance

    Returns
    -------
    Prior
    """
    if inst.prior is not None:
        return inst.prior
    shape = tuple(inst.problem.x_shape)
    if len(shape) != 3:
        raise ValueError(
            f"no default prior for unknowns of shape {shape}; pass a prior through the Python API "
            "(e.g. kd.priors.GaussianPrior or kd.problems.fitted_gaussian_prior)."
        )
    return _grf_fallback(np.asarray(inst.x_true, dtype=np.float64)[None])


# --------------------------------------------------------------------------
# linear-Gaussian
# --------------------------------------------------------------------------

_LINEAR_GAUSSIAN_SIZES = {"small": (8, 4), "medium": (80, 40), "paper": (800, 4)}


@register("linear-gaussian")
def make_linear_gaussian(size: str = "small", random_state: Any = 0, **kwargs) -> ProblemInstance:
    """A random linear problem with a Gaussian prior (exact posterior known).

    ``A`` has i.i.d. ``N(0, 1/d)`` entries; the prior has a random mean
    (entries ``N(0, 1)``) and a random well-conditioned covariance
    ``B B^T / d + 0.5 I``; ``x_true`` is one prior draw.

    Parameters
    ----------
    size : {"small", "medium", "paper"}
        ``(d, m)`` = (8, 4), (80, 40) or (800, 4) (the largest GMM setting of
        the MCGdiff benchmark).
    random_state : None, int or numpy.random.Generator
    **kwargs
        ``d``, ``m`` and ``noise_std`` (default 0.1) override the size.
    """
    if size not in _LINEAR_GAUSSIAN_SIZES:
        raise ValueError(f"size must be one of {sorted(_LINEAR_GAUSSIAN_SIZES)} (got {size!r}).")
    d, m = _LINEAR_GAUSSIAN_SIZES[size]
    d = int(kwargs.pop("d", d))
    m = int(kwargs.pop("m", m))
    noise_std = kwargs.pop("noise_std", 0.1)
    if kwargs:
        raise ValueError(f"unknown options for 'linear-gaussian': {sorted(kwargs)}.")
    rng, truth, noise = spawn_streams(random_state, "setting", "truth", "noise")
    A = rng.standard_normal((m, d)) / np.sqrt(d)
    mean = rng.standard_normal(d)
    B = rng.standard_normal((d, d))
    cov = B @ B.T / d + 0.5 * np.eye(d)
    prior = GaussianPrior(mean, cov)
    problem = LinearProblem(A, (d,), noise_std=noise_std)
    x_true = prior.sample(1, random_state=truth)[0]
    y = problem.observe(x_true, random_state=noise)
    return ProblemInstance(problem, x_true, y, prior=prior, info={"size": size, "d": d, "m": m})


# --------------------------------------------------------------------------
# image restoration
# --------------------------------------------------------------------------


def _image_shape(size: str, kwargs: dict) -> tuple[int, int, int]:
    if size not in _IMAGE_SIZES:
        raise ValueError(f"size must be one of {sorted(_IMAGE_SIZES)} (got {size!r}).")
    return _check_image_shape(kwargs.pop("shape", _IMAGE_SIZES[size]))


def _instance(problem, truth_rng, noise_rng, size, name, family="smooth", prior=None) -> ProblemInstance:
    """Draw the truth (a smooth test image or a held-out digit), observe it, attach the prior.

    The truth and the noise come from their own streams before the prior is
    chosen, so they never depend on ``prior``.
    """
    info = {"size": size, "name": name, "family": family}
    if family == "digits":
        x_true, info["digit_index"] = _draw_digit(problem.x_shape, truth_rng)
    else:
        x_true = smooth_test_image(problem.x_shape, truth_rng)
    y = problem.observe(x_true, random_state=noise_rng)
    prior_obj, info["prior"] = _choose_prior(family, problem.x_shape, prior)
    return ProblemInstance(problem, x_true, y, prior=prior_obj, info=info)


_FAMILY_DOC = """
    Parameters
    ----------
    size : {"small", "medium", "paper"}
    random_state : None, int or numpy.random.Generator
        Seeds the truth, the noise (and a drawn setting), each from its own stream.
    family : {"digits", "smooth"}, default "digits"
        ``"digits"``: the truth is a held-out handwritten digit
        (:func:`kalmandiff.problems.digits.digits_split`) in [-1, 1],
        (1, 16, 16) / (1, 32, 32) / (1, 64, 64) by size; ``"smooth"``: a
        :func:`smooth_test_image`, (1, 32, 32) / (1, 64, 64) / (3, 256, 256).
    prior : {"network", "gaussian"}, optional
        ``"network"``: the shipped digits network (16x16 digits only, the
        default there); ``"gaussian"``: the best Gaussian of the family's
        training images (:func:`digits_gaussian_prior` or
        :func:`smooth_image_prior`), the default elsewhere.  The truth and
        the data do not depend on it; ``info["prior"]`` says which is attached.
    **kwargs
        Passed to the problem's constructor (``shape`` overrides the size)."""


def _family_shape(size, family, kwargs):
    return _digits_shape(size, kwargs) if _check_family(family) == "digits" else _image_shape(size, kwargs)


@register("inpainting")
def make_inpainting(
    size: str = "small", random_state: Any = 0, family: str = "digits", prior: str | None = None, **kwargs
) -> ProblemInstance:
    """Box inpainting of a held-out digit (default) or a :func:`smooth_test_image`.

    The box (drawn from the ``"setting"`` stream, sides about 40-70% of the
    image, the paper's proportions), the truth and the noise (0.05) come
    from ``random_state``; ``kwargs`` go to :class:`Inpainting`.
    """
    shape = _family_shape(size, family, kwargs)
    setting, truth, noise = spawn_streams(random_state, "setting", "truth", "noise")
    kwargs.setdefault("random_state", setting)
    return _instance(Inpainting(shape, **kwargs), truth, noise, size, "inpainting", family, prior)


make_inpainting.__doc__ += _FAMILY_DOC


@register("super-resolution")
def make_super_resolution(
    size: str = "small", random_state: Any = 0, family: str = "smooth", prior: str | None = None, **kwargs
) -> ProblemInstance:
    """4x bicubic super-resolution of a :func:`smooth_test_image` (default) or a held-out digit.

    ``kwargs`` go to :class:`SuperResolution`.
    """
    shape = _family_shape(size, family, kwargs)
    truth, noise = spawn_streams(random_state, "truth", "noise")
    return _instance(SuperResolution(shape, **kwargs), truth, noise, size, "super-resolution", family, prior)


make_super_resolution.__doc__ += _FAMILY_DOC.replace('default "digits"', 'default "smooth"')


_DEBLUR_KERNELS = {"small": (13, 1.5), "medium": (25, 3.0), "paper": (61, 3.0)}


@register("deblur")
def make_deblur(
    size: str = "small", random_state: Any = 0, family: str = "smooth", prior: str | None = None, **kwargs
) -> ProblemInstance:
    """Gaussian deblurring of a :func:`smooth_test_image` (default) or a held-out digit.

    Kernels (size, std): small (13, 1.5), medium (25, 3.0) (the paper's
    kernel without its zero border), paper (61, 3.0).  ``kwargs`` go to
    :class:`GaussianDeblur`.
    """
    shape = _family_shape(size, family, kwargs)
    kernel_size, kernel_std = _DEBLUR_KERNELS[size]
    kwargs.setdefault("kernel_size", kernel_size)
    kwargs.setdefault("kernel_std", kernel_std)
    truth, noise = spawn_streams(random_state, "truth", "noise")
    return _instance(GaussianDeblur(shape, **kwargs), truth, noise, size, "deblur", family, prior)


make_deblur.__doc__ += _FAMILY_DOC.replace('default "digits"', 'default "smooth"')


# --------------------------------------------------------------------------
# phase retrieval
# --------------------------------------------------------------------------


@register("phase-retrieval")
def make_phase_retrieval(
    size: str = "small", random_state: Any = 0, family: str = "digits", prior: str | None = None, **kwargs
) -> ProblemInstance:
    """Phase retrieval (oversampling 2, noise 0.05) of a held-out digit (default) or a smooth image.

    ``kwargs`` go to :class:`PhaseRetrieval`.
    """
    shape = _family_shape(size, family, kwargs)
    truth, noise = spawn_streams(random_state, "truth", "noise")
    return _instance(PhaseRetrieval(shape, **kwargs), truth, noise, size, "phase-retrieval", family, prior)


make_phase_retrieval.__doc__ += _FAMILY_DOC


# --------------------------------------------------------------------------
# black-hole interferometry
# --------------------------------------------------------------------------

_INTERFEROMETRY_SIZES = {
    "small": {"npix": 32, "tadv_s": 1800.0},
    "medium": {"npix": 64, "tadv_s": 1200.0},
    "paper": {"npix": 64, "tadv_s": 600.0},
}


@register("interferometry")
def make_interferometry(size: str = "small", random_state: Any = 0, **kwargs) -> ProblemInstance:
    """M87 seen by the EHT 2017 array, with a jittered crescent as ground truth.

    Sizes: ``"small"`` (32 px, a scan every 30 min), ``"medium"`` (64 px,
    every 20 min), ``"paper"`` (64 px, every 10 min); 160 micro-arcsecond field.
    The crescent's diameter (38-42 uas), width, asymmetry and position angle
    (150-210 deg) are drawn from ``random_state``; the total flux is 0.6 Jy.
    The prior is :func:`crescent_prior` on the instance's grid.
    """
    if size not in _INTERFEROMETRY_SIZES:
        raise ValueError(f"size must be one of {', '.join(_INTERFEROMETRY_SIZES)} (got {size!r}).")
    truth, noise = spawn_streams(random_state, "truth", "noise")
    settings = {**_INTERFEROMETRY_SIZES[size], **kwargs}
    problem = ClosurePhaseInterferometry(**settings)
    shape = _crescent_shape(truth.random(4))
    x_true = crescent_image(problem.npix, problem.fov_uas, flux_jy=0.6, **shape)
    y = problem.observe(x_true, random_state=noise)
    info = {"size": size, **settings, **shape, "flux_jy": 0.6}
    prior = crescent_prior(problem.npix, problem.fov_uas)
    return ProblemInstance(problem=problem, x_true=x_true, y=y, prior=prior, info=info)


# --------------------------------------------------------------------------
# Navier-Stokes
# --------------------------------------------------------------------------


def _grf_prior(resolution: int, input_scale: float = 1.0):
    """The library's GRF prior with the preset (in units of the problem's unknown), or None while that
    class is unavailable."""
    params = ns_grf_params(resolution)
    if input_scale != 1.0:
        params["scale"] /= input_scale
    try:
        from ..priors import GaussianRandomFieldPrior

        return GaussianRandomFieldPrior(shape=(1, resolution, resolution), **params)
    except (ImportError, NotImplementedError, TypeError):
        return None


_NS_SIZES = {
    # t_prior: time units the GRF draw is evolved for before it becomes the truth
    # (the paper's data were evolved 5 units); "small" skips it to stay cheap.
    "small": {"resolution": 32, "subsample": 2, "noise_std": 1.0, "t_prior": 0.0},
    "medium": {"resolution": 64, "subsample": 2, "noise_std": 1.0, "t_prior": 5.0},
    "paper": {"resolution": 128, "subsample": 2, "noise_std": 1.0, "t_prior": 5.0},
}


#: the families of ``make("navier-stokes", family=...)``
NS_FAMILIES = ("grf", "spun-up")
#: time units the spun-up family's GRF draws are evolved (Re 200, 32x32), as its priors' training fields
NS_SPUNUP_TIME = 1.0


@register("navier-stokes")
def make_navier_stokes(
    size: str = "small",
    random_state: Any = 0,
    t_prior: float | None = None,
    family: str = "grf",
    prior: str | None = None,
    **kwargs,
):
    """A Navier-Stokes instance: GRF initial vorticity, optionally evolved, and its noisy final state.

    Parameters
    ----------
    size : {"small", "medium", "paper"}
        ``small``: 32^2, the GRF draw itself is the truth (seconds);
        ``medium``: 64^2 and ``paper``: 128^2, the draw evolved for 5 time
        units first (as the paper's data were made); subsample 2, noise 1.
    random_state : None, int or numpy.random.Generator
        Fixes the truth and the noise.
    t_prior : float, optional
        Overrides how long the GRF draw is evolved before it becomes the truth
        (``family="grf"`` only).
    family : {"grf", "spun-up"}, default "grf"
        ``"grf"``: as above, with the GRF preset as prior.  ``"spun-up"``
        (``size="small"`` only, Re 200): the GRF draw evolved
        :data:`NS_SPUNUP_TIME` = 1 time unit, the family of the shipped
        spun-up priors (``scripts/train_ns_spunup_prior.py``; their training
        fields come from ``default_rng(0)``, never from an instance's
        ``"truth"`` stream); the forward map is the flagship's.
    prior : {"network", "gaussian"}, optional
        ``family="spun-up"`` only (default ``"network"``): the shipped
        network (:func:`~kalmandiff.priors.pretrained.load_ns_spunup_prior`)
        or the best stationary Gaussian of its training fields
        (:func:`~kalmandiff.priors.pretrained.ns_spunup_gaussian_prior`).
        The truth and the data do not depend on it; ``info["prior"]`` names it.
    **kwargs
        Passed to :class:`NavierStokes2D` (override the size's settings).

    Returns
    -------
    ProblemInstance
        ``x_true`` is a NumPy float64 array ``(1, R, R)``; ``prior`` is the
        GRF preset (:func:`ns_grf_params`), or None while that class is
        unavailable; for evolved truths it is only an approximate prior.
        With ``input_scale`` among the keyword arguments, ``x_true`` and the
        prior are in the unknown's units (vorticity / ``input_scale``);
        ``info["grf"]`` stays in vorticity units.  The truth is evolved with
        the problem's ``dealias`` scheme.
    """
    if size not in _NS_SIZES:
        raise ValueError(f"size must be one of {sorted(_NS_SIZES)} (got {size!r}).")
    if family not in NS_FAMILIES:
        raise ValueError(f"family must be one of {NS_FAMILIES} (got {family!r}).")
    if family == "spun-up":
        return _make_ns_spunup(size, random_state, t_prior, "network" if prior is None else prior, kwargs)
    if prior is not None:
        raise ValueError("prior= applies to family='spun-up' (the GRF family's prior is the GRF preset).")
    settings = dict(_NS_SIZES[size])
    default_t_prior = settings.pop("t_prior")
    t_prior = default_t_prior if t_prior is None else _positive(t_prior, "t_prior", allow_zero=True)
    settings.update(kwargs)
    problem = NavierStokes2D(**settings)
    truth, noise = spawn_streams(random_state, "truth", "noise")
    R = problem.resolution
    x0 = sample_ns_grf(1, R, truth)
    if t_prior > 0:
        evolve = NavierStokes2D(
            resolution=R,
            reynolds=problem.reynolds,
            t_final=t_prior,
            subsample=1,
            forcing=problem.forcing_field,
            noise_std=0.0,
            dtype="float64",
            dealias=problem.dealias,
        )
        x0 = evolve.solve(x0)
    x_true = np.ascontiguousarray(x0[0] / problem.input_scale)
    y = problem.observe(x_true, random_state=noise)
    info = {"size": size, "resolution": R, "t_prior": t_prior, "grf": ns_grf_params(R)}
    return ProblemInstance(
        problem=problem, x_true=x_true, y=y, prior=_grf_prior(R, problem.input_scale), info=info
    )


def _make_ns_spunup(size: str, random_state: Any, t_prior, prior: str, kwargs: dict) -> ProblemInstance:
    """The spun-up family: the GRF family's instance evolved 1 time unit, with the shipped priors."""
    if prior not in ("network", "gaussian"):
        raise ValueError(f"prior must be 'network' or 'gaussian' (got {prior!r}).")
    fixed = {"resolution": 32, "reynolds": 200.0, "input_scale": 1.0}
    clash = {k: v for k, v in kwargs.items() if k in fixed and v != fixed[k]}
    if size != "small" or t_prior is not None or clash:
        raise ValueError(
            "family='spun-up' is the priors' training family: size='small', 32x32, Re 200, "
            f"input_scale 1 and t_prior {NS_SPUNUP_TIME:g} (got size={size!r}, t_prior={t_prior!r}, {clash})."
        )
    # the same truth stream, draw and evolution as the GRF family with t_prior = 1
    inst = make_navier_stokes(size, random_state, t_prior=NS_SPUNUP_TIME, family="grf", **kwargs)
    from ..priors.pretrained import load_ns_spunup_prior

    inst.prior = load_ns_spunup_prior() if prior == "network" else _ns_spunup_gaussian_cached()
    inst.info.update(family="spun-up", prior=prior)
    return inst


@functools.lru_cache(maxsize=1)
def _ns_spunup_gaussian_cached():
    """The spun-up family's Gaussian, built once (a 1024 x 1024 eigendecomposition, about a second)."""
    from ..priors.pretrained import ns_spunup_gaussian_prior

    return ns_spunup_gaussian_prior()
