"""kalmandiff: inverse problems with diffusion-model priors and black-box forward models.

>>> import kalmandiff as kd
>>> solver = kd.EnKGSolver(prior, n_particles=256)          # doctest: +SKIP
>>> x_hat = solver.fit(y, problem).reconstruct()            # doctest: +SKIP
"""

from . import diffusion, metrics, priors, problems
from .estimators import EKISolver, EnKGSolver, MemberFailureError, NotFittedError

__version__ = "0.1.0.dev0"

__all__ = [
    "EnKGSolver",
    "EKISolver",
    "MemberFailureError",
    "NotFittedError",
    "diffusion",
    "metrics",
    "priors",
    "problems",
    "__version__",
]
