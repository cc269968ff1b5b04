"""Test fixtures and checks for code built on kalmandiff: your solver, prior or forward model.

Exact-posterior cases
    :class:`PosteriorCase`, :func:`gaussian_case`, :func:`mixture_case`,
    :func:`grf_case` (a Gaussian random field with a local observation),
    :func:`posterior_case`, :func:`posterior_cases`, :func:`posterior_scores`,
    :func:`random_linear_gaussian_case` (random shapes, scales, conditionings).
Registered problems at test size
    :func:`problem_instance`, :data:`TEST_PROBLEM_SETTINGS`.
Forward models that fail on purpose
    :class:`FailingForward`, :func:`failing_problem` (raise, NaN, hang).
Checks
    :func:`check_solver` (the solver contract and an accuracy check, each
    check reported by name), :func:`solver_checks`,
    :func:`parametrize_with_checks` (for ``pytest.mark.parametrize``),
    :func:`solver_factory`, :func:`check_prior`, :func:`check_forward`.

A pytest plugin (:mod:`kalmandiff.testing.plugin`, registered as an entry
point) offers the fixtures ``kd_problem`` and ``kd_posterior_case``.
"""

from ._cases import (
    TEST_PROBLEM_SETTINGS,
    PosteriorCase,
    gaussian_case,
    grf_case,
    mixture_case,
    posterior_case,
    posterior_cases,
    posterior_scores,
    problem_instance,
    random_spd,
)
from ._checks import (
    CheckReport,
    SkipCheck,
    check_solver,
    parametrize_with_checks,
    solver_checks,
    solver_factory,
)
from ._failing import FailingForward, failing_problem
from ._model_checks import check_forward, check_prior
from ._random_cases import random_linear_gaussian_case

__all__ = [
    "PosteriorCase",
    "gaussian_case",
    "mixture_case",
    "grf_case",
    "posterior_case",
    "posterior_cases",
    "posterior_scores",
    "random_spd",
    "random_linear_gaussian_case",
    "TEST_PROBLEM_SETTINGS",
    "problem_instance",
    "FailingForward",
    "failing_problem",
    "CheckReport",
    "SkipCheck",
    "check_solver",
    "solver_checks",
    "parametrize_with_checks",
    "solver_factory",
    "check_prior",
    "check_forward",
]
