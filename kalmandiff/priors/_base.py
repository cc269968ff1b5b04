"""The prior contract: an EDM denoiser ``D(x, sigma) ~ E[x_0 | x_0 + sigma * eps = x]``."""

from __future__ import annotations

from typing import Any

from .._backend import get_namespace

__all__ = ["Prior", "sigma_column"]


def sigma_column(sigma, x):
    """Broadcast ``sigma`` (scalar or ``(n,)``) against a batch ``x`` of shape ``(n, ...)``.

    Returns an array of shape ``(n, 1, ..., 1)`` (or a Python float) in x's
    namespace, device and dtype, so ``x / sigma_column(sigma, x)`` works.
    """
    xp = get_namespace(x)
    if isinstance(sigma, (int, float)):
        return float(sigma)
    sigma = xp.asarray(sigma, dtype=x.dtype, device=getattr(x, "device", None))
    if sigma.ndim == 0:
        return sigma
    if sigma.shape[0] != x.shape[0]:
        raise ValueError(f"sigma has {sigma.shape[0]} entries for a batch of {x.shape[0]}.")
    return xp.reshape(sigma, (x.shape[0],) + (1,) * (x.ndim - 1))


class Prior:
    """Base class of priors in the EDM convention (DESIGN.md, principle 4).

    A prior knows the shape of one sample (``event_shape``) and gives the
    posterior-mean denoiser of its noised versions ``x_sigma = x_0 + sigma * eps``.
    Subclasses implement :meth:`denoise` and :meth:`sample`.

    Attributes
    ----------
    event_shape : tuple of int
        Shape of one sample, e.g. ``(d,)`` or ``(C, H, W)``.
    learned : bool
        True for a trained network (:class:`~kalmandiff.priors.TorchDenoiser`),
        whose covariance is unknown; solvers' ``"auto"`` settings read it.
    """

    event_shape: tuple[int, ...] = ()
    learned: bool = False

    def denoise(self, x, sigma):
        """Return ``D(x, sigma)`` for a batch ``x`` of shape ``(n, *event_shape)``.

        ``sigma`` (same units as x) is a scalar or an array of shape ``(n,)``;
        the result has x's shape, namespace, device and dtype.
        """
        raise NotImplementedError

    def score(self, x, sigma):
        """Score of the noised prior, ``(D(x, sigma) - x) / sigma**2``."""
        s = sigma_column(sigma, x)
        return (self.denoise(x, sigma) - x) / s**2

    def sample(self, n: int, random_state: Any = None, like: Any = None):
        """Draw ``n`` samples of shape ``(n, *event_shape)``.

        ``like`` (an array) selects the namespace, device and dtype of the
        result (default: NumPy float64).
        """
        raise NotImplementedError

    def _check_batch(self, x):
        if tuple(x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(
                f"{type(self).__name__} expects a batch of shape (n, {', '.join(map(str, self.event_shape))}); "
                f"got {tuple(x.shape)}."
            )

    def _flat(self, x):
        """The checked batch as ``(namespace, rows (n, d))`` for priors that work on flat vectors."""
        self._check_batch(x)
        xp = get_namespace(x)
        return xp, xp.reshape(x, (x.shape[0], -1))
