"""What the gradient-based solvers (DPS, DiffPIR's non-linear data step, RMP) share.

:func:`require_gradient` is the one place where a forward model is checked
for (or probed for) torch-autograd differentiability, so every
gradient-based solver accepts the same forwards; :func:`misfit_gradient`
differentiates the data misfit through the forward model (and optionally a
denoiser) on the step protocol: it asks for forward values and a
vector-Jacobian product, which ``fit`` computes (and counts) and ask/tell
leaves to the user.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import numpy as np

from .._backend import asarray_like, is_torch_array, to_numpy
from ._context import FitContext
from ._observation import weighted_cotangent
from ._protocol import ForwardRequest, VJPRequest
from ._registry import derivative_free_solvers

__all__ = ["require_gradient", "GradientResult", "misfit_gradient"]


def require_gradient(solver_name: str, problem, why: str, acct=None) -> None:
    """Refuse a forward model that torch autograd cannot differentiate: the one check of every
    gradient-based solver.

    A :class:`~kalmandiff.problems.ForwardProblem` states ``differentiable``;
    a plain callable (``differentiable=None``: unknown) is probed once, on a
    torch zero batch, for a gradient that flows (the call is counted in
    ``acct.n_forward_probe_evals``).  Raises ``ValueError`` naming the
    derivative-free solvers, before any denoiser or forward evaluation.
    """
    flag = getattr(problem, "differentiable", False)
    if flag:
        return
    reason = "differentiable=False"
    if flag is None:
        reason = _autograd_probe(problem)
        if acct is not None:
            acct.n_forward_probe_evals += 1
        if reason is None:
            return
    raise ValueError(
        f"{solver_name} {why}, but the forward model {type(problem).__name__} is not differentiable "
        f"({reason}). Use a derivative-free solver instead: {', '.join(derivative_free_solvers())}; or "
        "write the callable with operations that torch autograd can follow (it then receives torch "
        "tensors), or wrap it as kd.problems.CallableProblem(fn, x_shape, y_shape, noise_std, "
        "differentiable=True)."
    )


def _autograd_probe(problem) -> str | None:
    """Call ``problem`` once on a torch zero batch; None if a gradient flows, else why not."""
    import torch

    x = torch.zeros((1, *problem.x_shape), dtype=torch.float64, requires_grad=True)
    try:
        out = problem.forward(x)
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            return "the callable returned no torch gradient graph"
        torch.autograd.grad(out.sum(), x)
    except Exception as exc:  # noqa: BLE001 - any failure means autograd cannot follow it
        return f"the callable failed under torch autograd: {exc!r}"
    return None


class GradientResult(NamedTuple):
    """What :func:`misfit_gradient` returns."""

    grad: Any
    misfit: np.ndarray
    failed: np.ndarray
    Z: Any
    G: Any


def misfit_gradient(ctx: FitContext, X, weights, through=None):
    """Gradient of each particle's misfit ``1/2 sum w (G(Z) - y)^2``, ``Z = through(X)`` or ``X``.

    A generator (``res = yield from misfit_gradient(...)``) on the step
    protocol: it asks for the forward values at ``Z``
    (``ForwardRequest(Z, vjp=True)``), forms the cotangent ``w (G - y)`` of
    each member (zero where its misfit is not finite), asks for the
    forward model's vector-Jacobian product at ``Z`` (:class:`VJPRequest`),
    and chains it back through ``through`` with torch autograd.  ``fit``
    answers both requests (torch autograd through ``G``, or a linear
    operator's adjoint), ask/tell hands them to the user.  The loss is
    computed in torch: float64 on the CPU unless the data already live in
    torch.  The denoiser's backward pass is counted here, the forward
    model's by the framework.

    Parameters
    ----------
    ctx : FitContext
    X : array ``(J, *x_shape)`` in ``ctx.xp``
    weights : array ``(m,)``
        Inverse noise variances, any namespace.
    through : callable, optional
        Torch-differentiable map applied first (a denoiser at some ``sigma``).

    Returns
    -------
    GradientResult
        ``grad`` ``(J, *x_shape)`` (rows of failed members are zero),
        ``misfit`` ``(J,)`` NumPy: :meth:`FitContext.misfit`, the recorded
        definition, without the noise floor (NaN for failed members), ``failed``
        (bool ``(J,)``), ``Z`` = ``through(X)`` (or ``X``) and ``G`` the
        forward values ``(J, m)``; arrays in ``ctx.xp``, detached.
    """
    import torch

    J = X.shape[0]
    y_shape = tuple(ctx.problem.y_shape)
    on_torch = is_torch_array(ctx.y)
    if on_torch:
        Xt = X.detach().clone()
        yt, wt = ctx.y, weights if is_torch_array(weights) else torch.as_tensor(to_numpy(weights))
        wt = wt.to(device=Xt.device, dtype=Xt.dtype)
    else:
        Xt = torch.from_numpy(np.array(to_numpy(X), dtype=np.float64))
        yt = torch.from_numpy(np.array(to_numpy(ctx.y), dtype=np.float64))
        wt = torch.from_numpy(np.array(to_numpy(weights), dtype=np.float64))
    Z = Xt
    if through is not None:
        Xt.requires_grad_(True)
        with torch.enable_grad():
            Z = through(Xt)
        if not Z.requires_grad:
            raise ValueError(
                "the prior's denoiser returned a tensor without autograd history; this solver needs a "
                "denoiser that torch can differentiate (not one run under torch.no_grad)."
            )
    Z_in = Z.detach()
    G, failed = yield ForwardRequest(Z_in, vjp=True)
    # The cotangent dL/dG of L = sum_j 1/2 sum w r_j^2 over the members with a finite misfit.
    cotangent, _ = weighted_cotangent(ctx.problem, G, yt, wt.reshape(y_shape), lambda loss: 0.5)
    grad = yield VJPRequest(Z_in, cotangent)
    if through is not None:
        t0 = time.perf_counter()
        (grad,) = torch.autograd.grad(Z, Xt, grad_outputs=grad)
        ctx.acct.count_vjps(J, forward=False, denoiser=True, seconds=time.perf_counter() - t0)
    grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad))
    if on_torch:
        back = lambda t: t.detach().to(X.dtype)  # noqa: E731
    else:
        back = lambda t: asarray_like(t.detach().numpy(), ctx.y)  # noqa: E731
    G = back(G)
    misfit = np.array(ctx.misfit(G), dtype=float, copy=True)
    misfit[failed] = np.nan
    return GradientResult(back(grad), misfit, failed, back(Z), G)
