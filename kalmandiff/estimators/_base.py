"""The base class of every solver: parameters, validation, reconstruct and the planning hooks.

A solver is a scikit-learn style estimator (DESIGN.md, principle 5):
``__init__`` stores parameters, ``fit(y, forward)`` runs and returns
``self``, fitted state ends in ``_``.  The numerical loop of each solver
lives in its own module as a step generator (:mod:`._protocol`); the
framework around it lives in one room per idea: the observation
(:mod:`._observation`), the failure policy (:mod:`._failures`), the
recorder (:mod:`._recorder`), the run's set-up (:mod:`._setup`) and the
driver (:mod:`._driver`: ``fit``, ask/tell, checkpoints), which
:class:`BaseSolver` inherits.
"""

from __future__ import annotations

import warnings
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

from .._backend import check_device, get_namespace, move_like
from ._context import FitContext
from ._driver import RunDriver
from ._estimator import BaseEstimator, NotFittedError, check_is_fitted
from ._failures import FAILURE_POLICIES
from ._notices import progress_label, warn_if_costly
from ._params import FRACTION, POSITIVE_INT, Interval, Options, check_parameters
from ._protocol import ForwardRequest, MemberFailureError, SafePoint, VJPRequest
from ._recorder import HISTORY_KEYS

__all__ = [
    "BaseSolver",
    "FitContext",
    "HISTORY_KEYS",
    "ForwardRequest",
    "VJPRequest",
    "SafePoint",
    "MemberFailureError",
    "NotFittedError",
]


@dataclass(eq=False, repr=False)
class BaseSolver(RunDriver, BaseEstimator):
    """Base class of kalmandiff solvers.

    Subclasses, decorated with :func:`~kalmandiff.estimators._params.solver_parameters`,
    declare their parameters as annotated class attributes (the common ones
    below are inherited; redeclaring one changes its default), their
    ``_param_constraints`` (and ``_check_more`` for cross-parameter rules)
    and the step generator ``_iterate(ctx, state)`` (see :meth:`_iterate`);
    a solver module registers its class with
    :func:`~kalmandiff.estimators.register_solver`, which also states
    whether it differentiates the forward model (``_derivative_free``).
    """

    prior: Any = None
    _: KW_ONLY
    n_particles: int = 2
    forward_batch_size: int | None = None
    on_failure: str = "raise"
    nan_tolerance: float = 0.0
    device: str | None = None
    random_state: Any = None
    verbose: Any = "auto"
    callbacks: list | None = None

    #: whether the solver only calls the forward model (set by ``register_solver`` for each solver)
    _derivative_free = True
    #: constructor settings per registered problem name (or family), from the reference scripts
    _FAMILY_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    # -- per-problem defaults ------------------------------------------------
    @classmethod
    def defaults_for(cls, problem_family: str) -> dict[str, Any]:
        """Constructor settings of the reference scripts for a problem.

        Parameters
        ----------
        problem_family : str
            A registered problem name (``kd.problems.available()``:
            ``"navier-stokes"``, ``"interferometry"``, ``"inpainting"``, ...),
            one of its other names (``"ns"``, ``"black-hole"``) or a family
            (``"images"``: FFHQ restoration); resolved by
            :func:`kalmandiff.problems.lookup_keys`, most specific first.

        Returns
        -------
        dict
            Keyword arguments, e.g. ``EnKGSolver(prior, **EnKGSolver.defaults_for("navier-stokes"))``.
        """
        from ..problems._registry import lookup_keys

        for key in lookup_keys(problem_family):
            if key in cls._FAMILY_DEFAULTS:
                return dict(cls._FAMILY_DEFAULTS[key])
        raise ValueError(
            f"problem_family must be one of {sorted(cls._FAMILY_DEFAULTS)} or another name of one "
            f"(got {problem_family!r})."
        )

    def __sklearn_clone__(self):
        # sklearn's clone deep-copies non-estimator parameters, which would
        # duplicate a score network (and its GPU memory); share it instead.
        return type(self)(**self.get_params(deep=False))

    def save(self, path):
        """Write this solver (parameters, prior, particles, stats, history) to ``path``.

        Read it back with :func:`kalmandiff.load`; see :mod:`kalmandiff.io`.
        """
        from ..io import save

        return save(self, path)

    def _iterate(self, ctx: FitContext, state: dict | None):  # pragma: no cover - abstract
        """The solver's loop as a generator: its update rule and schedule (override).

        It yields :class:`ForwardRequest` objects and receives
        ``(G (J, m), failed mask)`` in return; a gradient-based solver
        follows a ``ForwardRequest(X, vjp=True)`` with a
        :class:`VJPRequest` at the same ``X`` and receives
        ``J_G(X)^T cotangent`` (``(J, *x_shape)``); it yields
        :class:`SafePoint` objects at the start of each step, where its
        whole state can be saved (checkpoints are written there); it
        returns the final particles, or a :class:`~kalmandiff.estimators.Fitted`
        with the particles and the run's further fitted attributes (the
        driver sets them all, in one place).  Answers come in the namespace of
        the request's ``X``, from ``fit`` (:meth:`FitContext.evaluate`) or
        from the user (:meth:`tell`) alike.  ``state`` is a saved SafePoint state to resume from
        (``{"final": particles}`` once the run had finished).  The
        framework evaluates, applies the failure policy
        (``ctx.failures.update``), counts, times, records and checkpoints.
        """
        raise NotImplementedError
        yield

    def reconstruct(self, return_std: bool = False):
        """Point estimate: the ensemble mean, in the namespace and device of ``y``.

        Parameters
        ----------
        return_std : bool
            Also return the ensemble standard deviation (same shape), a
            measure of the spread that :attr:`particles_` carry.

        Returns
        -------
        x_hat : array of shape ``x_shape``
        x_std : array of shape ``x_shape`` (only if ``return_std``)

        Warns
        -----
        UserWarning
            With ``return_std=True`` on a one-particle ensemble (SCG's
            default ``n_particles=1``): its standard deviation is exactly 0
            and measures no uncertainty.
        """
        check_is_fitted(self, "particles_")
        X = self.particles_
        xp = get_namespace(X)
        mean = move_like(xp.mean(X, axis=0), self._y_like)
        if not return_std:
            return mean
        if X.shape[0] == 1:
            warnings.warn(
                f"{type(self).__name__} ran one particle, so reconstruct(return_std=True) returns a standard "
                "deviation of exactly 0: it measures no uncertainty. Fit with n_particles >= 2 for a spread "
                "(each particle is an independent run of the same cost).",
                UserWarning,
                stacklevel=2,
            )
        return mean, move_like(xp.std(X, axis=0), self._y_like)

    # -- set-up --------------------------------------------------------------
    #: declarative constraints of the common parameters (see :mod:`._params`); solvers add theirs
    _param_constraints = {
        "n_particles": [Interval("int", 2, None)],
        "on_failure": [Options(*FAILURE_POLICIES)],
        "nan_tolerance": [FRACTION],
        "batch_size": [None, POSITIVE_INT],
        "forward_batch_size": [None, POSITIVE_INT],
    }

    def _check_parameters(self) -> None:
        """Check every parameter against the declared constraints, then the cross-parameter rules."""
        check_parameters(self)
        check_device(self.device)
        if self.callbacks is not None and not all(callable(c) for c in self.callbacks):
            raise ValueError("callbacks must be a list of callables taking a per-step record.")
        self._check_more()

    def _check_more(self) -> None:
        """Rules that involve several parameters or other objects (override; call super)."""

    # -- cost planning ---------------------------------------------------------
    #: the parameters ``for_budget`` may choose, most natural first (the forward evaluations grow with each)
    _BUDGET_PARAMETERS: ClassVar[tuple[str, ...]] = ("n_particles",)
    #: old parameter name -> new name (still accepted, with a DeprecationWarning)
    _RENAMED_PARAMETERS: ClassVar[dict[str, str]] = {}
    #: what this solver has in place of another solver's budget parameter (by
    #: :data:`~kalmandiff.estimators._params.PARAMETER_CONCEPTS`), for the unknown-parameter error
    _EQUIVALENT_PARAMETERS: ClassVar[dict[str, str]] = {
        "steps": "its number of noise levels is n_steps",
        "updates": "it makes one data step per noise level (n_steps sets how many)",
        "queries": "it has no per-step query budget (n_particles sets how many members are evaluated)",
    }

    def expected_evaluations(self, problem=None, *, n_particles: int | None = None, **options):
        """The evaluations a run of this configuration makes, by formula, before any compute.

        Parameters
        ----------
        problem : ForwardProblem or callable, optional
            The forward model the run will use.  Given it, the counts are
            exact (or an upper bound, flagged, where the run stops on a
            data-dependent criterion); without it a solver whose cost depends
            on the problem (DiffPIR: a linear problem's closed-form data step
            makes no forward evaluations) plans for a nonlinear one and says
            so (``exact`` False).  A ``kd.problems.make`` instance works too.
        n_particles : int, optional
            Count for this many particles instead of ``n_particles``.
        **options
            Solver-specific (DiffPIR's ``data_step``).

        Returns
        -------
        PlannedEvaluations
            A dict with ``n_denoiser_evals``, ``n_sequential_denoiser_evals``,
            ``n_forward_evals``, ``n_sequential_forward_evals``,
            ``n_forward_vjps`` and ``n_denoiser_vjps`` (the keys of
            ``stats_`` that a run reaches: totals over particles, and
            sequential calls), and ``upper_bound`` / ``exact`` / ``note``
            saying how certain they are.
        """
        from ._planning import PlannedEvaluations, planning_arguments

        problem, n_particles = planning_arguments(type(self), problem, n_particles)
        J = int(self.n_particles if n_particles is None else n_particles)
        counts = self._planned_counts(problem, J, **options)
        upper, exact, note = self._plan_certainty(problem, **options)
        return PlannedEvaluations(counts, upper_bound=upper, exact=exact, note=note)

    def _planned_counts(self, problem, n_particles: int) -> dict[str, int]:  # pragma: no cover - abstract
        """The counts of :meth:`expected_evaluations` for ``n_particles`` particles (override)."""
        raise NotImplementedError(f"{type(self).__name__} does not plan its evaluations.")

    def _plan_certainty(self, problem) -> tuple[bool, bool, str]:
        """``(upper_bound, exact, note)`` of the plan for ``problem`` (override; default exact)."""
        upper = self._planned_is_bound()
        return upper, not upper, ""

    @classmethod
    def for_budget(cls, prior, n_forward_evals: int, *, problem=None, **params):
        """A solver whose planned forward evaluations fit ``n_forward_evals``, for comparisons at equal cost.

        The parameters in ``cls._BUDGET_PARAMETERS`` that ``params`` leaves
        free are chosen (the first one as large as the budget allows; the
        next one lowered below its default only where the first at its
        smallest does not fit, or where that fills the budget better); the
        rest are ``params`` and the defaults.  A non-adaptive solver then
        spends the budget to within 10% below it wherever one step of its
        budget parameters is under a tenth of the budget; an adaptive one
        (EKI's data-misfit controller) spends at most the budget.

        Parameters
        ----------
        prior : Prior
        n_forward_evals : int
            The budget: forward-model evaluations, as ``stats_["n_forward_evals"]`` counts them.
        problem : ForwardProblem or callable, optional
            The forward model (DiffPIR's cost depends on it; see :meth:`expected_evaluations`).
        **params
            Other constructor parameters; budget parameters given here are kept.

        Returns
        -------
        solver
            Unfitted; ``solver.expected_evaluations(problem)["n_forward_evals"] <= n_forward_evals``.

        Raises
        ------
        kalmandiff.estimators.BudgetError
            A ValueError when no configuration fits (it names the smallest budget that does).
        """
        from ._planning import solver_for_budget

        return solver_for_budget(cls, prior, n_forward_evals, problem=problem, **params)

    def set_params(self, **params):
        """Set parameters, as scikit-learn's ``set_params``; old names work with a DeprecationWarning."""
        from ._params import resolve_parameter_names

        known = set(self._get_param_names())
        if not known.issuperset(k.partition("__")[0] for k in params):
            top = {k: v for k, v in params.items() if "__" not in k}
            nested = {k: v for k, v in params.items() if "__" in k}
            params = {**resolve_parameter_names(type(self), top, known), **nested}
        return super().set_params(**params)

    def _planned_evaluations(self, problem=None) -> dict | None:
        """``expected_evaluations(problem)``, or None where a configuration cannot be costed in advance."""
        try:
            return self.expected_evaluations(problem)
        except TypeError:  # a solver written outside the package, with the old signature
            try:
                return self.expected_evaluations()
            except (AttributeError, NotImplementedError, TypeError, ValueError):
                return None
        except (AttributeError, NotImplementedError, ValueError):
            return None

    def _warn_if_costly(self, planned: dict | None, cost=None) -> None:
        """A :class:`~kalmandiff.CostWarning` if ``planned`` exceeds ``max_forward_evals`` (:mod:`._notices`)."""
        warn_if_costly(self, planned, cost, stacklevel=2)

    def _progress_label(self, planned: dict | None, cost=None) -> str:
        """The progress bar's description (:func:`~kalmandiff.estimators._notices.progress_label`)."""
        return progress_label(self, planned, cost)

    def _planned_is_bound(self) -> bool:
        """Whether ``expected_evaluations()`` is an upper bound (a run may stop earlier) rather than exact."""
        return False

    def _progress_weights(self) -> list[int] | None:
        """Progress units per recorded step where steps differ in cost (None: one unit per step)."""
        return None

    def _differentiates_forward(self, problem) -> bool:
        """Whether this run takes gradients of ``problem`` (as registered; DiffPIR decides per problem)."""
        return not type(self)._derivative_free

    def _n_progress_steps(self) -> int | None:
        return getattr(self, "n_steps", None)

    # -- helpers for subclasses ---------------------------------------------
    @staticmethod
    def _flat(X):
        xp = get_namespace(X)
        return xp.reshape(X, (X.shape[0], -1))
