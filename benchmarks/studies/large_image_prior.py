"""The built-in prior of 64x64 image problems: low-rank plus ridge Gaussian against the old GRF fallback.

For unknowns above 1024 pixels ``kd.problems.make`` used to attach a
Gaussian random field with the mean level and pixel spread of 16 training
images; it now attaches a :class:`~kalmandiff.priors.LowRankGaussianPrior`
fitted to 400 training images (principal components holding 99.99% of
their variance, the rest spread evenly, a 1% ridge).  Both are fitted to
draws of the problems' own image generator from the fixed ``"prior-fit"``
stream, never to an instance's truth.

Scored on the ``medium`` (1 x 64 x 64) deblurring, inpainting and
super-resolution instances with seeds 1, 2, 3:

1. the *exact* posterior mean of each prior (matrix-free conjugate
   gradients, ``posterior_mean(problem, y)``): how good the prior is, with no
   solver error in the way;
2. (unless ``--quick``) a quick EnKG run with each prior (``update="kalman"``,
   J = 128, 40 steps; and the paper's update at J = 64, 40 steps) on
   deblurring and inpainting: what a user gets from a small ensemble.

Usage::

    python -m benchmarks large-image-prior [--quick] [--json PATH]
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import numpy as np

import kalmandiff as kd
from benchmarks._common import add_json, parser_for
from kalmandiff.problems import _fixtures
from kalmandiff.problems.imaging import smooth_test_image

SEEDS = (1, 2, 3)
PROBLEMS = ("deblur", "inpainting", "super-resolution")
ENKG = {
    "EnKG kalman J=128 N=40": {"n_particles": 128, "n_steps": 40, "update": "kalman"},
    "EnKG paper J=64 N=40": {"n_particles": 64, "n_steps": 40},
}
ENKG_PROBLEMS = ("deblur", "inpainting")


def old_grf_fallback(shape=(1, 64, 64)):
    """The prior ``make`` attached to these problems before: a GRF with 16 training images' level and spread."""
    rng = _fixtures._fit_rng()
    return _fixtures._grf_fallback(np.stack([smooth_test_image(shape, rng) for _ in range(16)]))


def _score(inst, x_hat) -> dict:
    m = inst.problem.metrics(np.asarray(x_hat), inst.x_true)
    return {"relative_l2": m["relative_l2"], "psnr": m["psnr"]}


def run(quick: bool = False) -> dict:
    _fixtures.smooth_image_prior.cache_clear()
    start = time.perf_counter()
    lowrank = _fixtures.smooth_image_prior((1, 64, 64))
    fit_s = time.perf_counter() - start
    priors = {"low-rank (new default)": lowrank, "GRF (old fallback)": old_grf_fallback()}
    rows = []
    for name in PROBLEMS:
        for seed in SEEDS:
            inst = kd.problems.make(name, size="medium", random_state=seed, family="smooth")
            assert inst.prior is lowrank
            for label, prior in priors.items():
                rows.append({"problem": name, "seed": seed, "prior": label, "method": "prior mean"})
                rows[-1].update(_score(inst, prior.mean))
                t = time.perf_counter()
                x_hat = prior.posterior_mean(inst.problem, inst.y)
                rows.append(
                    {"problem": name, "seed": seed, "prior": label, "method": "exact posterior mean"}
                    | _score(inst, x_hat)
                    | {"seconds": time.perf_counter() - t}
                )
                if quick or name not in ENKG_PROBLEMS:
                    continue
                for method, params in ENKG.items():
                    t = time.perf_counter()
                    solver = kd.EnKGSolver(prior, random_state=seed, verbose=False, **params)
                    solver.fit(inst.y, inst.problem)
                    rows.append(
                        {"problem": name, "seed": seed, "prior": label, "method": method}
                        | _score(inst, solver.reconstruct())
                        | {"seconds": time.perf_counter() - t}
                    )
    return {
        "rows": rows,
        "lowrank": {
            "n_components": lowrank.n_components,
            "residual_variance": lowrank.residual_variance,
            "components_mib": lowrank.components.nbytes / 2**20,
            "fit_seconds": fit_s,
        },
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def table(res: dict) -> str:
    """Markdown: mean (min-max) over the seeds, per problem, method and prior."""
    rows = res["rows"]
    keys = []
    for r in rows:
        key = (r["problem"], r["method"])
        if key not in keys:
            keys.append(key)
    labels = list(dict.fromkeys(r["prior"] for r in rows))
    out = [
        "| problem | estimate | "
        + " | ".join(f"rel. L2, {lab}" for lab in labels)
        + " | "
        + " | ".join(f"PSNR, {lab}" for lab in labels)
        + " |",
        "|---|---|" + "---|" * (2 * len(labels)),
    ]
    for problem, method in keys:
        cells = []
        for metric, fmt in (("relative_l2", "{:.3f}"), ("psnr", "{:.1f}")):
            for lab in labels:
                vals = [
                    r[metric]
                    for r in rows
                    if (r["problem"], r["method"], r["prior"]) == (problem, method, lab)
                ]
                cells.append(f"{fmt.format(np.mean(vals))} ({fmt.format(min(vals))}-{fmt.format(max(vals))})")
        out.append(f"| {problem} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__)
    parser.add_argument("--quick", action="store_true", help="exact posterior means only (seconds)")
    add_json(parser)
    args = parser.parse_args(argv)
    res = run(quick=args.quick)
    lr = res["lowrank"]
    print(
        f"low-rank prior: k = {lr['n_components']}, residual variance {lr['residual_variance']:.3g}, "
        f"components {lr['components_mib']:.1f} MiB, fitted in {lr['fit_seconds']:.2f} s\n"
    )
    print(table(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
