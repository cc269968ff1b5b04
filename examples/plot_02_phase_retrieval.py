"""
Phase retrieval: an image from the magnitude of its Fourier transform
=====================================================================

Only the magnitude ``|F x|`` of the (oversampled) Fourier transform of an image is
measured, with noise; the phase is lost.  The map is nonlinear and has exact
ambiguities (a shifted or point-reflected image has the same magnitudes), which is
what makes a strong prior useful.

kalmandiff's built-in instance uses smooth synthetic images.  As a stand-in for a
diffusion model trained on such images we fit a Gaussian prior (mean and covariance) to
1000 of them, none of which is the ground truth: the solvers only need its denoiser.
The image is 16 x 16 here to keep the page fast; ``size="small"`` gives 32 x 32
(``family="smooth"``; the default family of ``make("phase-retrieval")`` is handwritten
digits with a shipped network prior, see the benchmarks).

Phase retrieval is the hardest of the built-in problems for a Gaussian stand-in prior:
the posterior has several well-separated modes, and on some ground truths the ensemble
settles in a mode whose image is far from the truth although it fits the data.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import kalmandiff as kd
from kalmandiff.problems import smooth_test_image

inst = kd.problems.make("phase-retrieval", size="small", shape=(1, 16, 16), random_state=1, family="smooth")
problem = inst.problem
print(problem)


def fitted_gaussian_prior(shape, n=1000, first_seed=1000):
    """A Gaussian prior fitted to ``n`` training images (seeds other than the truth's)."""
    X = np.stack([smooth_test_image(shape, first_seed + i).ravel() for i in range(n)])
    cov = np.cov(X, rowvar=False) + 1e-3 * np.eye(X.shape[1])
    return kd.priors.GaussianPrior(X.mean(axis=0).reshape(shape), cov)


prior = fitted_gaussian_prior(problem.x_shape)

# %%
# A few prior samples, to see what the prior believes images look like.

samples = prior.sample(4, random_state=1)
fig, axes = plt.subplots(1, 4, figsize=(8, 2.2), layout="constrained")
for ax, s in zip(axes, samples):
    ax.imshow(s[0], cmap="gray", vmin=-1, vmax=1)
    ax.set_axis_off()

# %%
# The data: Fourier magnitudes on a grid twice the image size.

kd.plotting.plot_reconstruction(x_true=inst.x_true, y=np.fft.fftshift(inst.y))

# %%
# Reconstruction
# --------------
# EnKG with the paper's update and with the calibrated Kalman update, on 64 particles
# and 30 noise levels; the prior mean is shown for reference.

common = dict(n_particles=64, n_steps=30, n_updates=1, random_state=0, verbose=False)
solvers = {
    "EnKG paper": kd.EnKGSolver(prior, update="paper", **common).fit(inst.y, problem),
    "EnKG kalman": kd.EnKGSolver(prior, update="kalman", **common).fit(inst.y, problem),
}
m = problem.metrics(prior.mean, inst.x_true)
print(f"{'prior mean':12s} PSNR {m['psnr']:.1f} dB   SSIM {m['ssim']:.3f}")
for name, solver in solvers.items():
    m = problem.metrics(solver.reconstruct(), inst.x_true)
    print(
        f"{name:12s} PSNR {m['psnr']:.1f} dB   SSIM {m['ssim']:.3f}   time {solver.stats_['time_total_s']:.1f} s"
    )

kd.plotting.plot_comparison(solvers, x_true=inst.x_true)

# %%
# The calibrated ensemble's standard deviation next to its actual error: where the
# Fourier magnitudes leave the image undetermined, the spread is large.

kd.plotting.plot_uncertainty(solvers["EnKG kalman"], x_true=inst.x_true)
plt.show()
