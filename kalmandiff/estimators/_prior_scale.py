"""The prior's pointwise scale, where its moments are known: the unit of a noise schedule.

The VP-family solvers' ``data_scale="auto"`` and EnKG's schedule read it.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

__all__ = ["prior_scale"]


#: prior_scale's results, per prior object (the steps of a run ask for it again)
_PRIOR_SCALES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prior_scale(prior) -> float | None:
    """The prior's pointwise standard deviation, ``sqrt(mean_k Var x_k)``, where its moments are known.

    Read from ``marginal_std()`` (:class:`~kalmandiff.priors.GaussianPrior`),
    ``pointwise_std`` (:class:`~kalmandiff.priors.GaussianRandomFieldPrior`)
    or ``cov`` (:class:`~kalmandiff.priors.GaussianMixturePrior`); None for a
    prior that states none of them (a network prior).
    """
    try:
        return _PRIOR_SCALES[prior]
    except (KeyError, TypeError):
        pass
    value = _prior_scale(prior)
    try:
        _PRIOR_SCALES[prior] = value
    except TypeError:  # not weakly referenceable: no cache
        pass
    return value


def _prior_scale(prior) -> float | None:
    try:
        if callable(getattr(prior, "marginal_std", None)):
            var = np.asarray(prior.marginal_std(), dtype=float) ** 2
        elif getattr(prior, "pointwise_std", None) is not None:
            var = np.asarray(float(prior.pointwise_std)) ** 2
        elif getattr(prior, "cov", None) is not None:
            var = np.diag(np.asarray(prior.cov, dtype=float))
        else:
            return None
    except (TypeError, ValueError, AttributeError, NotImplementedError):
        return None
    value = float(np.sqrt(np.mean(var)))
    return value if math.isfinite(value) and value > 0 else None
