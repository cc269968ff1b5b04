"""Errors that point at the right thing: a wrong-shape y, a prior that does not fit a plain callable,
and a one-particle ensemble's zero standard deviation."""

import warnings

import numpy as np
import pytest

import kalmandiff as kd

A = np.ones((3, 4))
PRIOR = kd.priors.GaussianPrior(np.zeros(4), 1.0)


def forward(X):
    return X @ A.T


@pytest.mark.parametrize("solver", [kd.EKISolver, kd.EnKGSolver, kd.SCGSolver])
def test_a_wrong_shape_y_with_a_plain_callable_blames_y(solver):
    with pytest.raises(
        ValueError, match=r"^y has shape \(7,\), but the forward callable returns shape \(3,\)"
    ):
        solver(PRIOR, verbose=False).fit(np.zeros(7), forward, noise_std=0.1)


def test_a_forward_that_returns_no_particle_axis_is_still_blamed():
    with pytest.raises(ValueError, match=r"the forward callable returned shape \(3,\) for one particle"):
        kd.EKISolver(PRIOR, verbose=False).fit(np.zeros(3), lambda X: (X @ A.T)[0], noise_std=0.1)


def test_a_prior_that_does_not_fit_a_plain_callable_is_named_with_both_shapes():
    prior = kd.priors.GaussianPrior(np.zeros(5), 1.0)
    with pytest.raises(
        ValueError, match=r"event_shape \(5,\) of the prior GaussianPrior.*y has shape \(3,\)"
    ) as info:
        kd.EKISolver(prior, verbose=False).fit(np.zeros(3), forward, noise_std=0.1)
    assert "Does the prior fit the forward model?" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)  # NumPy's own message is kept as the cause


def test_a_forward_that_fails_for_another_reason_is_not_blamed_on_the_prior():
    def broken(X):
        raise RuntimeError("license server unreachable")

    with pytest.raises(RuntimeError, match="license server"):
        kd.EKISolver(PRIOR, verbose=False).fit(np.zeros(3), broken, noise_std=0.1)


def test_one_particle_warns_that_its_std_of_zero_measures_nothing():
    solver = kd.SCGSolver(PRIOR, n_steps=4, n_queries=8, random_state=0, verbose=False)
    assert solver.n_particles == 1  # SCG's default
    solver.fit(np.zeros(3), forward, noise_std=0.1)
    with pytest.warns(UserWarning, match="one particle.*exactly 0.*n_particles >= 2"):
        _, std = solver.reconstruct(return_std=True)
    assert np.all(std == 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solver.reconstruct()  # the point estimate alone says nothing
        many = kd.SCGSolver(PRIOR, n_particles=4, n_steps=4, n_queries=8, random_state=0, verbose=False)
        many.fit(np.zeros(3), forward, noise_std=0.1).reconstruct(return_std=True)
