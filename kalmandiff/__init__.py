"""kalmandiff: inverse problems with diffusion-model priors and black-box forward models.

>>> import kalmandiff as kd
>>> solver = kd.EnKGSolver(prior, n_particles=256)          # doctest: +SKIP
>>> x_hat = solver.fit(y, problem).reconstruct()            # doctest: +SKIP
"""

from . import diagnostics, diffusion, metrics, plotting, priors, problems
from ._config import CostWarning, DivergenceWarning, config_context, get_config, set_config
from ._version import __version__
from .compare import ComparisonTable, compare, plot_comparison
from .estimators import SOLVER_CLASSES as _SOLVER_CLASSES
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


def __getattr__(name: str):
    """A registered solver not imported above (a new solver module), by class name (PEP 562)."""
    cls = _SOLVER_CLASSES.get(name)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls


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
