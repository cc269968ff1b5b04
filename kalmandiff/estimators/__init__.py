"""Solvers behind one ``fit(y, forward)`` / ``reconstruct()`` interface."""

from ._base import BaseSolver, MemberFailureError, NotFittedError
from .eki import EKISolver
from .enkg import EnKGSolver

__all__ = ["BaseSolver", "EnKGSolver", "EKISolver", "MemberFailureError", "NotFittedError"]
