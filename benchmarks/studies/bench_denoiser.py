"""Throughput of a torch denoiser behind :class:`~kalmandiff.priors.TorchDenoiser`, and EnKG's time outside it.

Two measurements with the shipped 32x32 Navier-Stokes prior
(:func:`kalmandiff.priors.pretrained.load_navier_stokes_prior`; a freshly
initialised network of the same architecture if the weights are missing):

1. *Throughput vs batch size*: particles per second for ``J`` NumPy float32
   particles denoised in chunks of ``batch_size``, on CPU (and on CUDA with
   CuPy particles when both are available), next to the bare module called
   on one torch tensor of the same chunk size: the difference is the cost of
   the DLPack boundary and the chunking.
2. *Share of an EnKG run outside the network*: EnKG on the small
   Navier-Stokes instance; the network's own time is measured inside the
   module, the rest (forward PDE solves, ensemble algebra, DLPack, chunking)
   is reported as a share of the wall time.

Usage::

    python -m benchmarks denoiser [--quick] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from kalmandiff.priors.pretrained import NS_PRIOR_PATH, load_navier_stokes_prior
from kalmandiff.priors.torch_denoiser import TorchDenoiser


class _Timed(torch.nn.Module):
    """Wraps a module and accumulates the wall time spent inside it."""

    def __init__(self, module):
        super().__init__()
        self.inner = module
        self.seconds = 0.0

    def forward(self, x, sigma):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = self.inner(x, sigma)
        if x.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out


def _prior(batch_size: int, device: str = "cpu") -> TorchDenoiser:
    if os.path.isfile(NS_PRIOR_PATH):
        return load_navier_stokes_prior(batch_size=batch_size, device=device)
    from kalmandiff.priors.adapters import EDMPrecond, ScaledDenoiser
    from kalmandiff.priors.unet import SmallUNet

    net = EDMPrecond(SmallUNet(model_channels=16, channel_mult=(1, 2, 4)), sigma_data=0.5)
    return TorchDenoiser(ScaledDenoiser(net, 10.0), (1, 32, 32), batch_size=batch_size, device=device)


def throughput(batch_sizes, n_particles: int, repeats: int, device: str = "cpu") -> list[dict]:
    """Particles per second through TorchDenoiser and through the bare module, per batch size."""
    rows = []
    rng = np.random.default_rng(0)
    x_np = (5.0 * rng.standard_normal((n_particles, 1, 32, 32))).astype(np.float32)
    x = x_np
    if device == "cuda":  # pragma: no cover - GPU only
        import cupy

        x = cupy.asarray(x_np)
    for bs in batch_sizes:
        prior = _prior(bs, device)
        prior.denoise(x[:bs], 1.0)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            prior.denoise(x, 1.0)
            if device == "cuda":  # pragma: no cover - GPU only
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        t_wrap = statistics.median(times)
        chunk = torch.as_tensor(x_np[:bs], device=device)
        sig = torch.full((bs,), 1.0, device=device)
        bare = []
        with torch.inference_mode():
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(0, n_particles, bs):
                    prior.module(chunk, sig)
                if device == "cuda":  # pragma: no cover - GPU only
                    torch.cuda.synchronize()
                bare.append(time.perf_counter() - t0)
        t_bare = statistics.median(bare)
        rows.append(
            {
                "device": device,
                "batch_size": bs,
                "particles_per_s": n_particles / t_wrap,
                "bare_particles_per_s": n_particles / t_bare,
                "boundary_overhead": t_wrap / t_bare - 1.0,
            }
        )
        print(
            f"{device:5s} batch {bs:4d}: {rows[-1]['particles_per_s']:8.0f} particles/s "
            f"(bare module {rows[-1]['bare_particles_per_s']:8.0f}, overhead {100 * rows[-1]['boundary_overhead']:+.1f}%)",
            flush=True,
        )
    return rows


def enkg_share(n_particles: int, n_steps: int, batch_size: int) -> dict:
    """EnKG on the small Navier-Stokes instance; time inside the network vs the rest."""
    import kalmandiff as kd
    from kalmandiff.estimators.enkg import EnKGSolver

    inst = kd.problems.make("navier-stokes", size="small", random_state=0, t_prior=5.0)
    prior = _prior(batch_size)
    timed = _Timed(prior.module)
    prior.module = timed
    solver = EnKGSolver(prior, n_particles=n_particles, n_steps=n_steps, random_state=0, verbose=False)
    t0 = time.perf_counter()
    solver.fit(inst.y, inst.problem)
    wall = time.perf_counter() - t0
    st = solver.stats_
    row = {
        "n_particles": n_particles,
        "n_steps": n_steps,
        "wall_s": wall,
        "network_s": timed.seconds,
        "denoiser_wrapper_s": float(st["time_denoiser_s"]),
        "forward_s": float(st["time_forward_s"]),
        "share_outside_network": 1.0 - timed.seconds / wall,
        "share_forward": float(st["time_forward_s"]) / wall,
        "n_denoiser_evals": int(st["n_denoiser_evals"]),
        "n_forward_evals": int(st["n_forward_evals"]),
    }
    print(
        f"EnKG J={n_particles} N={n_steps}: wall {wall:.1f} s, network {timed.seconds:.1f} s, "
        f"TorchDenoiser {row['denoiser_wrapper_s']:.1f} s, forward {row['forward_s']:.1f} s -> "
        f"{100 * row['share_outside_network']:.0f}% outside the network",
        flush=True,
    )
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and a shorter EnKG run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch_sizes = [1, 8, 32, 128] if args.quick else [1, 4, 16, 32, 64, 128, 256]
    n_particles = 128 if args.quick else 256
    results = {
        "machine": platform.platform(),
        "torch": torch.__version__,
        "threads": args.threads,
        "weights": os.path.isfile(NS_PRIOR_PATH),
        "throughput": throughput(batch_sizes, n_particles, args.repeats),
    }
    if torch.cuda.is_available():  # pragma: no cover - GPU only
        try:
            import cupy  # noqa: F401

            results["throughput"] += throughput(batch_sizes + [512, 1024], 4096, args.repeats, "cuda")
        except ImportError:
            print("CUDA available but CuPy missing: GPU throughput skipped")
    results["enkg"] = enkg_share(32 if args.quick else 64, 20 if args.quick else 40, 64)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
