"""Where an EnKG run spends its time: cProfile of the reference configuration, grouped.

Runs the ``speed`` suite's ``reference`` configuration (the reference code's
schedule, phi steps, batch 64, float32) on one ``ns32-neural`` instance and
prints the solver's own split of the wall time (denoiser, forward model, the
rest).  Then it reruns the same schedule with a free stand-in denoiser and
forward model under cProfile: what is left is the solver's own work, and the
profile says where it goes.

Usage::

    python -m benchmarks profile-enkg [--particles 16] [--steps 80] [--top 15]
"""

from __future__ import annotations

import cProfile
import pstats

import numpy as np

import kalmandiff as kd
from benchmarks._common import limit_threads, parser_for
from benchmarks.suites import SUITES, build_prior


class _FreeDenoiser:
    """A stand-in prior whose denoiser costs (almost) nothing: shrink towards zero."""

    def __init__(self, event_shape):
        self.event_shape = tuple(event_shape)

    def denoise(self, x, sigma):
        return x / (1.0 + float(np.max(sigma)) ** 2)


def _free_forward(x):
    """A stand-in forward model of the problem's output shape: subsample by 2 (cheap)."""
    return x[..., ::2, ::2]


def main(argv=None) -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    limit_threads(1)
    suite = SUITES["speed"]
    spec = suite.problem("ns32-neural")
    inst = kd.problems.make(spec.family, random_state=1, **spec.make_kwargs)
    prior = build_prior(spec.prior, inst)
    params = dict(suite.solver("reference", spec.key).params, n_particles=args.particles, n_steps=args.steps)
    solver = kd.EnKGSolver(prior, random_state=1, **params)
    y = np.asarray(inst.y, dtype=np.float32)
    solver.fit(y, inst.problem)
    st = solver.stats_
    total = st["time_total_s"]
    print(f"EnKG reference configuration, ns32-neural seed 1, J = {args.particles}, N = {args.steps}")
    for key in ("time_denoiser_s", "time_forward_s", "time_overhead_s"):
        print(f"  {key:18s} {st[key]:8.2f} s  {100 * st[key] / total:5.1f} %")

    # The same run with a free denoiser and forward model: all that remains is the solver's own work.
    free = kd.EnKGSolver(_FreeDenoiser(prior.event_shape), random_state=1, **params)
    problem = kd.problems.CallableProblem(_free_forward, x_shape=prior.event_shape, y_shape=y.shape)
    profiler = cProfile.Profile()
    profiler.enable()
    free.fit(y, problem)
    profiler.disable()
    print(f"\nSame schedule, free denoiser and forward: {free.stats_['time_total_s']:.2f} s in all")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
