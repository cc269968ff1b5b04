"""Solvers behind one ``fit(y, forward)`` / ``reconstruct()`` interface.

Every public module of this package is imported here; a solver module
registers its class with :func:`register_solver`, and the solver names of
``__all__`` (here and at the top level), :func:`available_solvers`, the
command line and the derivative-free list all derive from that registry.
"""

import pkgutil
from importlib import import_module

from ._base import (
    HISTORY_KEYS,
    BaseSolver,
    FitContext,
    ForwardRequest,
    MemberFailureError,
    NotFittedError,
    SafePoint,
    VJPRequest,
)
from ._checkpoint import RESUME_POLICIES
from ._cost import CostProbe, probe_costs
from ._evaluation import STATS_KEYS
from ._params import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    Interval,
    Options,
    solver_parameters,
)
from ._planning import BudgetError, PlannedEvaluations
from ._registry import (
    SolverSpec,
    available_solvers,
    derivative_free_solvers,
    register_solver,
    registered_solvers,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        try:
            import_module(f".{_module.name}", __name__)
        except ImportError:  # pragma: no cover - an optional dependency of one solver is missing
            continue

from .gsg import gaussian_smoothing_gradient  # noqa: E402
from .localization import GaspariCohnTaper, SamplingErrorCorrection, gaspari_cohn  # noqa: E402

#: the registered solver classes, by class name (``EnKGSolver``, ...)
SOLVER_CLASSES = {spec.cls.__name__: spec.cls for spec in registered_solvers()}
globals().update(SOLVER_CLASSES)

__all__ = [
    "BaseSolver",
    "FitContext",
    "solver_parameters",
    "Interval",
    "Options",
    "POSITIVE",
    "NON_NEGATIVE",
    "POSITIVE_INT",
    "FRACTION",
    "RESUME_POLICIES",
    "ForwardRequest",
    "VJPRequest",
    "SafePoint",
    "HISTORY_KEYS",
    "STATS_KEYS",
    "CostProbe",
    "probe_costs",
    *SOLVER_CLASSES,
    "gaussian_smoothing_gradient",
    "GaspariCohnTaper",
    "SamplingErrorCorrection",
    "gaspari_cohn",
    "MemberFailureError",
    "NotFittedError",
    "BudgetError",
    "PlannedEvaluations",
    "SolverSpec",
    "available_solvers",
    "derivative_free_solvers",
    "register_solver",
    "registered_solvers",
]
