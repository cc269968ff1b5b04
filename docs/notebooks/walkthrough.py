# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # kalmandiff in a notebook
#
# A walk through one inverse problem: recover the initial vorticity of a 2-D Navier-Stokes flow
# from a noisy, subsampled snapshot at a later time. The forward model is a PDE solver that
# kalmandiff only *calls*; the prior is a Gaussian random field with an exact denoiser, so
# everything runs in seconds on a laptop. Open it with `jupytext --to notebook walkthrough.py`.

# %%
import matplotlib

matplotlib.use("Agg")  # inline in Jupyter; a file backend when run as a script
import matplotlib.pyplot as plt
import numpy as np

import kalmandiff as kd

inst = kd.problems.make("navier-stokes", size="small", random_state=0)
problem, prior = inst.problem, inst.prior
print(problem)
print("unknown", problem.x_shape, "data", problem.y_shape, "noise std", problem.noise_std)

# %% [markdown]
# ## EnKG as in the paper, and its calibrated variant
# `update="paper"` reproduces the published algorithm (a MAP-like estimate whose ensemble
# collapses); `update="kalman"` tempers a Kalman update over the correction window so that the
# ensemble spread carries uncertainty.

# %%
common = dict(n_particles=32, n_steps=16, n_updates=1, random_state=0, verbose=False)
paper = kd.EnKGSolver(prior, update="paper", **common).fit(inst.y, problem)
kalman = kd.EnKGSolver(prior, update="kalman", **common).fit(inst.y, problem)
eki = kd.EKISolver(prior, n_particles=32, random_state=0, verbose=False).fit(inst.y, problem)
for name, s in [("EnKG paper", paper), ("EnKG kalman", kalman), ("EKI", eki)]:
    err = problem.metrics(s.reconstruct(), inst.x_true)["relative_l2"]
    print(
        f"{name:12s} relative L2 {err:.3f}   forward evals {s.stats_['n_forward_evals']:6d}   "
        f"time {s.stats_['time_total_s']:.1f} s (forward {s.stats_['time_forward_s']:.1f} s)"
    )

# %% [markdown]
# ## Looking at the results

# %%
kd.plotting.plot_uncertainty(kalman, x_true=inst.x_true)
plt.savefig("walkthrough_uncertainty.png", dpi=80)
kd.plotting.plot_history(paper, label="paper")
plt.savefig("walkthrough_history.png", dpi=80)

# %% [markdown]
# ## Stopping early with a callback
# A callback receives one record per step (step, sigma, misfit, spread, counts) and may return
# True to stop.


# %%
def stop_when_collapsed(record):
    return record["spread"] < 1.0


s = kd.EnKGSolver(prior, update="paper", callbacks=[stop_when_collapsed], **common).fit(inst.y, problem)
print("stopped early:", s.stopped_early_, "after", len(s.history_), "of", common["n_steps"], "steps")

# %% [markdown]
# ## Running the forward model yourself: ask and tell

# %%
solver = kd.EnKGSolver(prior, update="paper", **common).start(inst.y, problem)
while (X := solver.ask()) is not None:
    solver.tell(problem(X))  # here: any scheduler, files, a cluster...
assert np.array_equal(solver.particles_, paper.particles_)
print("ask/tell reproduces fit:", True)

# %% [markdown]
# ## Saving and exporting

# %%
paper.save("walkthrough_solver.pkl")
again = kd.load("walkthrough_solver.pkl")
path = kd.export_results(again, "walkthrough_results.nc", y=inst.y, x_true=inst.x_true)
print("exported to", path)
