"""The step protocol: what a solver's generator yields, and what it returns.

A solver's ``_iterate(ctx, state)`` is a generator.  It yields
:class:`ForwardRequest` (forward values needed), :class:`VJPRequest`
(a vector-Jacobian product needed) and :class:`SafePoint` (its whole state,
where a checkpoint may be written), and returns the final particles, or a
:class:`Fitted` holding them with the other fitted attributes of the run.
The driver (:mod:`._driver`) answers the requests under ``fit`` and hands
them to the user under ask/tell.  This module imports nothing of the
package, so every other one may import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["ForwardRequest", "VJPRequest", "SafePoint", "Fitted", "MemberFailureError"]


class MemberFailureError(RuntimeError):
    """Forward evaluations failed for some ensemble members under ``on_failure="raise"``.

    Attributes
    ----------
    members : list of int
        Indices of the failed members.
    """

    def __init__(self, message: str, members: list[int]):
        super().__init__(message)
        self.members = members


@dataclass
class ForwardRequest:
    """Yielded by a solver's step generator: forward values of ``X`` are needed.

    Attributes
    ----------
    X : array ``(J, *x_shape)``
        The inputs, in any supported namespace (a solver that works in torch
        sends torch tensors).
    vjp : bool, default False
        True when a :class:`VJPRequest` at this same ``X`` follows (so that
        ``fit`` keeps what it needs to answer it: the autograd graph of the
        forward evaluation, or nothing for a linear operator's adjoint).

    The generator receives ``(G, failed)``: ``G`` the forward values
    flattened to ``(J, m)`` in the namespace (and dtype) of ``X``, ``failed``
    a NumPy bool mask ``(J,)`` of failed members (see
    :class:`~kalmandiff.estimators._evaluation.ForwardEvaluator`).
    """

    X: Any
    vjp: bool = False


class VJPRequest(NamedTuple):
    """A vector-Jacobian product of the forward model is needed: ``J_G(X)^T cotangent``.

    Yielded by a gradient-based solver's step generator right after the
    :class:`ForwardRequest` of the same ``X`` (with ``vjp=True``), and
    returned by :meth:`BaseSolver.ask` under ask/tell, so a black-box model
    that can differentiate itself (an adjoint solver, ``jax.vjp``, torch
    autograd) can answer it.

    A named pair, so ``X, V = request`` works.

    Attributes
    ----------
    X : array ``(J, *x_shape)``
        The inputs of the forward evaluation just answered.
    cotangent : array ``(J, *y_shape)``
        One cotangent per member, ``V_j = dL/dG(x_j)`` for the solver's loss ``L``.

    The answer is ``(J, *x_shape)``: row ``j`` is ``J_G(x_j)^T V_j``
    (``A^T V_j`` for a linear ``G(x) = A x``), in the namespace of ``X``.
    Rows of members whose forward value failed may hold anything (they
    are not used).
    """

    X: Any
    cotangent: Any


@dataclass
class SafePoint:
    """Yielded where the solver's whole state is ``state``; ``index`` counts steps/iterations."""

    index: int
    state: dict


@dataclass
class Fitted:
    """What a solver's generator returns when the run has more to report than its particles.

    Attributes
    ----------
    particles : array ``(J, *x_shape)``
        The final ensemble (``particles_``).
    attributes : dict
        Further fitted attributes, by name (each ends in ``_``, or starts
        with ``_`` for private state); the driver sets them on the solver
        beside ``particles_``, the one place fitted state is set.
    """

    particles: Any
    attributes: dict = field(default_factory=dict)
