"""The forward-problem contract shared by every problem family.

A :class:`ForwardProblem` is a *batched* noiseless map ``G``: it takes an
ensemble ``X`` of shape ``(J, *x_shape)`` and returns ``(J, *y_shape)`` in
the same array namespace (NumPy, CuPy, torch, ``array_api_strict``) and on
the same device.  Solvers only ever call it; they never differentiate it
unless ``differentiable`` is true and they run on torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import RandomSource, asarray_like, get_namespace, to_numpy

__all__ = ["ForwardProblem", "CallableProblem", "as_problem"]


def _as_shape(shape: Any, name: str) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as exc:
        raise ValueError(f"{name} must be a tuple of positive ints (got {shape!r}).") from exc
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"{name} must be a non-empty tuple of positive ints (got {shape!r}).")
    return shape


def check_noise_std(noise_std: Any, y_shape: tuple[int, ...]):
    """Validate ``noise_std``: a non-negative finite scalar or array broadcastable to ``y_shape``."""
    arr = np.asarray(to_numpy(noise_std), dtype=float)
    try:
        np.broadcast_to(arr, y_shape)
    except ValueError as exc:
        raise ValueError(
            f"noise_std must be a scalar or broadcastable to y_shape {y_shape} (got shape {arr.shape})."
        ) from exc
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("noise_std must be finite and non-negative.")
    return float(arr) if arr.ndim == 0 else arr


class ForwardProblem:
    """Base class of forward problems ``y = G(x) + noise``.

    Subclasses set ``x_shape``, ``y_shape`` and ``noise_std`` and implement
    :meth:`forward` on a batch.  Everything else (shape checks, noisy
    observations, residuals, misfits, default metrics) lives here.

    Besides being called, a problem declares what solvers may ask of it (its
    capabilities): ``differentiable`` (autograd), ``linear_operator`` (an
    exact adjoint), ``geometry`` (localisation) and :meth:`member_failures`
    (why members failed).

    Attributes
    ----------
    x_shape : tuple of int
        Shape of one unknown, without the particle axis.
    y_shape : tuple of int
        Shape of one observation.
    noise_std : float or ndarray
        Standard deviation of the additive Gaussian observation noise, a
        scalar or an array broadcastable to ``y_shape`` (in the units of y).
    differentiable : bool or None
        True when :meth:`forward` is written so that torch autograd can
        differentiate through it (gradient-based solvers need this); None
        (a plain callable given to ``fit``): unknown, so the gradient-based
        solvers probe it once.
    geometry : Geometry or None
        Where the unknowns and data live and whether the map is local
        (:class:`~kalmandiff.problems.Geometry`): what spatial localisation
        (``localization="auto"`` or a radius) may use, never the array
        shapes.  None (the default, and a plain callable's): nothing
        declared, so only the geometry-free localiser applies;
        ``Geometry(local=False)`` (phase retrieval, interferometry,
        Navier-Stokes): the data may depend on every unknown.  Any
        problem may be given one (``problem.geometry = Geometry(...)``).
    linear_operator : bool
        True when the problem is ``G(x) = A x`` with an exact
        :meth:`adjoint` (every :class:`~kalmandiff.problems.LinearOperatorProblem`):
        solvers may then take vector-Jacobian products as ``A^T v`` and
        closed-form linear steps instead of autograd.  False by default.
    last_failures : dict of int to str
        Why members of the last :meth:`forward` call failed, by member index
        within that call (empty when none failed or the problem does not
        say); read through :meth:`member_failures`.  A problem that can tell
        (a black box that catches exceptions, a PDE solver that detects a
        blow-up) sets it on every call.
    """

    x_shape: tuple[int, ...] = ()
    y_shape: tuple[int, ...] = ()
    noise_std: Any = 0.0
    differentiable: bool = False
    geometry: Any = None
    linear_operator: bool = False

    # -- capabilities --------------------------------------------------------
    def member_failures(self) -> dict[int, str]:
        """Why members of the last call failed, ``{member index: reason}`` (empty if unknown)."""
        return dict(getattr(self, "last_failures", None) or {})

    def reports_member_failures(self) -> bool:
        """Whether this problem states per-member failure reasons (it has ``last_failures``)."""
        return hasattr(self, "last_failures")

    # -- the map -----------------------------------------------------------
    def forward(self, X):
        """Noiseless forward map on a batch ``(J, *x_shape) -> (J, *y_shape)``."""
        raise NotImplementedError

    def __call__(self, X):
        """Validate the batch shape and apply :meth:`forward`."""
        shape = tuple(X.shape)
        if shape[1:] != tuple(self.x_shape):
            raise ValueError(
                f"{type(self).__name__} expects a batch of shape (J, {', '.join(map(str, self.x_shape))}); "
                f"got {shape}. Add a leading particle axis for a single input (x[None])."
            )
        return self.forward(X)

    # -- observations ------------------------------------------------------
    def observe(self, x, random_state=None):
        """Return one noisy observation ``y = G(x) + noise_std * n``, n ~ N(0, I).

        Parameters
        ----------
        x : array of shape ``x_shape``
            The true unknown (no particle axis).
        random_state : None, int or numpy.random.Generator
        """
        xp = get_namespace(x)
        y = self(xp.reshape(x, (1, *self.x_shape)))[0, ...]
        return self.add_noise(y, random_state)

    def add_noise(self, y, random_state=None):
        """Add the problem's Gaussian observation noise to a clean ``y``."""
        rng = RandomSource(random_state, stream="noise")
        std = self.noise_std_array(like=y)
        return y + std * rng.normal(tuple(y.shape), like=y)

    def noise_std_array(self, like):
        """``noise_std`` as an array in the namespace, device and dtype of ``like``."""
        std = np.broadcast_to(to_numpy(self.noise_std), tuple(self.y_shape))
        return asarray_like(np.ascontiguousarray(std), like)  # a writable copy: torch refuses read-only views

    # -- residuals and misfit ----------------------------------------------
    def residual(self, Y, y):
        """Residual ``Y - y`` between predictions ``(J, *y_shape)`` and data ``y_shape``.

        Problems whose data are angles (closure phases) override this to wrap
        the difference.
        """
        return Y - y

    def misfit_weights(self, like):
        """Per-datum weights ``1 / noise_std**2`` (``Gamma^{-1}``), normalised.

        With a scalar or zero noise level every datum gets weight one: a
        scalar rescaling of the misfit changes nothing in EnKG's normalised
        step, and a zero noise level must not divide by zero.
        """
        std = np.broadcast_to(to_numpy(self.noise_std).astype(float), tuple(self.y_shape))
        if np.all(std == std.flat[0]) or np.any(std <= 0):
            w = np.ones(self.y_shape)
        else:
            w = 1.0 / std**2
            w = w / w.mean()
        return asarray_like(w, like)

    # -- evaluation --------------------------------------------------------
    def metrics(self, x_hat, x_true) -> dict[str, float]:
        """Field-standard figures of merit; the base gives relative L2 error."""
        from ..metrics import relative_l2

        return {"relative_l2": relative_l2(x_hat, x_true)}

    def plot(self, x=None, y=None, x_true=None, ax=None):  # pragma: no cover - graphics
        """Show the unknown and/or observation (matplotlib imported lazily)."""
        import matplotlib.pyplot as plt

        panels = [
            (n, a) for n, a in (("truth", x_true), ("estimate", x), ("observation", y)) if a is not None
        ]
        if ax is None:
            fig, ax = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
            ax = ax[0]
        for a, (name, arr) in zip(np.atleast_1d(ax), panels):
            arr = np.squeeze(to_numpy(arr))
            if arr.ndim == 2:
                a.imshow(arr, cmap="RdBu_r" if arr.min() < 0 else "gray")
            else:
                a.plot(arr.ravel())
            a.set_title(name)
        return ax

    def describe_observation(self) -> str:
        """What ``y`` is, in words, for figure captions (problems override with their physics).

        The default names the shape and the noise: ``"y = G(x) + noise, shape (16,), noise std 0.1"``.
        """
        return f"y = G(x) + noise, shape {tuple(self.y_shape)}, {_noise_words(self.noise_std)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(x_shape={self.x_shape}, y_shape={self.y_shape}, noise_std={self.noise_std!r})"


class CallableProblem(ForwardProblem):
    """Wrap a batched callable ``fn(X) -> Y`` as a :class:`ForwardProblem`.

    ``y_shape`` is inferred from the data ``y`` given to ``fit``.
    """

    def __init__(self, fn: Callable, x_shape, y_shape, noise_std=0.0, differentiable=False):
        if not callable(fn):
            raise ValueError(f"forward must be callable (got {type(fn).__name__}).")
        self.fn = fn
        self.x_shape = _as_shape(x_shape, "x_shape")
        self.y_shape = _as_shape(y_shape, "y_shape")
        self.noise_std = check_noise_std(noise_std, self.y_shape)
        self.differentiable = differentiable

    def forward(self, X):
        return self.fn(X)


def as_problem(forward: Any, y, x_shape=None, noise_std=None) -> ForwardProblem:
    """Return ``forward`` as a :class:`ForwardProblem`.

    A ForwardProblem passes through (``noise_std`` must then be None or match
    its own); a plain callable needs ``x_shape`` (taken from the prior by the
    solvers) and takes ``y_shape`` from ``y``.
    """
    if isinstance(forward, ForwardProblem):
        return forward
    if not callable(forward):
        raise ValueError(
            "forward must be a kalmandiff ForwardProblem or a callable on a batch "
            f"(J, *x_shape) -> (J, *y_shape); got {type(forward).__name__}."
        )
    if x_shape is None:
        raise ValueError("a callable forward needs x_shape (the solver takes it from its prior).")
    # differentiable=None: unknown; a gradient-based solver probes it once for torch autograd.
    return CallableProblem(
        forward, x_shape, tuple(y.shape), 0.0 if noise_std is None else noise_std, differentiable=None
    )


def _noise_words(noise_std) -> str:
    """``"noise std 1"`` or ``"noise std 0.1-0.5"`` for a scalar or per-datum noise level."""
    arr = np.asarray(to_numpy(noise_std), dtype=float)
    if arr.size == 1 or np.all(arr == arr.flat[0]):
        return f"noise std {float(arr.flat[0]):.3g}"
    return f"noise std {float(arr.min()):.3g}-{float(arr.max()):.3g}"
