"""
Comparing solvers on one problem
================================

Every solver in kalmandiff has the same face, ``fit(y, forward)`` and
``reconstruct()``, so comparing them is one call: :func:`kalmandiff.compare.compare`
fits each on the same data and tabulates the accuracy next to what each one spent
(denoiser and forward evaluations, total and sequential, and wall time).

The problem is Gaussian deblurring of a 16 x 16 image with a Gaussian prior fitted to
synthetic training images.  The settings are cut down so that the page builds in
seconds; they show how to run a comparison, not the methods' accuracy at the paper's
budgets.  The derivative-free solvers (EnKG, EKI, GSG, DPG, SCG) only call the forward
model; DPS, DiffPIR and RMP differentiate it (here through its linear operator or torch
autograd).  Baselines that are not installed are simply left out.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np

import kalmandiff as kd
from kalmandiff.compare import compare, plot_comparison
from kalmandiff.estimators import available_solvers
from kalmandiff.problems import smooth_test_image

inst = kd.problems.make("deblur", size="small", shape=(1, 16, 16), random_state=0)
problem = inst.problem
print(problem)

train = np.stack([smooth_test_image(problem.x_shape, 1000 + i).ravel() for i in range(1000)])
cov = np.cov(train, rowvar=False) + 1e-3 * np.eye(train.shape[1])
prior = kd.priors.GaussianPrior(train.mean(axis=0).reshape(problem.x_shape), cov)

# %%
# The solvers and their (small) budgets
# -------------------------------------
# :func:`kalmandiff.estimators.available_solvers` maps short names to the solver classes
# this installation provides.

budgets = {
    "enkg": dict(n_particles=64, n_steps=30, n_updates=1),
    "eki": dict(n_particles=64, max_iter=30),
    "dps": dict(n_steps=60),
    "gsg": dict(n_steps=60, n_queries=32),
    "dpg": dict(n_steps=60, n_queries=32),
    "scg": dict(n_steps=60, n_queries=16),
    "diffpir": dict(n_particles=4, n_steps=30),
    "rmp": dict(n_particles=2, n_steps=10, n_inner=2),
}
solvers = {}
for name, cls in available_solvers().items():
    solver = cls(prior, random_state=0, verbose=False)
    accepted = solver.get_params()
    solver.set_params(**{k: v for k, v in budgets.get(name, {}).items() if k in accepted})
    solvers[name] = solver
print("solvers:", ", ".join(solvers))

# %%
# One call fits them all.  A solver that fails gets its error message in the ``error``
# column instead of stopping the comparison.

table = compare(solvers, problem, inst.y, x_true=inst.x_true, as_frame=False)

columns = {
    "psnr": "PSNR",
    "ssim": "SSIM",
    "n_forward_evals": "forward",
    "n_sequential_forward_evals": "sequential",
    "time_total_s": "time [s]",
}
print(f"{'solver':8s}" + "".join(f"{label:>11s}" for label in columns.values()))
for row in table.to_records():
    if row["error"] is not None:
        print(f"{row['solver']:8s} failed: {row['error']}")
        continue
    print(f"{row['solver']:8s}" + "".join(f"{row[c]:11.4g}" for c in columns))

# %%
# The reconstructions, with each one's PSNR in its title.

n_panels = len(table.solvers) + 2  # the truth, each solver, the observation
n_cols = (n_panels + 1) // 2
fig, axes = plt.subplots(2, n_cols, figsize=(2.2 * n_cols, 5.0))
for ax in axes.ravel()[n_panels:]:
    ax.set_axis_off()
plot_comparison(table, problem=problem, x_true=inst.x_true, y=inst.y, axes=axes.ravel()[:n_panels])

# %%
# Accuracy against cost
# ---------------------
# *Sequential* forward evaluations are the rounds a machine with one worker per
# particle would need: what matters when each forward run is a long simulation.
# DiffPIR solves its data step with the problem's linear operator directly and so
# reports no forward calls; it is drawn at 1.

fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
for row in table.to_records():
    if row["error"] is None:
        ax.scatter(max(row["n_sequential_forward_evals"], 1), row["psnr"])
        ax.annotate(row["solver"], (max(row["n_sequential_forward_evals"], 1), row["psnr"]), fontsize=8)
ax.set_xscale("log")
ax.set_xlabel("sequential forward evaluations")
ax.set_ylabel("PSNR [dB]")
plt.show()
