"""Priors in the EDM convention: analytic ones with exact denoisers and posteriors."""

from ._base import Prior
from .gaussian import GaussianPrior
from .grf import GaussianRandomFieldPrior
from .mixture import GaussianMixturePrior

__all__ = ["Prior", "GaussianPrior", "GaussianMixturePrior", "GaussianRandomFieldPrior"]
