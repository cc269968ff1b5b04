"""The driver: runs a solver's step generator under ``fit``, under ask/tell, and across checkpoints.

A solver's ``_iterate(ctx, state)`` (:mod:`._protocol`) yields requests;
:class:`RunDriver` answers them itself under :meth:`~RunDriver.fit` and hands
them to the user under :meth:`~RunDriver.start` / :meth:`~RunDriver.ask` /
:meth:`~RunDriver.tell`, writes checkpoints at the generator's safe points,
resumes from a matching one, and sets every fitted attribute, in
:meth:`~RunDriver._finish`, from what the generator returns.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .._backend import asarray_like, get_namespace, move_like, to_numpy
from .._config import DivergenceWarning
from ..problems._base import CallableProblem
from ._checkpoint import CheckpointStore, fingerprint
from ._context import FitContext
from ._estimator import NotFittedError
from ._protocol import Fitted, SafePoint, VJPRequest
from ._setup import make_context

__all__ = ["RunDriver", "DIVERGENCE_MISFIT_RATIO"]

#: a run whose final data misfit exceeds its first by this factor has diverged (DivergenceWarning)
DIVERGENCE_MISFIT_RATIO = 10.0
#: what every run sets, whatever the solver
_RUN_ATTRIBUTES = ("particles_", "history_", "stats_", "stopped_early_", "n_particles_")


def _not_called(X):  # pragma: no cover - guards the ask/tell mode
    raise RuntimeError("in ask/tell mode the solver never calls the forward model itself.")


class RunDriver:
    """The run methods of every solver: ``fit``, ask/tell, checkpoints (a mixin of BaseSolver)."""

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
        ctx = make_context(self, y, forward, noise_std)
        self._begin(ctx, y, checkpoint, checkpoint_every, resume)
        request = self._advance(None)
        while request is not None:
            request = self._advance(ctx.evaluate(request))
        return self

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
                make_context(self, y, None, None, probe=False)  # the prior=None error
            forward = CallableProblem(_not_called, self.prior.event_shape, tuple(y.shape), noise_std)
            noise_std = None
        ctx = make_context(self, y, forward, noise_std, probe=False)
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
            return VJPRequest(move_like(request.X, self._y_like), move_like(V, self._y_like))
        return move_like(request.X, self._y_like)

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
        values = move_like(values, ctx.y) if hasattr(values, "shape") else ctx.xp.asarray(np.asarray(values))
        if isinstance(request, VJPRequest):
            answer = move_like(ctx.forward.accept_vjp(values, request.X), request.X)
        else:
            G, failed = ctx.forward.accept(values, request.X.shape[0])
            answer = (move_like(G, request.X), failed)
        self._asked = False
        self._pending = self._advance(answer)
        return self

    @property
    def done_(self) -> bool:
        """True when the last ask/tell or fit run is complete."""
        return hasattr(self, "particles_") and getattr(self, "_pending", None) is None

    def _begin(self, ctx: FitContext, y, checkpoint, checkpoint_every, resume: str = "auto") -> None:
        """Set up a run: the checkpoint store, resumed state, and the solver's step generator."""
        self._ctx = ctx
        self._y_like = y
        self._store = None
        self._pending = None
        for name in (*_RUN_ATTRIBUTES[:3], *getattr(self, "_solver_attributes", ())):
            self.__dict__.pop(name, None)
        state = None
        if checkpoint is not None:
            self._store = CheckpointStore(checkpoint, checkpoint_every, fingerprint(self, ctx.y), resume)
            payload = self._store.load()
            if payload is not None:
                state = self._restore(ctx, payload)
        self._gen = self._iterate(ctx, state)

    @staticmethod
    def _restore(ctx: FitContext, payload: dict) -> dict:
        ctx.rng.set_state(payload["rng"])
        ctx.acct.restore(payload["counters"], payload["elapsed_s"])
        ctx.recorder.resume(payload["history"])
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
            ctx.recorder.close()
            raise

    def _save(self, state: dict, done: bool = False) -> None:
        ctx = self._ctx
        elapsed = time.perf_counter() - ctx.acct.t_start
        self._store.save(state, ctx.rng.get_state(), ctx.acct.counters(), elapsed, list(ctx.history), done)

    def _finish(self, result) -> None:
        """Set the fitted attributes, the one place they are set, from what the generator returned.

        ``result`` is the final particles, or a :class:`~kalmandiff.estimators._protocol.Fitted`
        with the particles and the solver's further fitted attributes.
        """
        ctx = self._ctx
        fitted = result if isinstance(result, Fitted) else Fitted(result)
        particles = fitted.particles
        ctx.recorder.close(finished=True)
        if self._store is not None:
            self._save({"final": particles}, done=True)
        self._warn_if_diverged(particles, ctx.history, ctx.recorder.last_misfit_finite)
        self.particles_ = particles
        self.history_ = ctx.history
        self.stats_ = ctx.acct.as_dict()
        self.stopped_early_ = ctx.stopped_early
        self.n_particles_ = int(particles.shape[0])
        for name, value in fitted.attributes.items():
            setattr(self, name, value)
        self._solver_attributes = tuple(fitted.attributes)

    def _warn_if_diverged(self, particles, history: list[dict], last_misfit_finite: bool = True) -> None:
        """A :class:`~kalmandiff.DivergenceWarning` when the run ends non-finite or far worse than it began.

        Diverged means: a non-finite particle, or a final recorded data
        misfit (``misfit_mean``) more than :data:`DIVERGENCE_MISFIT_RATIO`
        times the first one (the first guided step's estimate is close to
        the prior mean, so a converging run ends well below it), or a
        final misfit that is not finite.  A warning, not an error: the
        particles are kept for inspection.
        """
        xp = get_namespace(particles)
        name = type(self).__name__
        if not bool(xp.all(xp.isfinite(particles))):
            flat = xp.reshape(particles, (particles.shape[0], -1))
            n_bad = int(np.sum(~np.all(np.isfinite(to_numpy(flat)), axis=1)))
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
