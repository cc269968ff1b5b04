"""Forward problems: batched maps ``(J, *x_shape) -> (J, *y_shape)`` that double as test fixtures."""

from . import _fixtures  # noqa: F401  (registers the problem instances of make())
from ._base import CallableProblem, ForwardProblem, as_problem
from ._fixtures import (
    crescent_prior,
    default_prior,
    digits_gaussian_prior,
    fitted_gaussian_prior,
    smooth_image_prior,
)
from ._geometry import Geometry, grid_geometry, grid_positions
from ._registry import ProblemInstance, available, lookup_keys, make, register
from .black_box import BlackBox
from .digits import digit_images, digits_split
from .imaging import GaussianDeblur, ImageProblem, Inpainting, SuperResolution, smooth_test_image
from .interferometry import ClosurePhaseInterferometry, blur_circular, crescent_image
from .linear import LinearOperatorProblem, LinearProblem
from .navier_stokes import NavierStokes2D, ns_grf_params, sample_ns_grf
from .phase_retrieval import PhaseRetrieval

__all__ = [
    "ForwardProblem",
    "CallableProblem",
    "as_problem",
    "Geometry",
    "grid_geometry",
    "grid_positions",
    "BlackBox",
    "ProblemInstance",
    "available",
    "lookup_keys",
    "make",
    "register",
    "LinearOperatorProblem",
    "LinearProblem",
    "ImageProblem",
    "Inpainting",
    "SuperResolution",
    "GaussianDeblur",
    "smooth_test_image",
    "PhaseRetrieval",
    "NavierStokes2D",
    "ns_grf_params",
    "sample_ns_grf",
    "ClosurePhaseInterferometry",
    "blur_circular",
    "crescent_image",
    "smooth_image_prior",
    "crescent_prior",
    "digits_gaussian_prior",
    "digit_images",
    "digits_split",
    "fitted_gaussian_prior",
    "default_prior",
]
