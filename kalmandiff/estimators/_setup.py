"""Setting up one run: the input checked, the forward model wrapped and probed, the context built.

:func:`make_context` is what ``fit`` and ``start`` call first.  Each step is
a short function, in the order a run needs them: the parameters and the
prior, the data and the forward problem, the gradient check, the cost plan
(its warning, and a timed probe where someone will read it), the shape
probe of a plain callable, and the :class:`FitContext` with its progress bar.
"""

from __future__ import annotations

import numpy as np

from .._backend import RandomSource, array_device, get_namespace, namespace_for_device, to_numpy
from ..problems._base import CallableProblem, ForwardProblem, as_problem
from ._context import FitContext
from ._cost import probe_costs
from ._evaluation import CountingDenoiser, ForwardEvaluator
from ._failures import FailurePolicy
from ._gradients import require_gradient
from ._notices import cost_warning_stops, is_costly, progress_label, warn_if_costly
from ._observation import Observation
from ._recorder import Accounting, Recorder, progress_enabled

__all__ = ["make_context"]


def make_context(solver, y, forward, noise_std, probe: bool = True) -> FitContext:
    """Validate the parameters and the input; build the run's :class:`FitContext`.

    ``probe=False`` (ask/tell, where the user evaluates): the forward is
    neither called to check its output shape nor checked for autograd.
    """
    solver._check_parameters()
    prior = checked_prior(solver)
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        y = np.asarray(y, dtype=float)
    problem = checked_problem(solver, prior, y, forward, noise_std)
    y_c = checked_data(solver, y, problem)
    acct = Accounting()
    if probe and solver._differentiates_forward(problem):
        require_gradient(type(solver).__name__, problem, "differentiates the forward model", acct)
    planned = solver._planned_evaluations(problem)
    show_progress = progress_enabled(solver.verbose)
    cost = announce_cost(solver, problem, y_c, acct, planned, probe and show_progress, probe)
    if probe and isinstance(problem, CallableProblem):
        check_callable_output(problem, y_c, acct, prior)
    recorder = Recorder(acct, solver.callbacks or [])
    if show_progress:
        attach_progress_bar(solver, recorder, progress_label(solver, planned, cost))
    return build_context(solver, problem, y_c, acct, recorder)


def checked_prior(solver):
    """The solver's prior, or a ValueError saying what to pass."""
    prior = solver.prior
    if prior is None:
        raise ValueError(
            f"{type(solver).__name__} got prior=None. Pass a prior as the first argument: "
            "kd.problems.make(...) returns one as .prior for every built-in problem; otherwise use "
            "kd.priors.GaussianPrior(mean, cov), kd.priors.GaussianRandomFieldPrior(shape=...), "
            "kd.problems.fitted_gaussian_prior(images) or kd.priors.TorchDenoiser(network, event_shape)."
        )
    if not hasattr(prior, "event_shape"):
        raise ValueError("prior must be a kalmandiff prior (with event_shape and denoise/sample).")
    return prior


def checked_problem(solver, prior, y, forward, noise_std) -> ForwardProblem:
    """``forward`` as a ForwardProblem of the prior's shape; ``noise_std`` only for a plain callable."""
    if noise_std is None and callable(forward) and not isinstance(forward, ForwardProblem):
        raise ValueError(
            f"{type(solver).__name__}.fit(y, forward) with a plain callable forward needs the observation "
            "noise: fit(y, forward, noise_std=0.1) (a scalar, or an array broadcastable to y). "
            "Pass noise_std=0 explicitly for noiseless data; or wrap the callable in "
            "kd.problems.BlackBox(fn, x_shape, y_shape, noise_std)."
        )
    problem = as_problem(forward, y, x_shape=prior.event_shape, noise_std=noise_std)
    if noise_std is not None and isinstance(forward, ForwardProblem):
        raise ValueError("noise_std is only for a plain callable forward; a ForwardProblem carries its own.")
    if tuple(problem.x_shape) != tuple(prior.event_shape):
        raise ValueError(
            f"the prior's event_shape {tuple(prior.event_shape)} differs from the problem's "
            f"x_shape {tuple(problem.x_shape)}."
        )
    return problem


def checked_data(solver, y, problem):
    """``y`` in the compute namespace (``device``), real floating, finite, of the problem's shape."""
    y_c = to_compute_namespace(y, solver.device)
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
    return y_c


def to_compute_namespace(y, device):
    """``y`` where the computation runs: as it is for ``device=None``, else moved there."""
    if device is None:
        get_namespace(y)  # raises for unsupported inputs
        return y
    xp = namespace_for_device(device)
    return xp.asarray(to_numpy(y))


def announce_cost(solver, problem, y, acct: Accounting, planned, for_the_bar: bool, probe: bool):
    """Warn before a costly run; return a timed probe where someone reads it (else None).

    The probe turns the plan into seconds for the cost warning and the
    progress bar; it is skipped when the warning is about to stop the run
    (it calls the forward model) and under ask/tell (``probe`` False).
    """
    cost = None
    costly = is_costly(planned)
    if probe and planned is not None and (for_the_bar or costly) and not (costly and cost_warning_stops()):
        cost = timed_probe(solver, problem, y, acct)
    warn_if_costly(solver, planned, cost, stacklevel=4)  # the user's fit/start call
    return cost


def timed_probe(solver, problem, y, acct: Accounting):
    """A timed probe (:func:`~kalmandiff.estimators._cost.probe_costs`) of this run's forward model
    and denoiser, its calls counted as probe evaluations; None if the probe itself fails."""
    try:
        cost = probe_costs(problem, solver.prior, like=y, batch=2, budget_s=1.0)
    except Exception:  # noqa: BLE001 - an estimate is optional; fit reports real errors itself
        return None
    acct.n_forward_probe_evals += cost.n_forward
    return cost


def check_callable_output(problem, y, acct: Accounting, prior=None) -> None:
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
    _check_output_shape(out, shape, (1, *problem.y_shape), tuple(y.shape))


def _check_output_shape(out, shape, expected, y_shape) -> None:
    """The output of one probe call: an array of ``expected`` shape, or a ValueError saying what it was."""
    if not hasattr(out, "shape"):
        raise ValueError(
            f"the forward callable returned a {type(out).__name__}, not an array, for one particle of "
            f"shape {shape}; return an array of shape {expected} (NumPy, CuPy or torch, "
            "e.g. numpy.asarray(result)): a leading particle axis, then y's shape."
        )
    got = tuple(out.shape)
    if got != expected and got[:1] == (1,):
        raise ValueError(
            f"y has shape {y_shape}, but the forward callable returns shape {got[1:]} per "
            f"particle: pass the observation y of shape {got[1:]} that this forward model predicts "
            f"(its output for one particle of shape {shape} had shape {got})."
        )
    if got != expected:
        raise ValueError(
            f"the forward callable returned shape {got} for one particle of shape {shape}; expected "
            f"{expected} (a leading particle axis, then y's shape)."
        )


def _looks_like_a_shape_error(exc: BaseException) -> bool:
    """Whether an exception from a forward call reads as a shape mismatch (NumPy, torch, CuPy wording)."""
    text = str(exc).lower()
    words = ("shape", "dimension", "broadcast", "matmul", "size", "mismatch", "aligned", "reshape")
    return any(word in text for word in words)


def attach_progress_bar(solver, recorder: Recorder, label: str) -> None:
    """A tqdm bar on ``recorder``: one unit per step, or the steps' weights where they differ in cost."""
    from tqdm.auto import tqdm  # here: tqdm is only needed when a bar is shown

    weights = solver._progress_weights()
    total = solver._n_progress_steps() if weights is None else sum(weights)
    recorder.progress_weights = weights
    unit = "it" if weights is None else "eval"  # weighted: evaluations per sample
    recorder.progress = tqdm(total=total, desc=label, leave=True, unit=unit)


def build_context(solver, problem, y, acct: Accounting, recorder: Recorder) -> FitContext:
    """The :class:`FitContext` of a checked run: observation, counted calls, failure policy, recorder."""
    params = solver.get_params(deep=False)
    observation = Observation(problem, y)
    rng = RandomSource(solver.random_state, stream="solver")
    forward = ForwardEvaluator(
        problem, acct, params.get("forward_batch_size"), params.get("nan_tolerance", 0.0), observation.y_flat
    )
    return FitContext(
        observation=observation,
        rng=rng,
        acct=acct,
        denoise=CountingDenoiser(solver.prior, params.get("batch_size"), acct),
        forward=forward,
        failures=FailurePolicy(solver.on_failure, problem, acct, rng, observation.xp),
        recorder=recorder,
    )
