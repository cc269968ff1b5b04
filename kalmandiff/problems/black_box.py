"""A per-sample black-box forward model, mapped over particles by any executor.

Scientists' simulators usually take one input at a time, run for seconds to
hours and sometimes crash.  :class:`BlackBox` turns such a function into a
batched :class:`~kalmandiff.problems.ForwardProblem`: it hands the particles
to a :class:`concurrent.futures.Executor` (a process or thread pool, a
``dask.distributed`` client's ``get_executor()``, ``mpi4py.futures``),
keeps their order, limits BLAS threads inside the workers, and turns an
exception, a timeout or a non-finite output into a NaN row, which the
solvers treat as a *member failure* (``on_failure=...``).  The failed
members and why are kept in :attr:`BlackBox.last_failures`.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import asarray_like, to_numpy
from ._base import ForwardProblem, _as_shape, check_noise_std

__all__ = ["BlackBox"]


def _evaluate_chunk(fn, X: np.ndarray, y_shape: tuple, vectorized: bool, blas_threads: int | None):
    """Worker side: evaluate one chunk of members; failures become NaN rows with a reason."""
    if blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=blas_threads):
            return _evaluate_chunk(fn, X, y_shape, vectorized, None)
    out = np.full((X.shape[0], *y_shape), np.nan)
    errors: dict[int, str] = {}
    if vectorized:
        try:
            out[...] = np.asarray(fn(X), dtype=float).reshape(out.shape)
        except Exception as exc:  # noqa: BLE001 - any failure of user code is a member failure
            errors = {k: f"{type(exc).__name__}: {exc}" for k in range(X.shape[0])}
        return out, errors
    for k in range(X.shape[0]):
        try:
            out[k] = np.asarray(fn(X[k]), dtype=float).reshape(y_shape)
        except Exception as exc:  # noqa: BLE001
            errors[k] = f"{type(exc).__name__}: {exc}"
    return out, errors


class BlackBox(ForwardProblem):
    """Wrap ``fn(x) -> y`` (one sample) as a batched forward problem.

    Parameters
    ----------
    fn : callable
        ``fn(x)`` with ``x`` a NumPy array of shape ``x_shape`` returns an
        array-like of shape ``y_shape``; with ``vectorized=True`` it takes a
        chunk ``(k, *x_shape)`` and returns ``(k, *y_shape)``.  For process
        pools and Dask it must be picklable (a module-level function).
    x_shape, y_shape : tuple of int
    noise_std : float or array, default 0.0
        Observation noise standard deviation (scalar or per datum).
    executor : concurrent.futures.Executor, optional
        Where to run the calls; None runs them here, one after another.
    chunksize : int, default 1
        Members per submitted task (fewer, larger tasks amortise overhead).
    timeout : float, optional
        Seconds to wait for one task once its result is awaited; a task that
        takes longer marks its members failed.  Needs an executor.  Python
        cannot stop a running call, so the worker stays busy until it
        returns; a process pool can be recreated to reclaim it.
    vectorized : bool, default False
        ``fn`` takes chunks rather than single samples.
    blas_threads : int or None, default 1
        BLAS/OpenMP threads inside each call (``threadpoolctl``), so that
        workers do not oversubscribe the cores; None leaves them alone.
    geometry : Geometry, optional
        Where the unknowns and data live (:class:`~kalmandiff.problems.Geometry`),
        for localisation.  Default: ``fn.geometry`` when ``fn`` declares one (a
        wrapped :class:`ForwardProblem` keeps its declaration), else none.

    Attributes
    ----------
    last_failures : dict of int to str
        Members that failed in the last call and why.
    """

    differentiable = False

    def __init__(
        self,
        fn: Callable,
        x_shape,
        y_shape,
        noise_std: Any = 0.0,
        executor: cf.Executor | None = None,
        chunksize: int = 1,
        timeout: float | None = None,
        vectorized: bool = False,
        blas_threads: int | None = 1,
        geometry: Any = None,
    ):
        if not callable(fn):
            raise ValueError(f"fn must be callable (got {type(fn).__name__}).")
        if executor is not None and not hasattr(executor, "submit"):
            raise ValueError("executor must have a submit() method (a concurrent.futures.Executor).")
        if isinstance(chunksize, bool) or not isinstance(chunksize, (int, np.integer)) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int (got {chunksize!r}).")
        if timeout is not None:
            if not timeout > 0:
                raise ValueError(f"timeout must be positive seconds (got {timeout!r}).")
            if executor is None:
                raise ValueError(
                    "a timeout needs an executor: the calls cannot be interrupted in this process."
                )
        self.fn = fn
        self.x_shape = _as_shape(x_shape, "x_shape")
        self.y_shape = _as_shape(y_shape, "y_shape")
        self.noise_std = check_noise_std(noise_std, self.y_shape)
        self.executor = executor
        self.chunksize = int(chunksize)
        self.timeout = timeout
        self.vectorized = vectorized
        self.blas_threads = blas_threads
        self.last_failures: dict[int, str] = {}
        self.geometry = getattr(fn, "geometry", None) if geometry is None else geometry

    def forward(self, X):
        X_np = np.asarray(to_numpy(X), dtype=float)
        J = X_np.shape[0]
        starts = range(0, J, self.chunksize)
        args = (self.y_shape, self.vectorized, self.blas_threads)
        if self.executor is None:
            results = [_evaluate_chunk(self.fn, X_np[s : s + self.chunksize], *args) for s in starts]
        else:
            futures = [
                self.executor.submit(_evaluate_chunk, self.fn, X_np[s : s + self.chunksize], *args)
                for s in starts
            ]
            results = [self._collect(f, min(self.chunksize, J - s)) for f, s in zip(futures, starts)]
        Y = np.concatenate([r[0] for r in results], axis=0)
        self.last_failures = {s + k: why for s, (_, errs) in zip(starts, results) for k, why in errs.items()}
        for j in np.flatnonzero(~np.all(np.isfinite(Y.reshape(J, -1)), axis=1)):
            self.last_failures.setdefault(int(j), "non-finite output")
        return asarray_like(Y, X, dtype=X.dtype)

    def _collect(self, future, n: int):
        """Wait for one task; a timeout or a failure of the task machinery fails its members."""
        try:
            return future.result(timeout=self.timeout)
        except (cf.TimeoutError, TimeoutError):
            future.cancel()
            why = f"timed out after {self.timeout} s"
        except Exception as exc:  # noqa: BLE001 - e.g. a worker process that died
            why = f"{type(exc).__name__}: {exc}"
        return np.full((n, *self.y_shape), np.nan), {k: why for k in range(n)}

    def __repr__(self) -> str:
        ex = "serial" if self.executor is None else type(self.executor).__name__
        return (
            f"BlackBox({getattr(self.fn, '__name__', 'fn')}, x_shape={self.x_shape}, y_shape={self.y_shape}, "
            f"noise_std={self.noise_std!r}, executor={ex}, chunksize={self.chunksize})"
        )
