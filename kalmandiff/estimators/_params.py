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

import difflib
import functools
import inspect
import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Interval",
    "Options",
    "check_parameters",
    "merged_constraints",
    "solver_parameters",
    "resolve_parameter_names",
    "unknown_parameter_message",
    "UnknownParameterError",
    "POSITIVE",
    "NON_NEGATIVE",
    "POSITIVE_INT",
    "FRACTION",
    "EDM_SCHEDULE",
]


def solver_parameters(cls):
    """Class decorator: the annotated class attributes of a solver are its parameters.

    It writes the store-only, keyword-only ``__init__`` that scikit-learn's
    ``get_params`` reads (a dataclass without generated ``__eq__`` /
    ``__repr__``; BaseEstimator's repr is kept), so a solver declares each
    parameter once, with its default, and inherits the common ones.  The
    ``__init__`` also accepts the deprecated names of
    ``_RENAMED_PARAMETERS`` (with a DeprecationWarning) and answers a
    parameter the solver lacks with a TypeError naming its equivalent
    (:func:`resolve_parameter_names`).
    """
    cls = dataclass(eq=False, repr=False, kw_only=True)(cls)
    cls.__init__ = _checked_init(cls.__init__)
    return cls


def _checked_init(init):
    names = frozenset(inspect.signature(init).parameters) - {"self"}

    @functools.wraps(init)  # inspect.signature (and so get_params) still sees the dataclass's signature
    def __init__(self, *args, **kwargs):
        if not names.issuperset(kwargs):
            kwargs = resolve_parameter_names(type(self), kwargs, names)
        init(self, *args, **kwargs)

    return __init__


def _merged_class_dict(cls, attribute: str) -> dict:
    """A dict class attribute merged over the MRO (the most derived class wins)."""
    out: dict = {}
    for klass in reversed(cls.__mro__):
        out.update(getattr(klass, "__dict__", {}).get(attribute, {}))
    return out


class UnknownParameterError(TypeError, ValueError):
    """A parameter a solver does not have: a TypeError from the constructor (as Python's own), and a
    ValueError from ``set_params`` (as scikit-learn's)."""


def resolve_parameter_names(cls, kwargs: dict, known) -> dict:
    """Map deprecated parameter names to their new ones; a TypeError for a name ``cls`` lacks.

    Parameters
    ----------
    cls : type
        The solver class being constructed.
    kwargs : dict
        The keyword arguments given.
    known : set of str
        The parameter names of ``cls``.

    Returns
    -------
    dict
        ``kwargs`` with every deprecated name replaced by its new one.
    """
    renamed = _merged_class_dict(cls, "_RENAMED_PARAMETERS")
    out = dict(kwargs)
    for name in kwargs:
        if name in known:
            continue
        new = renamed.get(name)
        if new is None:
            raise UnknownParameterError(unknown_parameter_message(cls, name, known))
        if new in kwargs:
            raise UnknownParameterError(
                f"{cls.__name__} got both {name}= and {new}=; {name} is the old name of {new}."
            )
        warnings.warn(
            f"{cls.__name__}({name}=...) is now {new}=..., the name every solver uses for the same budget.",
            DeprecationWarning,
            stacklevel=3,
        )
        out[new] = out.pop(name)
    return out


#: what a budget parameter of one solver means, by name: the key of ``_EQUIVALENT_PARAMETERS``
PARAMETER_CONCEPTS = {
    "n_steps": "steps",
    "max_iter": "steps",
    "n_updates": "updates",
    "n_inner": "updates",
    "n_queries": "queries",
    "n_samples": "queries",
    "n_candidates": "queries",
}


def unknown_parameter_message(cls, name: str, known) -> str:
    """The error for ``cls(name=...)`` when ``cls`` has no such parameter: what it has instead."""
    head = f"{cls.__name__} has no parameter {name!r}"
    concept = PARAMETER_CONCEPTS.get(name)
    equivalent = _merged_class_dict(cls, "_EQUIVALENT_PARAMETERS").get(concept) if concept else None
    if equivalent:
        head = f"{cls.__name__} has no {name}; {equivalent}"
    else:
        owners = _solvers_with_parameter(name)
        close = difflib.get_close_matches(name, sorted(known), n=3)
        if close:
            head += f"; did you mean {' or '.join(close)}?"
        elif owners:
            head += f" (it is a parameter of {', '.join(owners)})"
    return f"{head}{'' if head.endswith('?') else '.'} Its parameters: {', '.join(sorted(known))}."


def _solvers_with_parameter(name: str) -> list[str]:
    from ._registry import registered_solvers

    out = []
    for spec in registered_solvers():
        if name in inspect.signature(spec.cls.__init__).parameters:
            out.append(spec.cls.__name__)
    return out


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
