"""Forward models that fail on purpose, for tests of the member-failure policies."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["FailingForward", "failing_problem"]

_MODES = ("raise", "nan", "hang")


class FailingForward:
    """A linear forward model ``x -> A @ x.ravel()`` that fails for some members on purpose.

    Whether a member fails is a deterministic function of its first entry
    (``(|x_0| * 1e4) mod 1 < fraction``), so the same particles fail on every
    run and the failures do not depend on the order of evaluation.

    Parameters
    ----------
    A : array of shape ``(m, d)``
        The forward matrix.
    mode : {"raise", "nan", "hang"}
        ``"raise"``: a failing member raises ``RuntimeError("solver
        diverged")``; ``"nan"``: its output is NaN; ``"hang"``: the
        ``hang_call``-th call (counted over all members, from 1) blocks
        for ``hang_s`` seconds or until :meth:`release`, longer than any
        sensible timeout (the others succeed).
    fraction : float, default 0.2
        Fraction of failing members (``"raise"`` and ``"nan"``).
    hang_call : int, default 1
        ``"hang"`` only: which call hangs.
    hang_s : float, default 10.0
        ``"hang"`` only: how long it hangs at most.

    Notes
    -----
    Called on one sample (``(*x_shape)``) it is a per-member black box for
    :class:`kalmandiff.problems.BlackBox`; called on a batch (the ``"nan"``
    mode, through :meth:`batch`) it uses array-API operations only, so torch
    autograd can follow it and gradient-based solvers can be tested too.
    """

    def __init__(
        self, A: Any, mode: str = "raise", fraction: float = 0.2, hang_call: int = 1, hang_s: float = 10.0
    ):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES} (got {mode!r}).")
        self.A = np.asarray(A, dtype=float)
        self.mode = mode
        self.fraction = float(fraction)
        self.hang_call = int(hang_call)
        self.hang_s = float(hang_s)
        self.n_calls = 0
        self._lock = threading.Lock()
        self._release = threading.Event()

    def fails(self, x: Any) -> bool:
        """Whether member ``x`` (one sample) fails (``"raise"`` and ``"nan"`` modes)."""
        return bool((abs(float(np.asarray(x).ravel()[0])) * 1e4) % 1.0 < self.fraction)

    def release(self) -> None:
        """Let a hanging call return (call it in a ``finally``)."""
        self._release.set()

    def __call__(self, x: Any) -> np.ndarray:
        """Evaluate one member ``x`` (a NumPy array of the unknown's shape)."""
        with self._lock:
            self.n_calls += 1
            n = self.n_calls
        out = self.A @ np.asarray(x, dtype=float).ravel()
        if self.mode == "hang":
            if n == self.hang_call:
                self._release.wait(self.hang_s)
            return out
        if self.fails(x):
            if self.mode == "raise":
                raise RuntimeError("solver diverged")
            return np.full_like(out, np.nan)
        return out

    def batch(self, X: Any) -> Any:
        """Evaluate a batch ``(J, *x_shape)`` in its own namespace; failing members give NaN rows."""
        from .._backend import get_namespace

        xp = get_namespace(X)
        J = X.shape[0]
        flat = xp.reshape(X, (J, -1))
        A = xp.asarray(self.A, dtype=X.dtype, device=getattr(X, "device", None))
        out = flat @ A.T
        first = xp.abs(flat[:, 0]) * 1e4
        bad = (first - xp.floor(first)) < self.fraction
        return xp.where(bad[:, None], xp.asarray(float("nan"), dtype=out.dtype), out)


def failing_problem(
    A: Any,
    x_shape,
    noise_std: float,
    mode: str = "raise",
    fraction: float = 0.2,
    *,
    executor: Any = None,
    timeout: float | None = None,
    **kwargs,
):
    """A forward problem whose evaluations fail on purpose for some members.

    Parameters
    ----------
    A : array of shape ``(m, d)``
        The forward matrix (``d = prod(x_shape)``).
    x_shape : tuple of int
        Shape of one unknown.
    noise_std : float
        Observation noise of the problem.
    mode : {"raise", "nan", "hang"}
        How members fail (see :class:`FailingForward`).
    fraction : float, default 0.2
        Fraction of failing members (``"raise"``, ``"nan"``).
    executor : concurrent.futures.Executor, optional
        Required for ``"hang"`` (a hanging call can only be abandoned when
        it runs elsewhere), e.g. a ``ThreadPoolExecutor``.
    timeout : float, optional
        Seconds after which a member counts as failed (``"hang"``: required).
    **kwargs
        Passed to :class:`FailingForward` (``hang_call``, ``hang_s``).

    Returns
    -------
    problem : kalmandiff.problems.ForwardProblem
        ``"nan"``: a batched, array-API problem (differentiable with torch);
        ``"raise"`` and ``"hang"``: a :class:`~kalmandiff.problems.BlackBox`
        mapping the member function over the ensemble.  ``problem.fn`` (or
        ``problem.failing``) is the :class:`FailingForward`, for
        :meth:`FailingForward.release`.
    """
    from ..problems import BlackBox, CallableProblem

    fn = FailingForward(A, mode, fraction, **kwargs)
    y_shape = (fn.A.shape[0],)
    if mode == "nan":
        problem = CallableProblem(fn.batch, x_shape, y_shape, noise_std, differentiable=True)
    else:
        if mode == "hang" and (executor is None or timeout is None):
            raise ValueError("mode='hang' needs an executor and a timeout.")
        problem = BlackBox(fn, x_shape, y_shape, noise_std, executor=executor, timeout=timeout)
    problem.failing = fn
    return problem
