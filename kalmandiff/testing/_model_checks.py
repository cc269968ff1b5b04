"""``check_prior`` and ``check_forward``: contracts of priors and forward problems, as named checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import CheckReport, SkipCheck, run_checks

__all__ = ["check_prior", "check_forward"]


def _run(label: str, checks: list, raise_on_failure: bool) -> CheckReport:
    return run_checks(label, [(fn.__name__, fn) for fn in checks], raise_on_failure)


def _np(x) -> np.ndarray:
    from .._backend import to_numpy

    return to_numpy(x)


def check_prior(
    prior: Any,
    *,
    n: int = 4,
    n_samples: int = 2000,
    sigma: float | None = None,
    random_state: int = 0,
    rtol: float = 1e-2,
    raise_on_failure: bool = True,
) -> CheckReport:
    """Check a prior's denoiser against the EDM contract.

    Checks (names as in the report):

    - ``check_denoise_shape_dtype``: ``denoise(x, sigma)`` returns an array
      of ``x``'s shape and dtype (float64 and float32), and a per-sample
      ``sigma`` of shape ``(n,)`` gives the scalar result when all equal;
    - ``check_denoise_small_sigma``: ``denoise(x, sigma) -> x`` as
      ``sigma -> 0`` (relative deviation below ``rtol`` at ``sigma = 1e-4``
      times the data scale);
    - ``check_sample_shape``: ``sample(n)`` has shape ``(n, *event_shape)``
      (skipped when the prior cannot sample);
    - ``check_tweedie``: on pairs ``x0 ~ prior``, ``x = x0 + sigma * eps``,
      the residual ``x0 - D(x, sigma)`` has mean zero and is uncorrelated
      with ``D`` (properties of the conditional mean ``E[x0 | x]``), and
      ``D`` is closer to ``x0`` than ``x`` is, each within five standard
      errors (skipped when the prior cannot sample).

    Parameters
    ----------
    prior : Prior
        Anything with ``event_shape`` and ``denoise(x, sigma)``; ``sample``
        is optional.
    n : int, default 4
        Batch size of the shape checks.
    n_samples : int, default 2000
        Pairs of the Tweedie check.
    sigma : float, optional
        Noise level of the Tweedie check (default: the samples' standard
        deviation).
    random_state : int, default 0
    rtol : float, default 1e-2
        Tolerance of the small-sigma check.
    raise_on_failure : bool, default True
        Raise one ``AssertionError`` naming each failed check.

    Returns
    -------
    CheckReport
    """
    shape = tuple(prior.event_shape)
    rng = np.random.default_rng(random_state)

    def draw(k):
        try:
            return np.asarray(_np(prior.sample(k, random_state=int(rng.integers(2**31)))), dtype=float)
        except (NotImplementedError, AttributeError):
            return None

    base = draw(n)
    x = base if base is not None else rng.standard_normal((n, *shape))
    scale = float(np.std(x)) or 1.0

    def check_denoise_shape_dtype():
        for dtype in (np.float64, np.float32):
            xd = x.astype(dtype)
            out = prior.denoise(xd, 0.5 * scale)
            if tuple(out.shape) != xd.shape:
                raise AssertionError(f"denoise returned shape {tuple(out.shape)} for {xd.shape}")
            if np.dtype(_np(out).dtype) != np.dtype(dtype):
                raise AssertionError(f"denoise returned {_np(out).dtype} for {np.dtype(dtype).name} input")
        a = _np(prior.denoise(x, 0.5 * scale))
        b = _np(prior.denoise(x, np.full(n, 0.5 * scale)))
        if not np.allclose(a, b, rtol=1e-6, atol=1e-9 * scale):
            raise AssertionError("a per-sample sigma of equal values gives another result than the scalar")

    def check_denoise_small_sigma():
        s = 1e-4 * scale
        out = _np(prior.denoise(x + s * rng.standard_normal(x.shape), s))
        dev = np.linalg.norm(out - x) / np.linalg.norm(x)
        if not dev <= rtol:
            raise AssertionError(f"|D(x, {s:.1e}) - x| / |x| = {dev:.3g} > {rtol:g}")

    def check_sample_shape():
        if base is None:
            raise SkipCheck("the prior cannot sample")
        if base.shape != (n, *shape):
            raise AssertionError(f"sample({n}) has shape {base.shape}, expected {(n, *shape)}")

    def check_tweedie():
        x0 = draw(n_samples)
        if x0 is None:
            raise SkipCheck("the prior cannot sample")
        s = float(np.std(x0)) if sigma is None else float(sigma)
        xs = x0 + s * rng.standard_normal(x0.shape)
        D = _np(prior.denoise(xs, s)).reshape(n_samples, -1)
        r = x0.reshape(n_samples, -1) - D
        N = n_samples
        per = r.mean(axis=1)
        bias = per.mean()
        if abs(bias) > 5 * per.std() / np.sqrt(N) + 1e-12:
            raise AssertionError(f"mean residual {bias:.3g}: D is biased")
        prod = (r * (D - D.mean(axis=0))).mean(axis=1)
        if abs(prod.mean()) > 5 * prod.std() / np.sqrt(N) + 1e-12:
            raise AssertionError(f"residual correlated with D ({prod.mean():.3g}): not E[x0 | x]")
        mse_d = (r**2).mean(axis=1)
        mse_x = ((x0 - xs).reshape(N, -1) ** 2).mean(axis=1)
        if not mse_d.mean() < mse_x.mean():
            raise AssertionError(f"D does not denoise: mse {mse_d.mean():.3g} >= {mse_x.mean():.3g}")

    checks = [check_denoise_shape_dtype, check_denoise_small_sigma, check_sample_shape, check_tweedie]
    return _run(type(prior).__name__, checks, raise_on_failure)


def check_forward(
    problem: Any,
    *,
    x: Any = None,
    n: int = 3,
    random_state: int = 0,
    rtol: float = 1e-6,
    grad_rtol: float = 1e-3,
    raise_on_failure: bool = True,
) -> CheckReport:
    """Check a forward problem's batch contract, shapes, adjoint and gradient.

    Checks (names as in the report):

    - ``check_forward_shapes``: ``problem(X)`` maps ``(n, *x_shape)`` to
      ``(n, *y_shape)``; ``observe(x)`` has ``y_shape``; a wrongly shaped
      batch is refused with ``ValueError``;
    - ``check_forward_batch``: a batch gives the per-sample results;
    - ``check_forward_adjoint``: ``<A u, v> = <u, A^T v>`` where the problem
      has ``adjoint`` (skipped otherwise);
    - ``check_forward_autograd``: where ``differentiable`` is true, torch
      autograd's directional derivative matches a central finite difference
      (skipped otherwise, or without torch).

    Parameters
    ----------
    problem : ForwardProblem or ProblemInstance
        An instance (from :func:`kalmandiff.problems.make` or
        :func:`problem_instance`) supplies ``x`` from its ``x_true``.
    x : array of shape ``problem.x_shape``, optional
        A valid input; the batch is ``x`` plus small perturbations (default:
        standard normal draws).
    n : int, default 3
        Batch size.
    random_state : int, default 0
    rtol : float, default 1e-6
        Relative tolerance of the batch and adjoint checks.
    grad_rtol : float, default 1e-3
        Relative tolerance of the autograd check (central differences with
        steps ``1e-2`` to ``1e-5`` times the inputs' scale; one must agree,
        so that models computing in float32 and strongly curved ones pass).
    raise_on_failure : bool, default True
        Raise one ``AssertionError`` naming each failed check.

    Returns
    -------
    CheckReport
    """
    if hasattr(problem, "problem") and hasattr(problem, "x_true"):
        x = problem.x_true if x is None else x
        problem = problem.problem
    x_shape, y_shape = tuple(problem.x_shape), tuple(problem.y_shape)
    rng = np.random.default_rng(random_state)
    if x is None:
        X = rng.standard_normal((n, *x_shape))
    else:
        x = np.asarray(_np(x), dtype=float)
        s = float(np.std(x)) or 1.0
        X = x[None] + 0.05 * s * rng.standard_normal((n, *x_shape))

    def check_forward_shapes():
        G = problem(X)
        if tuple(G.shape) != (n, *y_shape):
            raise AssertionError(f"problem(X) has shape {tuple(G.shape)}, expected {(n, *y_shape)}")
        y = problem.observe(X[0], random_state=0)
        if tuple(y.shape) != y_shape:
            raise AssertionError(f"observe(x) has shape {tuple(y.shape)}, expected {y_shape}")
        try:
            problem(X[0])
        except ValueError:
            pass
        else:
            raise AssertionError("a batch without its particle axis was accepted")

    def check_forward_batch():
        G = _np(problem(X))
        one = np.stack([_np(problem(X[j : j + 1]))[0] for j in range(n)])
        scale = float(np.max(np.abs(G))) or 1.0
        if not np.allclose(G, one, rtol=rtol, atol=rtol * scale):
            raise AssertionError(f"batch and per-sample results differ by {np.max(np.abs(G - one)):.3g}")

    def check_forward_adjoint():
        if not hasattr(problem, "adjoint"):
            raise SkipCheck("no adjoint")
        u = rng.standard_normal((1, *x_shape))
        v = rng.standard_normal((1, *y_shape))
        lhs = float(np.sum(_np(problem(u)) * v))
        rhs = float(np.sum(u * _np(problem.adjoint(v))))
        if abs(lhs - rhs) > rtol * max(abs(lhs), abs(rhs), 1.0):
            raise AssertionError(f"<Au, v> = {lhs:.6g} but <u, A^T v> = {rhs:.6g}")

    def check_forward_autograd():
        if not getattr(problem, "differentiable", False):
            raise SkipCheck("not declared differentiable")
        try:
            import torch
        except ImportError as exc:  # pragma: no cover
            raise SkipCheck("torch is not installed") from exc
        x0 = torch.tensor(X[:1], dtype=torch.float64, requires_grad=True)
        d = torch.tensor(rng.standard_normal((1, *x_shape)), dtype=torch.float64)
        w = torch.tensor(rng.standard_normal((1, *y_shape)), dtype=torch.float64)
        (g,) = torch.autograd.grad((problem(x0) * w).sum(), x0)
        ad = float((g * d).sum())
        scale = float(np.std(X)) or 1.0
        fds = []
        # Several steps: large ones for models computing in float32, small ones for strong curvature.
        for h in (1e-2 * scale, 1e-3 * scale, 1e-4 * scale, 1e-5 * scale):
            with torch.no_grad():
                fd = float(((problem(x0 + h * d) - problem(x0 - h * d)) * w).sum() / (2 * h))
            if abs(ad - fd) <= grad_rtol * max(abs(ad), abs(fd), 1.0):
                return
            fds.append(fd)
        raise AssertionError(
            f"autograd directional derivative {ad:.6g} != finite differences {', '.join(f'{v:.6g}' for v in fds)}"
        )

    checks = [check_forward_shapes, check_forward_batch, check_forward_adjoint, check_forward_autograd]
    return _run(type(problem).__name__, checks, raise_on_failure)
