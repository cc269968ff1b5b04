"""DiffPIR's closed-form data step for a linear forward model.

The proximal problem of half-quadratic splitting,
``argmin_x 1/2 ||y - A x||^2_W + rho/2 ||x - x0||^2`` with ``W = Gamma^{-1}``,
has the solution ``(A^T W A + rho I)^{-1} (A^T W y + rho x0)``: dense for a
small ``d``, by batched conjugate gradients on the step protocol otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from .._backend import array_device, asarray_like, get_namespace, to_numpy
from ..problems.linear import LinearOperatorProblem
from ._base import ForwardRequest, VJPRequest

__all__ = ["LinearProx"]


class LinearProx:
    """``(A^T W A + rho I)^{-1} (A^T W y + rho x0)`` for every row of a batch, in float64.

    Dense (an eigendecomposition of ``A^T W A`` computed once, then two
    matrix products per step) when ``d <= dense_max``; otherwise conjugate
    gradients whose products with ``A`` and ``A^T`` are asked for on the step
    protocol (forward values and VJPs: ``fit`` answers them with the
    problem's ``forward`` and ``adjoint``, ask/tell hands them out).
    Calling it is a generator: ``x0_hat = yield from prox(x0, rho)``.
    """

    def __init__(self, problem: LinearOperatorProblem, y, weights, dense_max: int, tol: float, max_iter: int):
        self.problem = problem
        self.d = math.prod(problem.x_shape)
        self.tol, self.max_iter = tol, max_iter
        self.dense = self.d <= dense_max
        w = np.asarray(to_numpy(weights), dtype=np.float64)
        y64 = np.asarray(to_numpy(y), dtype=np.float64).reshape(-1)
        xp = get_namespace(y)
        like = xp.zeros(1, dtype=xp.float64, device=array_device(y))
        if self.dense:
            A = np.asarray(problem.as_matrix(), dtype=np.float64)
            evals, V = np.linalg.eigh(A.T @ (w[:, None] * A))
            self.V = asarray_like(V, like)
            self.evals = asarray_like(np.maximum(evals, 0.0), like)
            self.b = asarray_like(A.T @ (w * y64), like)
        else:
            self.w = asarray_like(w, like)
            Y = asarray_like(y64.reshape((1, *problem.y_shape)), like)
            self.b = xp.reshape(problem.adjoint(Y * xp.reshape(self.w, (1, *problem.y_shape))), (-1,))

    def __call__(self, x0, rho: float):
        xp = get_namespace(x0)
        J = x0.shape[0]
        X0 = xp.reshape(xp.astype(x0, xp.float64), (J, -1))
        R = self.b[None, :] + rho * X0
        if self.dense:
            out = ((R @ self.V) / (self.evals + rho)[None, :]) @ self.V.T
        else:
            out = yield from self._cg(R, rho, X0)
        return xp.astype(xp.reshape(out, tuple(x0.shape)), x0.dtype)

    def _normal_op(self, X, rho: float):
        """``(A^T W A + rho I) X`` on rows: ``A X`` and ``A^T (W A X)`` asked for (a generator)."""
        xp = get_namespace(X)
        J = X.shape[0]
        p = self.problem
        Xs = xp.reshape(X, (J, *p.x_shape))
        AX, _ = yield ForwardRequest(Xs, vjp=True)
        out = yield VJPRequest(Xs, xp.reshape(AX * self.w[None, :], (J, *p.y_shape)))
        return xp.reshape(out, (J, -1)) + rho * X

    def _cg(self, R, rho: float, X0):
        """Batched conjugate gradients from ``x0`` (every row is its own system; a generator)."""
        xp = get_namespace(R)
        X = X0
        res = R - (yield from self._normal_op(X, rho))
        P = res
        rr = xp.sum(res * res, axis=1)
        stop = self.tol**2 * xp.sum(R * R, axis=1)
        for _ in range(self.max_iter):
            if bool(xp.all(rr <= stop)):
                break
            AP = yield from self._normal_op(P, rho)
            pap = xp.sum(P * AP, axis=1)
            alpha = xp.where(rr > stop, rr / xp.where(pap > 0, pap, xp.ones_like(pap)), xp.zeros_like(rr))
            X = X + alpha[:, None] * P
            res = res - alpha[:, None] * AP
            rr_new = xp.sum(res * res, axis=1)
            beta = rr_new / xp.where(rr > 0, rr, xp.ones_like(rr))
            P = res + beta[:, None] * P
            rr = rr_new
        return X
