"""Reproduce the 16x16 digits prior shipped as ``kalmandiff/priors/data/digits_16.pt``.

Data: scikit-learn's bundled digits upsampled to 16x16 in [-1, 1]
(:func:`kalmandiff.problems.digits.digits_split`: 1,597 training images,
200 held out).  Training: :func:`kalmandiff.priors.training.train_denoiser`
(EDM loss, EMA through ``AveragedModel``, cosine learning-rate schedule,
validation loss on the held-out images, checkpoint and resume), seeded, on
one CPU thread.  The shipped weights are the EMA at step 7,000 of a
16,000-step cosine schedule (the defaults; about 4 minutes on an idle core,
bit-identical to the shipped file, checked 2026-12-04)::

    python scripts/train_digits_prior.py --checkpoint /tmp/digits_ck.pt

A rerun with the same ``--checkpoint`` resumes where the last one stopped
(bit-identical to an uninterrupted run); ``--stop-at 16000`` finishes the schedule.
Evaluation (denoising error against sigma beside the best Gaussian, sample
statistics against the held-out digits, a figure of samples)::

    python scripts/train_digits_prior.py --evaluate
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# run from a checkout: import the package next to this script, not an installed copy
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_OUT = "kalmandiff/priors/data/digits_16.pt"


def train(args):
    import torch

    from kalmandiff.priors.training import train_denoiser
    from kalmandiff.problems.digits import digits_split

    torch.set_num_threads(args.threads)
    train_images, test_images = digits_split(16)
    result = train_denoiser(
        train_images.astype(np.float32),
        validation_data=test_images.astype(np.float32),
        validate_every=args.validate_every,
        model_channels=args.channels,
        channel_mult=tuple(int(m) for m in args.mult.split(",")),
        num_blocks=args.blocks,
        padding="zeros",  # digits are not periodic
        n_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup,
        lr_schedule="cosine",
        ema_halflife_steps=args.ema_halflife,
        max_minutes=args.minutes,
        stop_step=args.stop_at,
        checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        device="cpu",
        random_state=args.seed,
        progress=False,
    )
    print(
        f"{result.steps} steps in {result.wall_time_s:.0f} s; validation {result.val_losses[-3:]}", flush=True
    )
    if result.steps < (args.steps if args.stop_at is None else min(args.stop_at, args.steps)):
        print("stopped by --minutes before --steps; rerun with the same --checkpoint to finish", flush=True)
        return
    result.save(
        args.out,
        ema_only=True,
        extra={
            "data": "sklearn load_digits upsampled to 16x16 (scipy zoom, order 1), values in [-1, 1]; "
            "kalmandiff.problems.digits.digits_split train part (1597 images)",
            "steps": result.steps,
            "val_losses": [list(v) for v in result.val_losses],
            "command": "python scripts/train_digits_prior.py " + " ".join(args.argv),
        },
    )
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=16000)
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock cap of this call")
    parser.add_argument(
        "--stop-at", type=int, default=7000, help="stop at this step (the schedule still spans --steps)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ema-halflife", type=float, default=200.0, help="EMA half-life in steps")
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--mult", default="1,2", help="channel multipliers per U-Net level")
    parser.add_argument("--blocks", type=int, default=1, help="residual blocks per level")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint", default=None, help="training state file (resumed if present)")
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--validate-every", type=int, default=500)
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--evaluate", action="store_true", help="evaluate the prior at --out and stop")
    parser.add_argument("--figure", default="docs/images/digits_prior_samples.png")
    parser.add_argument("--json", default=None, help="write the evaluation numbers here")
    args = parser.parse_args(argv)
    args.argv = [a for a in (argv if argv is not None else sys.argv[1:])]
    t0 = time.perf_counter()
    if args.evaluate:
        evaluate(args)
    else:
        train(args)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)


def denoising_rmse(prior, images: np.ndarray, sigma: float, seed: int = 0) -> float:
    """Root-mean-square error per pixel of ``prior.denoise(x + sigma n, sigma)`` against ``x``."""
    noise = np.random.default_rng(seed).standard_normal(images.shape)
    denoised = np.asarray(prior.denoise(images + sigma * noise, sigma), dtype=float)
    return float(np.sqrt(np.mean((denoised - images) ** 2)))


def sample_statistics(images: np.ndarray, classifier) -> dict:
    """Pixel statistics of ``images`` ``(n, 1, 16, 16)`` and how confidently a digit classifier reads them.

    ``ink`` is the fraction of pixels above 0, ``saturated`` the fraction
    within 0.1 of -1 or +1, ``out_of_range`` the fraction beyond [-1.05, 1.05];
    ``confidence`` the classifier's mean top probability, ``classes`` the
    number of the ten digits that get at least 5% of the images.
    """
    flat = images.reshape(len(images), -1)
    proba = classifier.predict_proba(np.clip(flat, -1, 1))
    counts = np.bincount(proba.argmax(1), minlength=10) / len(images)
    return {
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "ink": float((flat > 0).mean()),
        "saturated": float((np.abs(np.abs(flat) - 1) < 0.1).mean()),
        "out_of_range": float((np.abs(flat) > 1.05).mean()),
        "confidence": float(proba.max(1).mean()),
        "classes": int((counts >= 0.05).sum()),
    }


def evaluate(args):
    import torch
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from kalmandiff.priors.pretrained import load_digits_prior
    from kalmandiff.problems import digits_gaussian_prior
    from kalmandiff.problems.digits import DIGITS_N_TEST, digits_split

    torch.set_num_threads(args.threads)
    network = load_digits_prior(path=args.out)
    gaussian = digits_gaussian_prior(16)
    train_images, test_images = digits_split(16)
    out = {"checkpoint": args.out, "steps": network.info.get("steps"), "denoising_rmse": {}}
    print(f"denoising RMSE per pixel on the {len(test_images)} held-out digits (image range 2):")
    print("  sigma   network  gaussian  ratio")
    for sigma in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0):
        net_err = denoising_rmse(network, test_images, sigma)
        gauss_err = denoising_rmse(gaussian, test_images, sigma)
        out["denoising_rmse"][str(sigma)] = {"network": net_err, "gaussian": gauss_err}
        print(f"  {sigma:5.2f}   {net_err:.4f}   {gauss_err:.4f}   {net_err / gauss_err:.3f}")

    # a classifier of the training digits (their labels), to see whether samples read as digits
    order = np.random.default_rng(0).permutation(1797)
    labels = load_digits().target[order[:-DIGITS_N_TEST]]
    classifier = LogisticRegression(max_iter=2000).fit(train_images.reshape(len(train_images), -1), labels)
    n = len(test_images)
    samples = {
        "held-out digits": test_images,
        "network samples": np.asarray(network.sample(n, random_state=1), dtype=float),
        "Gaussian samples": np.asarray(gaussian.sample(n, random_state=1), dtype=float),
    }
    out["sample_statistics"] = {k: sample_statistics(v, classifier) for k, v in samples.items()}
    print(f"sample statistics (n = {n} each):")
    for name, stats in out["sample_statistics"].items():
        print(
            f"  {name:17s} "
            + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
        )
    if args.figure:
        _figure(samples, args.figure)
        print(f"wrote {args.figure}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def _figure(samples: dict, path: str, n_show: int = 16):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(samples), n_show, figsize=(n_show * 0.6, len(samples) * 0.75))
    for row, (name, images) in enumerate(samples.items()):
        for col in range(n_show):
            ax = axes[row, col]
            ax.imshow(images[col, 0], cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(
        "16x16 digits: held out, and samples of the shipped network and the best Gaussian", fontsize=9
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
