"""EnKG's own cost: the time it spends outside the denoiser and the forward model.

The ensemble updates of :mod:`kalmandiff.estimators._ensemble` work in the
``J``-dimensional span of the ensemble, so one update should cost
``O(J^2 (d + m))`` and never form a ``d x d`` matrix.  This benchmark
measures that on a problem whose denoiser and forward model are nearly free,
so that what remains is the solver's own work:

* prior: :class:`~kalmandiff.priors.GaussianPrior` with a diagonal
  covariance (its exact denoiser is elementwise, ``O(J d)``);
* forward: ``G(x) = 2 x[:m]``, a plain callable (no ``m x d`` matrix).

``stats_["time_overhead_s"]`` is the wall time of ``fit`` minus the time
inside the denoiser and the forward model.  Besides the updates it holds the
``O(J d)`` arithmetic of the ODE steps (prediction and likelihood map), the
misfit and spread bookkeeping.

Two measurements:

1. *Overhead fraction* in the paper's configuration shape (80 steps, two
   updates per step, 5% thresholds), for each update mode.
2. *Scaling*: overhead per update against ``J`` (fixed ``d``, ``m``) and
   against ``d`` (fixed ``J``, ``m``) with a short schedule whose every step
   corrects; log-log slopes fitted by least squares.  Each ``d`` runs in a
   fresh process, so its peak resident memory is its own; the largest ``d``
   is a 256 x 256 image, where one ``d x d`` float64 matrix would need 32 GiB.

Times are medians over repeats, with single-threaded BLAS by default.

Usage::

    python -m benchmarks enkg-overhead [--quick] [--json PATH] [--repeats N] [--threads N]
"""

from __future__ import annotations

import os

# Single-threaded BLAS for stable timings; set before NumPy is imported
# (threadpoolctl enforces the --threads choice again in main()).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402

import kalmandiff as kd  # noqa: E402
from benchmarks._common import add_json, parser_for  # noqa: E402
from kalmandiff._backend import RandomSource  # noqa: E402
from kalmandiff.estimators._ensemble import (  # noqa: E402
    kalman_update,
    normalised_gradient_update,
    sqrt_kalman_update,
)
from kalmandiff.estimators._recorder import peak_rss_mb  # noqa: E402  (VmHWM where there is one)

MODES = ("paper", "kalman", "kalman-sqrt")
NOISE_STD = 0.1

FULL = {
    "repeats": 3,
    "fraction": {"J": 256, "d": 2048, "m": 256, "n_steps": 80},
    "scan_J": {"Js": (64, 128, 256, 512, 1024), "d": 4096, "m": 512, "n_steps": 5},
    "scan_d": {"ds": (256, 1024, 4096, 16384, 65536), "J": 256, "m": 256, "n_steps": 5},
}
QUICK = {
    "repeats": 3,
    "fraction": {"J": 64, "d": 1024, "m": 128, "n_steps": 20},
    "scan_J": {"Js": (32, 64, 128), "d": 1024, "m": 128, "n_steps": 4},
    "scan_d": {"ds": (256, 1024, 65536), "J": 32, "m": 128, "n_steps": 4},
}


# --------------------------------------------------------------------------
# the problem and one run
# --------------------------------------------------------------------------


def make_problem(d: int, m: int, seed: int = 0):
    """Diagonal Gaussian prior in dimension ``d``, forward ``x -> 2 x[:m]`` and data ``y`` ``(m,)``."""
    if not 1 <= m <= d:
        raise ValueError(f"m must lie in [1, d] (got m={m}, d={d}).")
    rng = np.random.default_rng(seed)
    variances = rng.uniform(0.5, 2.0, size=d)
    prior = kd.priors.GaussianPrior(np.zeros(d), variances)
    x_true = rng.normal(size=d) * np.sqrt(variances)

    def forward(X):
        return 2.0 * X[:, :m]

    y = forward(x_true[None, :])[0] + NOISE_STD * rng.normal(size=m)
    return prior, forward, y


def run_once(J: int, d: int, m: int, mode: str, n_steps: int, n_updates: int, threshold: float, seed: int):
    """One ``EnKGSolver.fit``; returns its ``stats_`` plus the number of ensemble updates."""
    prior, forward, y = make_problem(d, m)
    solver = kd.EnKGSolver(
        prior,
        n_particles=J,
        n_steps=n_steps,
        n_updates=n_updates,
        threshold_start=threshold,
        threshold_end=threshold,
        update=mode,
        random_state=seed,
        verbose=False,
    )
    solver.fit(y, forward, noise_std=NOISE_STD)
    stats = dict(solver.stats_)
    stats["n_updates_total"] = len(solver.correction_steps()) * n_updates
    return stats


def time_isolated_update(J: int, d: int, m: int, mode: str, repeats: int, seed: int = 0) -> float:
    """Median wall time (s) of one call of the bare update function on random ``(J, d)``, ``(J, m)`` data.

    This is the ``O(J^2 (d + m))`` part of the overhead alone, without the
    ``O(J d)`` ODE arithmetic and bookkeeping around it.
    """
    rng = np.random.default_rng(seed)
    X, G = rng.normal(size=(J, d)), rng.normal(size=(J, m))
    y, std = rng.normal(size=m), np.full(m, NOISE_STD)
    source = RandomSource(seed, "enkg-overhead-ensemble")
    if mode == "paper":
        call = lambda: normalised_gradient_update(X, (G - y) / std**2, G, 2.0)  # noqa: E731
    elif mode == "kalman":
        call = lambda: kalman_update(X, G, y, std, 4.0, source)  # noqa: E731
    else:
        call = lambda: sqrt_kalman_update(X, G, y, std, 4.0)  # noqa: E731
    t0 = time.perf_counter()
    call()  # warm-up, and a first estimate to size the batches
    # Batches of calls lasting >= 20 ms each, so sub-millisecond updates are timed reliably.
    number = max(1, math.ceil(0.02 / max(time.perf_counter() - t0, 1e-6)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            call()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def median_stats(J, d, m, mode, n_steps, n_updates, threshold, repeats: int, isolated: bool = False) -> dict:
    """Median over ``repeats`` fits of every timing; the counts of the last fit."""
    runs = [run_once(J, d, m, mode, n_steps, n_updates, threshold, seed) for seed in range(repeats)]
    out = dict(runs[-1])
    for key in ("time_total_s", "time_denoiser_s", "time_forward_s", "time_overhead_s"):
        out[key] = statistics.median(r[key] for r in runs)
    out["overhead_fraction"] = out["time_overhead_s"] / out["time_total_s"]
    out["overhead_per_update_s"] = out["time_overhead_s"] / max(out["n_updates_total"], 1)
    out["ns_per_J2_dm"] = 1e9 * out["overhead_per_update_s"] / (J**2 * (d + m))
    out.update(J=J, d=d, m=m, mode=mode, n_steps=n_steps, n_updates=n_updates, repeats=repeats)
    if isolated:
        out["isolated_update_s"] = time_isolated_update(J, d, m, mode, repeats)
    return out


def warm_up() -> None:
    """One tiny fit per mode: imports, constant caches and BLAS start-up out of the timings."""
    for mode in MODES:
        run_once(8, 16, 4, mode, 3, 1, 0.0, 0)


# --------------------------------------------------------------------------
# the measurements
# --------------------------------------------------------------------------


def overhead_fraction(cfg: dict, repeats: int) -> list[dict]:
    """Paper-shaped schedule (two updates per step, 5% thresholds) for every update mode."""
    return [
        median_stats(cfg["J"], cfg["d"], cfg["m"], mode, cfg["n_steps"], 2, 0.05, repeats, isolated=True)
        for mode in MODES
    ]


def scan_J(cfg: dict, repeats: int) -> list[dict]:
    """Overhead per update against the ensemble size ``J`` (every step corrects, one update each)."""
    return [
        median_stats(J, cfg["d"], cfg["m"], mode, cfg["n_steps"], 1, 0.0, repeats, isolated=True)
        for mode in MODES
        for J in cfg["Js"]
    ]


def _scan_d_worker(d: int, cfg: dict, repeats: int, threads: int) -> list[dict]:
    """All modes at one ``d`` in a fresh process; attaches that process's peak memory."""
    _limit_threads(threads)
    warm_up()
    baseline = peak_rss_mb()
    rows = [
        median_stats(cfg["J"], d, cfg["m"], mode, cfg["n_steps"], 1, 0.0, repeats, isolated=True)
        for mode in MODES
    ]
    for row in rows:
        row["baseline_rss_mb"] = baseline
        row["peak_rss_mb_process"] = peak_rss_mb()
    return rows


def scan_d(cfg: dict, repeats: int, threads: int) -> list[dict]:
    """Overhead per update against the dimension ``d``, one fresh process per ``d``."""
    rows = []
    ctx = multiprocessing.get_context("spawn")
    for d in cfg["ds"]:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            rows.extend(pool.submit(_scan_d_worker, d, cfg, repeats, threads).result())
    return rows


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def slopes(rows: list[dict], var: str, key: str = "overhead_per_update_s") -> dict:
    """Per mode: the slope of ``key`` over all points and over the last two (the largest sizes)."""
    out = {}
    for mode in MODES:
        pts = sorted((r[var], r[key]) for r in rows if r["mode"] == mode)
        xs, ys = zip(*pts)
        out[mode] = {"all": loglog_slope(xs, ys), "last_two": loglog_slope(xs[-2:], ys[-2:])}
    return out


# --------------------------------------------------------------------------
# environment and reporting
# --------------------------------------------------------------------------


def _limit_threads(threads: int):
    """Limit BLAS/OpenMP pools with threadpoolctl when it is installed; return the limiter."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment variables set at import still apply
        return None
    return threadpool_limits(limits=threads)


def _cpu_model() -> str:
    """CPU model name (from ``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "kalmandiff": kd.__version__,
        "blas_threads": threads,
        "command": "python -m benchmarks enkg-overhead " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = ", ".join(f"{p['internal_api']} {p.get('version')}" for p in threadpool_info())
    except ImportError:
        pass
    return info


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fraction_table(rows: list[dict]) -> str:
    r0 = rows[0]
    head = (
        f"J = {r0['J']}, d = {r0['d']}, m = {r0['m']}, n_steps = {r0['n_steps']}, n_updates = 2, "
        f"thresholds 0.05 ({r0['n_updates_total']} updates, {r0['n_denoiser_evals']} denoiser and "
        f"{r0['n_forward_evals']} forward evaluations); median of {r0['repeats']}. "
        "The last column is the number of updates times the median time of one bare update call "
        "on arrays of the same shapes; the rest of the overhead is the O(J d) ODE arithmetic and "
        "bookkeeping.\n\n"
    )
    cols = [
        "update",
        "total (s)",
        "denoiser (s)",
        "forward (s)",
        "overhead (s)",
        "overhead fraction",
        "of which update calls (s, est.)",
    ]
    body = [
        [
            f"`{r['mode']}`",
            f"{r['time_total_s']:.3f}",
            f"{r['time_denoiser_s']:.3f}",
            f"{r['time_forward_s']:.3f}",
            f"{r['time_overhead_s']:.3f}",
            f"{r['overhead_fraction']:.0%}",
            f"{r['n_updates_total'] * r['isolated_update_s']:.3f}",
        ]
        for r in rows
    ]
    return head + _table(cols, body)


def scan_table(rows: list[dict], var: str, with_memory: bool = False) -> str:
    values = sorted({r[var] for r in rows})
    cols = [var] + [f"`{m}` in fit" for m in MODES] + [f"`{m}` alone" for m in MODES]
    if with_memory:
        cols += ["peak RSS (MiB)", "RSS over baseline (MiB)", "one J×d array (MiB)", "one d×d float64 (GiB)"]
    body = []
    for v in values:
        by_mode = {r["mode"]: r for r in rows if r[var] == v}
        line = [str(v)]
        line += [f"{1e3 * by_mode[m]['overhead_per_update_s']:.2f}" for m in MODES]
        line += [f"{1e3 * by_mode[m]['isolated_update_s']:.2f}" for m in MODES]
        if with_memory:
            r = by_mode[MODES[-1]]
            line += [
                f"{r['peak_rss_mb_process']:.0f}",
                f"{r['peak_rss_mb_process'] - r['baseline_rss_mb']:.0f}",
                f"{r['J'] * r['d'] * 8 / 2**20:.1f}",
                f"{r['d'] ** 2 * 8 / 2**30:.3g}",
            ]
        body.append(line)
    return _table(cols, body)


def slope_table(fits: dict) -> str:
    cols = [
        "update",
        "scan",
        "in fit: all points",
        "in fit: last two",
        "alone: all points",
        "alone: last two",
    ]
    body = [
        [
            f"`{m}`",
            var,
            f"{fits[var][m]['all']:.2f}",
            f"{fits[var][m]['last_two']:.2f}",
            f"{fits[var + '_isolated'][m]['all']:.2f}",
            f"{fits[var + '_isolated'][m]['last_two']:.2f}",
        ]
        for var in ("J", "d")
        for m in MODES
    ]
    return _table(cols, body)


_SCAN_NOTE = (
    "Milliseconds per update. *in fit*: `time_overhead_s` of `EnKGSolver.fit` divided by the number of "
    "updates (includes the O(J d) ODE arithmetic); *alone*: one call of the bare update function."
)


def report(results: dict) -> str:
    info = results["machine"]
    sj, sd = results["config"]["scan_J"], results["config"]["scan_d"]
    parts = [
        "Machine: "
        + ", ".join(f"{k} {info[k]}" for k in ("platform", "processor", "cpu_count", "python", "numpy")),
        f"BLAS: {info.get('blas', '?')}, {info['blas_threads']} thread(s)",
        f"Command: `{info['command']}` ({info['date']}, {results['wall_s']:.0f} s)",
        "",
        "### Overhead fraction (paper-shaped schedule)",
        "",
        fraction_table(results["fraction"]),
        "",
        f"### Overhead per update against J (d = {sj['d']}, m = {sj['m']}, "
        f"n_steps = {sj['n_steps']}, every step corrects once)",
        "",
        _SCAN_NOTE,
        "",
        scan_table(results["scan_J"], "J"),
        "",
        f"### Overhead per update against d (J = {sd['J']}, m = {sd['m']}, n_steps = {sd['n_steps']}; "
        "one process per d)",
        "",
        _SCAN_NOTE,
        "",
        scan_table(results["scan_d"], "d", with_memory=True),
        "",
        "### Log-log slopes of the overhead per update",
        "",
        slope_table(results["slopes"]),
    ]
    return "\n".join(parts)


def main(argv=None) -> dict:
    parser = parser_for(__doc__)
    parser.add_argument("--quick", action="store_true", help="small grid (under 30 s)")
    add_json(parser)
    parser.add_argument("--repeats", type=int, default=None, help="fits per configuration (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats or cfg["repeats"]
    if repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be positive.")

    t0 = time.perf_counter()
    _limit_threads(args.threads)
    warm_up()
    results = {"machine": machine_info(args.threads), "config": cfg, "repeats": repeats}
    results["fraction"] = overhead_fraction(cfg["fraction"], repeats)
    results["scan_J"] = scan_J(cfg["scan_J"], repeats)
    results["scan_d"] = scan_d(cfg["scan_d"], repeats, args.threads)
    results["slopes"] = {
        "J": slopes(results["scan_J"], "J"),
        "d": slopes(results["scan_d"], "d"),
        "J_isolated": slopes(results["scan_J"], "J", "isolated_update_s"),
        "d_isolated": slopes(results["scan_d"], "d", "isolated_update_s"),
    }
    results["wall_s"] = time.perf_counter() - t0
    print(report(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
    return results


if __name__ == "__main__":
    main()
