"""Is the uncertainty right?  Interval coverage, CRPS and simulation-based calibration.

Three questions a user can ask of an ensemble (``particles``, shape
``(J, *x_shape)``) that claims to sample a posterior:

* One run with a known truth: :func:`interval_coverage` (how many
  coordinates fall inside their central credible interval),
  :func:`crps` and :func:`energy_score` (proper scores: lower is better, and
  only the true posterior minimises them in expectation), and
  :func:`spread_skill` (ensemble spread against the error of its mean).
* Many runs, truths drawn from the prior: :func:`sbc`, simulation-based
  calibration (Talts et al. 2018, arXiv:1804.06788).  If a solver samples
  the exact posterior, the rank of the truth among the particles is uniform
  on ``{0, ..., J}`` for every scalar summary, and every central interval
  covers the truth at its nominal rate.  A U-shaped rank histogram means
  over-confidence (spread too small), a hump under-confidence, a slope bias.
* Does a solver class promise a calibrated ensemble at all?
  :func:`promises_calibration` reads the solver's ``calibrated_when``
  declaration (see there).

The single-run functions are written against the Python array API and take
NumPy, CuPy, torch or ``array_api_strict`` arrays; :func:`sbc` fits on
whatever the forward model and prior produce and summarises on the host.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime
import json
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._backend import asarray_like, get_namespace, stream_seed, to_numpy

__all__ = [
    "interval_coverage",
    "central_interval",
    "crps",
    "energy_score",
    "spread_skill",
    "sbc",
    "sbc_plan",
    "SBCResult",
    "load_sbc",
    "promises_calibration",
    "LEVELS",
]

#: the nominal levels that :func:`sbc` reports by default
LEVELS = (0.5, 0.9)


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------


def _ensemble(particles, x_true=None, name: str = "particles"):
    """``(xp, X (J, d), z (d,) or None, x_shape)``, with shapes and values checked."""
    if not hasattr(particles, "shape"):
        particles = np.asarray(particles, dtype=float)
    xp = get_namespace(particles)
    if particles.ndim < 2:
        raise ValueError(
            f"{name} must have shape (J, *x_shape) with J >= 2 members (got {tuple(particles.shape)})."
        )
    J = int(particles.shape[0])
    if J < 2:
        raise ValueError(f"{name} needs at least 2 members to define a spread (got J = {J}).")
    x_shape = tuple(particles.shape[1:])
    if not xp.isdtype(particles.dtype, "real floating"):
        particles = xp.astype(particles, xp.float64)
    X = xp.reshape(particles, (J, -1))
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(f"{name} contain NaN or infinite values.")
    if x_true is None:
        return xp, X, None, x_shape
    if not hasattr(x_true, "shape"):
        x_true = np.asarray(x_true, dtype=float)
    try:
        same = get_namespace(x_true) is xp
    except TypeError:
        same = False
    if not same:
        x_true = asarray_like(to_numpy(x_true), X)
    if tuple(x_true.shape) != x_shape:
        raise ValueError(
            f"x_true has shape {tuple(x_true.shape)}; the particles' members have shape {x_shape} "
            "(x_true is one field, without the particle axis)."
        )
    z = xp.astype(xp.reshape(x_true, (-1,)), X.dtype)
    if not bool(xp.all(xp.isfinite(z))):
        raise ValueError("x_true contains NaN or infinite values.")
    return xp, X, z, x_shape


def _check_level(level) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a number strictly between 0 and 1, e.g. 0.9 (got {level!r}).")
    return float(level)


# --------------------------------------------------------------------------
# one run, known truth
# --------------------------------------------------------------------------


def _order_statistic(Xs, h: float):
    """Linear interpolation between sorted rows ``Xs[floor(h)]`` and ``Xs[floor(h) + 1]``."""
    J = Xs.shape[0]
    h = min(max(h, 0.0), J - 1.0)
    k = int(math.floor(h))
    if k >= J - 1:
        return Xs[J - 1, ...]
    t = h - k
    return Xs[k, ...] + t * (Xs[k + 1, ...] - Xs[k, ...])


def central_interval(particles, level: float = 0.9):
    """Pointwise central credible interval of an ensemble.

    The bounds are the ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of
    each coordinate, at the Weibull plotting positions: the ``k``-th smallest
    of ``J`` members (``k = 1..J``) stands for the quantile ``k / (J + 1)``,
    interpolated linearly between members.  With these positions a truth
    exchangeable with the members (the situation of an exact posterior
    sampler) falls inside at the nominal rate on average, whatever ``J``:
    exactly so when both bounds fall on members (``level = 0.8`` at
    ``J = 9``), within about 0.01 between them.
    NumPy's default positions ``(k - 1)/(J - 1)`` give intervals that cover
    only about ``level (J - 1)/(J + 1)`` of the time (0.79 instead of 0.9 at
    ``J = 16``).  Levels beyond ``(J - 1)/(J + 1)`` are clipped to the
    ensemble's range.

    Parameters
    ----------
    particles : array of shape ``(J, *x_shape)``
    level : float in (0, 1), default 0.9

    Returns
    -------
    lower, upper : arrays of shape ``x_shape``
        In the namespace of ``particles``.
    """
    level = _check_level(level)
    xp, X, _, x_shape = _ensemble(particles)
    J = X.shape[0]
    Xs = xp.sort(X, axis=0)
    lower = _order_statistic(Xs, (J + 1) * (1 - level) / 2 - 1)
    upper = _order_statistic(Xs, (J + 1) * (1 + level) / 2 - 1)
    return xp.reshape(lower, x_shape), xp.reshape(upper, x_shape)


def interval_coverage(particles, x_true, level: float = 0.9) -> float:
    """The fraction of coordinates whose central credible interval covers the truth.

    Parameters
    ----------
    particles : array of shape ``(J, *x_shape)``
        An ensemble (NumPy, CuPy, torch or ``array_api_strict``).
    x_true : array of shape ``x_shape``
        The truth (moved to the particles' namespace if it is elsewhere).
    level : float in (0, 1), default 0.9
        Nominal level of the interval (:func:`central_interval`).

    Returns
    -------
    float
        In ``[0, 1]``; ``level`` for a calibrated ensemble, on average over
        truths.  The coordinates of one field are correlated, so the error
        of this fraction is larger than the binomial error
        ``sqrt(level (1 - level) / d)`` of ``d`` independent checks; over
        independent trials (:func:`sbc`) use the trial-to-trial spread.

    Examples
    --------
    >>> import numpy as np
    >>> from kalmandiff.diagnostics import interval_coverage
    >>> rng = np.random.default_rng(0)
    >>> X, x = rng.standard_normal((64, 2000)), rng.standard_normal(2000)
    >>> round(interval_coverage(X, x, level=0.9), 1)
    0.9
    """
    xp, X, z, _ = _ensemble(particles, x_true)
    lower, upper = central_interval(X, level)
    inside = xp.astype((z >= lower) & (z <= upper), X.dtype)
    return float(xp.mean(inside))


def _pair_sum(X):
    """``sum_{j,k} |x_j - x_k|`` per column of ``X (J, d)``, by sorting: ``O(J log J)`` per column."""
    xp = get_namespace(X)
    J = X.shape[0]
    Xs = xp.sort(X, axis=0)
    i = xp.arange(1, J + 1, dtype=X.dtype, device=getattr(X, "device", None))
    w = xp.reshape(2 * i - J - 1, (J, 1))
    return 2 * xp.sum(w * Xs, axis=0)


def crps(particles, x_true, fair: bool = True):
    """Continuous ranked probability score of an ensemble, per coordinate.

    ``CRPS = (1/J) sum_j |x_j - z| - c sum_{j,k} |x_j - x_k|`` with
    ``c = 1 / (2 J (J - 1))`` for the fair estimator (Ferro 2014; unbiased
    for the CRPS of the distribution the members are drawn from, so that
    ensembles of different sizes compare) and ``c = 1 / (2 J^2)`` for the
    CRPS of the empirical distribution (``fair=False``).  The pair sum is
    computed after sorting.  Lower is better; it has the units of ``x``.

    Parameters
    ----------
    particles : array of shape ``(J, *x_shape)``
    x_true : array of shape ``x_shape``
    fair : bool, default True

    Returns
    -------
    array of shape ``x_shape``
        In the namespace of ``particles``; take the mean for one number.
        For members drawn from ``N(mu, s^2)`` its expectation is
        ``s (w (2 Phi(w) - 1) + 2 phi(w) - 1/sqrt(pi))``, ``w = (z - mu)/s``.
    """
    xp, X, z, x_shape = _ensemble(particles, x_true)
    J = X.shape[0]
    skill = xp.mean(xp.abs(X - z), axis=0)
    spread = _pair_sum(X) / (2 * J * (J - 1) if fair else 2 * J * J)
    return xp.reshape(skill - spread, x_shape)


def energy_score(particles, x_true, fair: bool = True) -> float:
    """Energy score, the CRPS of the whole field: Euclidean norms in place of absolute values.

    ``ES = (1/J) sum_j ||x_j - z|| - c sum_{j,k} ||x_j - x_k||``, ``c`` as in
    :func:`crps`.  Unlike the CRPS it sees the correlations between
    coordinates.  Cost ``O(J^2 d)`` time, ``O(J^2)`` memory.

    Parameters
    ----------
    particles : array of shape ``(J, *x_shape)``
    x_true : array of shape ``x_shape``
    fair : bool, default True

    Returns
    -------
    float
        In the units of ``x``; lower is better.
    """
    xp, X, z, _ = _ensemble(particles, x_true)
    J = X.shape[0]
    skill = xp.mean(xp.sqrt(xp.sum((X - z) ** 2, axis=1)))
    C = X - xp.mean(X, axis=0)  # centring first keeps the Gram expansion accurate
    norms = xp.sum(C * C, axis=1)
    sq = xp.reshape(norms, (J, 1)) + xp.reshape(norms, (1, J)) - 2 * (C @ xp.matrix_transpose(C))
    pair = xp.sum(xp.sqrt(xp.clip(sq, 0.0, None)))
    return float(skill - pair / (2 * J * (J - 1) if fair else 2 * J * J))


def spread_skill(particles, x_true) -> float:
    """Spread over skill: ``sqrt(mean_i var_i (J + 1)/J / mean_i (mean_i - z_i)^2)``.

    For members and truth drawn from one distribution the expected squared
    error of the ensemble mean is ``(J + 1)/J`` times the expected ensemble
    variance (``var`` with ``J - 1`` in the denominator), so the ratio is
    about 1 for a calibrated ensemble, below 1 for an over-confident one
    (spread too small for its error) and above 1 for an under-confident one.

    Parameters
    ----------
    particles : array of shape ``(J, *x_shape)``
    x_true : array of shape ``x_shape``

    Returns
    -------
    float
        ``inf`` when the ensemble mean equals the truth exactly.
    """
    xp, X, z, _ = _ensemble(particles, x_true)
    J = X.shape[0]
    var = float(xp.mean(xp.var(X, axis=0, correction=1)))
    mse = float(xp.mean((xp.mean(X, axis=0) - z) ** 2))
    return math.inf if mse == 0 else math.sqrt(var * (J + 1) / J / mse)


# --------------------------------------------------------------------------
# what a solver promises
# --------------------------------------------------------------------------


def promises_calibration(solver) -> bool:
    """Whether a solver, as configured, promises an ensemble that samples the posterior.

    A solver class declares it with the class attribute ``calibrated_when``:

    * ``True``: always; ``False`` or absent: never (a point estimator, or an
      ensemble that collapses, like EnKG's ``update="paper"``);
    * a mapping ``{parameter: values}``: when every named parameter takes one
      of its values, e.g. ``{"update": ("kalman", "kalman-sqrt")}`` for
      :class:`~kalmandiff.EnKGSolver` and :class:`~kalmandiff.EKISolver`;
    * a callable ``f(solver) -> bool``.

    The testing kit's calibration check (``check_calibrated_intervals`` in
    :func:`kalmandiff.testing.check_solver`) runs on exactly the solvers for
    which this is True, at the settings the class names in its optional
    ``calibration_check_params`` (EnKG: ``{"n_steps": 80}``).  The promise is the one the solver's docstring
    makes: for linear-Gaussian problems, as the ensemble grows.

    Parameters
    ----------
    solver : estimator instance

    Returns
    -------
    bool
    """
    claim = getattr(type(solver), "calibrated_when", False)
    if isinstance(claim, bool):
        return claim
    if isinstance(claim, Mapping):
        params = solver.get_params(deep=False)
        return all(params.get(name) in tuple(values) for name, values in claim.items())
    if callable(claim):
        return bool(claim(solver))
    raise TypeError(f"{type(solver).__name__}.calibrated_when must be a bool, a mapping or a callable.")


# --------------------------------------------------------------------------
# simulation-based calibration
# --------------------------------------------------------------------------


def _summary_matrix(d: int, coordinates, n_projections: int, rng: np.random.Generator):
    """The scalar summaries as columns of ``W (d, k)``: ``f(x) = x_flat @ W``, and their names."""
    if coordinates is None:
        coordinates = np.sort(rng.choice(d, size=min(d, 4), replace=False))
    coordinates = np.atleast_1d(np.asarray(coordinates))
    if coordinates.dtype.kind not in "iu" or coordinates.ndim != 1:
        raise ValueError("coordinates must be a sequence of integer indices into the flattened unknown.")
    if coordinates.size and (coordinates.min() < -d or coordinates.max() >= d):
        raise ValueError(f"coordinates must index the flattened unknown of {d} entries (got {coordinates}).")
    coordinates = np.mod(coordinates, d)
    cols = [np.eye(1, d, int(i)).ravel() for i in coordinates]
    names = [f"x[{int(i)}]" for i in coordinates]
    cols.append(np.full(d, 1.0 / d))
    names.append("mean")
    for k in range(int(n_projections)):
        v = rng.standard_normal(d)
        cols.append(v / np.linalg.norm(v))
        names.append(f"projection {k}")
    return np.stack(cols, axis=1), names


def _root_seed(random_state) -> np.random.SeedSequence:
    """The SBC's root seed sequence: its own stream of an integer seed, or drawn from a Generator."""
    if isinstance(random_state, bool):
        raise ValueError("random_state must be None, an int or a Generator, not a bool.")
    if isinstance(random_state, (numbers.Integral, np.integer)):
        return stream_seed(int(random_state), "sbc")
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(random_state.integers(0, 2**63 - 1, size=4).tolist())
    raise ValueError(
        f"random_state must be None, an int or a numpy.random.Generator (got {type(random_state).__name__})."
    )


def _as_factory(solver_factory) -> Callable:
    if hasattr(solver_factory, "fit"):
        if not hasattr(solver_factory, "__sklearn_clone__"):
            raise ValueError("a solver given as solver_factory must be clonable (a kalmandiff solver).")
        return lambda prior, template=solver_factory: template.__sklearn_clone__().set_params(prior=prior)
    if not callable(solver_factory):
        raise ValueError(
            "solver_factory must be a callable prior -> unfitted solver (e.g. "
            "lambda prior: kd.EnKGSolver(prior, n_particles=64, update='kalman-sqrt')), or an unfitted solver."
        )
    return solver_factory


def _check_forward(forward, noise_std):
    from .problems._base import ForwardProblem

    if isinstance(forward, ForwardProblem):
        if noise_std is not None:
            raise ValueError(
                "noise_std is only for a plain callable forward; a ForwardProblem carries its own."
            )
        std = np.asarray(to_numpy(forward.noise_std), dtype=float)
    else:
        if not callable(forward):
            raise ValueError(
                "forward must be a kalmandiff ForwardProblem or a callable on a batch (J, *x_shape) -> (J, *y_shape)."
            )
        if noise_std is None:
            raise ValueError(
                "sbc with a plain callable forward needs noise_std (the data are simulated with it and the "
                "solver is told it); pass a scalar or an array broadcastable to y."
            )
        std = np.asarray(to_numpy(noise_std), dtype=float)
    if not np.all(np.isfinite(std)) or np.any(std < 0):
        raise ValueError("noise_std must be finite and non-negative.")
    if not np.any(std > 0):
        raise ValueError(
            "sbc needs noisy data (noise_std > 0): with noiseless data the posterior of a well-determined "
            "problem is degenerate and every rank test is meaningless."
        )


def _simulate(forward, truth, noise_std, rng: np.random.Generator):
    """One noisy observation of ``truth`` (no particle axis)."""
    from .problems._base import ForwardProblem

    if isinstance(forward, ForwardProblem):
        return forward.observe(truth, random_state=rng)
    xp = get_namespace(truth)
    G = forward(xp.reshape(truth, (1, *truth.shape)))[0, ...]
    noise = np.asarray(to_numpy(noise_std), dtype=float) * rng.standard_normal(tuple(G.shape))
    return G + asarray_like(noise, G)


def _fit(solver, y, forward, noise_std):
    from .problems._base import ForwardProblem

    if isinstance(forward, ForwardProblem):
        return solver.fit(y, forward)
    return solver.fit(y, forward, noise_std=noise_std)


def _configure(solver, seed: int):
    """Give a trial's solver its own seed and silence its own progress bar."""
    params = solver.get_params(deep=False) if hasattr(solver, "get_params") else {}
    update = {"random_state": seed}
    if "verbose" in params:
        update["verbose"] = False
    if hasattr(solver, "set_params"):
        return solver.set_params(**update)
    for k, v in update.items():
        setattr(solver, k, v)
    return solver


def _ranks(f_particles: np.ndarray, f_truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of the truth among the members for each summary, ties broken at random (Talts et al.)."""
    below = np.sum(f_particles < f_truth, axis=0)
    ties = np.sum(f_particles == f_truth, axis=0)
    return below + rng.integers(0, ties + 1)


def _run_trial(factory, prior, forward, noise_std, seeds, W, levels) -> dict:
    """One SBC trial: truth from the prior, data from the truth, a fit, the truth's ranks and scores."""
    truth_seed, noise_seed, solver_seed, tie_seed = seeds
    truth = prior.sample(1, random_state=np.random.default_rng(truth_seed))[0, ...]
    y = _simulate(forward, truth, noise_std, np.random.default_rng(noise_seed))
    solver = _configure(factory(prior), int(solver_seed))
    _fit(solver, y, forward, noise_std)
    X = np.asarray(to_numpy(solver.particles_), dtype=float)
    z = np.asarray(to_numpy(truth), dtype=float)
    Xf, zf = X.reshape(X.shape[0], -1), z.ravel()
    f_particles, f_truth = Xf @ W, zf @ W
    summary_lo_hi = [central_interval(f_particles, a) for a in levels]
    return {
        "ranks": _ranks(f_particles, f_truth, np.random.default_rng(tie_seed)),
        "coverage": [interval_coverage(X, z, a) for a in levels],
        "summary_covered": [(f_truth >= lo) & (f_truth <= hi) for lo, hi in summary_lo_hi],
        "crps": float(np.mean(crps(X, z))),
        "energy_score": energy_score(X, z),
        "spread_skill": spread_skill(X, z),
        "n_particles": int(X.shape[0]),
        "stats": dict(getattr(solver, "stats_", {})),
    }


def sbc_plan(solver_factory, prior, n_trials: int) -> dict:
    """What :func:`sbc` will spend, before it runs, from the solver's ``expected_evaluations()``.

    Parameters
    ----------
    solver_factory : callable or unfitted solver
        As for :func:`sbc`.
    prior : Prior
    n_trials : int

    Returns
    -------
    dict
        ``n_fits``; ``n_forward_evals`` and ``n_denoiser_evals`` of all the
        fits (None when the solver cannot cost itself in advance); and
        ``n_simulation_forward_evals`` (one per trial, to simulate the data).
        Drawing the truths from the prior costs its sampler on top (for a
        network prior, 2 x 40 - 1 = 79 denoiser evaluations per truth at the
        default 40 Heun steps).
    """
    n_trials = _check_trials(n_trials)
    solver = _as_factory(solver_factory)(prior)
    try:
        per_fit = solver.expected_evaluations()
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        per_fit = None
    plan = {"n_fits": n_trials, "n_simulation_forward_evals": n_trials, "solver": type(solver).__name__}
    for key in ("n_forward_evals", "n_denoiser_evals", "n_forward_vjps"):
        plan[key] = None if per_fit is None else int(per_fit.get(key, 0)) * n_trials
    return plan


def _check_trials(n_trials) -> int:
    if isinstance(n_trials, bool) or not isinstance(n_trials, numbers.Integral) or n_trials < 2:
        raise ValueError(
            f"n_trials must be an integer >= 2 (got {n_trials!r}); tens to hundreds are typical."
        )
    return int(n_trials)


def _state_cost(plan: dict, verbose) -> str:
    """Warn (CostWarning) when the planned fits exceed ``max_forward_evals``; return the progress label."""
    from ._config import CostWarning, get_config

    n_fwd = plan.get("n_forward_evals")
    limit = get_config()["max_forward_evals"]
    label = f"SBC: {plan['n_fits']} fits of {plan['solver'].removesuffix('Solver')}"
    if n_fwd is not None:
        label += f" [{n_fwd:,} forward, {plan['n_denoiser_evals']:,} denoiser evals planned]"
        if limit is not None and n_fwd > limit:
            warnings.warn(
                f"{label}: more than max_forward_evals={limit:,.0f}. Lower n_trials or the solver's "
                "n_particles / n_steps, or raise the limit with kd.set_config(max_forward_evals=...).",
                CostWarning,
                stacklevel=3,
            )
    return label


def _trial_seeds(root: np.random.SeedSequence, n_trials: int) -> list[tuple[int, int, int, int]]:
    """Per trial, four independent streams: truth, noise, solver, rank ties (SeedSequence spawning)."""
    out = []
    for child in root.spawn(n_trials):
        streams = child.spawn(4)
        # 31-bit seeds: they fit netCDF-3 integers (the scipy backend has no 64-bit type)
        out.append(tuple(int(s.generate_state(1, np.uint32)[0] >> np.uint32(1)) for s in streams))
    return out


def sbc(
    solver_factory,
    prior,
    forward,
    noise_std=None,
    n_trials: int = 100,
    random_state: Any = None,
    *,
    coordinates: Sequence[int] | None = None,
    n_projections: int = 3,
    levels: Sequence[float] = LEVELS,
    executor: cf.Executor | None = None,
    verbose: bool | str = "auto",
) -> SBCResult:
    """Simulation-based calibration of a solver (Talts et al. 2018).

    Each trial draws a truth ``x ~ prior``, simulates ``y = G(x) + noise``,
    fits a new solver and records the rank of each scalar summary ``f(x)``
    among ``f(particles)``.  A solver that samples the exact posterior gives
    ranks uniform on ``{0, ..., J}`` and intervals covering at their
    nominal rates, because averaging the posterior over data drawn from the
    prior gives back the prior.  The truths must come from the prior the
    solver is given: a mismatch (truths from elsewhere) is a different test.

    The planned cost is stated before anything runs: a
    :class:`~kalmandiff.CostWarning` when the fits' planned forward
    evaluations exceed ``kd.get_config()["max_forward_evals"]``, and the
    progress bar's label (see :func:`sbc_plan` for the numbers).

    Parameters
    ----------
    solver_factory : callable or unfitted solver
        ``solver_factory(prior)`` returns a new unfitted solver (as for
        :func:`kalmandiff.testing.check_solver`); a solver instance is
        cloned for each trial.  Its ``random_state`` is replaced by each
        trial's own seed, its progress bar turned off.
    prior : Prior
        With ``sample(n, random_state)``: the truths are its samples, and the
        solver is built on it.
    forward : ForwardProblem or callable
        A problem (its own ``noise_std``) or a batched callable
        ``(J, *x_shape) -> (J, *y_shape)`` with ``noise_std``.
    noise_std : float or array, optional
        Only with a callable forward: the observation noise of the simulated
        data, also given to ``fit``.  Must be positive somewhere.
    n_trials : int, default 100
        Number of fits.  The rank test's power grows with it; with ``J``
        members and ``n_trials`` trials, coverage has a standard error of
        about ``sqrt(a (1 - a) / n_trials)`` per summary.
    random_state : None, int or numpy.random.Generator
        An int names a family: every trial derives four independent streams
        from it by :class:`~numpy.random.SeedSequence` spawning, one each for
        its truth, its noise, its solver and its rank ties, so that no
        solver's draws correlate with the truth it is scored against.
    coordinates : sequence of int, optional
        Indices into the flattened unknown whose ranks are tested (default:
        4 coordinates chosen at random once, the same in every trial).
    n_projections : int, default 3
        Random unit-vector projections ``<v, x>`` tested besides the
        coordinates and the field mean (fixed across trials).
    levels : sequence of float, default (0.5, 0.9)
        Nominal levels of the coverage reported.
    executor : concurrent.futures.Executor, optional
        Runs the trials concurrently (a thread or process pool, a Dask
        client's ``get_executor()``); for processes the factory, prior and
        forward must pickle.  None runs them one after another.
    verbose : bool or "auto", default "auto"
        One progress bar over trials (on in terminals and notebooks).

    Returns
    -------
    SBCResult

    Examples
    --------
    >>> import kalmandiff as kd
    >>> res = kd.diagnostics.sbc(lambda p: kd.EnKGSolver(p, n_particles=64, update="kalman-sqrt"),
    ...                          prior, problem, n_trials=50, random_state=0)   # doctest: +SKIP
    >>> res.coverage, res.p_value                                              # doctest: +SKIP
    """
    n_trials = _check_trials(n_trials)
    levels = tuple(_check_level(a) for a in levels)
    if not levels:
        raise ValueError("levels must name at least one nominal level, e.g. (0.5, 0.9).")
    if not hasattr(prior, "sample") or not hasattr(prior, "event_shape"):
        raise ValueError("prior must be a kalmandiff prior with sample(n, random_state) and event_shape.")
    if (
        isinstance(n_projections, bool)
        or not isinstance(n_projections, numbers.Integral)
        or n_projections < 0
    ):
        raise ValueError(f"n_projections must be a non-negative integer (got {n_projections!r}).")
    _check_forward(forward, noise_std)
    factory = _as_factory(solver_factory)
    plan = sbc_plan(factory, prior, n_trials)
    label = _state_cost(plan, verbose)
    root = _root_seed(random_state)
    summary_ss, trials_ss = root.spawn(2)
    d = int(np.prod(prior.event_shape))
    W, names = _summary_matrix(d, coordinates, n_projections, np.random.default_rng(summary_ss))
    seeds = _trial_seeds(trials_ss, n_trials)
    args = (factory, prior, forward, noise_std)
    trials = _run_trials(args, seeds, W, levels, executor, label, verbose)
    return SBCResult._from_trials(trials, names, levels, seeds, plan)


def _run_trials(args, seeds, W, levels, executor, label, verbose) -> list[dict]:
    from .estimators._recorder import progress_enabled as _progress_enabled

    bar = None
    if _progress_enabled(verbose):
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds), desc=label, unit="fit", leave=True)
    try:
        if executor is None:
            out = []
            for s in seeds:
                out.append(_run_trial(*args, s, W, levels))
                if bar is not None:
                    bar.update(1)
            return out
        futures = {executor.submit(_run_trial, *args, s, W, levels): k for k, s in enumerate(seeds)}
        out = [None] * len(seeds)
        for fut in cf.as_completed(futures):
            out[futures[fut]] = fut.result()
            if bar is not None:
                bar.update(1)
        return out
    finally:
        if bar is not None:
            bar.close()


def _default_bins(n_particles: int, n_trials: int) -> int:
    """About five expected ranks per bin, at least 4 bins and at most ``J + 1``.

    At least 4, because with 2 bins a U-shaped histogram (over-confidence,
    the commonest fault) puts as many ranks in each half as uniform ranks do.
    """
    return int(min(n_particles + 1, max(4, n_trials // 5)))


@dataclass
class SBCResult:
    """The outcome of :func:`sbc`.

    Attributes
    ----------
    ranks : numpy.ndarray of int, shape ``(n_trials, n_summaries)``
        Rank of the truth among the ``J`` members, in ``0..J``, per summary.
    summaries : list of str
        ``"x[i]"`` (a coordinate of the flattened unknown), ``"mean"`` (the
        field mean), ``"projection k"``.
    n_particles : int
        ``J`` (ranks take ``J + 1`` values).
    levels : tuple of float
    coverage : dict
        ``{level: fraction}``: over trials, the mean fraction of coordinates
        whose central interval (:func:`central_interval`) covers the truth.
    coverage_se : dict
        ``{level: standard error}`` of ``coverage``, from the trial-to-trial
        spread (the coordinates of one field are not independent checks).
    summary_coverage : dict
        ``{level: fraction}`` over trials and summaries: how often each
        summary's central interval covers the truth's summary (binomial
        error ``sqrt(a (1 - a) / n_trials)`` per summary).
    trial_coverage : numpy.ndarray, shape ``(n_trials, n_levels)``
    crps, energy_score, spread_skill : numpy.ndarray, shape ``(n_trials,)``
        Per trial: the coordinate-mean fair CRPS, the fair energy score and
        the spread-skill ratio (1 calibrated, below 1 over-confident).
    seeds : numpy.ndarray of int, shape ``(n_trials, 4)``
        Each trial's truth, noise, solver and tie seeds (a trial can be
        rerun alone: ``solver.set_params(random_state=seeds[k, 2])``).
    plan : dict
        The cost stated before the run (:func:`sbc_plan`).
    stats : dict
        Evaluation counts and times summed over the fits.
    solver : str
        The solver's class name.
    """

    ranks: np.ndarray
    summaries: list
    n_particles: int
    levels: tuple
    coverage: dict
    coverage_se: dict
    summary_coverage: dict
    trial_coverage: np.ndarray
    crps: np.ndarray
    energy_score: np.ndarray
    spread_skill: np.ndarray
    seeds: np.ndarray
    plan: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)
    solver: str = ""

    @classmethod
    def _from_trials(cls, trials: list[dict], names, levels, seeds, plan) -> SBCResult:
        Js = {t["n_particles"] for t in trials}
        if len(Js) != 1:
            raise ValueError(f"the trials' solvers returned different ensemble sizes {sorted(Js)}.")
        cov = np.array([t["coverage"] for t in trials])
        covered = np.stack([np.stack(t["summary_covered"]) for t in trials])  # (trial, level, summary)
        n = len(trials)
        stats: dict = {}
        for t in trials:
            for k, v in t["stats"].items():
                if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                    stats[k] = stats.get(k, 0) + v
        return cls(
            ranks=np.stack([t["ranks"] for t in trials]).astype(np.int64),
            summaries=list(names),
            n_particles=Js.pop(),
            levels=tuple(levels),
            coverage={a: float(cov[:, i].mean()) for i, a in enumerate(levels)},
            coverage_se={a: float(cov[:, i].std(ddof=1) / math.sqrt(n)) for i, a in enumerate(levels)},
            summary_coverage={a: float(covered[:, i].mean()) for i, a in enumerate(levels)},
            trial_coverage=cov,
            crps=np.array([t["crps"] for t in trials]),
            energy_score=np.array([t["energy_score"] for t in trials]),
            spread_skill=np.array([t["spread_skill"] for t in trials]),
            seeds=np.array(seeds, dtype=np.int64),
            plan=dict(plan),
            stats=stats,
            solver=str(plan.get("solver", "")),
        )

    # -- the rank test ----------------------------------------------------------
    @property
    def n_trials(self) -> int:
        """The number of trials (fits)."""
        return int(self.ranks.shape[0])

    @property
    def n_bins(self) -> int:
        """The default number of rank bins: about five expected ranks per bin, at least 4."""
        return _default_bins(self.n_particles, self.n_trials)

    def _bin_edges(self, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
        """The bin of each possible rank ``0..J`` and each bin's probability under uniform ranks."""
        L = self.n_particles + 1
        which = np.arange(L) * n_bins // L
        return which, np.bincount(which, minlength=n_bins) / L

    def rank_histogram(self, n_bins: int | None = None) -> np.ndarray:
        """Counts of the ranks in ``n_bins`` bins of ``0..J``, shape ``(n_summaries, n_bins)``.

        Rank ``r`` falls in bin ``floor(r n_bins / (J + 1))``; when
        ``n_bins`` does not divide ``J + 1`` the bins hold unequal numbers of
        ranks, which :meth:`chi2` accounts for.
        """
        n_bins = self.n_bins if n_bins is None else int(n_bins)
        if not 2 <= n_bins <= self.n_particles + 1:
            raise ValueError(f"n_bins must lie in [2, J + 1 = {self.n_particles + 1}] (got {n_bins}).")
        which, _ = self._bin_edges(n_bins)
        return np.stack([np.bincount(which[r], minlength=n_bins) for r in self.ranks.T])

    def chi2(self, n_bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pearson's chi-square of uniform ranks, per summary: ``(statistics, p-values)``.

        Expected counts are exact for the bins of :meth:`rank_histogram`;
        ``n_bins - 1`` degrees of freedom.
        """
        from scipy.stats import chi2

        n_bins = self.n_bins if n_bins is None else int(n_bins)
        counts = self.rank_histogram(n_bins)
        _, p = self._bin_edges(n_bins)
        expected = self.n_trials * p
        stat = np.sum((counts - expected) ** 2 / expected, axis=1)
        return stat, chi2.sf(stat, n_bins - 1)

    @property
    def p_values(self) -> dict:
        """``{summary: p-value}`` of the chi-square test of uniform ranks."""
        return dict(zip(self.summaries, self.chi2()[1].tolist()))

    @property
    def p_value(self) -> float:
        """One p-value for all summaries: Bonferroni's ``min(1, k min_i p_i)`` (valid though they correlate).

        Small (below 0.01, say) means the ranks are not uniform: the
        ensemble does not sample the posterior.
        """
        p = self.chi2()[1]
        return float(min(1.0, p.size * p.min()))

    def calibrated(self, alpha: float = 0.01, n_se: float = 3.0) -> bool:
        """True when neither the rank test (``p_value >= alpha``) nor the coverage flags a fault.

        Coverage is flagged when it lies more than ``n_se`` standard errors
        from a nominal level: :attr:`coverage_se` for :attr:`coverage`, and
        for :attr:`summary_coverage` the binomial error of ``n_trials``
        checks (conservative: the summaries of one trial are correlated).
        """
        if self.p_value < alpha:
            return False
        for a in self.levels:
            se = max(self.coverage_se[a], 1e-12)
            if abs(self.coverage[a] - a) > n_se * se:
                return False
            # the summaries of one trial are correlated: count one independent check per trial
            n = self.n_trials
            if abs(self.summary_coverage[a] - a) > n_se * math.sqrt(a * (1 - a) / n) + 1.0 / n:
                return False
        return True

    def __str__(self) -> str:
        cov = ", ".join(f"{a:.0%}: {self.coverage[a]:.3f} +- {self.coverage_se[a]:.3f}" for a in self.levels)
        return (
            f"SBC of {self.solver or 'a solver'}: {self.n_trials} trials, J = {self.n_particles}\n"
            f"  coverage {cov}\n"
            f"  rank uniformity p = {self.p_value:.3g} (chi-square, {self.n_bins} bins, "
            f"{len(self.summaries)} summaries, Bonferroni)\n"
            f"  CRPS {np.mean(self.crps):.4g}, energy score {np.mean(self.energy_score):.4g}, "
            f"spread/skill {np.median(self.spread_skill):.3f} (median)"
        )

    # -- plotting ---------------------------------------------------------------
    def plot(self, axes=None, n_bins: int | None = None):
        """Rank histograms (a band of the 99% range of uniform counts) and coverage against nominal.

        Parameters
        ----------
        axes : sequence of two matplotlib Axes, optional
            New ones in one figure when None.
        n_bins : int, optional

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt
        from scipy.stats import binom

        if axes is None:
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
        fig = axes[0].figure
        n_bins = self.n_bins if n_bins is None else int(n_bins)
        counts = self.rank_histogram(n_bins)
        _, p = self._bin_edges(n_bins)
        centres = np.arange(n_bins)
        lo, hi = binom.ppf(0.005, self.n_trials, p), binom.ppf(0.995, self.n_trials, p)
        ax = axes[0]
        ax.fill_between(centres, lo, hi, step="mid", color="0.85", label="99% of uniform")
        for name, c in zip(self.summaries, counts):
            ax.step(centres, c, where="mid", lw=1, alpha=0.8, label=name)
        ax.set(
            xlabel=f"rank bin (of {n_bins})", ylabel="count", title=f"rank histograms, p = {self.p_value:.2g}"
        )
        ax.legend(fontsize=6, ncol=2)
        self._plot_coverage(axes[1])
        return fig

    def _plot_coverage(self, ax) -> None:
        nominal = np.array(self.levels)
        got = np.array([self.coverage[a] for a in self.levels])
        se = np.array([self.coverage_se[a] for a in self.levels])
        ax.plot([0, 1], [0, 1], color="0.5", lw=1, ls="--", label="nominal")
        ax.errorbar(nominal, got, yerr=2 * se, fmt="o", capsize=3, label="pointwise (2 s.e.)")
        summ = [self.summary_coverage[a] for a in self.levels]
        ax.plot(nominal, summ, "s", mfc="none", label="summaries")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal level", ylabel="coverage", title="interval coverage")
        ax.legend(fontsize=7)

    # -- export -----------------------------------------------------------------
    def _attributes(self) -> dict:
        from ._version import __version__

        return {
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "inference_library": "kalmandiff",
            "inference_library_version": __version__,
            "kind": "simulation-based calibration",
            "solver": self.solver,
            "n_particles": int(self.n_particles),
            "n_trials": int(self.n_trials),
            "coverage": json.dumps({str(a): v for a, v in self.coverage.items()}),
            "coverage_se": json.dumps({str(a): v for a, v in self.coverage_se.items()}),
            "summary_coverage": json.dumps({str(a): v for a, v in self.summary_coverage.items()}),
            "p_value": float(self.p_value),
            "plan": json.dumps(self.plan),
            "stats": json.dumps({k: float(v) for k, v in self.stats.items()}),
        }

    def _arrays(self) -> dict:
        return {
            "ranks": (["trial", "summary"], self.ranks.astype(np.int32)),
            "trial_coverage": (["trial", "level"], self.trial_coverage),
            "crps": (["trial"], self.crps),
            "energy_score": (["trial"], self.energy_score),
            "spread_skill": (["trial"], self.spread_skill),
            "seeds": (["trial", "stream"], self.seeds.astype(np.int32)),
            "rank_histogram": (["summary", "bin"], self.rank_histogram().astype(np.int32)),
        }

    def to_dataset(self):
        """The result as an ``xarray.Dataset`` (needs xarray): per-trial arrays, summary numbers as attributes."""
        import xarray as xr

        coords = {
            "summary": list(self.summaries),
            "level": list(self.levels),
            "stream": ["truth", "noise", "solver", "ties"],
        }
        return xr.Dataset(self._arrays(), coords=coords, attrs=self._attributes())

    def export(self, path) -> Path:
        """Write the result: netCDF for a path ending in ``.nc`` (needs xarray), else ``.npz``.

        Returns the path written (its suffix tells the format), like
        :func:`kalmandiff.export_results`, which calls this for an SBCResult;
        :func:`load_sbc` reads it back.
        """
        path = Path(path)
        if path.suffix == ".nc":
            try:
                ds = self.to_dataset()
            except ImportError:
                path = path.with_suffix(".npz")
            else:
                ds.to_netcdf(path)
                return path
        arrays = {k: v[1] for k, v in self._arrays().items()}
        arrays["summaries"] = np.array(self.summaries)
        arrays["levels"] = np.array(self.levels)
        arrays["attributes"] = np.array(json.dumps(self._attributes()))
        path = path.with_suffix(".npz")
        np.savez(path, **arrays)
        return path


def load_sbc(path) -> SBCResult:
    """Read an :class:`SBCResult` written by :meth:`SBCResult.export` (``.nc`` or ``.npz``).

    Arrays and summary numbers come back as written; no code runs on
    loading (netCDF through xarray, or a NumPy archive without pickles).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    SBCResult
    """
    path = Path(path)
    if path.suffix == ".nc":
        import xarray as xr

        with xr.open_dataset(path) as ds:
            arrays = {k: ds[k].values for k in ds.data_vars}
            attrs, summaries, levels = (
                dict(ds.attrs),
                [str(v) for v in ds["summary"].values],
                ds["level"].values,
            )
    else:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        attrs, summaries, levels = (
            json.loads(str(arrays["attributes"])),
            list(arrays["summaries"]),
            arrays["levels"],
        )
    levels = tuple(float(a) for a in levels)

    def by_level(key):
        return {float(a): float(v) for a, v in json.loads(attrs[key]).items()}

    return SBCResult(
        ranks=np.asarray(arrays["ranks"], dtype=np.int64),
        summaries=[str(v) for v in summaries],
        n_particles=int(attrs["n_particles"]),
        levels=levels,
        coverage=by_level("coverage"),
        coverage_se=by_level("coverage_se"),
        summary_coverage=by_level("summary_coverage"),
        trial_coverage=np.asarray(arrays["trial_coverage"]),
        crps=np.asarray(arrays["crps"]),
        energy_score=np.asarray(arrays["energy_score"]),
        spread_skill=np.asarray(arrays["spread_skill"]),
        seeds=np.asarray(arrays["seeds"], dtype=np.int64),
        plan=json.loads(attrs["plan"]),
        stats=json.loads(attrs["stats"]),
        solver=str(attrs.get("solver", "")),
    )
