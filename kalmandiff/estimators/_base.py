"""What every solver shares: validation, accounting, failure policy, progress and history.

A solver is a scikit-learn style estimator (DESIGN.md, principle 5):
``__init__`` stores parameters, ``fit(y, forward)`` runs and returns
``self``, fitted state ends in ``_``.  The numerical loop of each solver
lives in its own module and talks to the outside world only through a
:class:`FitContext`, which holds the problem, the data in the compute
namespace, the random source, a counting/chunking denoiser, a counting
forward evaluator and the bookkeeping.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .._backend import (
    RandomSource,
    array_device,
    asarray_like,
    check_device,
    get_namespace,
    namespace_for_device,
    to_numpy,
)
from ..problems._base import CallableProblem, ForwardProblem, as_problem

__all__ = ["BaseSolver", "FitContext", "MemberFailureError", "NotFittedError"]

_FAILURE_POLICIES = ("raise", "resample")


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


# --------------------------------------------------------------------------
# accounting
# --------------------------------------------------------------------------


@dataclass
class Accounting:
    """Counters and timers behind ``stats_`` (DESIGN.md, principle 6).

    ``n_*_evals`` count single-particle evaluations; ``n_sequential_*``
    count calls on the whole ensemble, i.e. the depth of the computation if
    every particle ran in parallel (how the EnKG paper counts NFE).
    """

    n_denoiser_evals: int = 0
    n_sequential_denoiser_evals: int = 0
    n_forward_evals: int = 0
    n_sequential_forward_evals: int = 0
    n_failed: int = 0
    n_forward_probe_evals: int = 0
    time_denoiser_s: float = 0.0
    time_forward_s: float = 0.0
    t_start: float = field(default_factory=time.perf_counter)

    def as_dict(self) -> dict[str, Any]:
        total = time.perf_counter() - self.t_start
        return {
            "n_denoiser_evals": self.n_denoiser_evals,
            "n_sequential_denoiser_evals": self.n_sequential_denoiser_evals,
            "n_forward_evals": self.n_forward_evals,
            "n_sequential_forward_evals": self.n_sequential_forward_evals,
            "n_failed": self.n_failed,
            "n_forward_probe_evals": self.n_forward_probe_evals,
            "time_total_s": total,
            "time_denoiser_s": self.time_denoiser_s,
            "time_forward_s": self.time_forward_s,
            "time_overhead_s": max(total - self.time_denoiser_s - self.time_forward_s, 0.0),
            "peak_rss_mb": _peak_rss_mb(),
        }


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``; elsewhere
    ``ru_maxrss`` (which a spawned child inherits from its parent, so it can
    over-report).  It is the process's peak, not the fit's alone.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


class CountingDenoiser:
    """Call a prior's denoiser in chunks that cover every particle, counting and timing it.

    The reference EnKG code computes ``J // batch_size`` chunks and silently
    leaves the last ``J % batch_size`` particles un-denoised; here the last
    chunk is simply shorter.
    """

    def __init__(self, prior, batch_size: int | None, accounting: Accounting):
        self.prior = prior
        self.batch_size = batch_size
        self.acct = accounting

    def __call__(self, x, sigma):
        t0 = time.perf_counter()
        n = x.shape[0]
        bs = self.batch_size
        if bs is None or n <= bs:
            out = self.prior.denoise(x, sigma)
        else:
            xp = get_namespace(x)
            per_particle = not isinstance(sigma, (int, float))
            parts = [
                self.prior.denoise(x[i : i + bs, ...], sigma[i : i + bs] if per_particle else sigma)
                for i in range(0, n, bs)
            ]
            out = xp.concat(parts, axis=0)
        self.acct.time_denoiser_s += time.perf_counter() - t0
        self.acct.n_denoiser_evals += n
        self.acct.n_sequential_denoiser_evals += 1
        return out


class ForwardEvaluator:
    """Evaluate the forward problem on an ensemble: chunking, shape checks, failures.

    Returns forward values flattened to ``(J, m)`` and a boolean NumPy mask
    of failed members: a member fails when its output is not finite.
    """

    def __init__(self, problem: ForwardProblem, accounting: Accounting, batch_size: int | None = None):
        self.problem = problem
        self.acct = accounting
        self.batch_size = batch_size

    def __call__(self, X):
        xp = get_namespace(X)
        J = X.shape[0]
        t0 = time.perf_counter()
        bs = self.batch_size
        if bs is None or J <= bs:
            Y = self.problem(X)
        else:
            Y = xp.concat([self.problem(X[i : i + bs, ...]) for i in range(0, J, bs)], axis=0)
        self.acct.time_forward_s += time.perf_counter() - t0
        self.acct.n_forward_evals += J
        self.acct.n_sequential_forward_evals += 1
        expected = (J, *tuple(self.problem.y_shape))
        if tuple(Y.shape) != expected:
            raise ValueError(
                f"the forward model returned shape {tuple(Y.shape)} for {J} particles; expected {expected} "
                "(a leading particle axis followed by the shape of y)."
            )
        Y = xp.reshape(Y, (J, -1))
        failed = ~to_numpy(xp.all(xp.isfinite(Y), axis=1)).astype(bool)
        return Y, failed


# --------------------------------------------------------------------------
# the fit context
# --------------------------------------------------------------------------


@dataclass
class FitContext:
    """Everything a solver's loop needs during one ``fit``.

    Attributes
    ----------
    problem : ForwardProblem
    y : array
        The observation in the compute namespace, shape ``problem.y_shape``.
    y_flat : array ``(m,)``
    xp : namespace of the computation
    rng : RandomSource
    acct : Accounting
    denoise : CountingDenoiser or None
    forward : ForwardEvaluator
    """

    problem: ForwardProblem
    y: Any
    y_flat: Any
    xp: Any
    rng: RandomSource
    acct: Accounting
    denoise: Any
    forward: ForwardEvaluator
    on_failure: str
    callbacks: list
    history: list = field(default_factory=list)
    progress: Any = None
    stopped_early: bool = False

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.problem.x_shape)

    def like(self, dtype=None):
        """A zero-size array fixing namespace, device and dtype of new arrays."""
        return self.xp.zeros(1, dtype=self.y.dtype if dtype is None else dtype, device=array_device(self.y))

    def misfit(self, G):
        """``Phi_j = 0.5 * ||Gamma^{-1/2} (G_j - y)||^2`` for flattened ``G`` ``(J, m)``, as NumPy."""
        xp = self.xp
        r = self.problem.residual(xp.reshape(G, (G.shape[0], *self.problem.y_shape)), self.y)
        r = xp.reshape(r, (G.shape[0], -1))
        std = xp.reshape(self.problem.noise_std_array(like=self.y), (1, -1))
        std = xp.where(std > 0, std, xp.ones_like(std))
        return to_numpy(0.5 * xp.sum((r / std) ** 2, axis=1))

    def flat_residual(self, G, data):
        """``problem.residual`` on flattened rows: ``G`` and ``data`` are ``(J, m)`` (or ``(1, m)``)."""
        xp = self.xp
        shape = self.problem.y_shape
        r = self.problem.residual(
            xp.reshape(G, (G.shape[0], *shape)), xp.reshape(data, (data.shape[0], *shape))
        )
        return xp.reshape(r, (G.shape[0], -1))

    def weighted_residual(self, G):
        """``Gamma^{-1}``-weighted residuals (up to a scalar), flattened ``(J, m)``."""
        xp = self.xp
        J = G.shape[0]
        r = self.problem.residual(xp.reshape(G, (J, *self.problem.y_shape)), self.y)
        w = self.problem.misfit_weights(like=self.y)
        return xp.reshape(r * w, (J, -1))

    def handle_failures(self, failed: np.ndarray) -> np.ndarray:
        """Apply the failure policy to a mask of failed members; return the mask of successes."""
        n_bad = int(failed.sum())
        if n_bad == 0:
            return ~failed
        self.acct.n_failed += n_bad
        members = [int(i) for i in np.flatnonzero(failed)]
        if self.on_failure == "raise":
            raise MemberFailureError(
                f"the forward model failed (non-finite output) for {n_bad} of {failed.size} members: "
                f"{members[:20]}{' ...' if n_bad > 20 else ''}. Use on_failure='resample' to carry on "
                "with the successful members.",
                members,
            )
        n_ok = failed.size - n_bad
        if n_ok < 2:
            raise RuntimeError(
                f"only {n_ok} of {failed.size} members have a finite forward value; at least two are needed."
            )
        if n_bad > failed.size / 2:
            warnings.warn(
                f"{n_bad} of {failed.size} members failed in one evaluation.", RuntimeWarning, stacklevel=3
            )
        return ~failed

    def record(self, **entry) -> None:
        """Append a per-step record to the history, update progress, run callbacks."""
        entry.update(
            n_denoiser_evals=self.acct.n_denoiser_evals,
            n_forward_evals=self.acct.n_forward_evals,
            n_failed=self.acct.n_failed,
        )
        self.history.append(entry)
        if self.progress is not None:
            post = {k: entry[k] for k in ("misfit_mean", "spread") if entry.get(k) is not None}
            if post:
                self.progress.set_postfix({k: f"{v:.3g}" for k, v in post.items()}, refresh=False)
            self.progress.update(1)
        for cb in self.callbacks:
            try:
                stop = cb(dict(entry))
            except StopIteration:
                stop = True
            if stop:
                self.stopped_early = True

    def spread(self, X) -> float:
        """Mean over coordinates of the ensemble standard deviation."""
        xp = self.xp
        return float(xp.mean(xp.std(xp.reshape(X, (X.shape[0], -1)), axis=0)))


def _progress_enabled(verbose) -> bool:
    if verbose == "auto":
        if os.environ.get("CI") or "PYTEST_CURRENT_TEST" in os.environ:
            return False
        return sys.stderr.isatty() or "ipykernel" in sys.modules
    return bool(verbose)


# --------------------------------------------------------------------------
# the estimator base class
# --------------------------------------------------------------------------


class BaseSolver(BaseEstimator):
    """Base class of kalmandiff solvers.

    Subclasses define ``__init__`` (store-only, keyword parameters), a
    ``_validate_params`` for their own options and ``_run(ctx) -> particles``.
    """

    #: whether the solver calls the prior's denoiser (False for EKI)
    _uses_denoiser = True
    #: name of the progress bar
    _progress_desc = "solver"

    def __sklearn_clone__(self):
        # sklearn's clone deep-copies non-estimator parameters, which would
        # duplicate a score network (and its GPU memory); share it instead.
        return type(self)(**self.get_params(deep=False))

    # -- public API ----------------------------------------------------------
    def fit(self, y, forward, noise_std=None):
        """Solve the inverse problem ``y = forward(x) + noise``.

        Parameters
        ----------
        y : array
            The observation, shape ``forward.y_shape`` (NumPy, CuPy, torch or
            any array-API array); results come back in its namespace.
        forward : ForwardProblem or callable
            A :class:`~kalmandiff.problems.ForwardProblem`, or a callable on a
            batch ``(J, *x_shape) -> (J, *y.shape)`` (``x_shape`` is the
            prior's ``event_shape``).
        noise_std : float or array, optional
            Observation noise standard deviation for a plain callable forward.

        Returns
        -------
        self
        """
        ctx = self._make_context(y, forward, noise_std)
        self._y_like = y
        try:
            particles = self._run(ctx)
        finally:
            if ctx.progress is not None:
                ctx.progress.close()
        self.particles_ = particles
        self.history_ = ctx.history
        self.stats_ = ctx.acct.as_dict()
        self.stopped_early_ = ctx.stopped_early
        self.n_particles_ = int(particles.shape[0])
        return self

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
        """
        check_is_fitted(self, "particles_")
        X = self.particles_
        xp = get_namespace(X)
        mean = _move_like(xp.mean(X, axis=0), self._y_like)
        if not return_std:
            return mean
        return mean, _move_like(xp.std(X, axis=0), self._y_like)

    # -- set-up --------------------------------------------------------------
    def _validate_common(self) -> None:
        n = self.n_particles
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"n_particles must be an int >= 2 (got {n!r}); an ensemble needs two members.")
        if self.on_failure not in _FAILURE_POLICIES:
            raise ValueError(f"on_failure must be one of {_FAILURE_POLICIES} (got {self.on_failure!r}).")
        check_device(self.device)
        for name in ("batch_size", "forward_batch_size"):
            v = getattr(self, name, None)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"{name} must be None or a positive int (got {v!r}).")
        if self.callbacks is not None and not all(callable(c) for c in self.callbacks):
            raise ValueError("callbacks must be a list of callables taking a per-step record.")

    def _validate_params(self) -> None:
        """Check solver-specific parameters (override)."""

    def _make_context(self, y, forward, noise_std) -> FitContext:
        self._validate_common()
        self._validate_params()
        prior = self.prior
        if prior is None or not hasattr(prior, "event_shape"):
            raise ValueError("prior must be a kalmandiff prior (with event_shape and denoise/sample).")
        if not hasattr(y, "shape") or not hasattr(y, "dtype"):
            y = np.asarray(y, dtype=float)
        problem = as_problem(forward, y, x_shape=prior.event_shape, noise_std=noise_std)
        if noise_std is not None and isinstance(forward, ForwardProblem):
            raise ValueError(
                "noise_std is only for a plain callable forward; a ForwardProblem carries its own."
            )
        if tuple(problem.x_shape) != tuple(prior.event_shape):
            raise ValueError(
                f"the prior's event_shape {tuple(prior.event_shape)} differs from the problem's "
                f"x_shape {tuple(problem.x_shape)}."
            )
        y_c = self._to_compute_namespace(y)
        xp = get_namespace(y_c)
        if tuple(y_c.shape) != tuple(problem.y_shape):
            raise ValueError(
                f"y has shape {tuple(y_c.shape)}; the forward problem produces {tuple(problem.y_shape)}."
            )
        if not xp.isdtype(y_c.dtype, "real floating"):
            y_c = xp.astype(y_c, xp.float64)
        if not bool(xp.all(xp.isfinite(y_c))):
            raise ValueError("y contains NaN or infinite values.")
        std = to_numpy(problem.noise_std)
        if not np.all(np.isfinite(std)) or np.any(std < 0):
            raise ValueError("noise_std must be finite and non-negative.")
        acct = Accounting()
        if isinstance(problem, CallableProblem):
            self._probe_forward(problem, y_c, acct)
        denoise = CountingDenoiser(prior, self.batch_size, acct) if self._uses_denoiser else None
        ctx = FitContext(
            problem=problem,
            y=y_c,
            y_flat=xp.reshape(y_c, (-1,)),
            xp=xp,
            rng=RandomSource(self.random_state),
            acct=acct,
            denoise=denoise,
            forward=ForwardEvaluator(problem, acct, getattr(self, "forward_batch_size", None)),
            on_failure=self.on_failure,
            callbacks=list(self.callbacks or []),
        )
        if _progress_enabled(self.verbose):
            from tqdm.auto import tqdm

            ctx.progress = tqdm(total=self._n_progress_steps(), desc=self._progress_desc, leave=False)
        return ctx

    @staticmethod
    def _probe_forward(problem, y, acct: Accounting) -> None:
        """Call a plain callable forward once, on one zero input, to check its output shape.

        A ForwardProblem declares ``y_shape``, which is checked against ``y``
        without a call; a plain callable can only be checked by calling it,
        and this is done before any denoiser work.  The call is counted in
        ``stats_["n_forward_probe_evals"]``, not in ``n_forward_evals``.
        """
        xp = get_namespace(y)
        x = xp.zeros((1, *problem.x_shape), dtype=y.dtype, device=array_device(y))
        out = problem.forward(x)
        acct.n_forward_probe_evals += 1
        expected = (1, *problem.y_shape)
        if tuple(getattr(out, "shape", ())) != expected:
            raise ValueError(
                f"the forward callable returned shape {tuple(getattr(out, 'shape', ()))} for one particle of "
                f"shape {(1, *problem.x_shape)}; expected {expected} (a leading particle axis, then y's shape)."
            )

    def _n_progress_steps(self) -> int | None:
        return getattr(self, "n_steps", None)

    def _to_compute_namespace(self, y):
        if self.device is None:
            get_namespace(y)  # raises for unsupported inputs
            return y
        xp = namespace_for_device(self.device)
        return xp.asarray(to_numpy(y))

    def _run(self, ctx: FitContext):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------
    @staticmethod
    def _flat(X):
        xp = get_namespace(X)
        return xp.reshape(X, (X.shape[0], -1))

    @classmethod
    def _merge_successes(cls, ctx: FitContext, X_flat, X_ok, ok: np.ndarray):
        """Put updated successful members ``X_ok`` back in order; redraw the failed ones.

        ``X_flat`` is the ensemble before the update (``(J, d)``), ``X_ok``
        the update of its rows where ``ok`` is True.
        """
        if ok.all():
            return X_ok
        xp = ctx.xp
        J, n_ok = ok.size, int(ok.sum())
        pos = np.empty(J, dtype=np.int64)
        pos[ok] = np.arange(n_ok)
        pos[~ok] = n_ok + np.flatnonzero(~ok)
        full = xp.take(xp.concat([X_ok, X_flat], axis=0), asarray_like(pos, X_flat, dtype=xp.int64), axis=0)
        return cls._resample_failed(ctx, full, ok)

    @staticmethod
    def _take_ok(ctx: FitContext, A, ok: np.ndarray):
        """Rows of ``A`` where ``ok`` is True."""
        if ok.all():
            return A
        return ctx.xp.take(A, asarray_like(np.flatnonzero(ok), A, dtype=ctx.xp.int64), axis=0)

    @staticmethod
    def _resample_failed(ctx: FitContext, X_flat, ok: np.ndarray):
        """Redraw failed members (rows where ``ok`` is False) from the successful ones' Gaussian."""
        from ._ensemble import redraw_from_ensemble

        if ok.all():
            return X_flat
        xp = ctx.xp
        J = X_flat.shape[0]
        good = xp.take(X_flat, asarray_like(np.flatnonzero(ok), X_flat, dtype=xp.int64), axis=0)
        new = redraw_from_ensemble(good, int((~ok).sum()), ctx.rng)
        # Row j comes from X_flat[j] when it succeeded, else from the next redrawn row.
        source = np.arange(J)
        source[~ok] = J + np.arange(int((~ok).sum()))
        stacked = xp.concat([X_flat, new], axis=0)
        return xp.take(stacked, asarray_like(source, X_flat, dtype=xp.int64), axis=0)


def _move_like(arr, like):
    """Return ``arr`` in the namespace and device of ``like`` (identity if already there)."""
    try:
        if get_namespace(arr) is get_namespace(like) and array_device(arr) == array_device(like):
            return arr
    except TypeError:
        pass
    return asarray_like(to_numpy(arr), like)


def check_positive(name: str, value, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number ``> 0`` (or ``>= 0``)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound} (got {value!r}).")


Callback = Callable[[dict], Any]
