"""The registered problem instances: each family's ``make`` factory, with a truth and a prior.

The factories live here, beside the registry (:mod:`._registry`), so that the
forward-model modules import no priors: a factory may attach a prior
(:class:`~kalmandiff.priors.GaussianPrior` for the linear-Gaussian case, the
Gaussian-random-field preset for Navier-Stokes); a forward model never needs one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import spawn_streams
from ..priors.gaussian import GaussianPrior
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

__all__: list[str] = []


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


def _instance(problem, truth_rng, noise_rng, size, name) -> ProblemInstance:
    x_true = smooth_test_image(problem.x_shape, truth_rng)
    y = problem.observe(x_true, random_state=noise_rng)
    return ProblemInstance(problem, x_true, y, prior=None, info={"size": size, "name": name})


@register("inpainting")
def make_inpainting(size: str = "small", random_state: Any = 0, **kwargs) -> ProblemInstance:
    """Box inpainting of a :func:`smooth_test_image`; sizes (1, 32, 32), (1, 64, 64), (3, 256, 256).

    ``kwargs`` go to :class:`Inpainting` (``shape`` overrides the size).
    The box, truth and noise are drawn from ``random_state``; no prior is attached.
    """
    shape = _image_shape(size, kwargs)
    setting, truth, noise = spawn_streams(random_state, "setting", "truth", "noise")
    kwargs.setdefault("random_state", setting)
    return _instance(Inpainting(shape, **kwargs), truth, noise, size, "inpainting")


@register("super-resolution")
def make_super_resolution(size: str = "small", random_state: Any = 0, **kwargs) -> ProblemInstance:
    """4x bicubic super-resolution of a :func:`smooth_test_image` (``kwargs`` go to :class:`SuperResolution`)."""
    shape = _image_shape(size, kwargs)
    truth, noise = spawn_streams(random_state, "truth", "noise")
    return _instance(SuperResolution(shape, **kwargs), truth, noise, size, "super-resolution")


_DEBLUR_KERNELS = {"small": (13, 1.5), "medium": (25, 3.0), "paper": (61, 3.0)}


@register("deblur")
def make_deblur(size: str = "small", random_state: Any = 0, **kwargs) -> ProblemInstance:
    """Gaussian deblurring of a :func:`smooth_test_image`.

    Kernels (size, std): small (13, 1.5), medium (25, 3.0) (the paper's
    kernel without its zero border), paper (61, 3.0).  ``kwargs`` go to
    :class:`GaussianDeblur`.
    """
    shape = _image_shape(size, kwargs)
    kernel_size, kernel_std = _DEBLUR_KERNELS[size]
    kwargs.setdefault("kernel_size", kernel_size)
    kwargs.setdefault("kernel_std", kernel_std)
    truth, noise = spawn_streams(random_state, "truth", "noise")
    return _instance(GaussianDeblur(shape, **kwargs), truth, noise, size, "deblur")


# --------------------------------------------------------------------------
# phase retrieval
# --------------------------------------------------------------------------


@register("phase-retrieval")
def make_phase_retrieval(size: str = "small", random_state: Any = 0, **kwargs) -> ProblemInstance:
    """Phase retrieval of a :func:`~kalmandiff.problems.imaging.smooth_test_image`.

    Sizes (1, 32, 32), (1, 64, 64), (3, 256, 256); ``kwargs`` go to
    :class:`PhaseRetrieval` (``shape`` overrides the size).  No prior is attached.
    """
    if size not in _IMAGE_SIZES:
        raise ValueError(f"size must be one of {sorted(_IMAGE_SIZES)} (got {size!r}).")
    shape = _check_image_shape(kwargs.pop("shape", _IMAGE_SIZES[size]))
    truth, noise = spawn_streams(random_state, "truth", "noise")
    return _instance(PhaseRetrieval(shape, **kwargs), truth, noise, size, "phase-retrieval")


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
    """
    if size not in _INTERFEROMETRY_SIZES:
        raise ValueError(f"size must be one of {', '.join(_INTERFEROMETRY_SIZES)} (got {size!r}).")
    truth, noise = spawn_streams(random_state, "truth", "noise")
    settings = {**_INTERFEROMETRY_SIZES[size], **kwargs}
    problem = ClosurePhaseInterferometry(**settings)
    u = truth.random(4)
    shape = {
        "diameter_uas": float(38.0 + 4.0 * u[0]),
        "width_uas": float(5.0 + 2.0 * u[1]),
        "asymmetry": float(0.4 + 0.3 * u[2]),
        "position_angle_deg": float(150.0 + 60.0 * u[3]),
    }
    x_true = crescent_image(problem.npix, problem.fov_uas, flux_jy=0.6, **shape)
    y = problem.observe(x_true, random_state=noise)
    info = {"size": size, **settings, **shape, "flux_jy": 0.6}
    return ProblemInstance(problem=problem, x_true=x_true, y=y, prior=None, info=info)


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


@register("navier-stokes")
def make_navier_stokes(size: str = "small", random_state: Any = 0, t_prior: float | None = None, **kwargs):
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
        Overrides how long the GRF draw is evolved before it becomes the truth.
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
