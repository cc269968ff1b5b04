"""What a run reports: ``stats_``, ``history_``, the progress bar and the callbacks, from one schema.

:class:`Accounting` is the schema.  Each counter and timer is a field whose
metadata says where else it appears: ``history`` (copied into every
``history_`` record), ``compare`` (a column of :func:`kalmandiff.compare`).
:data:`STATS_KEYS`, :meth:`Accounting.as_dict`, :data:`HISTORY_KEYS`, the
record dict of :meth:`Recorder.record` and ``compare``'s
``COUNT_COLUMNS`` / ``TIME_COLUMNS`` are all derived from those fields, so a
new counter is one line here and shows up everywhere it is declared for.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .._backend import get_namespace

__all__ = [
    "Accounting",
    "Recorder",
    "STATS_KEYS",
    "HISTORY_KEYS",
    "COUNT_COLUMNS",
    "TIME_COLUMNS",
    "progress_enabled",
]


def _count(*, history: bool = False, compare: bool = False):
    """A counter of :class:`Accounting`: an int from 0, listed in ``stats_`` (and where flagged)."""
    return field(default=0, metadata={"kind": "count", "history": history, "compare": compare})


def _timer(*, compare: bool = False):
    """A timer of :class:`Accounting`: seconds from 0.0, listed in ``stats_`` (and where flagged)."""
    return field(default=0.0, metadata={"kind": "time", "compare": compare})


@dataclass
class Accounting:
    """Counters and timers behind ``stats_`` (DESIGN.md, principle 6).

    ``n_*_evals`` count single-particle evaluations; ``n_sequential_*``
    count calls on the whole ensemble, i.e. the depth of the computation if
    every particle ran in parallel (how the EnKG paper counts NFE).
    ``n_*_vjps`` count vector-Jacobian products (backward passes) through
    the forward model and the denoiser, per particle; their time is
    ``time_gradient_s``, which ``time_overhead_s`` (the solver's own time)
    excludes.
    """

    n_denoiser_evals: int = _count(history=True, compare=True)
    n_sequential_denoiser_evals: int = _count(compare=True)
    n_forward_evals: int = _count(history=True, compare=True)
    n_sequential_forward_evals: int = _count(compare=True)
    n_forward_vjps: int = _count(history=True, compare=True)
    n_sequential_forward_vjps: int = _count()
    n_denoiser_vjps: int = _count(history=True, compare=True)
    n_sequential_denoiser_vjps: int = _count()
    n_failed: int = _count(history=True, compare=True)
    n_forward_probe_evals: int = _count()
    time_denoiser_s: float = _timer(compare=True)
    time_forward_s: float = _timer(compare=True)
    time_gradient_s: float = _timer()
    t_start: float = field(default_factory=time.perf_counter)

    def count_vjps(self, n: int, *, forward: bool, denoiser: bool, seconds: float = 0.0) -> None:
        """Count one batched backward pass over ``n`` particles and charge its time to gradients.

        ``forward`` / ``denoiser``: whether the pass goes through the forward
        model and/or the denoiser (a chain through both counts once in each).
        """
        if forward:
            self.n_forward_vjps += n
            self.n_sequential_forward_vjps += 1
        if denoiser:
            self.n_denoiser_vjps += n
            self.n_sequential_denoiser_vjps += 1
        self.time_gradient_s += seconds

    def counters(self) -> dict[str, Any]:
        """The counts and times (not the clock), for checkpoints."""
        return {name: getattr(self, name) for name in _names("count") + _names("time")}

    def restore(self, counters: dict[str, Any], elapsed_s: float) -> None:
        """Continue from saved counters and an elapsed wall time."""
        for k, v in counters.items():
            setattr(self, k, v)
        self.t_start = time.perf_counter() - elapsed_s

    def as_dict(self) -> dict[str, Any]:
        """``stats_``: the counters, the total time, the timers, the solver's own time and peak memory."""
        total = time.perf_counter() - self.t_start
        timers = {name: getattr(self, name) for name in _names("time")}
        return {
            **{name: getattr(self, name) for name in _names("count")},
            "time_total_s": total,
            **timers,
            "time_overhead_s": max(total - sum(timers.values()), 0.0),
            "peak_rss_mb": peak_rss_mb(),
        }


def _names(kind: str, flag: str | None = None) -> list[str]:
    """Names of the :class:`Accounting` fields of ``kind`` (``"count"``/``"time"``), optionally flagged."""
    return [
        f.name
        for f in fields(Accounting)
        if f.metadata.get("kind") == kind and (flag is None or f.metadata[flag])
    ]


#: keys of every solver's ``stats_`` (one schema for all solvers; :meth:`Accounting.as_dict`)
STATS_KEYS = (*_names("count"), "time_total_s", *_names("time"), "time_overhead_s", "peak_rss_mb")
#: the per-step values of a record; the counters flagged ``history`` follow them
_STEP_KEYS = ("step", "sigma", "misfit_mean", "misfit_std", "spread")
#: keys of every record in a solver's ``history_`` (one schema for all solvers)
HISTORY_KEYS = (*_STEP_KEYS, *_names("count", "history"))
#: evaluation counts that :func:`kalmandiff.compare` copies from each solver's ``stats_``
COUNT_COLUMNS = tuple(_names("count", "compare"))
#: wall times in seconds that :func:`kalmandiff.compare` copies from ``stats_``
TIME_COLUMNS = ("time_total_s", *_names("time", "compare"))


def peak_rss_mb() -> float:
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


def progress_enabled(verbose) -> bool:
    """Whether ``verbose`` turns a progress bar on (``"auto"``: in terminals and notebooks, not CI/pytest)."""
    if verbose == "auto":
        if os.environ.get("CI") or "PYTEST_CURRENT_TEST" in os.environ:
            return False
        return sys.stderr.isatty() or "ipykernel" in sys.modules
    return bool(verbose)


class Recorder:
    """The run's ``history_``, its progress bar and its callbacks.

    Parameters
    ----------
    acct : Accounting
        Whose ``history`` counters every record copies.
    callbacks : list of callables
        Each receives a copy of every record; True (or StopIteration) stops the run.
    progress : tqdm bar, optional
    progress_weights : list of int, optional
        Progress units each recorded step advances the bar by (None: one per step).
    """

    def __init__(self, acct: Accounting, callbacks=(), progress=None, progress_weights=None):
        self.acct = acct
        self.callbacks = list(callbacks)
        self.history: list[dict] = []
        self.progress = progress
        self.progress_weights = progress_weights
        self.stopped_early = False
        #: whether the last recorded misfit had a finite entry (divergence check)
        self.last_misfit_finite = True

    def record(self, step: int, *, sigma=None, misfit=None, spread=None, **extra) -> None:
        """Append a per-step record to the history, update progress, run callbacks.

        Every solver's records have the keys of :data:`HISTORY_KEYS` (None
        where a value is not defined at that step), plus solver-specific
        diagnostics passed as keywords.

        Parameters
        ----------
        step : int
        sigma : float, optional
            Noise level of the step (None for EKI, which has no diffusion).
        misfit : array ``(J,)``, optional
            The members' data misfits ``Phi_j`` (NaN for failed members),
            None when the step evaluated no forward model.
        spread : float, optional
            Ensemble spread (:meth:`spread`).
        """
        phi = None if misfit is None else np.asarray(misfit, dtype=float)
        if phi is not None:
            phi = phi[np.isfinite(phi)]
        has_misfit = phi is not None and phi.size > 0
        if misfit is not None:
            self.last_misfit_finite = has_misfit  # False: every member's misfit was non-finite
        entry = {
            "step": int(step),
            "sigma": None if sigma is None else float(sigma),
            "misfit_mean": float(np.mean(phi)) if has_misfit else None,
            "misfit_std": float(np.std(phi)) if has_misfit else None,
            "spread": None if spread is None else float(spread),
            **extra,
            **{name: getattr(self.acct, name) for name in HISTORY_KEYS[len(_STEP_KEYS) :]},
        }
        self.history.append(entry)
        self._advance_progress(entry)
        self._run_callbacks(entry)

    def _advance_progress(self, entry: dict) -> None:
        if self.progress is None:
            return
        post = {k: entry[k] for k in ("misfit_mean", "spread") if entry.get(k) is not None}
        if post:
            self.progress.set_postfix({k: f"{v:.3g}" for k, v in post.items()}, refresh=False)
        weights = self.progress_weights
        k = len(self.history) - 1
        self.progress.update(weights[k] if weights is not None and k < len(weights) else 1)

    def _run_callbacks(self, entry: dict) -> None:
        for cb in self.callbacks:
            try:
                stop = cb(dict(entry))
            except StopIteration:
                stop = True
            if stop:
                self.stopped_early = True

    def resume(self, history: list[dict]) -> None:
        """Continue after the records of a checkpoint."""
        self.history.extend(history)
        if self.progress is not None:
            self.progress.update(len(history))

    def close(self, finished: bool = False) -> None:
        """Close the bar; ``finished``: a run that stopped early ends full, at its true total."""
        if self.progress is None:
            return
        if finished and (self.progress.total is None or self.progress.n < self.progress.total):
            self.progress.total = self.progress.n
            self.progress.refresh()
        self.progress.close()

    @staticmethod
    def spread(X) -> float:
        """Mean over coordinates of the ensemble standard deviation."""
        xp = get_namespace(X)
        return float(xp.mean(xp.std(xp.reshape(X, (X.shape[0], -1)), axis=0)))
