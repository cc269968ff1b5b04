"""kalmandiff: inverse problems with diffusion-model priors and black-box forward models.

>>> import kalmandiff as kd
>>> solver = kd.EnKGSolver(prior, n_particles=256)          # doctest: +SKIP
>>> x_hat = solver.fit(y, problem).reconstruct()            # doctest: +SKIP
"""

from . import diagnostics, diffusion, metrics, plotting, priors, problems
from ._config import CostWarning, DivergenceWarning, config_context, get_config, set_config
from .compare import ComparisonTable, compare, plot_comparison
from .estimators import SOLVER_CLASSES, MemberFailureError, NotFittedError
from .io import export_results, load

__version__ = "0.1.0.dev0"

# The solver classes (EnKGSolver, EKISolver, ...) come from the solver registry.
globals().update(SOLVER_CLASSES)

__all__ = [
    *SOLVER_CLASSES,
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
