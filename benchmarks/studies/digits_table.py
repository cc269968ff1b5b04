"""The learned prior against the best Gaussian on the digits family: phase retrieval and inpainting.

Each row: one problem (``kd.problems.make(name, random_state=instance, prior=...)``,
16x16 held-out digits), one prior (the shipped network or the best Gaussian of
the same training images), one solver at one budget, one solver seed.  The
truth and the data of an instance do not depend on the prior, so the two
priors are compared on the same observations.  Budgets: ``J`` is the ensemble
size of EnKG and EKI, the candidates of SCG and the samples of DPG per step;
DPS (autograd, the gradient-based reference) takes ``2 J`` steps.

Phase retrieval is scored after aligning the estimate over the map's exact
symmetries on this family (``PhaseRetrieval.align``): sign and the 180-degree
rotation (the digits' background is -1, so the support fills the 16x16 window
and shifts inside the zero-padded canvas change the data: they are not
symmetries here).

Rows go to a JSON-lines file as they finish; a rerun skips the rows already
there, so the script can be stopped and resumed.  Bounded: one row takes
seconds (EnKG at J = 256 about 10-20 s on one loaded core).

Usage::

    python -m benchmarks digits-table --out benchmarks/results/digits_table.jsonl
    python -m benchmarks digits-table --out benchmarks/results/digits_table.jsonl --report
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import kalmandiff as kd
from benchmarks._common import add_out, parser_for

PROBLEMS = ("phase-retrieval", "inpainting")
PRIORS = ("network", "gaussian")
SOLVERS = ("EnKG kalman-sqrt", "EnKG paper", "EKI", "DPS", "SCG", "DPG")
#: also available: "EnKG default" (every setting but J at the class defaults)


def make_solver(label: str, prior, J: int, seed: int, localization="auto"):
    """The solver ``label`` at budget ``J`` with solver seed ``seed``.

    ``localization`` goes to EnKG and EKI: ``"auto"`` (their default) or
    ``None`` (unlocalised, as the table's first rows were measured before
    ``"auto"`` existed).
    """
    common = {"random_state": seed, "verbose": False}
    ensemble = {"localization": localization}
    if label == "EnKG default":
        return kd.EnKGSolver(prior, n_particles=J, **ensemble, **common)
    if label == "EnKG kalman-sqrt":
        return kd.EnKGSolver(prior, n_particles=J, n_steps=20, update="kalman-sqrt", **ensemble, **common)
    if label == "EnKG paper":
        return kd.EnKGSolver(prior, n_particles=J, n_steps=20, update="paper", **ensemble, **common)
    if label == "EKI":
        return kd.EKISolver(prior, n_particles=J, max_iter=100, **ensemble, **common)
    if label == "DPS":
        return kd.DPSSolver(prior, n_steps=2 * J, **common)
    if label == "SCG":
        return kd.SCGSolver(prior, n_steps=100, n_queries=J, **common)
    if label == "DPG":
        return kd.DPGSolver(prior, n_steps=100, n_queries=J, **common)
    raise ValueError(f"unknown solver {label!r}")


def aligned(problem, x_hat: np.ndarray, x_true: np.ndarray) -> np.ndarray:
    """``x_hat`` moved by the map's symmetries to the copy closest to ``x_true`` (``problem.align``, where defined)."""
    align = getattr(problem, "align", None)
    return x_hat if align is None else align(x_hat, x_true)


def run_row(problem_name, instance, prior_name, label, J, seed, localization="auto") -> dict:
    inst = kd.problems.make(problem_name, random_state=instance, prior=prior_name)
    solver = make_solver(label, inst.prior, J, seed, localization)
    t0 = time.perf_counter()
    solver.fit(inst.y, inst.problem)
    x_hat = np.asarray(kd._backend.to_numpy(solver.reconstruct()), dtype=float).reshape(inst.problem.x_shape)
    wall = time.perf_counter() - t0
    x_true = np.asarray(inst.x_true, dtype=float)
    m = inst.problem.metrics(aligned(inst.problem, x_hat, x_true), x_true)
    return {
        "problem": problem_name,
        "instance": instance,
        "digit_index": inst.info["digit_index"],
        "prior": prior_name,
        "solver": label,
        "J": J,
        "seed": seed,
        "localization": str(localization),
        "relative_l2": float(m["relative_l2"]),
        "psnr": float(m["psnr"]),
        "wall_s": wall,
    }


def _key(row) -> tuple:
    return (row["problem"], row["instance"], row["prior"], row["solver"], row["J"], row["seed"])


def run(args):
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as f:
            done = {_key(json.loads(line)) for line in f if line.strip()}
    plan = [
        (p, i, pr, s, J, seed)
        for J in args.budgets
        for seed in args.solver_seeds
        for s in args.solvers
        for p in args.problems
        for i in args.instances
        for pr in args.priors
        if not (seed != args.solver_seeds[0] and s not in args.second_seed_solvers)
    ]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    for p, i, pr, s, J, seed in plan:
        key = (p, i, pr, s, J, seed)
        if key in done:
            continue
        try:
            row = run_row(p, i, pr, s, J, seed, args.localization)
        except Exception as exc:  # a failed run is a row too, shown as such in the table
            row = dict(zip(("problem", "instance", "prior", "solver", "J", "seed"), key))
            row.update(
                relative_l2=float("nan"), psnr=float("nan"), wall_s=float("nan"), error=repr(exc)[:200]
            )
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(
            f"{p:16s} i={i} {pr:8s} {s:17s} J={J:4d} seed={seed} rel {row['relative_l2']:.3f} "
            f"psnr {row['psnr']:.1f} {row['wall_s']:.1f}s",
            flush=True,
        )


def _load_rows(paths) -> list[dict]:
    """Rows of the files in order; a row whose key appears again in a later file is replaced by it."""
    rows = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows[_key(row)] = row
    return list(rows.values())


def done_when(args) -> str:
    """Issue 24's check: EnKG + network against EnKG + Gaussian and EKI + Gaussian, per budget and solver seed.

    Means over the instances each cell has (the count is shown where it is below the row's).
    """
    rows = _load_rows([args.out, *args.also])
    lines = [
        "| problem | J | EnKG update | solver seed | EnKG + network | EnKG + Gaussian | EKI + Gaussian "
        "| network below the better Gaussian run |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(problem, prior, solver, J, seed):
        sel = [
            r["relative_l2"]
            for r in rows
            if (r["problem"], r["prior"], r["solver"], r["J"], r["seed"]) == (problem, prior, solver, J, seed)
        ]
        return (float(np.mean(sel)), len(sel)) if sel else (float("nan"), 0)

    for p in args.problems:
        for J in args.budgets:
            for s in [s for s in args.solvers if s.startswith("EnKG")]:
                for seed in args.solver_seeds:
                    net, gau, eki = (
                        cell(p, "network", s, J, seed),
                        cell(p, "gaussian", s, J, seed),
                        cell(p, "gaussian", "EKI", J, seed),
                    )
                    if not net[1]:
                        continue
                    n = max(net[1], gau[1], eki[1])
                    fmt = [f"{m:.3f}" + (f" ({k})" if k < n else "") for m, k in (net, gau, eki)]
                    # a margin between means over different instances would compare different digits
                    same = net[1] == gau[1] == eki[1]
                    margin = f"{1.0 - net[0] / min(gau[0], eki[0]):.0%}" if same else "- (unequal instances)"
                    lines.append(
                        f"| {p} | {J} | {s.removeprefix('EnKG ')} | {seed} | {' | '.join(fmt)} | {margin} |"
                    )
    text = "\n".join(lines)
    print(text)
    return text


def report(args) -> str:
    """The markdown table: mean relative L2 and PSNR over the instances, per solver seed."""
    rows = {}
    for path in [args.out, *args.also]:
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows[_key(row)] = row  # a row run twice (two overlapping runs) counts once
    rows = list(rows.values())
    lines = []
    for p in args.problems:
        lines += [
            f"**{p}** (16x16 held-out digits; mean over instances; relative L2 / PSNR dB; "
            "seed 0, seed 1 where run)",
            "",
            "| solver | J | network rel. L2 | Gaussian rel. L2 | network PSNR | Gaussian PSNR | instances |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in args.solvers:
            for J in args.budgets:
                cells = {}
                n_inst = 0
                for pr in PRIORS:
                    per_seed = []
                    for seed in args.solver_seeds:
                        sel = [
                            r
                            for r in rows
                            if (r["problem"], r["solver"], r["J"], r["prior"], r["seed"])
                            == (p, s, J, pr, seed)
                        ]
                        if sel:
                            per_seed.append(
                                (
                                    np.mean([r["relative_l2"] for r in sel]),
                                    np.mean([r["psnr"] for r in sel]),
                                    len(sel),
                                )
                            )
                    cells[pr] = per_seed
                    n_inst = max([n_inst] + [c[2] for c in per_seed])
                if not any(cells.values()):
                    continue

                def fmt(pr, k, digits, cells=cells, n_inst=n_inst):
                    # a seed's mean over fewer instances than the row's is marked with its count
                    parts = [
                        f"{c[k]:.{digits}f}" + (f" ({c[2]})" if c[2] < n_inst else "") for c in cells[pr]
                    ]
                    return " / ".join(parts) or "-"

                lines.append(
                    f"| {s} | {J} | {fmt('network', 0, 3)} | {fmt('gaussian', 0, 3)} | "
                    f"{fmt('network', 1, 1)} | {fmt('gaussian', 1, 1)} | {n_inst} |"
                )
        lines.append("")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None):
    parser = parser_for(__doc__, raw=True)
    add_out(parser, "benchmarks/results/digits_table.jsonl")
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--priors", nargs="+", default=list(PRIORS))
    parser.add_argument("--solvers", nargs="+", default=list(SOLVERS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--instances", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--solver-seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument(
        "--second-seed-solvers",
        nargs="+",
        default=["EnKG kalman-sqrt", "EnKG paper", "EKI"],
        help="solvers rerun with the solver seeds after the first",
    )
    parser.add_argument(
        "--localization",
        default="auto",
        type=lambda v: None if v.lower() == "none" else v,
        help="EnKG's and EKI's localization: auto (their default) or none",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--also", nargs="*", default=[], help="more row files for --report")
    parser.add_argument("--report", action="store_true", help="print the table from --out and stop")
    parser.add_argument(
        "--done-when",
        action="store_true",
        help="print issue 24's check (EnKG + network against the Gaussian runs) from --out and --also, and stop",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.done_when:
        done_when(args)
    elif args.report:
        report(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
