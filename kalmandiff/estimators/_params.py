"""Declarative parameter constraints, after scikit-learn's ``_param_constraints``.

A solver class lists ``_param_constraints = {name: [constraint, ...]}``
(named apart from scikit-learn's ``_parameter_constraints``, whose
``_validate_params`` would read it with other constraint types);
a value is valid when it satisfies any one of its constraints.  The
constraints of a class and its bases are merged (the subclass wins), and
:func:`check_parameters` checks them all at ``fit`` with one message
format: ``"<name> must be <what> (got <value>)."``.  A constraint is an
:class:`Interval`, an :class:`Options` set, ``None`` (the value None is
allowed) or ``callable`` (any callable).  scikit-learn's own
``sklearn.utils._param_validation`` is private, so it is not imported.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Interval",
    "Options",
    "check_parameters",
    "merged_constraints",
    "solver_parameters",
    "POSITIVE",
    "NON_NEGATIVE",
    "POSITIVE_INT",
    "FRACTION",
    "EDM_SCHEDULE",
]

#: Class decorator: the annotated class attributes of a solver are its parameters.  It writes the
#: store-only, keyword-only ``__init__`` that scikit-learn's ``get_params`` reads (a dataclass
#: without generated ``__eq__`` / ``__repr__``; BaseEstimator's repr is kept), so a solver
#: declares each parameter once, with its default, and inherits the common ones.
solver_parameters = dataclass(eq=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Interval:
    """Numbers of one kind in an interval.

    Parameters
    ----------
    kind : {"int", "real"}
        ``"int"``: integers (not bool); ``"real"``: finite real numbers
        (integers included, not bool).
    left, right : float or None
        Bounds; None is unbounded.
    closed : {"both", "left", "right", "neither"}
    """

    kind: str
    left: float | None
    right: float | None
    closed: str = "both"

    def __post_init__(self):
        if self.kind not in ("int", "real") or self.closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"bad Interval({self.kind!r}, ..., closed={self.closed!r})")

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind == "int":
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real) or not math.isfinite(value):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        what = "an int" if self.kind == "int" else "a finite number"
        if self.left is None and self.right is None:
            return what
        if self.right is None:
            return f"{what} {'>=' if self.closed in ('both', 'left') else '>'} {self.left:g}"
        if self.left is None:
            return f"{what} {'<=' if self.closed in ('both', 'right') else '<'} {self.right:g}"
        lo = "[" if self.closed in ("both", "left") else "("
        hi = "]" if self.closed in ("both", "right") else ")"
        return f"{what} in {lo}{self.left:g}, {self.right:g}{hi}"


class Options:
    """One of a fixed set of values (strings, typically)."""

    def __init__(self, *values):
        self.values = tuple(values)

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.values

    def __str__(self) -> str:
        return f"one of {self.values}"


#: the common constraints, by name
POSITIVE = Interval("real", 0, None, closed="neither")
NON_NEGATIVE = Interval("real", 0, None)
POSITIVE_INT = Interval("int", 1, None)
FRACTION = Interval("real", 0, 1, closed="left")
#: the EDM noise schedule's parameters (EnKG, DiffPIR, RMP)
EDM_SCHEDULE = {"sigma_min": [POSITIVE], "sigma_max": [POSITIVE], "rho": [POSITIVE]}


def _satisfied(constraint, value) -> bool:
    if constraint is None:
        return value is None
    if constraint is callable:
        return callable(value)
    return constraint.is_satisfied_by(value)


def _describe(constraint) -> str:
    if constraint is None:
        return "None"
    if constraint is callable:
        return "a callable"
    return str(constraint)


def merged_constraints(cls) -> dict[str, list]:
    """``_param_constraints`` of ``cls`` and its bases (the most derived class wins)."""
    out: dict[str, list] = {}
    for klass in reversed(cls.__mro__):
        out.update(getattr(klass, "__dict__", {}).get("_param_constraints", {}))
    return out


def check_parameters(estimator) -> None:
    """Raise ``ValueError`` for the first parameter that satisfies none of its constraints."""
    params = estimator.get_params(deep=False)
    for name, allowed in merged_constraints(type(estimator)).items():
        if name not in params:
            continue
        value = params[name]
        if not any(_satisfied(c, value) for c in allowed):
            what = " or ".join(_describe(c) for c in allowed)
            raise ValueError(f"{name} must be {what} (got {value!r}).")
