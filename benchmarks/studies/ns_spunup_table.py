"""Spun-up Navier-Stokes: EnKG with the shipped network against the best stationary Gaussian.

Each row: one instance of ``kd.problems.make("navier-stokes", family="spun-up",
random_state=instance, prior=...)`` (GRF vorticity evolved one time unit at
Re 200, 32x32, the flagship's forward map), one prior (the shipped spun-up
network or the best stationary Gaussian of the same training fields), one
solver at its defaults but the ensemble size ``J``, one solver seed.  The
truth and the data do not depend on the prior, so both priors see the same
observations.  Rows: EnKG (default update) with each prior, EKI with the
Gaussian; relative L2 to the truth.

Rows go to a JSON-lines file as they finish; a rerun skips those already there.

Usage::

    python -m benchmarks ns-spunup-table --out benchmarks/results/ns_spunup_table.jsonl --J 64
    python -m benchmarks ns-spunup-table --out benchmarks/results/ns_spunup_table.jsonl --report
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import kalmandiff as kd
from benchmarks._common import add_out, parser_for

#: (solver, prior) pairs of the table
ROWS = (("EnKG default", "network"), ("EnKG default", "gaussian"), ("EKI", "gaussian"))


def make_solver(label: str, prior, J: int, seed: int):
    common = {"n_particles": J, "random_state": seed, "verbose": False}
    if label == "EnKG default":
        return kd.EnKGSolver(prior, **common)
    if label == "EKI":
        return kd.EKISolver(prior, **common)
    raise ValueError(f"unknown solver {label!r}")


def run_row(instance: int, prior_name: str, label: str, J: int, seed: int) -> dict:
    inst = kd.problems.make("navier-stokes", family="spun-up", random_state=instance, prior=prior_name)
    solver = make_solver(label, inst.prior, J, seed)
    t0 = time.perf_counter()
    solver.fit(inst.y, inst.problem)
    x_hat = np.asarray(kd._backend.to_numpy(solver.reconstruct()), dtype=float).reshape(inst.problem.x_shape)
    x_true = np.asarray(inst.x_true, dtype=float)
    return {
        "misfit": data_misfit(inst, x_hat),
        "instance": instance,
        "prior": prior_name,
        "solver": label,
        "J": J,
        "seed": seed,
        "relative_l2": float(np.linalg.norm(x_hat - x_true) / np.linalg.norm(x_true)),
        "wall_s": time.perf_counter() - t0,
    }


def data_misfit(inst, x: np.ndarray) -> float:
    """Mean squared residual of ``x``'s predicted data over the noise variance (about 1 for the truth)."""
    pred = np.asarray(kd._backend.to_numpy(inst.problem.forward(x[None])), dtype=float)[0]
    return float(
        np.mean((pred - np.asarray(inst.y, dtype=float)) ** 2 / np.asarray(inst.problem.noise_std) ** 2)
    )


def _key(row) -> tuple:
    return (row["instance"], row["prior"], row["solver"], row["J"], row["seed"])


def run(args):
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {_key(json.loads(line)) for line in f if line.strip()}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for seed in args.solver_seeds:
        for instance in args.instances:
            for label, prior in ROWS:
                if prior not in args.priors:
                    continue
                key = (instance, prior, label, args.J, seed)
                if key in done:
                    continue
                row = run_row(instance, prior, label, args.J, seed)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


def report(args) -> str:
    """Mean (and per-instance) relative L2 per (J, solver seed, row), and the network's margin."""
    with open(args.out) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    lines = [
        "| J | solver seed | instances | EnKG + network | EnKG + Gaussian | EKI + Gaussian "
        "| network below the better Gaussian |",
        "|---|---|---|---|---|---|---|",
    ]
    for J, seed in sorted({(r["J"], r["seed"]) for r in rows}):
        cells = {}
        for label, prior in ROWS:
            sel = {
                r["instance"]: r["relative_l2"]
                for r in rows
                if (r["J"], r["seed"], r["solver"], r["prior"]) == (J, seed, label, prior)
            }
            cells[(label, prior)] = sel
        common = sorted(set.intersection(*(set(c) for c in cells.values())))
        if not common:
            continue
        means = [float(np.mean([cells[k][i] for i in common])) for k in ROWS]
        margin = 1.0 - means[0] / min(means[1:])
        lines.append(
            f"| {J} | {seed} | {len(common)} | "
            + " | ".join(f"{m:.3f}" for m in means)
            + f" | {margin:.0%} |"
        )
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None):
    parser = parser_for(__doc__, raw=True)
    add_out(parser, "benchmarks/results/ns_spunup_table.jsonl")
    parser.add_argument("--J", type=int, default=64)
    parser.add_argument("--instances", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    parser.add_argument("--solver-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--priors", nargs="+", default=["network", "gaussian"], help="rows to run")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    if args.report:
        report(args)
        return
    import torch

    torch.set_num_threads(1)
    run(args)


if __name__ == "__main__":
    main()
