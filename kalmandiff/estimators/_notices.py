"""What a run says about its cost before it starts: the CostWarning and the progress bar's label.

Both read a solver's planned evaluations (``expected_evaluations``) and,
where one was taken, a timed probe of its forward model and denoiser
(:class:`~kalmandiff.estimators._cost.CostProbe`).
"""

from __future__ import annotations

import warnings

from .._config import CostWarning, get_config
from ._cost import format_seconds

__all__ = ["cost_warning_stops", "is_costly", "warn_if_costly", "progress_label"]


def short_count(n) -> str:
    """``1234567 -> '1.23M'``: evaluation counts for a progress bar's label."""
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"


def cost_warning_stops() -> bool:
    """Whether the warnings filters turn a :class:`~kalmandiff.CostWarning` into an error.

    Then the run stops at the warning, and it must stop before any forward
    evaluation, so the timed probe (which calls the forward model) is skipped.
    The first filter whose category matches decides, as in :mod:`warnings`
    (message and module patterns are not consulted).
    """
    for action, _message, category, _module, _lineno in warnings.filters:
        if issubclass(CostWarning, category):
            return action == "error"
    return warnings.defaultaction == "error"


def is_costly(planned: dict | None) -> bool:
    """Whether ``planned`` exceeds ``kd.get_config()["max_forward_evals"]``."""
    limit = get_config()["max_forward_evals"]
    return planned is not None and limit is not None and int(planned.get("n_forward_evals", 0)) > limit


def qualifier(planned, solver) -> str:
    """``"up to "`` for an upper bound, ``"about "`` for a plan that depends on the problem, else ``""``."""
    word = getattr(planned, "qualifier", None)
    if word is not None:
        return word
    return "up to " if solver._planned_is_bound() else ""


def warn_if_costly(solver, planned: dict | None, cost=None, stacklevel: int = 2) -> None:
    """A :class:`~kalmandiff.CostWarning` before a run that plans more forward evaluations than allowed.

    ``cost`` (a :class:`~kalmandiff.estimators._cost.CostProbe`) adds the
    estimated wall time; ``stacklevel`` counts from the caller.
    """
    if not is_costly(planned):
        return
    limit = get_config()["max_forward_evals"]
    name, n_fwd = type(solver).__name__, int(planned.get("n_forward_evals", 0))
    seconds = "" if cost is None else f", {cost.describe(planned)} on this machine (timed probe)"
    warnings.warn(
        f"{name} plans {qualifier(planned, solver)}{n_fwd:,} forward evaluations "
        f"({int(planned.get('n_sequential_forward_evals', 0)):,} sequential) and "
        f"{int(planned.get('n_denoiser_evals', 0)):,} denoiser evaluations{seconds}, more than "
        f"max_forward_evals={limit:,.0f}. Lower {' / '.join(solver._BUDGET_PARAMETERS)} (see "
        f"expected_evaluations(); {name}.for_budget(prior, n_forward_evals) chooses them "
        "for a budget), or raise the limit with kd.set_config(max_forward_evals=...) (None: never warn).",
        CostWarning,
        stacklevel=stacklevel + 1,
    )


def progress_label(solver, planned: dict | None, cost=None) -> str:
    """The progress bar's description: the solver, its planned evaluations and (probed) time."""
    name = type(solver).__name__.removesuffix("Solver")
    if planned is None:
        return name
    eta = "" if cost is None else f", ~{format_seconds(cost.seconds(planned)[0])}"
    return (
        f"{name} [{qualifier(planned, solver)}{short_count(planned.get('n_forward_evals', 0))} forward, "
        f"{short_count(planned.get('n_denoiser_evals', 0))} denoiser evals planned{eta}]"
    )
