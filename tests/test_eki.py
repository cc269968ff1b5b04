"""EKI: exact posterior means for linear-Gaussian problems, the data-misfit controller, the normalised update."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff._backend import stream_seed
from kalmandiff.testing import gaussian_case
from kalmandiff.testing import posterior_scores as scores


def linear(A):
    return lambda X: X @ A.T


def eki(prior, **kw):
    kw.setdefault("verbose", False)
    return kd.EKISolver(prior, **kw)


@pytest.mark.parametrize("update", ["kalman", "kalman-sqrt"])
@pytest.mark.parametrize("d, m, noise", [(8, 8, 0.3), (16, 8, 0.1), (4, 6, 0.05)])
def test_large_ensemble_reproduces_the_exact_posterior(update, d, m, noise):
    case = gaussian_case(d, m, noise, seed=3)
    s = eki(case["prior"], n_particles=4000, update=update, random_state=0)
    err, prior_err, spread = scores(s.fit(case["y"], linear(case["A"]), noise_std=noise), case)
    assert err < 0.05 and err < 0.1 * prior_err
    assert 0.95 <= spread <= 1.05


def test_data_misfit_controller_steps_add_up_to_one_and_follow_the_formula():
    case = gaussian_case(6, 5, 0.1, seed=1)
    J, seed = 300, 2
    s = eki(case["prior"], n_particles=J, random_state=seed).fit(case["y"], linear(case["A"]), noise_std=0.1)
    dts = [h["dt"] for h in s.history_]
    assert sum(dts) == pytest.approx(1.0, abs=1e-12) and s.n_iter_ == len(dts) > 1
    # First step, recomputed from the same initial ensemble (Iglesias-Yang).
    u0 = case["prior"].sample(J, random_state=np.random.default_rng(stream_seed(seed, "solver")))
    phi = 0.5 * np.sum(((u0 @ case["A"].T - case["y"]) / 0.1) ** 2, axis=1)
    M = case["y"].size
    expected = min(max(M / (2 * phi.mean()), np.sqrt(M / (2 * phi.var()))), 1.0)
    assert dts[0] == pytest.approx(expected, rel=1e-10)


def test_fixed_dt_takes_ceil_one_over_dt_iterations():
    case = gaussian_case(4, 3, 0.2)
    s = eki(case["prior"], n_particles=50, dt=0.3, random_state=0).fit(
        case["y"], linear(case["A"]), noise_std=0.2
    )
    assert s.n_iter_ == 4 and s.stats_["n_forward_evals"] == 4 * 50
    assert [h["dt"] for h in s.history_][-1] == pytest.approx(0.1)


def test_normalized_update_minimises_the_data_misfit():
    """Noiseless, over-determined: continuous-time EKI drives the ensemble to the least-squares point."""
    rng = np.random.default_rng(0)
    d, m = 4, 12
    A = rng.standard_normal((m, d))
    x_true = rng.standard_normal(d)
    y = A @ x_true
    prior = kd.priors.GaussianPrior(np.zeros(d), 1.0)
    s = eki(prior, n_particles=40, update="paper", max_iter=400, random_state=1)
    x_hat = s.fit(y, linear(A), noise_std=0.0).reconstruct()
    misfits = [h["misfit_mean"] for h in s.history_]
    assert misfits[-1] < 1e-4 * misfits[0]
    assert np.linalg.norm(x_hat - x_true) < 1e-2 * np.linalg.norm(x_true)
    assert s.stats_["n_forward_evals"] == 400 * 40 and s.stats_["n_denoiser_evals"] == 0


def test_same_seed_same_ensemble():
    case = gaussian_case(4, 3, 0.2)

    def run():
        solver = eki(case["prior"], n_particles=20, random_state=5)
        return solver.fit(case["y"], linear(case["A"]), noise_std=0.2).particles_

    np.testing.assert_array_equal(run(), run())


def test_numpy_and_array_api_strict_agree():
    import array_api_strict as xps

    case = gaussian_case(4, 3, 0.2, seed=4)
    A_s = xps.asarray(case["A"])
    ref = eki(case["prior"], n_particles=20, random_state=5).fit(case["y"], linear(case["A"]), noise_std=0.2)
    strict = eki(case["prior"], n_particles=20, random_state=5).fit(
        xps.asarray(case["y"]), lambda X: X @ A_s.T, noise_std=0.2
    )
    np.testing.assert_allclose(kd._backend.to_numpy(strict.particles_), ref.particles_, rtol=1e-9, atol=1e-12)


def test_failed_members_are_redrawn_under_resample():
    case = gaussian_case(4, 3, 0.2)
    calls = {"n": 0}

    def forward(X):
        calls["n"] += 1
        out = X @ case["A"].T
        if calls["n"] == 2:
            out[1] = np.inf
        return out

    s = eki(case["prior"], n_particles=20, dt=0.25, on_failure="resample", random_state=0)
    s.fit(case["y"], forward, noise_std=0.2)
    assert s.stats_["n_failed"] == 1 and np.all(np.isfinite(s.particles_))


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(update="eks"), "update"),
        (dict(dt=1.5), "dt"),
        (dict(max_iter=0), "max_iter"),
        (dict(step=-1.0), "step"),
    ],
)
def test_bad_parameters(bad, match):
    case = gaussian_case(4, 3, 0.2)
    with pytest.raises(ValueError, match=match):
        eki(case["prior"], n_particles=10, **bad).fit(case["y"], linear(case["A"]), noise_std=0.2)


def test_old_names_of_the_normalised_update_warn_and_give_the_same_ensemble():
    """EKI's normalised update is update='paper' with guidance_scale, as in EnKG (issue 14, item 5)."""
    case = gaussian_case(4, 3, 0.2)
    new = eki(case["prior"], n_particles=12, update="paper", guidance_scale=1.5, max_iter=15, random_state=0)
    new.fit(case["y"], linear(case["A"]), noise_std=0.2)
    old = eki(case["prior"], n_particles=12, update="normalized", step=1.5, max_iter=15, random_state=0)
    with pytest.warns(DeprecationWarning, match="update='paper'|guidance_scale") as record:
        old.fit(case["y"], linear(case["A"]), noise_std=0.2)
    assert any("guidance_scale" in str(w.message) for w in record)
    np.testing.assert_array_equal(old.particles_, new.particles_)
    assert kd.EKISolver.defaults_for("navier-stokes")["update"] == "paper"
