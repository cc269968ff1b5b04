"""Can the error bars be trusted?  Coverage and CRPS of every solver against exact posteriors; SBC on Navier-Stokes.

Run::

    python -m benchmarks calibration exact [--seeds 2] [--particles 16 64 256] [--steps 20 80]
        [--solvers NAME ...] [--cases gaussian mixture grf]
    python -m benchmarks calibration sbc [--trials 20] [--particles 20] [--steps 16] [--updates kalman-sqrt paper]

``exact``: for each exact-posterior case (``kalmandiff.testing``: Gaussian d = 16, mixture d = 8,
and the Gaussian random field d = 1024 observed at 256 pixels, the last at J = 64 only), each solver,
ensemble size J and number of steps N, and each seed (case, truth, noise and solver on independent
streams), one fit.  Reported, as medians over seeds:

* ``cov50``, ``cov90``: the exact posterior mass of the ensemble's central 50% / 90% intervals
  (:func:`kalmandiff.diagnostics.central_interval`), averaged over coordinates: the coverage a user
  would see over many truths drawn from the posterior, computed from one fit without sampling
  (Gaussian and mixture marginals are known in closed form);
* ``CRPS ratio``: the ensemble's fair CRPS, in expectation over truths from the exact posterior
  (closed form), over the exact posterior's own expected CRPS (1 is ideal; a proper score, so
  every other distribution scores more).

``sbc``: simulation-based calibration (:func:`kalmandiff.diagnostics.sbc`) of EnKG on the
Navier-Stokes 32x32 problem (t_final = 1, 2x subsampling, noise 1) with the shipped network prior,
truths sampled from the network itself (40 Heun steps).
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.stats import norm

import kalmandiff as kd
from benchmarks._common import (
    add_seed_count,
    add_sizes,
    command_line,
    limit_threads,
    machine_line,
    parser_for,
)
from kalmandiff.diagnostics import central_interval, sbc
from kalmandiff.testing import ExactPosteriorSampler, gaussian_case, grf_case, mixture_case

#: (label, builder, keyword arguments); the GRF case is d = 1024 with a 16 x 16 block of observed pixels
CASES = {
    "gaussian": ("Gaussian d=16 m=8", gaussian_case, {"d": 16, "m": 8, "noise": 0.1}),
    "mixture": ("mixture d=8 m=4", mixture_case, {"d": 8, "m": 4, "noise": 0.1}),
    "grf": ("GRF d=1024 m=256", grf_case, {"n": 32, "n_obs": 256, "noise": 0.1}),
}

SOLVERS = {
    "exact posterior": lambda prior, J, N, seed: ExactPosteriorSampler(
        prior, n_particles=J, random_state=seed
    ),
    "EnKG paper": lambda prior, J, N, seed: kd.EnKGSolver(prior, n_particles=J, n_steps=N, update="paper"),
    "EnKG kalman": lambda prior, J, N, seed: kd.EnKGSolver(prior, n_particles=J, n_steps=N, update="kalman"),
    "EnKG kalman-sqrt": lambda prior, J, N, seed: kd.EnKGSolver(
        prior, n_particles=J, n_steps=N, update="kalman-sqrt"
    ),
    "EnKG kalman-sqrt, Heun": lambda prior, J, N, seed: kd.EnKGSolver(
        prior, n_particles=J, n_steps=N, update="kalman-sqrt", ode_method="heun"
    ),
    "EKI kalman": lambda prior, J, N, seed: kd.EKISolver(prior, n_particles=J),
    "EKI kalman-sqrt": lambda prior, J, N, seed: kd.EKISolver(prior, n_particles=J, update="kalman-sqrt"),
    "DPG": lambda prior, J, N, seed: kd.DPGSolver(prior, n_particles=J, n_steps=N),
    "SCG": lambda prior, J, N, seed: kd.SCGSolver(prior, n_particles=J, n_steps=N),
    "GSG": lambda prior, J, N, seed: kd.GSGSolver(prior, n_particles=J, n_steps=N),
    "DPS": lambda prior, J, N, seed: kd.DPSSolver(prior, n_particles=J, n_steps=N),
    "DiffPIR": lambda prior, J, N, seed: kd.DiffPIRSolver(prior, n_particles=J, n_steps=N),
    "RMP": lambda prior, J, N, seed: kd.RMPSolver(prior, n_particles=J, n_steps=N),
}
_STEPLESS = ("exact posterior", "EKI kalman", "EKI kalman-sqrt", "EKI kalman-sqrt, localised")


def _grf_taper(case):
    """Gaspari-Cohn localisation for the GRF case: its data are flat, so their pixels' positions are given."""
    from kalmandiff.estimators.localization import GaspariCohnTaper, auto_radius, grid_coordinates

    x_shape = case.forward.x_shape
    coords = grid_coordinates(x_shape)
    radius = auto_radius(case.prior, x_shape, x_shape)  # the data sit on the unknowns' own grid
    return GaspariCohnTaper(radius, x_coords=coords, y_coords=coords[case.info["observed"]])


#: localised variants, for the GRF case only (J = 64 << d = 1024)
LOCALISED = {
    "EnKG kalman-sqrt, localised": lambda case, J, N: kd.EnKGSolver(
        case.prior, n_particles=J, n_steps=N, update="kalman-sqrt", localization=_grf_taper(case)
    ),
    "EKI kalman-sqrt, localised": lambda case, J, N: kd.EKISolver(
        case.prior, n_particles=J, update="kalman-sqrt", localization=_grf_taper(case)
    ),
}


def posterior_marginals(case):
    """The exact posterior's marginals as a mixture per coordinate: weights (K,), means and stds (K, d)."""
    if case.name == "mixture":
        return case.info["weights"], case.info["means"], case.info["stds"]
    return np.ones(1), case.mean.reshape(1, -1), case.std.reshape(1, -1)


def interval_mass(X, marginals, level) -> float:
    """Exact posterior mass of the ensemble's central interval at ``level``, mean over coordinates."""
    w, M, S = marginals
    lo, hi = (np.asarray(b).reshape(1, -1) for b in central_interval(X, level))
    return float(np.mean(w @ (norm.cdf((hi - M) / S) - norm.cdf((lo - M) / S))))


def _mean_abs_normal(mu, s):
    """``E|N(mu, s^2)|``."""
    return s * math.sqrt(2 / math.pi) * np.exp(-(mu**2) / (2 * s**2)) + mu * (1 - 2 * norm.cdf(-mu / s))


def expected_crps_ratio(X, marginals) -> float:
    """Expected fair CRPS of the ensemble over truths from the exact posterior, over the posterior's own."""
    w, M, S = marginals
    J = X.shape[0]
    Xf = X.reshape(J, -1)
    # E_z |x_j - z| for z from the mixture marginal: sum_k w_k E|N(x_j - m_k, s_k^2)|
    skill = sum(w[k] * _mean_abs_normal(Xf - M[k], S[k]).mean(axis=0) for k in range(w.size))
    Xs = np.sort(Xf, axis=0)
    pair = 2 * ((2 * np.arange(1, J + 1) - J - 1)[:, None] * Xs).sum(axis=0)
    ens = skill - pair / (2 * J * (J - 1))
    ideal = 0.5 * sum(
        w[k] * w[l] * _mean_abs_normal(M[k] - M[l], np.sqrt(S[k] ** 2 + S[l] ** 2))
        for k in range(w.size)
        for l in range(w.size)  # noqa: E741
    )
    return float(np.mean(ens) / np.mean(ideal))


def _fit(name, case, J, N, seed):
    solver = LOCALISED[name](case, J, N) if name in LOCALISED else SOLVERS[name](case.prior, J, N, seed)
    solver.set_params(random_state=seed, verbose=False)
    t0 = time.perf_counter()
    solver.fit(case.y, case.forward)
    return np.asarray(kd._backend.to_numpy(solver.particles_), dtype=float), time.perf_counter() - t0


def exact_table(args) -> None:
    print(
        "| case | solver | J | N | cov50 | cov90 | CRPS ratio | cov90 range | s/fit |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for key in args.cases:
        label, make, kwargs = CASES[key]
        cases = [make(seed=100 + s, **kwargs) for s in range(args.seeds)]
        Js = [64] if key == "grf" else args.particles
        names = [*args.solvers, *(LOCALISED if key == "grf" and args.localised else ())]
        for name in names:
            for J in Js:
                for N in [args.steps[0]] if name in _STEPLESS else args.steps:
                    _row(label, name, cases, J, N)


def _row(label, name, cases, J, N) -> None:
    rows, secs = [], []
    for seed, case in enumerate(cases):
        try:
            X, dt = _fit(name, case, J, N, seed)
        except Exception as exc:  # noqa: BLE001 - a solver that cannot run on a case is reported, not fatal
            print(f"| {label} | {name} | {J} | {N} | failed: {type(exc).__name__}: {exc} |", flush=True)
            return
        m = posterior_marginals(case)
        rows.append((interval_mass(X, m, 0.5), interval_mass(X, m, 0.9), expected_crps_ratio(X, m)))
        secs.append(dt)
    r = np.array(rows)
    steps = "-" if name in _STEPLESS else N
    print(
        f"| {label} | {name} | {J} | {steps} | {np.median(r[:, 0]):.3f} | {np.median(r[:, 1]):.3f} | "
        f"{np.median(r[:, 2]):.2f} | {r[:, 1].min():.3f}-{r[:, 1].max():.3f} | {np.median(secs):.1f} |",
        flush=True,
    )


def sbc_runs(args) -> None:
    limit_threads(1)
    inst = kd.problems.make("navier-stokes", size="small", random_state=0)
    prior = kd.priors.load_navier_stokes_prior()
    print(f"problem: {inst.problem}; prior: the shipped network (sampled with 40 Heun steps for the truths)")
    for update in args.updates:

        def factory(p, update=update):
            return kd.EnKGSolver(
                p,
                n_particles=args.particles,
                n_steps=args.steps,
                update=update,
                localization=args.localization,
            )

        t0 = time.perf_counter()
        res = sbc(factory, prior, inst.problem, n_trials=args.trials, random_state=args.seed, verbose=True)
        loc = f", localization={args.localization!r}" if args.localization else ""
        print(
            f"\nEnKG update={update!r}{loc}, J = {args.particles}, N = {args.steps}: {time.perf_counter() - t0:.0f} s"
        )
        print(res)
        print("  summary coverage", {a: round(v, 3) for a, v in res.summary_coverage.items()})
        print("  p-values", {k: round(v, 3) for k, v in res.p_values.items()})
        if args.out:
            print("  written", res.export(f"{args.out}-{update}{'-loc' if loc else ''}.nc"))


def main(argv=None) -> None:
    parser = parser_for(__doc__)
    sub = parser.add_subparsers(dest="part", required=True)
    ex = sub.add_parser("exact")
    add_seed_count(ex, 2)
    add_sizes(ex, "--particles", [16, 64, 256])
    add_sizes(ex, "--steps", [20, 80])
    ex.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS), metavar="NAME")
    ex.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ex.add_argument(
        "--localised", action="store_true", help="add the localised Kalman updates on the GRF case"
    )
    sb = sub.add_parser("sbc")
    sb.add_argument("--trials", type=int, default=20)
    sb.add_argument("--particles", type=int, default=20)
    sb.add_argument("--steps", type=int, default=16)
    sb.add_argument("--updates", nargs="+", default=["kalman-sqrt", "paper"])
    sb.add_argument("--seed", type=int, default=0)
    sb.add_argument("--localization", default=None, help='e.g. "auto" (the Kalman updates only)')
    sb.add_argument("--out", default=None, help="write each SBCResult to <out>-<update>.nc")
    args = parser.parse_args(argv)
    kd.set_config(max_forward_evals=None)  # the sizes are chosen here; the per-fit CostWarning is noise
    print(machine_line())
    print(f"command: {command_line('calibration', argv)}\n")
    exact_table(args) if args.part == "exact" else sbc_runs(args)


if __name__ == "__main__":
    main()
