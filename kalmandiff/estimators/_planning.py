"""Cost planning: what a configuration will spend, and a configuration that spends a given budget.

:class:`PlannedEvaluations` is what every solver's ``expected_evaluations``
returns: the counts of ``stats_`` that a run will reach, with a flag saying
whether they are exact or an upper bound (a run that may stop early, such as
EKI's data-misfit controller).  :func:`solver_for_budget` searches a solver's
budget parameters (``_BUDGET_PARAMETERS``, most natural first) for the
configuration whose planned forward evaluations come closest to a budget
without exceeding it.
"""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["PlannedEvaluations", "planning_arguments", "solver_for_budget", "BudgetError"]

#: a non-adaptive configuration should spend at least this fraction of its budget
BUDGET_FILL = 0.9


class BudgetError(ValueError):
    """No configuration of a solver fits the forward-evaluation budget."""


class PlannedEvaluations(dict):
    """Planned evaluation counts (a dict with the keys of ``stats_``) and how certain they are.

    Attributes
    ----------
    upper_bound : bool
        True when a run may spend less (it stops early on a criterion that
        depends on the data, e.g. EKI's data-misfit controller): the counts
        are then the most it can spend.
    exact : bool
        True when a run spends exactly these counts (unless a callback stops
        it early).  Neither exact nor an upper bound: the counts depend on the
        problem, which was not given (``expected_evaluations(problem)`` is exact).
    note : str
        Why the counts are not exact (empty when they are).
    """

    def __init__(self, counts, *, upper_bound: bool = False, exact: bool | None = None, note: str = ""):
        super().__init__(counts)
        self.upper_bound = bool(upper_bound)
        self.exact = (not self.upper_bound) if exact is None else bool(exact) and not self.upper_bound
        self.note = str(note)

    @property
    def qualifier(self) -> str:
        """``""`` (exact), ``"up to "`` (an upper bound) or ``"about "`` (depends on the problem)."""
        if self.exact:
            return ""
        return "up to " if self.upper_bound else "about "

    def describe(self, key: str = "n_forward_evals") -> str:
        """One count with its qualifier: ``"up to 256,000"``."""
        return f"{self.qualifier}{int(self.get(key, 0)):,}"

    def __repr__(self) -> str:
        if self.exact:
            return super().__repr__()
        flag = "upper_bound=True" if self.upper_bound else "exact=False"
        return f"PlannedEvaluations({super().__repr__()}, {flag})"

    def __reduce__(self):
        return (_rebuild, (dict(self), self.upper_bound, self.exact, self.note))


def _rebuild(counts, upper_bound, exact, note):
    return PlannedEvaluations(counts, upper_bound=upper_bound, exact=exact, note=note)


def planning_arguments(cls, problem, n_particles):
    """``(problem, n_particles)`` of ``expected_evaluations``, accepting the old call ``(n_particles)``.

    The first argument used to be ``n_particles``; an integer there still
    means it, with a DeprecationWarning.
    """
    from numbers import Integral

    if isinstance(problem, Integral) and not isinstance(problem, bool):
        warnings.warn(
            f"{cls.__name__}.expected_evaluations(n) is deprecated: the first argument is now the problem "
            "(pass n_particles=n as a keyword).",
            DeprecationWarning,
            stacklevel=3,
        )
        if n_particles is not None:
            raise TypeError("expected_evaluations got n_particles twice.")
        return None, int(problem)
    if problem is not None and hasattr(problem, "problem") and hasattr(problem, "x_true"):
        problem = problem.problem  # a kd.problems.make(...) instance
    return problem, n_particles


# --------------------------------------------------------------------------
# a configuration for a budget
# --------------------------------------------------------------------------


def _lower_bound(cls, name: str) -> int:
    """The smallest integer value a parameter's constraints allow (1 when they say nothing)."""
    from ._params import Interval, merged_constraints

    lows = [
        int(c.left) + (c.closed in ("right", "neither"))
        for c in merged_constraints(cls).get(name, [])
        if isinstance(c, Interval) and c.kind == "int" and c.left is not None
    ]
    return min(lows) if lows else 1


class _Planner:
    """Planned forward evaluations of ``cls(prior, **params)`` with some budget parameters changed."""

    def __init__(self, cls, prior, problem, params: dict):
        self.cls, self.prior, self.problem, self.params = cls, prior, problem, dict(params)

    def make(self, **changes):
        return self.cls(self.prior, **{**self.params, **changes})

    def cost(self, **changes) -> int:
        return int(self.make(**changes).expected_evaluations(self.problem)["n_forward_evals"])

    def valid(self, **changes) -> bool:
        try:
            self.make(**changes)._check_parameters()
        except (TypeError, ValueError):
            return False
        return True

    def minimum(self, name: str, **changes) -> int:
        """The smallest valid value of ``name`` that still evaluates the forward model.

        A few above the declared bound where a rule says so (GSG's central
        variant needs two queries; EnKG with one step corrects nothing and
        would ignore the data).
        """
        lo = _lower_bound(self.cls, name)
        spends = self.cost(**changes) > 0
        for value in range(lo, lo + 8):
            trial = {**changes, name: value}
            if self.valid(**trial) and (not spends or self.cost(**trial) > 0):
                return value
        return lo

    def largest(self, name: str, budget: int, lo: int, hi: int | None, **changes) -> int | None:
        """The largest value in ``[lo, hi]`` (``hi=None``: unbounded) whose cost fits ``budget``.

        Costs grow with every budget parameter, so a doubling then a
        bisection finds it; None when even ``lo`` does not fit.
        """
        if self.cost(**changes, **{name: lo}) > budget:
            return None
        if hi is not None and hi <= lo:
            return lo
        if hi is not None and self.cost(**changes, **{name: hi}) <= budget:
            return hi
        good, bad = lo, None
        step = max(lo, 1)
        while bad is None:
            trial = good + step if hi is None else min(good + step, hi)
            if self.cost(**changes, **{name: trial}) <= budget:
                good, step = trial, step * 2
            else:
                bad = trial
        while bad - good > 1:
            mid = (good + bad) // 2
            if self.cost(**changes, **{name: mid}) <= budget:
                good = mid
            else:
                bad = mid
        # the smallest value of the same cost (GSG's central variant spends an odd query nowhere)
        while good > lo and self.cost(**changes, **{name: good - 1}) == self.cost(**changes, **{name: good}):
            good -= 1
        return good


def solver_for_budget(cls, prior, n_forward_evals, problem=None, **params):
    """``cls(prior, **params)`` with its free budget parameters set to spend ``n_forward_evals``.

    The budget parameters are ``cls._BUDGET_PARAMETERS`` in order (e.g.
    ``("n_particles", "n_steps")``); those given in ``params`` stay as given.
    The first free one is set to the largest value whose planned forward
    evaluations fit the budget; when that leaves more than 10% unspent, one
    more of it with the next free parameter lowered below its default is
    tried, and the configuration that spends more is kept.  Where even the
    first one's smallest value does not fit, the next is lowered until it
    does.  A parameter that the cost does not depend on (DiffPIR's chains on
    a problem whose data step is a closed form) keeps its default.

    Raises
    ------
    BudgetError
        When no configuration fits (the message gives the smallest budget).
    """
    budget = int(n_forward_evals)
    if budget < 0:
        raise BudgetError(f"n_forward_evals must be a non-negative int (got {n_forward_evals!r}).")
    planner = _Planner(cls, prior, problem, params)
    knobs = [k for k in getattr(cls, "_BUDGET_PARAMETERS", ("n_particles",)) if k not in params]
    base = planner.make()
    if not knobs or planner.cost() == planner.cost(**_scaled(base, knobs)):
        # nothing to choose, or a cost that none of the free parameters changes
        if planner.cost() > budget:
            raise BudgetError(
                f"{cls.__name__} with {_describe(base, knobs or list(params))} plans {planner.cost():,} forward "
                f"evaluations, over the budget of {budget:,}; leave a budget parameter "
                f"({', '.join(getattr(cls, '_BUDGET_PARAMETERS', ()))}) free for for_budget to choose."
            )
        return base
    first, rest = knobs[0], knobs[1:]
    lo = planner.minimum(first)
    value = planner.largest(first, budget, lo, None)
    if value is None:
        return _lower_the_rest(planner, cls, budget, first, lo, rest)
    choice = {first: value}
    spent = planner.cost(**choice)
    if rest and spent < BUDGET_FILL * budget:
        second = rest[0]
        default = int(getattr(base, second))
        other = planner.largest(
            second, budget, planner.minimum(second, **{first: value + 1}), default, **{first: value + 1}
        )
        if other is not None and planner.cost(**{first: value + 1, second: other}) > spent:
            choice = {first: value + 1, second: other}
    return planner.make(**choice)


def _scaled(solver, knobs) -> dict:
    """Every free budget parameter doubled plus one: a cost that does not move does not depend on them."""
    return {k: 2 * int(getattr(solver, k)) + 1 for k in knobs}


def _lower_the_rest(planner: _Planner, cls, budget: int, first: str, lo: int, rest: list[str]):
    """The first budget parameter at its minimum does not fit: lower the next ones below their defaults."""
    choice = {first: lo}
    for name in rest:
        default = int(getattr(planner.make(**choice), name))
        value = planner.largest(name, budget, planner.minimum(name, **choice), default, **choice)
        if value is not None:
            choice[name] = value
            return planner.make(**choice)
        choice[name] = planner.minimum(name, **choice)
    smallest = planner.cost(**choice)
    raise BudgetError(
        f"{cls.__name__} needs at least {smallest:,} forward evaluations "
        f"({', '.join(f'{k}={v}' for k, v in choice.items())}); the budget is {budget:,}."
    )


def _describe(solver, names) -> str:
    return ", ".join(f"{k}={getattr(solver, k)!r}" for k in names) or "its parameters"


def budget_parameters(solver) -> dict[str, Any]:
    """The budget parameters of a solver and their values (what ``for_budget`` may choose)."""
    return {k: getattr(solver, k) for k in getattr(type(solver), "_BUDGET_PARAMETERS", ("n_particles",))}
