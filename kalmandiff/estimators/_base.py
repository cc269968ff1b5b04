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

import os
import sys
import time
import warnings
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

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
from ._estimator import BaseEstimator, NotFittedError, check_is_fitted
from ._evaluation import Accounting, CountingDenoiser, ForwardEvaluator
from ._params import FRACTION, POSITIVE_INT, Interval, Options, check_parameters

__all__ = [
    "BaseSolver",
    "FitContext",
    "HISTORY_KEYS",
    "ForwardRequest",
    "VJPRequest",
    "SafePoint",
    "MemberFailureError",
    "NotFittedError",
]

_FAILURE_POLICIES = ("raise", "resample")

#: a run whose final data misfit exceeds its first by this factor has diverged (DivergenceWarning)
DIVERGENCE_MISFIT_RATIO = 10.0

#: keys of every record in a solver's ``history_`` (one schema for all solvers)
HISTORY_KEYS = (
    "step",
    "sigma",
    "misfit_mean",
    "misfit_std",
    "spread",
    "n_denoiser_evals",
    "n_forward_evals",
    "n_forward_vjps",
    "n_denoiser_vjps",
    "n_failed",
)


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
# the step protocol and the fit context
# --------------------------------------------------------------------------


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


def _not_called(X):  # pragma: no cover - guards the ask/tell mode
    raise RuntimeError("in ask/tell mode the solver never calls the forward model itself.")


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
    denoise : CountingDenoiser
        The prior's denoiser, counted and chunked (unused by EKI).
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
    #: progress units each recorded step advances the bar by (None: one per step)
    progress_weights: Any = None
    stopped_early: bool = False
    #: whether the last recorded misfit had a finite entry (divergence check)
    last_misfit_finite: bool = True

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.problem.x_shape)

    def like(self, dtype=None):
        """A zero-size array fixing namespace, device and dtype of new arrays."""
        return self.xp.zeros(1, dtype=self.y.dtype if dtype is None else dtype, device=array_device(self.y))

    def evaluate(self, request):
        """Answer a step-protocol request as ``fit`` does (ask/tell leaves it to the user).

        A :class:`ForwardRequest` gets ``(G, failed)`` from :attr:`forward`
        (kept linearised when ``vjp=True``), a :class:`VJPRequest` the
        vector-Jacobian product ``(J, *x_shape)``.
        """
        if isinstance(request, VJPRequest):
            return self.forward.vjp(request.X, request.cotangent)
        if request.vjp:
            return self.forward.for_vjp(request.X)
        return self.forward(request.X)

    def misfit(self, G):
        """``Phi_j = 0.5 * ||Gamma^{-1/2} (G_j - y)||^2`` for flattened ``G`` ``(J, m)``, as NumPy.

        The one definition of the data misfit that every solver records
        (a zero noise level counts as one).
        """
        xp = self.xp
        r = self.problem.residual(xp.reshape(G, (G.shape[0], *self.problem.y_shape)), self.y)
        r = xp.reshape(r, (G.shape[0], -1))
        std = xp.reshape(self.problem.noise_std_array(like=self.y), (1, -1))
        std = xp.where(std > 0, std, xp.ones_like(std))
        return to_numpy(0.5 * xp.sum((r / std) ** 2, axis=1))

    def positive_noise_std(self, update: str):
        """``noise_std`` flattened to ``(m,)``; a ValueError unless every entry is positive.

        The Kalman updates weight the data by ``Gamma^{-1}``, which noiseless data do not have.
        """
        xp = self.xp
        std = xp.reshape(self.problem.noise_std_array(like=self.y), (-1,))
        if not bool(xp.all(std > 0)):
            raise ValueError(
                f"update={update!r} needs a positive noise_std for every datum: a calibrated posterior "
                "with noiseless data is degenerate. Use the normalised (paper) update for noiseless data."
            )
        return std

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
            reasons = getattr(self.problem, "last_failures", {}) or {}
            why = "; ".join(f"member {j}: {reasons[j]}" for j in members[:5] if j in reasons)
            raise MemberFailureError(
                f"the forward model failed for {n_bad} of {failed.size} members: "
                f"{members[:20]}{' ...' if n_bad > 20 else ''}{' (' + why + ')' if why else ''}. "
                "Use on_failure='resample' to carry on with the successful members.",
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

    def merge_successes(self, X_flat, X_ok, ok: np.ndarray):
        """Put updated successful members ``X_ok`` back in order; redraw the failed ones.

        ``X_flat`` is the ensemble before the update (``(J, d)``), ``X_ok``
        the update of its rows where ``ok`` is True.
        """
        if ok.all():
            return X_ok
        xp = self.xp
        J, n_ok = ok.size, int(ok.sum())
        pos = np.empty(J, dtype=np.int64)
        pos[ok] = np.arange(n_ok)
        pos[~ok] = n_ok + np.flatnonzero(~ok)
        full = xp.take(xp.concat([X_ok, X_flat], axis=0), asarray_like(pos, X_flat, dtype=xp.int64), axis=0)
        return self.resample_failed(full, ok)

    def take_ok(self, A, ok: np.ndarray):
        """Rows of ``A`` where ``ok`` is True."""
        if ok.all():
            return A
        return self.xp.take(A, asarray_like(np.flatnonzero(ok), A, dtype=self.xp.int64), axis=0)

    def resample_failed(self, X_flat, ok: np.ndarray):
        """Redraw failed members (rows where ``ok`` is False) from the successful ones' Gaussian."""
        from ._ensemble import redraw_from_ensemble

        if ok.all():
            return X_flat
        xp = self.xp
        J = X_flat.shape[0]
        good = xp.take(X_flat, asarray_like(np.flatnonzero(ok), X_flat, dtype=xp.int64), axis=0)
        new = redraw_from_ensemble(good, int((~ok).sum()), self.rng)
        # Row j comes from X_flat[j] when it succeeded, else from the next redrawn row.
        source = np.arange(J)
        source[~ok] = J + np.arange(int((~ok).sum()))
        stacked = xp.concat([X_flat, new], axis=0)
        return xp.take(stacked, asarray_like(source, X_flat, dtype=xp.int64), axis=0)

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
            The members' data misfits ``Phi_j`` (:meth:`misfit`; NaN for
            failed members), None when the step evaluated no forward model.
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
            "n_denoiser_evals": self.acct.n_denoiser_evals,
            "n_forward_evals": self.acct.n_forward_evals,
            "n_forward_vjps": self.acct.n_forward_vjps,
            "n_denoiser_vjps": self.acct.n_denoiser_vjps,
            "n_failed": self.acct.n_failed,
        }
        self.history.append(entry)
        if self.progress is not None:
            post = {k: entry[k] for k in ("misfit_mean", "spread") if entry.get(k) is not None}
            if post:
                self.progress.set_postfix({k: f"{v:.3g}" for k, v in post.items()}, refresh=False)
            weights = self.progress_weights
            k = len(self.history) - 1
            self.progress.update(weights[k] if weights is not None and k < len(weights) else 1)
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


def _short_count(n) -> str:
    """``1234567 -> '1.23M'``: evaluation counts for a progress bar's label."""
    n = float(n)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"


def _cost_warning_stops() -> bool:
    """Whether the warnings filters turn a :class:`~kalmandiff.CostWarning` into an error.

    Then the run stops at the warning, and it must stop before any forward
    evaluation, so the timed probe (which calls the forward model) is skipped.
    The first filter whose category matches decides, as in :mod:`warnings`
    (message and module patterns are not consulted).
    """
    from .._config import CostWarning

    for action, _message, category, _module, _lineno in warnings.filters:
        if issubclass(CostWarning, category):
            return action == "error"
    return warnings.defaultaction == "error"


def _progress_enabled(verbose) -> bool:
    if verbose == "auto":
        if os.environ.get("CI") or "PYTEST_CURRENT_TEST" in os.environ:
            return False
        return sys.stderr.isatty() or "ipykernel" in sys.modules
    return bool(verbose)


# --------------------------------------------------------------------------
# the estimator base class
# --------------------------------------------------------------------------


@dataclass(eq=False, repr=False)
class BaseSolver(BaseEstimator):
    """Base class of kalmandiff solvers.

    Subclasses, decorated with :func:`~kalmandiff.estimators._params.solver_parameters`,
    declare their parameters as annotated class attributes (the common ones
    below are inherited; redeclaring one changes its default), their
    ``_param_constraints`` (and ``_check_more`` for cross-parameter rules)
    and the step generator ``_iterate(ctx, state)`` (see :meth:`_iterate`);
    a solver module registers its class with
    :func:`~kalmandiff.estimators.register_solver`.
    """

    prior: Any = None
    _: KW_ONLY
    n_particles: int = 2
    forward_batch_size: int | None = None
    on_failure: str = "raise"
    nan_tolerance: float = 0.0
    device: str | None = None
    random_state: Any = None
    verbose: Any = "auto"
    callbacks: list | None = None

    #: constructor settings per registered problem name (or family), from the reference scripts
    _FAMILY_DEFAULTS: ClassVar[dict[str, dict[str, Any]]] = {}

    # -- per-problem defaults ------------------------------------------------
    @classmethod
    def defaults_for(cls, problem_family: str) -> dict[str, Any]:
        """Constructor settings of the reference scripts for a problem.

        Parameters
        ----------
        problem_family : str
            A registered problem name (``kd.problems.available()``:
            ``"navier-stokes"``, ``"interferometry"``, ``"inpainting"``, ...),
            one of its other names (``"ns"``, ``"black-hole"``) or a family
            (``"images"``: FFHQ restoration); resolved by
            :func:`kalmandiff.problems.lookup_keys`, most specific first.

        Returns
        -------
        dict
            Keyword arguments, e.g. ``EnKGSolver(prior, **EnKGSolver.defaults_for("navier-stokes"))``.
        """
        from ..problems._registry import lookup_keys

        for key in lookup_keys(problem_family):
            if key in cls._FAMILY_DEFAULTS:
                return dict(cls._FAMILY_DEFAULTS[key])
        raise ValueError(
            f"problem_family must be one of {sorted(cls._FAMILY_DEFAULTS)} or another name of one "
            f"(got {problem_family!r})."
        )

    def __sklearn_clone__(self):
        # sklearn's clone deep-copies non-estimator parameters, which would
        # duplicate a score network (and its GPU memory); share it instead.
        return type(self)(**self.get_params(deep=False))

    # -- public API ----------------------------------------------------------
    def fit(
        self, y, forward, noise_std=None, checkpoint=None, checkpoint_every: int = 10, resume: str = "auto"
    ):
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
            Observation noise standard deviation; required with a plain
            callable forward (``noise_std=0`` states noiseless data
            explicitly; the Kalman updates still refuse it), and not allowed
            with a ForwardProblem, which carries its own.
        checkpoint : str or path-like, optional
            File holding the solver's state, a ``.npz`` archive that never
            runs code when read (:func:`kalmandiff.io.read_checkpoint`).  If
            it exists and belongs to this run (same solver, parameters, prior
            and ``y``) the run resumes from it; the state is saved atomically
            every ``checkpoint_every`` steps and at the end.
        checkpoint_every : int, default 10
            Steps (iterations for EKI) between checkpoints, for every solver.
        resume : {"auto", "if_valid", "never"}, default "auto"
            What to do with an existing ``checkpoint`` file: ``"auto"``
            resumes a checkpoint of this run and raises ``ValueError``
            (naming the file and what it is) for any other file, damaged,
            foreign or of another run; ``"if_valid"`` resumes a checkpoint of
            this run and starts afresh, with a ``RuntimeWarning``, over any
            other file; ``"never"`` starts afresh.  A fresh start overwrites
            the file at its first checkpoint.

        Returns
        -------
        self
        """
        ctx = self._make_context(y, forward, noise_std)
        self._begin(ctx, y, checkpoint, checkpoint_every, resume)
        request = self._advance(None)
        while request is not None:
            request = self._advance(ctx.evaluate(request))
        return self

    def save(self, path):
        """Write this solver (parameters, prior, particles, stats, history) to ``path``.

        Read it back with :func:`kalmandiff.load`; see :mod:`kalmandiff.io`.
        """
        from ..io import save

        return save(self, path)

    # -- ask / tell --------------------------------------------------------------
    def start(
        self,
        y,
        forward=None,
        noise_std=None,
        checkpoint=None,
        checkpoint_every: int = 10,
        resume: str = "auto",
    ):
        """Begin an ask/tell run, for users who evaluate the forward model themselves.

        ``forward`` may be omitted (then ``noise_std`` must be given and the
        forward values must have the shape of ``y``) or be a ForwardProblem
        that supplies ``noise_std``, residuals and weights; it is never
        called on particles (DiffPIR's closed-form data step reads a
        :class:`~kalmandiff.problems.LinearOperatorProblem`'s matrix once).
        Then alternate :meth:`ask` and :meth:`tell` until :attr:`done_` is
        True.  Every solver runs this way: the derivative-free ones ask only
        for forward values, the gradient-based ones (DPS, DiffPIR, RMP) also
        for vector-Jacobian products (:class:`VJPRequest`).  The particles
        are those ``fit`` gives with the same seed (exactly, when the answers
        are computed as ``fit`` computes them).  ``checkpoint``,
        ``checkpoint_every`` and ``resume`` are as in :meth:`fit`.

        Returns
        -------
        self

        Examples
        --------
        A gradient-based solver with a model that can differentiate itself
        (``my_forward(X)`` and ``my_vjp(X, V)``, e.g. an adjoint solver)::

            solver.start(y, noise_std=0.1)
            while (request := solver.ask()) is not None:
                if isinstance(request, kd.estimators.VJPRequest):
                    solver.tell(my_vjp(request.X, request.cotangent))
                else:
                    solver.tell(my_forward(request))
        """
        if forward is None:
            if noise_std is None:
                raise ValueError(
                    "start(y) without a forward problem needs the observation noise: start(y, noise_std=0.1) "
                    "(noise_std=0 for noiseless data), or start(y, problem) with a ForwardProblem."
                )
            if not hasattr(y, "shape"):
                y = np.asarray(y, dtype=float)
            if self.prior is None:
                self._make_context(y, None, None, probe=False)  # the prior=None error
            forward = CallableProblem(_not_called, self.prior.event_shape, tuple(y.shape), noise_std)
            noise_std = None
        ctx = self._make_context(y, forward, noise_std, probe=False)
        self._begin(ctx, y, checkpoint, checkpoint_every, resume)
        self._pending = self._advance(None)
        self._asked = False
        return self

    def ask(self):
        """What must be evaluated next, in the namespace of ``y``; None once the run is complete.

        Returns
        -------
        X : array ``(J, *x_shape)``
            Inputs whose forward values ``G(X)`` (``(J, *y_shape)``) are needed.
        request : VJPRequest
            Only from the gradient-based solvers, right after the forward
            values of the same ``X`` were told: ``request.X`` ``(J, *x_shape)``
            and ``request.cotangent`` ``(J, *y_shape)``; the answer is the
            vector-Jacobian products ``J_G(x_j)^T v_j``, ``(J, *x_shape)``.
        """
        if not hasattr(self, "_pending"):
            raise NotFittedError("call start(y, ...) before ask().")
        request = self._pending
        if request is None:
            return None
        self._asked = True
        if isinstance(request, VJPRequest):
            V = request.cotangent
            V = get_namespace(V).reshape(V, (V.shape[0], *self._ctx.problem.y_shape))
            return VJPRequest(_move_like(request.X, self._y_like), _move_like(V, self._y_like))
        return _move_like(request.X, self._y_like)

    def tell(self, values):
        """Hand over the answer to the last :meth:`ask`.

        Parameters
        ----------
        values : array
            For inputs ``X``: the forward values ``G(X)``, shape
            ``(J, *y_shape)``; non-finite rows mark failed members (handled
            by ``on_failure``).  For a :class:`VJPRequest`: the
            vector-Jacobian products, shape ``(J, *x_shape)``.

        Returns
        -------
        self
            :attr:`done_` says whether the run is complete.
        """
        request = getattr(self, "_pending", None)
        if request is None:
            raise RuntimeError("nothing to tell: call start() and ask() first (or the run is complete).")
        if not getattr(self, "_asked", False):
            raise RuntimeError(
                "tell() before ask(): call X = ask(), evaluate the forward model on X, then tell(G(X))."
            )
        ctx = self._ctx
        values = _move_like(values, ctx.y) if hasattr(values, "shape") else ctx.xp.asarray(np.asarray(values))
        if isinstance(request, VJPRequest):
            answer = _move_like(ctx.forward.accept_vjp(values, request.X), request.X)
        else:
            G, failed = ctx.forward.accept(values, request.X.shape[0])
            answer = (_move_like(G, request.X), failed)
        self._asked = False
        self._pending = self._advance(answer)
        return self

    @property
    def done_(self) -> bool:
        """True when the last ask/tell or fit run is complete."""
        return hasattr(self, "particles_") and getattr(self, "_pending", None) is None

    # -- the driver --------------------------------------------------------------

    def _begin(self, ctx: FitContext, y, checkpoint, checkpoint_every, resume: str = "auto") -> None:
        """Set up a run: the checkpoint store, resumed state, and the solver's step generator."""
        self._ctx = ctx
        self._y_like = y
        self._store = None
        self._pending = None
        for name in ("particles_", "history_", "stats_"):
            self.__dict__.pop(name, None)
        state = None
        if checkpoint is not None:
            from ._checkpoint import CheckpointStore, fingerprint

            self._store = CheckpointStore(checkpoint, checkpoint_every, fingerprint(self, ctx.y), resume)
            payload = self._store.load()
            if payload is not None:
                state = self._restore(ctx, payload)
        self._gen = self._iterate(ctx, state)

    @staticmethod
    def _restore(ctx: FitContext, payload: dict) -> dict:
        ctx.rng.set_state(payload["rng"])
        ctx.acct.restore(payload["counters"], payload["elapsed_s"])
        ctx.history.extend(payload["history"])
        if ctx.progress is not None:
            ctx.progress.update(len(payload["history"]))
        state = dict(payload["state"])
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                state[key] = asarray_like(
                    value, ctx.y, dtype=None if value.dtype.kind != "f" else ctx.y.dtype
                )
        return state

    def _advance(self, value):
        """Run the step generator until it needs forward values (returned) or finishes (None)."""
        ctx = self._ctx
        try:
            while True:
                request = self._gen.send(value)
                value = None
                if isinstance(request, SafePoint):
                    if self._store is not None and self._store.due(request.index):
                        self._save(request.state)
                    continue
                return request
        except StopIteration as stop:
            self._finish(stop.value)
            return None
        except BaseException:
            if ctx.progress is not None:
                ctx.progress.close()
            raise

    def _save(self, state: dict, done: bool = False) -> None:
        ctx = self._ctx
        elapsed = time.perf_counter() - ctx.acct.t_start
        self._store.save(state, ctx.rng.get_state(), ctx.acct.counters(), elapsed, list(ctx.history), done)

    def _finish(self, particles) -> None:
        ctx = self._ctx
        if ctx.progress is not None:
            if ctx.progress.total is None or ctx.progress.n < ctx.progress.total:
                ctx.progress.total = ctx.progress.n  # stopped early: the bar ends full, at the true total
                ctx.progress.refresh()
            ctx.progress.close()
        if self._store is not None:
            self._save({"final": particles}, done=True)
        self._warn_if_diverged(particles, ctx.history, ctx.last_misfit_finite)
        self.particles_ = particles
        self.history_ = ctx.history
        self.stats_ = ctx.acct.as_dict()
        self.stopped_early_ = ctx.stopped_early
        self.n_particles_ = int(particles.shape[0])

    def _warn_if_diverged(self, particles, history: list[dict], last_misfit_finite: bool = True) -> None:
        """A :class:`~kalmandiff.DivergenceWarning` when the run ends non-finite or far worse than it began.

        Diverged means: a non-finite particle, or a final recorded data
        misfit (``misfit_mean``) more than :data:`DIVERGENCE_MISFIT_RATIO`
        times the first one (the first guided step's estimate is close to
        the prior mean, so a converging run ends well below it), or a
        final misfit that is not finite.  A warning, not an error: the
        particles are kept for inspection.
        """
        from .._config import DivergenceWarning

        xp = get_namespace(particles)
        name = type(self).__name__
        if not bool(xp.all(xp.isfinite(particles))):
            n_bad = int(np.sum(~np.all(np.isfinite(to_numpy(self._flat(particles))), axis=1)))
            warnings.warn(
                f"{name} diverged: {n_bad} of {particles.shape[0]} final particles are not finite. Lower the "
                "guidance step (guidance_scale / step) or raise n_steps.",
                DivergenceWarning,
                stacklevel=5,
            )
            return
        misfits = [r["misfit_mean"] for r in history if r.get("misfit_mean") is not None]
        if len(misfits) < 1 or (len(misfits) < 2 and last_misfit_finite):
            return
        first, last = float(misfits[0]), float(misfits[-1]) if last_misfit_finite else float("inf")
        if not np.isfinite(last) or last > DIVERGENCE_MISFIT_RATIO * max(first, 1e-300):
            warnings.warn(
                f"{name} diverged: its data misfit grew from {first:.3g} at the first step to {last:.3g} at "
                f"the last (history_['misfit_mean']). Lower the guidance step (guidance_scale / step) or "
                "raise n_steps; compare with the prior mean's misfit.",
                DivergenceWarning,
                stacklevel=5,
            )

    def _iterate(self, ctx: FitContext, state: dict | None):  # pragma: no cover - abstract
        """The solver's loop as a generator: its update rule and schedule (override).

        It yields :class:`ForwardRequest` objects and receives
        ``(G (J, m), failed mask)`` in return; a gradient-based solver
        follows a ``ForwardRequest(X, vjp=True)`` with a
        :class:`VJPRequest` at the same ``X`` and receives
        ``J_G(X)^T cotangent`` (``(J, *x_shape)``); it yields
        :class:`SafePoint` objects at the start of each step, where its
        whole state can be saved (checkpoints are written there); it
        returns the final particles.  Answers come in the namespace of
        the request's ``X``, from ``fit`` (:meth:`FitContext.evaluate`) or
        from the user (:meth:`tell`) alike.  ``state`` is a saved SafePoint state to resume from
        (``{"final": particles}`` once the run had finished).  The
        framework evaluates, applies the failure policy, counts, times,
        records and checkpoints.
        """
        raise NotImplementedError
        yield

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

        Warns
        -----
        UserWarning
            With ``return_std=True`` on a one-particle ensemble (SCG's
            default ``n_particles=1``): its standard deviation is exactly 0
            and measures no uncertainty.
        """
        check_is_fitted(self, "particles_")
        X = self.particles_
        xp = get_namespace(X)
        mean = _move_like(xp.mean(X, axis=0), self._y_like)
        if not return_std:
            return mean
        if X.shape[0] == 1:
            warnings.warn(
                f"{type(self).__name__} ran one particle, so reconstruct(return_std=True) returns a standard "
                "deviation of exactly 0: it measures no uncertainty. Fit with n_particles >= 2 for a spread "
                "(each particle is an independent run of the same cost).",
                UserWarning,
                stacklevel=2,
            )
        return mean, _move_like(xp.std(X, axis=0), self._y_like)

    # -- set-up --------------------------------------------------------------
    #: declarative constraints of the common parameters (see :mod:`._params`); solvers add theirs
    _param_constraints = {
        "n_particles": [Interval("int", 2, None)],
        "on_failure": [Options(*_FAILURE_POLICIES)],
        "nan_tolerance": [FRACTION],
        "batch_size": [None, POSITIVE_INT],
        "forward_batch_size": [None, POSITIVE_INT],
    }

    def _check_parameters(self) -> None:
        """Check every parameter against the declared constraints, then the cross-parameter rules."""
        check_parameters(self)
        check_device(self.device)
        if self.callbacks is not None and not all(callable(c) for c in self.callbacks):
            raise ValueError("callbacks must be a list of callables taking a per-step record.")
        self._check_more()

    def _check_more(self) -> None:
        """Rules that involve several parameters or other objects (override; call super)."""

    def _make_context(self, y, forward, noise_std, probe: bool = True) -> FitContext:
        """Validate the parameters and the input; build the run's :class:`FitContext`.

        ``probe=False`` (ask/tell, where the user evaluates): the forward is
        neither called to check its output shape nor checked for autograd.
        """
        self._check_parameters()
        prior = self.prior
        if prior is None:
            raise ValueError(
                f"{type(self).__name__} got prior=None. Pass a prior as the first argument: "
                "kd.problems.make(...) returns one as .prior for every built-in problem; otherwise use "
                "kd.priors.GaussianPrior(mean, cov), kd.priors.GaussianRandomFieldPrior(shape=...), "
                "kd.problems.fitted_gaussian_prior(images) or kd.priors.TorchDenoiser(network, event_shape)."
            )
        if not hasattr(prior, "event_shape"):
            raise ValueError("prior must be a kalmandiff prior (with event_shape and denoise/sample).")
        if not hasattr(y, "shape") or not hasattr(y, "dtype"):
            y = np.asarray(y, dtype=float)
        if noise_std is None and callable(forward) and not isinstance(forward, ForwardProblem):
            raise ValueError(
                f"{type(self).__name__}.fit(y, forward) with a plain callable forward needs the observation "
                "noise: fit(y, forward, noise_std=0.1) (a scalar, or an array broadcastable to y). "
                "Pass noise_std=0 explicitly for noiseless data; or wrap the callable in "
                "kd.problems.BlackBox(fn, x_shape, y_shape, noise_std)."
            )
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
        if probe and self._differentiates_forward(problem):
            from ._gradients import require_gradient

            require_gradient(type(self).__name__, problem, "differentiates the forward model", acct)
        planned = self._planned_evaluations(problem)
        show_progress = _progress_enabled(self.verbose)
        # A timed probe turns the plan into seconds where someone reads it: the cost warning, the bar.
        cost = None
        costly = self._is_costly(planned)
        if (
            probe
            and planned is not None
            and (show_progress or costly)
            and not (costly and _cost_warning_stops())
        ):
            cost = self._probe_cost(problem, y_c, acct)
        self._warn_if_costly(planned, cost)
        if probe and isinstance(problem, CallableProblem):
            self._probe_forward(problem, y_c, acct, prior)
        params = self.get_params(deep=False)
        denoise = CountingDenoiser(prior, params.get("batch_size"), acct)
        y_flat = xp.reshape(y_c, (-1,))
        ctx = FitContext(
            problem=problem,
            y=y_c,
            y_flat=y_flat,
            xp=xp,
            rng=RandomSource(self.random_state, stream="solver"),
            acct=acct,
            denoise=denoise,
            forward=ForwardEvaluator(
                problem, acct, params.get("forward_batch_size"), params.get("nan_tolerance", 0.0), y_flat
            ),
            on_failure=self.on_failure,
            callbacks=list(self.callbacks or []),
        )
        if show_progress:
            from tqdm.auto import tqdm

            weights = self._progress_weights()
            total = self._n_progress_steps() if weights is None else sum(weights)
            ctx.progress_weights = weights
            unit = "it" if weights is None else "eval"  # weighted: evaluations per sample
            ctx.progress = tqdm(total=total, desc=self._progress_label(planned, cost), leave=True, unit=unit)
        return ctx

    # -- cost planning ---------------------------------------------------------
    #: the parameters ``for_budget`` may choose, most natural first (the forward evaluations grow with each)
    _BUDGET_PARAMETERS: ClassVar[tuple[str, ...]] = ("n_particles",)
    #: old parameter name -> new name (still accepted, with a DeprecationWarning)
    _RENAMED_PARAMETERS: ClassVar[dict[str, str]] = {}
    #: what this solver has in place of another solver's budget parameter (by
    #: :data:`~kalmandiff.estimators._params.PARAMETER_CONCEPTS`), for the unknown-parameter error
    _EQUIVALENT_PARAMETERS: ClassVar[dict[str, str]] = {
        "steps": "its number of noise levels is n_steps",
        "updates": "it makes one data step per noise level (n_steps sets how many)",
        "queries": "it has no per-step query budget (n_particles sets how many members are evaluated)",
    }

    def expected_evaluations(self, problem=None, *, n_particles: int | None = None, **options):
        """The evaluations a run of this configuration makes, by formula, before any compute.

        Parameters
        ----------
        problem : ForwardProblem or callable, optional
            The forward model the run will use.  Given it, the counts are
            exact (or an upper bound, flagged, where the run stops on a
            data-dependent criterion); without it a solver whose cost depends
            on the problem (DiffPIR: a linear problem's closed-form data step
            makes no forward evaluations) plans for a nonlinear one and says
            so (``exact`` False).  A ``kd.problems.make`` instance works too.
        n_particles : int, optional
            Count for this many particles instead of ``n_particles``.
        **options
            Solver-specific (DiffPIR's ``data_step``).

        Returns
        -------
        PlannedEvaluations
            A dict with ``n_denoiser_evals``, ``n_sequential_denoiser_evals``,
            ``n_forward_evals``, ``n_sequential_forward_evals``,
            ``n_forward_vjps`` and ``n_denoiser_vjps`` (the keys of
            ``stats_`` that a run reaches: totals over particles, and
            sequential calls), and ``upper_bound`` / ``exact`` / ``note``
            saying how certain they are.
        """
        from ._planning import PlannedEvaluations, planning_arguments

        problem, n_particles = planning_arguments(type(self), problem, n_particles)
        J = int(self.n_particles if n_particles is None else n_particles)
        counts = self._planned_counts(problem, J, **options)
        upper, exact, note = self._plan_certainty(problem, **options)
        return PlannedEvaluations(counts, upper_bound=upper, exact=exact, note=note)

    def _planned_counts(self, problem, n_particles: int) -> dict[str, int]:  # pragma: no cover - abstract
        """The counts of :meth:`expected_evaluations` for ``n_particles`` particles (override)."""
        raise NotImplementedError(f"{type(self).__name__} does not plan its evaluations.")

    def _plan_certainty(self, problem) -> tuple[bool, bool, str]:
        """``(upper_bound, exact, note)`` of the plan for ``problem`` (override; default exact)."""
        upper = self._planned_is_bound()
        return upper, not upper, ""

    @classmethod
    def for_budget(cls, prior, n_forward_evals: int, *, problem=None, **params):
        """A solver whose planned forward evaluations fit ``n_forward_evals``, for comparisons at equal cost.

        The parameters in ``cls._BUDGET_PARAMETERS`` that ``params`` leaves
        free are chosen (the first one as large as the budget allows; the
        next one lowered below its default only where the first at its
        smallest does not fit, or where that fills the budget better); the
        rest are ``params`` and the defaults.  A non-adaptive solver then
        spends the budget to within 10% below it wherever one step of its
        budget parameters is under a tenth of the budget; an adaptive one
        (EKI's data-misfit controller) spends at most the budget.

        Parameters
        ----------
        prior : Prior
        n_forward_evals : int
            The budget: forward-model evaluations, as ``stats_["n_forward_evals"]`` counts them.
        problem : ForwardProblem or callable, optional
            The forward model (DiffPIR's cost depends on it; see :meth:`expected_evaluations`).
        **params
            Other constructor parameters; budget parameters given here are kept.

        Returns
        -------
        solver
            Unfitted; ``solver.expected_evaluations(problem)["n_forward_evals"] <= n_forward_evals``.

        Raises
        ------
        kalmandiff.estimators.BudgetError
            A ValueError when no configuration fits (it names the smallest budget that does).
        """
        from ._planning import solver_for_budget

        return solver_for_budget(cls, prior, n_forward_evals, problem=problem, **params)

    def set_params(self, **params):
        """Set parameters, as scikit-learn's ``set_params``; old names work with a DeprecationWarning."""
        from ._params import resolve_parameter_names

        known = set(self._get_param_names())
        if not known.issuperset(k.partition("__")[0] for k in params):
            top = {k: v for k, v in params.items() if "__" not in k}
            nested = {k: v for k, v in params.items() if "__" in k}
            params = {**resolve_parameter_names(type(self), top, known), **nested}
        return super().set_params(**params)

    def _planned_evaluations(self, problem=None) -> dict | None:
        """``expected_evaluations(problem)``, or None where a configuration cannot be costed in advance."""
        try:
            return self.expected_evaluations(problem)
        except TypeError:  # a solver written outside the package, with the old signature
            try:
                return self.expected_evaluations()
            except (AttributeError, NotImplementedError, TypeError, ValueError):
                return None
        except (AttributeError, NotImplementedError, ValueError):
            return None

    @staticmethod
    def _is_costly(planned: dict | None) -> bool:
        """Whether ``planned`` exceeds ``kd.get_config()["max_forward_evals"]``."""
        from .._config import get_config

        limit = get_config()["max_forward_evals"]
        return planned is not None and limit is not None and int(planned.get("n_forward_evals", 0)) > limit

    def _probe_cost(self, problem, y, acct: Accounting):
        """A timed probe (:func:`~kalmandiff.estimators._cost.probe_costs`) of this run's forward model
        and denoiser, its calls counted as probe evaluations; None if the probe itself fails."""
        from ._cost import probe_costs

        try:
            cost = probe_costs(problem, self.prior, like=y, batch=2, budget_s=1.0)
        except Exception:  # noqa: BLE001 - an estimate is optional; fit reports real errors itself
            return None
        acct.n_forward_probe_evals += cost.n_forward
        return cost

    def _warn_if_costly(self, planned: dict | None, cost=None) -> None:
        """A :class:`~kalmandiff.CostWarning` before a run that plans more forward evaluations than allowed.

        ``cost`` (a :class:`~kalmandiff.estimators._cost.CostProbe`) adds the estimated wall time.
        """
        from .._config import CostWarning, get_config

        if not self._is_costly(planned):
            return
        limit = get_config()["max_forward_evals"]
        n_fwd = int(planned.get("n_forward_evals", 0))
        seconds = "" if cost is None else f", {cost.describe(planned)} on this machine (timed probe)"
        warnings.warn(
            f"{type(self).__name__} plans {_qualifier(planned, self)}{n_fwd:,} forward evaluations "
            f"({int(planned.get('n_sequential_forward_evals', 0)):,} sequential) and "
            f"{int(planned.get('n_denoiser_evals', 0)):,} denoiser evaluations{seconds}, more than "
            f"max_forward_evals={limit:,.0f}. Lower {' / '.join(self._BUDGET_PARAMETERS)} (see "
            f"expected_evaluations(); {type(self).__name__}.for_budget(prior, n_forward_evals) chooses them "
            "for a budget), or raise the limit with kd.set_config(max_forward_evals=...) (None: never warn).",
            CostWarning,
            stacklevel=4,
        )

    def _progress_label(self, planned: dict | None, cost=None) -> str:
        """The progress bar's description: the solver, its planned evaluations and (probed) time."""
        from ._cost import format_seconds

        name = type(self).__name__.removesuffix("Solver")
        if planned is None:
            return name
        bound = _qualifier(planned, self)
        eta = "" if cost is None else f", ~{format_seconds(cost.seconds(planned)[0])}"
        return (
            f"{name} [{bound}{_short_count(planned.get('n_forward_evals', 0))} forward, "
            f"{_short_count(planned.get('n_denoiser_evals', 0))} denoiser evals planned{eta}]"
        )

    def _planned_is_bound(self) -> bool:
        """Whether ``expected_evaluations()`` is an upper bound (a run may stop earlier) rather than exact."""
        return False

    def _progress_weights(self) -> list[int] | None:
        """Progress units per recorded step where steps differ in cost (None: one unit per step)."""
        return None

    def _differentiates_forward(self, problem) -> bool:
        """Whether this run takes gradients of ``problem`` (from the registry; DiffPIR decides per problem)."""
        from ._registry import is_derivative_free

        return not is_derivative_free(type(self))

    @staticmethod
    def _probe_forward(problem, y, acct: Accounting, prior=None) -> None:
        """Call a plain callable forward once, on one zero input, to check its output shape.

        A ForwardProblem declares ``y_shape``, which is checked against ``y``
        without a call; a plain callable can only be checked by calling it,
        and this is done before any denoiser work.  The call is counted in
        ``stats_["n_forward_probe_evals"]``, not in ``n_forward_evals``.
        The input has the prior's event shape: a shape error raised by the
        callable is reported as a prior that does not fit it; one output per
        particle of another shape than ``y`` as a ``y`` that does not fit it.
        """
        xp = get_namespace(y)
        shape = (1, *problem.x_shape)
        x = xp.zeros(shape, dtype=y.dtype, device=array_device(y))
        try:
            out = problem.forward(x)
        except (ValueError, TypeError, IndexError, RuntimeError) as exc:
            if not _looks_like_a_shape_error(exc):
                raise
            raise ValueError(
                f"the forward callable failed on one particle of shape {shape}, the event_shape "
                f"{tuple(problem.x_shape)} of the prior {prior!r}: {type(exc).__name__}: {exc}. Does the "
                f"prior fit the forward model? Its samples must have the shape the forward model takes "
                f"(after the particle axis); y has shape {tuple(y.shape)}."
            ) from exc
        acct.n_forward_probe_evals += 1
        expected = (1, *problem.y_shape)
        if not hasattr(out, "shape"):
            raise ValueError(
                f"the forward callable returned a {type(out).__name__}, not an array, for one particle of "
                f"shape {shape}; return an array of shape {expected} (NumPy, CuPy or torch, "
                "e.g. numpy.asarray(result)): a leading particle axis, then y's shape."
            )
        got = tuple(out.shape)
        if got != expected and got[:1] == (1,):
            raise ValueError(
                f"y has shape {tuple(y.shape)}, but the forward callable returns shape {got[1:]} per "
                f"particle: pass the observation y of shape {got[1:]} that this forward model predicts "
                f"(its output for one particle of shape {shape} had shape {got})."
            )
        if got != expected:
            raise ValueError(
                f"the forward callable returned shape {got} for one particle of shape {shape}; expected "
                f"{expected} (a leading particle axis, then y's shape)."
            )

    def _n_progress_steps(self) -> int | None:
        return getattr(self, "n_steps", None)

    def _to_compute_namespace(self, y):
        if self.device is None:
            get_namespace(y)  # raises for unsupported inputs
            return y
        xp = namespace_for_device(self.device)
        return xp.asarray(to_numpy(y))

    # -- helpers for subclasses ---------------------------------------------
    @staticmethod
    def _flat(X):
        xp = get_namespace(X)
        return xp.reshape(X, (X.shape[0], -1))


def _qualifier(planned, solver) -> str:
    """``"up to "`` for an upper bound, ``"about "`` for a plan that depends on the problem, else ``""``."""
    qualifier = getattr(planned, "qualifier", None)
    if qualifier is not None:
        return qualifier
    return "up to " if solver._planned_is_bound() else ""


def _looks_like_a_shape_error(exc: BaseException) -> bool:
    """Whether an exception from a forward call reads as a shape mismatch (NumPy, torch, CuPy wording)."""
    text = str(exc).lower()
    return any(
        word in text
        for word in ("shape", "dimension", "broadcast", "matmul", "size", "mismatch", "aligned", "reshape")
    )


def _move_like(arr, like):
    """Return ``arr`` in the namespace and device of ``like`` (identity if already there)."""
    try:
        if get_namespace(arr) is get_namespace(like) and array_device(arr) == array_device(like):
            return arr
    except TypeError:
        pass
    return asarray_like(to_numpy(arr), like)


#: The parameters every solver shares, one block for every solver's docstring (``%(shared)s``).
SHARED_PARAMETERS = """forward_batch_size : int or None, default None
        Forward-model chunk size (None: every evaluation of a step in one call).
    nan_tolerance : float, default 0.0
        An evaluation fails when more than this fraction of its outputs is
        not finite; isolated non-finite entries of the others are imputed
        with the successful members' mean of that datum.
    device : {None, "cpu", "cuda"}, default None
        Where the computation runs; None follows ``y``.
    random_state : None, int or numpy.random.Generator
        Seeds the solver's own random stream (independent of a problem
        instance's truth and noise given the same integer).
    verbose : bool or "auto", default "auto"
        Progress bar (on in terminals and notebooks, off under CI/pytest).
    callbacks : list of callables, optional
        Each receives the per-step record (see ``history_``); returning True
        (or raising StopIteration) stops the run."""


def fill_docstring(cls):
    """Insert the shared parameter blocks at ``%(common)s`` (a family's, e.g. the guided
    solvers') and ``%(shared)s`` in a solver's docstring."""
    doc = cls.__doc__ or ""
    common = getattr(cls, "_COMMON_PARAMETERS_DOC", None)
    if common is not None:
        doc = doc.replace("%(common)s", common)
    cls.__doc__ = doc.replace("%(shared)s", SHARED_PARAMETERS)
    return cls
