"""Solvers against the prior mean on random linear-Gaussian problems (the defaults' property test).

Run: ``python -m benchmarks defaults --solver EnKGSolver --params "dict(update='kalman-sqrt')"
[--cases 30] [--solver-seed-offset 0]``; ``--known-failures`` prints the property test's strict-xfail
table from the result files in ``benchmarks/results/defaults/`` (``RESULT_FILES``).

Problems: :func:`kalmandiff.testing.random_linear_gaussian_case` (seeds ``0..cases-1``; ``d`` 4-256,
``m`` 1-d, noise 1e-3 to 1 of the signal, scales 1e-3 to 1e3, half of ``A`` ill-conditioned up to
1e6).  Each row: the error of ``reconstruct()`` against the exact posterior mean over the prior mean's
(``ratio < 1`` beats the prior mean) and the seconds of the fit.  The summary line gives the median and
largest ratio, how many cases are below 1, and the total time.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

import kalmandiff as kd
from benchmarks._common import machine_line, parser_for
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
        rows.append(
            (
                seed,
                i["d"],
                i["m"],
                i["scale"],
                i["noise_ratio"],
                i["condition"],
                error_ratio(solver, case),
                secs,
            )
        )
        print(
            f"| {seed} | {i['d']} | {i['m']} | {i['scale']:.2g} | {i['noise_ratio']:.2g} | {i['condition']:.2g} | "
            f"{rows[-1][6]:.3f} | {secs:.2f} |",
            flush=True,
        )
    return rows


#: the result files the property test's strict xfails come from: solver -> file under RESULTS
RESULT_FILES = {
    "EKISolver": "eki_defaults",
    "DiffPIRSolver": "diffpir_defaults",
    "RMPSolver": "rmp_defaults",
    "DPSSolver": "dps_N200",
    "SCGSolver": "scg_N200_c64",
    "GSGSolver": "gsg_N200_q64",
    "DPGSolver": "dpg_N200_s64",
    "MAPSolver": "map_defaults",
}
RESULTS = "benchmarks/results/defaults"


def exact_sampler_success(case, n_samples: int, n_draws: int = 4000, seed: int = 0) -> float:
    """Probability that the mean of ``n_samples`` exact posterior draws beats the prior mean on ``case``.

    The floor of any sampler that returns the mean of ``n_samples`` posterior samples: their error
    from the posterior mean is Gaussian with covariance ``Sigma_post / n_samples``.
    """
    cov = np.asarray(case.prior.posterior(case.A, case.y, case.noise_std**2).cov)
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2)
    z = np.random.default_rng(seed).standard_normal((n_draws, evals.size))
    err = np.linalg.norm(z * np.sqrt(np.clip(evals, 0, None) / n_samples), axis=1)
    return float(np.mean(err < np.linalg.norm(case.prior_mean - case.mean)))


def known_failures() -> str:
    """The property test's ``KNOWN_FAILURES`` rows ``(solver, case, ratio, p)``, from the result files.

    ``ratio >= 1`` is the measured error over the prior mean's; ``p`` the probability that the mean
    of ``n_particles`` exact posterior samples beats the prior mean on that case.
    """
    lines = []
    for name, stem in RESULT_FILES.items():
        K = getattr(kd, name)(kd.priors.GaussianPrior(np.zeros(1), 1.0)).n_particles
        for row in open(f"{RESULTS}/{stem}.md").read().splitlines():
            cells = [c.strip() for c in row.strip("|").split("|")]
            if len(cells) != 8 or not cells[0].isdigit() or float(cells[6]) < 1.0:
                continue
            seed = int(cells[0])
            p = exact_sampler_success(random_linear_gaussian_case(seed), K)
            lines.append(f'    ("{name}", {seed}, {cells[6]}, {p:.2f}),')
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--solver")
    parser.add_argument("--known-failures", action="store_true", help="print the property test's xfail table")
    parser.add_argument("--params", default="dict()", help="a Python dict literal of solver parameters")
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--solver-seed-offset", type=int, default=0)
    args = parser.parse_args(argv)
    if args.known_failures:
        print(known_failures())
        return
    params = eval(args.params, {"__builtins__": {}}, {"dict": dict})  # noqa: S307 - a command-line literal
    print(machine_line())
    print(f"{args.solver} {params} solver seed offset {args.solver_seed_offset}")
    print("| case | d | m | scale | noise/signal | cond(A) | error / prior-mean error | s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = run(args.solver, params, args.cases, args.solver_seed_offset)
    r = np.array([row[6] for row in rows])
    t = sum(row[7] for row in rows)
    print(
        f"SUMMARY {args.solver} {params}: median {np.median(r):.3f}, max {r.max():.3f}, "
        f"below 1 in {(r < 1).sum()}/{len(r)}, worst cases {list(np.argsort(r)[::-1][:3])}, total {t:.1f} s"
    )


if __name__ == "__main__":
    main()
