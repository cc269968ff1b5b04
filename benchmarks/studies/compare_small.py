"""Every solver on small Navier-Stokes and phase-retrieval instances, through ``kd.compare``.

The settings are cut down so that the whole script runs in about ten minutes on two CPU cores:
small ensembles and few noise levels (the paper uses J = 2048 and 80 steps for EnKG, 1000 steps
for DPS/DPG/SCG/GSG).  Gradient-based solvers (DiffPIR's non-linear data step, RMP, DPS) back-
propagate through the forward model with torch (about 0.25 s per particle for the Navier-Stokes
solver, with torch limited to one thread), so they get the fewest steps.  The numbers show orderings, not the paper's accuracy.

* Navier-Stokes: ``kd.problems.make("navier-stokes", size="small")`` (32 x 32 vorticity, final
  state subsampled by 2, noise 1), with its Gaussian-random-field prior ``inst.prior``.
* Phase retrieval: ``kd.problems.make("phase-retrieval", size="small", family="smooth")`` (32 x 32 smooth image,
  oversampling 2, noise 0.05).  It comes without a prior; we fit a Gaussian prior (empirical mean
  and covariance, plus 1e-3 I) to 2000 other smooth test images (seeds 1000-2999, never the truth's).

DPS, GSG, DPG and SCG are included when their modules import.

Usage::

    python -m benchmarks compare-small [--out benchmarks/results/compare_small] [--problems ns pr]
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

import kalmandiff as kd
from benchmarks._common import add_out, parser_for
from kalmandiff.compare import ComparisonTable, compare
from kalmandiff.estimators.diffpir import DiffPIRSolver
from kalmandiff.estimators.rmp import RMPSolver
from kalmandiff.problems.imaging import smooth_test_image

#: optional solvers: (module, class) imported at run time
OPTIONAL = [("dps", "DPSSolver"), ("gsg", "GSGSolver"), ("dpg", "DPGSolver"), ("scg", "SCGSolver")]


def fitted_gaussian_prior(shape, n: int = 2000, first_seed: int = 1000, ridge: float = 1e-3):
    """A Gaussian prior fitted to ``n`` smooth test images (seeds ``first_seed`` onwards)."""
    images = np.stack([smooth_test_image(shape, first_seed + i) for i in range(n)])
    return kd.problems.fitted_gaussian_prior(images, ridge=ridge)


def optional_solvers(prior, settings: dict) -> dict:
    """The guided baselines that import, each with the cut-down settings it accepts."""
    import importlib

    out = {}
    for module, name in OPTIONAL:
        try:
            cls = getattr(importlib.import_module(f"kalmandiff.estimators.{module}"), name)
        except (ImportError, AttributeError):
            continue
        solver = cls(prior, random_state=0, verbose=False)
        params = solver.get_params()
        solver.set_params(**{k: v for k, v in settings.get(name, {}).items() if k in params})
        out[name.replace("Solver", "")] = solver
    return out


def ns_solvers(prior) -> dict:
    solvers = {
        "EnKG": kd.EnKGSolver(
            prior, n_particles=32, n_steps=12, update="paper", random_state=0, verbose=False
        ),
        "EKI": kd.EKISolver(prior, n_particles=32, max_iter=20, random_state=0, verbose=False),
        "DiffPIR": DiffPIRSolver(prior, n_particles=2, n_steps=20, random_state=0, verbose=False),
        # With the Bayesian likelihood weight (1, the default) RMP's mean walks off on this problem
        # (misfit 850 -> 8e4, relative L2 13.8; 0.05 diverges too): the likelihood at the denoised
        # point ignores the denoiser's uncertainty, far too confident at large sigma.  0.01 is stable.
        "RMP": RMPSolver(
            prior, n_particles=2, n_steps=10, n_inner=2, likelihood_weight=0.01, random_state=0, verbose=False
        ),
    }
    solvers.update(
        optional_solvers(
            prior,
            {
                "DPSSolver": {"n_steps": 20},
                "GSGSolver": {"n_steps": 12, "n_queries": 32},
                "DPGSolver": {"n_steps": 12, "n_queries": 32},
                "SCGSolver": {"n_steps": 12, "n_queries": 16},
            },
        )
    )
    return solvers


def pr_solvers(prior) -> dict:
    solvers = {
        "EnKG": kd.EnKGSolver(
            prior, n_particles=64, n_steps=30, update="paper", random_state=0, verbose=False
        ),
        "EKI": kd.EKISolver(prior, n_particles=64, max_iter=50, random_state=0, verbose=False),
        "DiffPIR": DiffPIRSolver(prior, n_particles=4, n_steps=50, random_state=0, verbose=False),
        "RMP": RMPSolver(prior, n_particles=2, n_steps=20, n_inner=3, random_state=0, verbose=False),
    }
    solvers.update(
        optional_solvers(
            prior,
            {
                "DPSSolver": {"n_steps": 100},
                "GSGSolver": {"n_steps": 100, "n_queries": 64},
                "DPGSolver": {"n_steps": 100, "n_queries": 64},
                "SCGSolver": {"n_steps": 100, "n_queries": 16},
            },
        )
    )
    return solvers


def ambiguity_free_error(x_hat, x_true) -> float:
    """Relative L2 error up to the ambiguities of Fourier magnitudes on a centred support.

    ``x``, ``-x`` and the twin image ``x[..., ::-1, ::-1]`` (and its negative) give the same data:
    the smallest error over the four is the fair figure for phase retrieval.
    """
    x_hat, x_true = np.asarray(x_hat), np.asarray(x_true)
    twin = x_hat[..., ::-1, ::-1]
    return min(
        float(np.linalg.norm(c - x_true) / np.linalg.norm(x_true)) for c in (x_hat, -x_hat, twin, -twin)
    )


def with_ambiguity_column(table, x_true):
    """The table with ``rel_l2_mod_ambiguity`` inserted after ``relative_l2``."""
    records = table.to_records()
    for r in records:
        est = table.solvers.get(r["solver"])
        r["rel_l2_mod_ambiguity"] = None if est is None else ambiguity_free_error(est.reconstruct(), x_true)
    columns = list(table.columns)
    columns.insert(columns.index("relative_l2") + 1, "rel_l2_mod_ambiguity")
    return ComparisonTable(records, columns, table.solvers)


def run(problems) -> dict:
    results = {}
    if "ns" in problems:
        inst = kd.problems.make("navier-stokes", size="small", random_state=0)
        results["navier-stokes"] = (inst, ns_solvers(inst.prior))
    if "pr" in problems:
        inst = kd.problems.make("phase-retrieval", size="small", random_state=0, family="smooth")
        prior = fitted_gaussian_prior(inst.problem.x_shape)
        results["phase-retrieval"] = (inst, pr_solvers(prior))
    tables = {}
    for name, (inst, solvers) in results.items():
        t0 = time.perf_counter()
        table = compare(solvers, inst.problem, inst.y, inst.x_true, as_frame=False)
        note = reference_note(next(iter(solvers.values())).prior, inst, name == "phase-retrieval")
        if name == "phase-retrieval":
            table = with_ambiguity_column(table, inst.x_true)
        note += f" Fits took {time.perf_counter() - t0:.0f} s."
        print(f"\n## {name}\n\n{note}\n\n{table.to_markdown()}", flush=True)
        tables[name] = (table, note)
    return tables


def reference_note(prior, inst, ambiguity: bool) -> str:
    """The prior mean's error, the floor any useful solver must beat."""
    shape = tuple(inst.problem.x_shape)
    mean = np.asarray(prior.denoise(np.zeros((1, *shape)), 1e6))[0]  # D(x, sigma -> inf) -> prior mean
    err = float(np.linalg.norm(mean - inst.x_true) / np.linalg.norm(inst.x_true))
    extra = f" ({ambiguity_free_error(mean, inst.x_true):.3f} up to sign and twin)" if ambiguity else ""
    return f"Prior mean: relative L2 {err:.3f}{extra}."


def main(argv=None) -> None:
    try:
        import torch

        # One intra-op thread: with two (the default on two cores) and other processes running,
        # torch's spinning threads made the torch Navier-Stokes path 60x slower here.
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is needed only by the gradient-based solvers
        pass
    parser = parser_for(__doc__)
    add_out(parser, "benchmarks/results/compare_small", help="path stem of .md/.json")
    parser.add_argument("--problems", nargs="+", default=["ns", "pr"], choices=["ns", "pr"])
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    tables = run(args.problems)
    total = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "total_s": round(total, 1)}
    md = [f"# Small comparison ({total:.0f} s in all, {platform.machine()})"]
    md += [f"\n## {name}\n\n{note}\n\n{table.to_markdown()}" for name, (table, note) in tables.items()]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    payload = {
        "meta": meta,
        "notes": {name: note for name, (_, note) in tables.items()},
        "tables": {name: table.to_records() for name, (table, _) in tables.items()},
    }
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {out.with_suffix('.md')} and {out.with_suffix('.json')} ({total:.0f} s)")


if __name__ == "__main__":
    main()
