"""Solvers behind one ``fit(y, forward)`` / ``reconstruct()`` interface.

The built-in solvers are imported by name below; every other public
module of this package is imported too, so that a new solver module
registers itself (:func:`register_solver`) by existing: the command line,
:func:`kalmandiff.compare`, the contract tests and the documentation tables
all read the registry.  A module whose import fails raises here (an
optional dependency of one solver is that solver's own business, handled
inside its module).  ``tests/test_solver_registry.py`` checks that the
solver names exported here and at the top level are exactly the registered
ones, so a registered solver that is not exported fails loudly.
"""

import pkgutil
from importlib import import_module

from ._base import BaseSolver, FitContext, NotFittedError
from ._checkpoint import RESUME_POLICIES
from ._cost import CostProbe, probe_costs
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
from ._protocol import Fitted, ForwardRequest, MemberFailureError, SafePoint, VJPRequest
from ._recorder import HISTORY_KEYS, STATS_KEYS
from ._registry import (
    SolverSpec,
    available_solvers,
    derivative_free_solvers,
    register_solver,
    registered_solvers,
)
from .diffpir import DiffPIRSolver
from .dpg import DPGSolver
from .dps import DPSSolver
from .eki import EKISolver
from .enkg import EnKGSolver
from .gsg import GSGSolver, gaussian_smoothing_gradient
from .localization import GaspariCohnTaper, SamplingErrorCorrection, gaspari_cohn
from .map import MAPSolver
from .rmp import RMPSolver
from .scg import SCGSolver


def _import_every_public_module() -> None:
    """Import the public modules not named above (a new solver file registers itself this way)."""
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            import_module(f".{module.name}", __name__)


_import_every_public_module()

#: the registered solver classes, by class name, in listing order (the built-ins and any new
#: solver module of this package)
SOLVER_CLASSES = {spec.cls.__name__: spec.cls for spec in registered_solvers()}


def __getattr__(name: str):
    """A registered solver not imported above, by class name (PEP 562).

    The built-in solvers are imported explicitly so that IDEs and type
    checkers see them; a new solver module is usable as
    ``kalmandiff.estimators.NewSolver`` (and ``kalmandiff.NewSolver``) as
    soon as its file exists, without editing this file.
    """
    cls = SOLVER_CLASSES.get(name)
    if cls is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return cls


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
    "Fitted",
    "HISTORY_KEYS",
    "STATS_KEYS",
    "CostProbe",
    "probe_costs",
    "EnKGSolver",
    "EKISolver",
    "DPGSolver",
    "SCGSolver",
    "GSGSolver",
    "DPSSolver",
    "DiffPIRSolver",
    "RMPSolver",
    "MAPSolver",
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
