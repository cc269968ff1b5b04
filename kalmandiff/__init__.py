"""kalmandiff: inverse problems with diffusion-model priors and black-box forward models.

>>> import kalmandiff as kd
>>> solver = kd.EnKGSolver(prior, n_particles=256)          # doctest: +SKIP
>>> x_hat = solver.fit(y, problem).reconstruct()            # doctest: +SKIP
"""

from . import diffusion, metrics, plotting, priors, problems
from .compare import ComparisonTable, compare, plot_comparison
from .estimators import (
    DiffPIRSolver,
    DPGSolver,
    DPSSolver,
    EKISolver,
    EnKGSolver,
    GSGSolver,
    MemberFailureError,
    NotFittedError,
    RMPSolver,
    SCGSolver,
)
from .io import export_results, load

__version__ = "0.1.0.dev0"

__all__ = [
    "EnKGSolver",
    "EKISolver",
    "DPSSolver",
    "GSGSolver",
    "DPGSolver",
    "SCGSolver",
    "DiffPIRSolver",
    "RMPSolver",
    "compare",
    "plot_comparison",
    "ComparisonTable",
    "MemberFailureError",
    "NotFittedError",
    "load",
    "export_results",
    "plotting",
    "diffusion",
    "metrics",
    "priors",
    "problems",
    "__version__",
]
