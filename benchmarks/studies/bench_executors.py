"""Parallel forward evaluations with BlackBox, and the memory of a large ensemble.

Run: ``python -m benchmarks executors [--members 32] [--sleep 0.05]``.

1. A forward model that sleeps ``--sleep`` seconds per member (a stand-in for
   a slow simulator) evaluated on ``--members`` particles: serially, with a
   2-process ``ProcessPoolExecutor`` and with a 2-worker Dask ``LocalCluster``;
   median wall time of one ensemble evaluation and of a short EnKG fit.
2. Peak memory of EnKG with ``J = 2048`` particles of 128 x 128 (a GRF prior,
   a cheap subsampling forward in chunks of 256), in a fresh process.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import kalmandiff as kd
from benchmarks._common import command_line, machine_line, parser_for


def sleepy(x, seconds=0.05):
    """Stand-in simulator: ``seconds`` of waiting, then a cheap map."""
    time.sleep(seconds)
    return np.tanh(x[:3])


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_speedup(members: int, seconds: float, repeats: int) -> list[dict]:
    import functools

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    fn = functools.partial(sleepy, seconds=seconds)
    X = np.random.default_rng(0).standard_normal((members, 8))
    prior = kd.priors.GaussianPrior(np.zeros(8), 1.0)
    y = np.tanh(np.ones(3) * 0.3)

    def fit(box):
        kd.EnKGSolver(prior, n_particles=members, n_steps=6, n_updates=1, random_state=0, verbose=False).fit(
            y, box
        )

    rows = []
    setups = [("serial", lambda: None)]
    setups.append(("ProcessPoolExecutor(2)", lambda: ProcessPoolExecutor(2)))

    def dask_executor():
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        ex = client.get_executor()
        ex._kd_close = lambda: (client.close(), cluster.close())
        return ex

    setups.append(("Dask LocalCluster(2 workers)", dask_executor))
    for name, make in setups:
        ex = make()
        box = kd.problems.BlackBox(fn, (8,), (3,), noise_std=0.1, executor=ex)
        box(X[:2])  # warm the workers up
        t_eval = _median_time(lambda box=box: box(X), repeats)
        t_fit = _median_time(lambda box=box: fit(box), 1)
        n_calls = (
            1 + 4
        )  # EnKG with 6 steps corrects at steps 1..4, one update each; plus the probe-free ForwardProblem
        rows.append({"executor": name, "eval_s": t_eval, "fit_s": t_fit, "calls": n_calls})
        if hasattr(ex, "_kd_close"):
            ex._kd_close()
        elif ex is not None:
            ex.shutdown()
    base = rows[0]
    for r in rows:
        r["speedup_eval"] = base["eval_s"] / r["eval_s"]
        r["speedup_fit"] = base["fit_s"] / r["fit_s"]
    return rows


_MEMORY_JOB = """
import numpy as np, kalmandiff as kd
prior = kd.priors.GaussianRandomFieldPrior(shape=(1, 128, 128), alpha=2.5, tau=3.0)
y = np.zeros((1, 32, 32))
forward = lambda X: X[:, :, ::4, ::4]
s = kd.EnKGSolver(prior, n_particles=2048, n_steps=4, threshold_start=0.0, threshold_end=0.0, n_updates=1,
                  batch_size=256, forward_batch_size=256, random_state=0, verbose=False)
s.fit(y, forward, noise_std=1.0)
print(s.stats_["peak_rss_mb"], s.stats_["time_total_s"])
"""


def bench_memory() -> dict:
    out = subprocess.run([sys.executable, "-c", _MEMORY_JOB], capture_output=True, text=True, check=True)
    peak, seconds = map(float, out.stdout.split())
    return {
        "J": 2048,
        "shape": "1x128x128",
        "peak_rss_mb": peak,
        "time_s": seconds,
        "one_ensemble_mb": 2048 * 128 * 128 * 8 / 2**20,
    }


def main(argv=None) -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--members", type=int, default=32)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(machine_line())
    print(f"command: {command_line('executors', argv)}\n")
    print(
        f"One ensemble evaluation of {args.members} members at {args.sleep * 1000:.0f} ms each, "
        "and an EnKG fit with 5 such evaluations (median of repeats):\n"
    )
    print("| executor | evaluation (s) | speed-up | EnKG fit (s) | speed-up |")
    print("|---|---:|---:|---:|---:|")
    for r in bench_speedup(args.members, args.sleep, args.repeats):
        print(
            f"| {r['executor']} | {r['eval_s']:.2f} | {r['speedup_eval']:.2f} | {r['fit_s']:.2f} | "
            f"{r['speedup_fit']:.2f} |"
        )
    m = bench_memory()
    print(
        f"\nEnKG, J = {m['J']}, {m['shape']} (float64; one ensemble is {m['one_ensemble_mb']:.0f} MiB), "
        f"denoiser and forward in chunks of 256: peak RSS {m['peak_rss_mb']:.0f} MiB, {m['time_s']:.1f} s."
    )


if __name__ == "__main__":
    main()
