"""Solvers against the prior mean on random linear-Gaussian problems (the defaults' property test).

Run: ``python -m benchmarks.bench_defaults --solver EnKGSolver --params "dict(update='kalman-sqrt')"
[--cases 30] [--solver-seed-offset 0]``.

Problems: :func:`kalmandiff.testing.random_linear_gaussian_case` (seeds ``0..cases-1``; ``d`` 4-256,
``m`` 1-d, noise 1e-3 to 1 of the signal, scales 1e-3 to 1e3, half of ``A`` ill-conditioned up to
1e6).  Each row: the error of ``reconstruct()`` against the exact posterior mean over the prior mean's
(``ratio < 1`` beats the prior mean) and the seconds of the fit.  The summary line gives the median and
largest ratio, how many cases are below 1, and the total time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import warnings

import numpy as np

import kalmandiff as kd
from kalmandiff.testing import random_linear_gaussian_case


def error_ratio(solver, case) -> float:
    """``||x_hat - mu_post|| / ||mu_prior - mu_post||`` of a fitted solver."""
    x_hat = np.asarray(solver.reconstruct(), dtype=float).reshape(-1)
    return float(np.linalg.norm(x_hat - case.mean) / np.linalg.norm(case.prior_mean - case.mean))


def run(solver_name: str, params: dict, n_cases: int, offset: int) -> list[tuple]:
    cls = getattr(kd, solver_name)
    rows = []
    for seed in range(n_cases):
        case = random_linear_gaussian_case(seed)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # cost warnings of the large defaults
            solver = cls(case.prior, random_state=seed + offset, verbose=False, **params)
            solver.fit(case.y, case.forward)
        secs = time.perf_counter() - t0
        i = case.info
        rows.append((seed, i["d"], i["m"], i["scale"], i["noise_ratio"], i["condition"], error_ratio(solver, case), secs))
        print(f"| {seed} | {i['d']} | {i['m']} | {i['scale']:.2g} | {i['noise_ratio']:.2g} | {i['condition']:.2g} | "
              f"{rows[-1][6]:.3f} | {secs:.2f} |", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", required=True)
    parser.add_argument("--params", default="dict()", help="a Python dict literal of solver parameters")
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--solver-seed-offset", type=int, default=0)
    args = parser.parse_args(argv)
    params = eval(args.params, {"__builtins__": {}}, {"dict": dict})  # noqa: S307 - a command-line literal
    print(f"date {datetime.date.today()}, {platform.platform()}, {os.cpu_count()} cores, numpy {np.__version__}")
    print(f"{args.solver} {params} solver seed offset {args.solver_seed_offset}")
    print("| case | d | m | scale | noise/signal | cond(A) | error / prior-mean error | s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = run(args.solver, params, args.cases, args.solver_seed_offset)
    r = np.array([row[6] for row in rows])
    t = sum(row[7] for row in rows)
    print(f"SUMMARY {args.solver} {params}: median {np.median(r):.3f}, max {r.max():.3f}, "
          f"below 1 in {(r < 1).sum()}/{len(r)}, worst cases {list(np.argsort(r)[::-1][:3])}, total {t:.1f} s")


if __name__ == "__main__":
    main()
