"""Accuracy of EnKG (both modes) and EKI against exact linear-Gaussian and mixture posteriors.

Run: ``python -m benchmarks posterior-accuracy [--seeds 4] [--particles 256 ...] [--steps 80 ...]
[--solvers NAME ...]``.
Prints a markdown table of the relative posterior-mean error
``||x_hat - m_post|| / ||m_post||`` (the prior mean's error alongside) and the
spread ratio ``mean(ensemble std) / mean(exact posterior std)``, as medians
over seeds.  The exact posteriors are the closed forms of
``kalmandiff.testing`` (:func:`~kalmandiff.testing.gaussian_case`, :func:`~kalmandiff.testing.mixture_case`).
"""

from __future__ import annotations

import time

import numpy as np

import kalmandiff as kd
from benchmarks._common import add_seed_count, add_sizes, machine_line, parser_for
from kalmandiff.testing import gaussian_case, mixture_case
from kalmandiff.testing import posterior_scores as scores

CASES = [
    ("Gaussian", gaussian_case, 16, 8, 0.1),
    ("Gaussian", gaussian_case, 8, 8, 0.3),
    ("Gaussian", gaussian_case, 32, 4, 0.05),
    ("mixture (K=3)", mixture_case, 4, 2, 0.2),
    ("mixture (K=3)", mixture_case, 8, 4, 0.1),
]

SOLVERS = {
    "EnKG auto (default)": lambda prior, J, seed: kd.EnKGSolver(prior, n_particles=J, random_state=seed),
    "EnKG paper": lambda prior, J, seed: kd.EnKGSolver(
        prior, n_particles=J, update="paper", random_state=seed
    ),
    "EnKG kalman": lambda prior, J, seed: kd.EnKGSolver(
        prior, n_particles=J, update="kalman", random_state=seed
    ),
    "EnKG kalman-sqrt": lambda prior, J, seed: kd.EnKGSolver(
        prior, n_particles=J, update="kalman-sqrt", random_state=seed
    ),
    "EnKG kalman-sqrt adaptive": lambda prior, J, seed: kd.EnKGSolver(
        prior, n_particles=J, update="kalman-sqrt", tempering="adaptive", random_state=seed
    ),
    "EnKG kalman-sqrt, Heun": lambda prior, J, seed: kd.EnKGSolver(
        prior, n_particles=J, update="kalman-sqrt", ode_method="heun", random_state=seed
    ),
    "EKI kalman": lambda prior, J, seed: kd.EKISolver(prior, n_particles=J, random_state=seed),
    "EKI kalman-sqrt": lambda prior, J, seed: kd.EKISolver(
        prior, n_particles=J, update="kalman-sqrt", random_state=seed
    ),
}


def main(argv=None) -> None:
    parser = parser_for(__doc__)
    add_seed_count(parser, 4)
    add_sizes(parser, "--particles", [256])
    add_sizes(parser, "--steps", [80], help="EnKG's n_steps (EKI has none)")
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS), metavar="NAME")
    args = parser.parse_args(argv)
    print(machine_line())
    print(
        "command: python -m benchmarks posterior-accuracy "
        + " ".join(["--seeds", str(args.seeds), "--particles", *map(str, args.particles)])
        + " ".join(["", "--steps", *map(str, args.steps), "--solvers", *(repr(n) for n in args.solvers)])
    )
    print()
    print(
        "| prior | d | m | noise | J | N | solver | error (median) | error range | prior-mean error | "
        "spread ratio | s/fit |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for label, make, d, m, noise in CASES:
        for J in args.particles:
            for N in args.steps:
                for name in args.solvers:
                    if name.startswith("EKI") and N != args.steps[0]:
                        continue  # EKI has no steps: once per J
                    _row(label, make, d, m, noise, J, N, name, args.seeds)


def _row(label, make, d, m, noise, J, N, name, n_seeds) -> None:
    res, t0 = [], time.perf_counter()
    for seed in range(n_seeds):
        case = make(d, m, noise, seed=seed)
        solver = SOLVERS[name](case["prior"], J, seed).set_params(verbose=False)
        if "n_steps" in solver.get_params():
            solver.set_params(n_steps=N)
        res.append(scores(solver.fit(case["y"], lambda X, A=case["A"]: X @ A.T, noise_std=noise), case))
    r = np.array(res)
    secs = (time.perf_counter() - t0) / n_seeds
    steps = N if name.startswith("EnKG") else "-"
    print(
        f"| {label} | {d} | {m} | {noise} | {J} | {steps} | {name} | {np.median(r[:, 0]):.3f} | "
        f"{r[:, 0].min():.3f}-{r[:, 0].max():.3f} | {np.median(r[:, 1]):.2f} | {np.median(r[:, 2]):.2f} | "
        f"{secs:.1f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
