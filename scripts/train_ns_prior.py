"""Reproduce the Navier-Stokes vorticity prior shipped in ``kalmandiff/priors/data``.

Data: initial vorticities drawn from the Navier-Stokes Gaussian random field
(:func:`kalmandiff.problems.sample_ns_grf`) and evolved with
:class:`kalmandiff.problems.NavierStokes2D` (Kolmogorov forcing, Re 200) for
``--t-evolve`` time units, as the EnKG paper's prior data were made.
Training: :func:`kalmandiff.priors.training.train_denoiser` (EDM loss and
preconditioning, EMA) on the fields in network units ``x / 10``.

Usage (CPU: data about 10 minutes, training capped at ``--minutes``)::

    python scripts/train_ns_prior.py --n-fields 2048 --t-evolve 5 --minutes 22 --threads 1 \\
        --data-cache /tmp/ns32.npz --out kalmandiff/priors/data/ns_vorticity_32.pt

Evaluation (denoising error vs sigma on the held-out fields, power spectra of
unconditional samples with a figure, EnKG on small Navier-Stokes instances)::

    python scripts/train_ns_prior.py --data-cache /tmp/ns32.npz --evaluate
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def make_fields(n: int, resolution: int, t_evolve: float, seed: int, chunk: int = 256) -> np.ndarray:
    """``n`` vorticity fields ``(n, 1, R, R)``: GRF draws evolved ``t_evolve`` time units."""
    from kalmandiff.problems.navier_stokes import NavierStokes2D, sample_ns_grf

    rng = np.random.default_rng(seed)
    solver = NavierStokes2D(
        resolution=resolution, t_final=t_evolve, subsample=1, noise_std=0.0, dtype="float64"
    )
    out = []
    for start in range(0, n, chunk):
        x0 = sample_ns_grf(min(chunk, n - start), resolution, rng)
        out.append(solver.solve(x0) if t_evolve > 0 else x0)
        print(f"  fields {start + x0.shape[0]}/{n}", flush=True)
    fields = np.concatenate(out)
    return fields[np.all(np.isfinite(fields), axis=(1, 2, 3))]


def load_or_make(args) -> np.ndarray:
    if args.data_cache and os.path.exists(args.data_cache):
        return np.load(args.data_cache)["fields"]
    t0 = time.perf_counter()
    fields = make_fields(args.n_fields, args.resolution, args.t_evolve, args.seed)
    print(f"generated {len(fields)} fields in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.data_cache:
        np.savez(args.data_cache, fields=fields)
    return fields


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-fields", type=int, default=2048)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--t-evolve", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-cache", default=None, help="npz file to store/reuse the generated fields")
    parser.add_argument("--only-data", action="store_true", help="generate the data and stop")
    parser.add_argument("--n-test", type=int, default=128, help="fields held out (the last ones)")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--minutes", type=float, default=22.0, help="wall-clock budget of the training")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--ema-halflife", type=float, default=100.0, help="EMA half-life in steps")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--mult", default="1,2,4", help="channel multipliers per U-Net level")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="kalmandiff/priors/data/ns_vorticity_32.pt")
    parser.add_argument("--evaluate", action="store_true", help="evaluate the prior at --out and stop")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 1.0, 3.0, 10.0, 30.0])
    parser.add_argument("--n-samples", type=int, default=64)
    parser.add_argument("--sample-steps", type=int, default=40)
    parser.add_argument("--figure", default="docs/images/ns_prior_spectrum.png")
    parser.add_argument("--enkg-seeds", type=int, nargs="*", default=[101, 102, 103])
    parser.add_argument("--enkg-particles", type=int, default=64)
    parser.add_argument("--enkg-steps", type=int, default=20)
    parser.add_argument("--enkg-update", default="paper", choices=["paper", "kalman"])
    args = parser.parse_args(argv)

    fields = load_or_make(args)
    if args.only_data:
        return
    if args.evaluate:
        evaluate(args, fields)
        return
    import torch

    from kalmandiff.priors.pretrained import NS_SCALE
    from kalmandiff.priors.training import random_roll, train_denoiser

    torch.set_num_threads(args.threads)
    train = fields[: -args.n_test] / NS_SCALE
    sigma_data = float(train.std())
    print(f"training on {len(train)} fields, sigma_data = {sigma_data:.3f} (network units)", flush=True)
    result = train_denoiser(
        train.astype(np.float32),
        sigma_data=sigma_data,
        model_channels=args.channels,
        channel_mult=tuple(int(m) for m in args.mult.split(",")),
        n_steps=args.steps,
        warmup_steps=args.warmup,
        ema_halflife_steps=args.ema_halflife,
        max_minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        # any shift along x (axis -2); shifts along y by quarter periods keep the forcing -4 cos(4 y)
        augment=random_roll((1, args.resolution // 4)),
        random_state=args.seed,
    )
    result.save(
        args.out,
        ema_only=True,
        extra={
            "scale": NS_SCALE,
            "data": {
                "generator": "sample_ns_grf + NavierStokes2D(reynolds=200, kolmogorov forcing)",
                "resolution": args.resolution,
                "t_evolve": args.t_evolve,
                "n_fields": len(train),
                "seed": args.seed,
            },
        },
    )
    print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB), final loss {result.losses[-1]:.4f}")


# --------------------------------------------------------------------------
# evaluation of a trained prior (--evaluate)
# --------------------------------------------------------------------------


def empirical_gaussian_denoiser(train: np.ndarray):
    """Best stationary Gaussian fitted to ``train``: mean field plus a per-mode Wiener filter."""
    mean = train.mean(axis=0)
    power = np.mean(np.abs(np.fft.fft2(train - mean)) ** 2, axis=0) / np.prod(train.shape[-2:])

    def denoise(x, sigma):
        s2 = np.reshape(np.asarray(sigma, dtype=float) ** 2, (-1, 1, 1, 1))
        return mean + np.real(np.fft.ifft2(np.fft.fft2(x - mean) * power / (power + s2)))

    return denoise


def radial_spectrum(fields: np.ndarray) -> np.ndarray:
    """Radially averaged power spectrum ``E(|k|)`` of ``(n, 1, R, R)`` fields, integer shells ``|k| = 0..R/2``."""
    R = fields.shape[-1]
    p = np.mean(np.abs(np.fft.fft2(fields[:, 0])) ** 2, axis=0) / R**4
    k = np.fft.fftfreq(R, d=1.0 / R)
    shell = np.rint(np.sqrt(k[:, None] ** 2 + k[None, :] ** 2)).astype(int)
    return np.array([p[shell == s].sum() for s in range(R // 2 + 1)])


def evaluate(args, fields: np.ndarray):
    import torch

    from kalmandiff.metrics import relative_l2
    from kalmandiff.priors.grf import GaussianRandomFieldPrior
    from kalmandiff.priors.pretrained import load_navier_stokes_prior
    from kalmandiff.problems.navier_stokes import ns_grf_params

    torch.set_num_threads(args.threads)
    R = args.resolution
    train, test = fields[: -args.n_test], fields[-args.n_test :]
    nn_prior = load_navier_stokes_prior(path=args.out)
    grf = GaussianRandomFieldPrior((1, R, R), **ns_grf_params(R))
    emp = empirical_gaussian_denoiser(train)
    rng = np.random.default_rng(1)
    print("\n| sigma | network | empirical Gaussian | GRF prior |\n|---:|---:|---:|---:|")
    for sigma in args.sigmas:
        noisy = test + sigma * rng.standard_normal(test.shape)
        errs = [
            relative_l2(d(noisy, sigma * np.ones(len(test))), test)
            for d in (nn_prior.denoise, emp, grf.denoise)
        ]
        print(f"| {sigma:g} | " + " | ".join(f"{e:.3f}" for e in errs) + " |", flush=True)

    t0 = time.perf_counter()
    samples = nn_prior.sample(args.n_samples, random_state=2, n_steps=args.sample_steps)
    print(f"\n{args.n_samples} samples ({args.sample_steps} Heun steps) in {time.perf_counter() - t0:.0f} s")
    grf_samples = grf.sample(args.n_samples, random_state=3)
    e_test, e_nn, e_grf = radial_spectrum(test), radial_spectrum(samples), radial_spectrum(grf_samples)
    band = slice(1, R // 3 + 1)  # the modes the dealiased solver keeps
    log_err = np.abs(np.log10(e_nn[band] / e_test[band]))
    print(
        f"pointwise std: held-out {test.std():.3f}, samples {samples.std():.3f}, GRF {grf_samples.std():.3f}; "
        f"spectrum |log10 ratio| samples/held-out over 1 <= |k| <= {R // 3}: "
        f"median {np.median(log_err):.3f}, max {log_err.max():.3f}; share of the samples' power beyond "
        f"|k| = {R // 3}: {e_nn[R // 3 + 1 :].sum() / e_nn.sum():.1e} (data: {e_test[R // 3 + 1 :].sum() / e_test.sum():.1e})"
    )
    if args.figure:
        plot_spectra(args.figure, e_test, e_nn, e_grf, test[:4], samples[:4])

    if args.enkg_seeds:
        run_enkg(args, nn_prior, grf)


def plot_spectra(path, e_test, e_nn, e_grf, data, samples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4.2))
    ax = fig.add_axes([0.06, 0.13, 0.36, 0.78])
    # The solver's 2/3 dealiasing leaves the data no power beyond |k| = R/3: plot the band it keeps.
    kmax = (len(e_test) - 1) * 2 // 3
    k = np.arange(1, kmax + 1)
    for e, label, style in (
        (e_test, "held-out data (t = 5)", "k-"),
        (e_nn, "network prior samples", "C0--"),
        (e_grf, "GRF prior samples (t = 0)", "C1:"),
    ):
        ax.loglog(k, e[1 : kmax + 1], style, label=label)
    ax.set_xlabel("|k| (up to the dealiasing cut-off R/3)")
    ax.set_ylabel("radially summed power")
    ax.set_title("Navier-Stokes vorticity, 32 x 32")
    ax.legend(fontsize=8)
    vmax = float(np.abs(data).max())
    for row, (stack, name) in enumerate(((data, "data"), (samples, "samples"))):
        for col in range(4):
            a = fig.add_axes([0.47 + 0.13 * col, 0.52 - 0.45 * row, 0.12, 0.40])
            a.imshow(stack[col, 0], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            a.set_xticks([])
            a.set_yticks([])
            if col == 0:
                a.set_ylabel(name)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def run_enkg(args, nn_prior, grf):
    import kalmandiff as kd
    from kalmandiff.estimators.enkg import EnKGSolver
    from kalmandiff.metrics import relative_l2

    print(
        f"\nEnKG, navier-stokes size=small with t_prior={args.t_evolve} "
        f"(J={args.enkg_particles}, {args.enkg_steps} steps, update={args.enkg_update!r})\n"
        "| seed | prior | rel. L2 of mean | mean rel. L2 of members | wall s |\n|---:|---|---:|---:|---:|"
    )
    for seed in args.enkg_seeds:
        inst = kd.problems.make("navier-stokes", size="small", random_state=seed, t_prior=args.t_evolve)
        for name, prior in (("network", nn_prior), ("GRF", grf)):
            solver = EnKGSolver(
                prior,
                n_particles=args.enkg_particles,
                n_steps=args.enkg_steps,
                random_state=seed,
                update=args.enkg_update,
                verbose=False,
            )
            t0 = time.perf_counter()
            solver.fit(inst.y, inst.problem)
            wall = time.perf_counter() - t0
            parts = solver.particles_
            print(
                f"| {seed} | {name} | {relative_l2(parts.mean(axis=0), inst.x_true):.3f} | "
                f"{relative_l2(parts, inst.x_true):.3f} | {wall:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
