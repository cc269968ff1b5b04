"""Throughput of the closure-phase interferometry forward map (NumPy, CPU).

Forward evaluations per second against the batch size J, for the default
EHT2017 / M87 observation (837 visibilities, 508 closure phases, 427 log
closure amplitudes) at two image sizes.  One evaluation is one image mapped
to its closure data; the time is the median over repeats of one batched call.

Run ``python -m benchmarks interferometry [--json out.json]``.
"""

from __future__ import annotations

import json
import platform
import time

import numpy as np

from benchmarks._common import add_json, parser_for
from kalmandiff.problems import ClosurePhaseInterferometry

BATCHES = (1, 16, 64, 256)
NPIXES = (32, 64)


def time_forward(problem, batch: int, repeats: int, seed: int = 0) -> float:
    """Median wall time (s) of one batched ``problem(X)`` call on ``batch`` random images."""
    X = np.random.default_rng(seed).random((batch, *problem.x_shape)) * 1e-3
    problem(X)  # warm-up: builds and caches the Fourier matrix
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        problem(X)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run(npixes=NPIXES, batches=BATCHES, repeats: int = 5) -> list[dict]:
    """Benchmark every (npix, J) pair; return one row per pair."""
    rows = []
    for npix in npixes:
        problem = ClosurePhaseInterferometry(npix=npix)
        for batch in batches:
            seconds = time_forward(problem, batch, repeats)
            rows.append(
                {
                    "npix": npix,
                    "J": batch,
                    "n_visibilities": problem.n_visibilities,
                    "y_size": problem.y_shape[0],
                    "seconds_per_call": seconds,
                    "evals_per_second": batch / seconds,
                }
            )
    return rows


def to_markdown(rows: list[dict]) -> str:
    """Render the rows as a markdown table."""
    lines = [
        "| npix | J | time per call (ms) | forward evals / s |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['npix']} | {r['J']} | {1e3 * r['seconds_per_call']:.2f} | {r['evals_per_second']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    """Command-line entry point: print the markdown table, optionally save JSON."""
    parser = parser_for(__doc__)
    add_json(parser)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per setting (median kept)")
    parser.add_argument("--npix", type=int, nargs="+", default=list(NPIXES))
    parser.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    args = parser.parse_args(argv)
    rows = run(args.npix, args.batches, args.repeats)
    print(to_markdown(rows))
    if args.json:
        meta = {"numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine()}
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
