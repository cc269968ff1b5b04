"""Run a benchmark suite: every (problem, instance, solver) task, results files, tables and figures.

Usage::

    python -m benchmarks run --suite cpu --jobs 2            # under an hour on two cores
    python -m benchmarks run --suite speed                   # reference EnKG against cheaper settings
    python -m benchmarks run --suite gpu --problem ns128-grf # on a machine with CUDA (CuPy + torch)
    python -m benchmarks run --suite cpu --dry-run           # the plan and the evaluation counts

Each task runs in a fresh process (``--jobs N`` at a time), so its peak
resident memory is its own; torch is limited to one thread per process.
Results go to ``--out`` (default ``benchmarks/results/<suite>``):

* ``results.json`` and ``results.csv``: one row per task (settings, metrics,
  denoiser and forward evaluations total and sequential, wall time and its
  split into denoiser / forward / the solver's own work, peak memory);
* ``summary.md``: per problem, each solver's metric as mean and standard
  deviation over instances, with its costs (the tables of ``docs/benchmarks.md``);
* ``<problem>.png``: the truth and every solver's estimate on the first instance;
  ``cost.png``: headline metric against forward evaluations.

Settings live in :mod:`benchmarks.suites`; a rerun with the same arguments
reproduces every number up to timing noise (all randomness is seeded).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import datetime
import json
import multiprocessing
import os
import platform
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.report import PRIOR_MEAN, estimate_path
from benchmarks.suites import SUITES, Suite, build_prior, score
from kalmandiff._backend import get_namespace, to_numpy

# --------------------------------------------------------------------------
# one task
# --------------------------------------------------------------------------


def _limit_threads() -> None:
    try:
        import torch

        # One intra-op thread per process: two spinning torch pools on two shared cores made the
        # torch Navier-Stokes path 60x slower here.
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is optional for the analytic priors
        pass


def _to_device(y, device: str, dtype: str):
    """``y`` as the solvers should see it: float dtype, and CuPy on a GPU (the particles follow ``y``)."""
    y = np.asarray(y, dtype=dtype)
    if device == "cuda":
        import cupy

        return cupy.asarray(y)
    return y


def _gpu_peak_mib(device: str) -> dict:
    """Peak torch allocations and the CuPy pool size, in MiB (GPU runs only)."""
    if device != "cuda":
        return {}
    out = {}
    try:
        import torch

        out["gpu_torch_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001 - report what can be measured
        pass
    try:
        import cupy

        out["gpu_cupy_pool_mib"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    except Exception:  # noqa: BLE001
        pass
    return out


def _rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prior_mean(prior, inst, like):
    """The prior mean, as ``D(0, sigma)`` for a very large ``sigma``."""
    xp = get_namespace(like)  # CuPy on a GPU run, so a CUDA prior gets device arrays
    zeros = xp.zeros((1, *inst.problem.x_shape), dtype=like.dtype)
    return np.asarray(to_numpy(prior.denoise(zeros, 1e6)))[0]


def _build_solver(spec, prior, seed: int, device: str):
    import kalmandiff as kd

    cls = getattr(kd, spec.cls)
    solver = cls(prior)
    unknown = set(spec.params) - set(solver.get_params())
    if unknown:
        raise ValueError(f"{spec.cls} has no parameter(s) {sorted(unknown)} (suite entry {spec.label!r}).")
    params = dict(spec.params, random_state=seed)
    if device == "cuda":
        params["device"] = "cuda"
    return solver.set_params(**params)


def data_fit(inst, estimate) -> dict[str, float]:
    """How well the estimate explains the data: chi^2 per datum (about 1 is a fit to the noise level).

    ``mean(((G(x_hat) - y) / noise_std)^2)`` with the problem's own residual
    (closure phases wrap); with a zero noise level the RMS residual instead.
    One forward evaluation, not counted in the solver's costs.
    """
    problem = inst.problem
    x = np.asarray(estimate, dtype=float).reshape((1, *problem.x_shape))
    G = np.asarray(to_numpy(problem(x)), dtype=float)
    r = np.asarray(to_numpy(problem.residual(G, np.asarray(to_numpy(inst.y), dtype=float))))[0]
    std = np.broadcast_to(np.asarray(to_numpy(problem.noise_std), dtype=float), r.shape)
    if not np.all(np.isfinite(r)):
        return {"chi2_per_datum": float("nan")}
    if np.any(std <= 0):
        return {"rms_residual": float(np.sqrt(np.mean(r**2)))}
    return {"chi2_per_datum": float(np.mean((r / std) ** 2))}


def run_task(suite_name: str, problem_key: str, seed: int, label: str, out_dir: str, options: dict) -> dict:
    """Run one task and return its record (an ``error`` field instead of metrics if it failed)."""
    _limit_threads()
    import kalmandiff as kd

    suite = SUITES[suite_name]
    pspec = suite.problem(problem_key)
    record = {"suite": suite_name, "problem": problem_key, "seed": seed, "solver": label}
    t_setup = time.perf_counter()
    inst = kd.problems.make(pspec.family, random_state=seed, **pspec.make_kwargs)
    prior_key = options.get("prior_override", {}).get(problem_key, pspec.prior)
    prior = build_prior(prior_key, inst, suite.device, ns_prior_path=options.get("ns_prior_path"))
    y = _to_device(inst.y, suite.device, suite.dtype)
    record.update(prior=prior_key, setup_s=time.perf_counter() - t_setup, rss_setup_mib=_rss_mib())
    try:
        if label == PRIOR_MEAN:
            estimate, spec_params = _prior_mean(prior, inst, y), {}
        else:
            spec = suite.solver(label, problem_key)
            spec_params = spec.params
            solver_seed = seed + int(options.get("solver_seed_offset", 0))
            record["solver_seed"] = solver_seed
            estimate = _fit(spec, prior, inst, y, solver_seed, suite.device, record)
        record["params"] = json.dumps(spec_params, sort_keys=True, default=str)
        record.update(score(pspec, inst, estimate))
        record.update(data_fit(inst, estimate))
        _save_estimate(out_dir, problem_key, seed, label, estimate)
    except Exception as exc:  # noqa: BLE001 - a failing solver is a result, recorded in its row
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=5)
    record["peak_rss_mib"] = _rss_mib()
    record.update(_gpu_peak_mib(suite.device))
    return record


def _fit(spec, prior, inst, y, seed, device, record) -> np.ndarray:
    """Fit one solver; fill ``record`` with its counts and times; return its estimate (NumPy)."""
    solver = _build_solver(spec, prior, seed, device)
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    solver.fit(y, inst.problem)
    estimate = np.asarray(to_numpy(solver.reconstruct()))
    record["wall_s"] = time.perf_counter() - t0
    stats = solver.stats_
    for key in (
        "n_denoiser_evals",
        "n_sequential_denoiser_evals",
        "n_forward_evals",
        "n_sequential_forward_evals",
        "n_denoiser_vjps",
        "n_forward_vjps",
        "time_denoiser_s",
        "time_forward_s",
        "time_overhead_s",
    ):
        if key in stats:
            record[key] = stats[key]
    record["stopped_early"] = bool(stats.get("stopped_early", False))
    return estimate


def _save_estimate(out_dir: str, problem: str, seed: int, label: str, estimate) -> None:
    path = estimate_path(out_dir, problem, seed, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(estimate, dtype=np.float32))


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------


def run_suite(suite: Suite, tasks: list, out_dir: Path, jobs: int, options: dict) -> list[dict]:
    """Run ``tasks`` (``jobs = 0``: in this process) and return their records in task order.

    Each record is also appended to ``records.jsonl`` as it completes, so an
    interrupted run keeps its finished tasks (``--resume`` skips them).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "records.jsonl"
    done = _finished(log) if options.get("resume") else {}
    if not options.get("resume"):
        log.write_text("")
    todo = [(k, t) for k, t in enumerate(tasks) if t not in done]
    records: list = [done.get(t) for t in tasks]
    args = {k: (suite.name, *t, str(out_dir), options) for k, t in todo}
    if jobs == 0:
        for k, a in args.items():
            records[k] = _keep(log, k, len(tasks), run_task(*a))
        return records
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(run_task, *a): k for k, a in args.items()}
        for fut in cf.as_completed(futures):
            k = futures[fut]
            try:
                record = fut.result()
            except Exception as exc:  # noqa: BLE001 - a killed worker is recorded, the run goes on
                p, s, label = tasks[k]
                record = {"suite": suite.name, "problem": p, "seed": s, "solver": label, "error": repr(exc)}
            records[k] = _keep(log, k, len(tasks), record)
    return records


def _finished(log: Path) -> dict:
    """Records of an earlier run's ``records.jsonl``, keyed by task."""
    if not log.exists():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {(r["problem"], r["seed"], r["solver"]): r for r in records}


def _keep(log: Path, k: int, n: int, record: dict) -> dict:
    with open(log, "a") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
    return _report(k, n, record)


def _report(k: int, n: int, r: dict) -> dict:
    what = r.get("error") or ", ".join(
        f"{m} {r[m]:.4g}" for m in ("relative_l2", "psnr", "chisq_cphase") if m in r
    )
    wall = f"{r['wall_s']:.1f} s" if "wall_s" in r else "-"
    print(f"[{k + 1}/{n}] {r['problem']} seed {r['seed']} {r['solver']}: {what} ({wall})", flush=True)
    return r


def machine_info(suite: Suite) -> dict:
    import kalmandiff

    info = {
        "date": datetime.date.today().isoformat(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "kalmandiff": getattr(kalmandiff, "__version__", "?"),
        "command": "python -m benchmarks run " + " ".join(sys.argv[1:]),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if suite.device == "cuda" and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


def write_results(records: list[dict], meta: dict, out_dir: Path) -> None:
    """``results.json`` (meta + records) and ``results.csv`` (records, union of fields)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps({"meta": meta, "records": records}, indent=1, default=str)
    )
    fields = []
    for r in records:
        fields.extend(k for k in r if k not in fields and k != "traceback")
    with open(out_dir / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run a kalmandiff benchmark suite.")
    parser.add_argument("--suite", choices=sorted(SUITES), required=True)
    parser.add_argument("--problem", nargs="+", help="problem keys to run (default: all of the suite)")
    parser.add_argument("--solver", nargs="+", help="solver labels to run (default: all)")
    parser.add_argument("--instances", type=int, help="use only the first N instance seeds")
    parser.add_argument(
        "--jobs", type=int, default=1, help="tasks at once, each in a fresh process (0: inline)"
    )
    parser.add_argument("--out", help="output folder (default benchmarks/results/<suite>)")
    parser.add_argument("--no-prior-mean", action="store_true", help="skip the prior-mean rows")
    parser.add_argument(
        "--ns-checkpoint", help="GPU suite: an EDM checkpoint (.pt) as the ns128-evolved prior"
    )
    parser.add_argument(
        "--solver-seed-offset",
        type=int,
        default=0,
        help="solvers get random_state = instance seed + this (their streams are independent of the "
        "instance's either way; rerun with another offset to check a result against solver noise)",
    )
    parser.add_argument(
        "--ns-prior",
        help="a Navier-Stokes network prior (.pt from scripts/train_ns_prior.py) for 'ns-neural'",
    )
    parser.add_argument("--resume", action="store_true", help="skip tasks already in <out>/records.jsonl")
    parser.add_argument("--dry-run", action="store_true", help="print the tasks and evaluation counts only")
    args = parser.parse_args(argv)

    suite = SUITES[args.suite]
    tasks = suite.tasks(args.problem, args.solver, args.instances)
    if not args.no_prior_mean and not args.solver:
        keys = dict.fromkeys(p for p, _, _ in tasks)
        tasks = [(p, s, PRIOR_MEAN) for p in keys for s in sorted({s for q, s, _ in tasks if q == p})] + tasks
    if not tasks:
        parser.error("no task matches the filters")
    options = {"resume": args.resume, "solver_seed_offset": args.solver_seed_offset}
    if args.ns_prior:
        options["ns_prior_path"] = args.ns_prior
    if args.ns_checkpoint:
        options["prior_override"] = {"ns128-evolved": args.ns_checkpoint}
    if args.dry_run:
        print(report.plan(suite, tasks))
        return 0
    out_dir = Path(args.out or f"benchmarks/results/{suite.name}")
    t0 = time.perf_counter()
    records = run_suite(suite, tasks, out_dir, args.jobs, options)
    meta = machine_info(suite) | {"suite": suite.name, "jobs": args.jobs, "total_s": time.perf_counter() - t0}
    write_results(records, meta, out_dir)
    (out_dir / "summary.md").write_text(report.summary(suite, records, meta))
    report.figures(suite, records, out_dir)
    print(f"wrote {out_dir}/results.json, results.csv, summary.md ({meta['total_s']:.0f} s)")
    return 1 if any("error" in r for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
