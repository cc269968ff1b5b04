"""The guided baselines (DPS, DPG, GSG, SCG) at their default guidance settings, before and after "auto".

Issue 13, item 4: at their old fixed defaults (DPS ``zeta = 10``, DPG ``B = 200``, GSG ``zeta = 0.1``
and ``mu = 0.01``, values tuned for images in [-1, 1]) the guided baselines diverge on problems of
another scale.  This script runs each solver at its defaults on the CPU suite's problems plus a
linear-Gaussian one, once with the old fixed values passed explicitly (``before``: with a number,
``data_scale`` resolves to the reference's unit schedule; SCG gets ``data_scale=1``) and once with
the class defaults (``after``: ``guidance_scale="auto"``, ``data_scale="auto"``, GSG ``mu="auto"``),
with everything else at the class defaults except the budget (steps, Monte Carlo draws / queries /
candidates).  The committed "before" rows ran on the code before the change (commit 61bca5f,
through ``PYTHONPATH``; ``data_scale`` is then dropped): the same rules, without the DPG underflow
fix that came with it.

Problems (instance seeds 1, 2, 3; solver ``random_state`` = instance seed, which draws from an
independent stream, :func:`kalmandiff._backend.stream_seed`):

* ``lg80``: ``kd.problems.make("linear-gaussian", size="medium")`` (d = 80, m = 40, noise 0.1),
  its exact Gaussian prior; the exact posterior mean is reported too;
* ``ns32``: ``make("navier-stokes", size="small")`` (GRF truth and its exact GRF prior, 16 x 16
  observation, noise 1), as the suite's ``ns32-grf``;
* ``pr32``: the CPU suite's phase retrieval (Gaussian prior fitted to other smooth images;
  scores after sign/twin alignment);
* ``bh32``: the CPU suite's closure-phase interferometry (images in Jy per pixel, Gaussian prior
  fitted to other crescents).

Usage::

    python -m benchmarks guided-defaults [--problems lg80 ns32 pr32 bh32] [--solvers DPS DPG GSG SCG]
        [--rules before after] [--seeds 1 2 3] [--out benchmarks/results/guided_defaults] [--resume]

Writes ``records.jsonl`` (one line per run, appended as it finishes; ``--resume`` skips the
finished ones) and ``summary.md`` (mean ± std over the seeds of the relative L2 error, the
suite's headline metric and chi^2 per datum, next to the prior mean's).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from benchmarks._common import add_out, add_seed_list, parser_for

#: old fixed defaults (before issue 13), passed explicitly for the "before" runs
BEFORE = {
    "DPS": {"guidance_scale": 10.0},
    "DPG": {"guidance_scale": 200.0},
    "GSG": {"guidance_scale": 0.1, "mu": 0.01},
    "SCG": {"data_scale": 1.0},  # no step size; only the unit schedule changed
}
CLASSES = {"DPS": "DPSSolver", "DPG": "DPGSolver", "GSG": "GSGSolver", "SCG": "SCGSolver"}
#: draws per step of the Monte Carlo baselines (DPG samples, GSG queries, SCG candidates)
DRAWS = {"DPG": ("n_queries", 64), "GSG": ("n_queries", 64), "SCG": ("n_queries", 64)}
#: problem -> (steps, samples): budgets that run in minutes on two cores.  On lg80 one exact
#: posterior sample is no better than the prior mean (half the directions are unobserved, and a
#: sample doubles their error), so there the solvers' 16-sample means are scored.
BUDGET = {"lg80": (200, 16), "ns32": (100, 1), "pr32": (200, 1), "bh32": (200, 1)}
PROBLEMS = tuple(BUDGET)
SOLVERS = tuple(CLASSES)
HEADLINE = {"pr32": "psnr", "bh32": "chisq_cphase"}


def _instance(key: str, seed: int):
    """``(ProblemSpec-like, instance, prior, y)`` for one problem key."""
    import kalmandiff as kd
    from benchmarks.suites import BH32, PR32, ProblemSpec, build_prior

    if key == "lg80":
        spec = ProblemSpec("lg80", "linear-gaussian", {"size": "medium"}, "instance")
        dtype = np.float64
    elif key == "ns32":
        spec = ProblemSpec("ns32", "navier-stokes", {"size": "small", "max_steps": 2000}, "instance")
        dtype = np.float32
    else:
        spec = {"pr32": PR32, "bh32": BH32}[key]
        dtype = np.float32
    inst = kd.problems.make(spec.family, random_state=seed, **spec.make_kwargs)
    prior = build_prior(spec.prior, inst)
    y = np.asarray(inst.y, dtype=dtype)
    return spec, inst, prior, y


def _scores(spec, inst, prior, estimate) -> dict:
    from benchmarks.run import data_fit
    from benchmarks.suites import score

    out = {}
    if not np.all(np.isfinite(estimate)):
        return {"relative_l2": float("nan"), "finite": False}
    out.update(score(spec, inst, estimate))
    out.update(data_fit(inst, estimate))
    if spec.key == "lg80":
        A = inst.problem.as_matrix()
        post = prior.posterior(A, np.asarray(inst.y), float(inst.problem.noise_std) ** 2)
        mean = np.asarray(post.mean).reshape(estimate.shape)
        out["error_vs_posterior_mean"] = float(np.linalg.norm(estimate - mean) / np.linalg.norm(mean))
    out["finite"] = True
    return out


def run_one(key: str, seed: int, solver: str, rule: str) -> dict:
    """One run: ``solver`` in ``{"prior mean", "DPS", ...}``, ``rule`` in ``{"before", "after"}``."""
    import torch

    import kalmandiff as kd
    from kalmandiff._backend import to_numpy

    torch.set_num_threads(1)
    spec, inst, prior, y = _instance(key, seed)
    record = {"problem": key, "seed": seed, "solver": solver, "rule": rule, "code": kd.__file__}
    if solver == "prior mean":
        zeros = np.zeros((1, *inst.problem.x_shape), dtype=y.dtype)
        estimate = np.asarray(to_numpy(prior.denoise(zeros, 1e6)), dtype=float)[0]
        record.update(_scores(spec, inst, prior, estimate))
        return record
    if solver.startswith("exact posterior"):  # lg80 only
        post = prior.posterior(
            inst.problem.as_matrix(), np.asarray(inst.y), float(inst.problem.noise_std) ** 2
        )
        if solver.endswith("mean"):
            estimate = np.asarray(post.mean, dtype=float)
        else:
            estimate = np.asarray(post.sample(1, random_state=seed), dtype=float)[0]
        record.update(_scores(spec, inst, prior, estimate.reshape(inst.problem.x_shape)))
        return record
    steps, samples = BUDGET[key]
    params = {"n_steps": steps, "n_particles": samples, "random_state": seed, "verbose": False}
    if solver in DRAWS:
        params[DRAWS[solver][0]] = DRAWS[solver][1]
    if rule == "before":
        params.update(BEFORE[solver])
    cls = getattr(kd, CLASSES[solver])
    if "data_scale" not in cls(prior).get_params():  # the code before issue 13: the unit schedule
        params.pop("data_scale", None)
    est = cls(prior, **params)
    record["params"] = {k: v for k, v in est.get_params().items() if k not in ("prior", "callbacks")}
    t0 = time.perf_counter()
    try:
        est.fit(y, inst.problem)
        estimate = np.asarray(to_numpy(est.reconstruct()), dtype=float)
        record.update(_scores(spec, inst, prior, estimate))
        record["n_forward_evals"] = int(est.stats_["n_forward_evals"])
    except Exception as exc:  # noqa: BLE001 - a failure is a result
        record.update(relative_l2=float("nan"), finite=False, error=f"{type(exc).__name__}: {exc}")
    record["wall_s"] = time.perf_counter() - t0
    return record


def _fmt(values) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return "-"
    if not np.all(np.isfinite(v)):
        return f"diverged ({int(np.sum(~np.isfinite(v)))}/{v.size})"
    big = np.max(np.abs(v)) >= 1e4
    return f"{v.mean():.3g} ± {v.std():.2g}" if big else f"{v.mean():.3f} ± {v.std():.3f}"


def summary(records: list[dict]) -> str:
    """A markdown table per problem: metric mean ± std over seeds, before and after."""
    lines = []
    for key in PROBLEMS:
        rows = [r for r in records if r["problem"] == key]
        if not rows:
            continue
        metrics = ["relative_l2"] + ([HEADLINE[key]] if key in HEADLINE else [])
        metrics += ["error_vs_posterior_mean"] if key == "lg80" else []
        metrics += ["chi2_per_datum"]
        lines += [f"#### {key}", "", "| solver | rule | " + " | ".join(metrics) + " | seeds |"]
        lines.append("|---" * (len(metrics) + 3) + "|")
        order = [("prior mean", "-"), ("exact posterior mean", "-"), ("exact posterior sample", "-")] + [
            (s, r) for s in SOLVERS for r in ("before", "after")
        ]
        for solver, rule in order:
            sel = [r for r in rows if r["solver"] == solver and r["rule"] == rule]
            if not sel:
                continue
            cells = [_fmt([r.get(m, np.nan) for r in sel]) for m in metrics]
            lines.append(f"| {solver} | {rule} | " + " | ".join(cells) + f" | {len(sel)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--problems", nargs="*", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--solvers", nargs="*", default=list(SOLVERS), choices=SOLVERS)
    parser.add_argument("--rules", nargs="*", default=["before", "after"], choices=["before", "after"])
    add_seed_list(parser, [1, 2, 3])
    add_out(parser, "benchmarks/results/guided_defaults")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "records.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not args.resume:
        records = []
        path.write_text("")
    done = {(r["problem"], r["seed"], r["solver"], r["rule"]) for r in records}
    plan = [(p, s, "prior mean", "-") for p in args.problems for s in args.seeds]
    plan += [
        (p, s, f"exact posterior {w}", "-")
        for p in args.problems
        if p == "lg80"
        for w in ("mean", "sample")
        for s in args.seeds
    ]
    plan += [
        (p, s, solver, rule)
        for p in args.problems
        for solver in args.solvers
        for rule in args.rules
        for s in args.seeds
    ]
    for task in plan:
        if task in done:
            continue
        record = run_one(*task)
        records.append(record)
        with path.open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
        print(
            f"{task[0]} seed {task[1]} {task[2]} {task[3]}: rel L2 {record.get('relative_l2', np.nan):.4g}"
            f" ({record.get('wall_s', 0):.1f} s){' ' + record['error'] if 'error' in record else ''}",
            flush=True,
        )
    (out / "summary.md").write_text(summary(records))
    print(summary(records))


if __name__ == "__main__":
    main()
