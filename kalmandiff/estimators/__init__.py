"""Solvers behind one ``fit(y, forward)`` / ``reconstruct()`` interface."""

from importlib import import_module

from ._base import BaseSolver, MemberFailureError, NotFittedError
from .diffpir import DiffPIRSolver
from .dpg import DPGSolver
from .dps import DPSSolver
from .eki import EKISolver
from .enkg import EnKGSolver
from .gsg import GSGSolver, gaussian_smoothing_gradient
from .localization import GaspariCohnTaper, gaspari_cohn
from .rmp import RMPSolver
from .scg import SCGSolver

__all__ = [
    "BaseSolver",
    "EnKGSolver",
    "EKISolver",
    "DPSSolver",
    "GSGSolver",
    "DPGSolver",
    "SCGSolver",
    "DiffPIRSolver",
    "RMPSolver",
    "gaussian_smoothing_gradient",
    "GaspariCohnTaper",
    "gaspari_cohn",
    "MemberFailureError",
    "NotFittedError",
    "available_solvers",
]

# Short names (as the command line and kd.compare reports use them) -> (module, class).
_SOLVERS = {
    "enkg": ("enkg", "EnKGSolver"),
    "eki": ("eki", "EKISolver"),
    "dpg": ("dpg", "DPGSolver"),
    "scg": ("scg", "SCGSolver"),
    "gsg": ("gsg", "GSGSolver"),
    "dps": ("dps", "DPSSolver"),
    "diffpir": ("diffpir", "DiffPIRSolver"),
    "rmp": ("rmp", "RMPSolver"),
}


def available_solvers() -> dict:
    """``{short name: solver class}`` for every solver this installation provides."""
    out = {}
    for name, (module, cls) in _SOLVERS.items():
        try:
            out[name] = getattr(import_module(f".{module}", __name__), cls)
        except (ImportError, AttributeError):
            continue
    return out
