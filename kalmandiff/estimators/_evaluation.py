"""Counting, timing and checking the two expensive calls: the denoiser and the forward model.

:class:`~kalmandiff.estimators._recorder.Accounting` (re-exported here)
holds the figures behind a solver's ``stats_``; :class:`CountingDenoiser` calls a prior in memory-bounded chunks;
:class:`ForwardEvaluator` calls the forward model in chunks and turns its
output into forward values plus a mask of failed members, following
EnsembleKalmanProcesses.jl: a member fails when more than ``nan_tolerance``
of its outputs are not finite, and isolated non-finite entries of the other
members are imputed from the successful members' mean.  For the
gradient-based solvers it also answers vector-Jacobian products
(:meth:`ForwardEvaluator.for_vjp`, :meth:`ForwardEvaluator.vjp`): the one
place where ``fit`` differentiates a forward model.
"""

from __future__ import annotations

import time

import numpy as np

from .._backend import asarray_like, get_namespace, is_torch_array, to_numpy
from ..problems._base import ForwardProblem
from ._recorder import STATS_KEYS, Accounting

__all__ = ["Accounting", "CountingDenoiser", "ForwardEvaluator", "STATS_KEYS"]


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
    """Evaluate the forward model on an ensemble and check what comes back.

    Parameters
    ----------
    problem : ForwardProblem
    accounting : Accounting
    batch_size : int or None
        Chunk size of forward calls (None: the whole ensemble at once).
    nan_tolerance : float
        A member fails when more than this fraction of its outputs is not
        finite; its remaining non-finite entries are imputed.
    y_flat : array ``(m,)``, optional
        The data, flattened: the imputed value of a datum that no successful
        member has a finite value for.
    """

    def __init__(
        self,
        problem: ForwardProblem,
        accounting: Accounting,
        batch_size: int | None = None,
        nan_tolerance: float = 0.0,
        y_flat=None,
    ):
        self.problem = problem
        self.acct = accounting
        self.batch_size = batch_size
        self.nan_tolerance = nan_tolerance
        #: the data, flattened; used where no successful member has a finite value
        self.y_flat = y_flat
        #: ``(X, leaf, G)`` of the last :meth:`for_vjp` evaluation, until its :meth:`vjp`
        self._linearization = None

    def __call__(self, X):
        """Run the forward model on ``X`` (``(J, *x_shape)``); return ``(G (J, m), failed mask)``."""
        xp = get_namespace(X)
        J = X.shape[0]
        t0 = time.perf_counter()
        bs = self.batch_size
        if bs is None or J <= bs:
            Y = self.problem(X)
        else:
            parts, reasons = [], {}
            for i in range(0, J, bs):
                parts.append(self.problem(X[i : i + bs, ...]))
                # a problem's per-member failure reasons are indexed within its call: re-index them
                reasons.update({i + j: why for j, why in self.problem.member_failures().items()})
            if self.problem.reports_member_failures():
                self.problem.last_failures = reasons
            Y = xp.concat(parts, axis=0)
        self.acct.time_forward_s += time.perf_counter() - t0
        return self.accept(Y, J)

    def accept(self, Y, J: int):
        """Check forward values ``Y`` (``(J, *y_shape)``) computed elsewhere; count them."""
        self.acct.n_forward_evals += J
        self.acct.n_sequential_forward_evals += 1
        expected = (J, *tuple(self.problem.y_shape))
        if tuple(getattr(Y, "shape", ())) != expected:
            raise ValueError(
                f"the forward model returned shape {tuple(getattr(Y, 'shape', ()))} for {J} particles; "
                f"expected {expected} (a leading particle axis followed by the shape of y)."
            )
        xp = get_namespace(Y)
        Y = xp.reshape(Y, (J, -1))
        finite = xp.isfinite(Y)
        bad_fraction = to_numpy(1.0 - xp.mean(xp.astype(finite, Y.dtype), axis=1))
        failed = bad_fraction > self.nan_tolerance
        if np.any((bad_fraction > 0) & ~failed):
            Y = self._impute(Y, finite, failed, self.y_flat)
        return Y, failed

    # -- vector-Jacobian products --------------------------------------------------
    def for_vjp(self, X):
        """Evaluate ``X`` like :meth:`__call__` and keep what :meth:`vjp` at ``X`` needs.

        * ``X`` a torch tensor: evaluated under autograd from a detached
          copy, the graph kept until the VJP (a solver working in torch
          gets torch values back);
        * a problem that declares ``linear_operator`` (every
          :class:`~kalmandiff.problems.LinearOperatorProblem`) outside
          torch: evaluated plainly; the VJP is its exact ``adjoint``;
        * otherwise: evaluated in torch float64 on the CPU (the forward must
          be written so that torch autograd can follow it), the values
          returned in the namespace and dtype of ``X``.

        Returns ``(G (J, m), failed mask)`` as :meth:`__call__` does.
        """
        self._linearization = None
        if not is_torch_array(X) and self.problem.linear_operator:
            G, failed = self(X)
            self._linearization = (X, None, None)
            return G, failed
        import torch

        leaf = X.detach() if is_torch_array(X) else torch.from_numpy(np.array(to_numpy(X), dtype=np.float64))
        leaf.requires_grad_(True)
        with torch.enable_grad():
            G, failed = self(leaf)
        self._linearization = (X, leaf, G)
        G = G.detach()
        return (G, failed) if is_torch_array(X) else (asarray_like(G.numpy(), X), failed)

    def vjp(self, X, cotangent):
        """``J_G(X)^T cotangent`` (``(J, *x_shape)``, namespace of ``X``), counted and timed.

        ``X`` must be the input of the last :meth:`for_vjp`; ``cotangent`` is
        ``(J, *y_shape)`` or ``(J, m)``.  A forward model whose output does not
        depend on ``X`` under autograd (every member failed to a constant)
        gives zeros.
        """
        last, self._linearization = self._linearization, None
        if last is None or last[0] is not X:
            raise RuntimeError(
                "a VJPRequest must follow the ForwardRequest(X, vjp=True) of the same X (nothing else between)."
            )
        _, leaf, G = last
        J = int(X.shape[0])
        t0 = time.perf_counter()
        if leaf is None:
            xp = get_namespace(X)
            V = xp.reshape(asarray_like(cotangent, X), (J, *self.problem.y_shape))
            out = self.problem.adjoint(V)
        else:
            import torch

            V = cotangent if is_torch_array(cotangent) else asarray_like(to_numpy(cotangent), G)
            V = V.reshape(G.shape).to(dtype=G.dtype, device=G.device)
            if G.requires_grad:
                (out,) = torch.autograd.grad(G, leaf, grad_outputs=V)
            else:
                out = torch.zeros_like(leaf)
            if not is_torch_array(X):
                out = asarray_like(out.detach().numpy(), X)
        self.acct.count_vjps(J, forward=True, denoiser=False, seconds=time.perf_counter() - t0)
        return out

    def accept_vjp(self, values, X):
        """Check a VJP computed elsewhere (ask/tell): shape ``(J, *x_shape)``; count it."""
        J = int(X.shape[0])
        expected = (J, *tuple(self.problem.x_shape))
        if tuple(getattr(values, "shape", ())) != expected:
            raise ValueError(
                f"the vector-Jacobian products have shape {tuple(getattr(values, 'shape', ()))} for {J} "
                f"particles; expected {expected} (one J_G(x_j)^T v_j per member, the shape of x)."
            )
        self._linearization = None
        self.acct.count_vjps(J, forward=True, denoiser=False)
        return values

    @staticmethod
    def _impute(Y, finite, failed: np.ndarray, y_flat=None):
        """Fill isolated non-finite entries with the successful members' mean of that datum."""
        xp = get_namespace(Y)
        use = finite & asarray_like(~failed, Y, dtype=xp.bool)[:, None]
        zero = xp.zeros_like(Y)
        count = xp.sum(xp.astype(use, Y.dtype), axis=0)
        mean = xp.sum(xp.where(use, Y, zero), axis=0) / xp.where(count > 0, count, xp.ones_like(count))
        if y_flat is not None:
            # No successful member has this datum: use the data, a zero residual (as EKP does),
            # in the namespace of Y (torch when a gradient-based solver evaluates through autograd).
            if get_namespace(y_flat) is not xp or y_flat.dtype != Y.dtype:
                y_flat = asarray_like(to_numpy(y_flat), Y)
            mean = xp.where(count > 0, mean, y_flat)
        return xp.where(finite, Y, mean[None, :])
