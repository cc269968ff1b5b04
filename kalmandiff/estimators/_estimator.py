"""The scikit-learn estimator contract, without importing scikit-learn.

``sklearn.base`` takes most of a second to import (it pulls in SciPy's
statistics and pandas), which every ``import kalmandiff`` and every command
line error would pay.  The solvers need only the small part of it that
the estimator contract defines, written here after scikit-learn's
``BaseEstimator`` (https://scikit-learn.org/stable/developers/develop.html):

* the parameters are the arguments of ``__init__`` (no ``*args``), each
  stored under its own name;
* ``get_params(deep=True)`` returns them (``deep`` adds ``<name>__<sub>``
  for a parameter that has ``get_params`` itself), ``set_params(**params)``
  sets them (nested names included) and returns the estimator;
* the repr names the parameters that differ from their defaults.

``sklearn.base.clone`` works on any object with ``__sklearn_clone__``, and
:class:`~kalmandiff.estimators.BaseSolver` defines one that shares the prior
instead of deep-copying a score network, so ``clone``, grid searches over
``get_params`` and ``kalmandiff.testing``'s scikit-learn checks keep working.
A solver is not an instance of ``sklearn.base.BaseEstimator`` (DESIGN.md
promises the contract, not the base class).

:class:`NotFittedError` subclasses ``ValueError`` and ``AttributeError``
like scikit-learn's.  When scikit-learn is already imported at the moment
one is raised, the instance raised is also a
``sklearn.exceptions.NotFittedError``, so ``except
sklearn.exceptions.NotFittedError`` (which needs scikit-learn imported to
be written) catches it too; ``except kalmandiff.NotFittedError`` always does.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

__all__ = ["BaseEstimator", "NotFittedError", "check_is_fitted"]

#: a repr longer than this keeps its head and tail around an ellipsis (scikit-learn: 700)
_MAX_REPR = 700


class NotFittedError(ValueError, AttributeError):
    """A fitted attribute was asked of a solver before ``fit`` (or ``start``).

    Subclasses ``ValueError`` and ``AttributeError``, like
    ``sklearn.exceptions.NotFittedError``.  If scikit-learn is imported when
    the error is raised, the object raised is an instance of both classes
    (a private subclass of this one and of scikit-learn's); kalmandiff does
    not import scikit-learn itself just to raise it.
    """

    def __new__(cls, *args, **kwargs):
        if cls is NotFittedError and "sklearn.exceptions" in sys.modules:
            cls = _sklearn_compatible()
        return super().__new__(cls, *args, **kwargs)


def _sklearn_compatible() -> type:
    """``NotFittedError`` that is also scikit-learn's (built once, on first need)."""
    compat = globals().get("_SklearnNotFittedError")
    if compat is None:
        from sklearn.exceptions import NotFittedError as SklearnNotFittedError

        compat = type(
            "_SklearnNotFittedError",
            (NotFittedError, SklearnNotFittedError),
            {"__module__": __name__, "__doc__": NotFittedError.__doc__},
        )
        globals()["_SklearnNotFittedError"] = compat
    return compat


def __getattr__(name: str):
    # unpickling a raised error in a fresh process finds its class here
    if name == "_SklearnNotFittedError":
        return _sklearn_compatible()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_is_fitted(estimator, attributes) -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has all of ``attributes``.

    Parameters
    ----------
    estimator : object
    attributes : str or sequence of str
        Fitted attribute names (``"particles_"``).
    """
    names = [attributes] if isinstance(attributes, str) else list(attributes)
    if not all(hasattr(estimator, name) for name in names):
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            "appropriate arguments before using this estimator."
        )


class BaseEstimator:
    """Parameters from the ``__init__`` signature: ``get_params``, ``set_params`` and the repr.

    The scikit-learn estimator contract (see the module docstring) for a
    class whose ``__init__`` only stores its arguments under their names.
    """

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The parameter names, sorted (as scikit-learn's ``get_params`` orders them)."""
        return sorted(cls._init_parameters())

    @classmethod
    def _init_parameters(cls) -> dict[str, inspect.Parameter]:
        init = cls.__init__
        if init is object.__init__:
            return {}
        params = {}
        for p in inspect.signature(init).parameters.values():
            if p.name == "self" or p.kind is p.VAR_KEYWORD:
                continue
            if p.kind is p.VAR_POSITIONAL:
                raise RuntimeError(
                    f"{cls.__name__}.__init__ takes *{p.name}: an estimator's parameters must be "
                    "named in its signature (no varargs)."
                )
            params[p.name] = p
        return params

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The estimator's parameters.

        Parameters
        ----------
        deep : bool
            Also list the parameters of parameters that are estimators
            themselves, as ``<name>__<parameter>``.

        Returns
        -------
        dict
            Parameter name -> value (the stored object, not a copy).
        """
        out: dict[str, Any] = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params) -> BaseEstimator:
        """Set parameters (``name=value``, or ``name__sub=value`` for a parameter's own).

        Values are stored as given and checked at ``fit``.

        Returns
        -------
        self
        """
        if not params:
            return self
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, delim, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {self._get_param_names()!r}."
                )
            if delim:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
                valid[name] = value
        for name, sub_params in nested.items():
            valid[name].set_params(**sub_params)
        return self

    def _changed_params(self) -> dict[str, Any]:
        """Parameters whose value differs from the ``__init__`` default, in signature order."""
        out = {}
        for name, p in self._init_parameters().items():
            value = getattr(self, name)
            default = p.default
            if default is p.empty or (value is not default and _safe_repr(value) != _safe_repr(default)):
                out[name] = value
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_safe_repr(v)}" for k, v in self._changed_params().items())
        text = f"{type(self).__name__}({args})"
        if len(text) > _MAX_REPR:
            half = _MAX_REPR // 2
            text = f"{text[:half]}...{text[-half:]}"
        return text

    def _repr_html_(self) -> str:
        """A notebook's view: the class and a table of the parameters set away from their defaults."""
        import html

        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(_safe_repr(v))}</code></td></tr>"
            for k, v in self._changed_params().items()
        )
        table = f"<table>{rows}</table>" if rows else "<p>(all parameters at their defaults)</p>"
        return f"<div><strong>{html.escape(type(self).__name__)}</strong>{table}</div>"


def _safe_repr(value) -> str:
    try:
        return repr(value)
    except Exception:  # a broken repr of one parameter must not break the estimator's
        return f"<{type(value).__name__} object>"
