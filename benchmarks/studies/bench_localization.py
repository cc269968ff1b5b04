"""Which localiser EnKG's ``localization="auto"`` should use: measured against exact posteriors.

Run: ``python -m benchmarks localization [--cases NAME ...] [--particles 16 64 256]
[--steps 20] [--seeds 2] [--localizers none secnice sec gc]``; the digits problems with their
Gaussian (exact posterior for the linear maps): ``--family inpainting deblur:digits ... --solvers
enkg eki --instances 5 --solver-seeds 2 --localizers none secnice gc auto --out F`` (one JSON line
per fit), then ``--report F`` (the markdown table of docs/benchmarks.md).

Every case has a Gaussian prior and a linear map, so the posterior is exact:

- ``grfN``: a Gaussian random field on an ``N x N`` periodic grid (``alpha=2.5, tau=3``,
  ``d = N^2``) seen through a periodic Gaussian blur (std one cell) and 2x subsampling
  (``m = d / 4``), noise 10% of the signal: a *local* map.  Given as a plain callable
  (no geometry) to every localiser but ``gc``, which gets the same map as a problem that
  declares its geometry (Gaspari-Cohn taper, ``localization="auto"``).
- ``point16``: the same field on 16 x 16 observed at 6 neighbouring pixels
  (:func:`kalmandiff.testing.grf_case`).
- ``denseD``: :func:`kalmandiff.testing.gaussian_case` with ``d = D`` and ``m = D / 4``: a
  random dense map (every datum depends on every unknown, *non-local*).
- ``lg16x8``, ``lg8x8``, ``lg32x4``, ``mix4x2``, ``mix8x4``: the small Gaussian and
  Gaussian-mixture cases of ``benchmarks.studies.bench_posterior_accuracy`` (``d <= 32``, so
  ``J >= d`` is covered).

Prints a markdown row per (case, J, localiser): the medians over seeds of the relative
posterior-mean error and of the spread ratio (mean ensemble std over mean exact std), the
error range, and the seconds per fit.  Truth and noise come from the case's seed, the solver
from its own (``random_state = 1000 + seed``).  EnKG runs ``update="kalman-sqrt"`` with
``n_steps`` as given (the other parameters at their defaults); ``--solver eki`` runs
:class:`~kalmandiff.EKISolver` at its defaults (``update="kalman"``, data-misfit controller).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import time

import numpy as np

import kalmandiff as kd
from kalmandiff.problems import ForwardProblem, grid_geometry
from kalmandiff.testing import gaussian_case, grf_case, mixture_case


def blur_subsample_matrix(n: int, blur_cells: float = 1.0) -> np.ndarray:
    """Periodic Gaussian blur (std ``blur_cells``) then every other row and column: ``(n/2)^2 x n^2``."""
    k = np.arange(n)
    k = np.minimum(k, n - k)
    g = np.exp(-0.5 * (k / blur_cells) ** 2)
    g /= g.sum()
    B1 = np.stack([np.roll(g, i) for i in range(n)])
    keep = (np.arange(n)[:, None] % 2 == 0) & (np.arange(n)[None, :] % 2 == 0)
    return np.kron(B1, B1)[keep.ravel()]


class _DeclaredBlur(ForwardProblem):
    """The blur + subsampling as a problem declaring its geometry (datum (i, j) on fine pixel (2i, 2j))."""

    def __init__(self, A, n, noise_std, reach):
        self.A, self.noise_std = A, noise_std
        self.x_shape, self.y_shape = (1, n, n), (1, n // 2, n // 2)
        self.geometry = grid_geometry(self.x_shape, self.y_shape, reach, y_stride=2, y_offset=0.5)

    def forward(self, X):
        return np.reshape(np.reshape(X, (X.shape[0], -1)) @ self.A.T, (X.shape[0], *self.y_shape))


def grf_blur_case(n: int, seed: int) -> dict:
    prior = kd.priors.GaussianRandomFieldPrior((1, n, n), alpha=2.5, tau=3.0, scale=1.0)
    A = blur_subsample_matrix(n)
    S = prior.cov_matrix()
    noise = 0.1 * math.sqrt(np.mean(np.sum((A @ S) * A, axis=1)))
    rng = np.random.default_rng([2024, seed])
    x = prior.sample(1, random_state=rng)[0]
    y = A @ x.ravel() + noise * rng.standard_normal(A.shape[0])
    post = prior.posterior(A, y, noise**2)
    m = n // 2

    def forward(X):
        return np.reshape(np.reshape(X, (X.shape[0], -1)) @ A.T, (X.shape[0], 1, m, m))

    reach = 3 * math.sqrt(2) / n  # blur weights above 1e-3 of the peak reach 3 cells per axis
    return dict(
        prior=prior,
        y=y.reshape(1, m, m),
        forward=forward,
        problem=_DeclaredBlur(A, n, noise, reach),
        noise=noise,
        prior_mean=np.zeros(n * n),
        mean=np.asarray(post.mean).ravel(),
        std=np.sqrt(np.diag(post.cov)),
        d=n * n,
        m=m * m,
    )


def testing_case(case) -> dict:
    A = case.A
    shape = tuple(np.shape(case.mean))

    def forward(X):
        return np.reshape(np.reshape(X, (X.shape[0], -1)) @ A.T, (X.shape[0], A.shape[0]))

    return dict(
        prior=case.prior,
        y=np.asarray(case.y),
        forward=forward,
        problem=None,
        noise=case.noise_std,
        prior_mean=np.asarray(case.prior_mean).ravel(),
        mean=np.asarray(case.mean).ravel(),
        std=np.asarray(case.std).ravel(),
        d=math.prod(shape),
        m=A.shape[0],
    )


#: The grid of ``benchmarks.studies.bench_posterior_accuracy`` (J >= d there): Gaussian and mixture priors.
SMALL = {
    "lg16x8": (gaussian_case, 16, 8, 0.1),
    "lg8x8": (gaussian_case, 8, 8, 0.3),
    "lg32x4": (gaussian_case, 32, 4, 0.05),
    "mix4x2": (mixture_case, 4, 2, 0.2),
    "mix8x4": (mixture_case, 8, 4, 0.1),
}


def make_case(name: str, seed: int) -> dict:
    if name.startswith("grf"):
        return grf_blur_case(int(name[3:]), seed)
    if name == "point16":
        return testing_case(grf_case(16, 6, noise=0.1, seed=seed))
    if name in SMALL:
        make, d, m, noise = SMALL[name]
        return testing_case(make(d, m, noise, seed=seed))
    if name.startswith("dense"):
        d = int(name[5:])
        return testing_case(gaussian_case(d, d // 4, noise=0.1, seed=seed))
    raise ValueError(f"unknown case {name!r}")


def run_one(case: dict, J: int, localizer: str, n_steps: int, seed: int, solver_name: str = "enkg"):
    loc = {"none": None, "gc": "auto"}.get(localizer, localizer)
    common = dict(n_particles=J, localization=loc, random_state=1000 + seed, verbose=False)
    if solver_name == "eki":
        solver = kd.EKISolver(case["prior"], **common)
    else:
        solver = kd.EnKGSolver(
            case["prior"], n_steps=n_steps, update="kalman-sqrt", batch_size=None, **common
        )
    if localizer == "gc":
        solver.fit(case["y"], case["problem"])
    else:
        solver.fit(case["y"], case["forward"], noise_std=case["noise"])
    x_hat, x_std = solver.reconstruct(return_std=True)
    x_hat, x_std = np.asarray(x_hat).ravel(), np.asarray(x_std).ravel()
    err = np.linalg.norm(x_hat - case["mean"]) / np.linalg.norm(case["mean"])
    return err, float(x_std.mean() / case["std"].mean())


def problem_rows(names, J: int, n_steps: int, n_seeds: int, localizers) -> None:
    """The registered problems (``kd.problems.make``, small, their default priors): error to the truth."""
    from kalmandiff.metrics import relative_l2

    print(
        "| problem | d | m | J | localiser | runs | rel. L2 to truth (median) | range | prior mean | s/fit |"
    )
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for name in names:
        insts = [kd.problems.make(name, random_state=seed + 1) for seed in range(n_seeds)]
        p = insts[0].problem
        for localizer in localizers:
            loc = None if localizer == "none" else localizer
            if localizer.startswith("taper"):  # "taper0.25": a Gaspari-Cohn taper of that half-width
                loc = kd.estimators.GaspariCohnTaper(float(localizer[5:]))
            errs, what, t0 = [], None, time.perf_counter()
            for seed, inst in enumerate(insts):
                solver = kd.EnKGSolver(
                    inst.prior,
                    n_particles=J,
                    n_steps=n_steps,
                    update="kalman-sqrt",
                    localization=loc,
                    random_state=1000 + seed,
                    verbose=False,
                    batch_size=None,
                ).fit(inst.y, inst.problem)
                errs.append(relative_l2(np.asarray(solver.reconstruct()), np.asarray(inst.x_true)))
                what = solver.localization_
            secs = (time.perf_counter() - t0) / len(insts)
            prior_err = np.median(
                [relative_l2(np.asarray(i.prior.mean).reshape(i.x_true.shape), i.x_true) for i in insts]
            )
            label = (
                "off" if what is None else what.split("(")[0].replace("SamplingErrorCorrection", "secnice")
            )
            print(
                f"| {name} | {math.prod(p.x_shape)} | {math.prod(p.y_shape)} | {J} | {localizer} | {label} | "
                f"{np.median(errs):.3f} | {min(errs):.3f}-{max(errs):.3f} | {prior_err:.3f} | {secs:.1f} |",
                flush=True,
            )


def _family_localizer(name: str, inst):
    """``none`` / ``secnice`` / ``gc`` (the taper ``auto_radius`` gives, on the declared geometry) / ``auto``."""
    if name == "gc":
        from kalmandiff.estimators.localization import auto_radius

        return kd.estimators.GaspariCohnTaper(auto_radius(inst.prior, inst.problem.geometry))
    return {"none": None}.get(name, name)


_IMAGE_PROBLEMS = ("inpainting", "deblur", "super-resolution", "phase-retrieval")


def family_fit(problem: str, instance: int, J: int, localizer: str, solver_name: str, seed: int) -> dict:
    """One fit on ``kd.problems.make(problem, random_state=instance, prior="gaussian")``: errors to the truth
    and, for a linear map, to the exact posterior mean."""
    from kalmandiff.metrics import relative_l2

    name, _, family = problem.partition(":")  # "deblur:digits": the digits family of deblur
    extra = {"family": family} if family else {}
    if name in _IMAGE_PROBLEMS:
        extra["prior"] = "gaussian"  # the best Gaussian of the family (digits: the network's images)
    inst = kd.problems.make(name, random_state=instance, **extra)
    if localizer == "gc" and not inst.problem.geometry.local:
        return None  # a spatial taper is refused on a non-local map
    common = dict(n_particles=J, localization=_family_localizer(localizer, inst), random_state=1000 + seed)
    if solver_name == "eki":
        solver = kd.EKISolver(inst.prior, verbose=False, **common)
    else:
        solver = kd.EnKGSolver(inst.prior, verbose=False, batch_size=None, **common)
    t0 = time.perf_counter()
    solver.fit(inst.y, inst.problem)
    x_hat = np.asarray(solver.reconstruct())
    row = dict(
        problem=problem,
        instance=instance,
        J=J,
        localizer=localizer,
        solver=solver_name,
        seed=seed,
        runs=solver.localization_,
        seconds=round(time.perf_counter() - t0, 2),
        truth=float(relative_l2(x_hat, np.asarray(inst.x_true))),
    )
    if hasattr(inst.problem, "as_matrix"):
        A = inst.problem.as_matrix()
        post = inst.prior.posterior(A, np.asarray(inst.y).ravel(), inst.problem.noise_std**2)
        mean = np.asarray(post.mean).ravel()
        row["posterior"] = float(np.linalg.norm(x_hat.ravel() - mean) / np.linalg.norm(mean))
        row["posterior_mean_to_truth"] = float(relative_l2(mean.reshape(inst.x_true.shape), inst.x_true))
    return row


def family_rows(args) -> None:
    """Every (problem, instance, J, localiser, solver, seed) as a JSON line, appended to ``--out``."""
    import json

    for problem in args.family:
        for solver_name in args.solvers:
            for J in args.particles:
                for localizer in args.localizers:
                    for seed in range(args.solver_seeds):
                        for instance in range(1, args.instances + 1):
                            row = family_fit(problem, instance, J, localizer, solver_name, seed)
                            if row is None:
                                continue
                            with open(args.out, "a") as fh:
                                fh.write(json.dumps(row) + "\n")
                            print(row, flush=True)


def family_report(path: str) -> None:
    """Markdown table of ``--out``: per (problem, solver, J), each localiser's mean error over instances
    (to the exact posterior mean where known, else to the truth), seed 0 / seed 1, and what ``auto`` ran."""
    import collections
    import json

    rows = [json.loads(line) for line in open(path)]
    locs = [n for n in ("none", "secnice", "gc", "auto") if any(r["localizer"] == n for r in rows)]
    cells = collections.defaultdict(list)
    for r in rows:
        cells[(r["problem"], r["solver"], r["J"], r["localizer"], r["seed"])].append(r)

    def cell(key_head, loc, field):
        seeds = sorted({k[4] for k in cells if k[:3] == key_head and k[3] == loc})
        vals = [np.mean([r[field] for r in cells[(*key_head, loc, s)]]) for s in seeds]
        return " / ".join(f"{v:.3f}" for v in vals) if vals else "-"

    print("| problem | solver | J | error to | " + " | ".join(locs) + " | auto ran |")
    print("|---|---|---:|---|" + "---|" * len(locs) + "---|")
    heads = sorted({k[:3] for k in cells}, key=lambda k: (k[0], k[1], k[2]))
    for head in heads:
        some = next(r for k, v in cells.items() if k[:3] == head for r in v)
        fields = (["posterior"] if "posterior" in some else []) + ["truth"]
        ran = sorted(
            {
                str(r["runs"]).split("(")[0]
                for k, v in cells.items()
                if k[:3] == head and k[3] == "auto"
                for r in v
            }
        )
        for field in fields:
            print(
                f"| {head[0]} | {head[1]} | {head[2]} | {field} | "
                + " | ".join(cell(head, loc, field) for loc in locs)
                + f" | {', '.join(ran) or '-'} |"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["grf16", "grf32", "point16", "dense64", "dense256"])
    parser.add_argument("--particles", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--localizers", nargs="+", default=["none", "secnice", "sec", "gc"])
    parser.add_argument(
        "--solver", choices=["enkg", "eki"], default="enkg", help="eki: EKISolver at its defaults"
    )
    parser.add_argument(
        "--problems",
        nargs="+",
        help="registered problems instead of --cases (error to the truth; J = max --particles)",
    )
    parser.add_argument(
        "--family",
        nargs="+",
        help="registered problems with prior='gaussian' (digits): one JSON line per fit to --out",
    )
    parser.add_argument("--solvers", nargs="+", default=["enkg", "eki"], help="with --family")
    parser.add_argument("--instances", type=int, default=5, help="with --family: instances 1..n")
    parser.add_argument("--solver-seeds", type=int, default=1, help="with --family")
    parser.add_argument("--out", default="bench_localization_family.jsonl", help="with --family")
    parser.add_argument("--report", help="print the markdown table of a --family --out file")
    args = parser.parse_args(argv)
    if args.report:
        family_report(args.report)
        return
    if args.family:
        family_rows(args)
        return
    print(
        f"date {datetime.date.today()}, {platform.platform()}, {os.cpu_count()} cores, numpy {np.__version__}"
    )
    print(
        "command: python -m benchmarks localization --cases "
        + " ".join(args.cases)
        + " --particles "
        + " ".join(map(str, args.particles))
        + f" --steps {args.steps} --seeds {args.seeds} --localizers "
        + " ".join(args.localizers)
        + f" --solver {args.solver}"
        + (" --problems " + " ".join(args.problems) if args.problems else "")
    )
    print()
    if args.problems:
        problem_rows(args.problems, max(args.particles), args.steps, args.seeds, args.localizers)
        return
    print(
        "| case | d | m | prior-mean error | J | localiser | error (median) | error range | spread ratio | s/fit |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for name in args.cases:
        cases = [make_case(name, seed) for seed in range(args.seeds)]
        for J in args.particles:
            for localizer in args.localizers:
                if localizer == "gc" and cases[0]["problem"] is None:
                    continue  # no geometry to declare
                t0 = time.perf_counter()
                r = np.array(
                    [run_one(c, J, localizer, args.steps, s, args.solver) for s, c in enumerate(cases)]
                )
                secs = (time.perf_counter() - t0) / len(cases)
                c = cases[0]
                prior_err = np.median(
                    [np.linalg.norm(c["prior_mean"] - c["mean"]) / np.linalg.norm(c["mean"]) for c in cases]
                )
                print(
                    f"| {name} | {c['d']} | {c['m']} | {prior_err:.2f} | {J} | {localizer} | {np.median(r[:, 0]):.3f} | "
                    f"{r[:, 0].min():.3f}-{r[:, 0].max():.3f} | {np.median(r[:, 1]):.2f} | {secs:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
