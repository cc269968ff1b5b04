"""The EDM family (EnKG, DiffPIR, RMP): one declaration of the schedule, the schedule that runs."""

import numpy as np
import pytest
from sklearn.base import clone

import kalmandiff as kd
from kalmandiff.diffusion import edm_sigma_schedule
from kalmandiff.estimators._edm import EDM_PARAMETERS, EDMSolver
from kalmandiff.estimators._params import merged_constraints

FAMILY = (kd.EnKGSolver, kd.DiffPIRSolver, kd.RMPSolver)
SCHEDULE = ("sigma_min", "sigma_max", "rho", "batch_size")

#: each solver's parameter names as they were before the family had a base class (the public contract)
PARAMETERS = {
    kd.EnKGSolver: "batch_size callbacks data_scale device forward_batch_size guidance_scale init "
    "kalman_inflation localization lr_min_ratio n_particles n_steps n_updates nan_tolerance ode_method "
    "on_failure phi_factor phi_max_steps prior random_state rho sigma_max sigma_min tempering "
    "threshold_end threshold_start update verbose",
    kd.DiffPIRSolver: "batch_size callbacks cg_max_iter cg_tol data_step dense_max device "
    "forward_batch_size grad_step lam n_particles n_steps nan_tolerance noise_floor on_failure prior "
    "random_state rho sigma_max sigma_min verbose zeta",
    kd.RMPSolver: "batch_size callbacks device forward_batch_size likelihood_weight mean_step n_inner "
    "n_particles n_steps nan_tolerance noise_floor on_failure prior random_state rho sigma_max "
    "sigma_min step_size trust_radius verbose",
}


def _problem():
    prior = kd.priors.GaussianPrior(np.zeros(4), 9.0 * np.eye(4))  # std 3: EnKG's data_scale is not 1
    forward = kd.problems.LinearProblem(np.eye(4)[:2], (4,), noise_std=0.1)
    y = forward.observe(prior.sample(1, random_state=0)[0], random_state=1)
    return prior, forward, y


def _walked_levels(solver) -> np.ndarray:
    """The noise levels the fitted solver's history records (RMP records the level it steps to)."""
    return np.array([h["sigma"] for h in solver.history_])


def _planned_levels(solver) -> np.ndarray:
    """What :meth:`noise_levels` says the solver walks, aligned with its history."""
    if isinstance(solver, kd.RMPSolver):
        return solver.noise_levels(append_zero=False)[1:]
    scale = solver.resolved_data_scale(solver.update_) if isinstance(solver, kd.EnKGSolver) else 1.0
    return solver.noise_levels(scale)[: solver.n_steps]


def test_the_schedule_is_declared_once_in_the_base():
    for cls in FAMILY:
        assert issubclass(cls, EDMSolver)
        own = set(vars(cls).get("__annotations__", {}))
        assert not own & set(SCHEDULE), f"{cls.__name__} redeclares {own & set(SCHEDULE)}"
        assert not {"sigma_min", "sigma_max", "rho"} & set(vars(cls)["_param_constraints"])


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_parameters_defaults_and_clone_are_the_public_ones(cls):
    prior = kd.priors.GaussianPrior(np.zeros(3), np.eye(3))
    solver = cls(prior, sigma_max=40.0, rho=5.0)
    params = solver.get_params()
    assert sorted(params) == PARAMETERS[cls].split()
    # EDM's schedule (Karras et al. 2022; the EnKG reference code's): 0.002 to 80, rho 7
    defaults = cls(prior).get_params()
    assert [defaults[k] for k in SCHEDULE] == [0.002, 80.0, 7.0, 64]
    twin = clone(solver)
    assert twin.get_params() == params and twin.prior is prior


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_schedule_parameters_are_validated_for_every_member(cls):
    prior, forward, y = _problem()
    for name in ("sigma_min", "sigma_max", "rho"):
        with pytest.raises(ValueError, match=f"{name} must be"):
            cls(prior, **{name: 0.0}).fit(y, forward)


def test_rmp_keeps_its_stricter_step_count():
    """RMP needs two levels for one reverse step: its constraint wins over the family's."""
    assert str(merged_constraints(kd.RMPSolver)["n_steps"][0]) == "an int >= 2"
    assert str(merged_constraints(kd.EnKGSolver)["n_steps"][0]) == "an int >= 1"


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_the_docstring_carries_the_family_block(cls):
    first = EDM_PARAMETERS.splitlines()[0]
    assert first in cls.__doc__ and "%(" not in cls.__doc__


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_noise_levels_are_the_levels_the_loop_walks(cls):
    prior, forward, y = _problem()
    solver = cls(prior, n_steps=6, rho=5.0, sigma_max=50.0, random_state=0, verbose=False)
    solver.fit(y, forward)
    np.testing.assert_array_equal(_walked_levels(solver), _planned_levels(solver))


def test_the_levels_check_catches_a_schedule_that_ignores_a_parameter():
    """The comparison above fails for a noise_levels that drops EnKG's data scale or the solver's rho."""
    prior, forward, y = _problem()
    solver = kd.EnKGSolver(prior, n_steps=6, rho=5.0, random_state=0, verbose=False).fit(y, forward)
    c = solver.resolved_data_scale(solver.update_)
    assert c == pytest.approx(3.0)  # the prior's std: a schedule without the scale differs
    unscaled = edm_sigma_schedule(6, solver.sigma_min, solver.sigma_max, solver.rho)[:6]
    default_rho = edm_sigma_schedule(6, c * solver.sigma_min, c * solver.sigma_max, 7.0)[:6]
    for wrong in (unscaled, default_rho):
        assert not np.allclose(_walked_levels(solver), wrong)
