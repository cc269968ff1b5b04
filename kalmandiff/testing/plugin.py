"""pytest plugin: fixtures for testing code built on kalmandiff.

Registered through the ``pytest11`` entry point, so it is active wherever
kalmandiff is installed.  It only defines fixtures (all prefixed ``kd_``),
imports kalmandiff only when one of them is used, and adds no options,
hooks or markers: harmless for test suites that do not use it.

Fixtures
--------
kd_problem
    A :class:`~kalmandiff.problems.ProblemInstance` of a registered problem
    at test size (:func:`kalmandiff.testing.problem_instance`), by default
    ``"linear-gaussian"``.  Choose it with indirect parametrisation:
    ``@pytest.mark.parametrize("kd_problem", ["navier-stokes"], indirect=True)``;
    a parameter may also be a dict ``{"name": ..., **settings}``.
kd_posterior_case
    A :class:`~kalmandiff.testing.PosteriorCase` with the exact posterior
    mean and standard deviation, by default ``"gaussian"``; parametrise
    indirectly with ``"gaussian"``, ``"mixture"``, ``"grf"`` or a dict
    ``{"name": ..., **builder arguments}``.
kd_problem_names
    The names of all registered problems (for ``parametrize``, use
    :func:`kalmandiff.problems.available` at collection time instead).
"""

from __future__ import annotations

import pytest


def _name_and_settings(request, default: str) -> tuple[str, dict]:
    param = getattr(request, "param", default)
    if isinstance(param, dict):
        settings = dict(param)
        return settings.pop("name", default), settings
    return str(param), {}


@pytest.fixture
def kd_problem(request):
    """A registered problem at test size (a ``ProblemInstance``); parametrise indirectly by name."""
    from kalmandiff.testing import problem_instance

    name, settings = _name_and_settings(request, "linear-gaussian")
    return problem_instance(name, **settings)


@pytest.fixture
def kd_posterior_case(request):
    """An exact-posterior case (a ``PosteriorCase``); parametrise indirectly by name."""
    from kalmandiff.testing import posterior_case

    name, settings = _name_and_settings(request, "gaussian")
    return posterior_case(name, **settings)


@pytest.fixture(scope="session")
def kd_problem_names():
    """Names of the registered problems."""
    from kalmandiff.problems import available

    return available()
