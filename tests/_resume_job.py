"""A small EnKG run used by the kill-and-resume test, run as a subprocess or imported."""

import sys
import time

import numpy as np

import kalmandiff as kd

A = np.random.default_rng(0).standard_normal((3, 5))
PRIOR = kd.priors.GaussianPrior(np.zeros(5), 1.0)
Y = np.array([0.5, -1.0, 0.2])


def slow_forward(X):
    time.sleep(0.05)
    return X @ A.T


def make_solver():
    return kd.EnKGSolver(PRIOR, n_particles=16, n_steps=40, n_updates=1, random_state=3, verbose=False)


if __name__ == "__main__":
    make_solver().fit(Y, slow_forward, noise_std=0.1, checkpoint=sys.argv[1], checkpoint_every=1)
