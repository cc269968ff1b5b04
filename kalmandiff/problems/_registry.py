"""A registry of ready-made problem instances, for tests, demos and benchmarks.

Each problem family registers a factory with :func:`register`;
:func:`make` builds an instance with a ground truth and an observation, as
deepinv's test factories do, so ``kd.problems.make("navier-stokes")`` can
be a pytest fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProblemInstance", "register", "make", "available", "lookup_keys"]

_FACTORIES: dict[str, Callable[..., ProblemInstance]] = {}

#: other names users and the reference scripts give the registered problems
_ALIASES = {
    "ns": "navier-stokes",
    "navier_stokes": "navier-stokes",
    "black-hole": "interferometry",
    "blackhole": "interferometry",
    "black_hole": "interferometry",
    "image": "images",
    "ffhq": "images",
}
#: problems that share the reference settings of a family (FFHQ restoration: "images")
_FAMILIES = {"inpainting": "images", "super-resolution": "images", "deblur": "images"}


@dataclass
class ProblemInstance:
    """A forward problem with a ground truth and one noisy observation.

    Attributes
    ----------
    problem : ForwardProblem
    x_true : array of shape ``problem.x_shape``
    y : array of shape ``problem.y_shape``
        ``problem.observe(x_true, random_state)``.
    prior : Prior or None
        A prior that matches how ``x_true`` was drawn.  Every built-in
        problem has one (exact for linear-Gaussian and Navier-Stokes "small";
        the shipped digits network for 16x16 digit phase retrieval and
        inpainting, the default there; a Gaussian fitted to the family's
        images for the other image problems, for ``prior="gaussian"`` and for
        interferometry); None only for a third-party factory that supplies none.
    info : dict
        Free-form settings (sizes, seeds) for reports.
    """

    problem: Any
    x_true: Any
    y: Any
    prior: Any = None
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        """A one-line summary: the problem, the arrays' shapes and the prior (never whole arrays)."""

        def shape(a):
            return tuple(getattr(a, "shape", ()))

        prior = "None" if self.prior is None else type(self.prior).__name__
        settings = ", ".join(f"{k}={v!r}" for k, v in self.info.items() if isinstance(v, (str, int, float)))
        return (
            f"ProblemInstance(problem={type(self.problem).__name__}, x_true: {shape(self.x_true)}, "
            f"y: {shape(self.y)}, prior={prior}" + (f", {settings}" if settings else "") + ")"
        )


def register(name: str) -> Callable:
    """Decorator: register ``factory(size="small", random_state=0, **kwargs)`` under ``name``."""

    def decorator(factory: Callable) -> Callable:
        _FACTORIES[name] = factory
        return factory

    return decorator


def available() -> list[str]:
    """Names accepted by :func:`make`."""
    return sorted(_FACTORIES)


def make(name: str, size: str = "small", random_state: Any = 0, **kwargs) -> ProblemInstance:
    """Build a registered problem instance.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    size : str
        ``"small"`` (seconds, for tests), ``"medium"`` (CPU benchmarks) or
        ``"paper"`` (the paper's sizes), where the family defines them.
    random_state : None, int or numpy.random.Generator
        Seeds the ground truth, the observation noise and any random setting,
        each from its own stream (``"truth"``, ``"noise"``, ``"setting"``):
        the same integer given to a solver draws independently of all three.
        A Generator spawns one independent child per stream.
    **kwargs
        Passed to the problem's factory: the image problems take ``family``
        (``"digits"`` or ``"smooth"``) and ``prior`` (``"network"`` or
        ``"gaussian"``), Navier-Stokes takes ``family`` (``"grf"`` or
        ``"spun-up"``) and, for ``"spun-up"``, ``prior``; the rest go to the
        problem's constructor (override the size's defaults).
    """
    if name not in _FACTORIES:
        raise ValueError(f"unknown problem {name!r}; available: {', '.join(available())}.")
    return _FACTORIES[name](size=size, random_state=random_state, **kwargs)


def lookup_keys(name: str) -> tuple[str, ...]:
    """Keys under which settings for problem ``name`` are filed, most specific first.

    The registered problem name (aliases such as ``"ns"`` or ``"black-hole"``
    resolved), then its family (``"images"`` for the FFHQ restoration
    problems).  Solvers key their reference settings by these names.
    """
    key = str(name).lower()
    key = _ALIASES.get(key, key)
    family = _FAMILIES.get(key)
    return (key,) if family is None else (key, family)
