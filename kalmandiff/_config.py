"""Package-wide settings: :func:`set_config`, :func:`get_config`, :func:`config_context`.

Only one setting so far, ``max_forward_evals``: a solver whose planned forward
evaluations (:meth:`expected_evaluations`) exceed it warns with a
:class:`CostWarning` before it starts, so that a run costing days of
simulator time is never a surprise.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

__all__ = ["CostWarning", "DivergenceWarning", "set_config", "get_config", "config_context"]

_DEFAULTS: dict[str, Any] = {"max_forward_evals": 1_000_000}
_CONFIG: dict[str, Any] = dict(_DEFAULTS)


class CostWarning(UserWarning):
    """A run plans more forward evaluations than ``kd.get_config()["max_forward_evals"]``."""


class DivergenceWarning(RuntimeWarning):
    """A run ended with non-finite particles, or with a data misfit far above where it started."""


def _check_max_forward_evals(value: Any) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"max_forward_evals must be a number or None (got {value!r}).") from None
    if math.isnan(value) or value < 0:
        raise ValueError(f"max_forward_evals must be >= 0 or None (got {value!r}).")
    return value


def get_config() -> dict[str, Any]:
    """The current settings, as a new dict.

    Returns
    -------
    dict
        ``max_forward_evals`` : float or None
            A solver warns (:class:`CostWarning`) before a run whose planned
            forward evaluations exceed it; None never warns.  Default 1e6.
    """
    return dict(_CONFIG)


def set_config(max_forward_evals: Any = ...) -> None:
    """Change package-wide settings (those not given stay as they are).

    Parameters
    ----------
    max_forward_evals : float or None, default 1e6
        Warn (:class:`CostWarning`) before a run whose planned forward
        evaluations (``solver.expected_evaluations()["n_forward_evals"]``)
        exceed this; ``None`` switches the warning off.  To turn the warning
        into an error, use ``warnings.simplefilter("error", kd.CostWarning)``.

    Examples
    --------
    >>> import kalmandiff as kd
    >>> kd.set_config(max_forward_evals=5e4)   # a slow simulator: warn above 50,000 calls
    >>> kd.get_config()["max_forward_evals"]
    50000.0
    >>> kd.set_config(max_forward_evals=1e6)
    """
    if max_forward_evals is not ...:
        _CONFIG["max_forward_evals"] = _check_max_forward_evals(max_forward_evals)


@contextlib.contextmanager
def config_context(**settings: Any) -> Iterator[None]:
    """Settings for the duration of a ``with`` block (the previous ones are restored).

    Parameters
    ----------
    **settings
        As for :func:`set_config`.
    """
    old = get_config()
    try:
        set_config(**settings)
        yield
    finally:
        _CONFIG.clear()
        _CONFIG.update(old)
