"""The observation ``y`` and its noise: the one home of the misfit, the residuals and the cotangent.

Every solver reads the likelihood ``y = G(x) + noise`` through an
:class:`Observation`: the recorded data misfit ``Phi``, the weighted and
flat residuals of the Kalman updates, the guidance loss of the VP-family
solvers, the inverse noise variances of the gradient-based ones and the
cotangent ``dL/dG`` that a vector-Jacobian product is asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._backend import asarray_like, get_namespace, is_torch_array, to_numpy

__all__ = ["Observation", "inverse_noise_variance", "weighted_cotangent"]


class Observation:
    """``y`` in the compute namespace, with the problem that states its noise and residual.

    Parameters
    ----------
    problem : ForwardProblem
        Supplies ``y_shape``, ``residual``, ``noise_std_array`` and ``misfit_weights``.
    y : array ``problem.y_shape``
        The data, in the namespace of the computation.
    """

    def __init__(self, problem, y):
        self.problem = problem
        self.y = y
        self.xp = get_namespace(y)
        self.y_flat = self.xp.reshape(y, (-1,))

    def _rows(self, G):
        """Flattened rows ``(J, m)`` back to ``(J, *y_shape)``."""
        return self.xp.reshape(G, (G.shape[0], *self.problem.y_shape))

    def misfit(self, G):
        """``Phi_j = 0.5 * ||Gamma^{-1/2} (G_j - y)||^2`` for flattened ``G`` ``(J, m)``, as NumPy.

        The one definition of the data misfit that every solver records
        (a zero noise level counts as one).
        """
        xp = self.xp
        r = xp.reshape(self.problem.residual(self._rows(G), self.y), (G.shape[0], -1))
        std = xp.reshape(self.problem.noise_std_array(like=self.y), (1, -1))
        std = xp.where(std > 0, std, xp.ones_like(std))
        return to_numpy(0.5 * xp.sum((r / std) ** 2, axis=1))

    def positive_noise_std(self, update: str):
        """``noise_std`` flattened to ``(m,)``; a ValueError unless every entry is positive.

        The Kalman updates weight the data by ``Gamma^{-1}``, which noiseless data do not have.
        """
        xp = self.xp
        std = xp.reshape(self.problem.noise_std_array(like=self.y), (-1,))
        if not bool(xp.all(std > 0)):
            raise ValueError(
                f"update={update!r} needs a positive noise_std for every datum: a calibrated posterior "
                "with noiseless data is degenerate. Use the normalised (paper) update for noiseless data."
            )
        return std

    def flat_residual(self, G, data):
        """``problem.residual`` on flattened rows: ``G`` and ``data`` are ``(J, m)`` (or ``(1, m)``)."""
        r = self.problem.residual(self._rows(G), self._rows(data))
        return self.xp.reshape(r, (G.shape[0], -1))

    def weighted_residual(self, G):
        """``Gamma^{-1}``-weighted residuals (up to a scalar), flattened ``(J, m)``."""
        r = self.problem.residual(self._rows(G), self.y)
        w = self.problem.misfit_weights(like=self.y)
        return self.xp.reshape(r * w, (G.shape[0], -1))

    def guidance_losses(self, G):
        """``l_j = ||W^(1/2)(G_j - y)||^2`` with the problem's misfit weights, ``(J,)`` in the compute namespace.

        The loss the guided solvers (DPG, SCG, GSG) steer by: unit weights for a scalar noise level.
        """
        xp = self.xp
        r = self.flat_residual(G, xp.reshape(self.y_flat, (1, -1)))
        w = xp.reshape(self.problem.misfit_weights(like=self.y), (1, -1))
        return xp.sum(w * r**2, axis=1)

    def noise_loss(self) -> float:
        """``l_noise = sum_k w_k noise_std_k**2``: the expected guidance loss at the truth (0 if noiseless)."""
        problem = self.problem
        std = np.broadcast_to(np.asarray(to_numpy(problem.noise_std), dtype=float), tuple(problem.y_shape))
        w = np.asarray(to_numpy(problem.misfit_weights(like=self.y)), dtype=float)
        return float(np.sum(w * std**2))

    def inverse_noise_variance(self, noise_floor: float):
        """``1 / max(noise_std, noise_floor)**2`` per datum, flattened ``(m,)``, in the namespace of ``y``."""
        return inverse_noise_variance(self.problem, self.y, noise_floor)


def inverse_noise_variance(problem, like, noise_floor: float):
    """``1 / max(noise_std, noise_floor)**2`` per datum, flattened ``(m,)``, in the namespace of ``like``."""
    std = np.broadcast_to(np.asarray(to_numpy(problem.noise_std), dtype=float), tuple(problem.y_shape))
    std = np.maximum(std, noise_floor)
    return asarray_like(1.0 / std.reshape(-1) ** 2, like)


def weighted_cotangent(problem, G, y, weights, scale, keep=None) -> tuple[Any, Any]:
    """The cotangent ``dL/dG`` of ``L = sum_j c_j l_j``, ``l_j = sum_k w_k r_jk**2``, in torch.

    The one place a solver's loss on the forward values is differentiated
    (the gradient-based solvers' misfit and DPS's ``||r||``).  Members whose
    ``c_j l_j`` is not finite add nothing.

    Parameters
    ----------
    problem : ForwardProblem
        Its ``residual`` and ``y_shape``.
    G : torch tensor ``(J, m)``
        The forward values.
    y : torch tensor ``y_shape``
        The data, same dtype and device as ``G``.
    weights : torch tensor broadcastable to ``(J, *y_shape)``
        ``w``: inverse noise variances or misfit weights.
    scale : callable
        ``c = scale(l)`` from the detached losses ``(J,)``: a number or a ``(J,)`` tensor.
    keep : torch bool tensor ``(J,)``, optional
        Members whose rows enter at all; the others' ``G`` is replaced by
        zeros (no NaN reaches the backward pass) and their loss is 0.

    Returns
    -------
    cotangent : torch tensor ``(J, *y_shape)``
    losses : torch tensor ``(J,)``
        ``l_j`` (0 where not kept), detached.
    """
    import torch

    J, y_shape = G.shape[0], tuple(problem.y_shape)
    leaf = G.detach().requires_grad_(True)
    with torch.enable_grad():
        rows = leaf if keep is None else torch.where(keep[:, None], leaf, torch.zeros_like(leaf))
        r = problem.residual(rows.reshape((J, *y_shape)), y)
        loss = (weights * r**2).reshape(J, -1).sum(dim=1)
        if keep is not None:
            loss = torch.where(keep, loss, torch.zeros_like(loss))
        per = scale(loss.detach()) * loss
        total = torch.sum(torch.where(torch.isfinite(per), per, torch.zeros_like(per)))
        (cotangent,) = torch.autograd.grad(total, leaf)
    return cotangent.reshape((J, *y_shape)), loss.detach()


def as_torch_data(y, like_tensor):
    """``y`` as a torch tensor with the dtype and device of ``like_tensor`` (NumPy, CuPy or torch in)."""
    import torch

    if is_torch_array(y):
        return y.to(dtype=like_tensor.dtype, device=like_tensor.device)
    return torch.as_tensor(np.asarray(to_numpy(y)), dtype=like_tensor.dtype, device=like_tensor.device)
