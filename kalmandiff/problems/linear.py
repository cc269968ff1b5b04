"""Linear forward problems ``y = A x + noise``, dense or matrix-free.

:class:`LinearOperatorProblem` is the base of every linear problem: besides
the batched forward map it gives the exact adjoint, a numerical
adjointness check and, for small sizes, the dense matrix (which DiffPIR's
closed-form data step and exact Gaussian posteriors need).
:class:`LinearProblem` wraps an explicit matrix.  The ``"linear-gaussian"``
factory pairs a random matrix with a Gaussian prior, whose posterior is
known exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backend import RandomSource, array_device, asarray_like, get_namespace, to_numpy
from ._base import ForwardProblem, _as_shape
from ._base import check_noise_std as _check_noise_std

__all__ = ["LinearOperatorProblem", "LinearProblem"]


# --------------------------------------------------------------------------
# helpers shared by the linear and imaging problems
# --------------------------------------------------------------------------


class _ConstantCache:
    """NumPy constants converted once per (namespace, dtype, device) of the data.

    Forward maps are called thousands of times on the same kind of array;
    converting their constant matrices on every call would dominate small
    problems and, on a GPU, cost a host-to-device copy each time.
    """

    def __init__(self):
        self._store: dict[tuple, Any] = {}

    def get(self, name: str, value: np.ndarray, like):
        xp = get_namespace(like)
        key = (name, xp.__name__, str(like.dtype), str(array_device(like)))
        out = self._store.get(key)
        if out is None:
            out = asarray_like(value, like)
            self._store[key] = out
        return out


# --------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------


class LinearOperatorProblem(ForwardProblem):
    """Base class of linear forward problems ``y = A x + noise``.

    Subclasses implement :meth:`forward` and :meth:`_adjoint` on batches;
    this class checks shapes and adds the adjointness test, the dense matrix
    and the noise covariance.

    Attributes
    ----------
    x_shape, y_shape : tuple of int
    noise_std : float or ndarray
    differentiable : bool
        Always True: linear maps written with array-API operations are
        differentiable by torch autograd.
    linear_operator : bool
        Always True: :meth:`adjoint` is exact.
    """

    differentiable = True
    linear_operator = True

    def _adjoint(self, Y):
        raise NotImplementedError

    def adjoint(self, Y):
        """Apply the adjoint ``A^T`` to a batch ``Y`` of shape ``(J, *y_shape)``.

        Returns an array of shape ``(J, *x_shape)`` in Y's namespace, device
        and dtype.  ``A^T`` is the exact transpose of :meth:`forward` for the
        Euclidean inner products on x and y.
        """
        shape = tuple(Y.shape)
        if shape[1:] != tuple(self.y_shape):
            raise ValueError(
                f"{type(self).__name__}.adjoint expects a batch of shape "
                f"(J, {', '.join(map(str, self.y_shape))}); got {shape}."
            )
        return self._adjoint(Y)

    def adjointness_test(self, random_state: Any = None, like: Any = None) -> float:
        """Return ``<A u, v> - <u, A^T v>`` for random Gaussian ``u`` and ``v``.

        Zero up to rounding when :meth:`adjoint` is the exact transpose.

        Parameters
        ----------
        random_state : None, int or numpy.random.Generator
        like : array, optional
            Draws are made in this array's namespace, device and dtype
            (default NumPy float64).

        Returns
        -------
        float
        """
        rng = RandomSource(random_state, stream="adjointness-test")
        u = rng.normal((1, *self.x_shape), like=like)
        v = rng.normal((1, *self.y_shape), like=like)
        xp = get_namespace(u)
        lhs = xp.sum(self(u) * v)
        rhs = xp.sum(u * self.adjoint(v))
        return float(to_numpy(lhs - rhs))

    def as_matrix(self, max_entries: int = 2**26) -> np.ndarray:
        """Dense matrix ``A`` of shape ``(prod(y_shape), prod(x_shape))``, float64 NumPy.

        Built by applying :meth:`forward` to the basis vectors, in chunks, so
        it is meant for small problems (DiffPIR's closed form, exact
        posteriors, tests).

        Parameters
        ----------
        max_entries : int
            Refuse (``ValueError``) to build a matrix with more entries.
        """
        d = math.prod(self.x_shape)
        m = math.prod(self.y_shape)
        if d * m > max_entries:
            raise ValueError(
                f"as_matrix would build a {m} x {d} matrix ({d * m} entries > max_entries={max_entries}); "
                "use forward/adjoint instead, or raise max_entries."
            )
        out = np.empty((m, d))
        chunk = max(1, min(d, max_entries // max(d, 1) // 4, 1024))
        for start in range(0, d, chunk):
            stop = min(d, start + chunk)
            basis = np.zeros((stop - start, d))
            basis[np.arange(stop - start), np.arange(start, stop)] = 1.0
            cols = self(basis.reshape((stop - start, *self.x_shape)))
            out[:, start:stop] = to_numpy(cols).reshape(stop - start, m).T
        return out

    def noise_cov(self, diagonal: bool = False) -> np.ndarray:
        """Observation noise covariance ``Gamma`` on the flattened ``y``, float64 NumPy.

        Parameters
        ----------
        diagonal : bool
            Return the diagonal, shape ``(prod(y_shape),)``, instead of the
            dense ``(prod(y_shape), prod(y_shape))`` matrix.
        """
        var = np.broadcast_to(np.asarray(to_numpy(self.noise_std), dtype=float) ** 2, self.y_shape)
        var = np.array(var, dtype=float).reshape(-1)
        return var if diagonal else np.diag(var)


# --------------------------------------------------------------------------
# explicit matrix
# --------------------------------------------------------------------------


class LinearProblem(LinearOperatorProblem):
    """A linear problem given by an explicit matrix, ``y = A @ x.ravel() + noise``.

    Parameters
    ----------
    A : array_like of shape (m, d)
        The forward matrix (converted to float64 NumPy; at call time it is
        converted once per namespace, device and dtype of the input).
    x_shape : int or tuple of int
        Shape of one unknown; ``prod(x_shape)`` must equal ``d``.
    noise_std : float or array of shape (m,)
        Standard deviation of the additive Gaussian noise on y.

    Attributes
    ----------
    matrix : ndarray of shape (m, d)
        The forward matrix.
    y_shape : tuple
        ``(m,)``.

    Examples
    --------
    >>> import numpy as np
    >>> problem = LinearProblem(np.eye(3)[:2], x_shape=3, noise_std=0.1)
    >>> problem(np.ones((5, 3))).shape
    (5, 2)
    """

    def __init__(self, A, x_shape, noise_std: Any = 0.0):
        A = np.asarray(to_numpy(A))
        if A.ndim != 2:
            raise ValueError(f"A must be a 2-D matrix of shape (m, d) (got {A.ndim} dimensions).")
        if np.iscomplexobj(A) or not np.all(np.isfinite(A)):
            raise ValueError("A must be a finite real matrix.")
        self.x_shape = _as_shape(x_shape, "x_shape")
        if math.prod(self.x_shape) != A.shape[1]:
            raise ValueError(
                f"A has {A.shape[1]} columns but x_shape {self.x_shape} has {math.prod(self.x_shape)} entries."
            )
        self._A = np.array(A, dtype=float)
        self.y_shape = (A.shape[0],)
        self.noise_std = _check_noise_std(noise_std, self.y_shape)
        self._cache = _ConstantCache()

    @property
    def matrix(self) -> np.ndarray:
        """The forward matrix ``A``, shape ``(m, d)`` (a copy)."""
        return self._A.copy()

    def forward(self, X):
        """``X.reshape(J, d) @ A.T``: a batch ``(J, *x_shape)`` to ``(J, m)``."""
        xp = get_namespace(X)
        AT = self._cache.get("AT", self._A.T, X)
        return xp.reshape(X, (X.shape[0], -1)) @ AT

    def _adjoint(self, Y):
        xp = get_namespace(Y)
        A = self._cache.get("A", self._A, Y)
        return xp.reshape(Y @ A, (Y.shape[0], *self.x_shape))

    def as_matrix(self, max_entries: int = 2**26) -> np.ndarray:
        """The forward matrix ``A`` (a copy); ``max_entries`` is ignored."""
        return self.matrix

    def __repr__(self) -> str:
        return f"LinearProblem(A: {self._A.shape}, x_shape={self.x_shape}, noise_std={self.noise_std!r})"
