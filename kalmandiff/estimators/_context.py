"""The :class:`FitContext`: what a solver's loop sees of one run.

It bundles the pieces of the framework a loop talks to (the observation,
the counted denoiser and forward model, the failure policy, the recorder
and the random source) and forwards the calls a solver makes to the piece
that owns them, so a solver writes ``ctx.misfit(G)`` or ``ctx.record(...)``
without knowing which room of the framework answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._backend import RandomSource, array_device
from ._evaluation import CountingDenoiser, ForwardEvaluator
from ._failures import FailurePolicy
from ._observation import Observation
from ._protocol import VJPRequest
from ._recorder import Accounting, Recorder

__all__ = ["FitContext"]


@dataclass
class FitContext:
    """Everything a solver's loop needs during one ``fit``.

    Attributes
    ----------
    observation : Observation
        ``y`` and its noise: misfit, residuals, weights.
    rng : RandomSource
        The solver's own random stream.
    acct : Accounting
    denoise : CountingDenoiser
        The prior's denoiser, counted and chunked (unused by EKI).
    forward : ForwardEvaluator
    failures : FailurePolicy
        ``on_failure`` applied (:meth:`FailurePolicy.update` in one call).
    recorder : Recorder
        ``history_``, progress and callbacks.
    """

    observation: Observation
    rng: RandomSource
    acct: Accounting
    denoise: CountingDenoiser
    forward: ForwardEvaluator
    failures: FailurePolicy
    recorder: Recorder

    # -- the data ------------------------------------------------------------
    @property
    def problem(self):
        """The forward problem (a :class:`~kalmandiff.problems.ForwardProblem`)."""
        return self.observation.problem

    @property
    def y(self):
        """The observation in the compute namespace, shape ``problem.y_shape``."""
        return self.observation.y

    @y.setter
    def y(self, value) -> None:
        self.observation.y = value

    @property
    def y_flat(self):
        """The observation flattened, ``(m,)``."""
        return self.observation.y_flat

    @y_flat.setter
    def y_flat(self, value) -> None:
        self.observation.y_flat = value

    @property
    def xp(self) -> Any:
        """The namespace of the computation."""
        return self.observation.xp

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.problem.x_shape)

    def like(self, dtype=None):
        """A zero-size array fixing namespace, device and dtype of new arrays."""
        return self.xp.zeros(1, dtype=self.y.dtype if dtype is None else dtype, device=array_device(self.y))

    def misfit(self, G):
        """:meth:`Observation.misfit`: the recorded data misfit ``(J,)`` of flattened ``G``."""
        return self.observation.misfit(G)

    def positive_noise_std(self, update: str):
        """:meth:`Observation.positive_noise_std`."""
        return self.observation.positive_noise_std(update)

    def flat_residual(self, G, data):
        """:meth:`Observation.flat_residual`."""
        return self.observation.flat_residual(G, data)

    def weighted_residual(self, G):
        """:meth:`Observation.weighted_residual`."""
        return self.observation.weighted_residual(G)

    # -- evaluation ------------------------------------------------------------
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

    # -- the failure policy (FailurePolicy) -----------------------------------------
    def handle_failures(self, failed):
        """:meth:`FailurePolicy.check`: apply the policy; the mask of successes."""
        return self.failures.check(failed)

    def take_ok(self, A, ok):
        """:meth:`FailurePolicy.take_ok`."""
        return self.failures.take_ok(A, ok)

    def merge_successes(self, X_flat, X_ok, ok):
        """:meth:`FailurePolicy.merge`."""
        return self.failures.merge(X_flat, X_ok, ok)

    def resample_failed(self, X_flat, ok):
        """:meth:`FailurePolicy.resample`."""
        return self.failures.resample(X_flat, ok)

    # -- recording (Recorder) -------------------------------------------------------
    def record(self, step: int, **values) -> None:
        """:meth:`Recorder.record`: one per-step record (keys of ``HISTORY_KEYS`` and extras)."""
        self.recorder.record(step, **values)

    def spread(self, X) -> float:
        """Mean over coordinates of the ensemble standard deviation."""
        return self.recorder.spread(X)

    @property
    def history(self) -> list:
        return self.recorder.history

    @property
    def stopped_early(self) -> bool:
        """True once a callback asked the run to stop."""
        return self.recorder.stopped_early

    @property
    def progress(self):
        return self.recorder.progress
