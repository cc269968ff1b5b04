"""Reproduce the spun-up Navier-Stokes priors shipped in ``kalmandiff/priors/data``.

The family of ``make("navier-stokes", family="spun-up")``: GRF initial
vorticities (:func:`kalmandiff.problems.sample_ns_grf`) evolved ONE time unit
at Re 200 (Kolmogorov forcing, 32x32), where the Navier-Stokes structure study
found the network's largest denoising edge over the best stationary Gaussian
(docs/benchmarks.md, "Navier-Stokes structure").  The fields, the network and
its hyperparameters are the study's own (``benchmarks/studies/ns_structure.py``:
512 fields from ``default_rng(0)``, the last 64 held out, a ``SmallUNet`` of 16
channels, mult 1-2-4, trained on ``x / std`` with batch 32, one thread), so
the study's cache and checkpoint are reused and resumed::

    nice python scripts/train_ns_spunup_prior.py --cache /work/cache/ns_structure --steps 3000

writes two files:

- ``ns_spunup_32.pt``: the EMA weights (``scale`` = the training fields' std,
  so the loader works in vorticity units);
- ``ns_spunup_32_gaussian.npz``: the best stationary Gaussian of the same 448
  training fields (``mean`` field ``(1, 32, 32)`` and per-Fourier-mode
  ``power`` ``(32, 32)`` in vorticity units squared, numpy ``fft2``
  convention divided by the pixel count).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

# run from a checkout: import the package and the study next to this script, not installed copies
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DATA = "kalmandiff/priors/data"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", default="/tmp/ns_spunup", help="the study's cache (fields, checkpoint)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out-dir", default=DATA)
    args = parser.parse_args(argv)
    import torch

    from benchmarks.studies import ns_structure as study

    torch.set_num_threads(1)
    os.makedirs(args.cache, exist_ok=True)
    study_args = argparse.Namespace(cache=args.cache, steps=args.steps, channels=16, seed=0)
    fields = study.load_fields(args.cache, 200.0, [1.0], 512, 0)[1.0]
    train = fields[:-64]
    scale = float(train.std())
    result, _ = study.train_network(train, scale, study_args, "re200_t1")
    net_path = os.path.join(args.out_dir, "ns_spunup_32.pt")
    result.save(
        net_path,
        ema_only=True,
        extra={
            "scale": scale,
            "data": "448 GRF vorticities (sample_ns_grf, default_rng(0)) evolved 1 time unit at Re 200, "
            "32x32, Kolmogorov forcing; the first 448 of 512 (benchmarks/studies/ns_structure.py)",
            "steps": int(result.steps),
            "command": "python scripts/train_ns_spunup_prior.py --steps " + str(args.steps),
        },
    )
    mean = train.mean(axis=0)
    power = np.mean(np.abs(np.fft.fft2(train - mean)) ** 2, axis=0)[0] / np.prod(train.shape[-2:])
    gauss_path = os.path.join(args.out_dir, "ns_spunup_32_gaussian.npz")
    np.savez(gauss_path, mean=mean.astype(np.float64), power=power.astype(np.float64))
    for path in (net_path, gauss_path):
        print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)", flush=True)


if __name__ == "__main__":
    main()
