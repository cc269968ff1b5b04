"""Throughput of the batched Navier-Stokes forward map: forward evaluations per second vs batch size.

Settings follow the paper's problem (Re 200, Kolmogorov forcing, t_final 1, CFL-adaptive steps,
float32, NumPy).  Inputs are realistic vorticity fields: GRF draws evolved for ``t_prior`` time
units (as the paper's data were made), then randomly shifted and sign-flipped to fill the batch.
Each member keeps its own adaptive step, so the cost of a batch follows its slowest member.

Usage::

    python -m benchmarks navier-stokes [out.json] [--resolutions 64 128] [--batches 1 8 32 128]
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time

import numpy as np

from benchmarks._common import parser_for
from kalmandiff.problems.navier_stokes import NavierStokes2D, sample_ns_grf


def realistic_fields(resolution: int, n: int, n_base: int = 4, t_prior: float = 5.0, seed: int = 0):
    """``n`` vorticity fields ``(n, 1, R, R)``: evolved GRF draws, randomly rolled and sign-flipped."""
    rng = np.random.default_rng(seed)
    evolve = NavierStokes2D(resolution=resolution, t_final=t_prior, subsample=1, dtype="float32")
    base = evolve.solve(sample_ns_grf(n_base, resolution, rng).astype(np.float32))
    pick = rng.integers(n_base, size=n)
    shifts = rng.integers(resolution, size=(n, 1))
    signs = rng.choice([-1.0, 1.0], size=n).astype(np.float32)
    # Rolling along x keeps the forcing -4 cos(4y) invariant, and so does the mirror image
    # w(x, y) -> -w(-x, y - pi/4) (vorticity is a pseudoscalar; cos(4(y - pi/4)) = -cos(4y)):
    # every field is a plausible state of the same flow.
    out = np.empty((n, 1, resolution, resolution), dtype=np.float32)
    for i in range(n):
        field = np.roll(base[pick[i]], shifts[i, 0], axis=-2)
        if signs[i] < 0:
            field = -np.roll(np.flip(field, axis=-2), resolution // 8, axis=-1)
        out[i] = field
    return out


def bench(X: np.ndarray, repeats: int, budget_s: float) -> dict:
    """Median wall time of batched forward calls on ``X`` (one call, then more within ``budget_s``)."""
    resolution, batch = X.shape[-1], X.shape[0]
    problem = NavierStokes2D(resolution=resolution, t_final=1.0, subsample=2, dtype="float32")
    problem(X[:1])  # warm-up (FFT plans, constant caches)
    times = []
    while len(times) < repeats and (not times or sum(times) + times[0] < budget_s):
        t0 = time.perf_counter()
        Y = problem(X)
        times.append(time.perf_counter() - t0)
    assert np.all(np.isfinite(Y))
    med = statistics.median(times)
    return {
        "resolution": resolution,
        "batch": batch,
        "repeats": len(times),
        "median_s": med,
        "evals_per_s": batch / med,
    }


def main(argv=None) -> list[dict]:
    parser = parser_for(__doc__)
    parser.add_argument("out", nargs="?", help="write the results as JSON here")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--repeats", type=int, default=3, help="at most this many calls per setting")
    parser.add_argument("--budget", type=float, default=30.0, help="no further repeat past this many seconds")
    args = parser.parse_args(argv)

    rows = []
    for res in args.resolutions:
        fields = realistic_fields(res, max(args.batches))
        for batch in args.batches:
            row = bench(fields[:batch], args.repeats, args.budget)
            rows.append(row)
            print(f"  R={res} J={batch}: {row['median_s']:.3f} s x {row['repeats']}", file=sys.stderr)

    print(
        f"Navier-Stokes forward, Re 200, t_final 1, adaptive dt, float32, NumPy {np.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    print()
    print("| resolution | J | repeats | median time per call (s) | forward evals / s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['resolution']}^2 | {r['batch']} | {r['repeats']} | {r['median_s']:.3f} | {r['evals_per_s']:.2f} |"
        )
    if args.out:
        meta = {"numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine()}
        with open(args.out, "w") as fh:
            json.dump({"meta": meta, "results": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
