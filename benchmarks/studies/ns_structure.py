"""Is there structure a network can use in 32x32 Navier-Stokes vorticity?  Edge over the best Gaussian.

For each Reynolds number, GRF initial vorticities (``sample_ns_grf``) are
evolved with ``NavierStokes2D`` (Kolmogorov forcing) and kept at each
evolution time of ``--times`` (one trajectory per field: the later times
continue the earlier ones, the equation being autonomous).  For each
(Reynolds, time) setting:

- the **best stationary Gaussian** of the training fields: their mean field
  and their per-Fourier-mode power, whose exact denoiser is a Wiener filter
  per mode (the best denoiser of a translation-invariant Gaussian family);
- a **network**: a ``SmallUNet`` trained with the EDM loss
  (``train_denoiser``) for a FIXED budget of optimiser steps (``--steps``,
  batch 32, one thread), the same for every setting whatever the machine's
  load, resumable from its checkpoint;
- on the held-out fields: the relative denoising error
  ``||D(x + sigma n, sigma) - x|| / ||x - mean||`` of both, at sigma given
  in units of the fields' pointwise standard deviation, and the
  non-Gaussianity of the fields (excess kurtosis of the vorticity values and
  of the vorticity gradient; 0 for a Gaussian field).

Data, checkpoints and per-setting results go to ``--cache`` (a rerun
reuses them); ``--report`` prints the markdown table of the results there.

Usage (one idle core: data about 5 min per Reynolds number, then about
4.5 steps a second of training per setting)::

    nice python -m benchmarks ns-structure --cache /work/cache/ns_structure --steps 500
    python -m benchmarks ns-structure --cache /work/cache/ns_structure --report
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from benchmarks._common import parser_for

SIGMAS = (0.1, 0.3, 1.0, 3.0)  # in units of the fields' pointwise std


def evolve_fields(n: int, reynolds: float, times: list[float], seed: int, resolution: int = 32) -> dict:
    """``{t: fields (n, 1, R, R)}``: ``n`` GRF draws evolved to each of the increasing ``times``."""
    from kalmandiff.problems.navier_stokes import NavierStokes2D, sample_ns_grf

    solver = NavierStokes2D(
        resolution=resolution, reynolds=reynolds, subsample=1, noise_std=0.0, dtype="float64"
    )
    state = sample_ns_grf(n, resolution, np.random.default_rng(seed))
    out, now = {}, 0.0
    for t in sorted(times):
        state = solver.solve(state, t_final=t - now) if t > now else state
        now = t
        out[t] = state.copy()
    return out


def load_fields(cache: str, reynolds: float, times: list[float], n: int, seed: int) -> dict:
    path = os.path.join(cache, f"fields_re{reynolds:g}_n{n}_seed{seed}.npz")
    if os.path.exists(path):
        saved = np.load(path)
        if all(f"t{t:g}" in saved for t in times):
            return {t: saved[f"t{t:g}"] for t in times}
    t0 = time.perf_counter()
    fields = evolve_fields(n, reynolds, times, seed)
    np.savez(path, **{f"t{t:g}": f for t, f in fields.items()})
    print(
        f"Re {reynolds:g}: {n} fields to t = {max(times):g} in {time.perf_counter() - t0:.0f} s", flush=True
    )
    return fields


def stationary_gaussian_denoiser(train: np.ndarray):
    """Exact denoiser of the Gaussian with the training fields' mean and per-mode power (a Wiener filter)."""
    mean = train.mean(axis=0)
    power = np.mean(np.abs(np.fft.fft2(train - mean)) ** 2, axis=0) / np.prod(train.shape[-2:])

    def denoise(x, sigma):
        gain = power / (power + sigma**2)
        return mean + np.real(np.fft.ifft2(np.fft.fft2(x - mean) * gain))

    return denoise


def excess_kurtosis(values: np.ndarray) -> float:
    """Pooled excess kurtosis ``E[(v - m)^4] / var^2 - 3`` (0 for a Gaussian)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v - v.mean()
    return float(np.mean(v**4) / np.mean(v**2) ** 2 - 3.0)


def field_statistics(fields: np.ndarray) -> dict:
    """Kurtosis of the vorticity about its mean field, and of its periodic x-gradient."""
    fluct = fields - fields.mean(axis=0)
    grad = np.roll(fields, -1, axis=-1) - fields
    return {
        "std": float(fluct.std()),
        "kurtosis": excess_kurtosis(fluct),
        "kurtosis_gradient": excess_kurtosis(grad),
    }


def train_network(train: np.ndarray, scale: float, args, tag: str):
    """A SmallUNet trained ``args.steps`` steps on ``train / scale``; resumes its checkpoint."""
    from kalmandiff.priors.training import random_roll, train_denoiser

    ckpt = os.path.join(args.cache, f"ckpt_{tag}.pt")
    t0 = time.perf_counter()
    result = train_denoiser(
        (train / scale).astype(np.float32),
        sigma_data=1.0,
        model_channels=args.channels,
        channel_mult=(1, 2, 4),
        n_steps=args.steps,
        batch_size=32,
        lr=2e-3,
        warmup_steps=100,
        ema_halflife_steps=100.0,
        # any shift along x; shifts along y by quarter periods keep the forcing -4 cos(4 y)
        augment=random_roll((1, train.shape[-1] // 4)),
        checkpoint=ckpt,
        checkpoint_every=200,
        random_state=args.seed,
        progress=False,
    )
    return result, time.perf_counter() - t0


def network_denoiser(result, scale: float):
    prior = result.denoiser()

    def denoise(x, sigma):
        d = prior.denoise((x / scale).astype(np.float32), np.full(len(x), sigma / scale, dtype=np.float32))
        return np.asarray(d, dtype=float) * scale

    return denoise


def denoising_errors(denoise, test: np.ndarray, std: float, mean: np.ndarray, seed: int) -> dict:
    """``{sigma / std: relative error}`` on ``test``, noise from a stream fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    out = {}
    for rel in SIGMAS:
        noisy = test + rel * std * rng.standard_normal(test.shape)
        err = np.linalg.norm(denoise(noisy, rel * std) - test) / np.linalg.norm(test - mean)
        out[f"{rel:g}"] = float(err)
    return out


def gaussian_row(fields: np.ndarray, reynolds: float, t: float, args) -> dict:
    """The training-free part of a setting: field statistics and the best stationary Gaussian's errors."""
    train, test = fields[: -args.n_test], fields[-args.n_test :]
    stats = field_statistics(test)
    mean = train.mean(axis=0)
    gauss = denoising_errors(stationary_gaussian_denoiser(train), test, stats["std"], mean, seed=7)
    return {
        "reynolds": reynolds,
        "t": t,
        "n_train": len(train),
        "n_test": len(test),
        **stats,
        "gaussian": gauss,
    }


def run_setting(fields: np.ndarray, reynolds: float, t: float, args, train_network_too: bool) -> dict:
    """One setting's row (``result_<tag>.json``): the Gaussian part, and the network's once trained."""
    tag = f"re{reynolds:g}_t{t:g}"
    path = os.path.join(args.cache, f"result_{tag}.json")
    row = json.loads(open(path).read()) if os.path.exists(path) else gaussian_row(fields, reynolds, t, args)
    # a larger --steps continues the checkpoint (constant learning rate); each budget's errors are kept
    if train_network_too and row.get("train_steps", 0) < args.steps:
        if "network" in row:  # rows written before the per-budget record
            row.setdefault("network_by_steps", {str(row["train_steps"]): row["network"]})
        train, test = fields[: -args.n_test], fields[-args.n_test :]
        scale = float(train.std())
        result, wall = train_network(train, scale, args, tag)
        mean = train.mean(axis=0)
        row["network"] = denoising_errors(network_denoiser(result, scale), test, row["std"], mean, seed=7)
        row.setdefault("network_by_steps", {})[str(int(result.steps))] = row["network"]
        row.update(train_steps=int(result.steps), train_batch=32, train_wall_s_this_run=wall)
        if (reynolds, t) == (200.0, 5.0):
            row["shipped_network"] = _shipped_errors(test, row["std"], mean)
    with open(path, "w") as f:
        json.dump(row, f, indent=1)
    print(json.dumps(row), flush=True)
    return row


def _shipped_errors(test, std, mean) -> dict:
    """The shipped network (Re 200, t = 5, 2,536 steps): how far the fixed budget falls short of it."""
    from kalmandiff.priors.pretrained import load_navier_stokes_prior

    shipped = load_navier_stokes_prior()

    def denoise(x, sigma):
        return np.asarray(shipped.denoise(x, np.full(len(x), sigma)), dtype=float)

    return denoising_errors(denoise, test, std, mean, seed=7)


def report(cache: str) -> str:
    rows = []
    for name in sorted(os.listdir(cache)):
        if name.startswith("result_") and name.endswith(".json"):
            rows.append(json.loads(open(os.path.join(cache, name)).read()))
    rows.sort(key=lambda r: (r["reynolds"], r["t"]))
    sig = [f"{s:g}" for s in SIGMAS]
    head = (
        "| Re | t | vorticity std | excess kurtosis (vorticity / x-difference) | training steps (batch 32) "
        + "".join(f"| network / Gaussian at sigma = {s} std " for s in sig)
        + "|"
    )
    lines = [head, "|" + "---|" * (5 + len(sig))]
    for r in rows:
        budgets = r.get("network_by_steps") or (
            {str(r["train_steps"]): r["network"]} if "network" in r else {}
        )
        for steps, net in sorted(budgets.items(), key=lambda kv: int(kv[0])) or [("-", None)]:
            cells = "".join(
                f"| {net[s]:.3f} / {r['gaussian'][s]:.3f} ({net[s] / r['gaussian'][s]:.2f}) "
                if net
                else f"| - / {r['gaussian'][s]:.3f} "
                for s in sig
            )
            lines.append(
                f"| {r['reynolds']:g} | {r['t']:g} | {r['std']:.2f} | {r['kurtosis']:+.2f} / "
                f"{r['kurtosis_gradient']:+.2f} | {steps} {cells}|"
            )
        if "shipped_network" in r:
            ship = r["shipped_network"]
            cells = "".join(
                f"| {ship[s]:.3f} / {r['gaussian'][s]:.3f} ({ship[s] / r['gaussian'][s]:.2f}) " for s in sig
            )
            lines.append(f"| {r['reynolds']:g} | {r['t']:g} | | | shipped network (2,536 steps) {cells}|")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv=None):
    parser = parser_for(__doc__, raw=True)
    parser.add_argument("--cache", default="/tmp/ns_structure")
    parser.add_argument("--reynolds", type=float, nargs="+", default=[200.0, 1000.0])
    parser.add_argument("--times", type=float, nargs="+", default=[1.0, 5.0, 20.0])
    parser.add_argument("--n-fields", type=int, default=512)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=500, help="training budget per setting (optimiser steps)"
    )
    parser.add_argument(
        "--max-steps", type=int, default=100_000, help="schedule length (the budget stops first)"
    )
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args(argv)
    os.makedirs(args.cache, exist_ok=True)
    if args.report:
        report(args.cache)
        return
    import torch

    torch.set_num_threads(1)
    # data and the training-free columns of every setting first, then the networks one at a time
    for train_too in (False, True):
        for reynolds in args.reynolds:
            fields = load_fields(args.cache, reynolds, args.times, args.n_fields, args.seed)
            for t in args.times:
                run_setting(fields[t], reynolds, t, args, train_network_too=train_too)
    report(args.cache)


if __name__ == "__main__":
    main()
