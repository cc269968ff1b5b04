"""Forward problems: batched maps ``(J, *x_shape) -> (J, *y_shape)`` that double as test fixtures."""

from ._base import CallableProblem, ForwardProblem, as_problem
from ._registry import ProblemInstance, available, make, register
from .imaging import GaussianDeblur, Inpainting, SuperResolution
from .interferometry import ClosurePhaseInterferometry
from .linear import LinearProblem
from .navier_stokes import NavierStokes2D
from .phase_retrieval import PhaseRetrieval

__all__ = [
    "ForwardProblem",
    "CallableProblem",
    "as_problem",
    "ProblemInstance",
    "available",
    "make",
    "register",
    "LinearProblem",
    "Inpainting",
    "SuperResolution",
    "GaussianDeblur",
    "PhaseRetrieval",
    "NavierStokes2D",
    "ClosurePhaseInterferometry",
]
