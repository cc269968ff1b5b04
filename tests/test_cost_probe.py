"""Cost in seconds before compute, runaway Navier-Stokes solves, divergence warnings (issue 20, item 6)."""

import time
import warnings

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators._cost import CostProbe, format_seconds, probe_costs
from kalmandiff.problems import NavierStokes2D
from kalmandiff.problems._base import CallableProblem


def _sleeping_problem(per_call, per_member, rough=None):
    """A forward model whose cost is known: ``per_call + J * per_member`` seconds, times ``rough(X)``."""

    def fn(X):
        factor = 1.0 if rough is None else rough(X)
        time.sleep((per_call + X.shape[0] * per_member) * factor)
        return np.asarray(X).reshape(X.shape[0], -1)[:, :2]

    return CallableProblem(fn, (4,), (2,), noise_std=0.1)


def test_probe_separates_per_call_and_per_member_cost():
    probe = probe_costs(_sleeping_problem(0.04, 0.01), batch=4, random_state=0)
    assert 0.04 * 0.7 < probe.forward_call_s < 0.04 * 1.5  # sleep overshoots on a loaded machine
    assert 0.01 * 0.5 < probe.forward_sample_s < 0.01 * 1.5
    planned = {"n_forward_evals": 1000, "n_sequential_forward_evals": 10}
    typical, _ = probe.seconds(planned)
    assert typical == pytest.approx(10 * 0.04 + 1000 * 0.01, rel=0.5)
    # a probe that ignored the per-call part would charge 1000 calls of one: 50 s, not 10.4 s
    assert typical < 0.3 * 1000 * probe.forward_s


def test_probe_sees_rough_inputs_are_slower():
    # cost grows with the input's largest entry, as an adaptive CFL step does
    rough = probe_costs(_sleeping_problem(0.0, 0.005, rough=lambda X: 1 + np.abs(X).max()), batch=2)
    smooth = probe_costs(_sleeping_problem(0.0, 0.005), batch=2)
    assert rough.forward_rough_factor > 2.0 and smooth.forward_rough_factor < 1.6
    assert "on rough inputs" in rough.describe({"n_forward_evals": 100})


def test_timer_noise_on_a_fast_forward_is_not_called_rough():
    # 30 evaluations of a microsecond map: a 10x "rough" factor is noise of the timer
    noisy = CostProbe(0.0, 1e-6, 1.0, 10.0, 0.0, 0.0, 0, 0)
    assert "rough" not in noisy.describe({"n_forward_evals": 30})
    slow = CostProbe(0.0, 1e-2, 1.0, 10.0, 0.0, 0.0, 0, 0)
    assert "up to 3 s on rough inputs" in slow.describe({"n_forward_evals": 30})


def test_probe_calls_a_slow_simulator_once():
    calls = []

    def slow(X):
        calls.append(X.shape[0])
        time.sleep(0.3)
        return np.zeros((X.shape[0], 2))

    probe = probe_costs(CallableProblem(slow, (4,), (2,), 0.1), batch=2, budget_s=0.1)
    assert calls == [1] and probe.forward_sample_s == pytest.approx(0.3, rel=0.5)


def test_format_seconds():
    assert format_seconds(0.4) == "0.4 s"
    assert format_seconds(90) == "1.5 min"
    assert format_seconds(7200) == "2 h"
    assert format_seconds(320e6 * 0.03) == "111 days"


def test_vjps_and_denoiser_are_charged():
    probe = CostProbe(0.0, 1.0, 1.0, 1.0, 0.0, 2.0, 0, 0)
    typical, rough = probe.seconds({"n_forward_vjps": 1, "n_denoiser_evals": 1, "n_denoiser_vjps": 1})
    assert typical == rough == pytest.approx(3.0 + 2.0 + 6.0)


def test_cost_warning_gives_the_estimated_time():
    inst = kd.problems.make("linear-gaussian", random_state=0)
    solver = kd.EKISolver(inst.prior, n_particles=10, max_iter=3, random_state=0, verbose=False)
    with kd.config_context(max_forward_evals=5):
        with pytest.warns(kd.CostWarning, match=r"about .* on this machine \(timed probe\)"):
            solver.fit(inst.y, inst.problem)
    assert solver.stats_["n_forward_probe_evals"] > 0  # the probe is counted, apart from the run's
    assert solver.stats_["n_forward_evals"] <= 30


def test_probe_leaves_the_result_unchanged():
    inst = kd.problems.make("linear-gaussian", random_state=0)
    quiet = kd.EKISolver(inst.prior, n_particles=10, max_iter=3, random_state=0, verbose=False)
    quiet.fit(inst.y, inst.problem)
    probed = kd.EKISolver(inst.prior, n_particles=10, max_iter=3, random_state=0, verbose=False)
    with kd.config_context(max_forward_evals=5), warnings.catch_warnings():
        warnings.simplefilter("ignore", kd.CostWarning)
        probed.fit(inst.y, inst.problem)
    np.testing.assert_array_equal(quiet.particles_, probed.particles_)


def test_progress_label_shows_the_estimate():
    inst = kd.problems.make("linear-gaussian", random_state=0)
    solver = kd.EnKGSolver(inst.prior, n_particles=8, n_steps=5)
    planned = solver.expected_evaluations()
    probe = CostProbe(0.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0, 0)
    label = solver._progress_label(planned, probe)
    assert f"~{format_seconds(2.0 * planned['n_forward_evals'])}" in label


# --------------------------------------------------------------------------
# Navier-Stokes: a runaway adaptive solve is a member failure
# --------------------------------------------------------------------------

#: a prior draw this many times larger moves faster than the "auto" cap's speed (100)
ROUGH = 80.0


def _ns16():
    return kd.problems.make("navier-stokes", random_state=0, resolution=16)


def _rough_ensemble(n=4, factor=ROUGH):
    """Prior draws at R = 16 whose first member is ``factor`` times larger (above the cap's speed)."""
    inst = _ns16()
    X = np.asarray(inst.prior.sample(n, random_state=3))
    X[0] *= factor
    return inst, X


def test_rough_member_hits_the_step_cap_and_fails_alone():
    inst, X = _rough_ensemble()
    problem = inst.problem
    assert problem.step_cap() == 3200
    out = problem(X)
    assert np.all(np.isnan(out[0])) and np.all(np.isfinite(out[1:]))
    assert "step cap" in problem.last_failures[0] and set(problem.last_failures) == {0}
    # without the cap (the old default) the member would have finished: it is runaway, not blown up
    uncapped = NavierStokes2D(resolution=16, max_steps=20000)
    assert np.all(np.isfinite(uncapped(X[:1])))


class _OneRoughMember(kd.priors.GaussianRandomFieldPrior):
    """The GRF prior, except that the first draw of every sample() is ``ROUGH`` times larger."""

    def sample(self, n, random_state=None, like=None):
        X = np.array(super().sample(n, random_state=random_state, like=like))
        X[0] *= ROUGH
        return X


def _rough_prior(inst):
    p = inst.prior
    return _OneRoughMember(shape=p.event_shape, alpha=p.alpha, tau=p.tau, scale=p.scale, length=p.length)


def test_step_cap_failure_goes_through_the_failure_policy():
    inst = _ns16()
    prior = _rough_prior(inst)
    solver = kd.EKISolver(prior, n_particles=6, max_iter=2, random_state=0, verbose=False)
    with pytest.raises(kd.MemberFailureError, match="member 0: step cap") as err:
        solver.fit(inst.y, inst.problem)
    assert err.value.members == [0]
    solver.set_params(on_failure="resample").fit(inst.y, inst.problem)
    assert solver.stats_["n_failed"] >= 1 and np.all(np.isfinite(solver.particles_))


def test_failure_reasons_are_indexed_across_forward_chunks():
    inst = _ns16()
    prior = _rough_prior(inst)
    solver = kd.EKISolver(
        prior, n_particles=6, max_iter=2, forward_batch_size=4, random_state=0, verbose=False
    )
    with pytest.raises(kd.MemberFailureError, match="member 0: step cap"):
        solver.fit(inst.y, inst.problem)


# --------------------------------------------------------------------------
# a guided solver that diverges says so
# --------------------------------------------------------------------------


def _dps(**kwargs):
    inst = kd.problems.make("linear-gaussian", random_state=0)
    solver = kd.DPSSolver(inst.prior, n_particles=4, n_steps=50, random_state=0, verbose=False, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        solver.fit(inst.y, inst.problem)
    return solver, [w for w in caught if issubclass(w.category, kd.DivergenceWarning)]


def test_diverging_guided_solver_warns():
    solver, caught = _dps(guidance_scale=1e3)  # a step 1000x too large: the misfit explodes
    assert len(caught) == 1 and "misfit grew" in str(caught[0].message)
    misfit = [r["misfit_mean"] for r in solver.history_ if r["misfit_mean"] is not None]
    assert misfit[-1] > 10 * misfit[0]


def test_converging_guided_solver_does_not_warn():
    solver, caught = _dps()
    assert caught == []


def test_non_finite_particles_warn():
    solver, caught = _dps(guidance_scale=1e200)
    assert len(caught) == 1
    assert "not finite" in str(caught[0].message) or "misfit grew" in str(caught[0].message)
