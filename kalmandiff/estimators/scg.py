"""Stochastic control guidance (SCG; Huang et al., the EnKG paper's best-of-K baseline).

For the first quarter of the steps the sampler runs unguided.  Afterwards
each reverse-SDE step draws ``K`` candidate next states from the step's
Gaussian, denoises each at the next noise level and keeps the candidate
whose clean estimate fits the data best (reference ``algo/scg.py``).  The
last step returns the denoised estimate.  Nothing is differentiated.

The reference also replaces the state by its denoised estimate at the
switch step ``i = int(threshold N)`` (a branch-ordering quirk, research
notes section 2); here that step is an ordinary candidate step.
"""

from __future__ import annotations

import math

import numpy as np

from ._guided import GuidedSolver, GuidedStep
from ._params import FRACTION, POSITIVE_INT, solver_parameters
from ._registry import register_solver

__all__ = ["SCGSolver"]


@register_solver("scg", derivative_free=True, rank=30, quick={"n_steps": 6, "n_queries": 8})
@solver_parameters
class SCGSolver(GuidedSolver):
    """Best-of-K candidate selection along the VP-SDE sampler.

    Per guided step and sample: ``1 + K`` denoiser evaluations (the state,
    then the ``K`` candidates in one batched call) and ``K`` forward
    evaluations (one batched call).  Unguided steps and the final step cost
    one denoiser evaluation.

    Against the prior mean (docs/benchmarks.md, "Defaults against the prior mean", 30 random
    linear-Gaussian problems): one sample at the defaults (200 steps, 64 candidates) is closer to
    the exact posterior mean than the prior mean is on 9 of 30, where one *exact* posterior sample
    would be on 9.3 (a sample lies about ``sqrt(tr Sigma_post)`` from the posterior mean).  For a
    point estimate, average ``n_particles`` samples (an exact 16-sample mean wins on 24.6).

    Parameters
    ----------
    prior : Prior
        Diffusion prior with ``denoise(x, sigma)`` accepting torch tensors
        (no gradient is taken).
    n_queries : int, default 512
        ``K``, candidates per guided step and sample, each one forward
        evaluation (reference ``n_candidates``: 512 for Navier-Stokes, 1024
        black hole, 256 FFHQ); the name DPG and GSG use for their per-step
        forward queries (``n_candidates`` is a deprecated alias).
    threshold : float, default 0.25
        Fraction of the steps run without guidance (reference ``threshold``).
        SCG has no step size: keeping the best of ``K`` candidates is
        invariant to the scales of ``x`` and ``y``, so its only unit is the
        schedule's (``data_scale``; ``defaults_for`` gives the reference's 1).
    %(common)s

    Attributes
    ----------
    particles_, stats_, history_
        As for :class:`~kalmandiff.DPSSolver` (no VJPs).
    """

    # enkg-pytorch scripts (network batch 64 throughout)
    _FAMILY_DEFAULTS = {
        "navier-stokes": {"n_queries": 512, "data_scale": 1.0},
        "interferometry": {"n_queries": 1024, "data_scale": 1.0},
        "images": {"n_queries": 256, "data_scale": 1.0},
    }

    _BUDGET_PARAMETERS = ("n_queries", "n_steps")
    _RENAMED_PARAMETERS = {"n_candidates": "n_queries"}
    _EQUIVALENT_PARAMETERS = {"queries": GuidedSolver._QUERIES}

    n_queries: int = 512
    threshold: float = 0.25

    _param_constraints = {
        "n_queries": [POSITIVE_INT],
        "threshold": [FRACTION],
    }

    def guided_steps(self) -> range:
        """Indices of the candidate-selection steps."""
        return range(int(self.threshold * self.n_steps), self.n_steps - 1)

    def _per_step_counts(self, i: int) -> dict[str, int]:
        if i in self.guided_steps():
            K = self.n_queries
            return {"denoiser": 1 + K, "denoiser_calls": 2, "forward": K, "forward_calls": 1, "vjp": 0}
        return {"denoiser": 1, "denoiser_calls": 1, "forward": 0, "forward_calls": 0, "vjp": 0}

    def _guided_step(self, ctx, step: GuidedStep, state: dict):
        import torch

        if step.last:
            # The reference ends on the denoised estimate (put back in scaled coordinates).
            return step.denoised * step.scale_next, {"misfit": None}
        if step.i not in self.guided_steps():
            return self._noise_step(ctx, step), {"misfit": None}
        mean = step.mean()
        P, K = mean.shape[0], int(self.n_queries)
        noise = ctx.rng.normal((P, K, *mean.shape[1:]), like=mean)
        candidates = (mean[:, None] + math.sqrt(step.factor) * noise).reshape(P * K, *mean.shape[1:])
        x0 = ctx.denoise(candidates / step.scale_next, step.sigma_next)
        losses, ok, phi = yield from self._losses(ctx, x0)
        losses = np.where(ok, losses, np.inf).reshape(P, K)
        # Candidate 0 is an ordinary unguided draw, the fallback when every candidate failed.
        best = np.where(np.isfinite(losses).any(axis=1), np.argmin(losses, axis=1), 0)
        index = torch.as_tensor(np.arange(P) * K + best, device=candidates.device)
        return candidates[index], {"misfit": phi.reshape(P, K)[np.arange(P), best]}
