"""Batched L-BFGS pieces: every row of a ``(J, d)`` array is its own optimisation, in any array namespace.

The memory is a ring buffer shared by the rows, ``S`` and ``Y`` ``(k, J, d)`` and ``rho`` ``(k, J)``;
a row that had no usable pair at some iteration holds zeros there (``rho = 0``), which the two-loop
recursion passes over unchanged.  ``gamma`` ``(J,)`` is each row's initial Hessian scale
``s.y / y.y`` from its newest pair, ``has_pair`` whether it has one yet.
"""

from __future__ import annotations

__all__ = ["empty_memory", "push_pair", "two_loop", "backtrack"]


def empty_memory(xp, k: int, X) -> dict:
    """An empty memory of ``k`` pairs for the rows of ``X`` ``(J, d)``."""
    J, d = X.shape
    return {
        "S": xp.zeros((k, J, d), dtype=X.dtype),
        "Y": xp.zeros((k, J, d), dtype=X.dtype),
        "rho": xp.zeros((k, J), dtype=X.dtype),
        "gamma": xp.ones(J, dtype=X.dtype),
        "has_pair": xp.zeros(J, dtype=X.dtype),
    }


def push_pair(xp, memory: dict, s, yv, sy, pair) -> dict:
    """The memory with ``(s, y)`` added for the rows where ``pair`` holds (the oldest slot dropped);
    unchanged (an empty dict) when no row has a pair."""
    if not bool(xp.any(pair)):
        return {}
    keep = pair[:, None]
    zero = xp.zeros_like(s)
    S = xp.concat([memory["S"][1:, ...], xp.where(keep, s, zero)[None, ...]], axis=0)
    Y = xp.concat([memory["Y"][1:, ...], xp.where(keep, yv, zero)[None, ...]], axis=0)
    safe_sy = xp.where(pair, sy, xp.ones_like(sy))
    newest_rho = xp.where(pair, 1.0 / safe_sy, xp.zeros_like(sy))
    rho = xp.concat([memory["rho"][1:, ...], newest_rho[None, ...]], axis=0)
    yy = xp.where(pair, xp.sum(yv * yv, axis=1), xp.ones_like(sy))
    gamma = xp.where(pair, sy / yy, memory["gamma"])
    has = xp.where(pair, xp.ones_like(sy), memory["has_pair"])
    return {"S": S, "Y": Y, "rho": rho, "gamma": gamma, "has_pair": has}


def two_loop(xp, memory: dict, q):
    """``H q`` per row by Nocedal and Wright's two-loop recursion (Algorithm 7.4).

    Before a row has any pair its ``H`` is ``I / max(1, ||q||_inf)``: a first step of at most one
    unit in any coordinate, whatever the units of the gradient.
    """
    S, Y, rho = memory["S"], memory["Y"], memory["rho"]
    k = S.shape[0]
    alphas = []
    for i in range(k - 1, -1, -1):  # newest to oldest
        alpha = rho[i, ...] * xp.sum(S[i, ...] * q, axis=1)
        q = q - alpha[:, None] * Y[i, ...]
        alphas.append(alpha)
    first = 1.0 / xp.clip(xp.max(xp.abs(q), axis=1), 1.0, None)
    r = xp.where(memory["has_pair"] > 0, memory["gamma"], first)[:, None] * q
    for i, alpha in zip(range(k), reversed(alphas)):  # oldest to newest
        beta = rho[i, ...] * xp.sum(Y[i, ...] * r, axis=1)
        r = r + (alpha - beta)[:, None] * S[i, ...]
    return r


def backtrack(xp, t, f, f_new, slope):
    """The next trial step after a rejected step ``t`` ``(J,)``: the minimiser of the quadratic through
    ``f``, the slope and ``f_new`` (Nocedal and Wright, section 3.5), kept in ``[0.1 t, 0.5 t]``;
    half of ``t`` where ``f_new`` is not finite."""
    curv = f_new - f - slope * t
    ok = xp.isfinite(f_new) & (curv > 0)
    quad = -slope * t**2 / (2 * xp.where(ok, curv, xp.ones_like(curv)))
    quad = xp.where(ok, quad, 0.5 * t)
    return xp.clip(quad, 0.1 * t, 0.5 * t)
