"""kalmandiff: inverse problems with diffusion-model priors and black-box forward models.

>>> import kalmandiff as kd
>>> solver = kd.EnKGSolver(prior, n_particles=256)          # doctest: +SKIP
>>> x_hat = solver.fit(y, problem).reconstruct()            # doctest: +SKIP
"""

from . import diagnostics, diffusion, metrics, plotting, priors, problems
from ._config import CostWarning, DivergenceWarning, config_context, get_config, set_config
from ._version import __version__
from .compare import ComparisonTable, compare, plot_comparison
from .estimators import (
    DiffPIRSolver,
    DPGSolver,
    DPSSolver,
    EKISolver,
    EnKGSolver,
    GSGSolver,
    MAPSolver,
    MemberFailureError,
    NotFittedError,
    RMPSolver,
    SCGSolver,
)
from .io import export_results, load

__all__ = [
    "EnKGSolver",
    "EKISolver",
    "DPGSolver",
    "SCGSolver",
    "GSGSolver",
    "DPSSolver",
    "DiffPIRSolver",
    "RMPSolver",
    "MAPSolver",
    "compare",
    "plot_comparison",
    "ComparisonTable",
    "MemberFailureError",
    "CostWarning",
    "DivergenceWarning",
    "set_config",
    "get_config",
    "config_context",
    "NotFittedError",
    "load",
    "export_results",
    "plotting",
    "diagnostics",
    "diffusion",
    "metrics",
    "priors",
    "problems",
    "__version__",
]
