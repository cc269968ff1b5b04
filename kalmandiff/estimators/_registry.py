"""The one list of solvers: everything that enumerates solvers derives from it.

A solver module registers its class with :func:`register_solver`; the
package imports every public module of :mod:`kalmandiff.estimators`, so a
new solver is one module plus its registration.  ``__all__`` of the
package, :func:`available_solvers` (and with it the command line and
:func:`kalmandiff.compare` reports), the list of derivative-free solvers
that the gradient-based ones name in their errors, the contract tests and
the API page (checked by a test) all read this registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "SolverSpec",
    "register_solver",
    "unregister_solver",
    "registered_solvers",
    "available_solvers",
    "derivative_free_solvers",
]


@dataclass(frozen=True)
class SolverSpec:
    """One registered solver.

    Attributes
    ----------
    name : str
        Short name, as the command line and reports use it (``"enkg"``).
    cls : type
        The solver class.
    derivative_free : bool
        True when the solver only calls the forward model; False when it
        differentiates it (torch autograd).
    rank : int
        Position in listings (lower first; ties by name).
    quick : dict
        Constructor settings (besides ``prior``, ``n_particles`` and
        ``random_state``) for a run of seconds on a small problem: what the
        contract tests and smoke checks use.
    """

    name: str
    cls: type
    derivative_free: bool
    rank: int = 100
    quick: dict = field(default_factory=dict)


_REGISTRY: dict[str, SolverSpec] = {}


def register_solver(name: str, *, derivative_free: bool, rank: int = 100, quick: dict | None = None):
    """Class decorator: register a solver under the short ``name``.

    Parameters
    ----------
    name : str
        Short name (lower case, unique).
    derivative_free : bool
        Whether the solver only calls the forward model.
    rank : int, default 100
        Position in listings; the built-in solvers use 0-70.
    quick : dict, optional
        Settings for a seconds-long run (see :class:`SolverSpec`).
    """

    def decorator(cls):
        if name in _REGISTRY and _REGISTRY[name].cls.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"a solver named {name!r} is already registered ({_REGISTRY[name].cls.__name__})."
            )
        from ._base import fill_docstring

        fill_docstring(cls)
        _REGISTRY[name] = SolverSpec(name, cls, bool(derivative_free), int(rank), dict(quick or {}))
        cls._solver_name = name
        return cls

    return decorator


def unregister_solver(name: str) -> None:
    """Remove a registration (for tests that register a toy solver)."""
    _REGISTRY.pop(name, None)


def registered_solvers(derivative_free: bool | None = None) -> list[SolverSpec]:
    """The registered solvers in listing order; optionally only the (non-)derivative-free ones."""
    specs = sorted(_REGISTRY.values(), key=lambda s: (s.rank, s.name))
    if derivative_free is not None:
        specs = [s for s in specs if s.derivative_free == derivative_free]
    return specs


def available_solvers(derivative_free: bool | None = None) -> dict:
    """``{short name: solver class}`` for every solver this installation provides.

    Parameters
    ----------
    derivative_free : bool, optional
        Only the solvers that do (True) or do not (False) need gradients of
        the forward model.
    """
    return {s.name: s.cls for s in registered_solvers(derivative_free)}


def is_derivative_free(cls) -> bool:
    """Whether a solver class only calls the forward model (as registered for it or its nearest
    registered base class; True when there is none)."""
    registered = {spec.cls: spec.derivative_free for spec in _REGISTRY.values()}
    return next((registered[k] for k in cls.__mro__ if k in registered), True)


def derivative_free_solvers() -> tuple[str, ...]:
    """Class names of the solvers that only call the forward model."""
    return tuple(s.cls.__name__ for s in registered_solvers(derivative_free=True))
