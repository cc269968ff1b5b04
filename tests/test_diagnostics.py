"""kd.diagnostics against ground truth: closed-form CRPS, exact posterior samplers, wrong-on-purpose samplers."""

import concurrent.futures as cf
import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm

import kalmandiff as kd
from kalmandiff.diagnostics import (
    central_interval,
    crps,
    energy_score,
    interval_coverage,
    promises_calibration,
    sbc,
    sbc_plan,
    spread_skill,
)
from kalmandiff.testing import (
    ExactPosteriorSampler,
    gaussian_case,
    posterior_interval_mass,
    solver_checks,
    solver_factory,
)

CASE = gaussian_case(d=4, m=3, noise=0.3, seed=3)


def _gaussian_crps(mu, s, z):
    """Gneiting & Raftery (2007): CRPS of N(mu, s^2) at z."""
    w = (z - mu) / s
    return s * (w * (2 * norm.cdf(w) - 1) + 2 * norm.pdf(w) - 1 / math.sqrt(math.pi))


def _exact(spread_factor=1.0, J=31):
    return lambda prior: ExactPosteriorSampler(prior, n_particles=J, spread_factor=spread_factor)


# -- single-run scores -------------------------------------------------------


def test_fair_crps_of_a_large_gaussian_ensemble_matches_the_closed_form():
    mu, s = 0.7, 1.6
    z = np.array([-3.0, -0.4, 0.7, 1.5, 5.0])
    X = mu + s * np.random.default_rng(1).standard_normal((40_000, z.size))
    expected = _gaussian_crps(mu, s, z)
    np.testing.assert_allclose(crps(X, z), expected, atol=0.015 * s)


def test_fair_crps_is_unbiased_at_small_J_where_the_empirical_one_is_not():
    # 5 members, 20,000 independent replicates: the fair estimator's mean is the closed form;
    # the empirical distribution's CRPS exceeds it by E|X - X'| / (2 J) = s / (J sqrt(pi)).
    mu, s, J, n = 0.0, 1.0, 5, 20_000
    rng = np.random.default_rng(2)
    X, z = rng.standard_normal((J, n)), rng.standard_normal(n)
    target = np.mean(_gaussian_crps(mu, s, z))
    se = 1.2 / math.sqrt(n)
    assert abs(np.mean(crps(X, z)) - target) < 4 * se
    assert np.mean(crps(X, z, fair=False)) - target > s / (J * math.sqrt(math.pi)) - 4 * se


def test_scores_match_scoringrules():
    sr = pytest.importorskip("scoringrules")
    rng = np.random.default_rng(3)
    X, z = rng.standard_normal((20, 6)) * 2 + 1, rng.standard_normal(6)
    for fair, name in [(True, "fair"), (False, "nrg")]:
        np.testing.assert_allclose(crps(X, z, fair=fair), sr.crps_ensemble(z, X, m_axis=0, estimator=name))
        es = getattr(sr, "es_ensemble", None) or sr.energy_score
        assert energy_score(X, z, fair=fair) == pytest.approx(float(es(z, X, estimator=name)))


def test_energy_score_of_one_coordinate_is_its_crps():
    rng = np.random.default_rng(4)
    X, z = rng.standard_normal((30, 1)), rng.standard_normal(1)
    assert energy_score(X, z) == pytest.approx(float(crps(X, z)[0]), rel=1e-9)


def test_exchangeable_truth_is_covered_at_the_nominal_rate_even_for_small_J():
    # Members and truth i.i.d.: every coordinate is an independent trial, so the binomial error holds.
    J, n = 9, 40_000
    rng = np.random.default_rng(5)
    X, z = rng.standard_normal((J, n)), rng.standard_normal(n)
    for level in (0.6, 0.8):  # bounds on members 2 and 8, 1 and 9: coverage exactly (8 - 2)/10, 8/10
        se = math.sqrt(level * (1 - level) / n)
        assert abs(interval_coverage(X, z, level) - level) < 4 * se
    # between members the linear interpolation is close to, not exactly, the nominal rate
    assert abs(interval_coverage(X, z, 0.5) - 0.5) < 0.02
    # NumPy's default quantile positions under-cover by about (J - 1)/(J + 1): the check can tell.
    lo, hi = np.quantile(X, [0.1, 0.9], axis=0)
    assert np.mean((z >= lo) & (z <= hi)) < 0.7  # about 0.8 (J - 1)/(J + 1) = 0.64


def test_central_interval_brackets_the_ensemble():
    X = np.arange(10.0).reshape(10, 1) * np.ones((1, 3))
    lo, hi = central_interval(X, 0.5)
    assert np.all(lo <= hi) and np.all(lo >= 0) and np.all(hi <= 9)
    lo99, hi99 = central_interval(X, 0.99)
    np.testing.assert_array_equal(lo99, 0.0)  # beyond (J - 1)/(J + 1) the range is the interval
    np.testing.assert_array_equal(hi99, 9.0)


def test_spread_skill_is_one_when_calibrated_and_half_when_spread_is_halved():
    rng = np.random.default_rng(6)
    X, z = rng.standard_normal((16, 20_000)), rng.standard_normal(20_000)
    assert spread_skill(X, z) == pytest.approx(1.0, abs=0.03)
    assert spread_skill(0.5 * X, z) == pytest.approx(math.sqrt(0.25 * 17 / 16 / (1 + 0.25 / 16)), abs=0.03)


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_scores_are_array_api_generic(backend):
    rng = np.random.default_rng(7)
    X, z = rng.standard_normal((12, 2, 3)), rng.standard_normal((2, 3))
    if backend == "torch":
        torch = pytest.importorskip("torch")
        Xb, zb = torch.from_numpy(X), torch.from_numpy(z)
    else:
        xp = pytest.importorskip("array_api_strict")
        Xb, zb = xp.asarray(X), xp.asarray(z)
    assert interval_coverage(Xb, zb, 0.5) == interval_coverage(X, z, 0.5)
    np.testing.assert_allclose(np.asarray(kd._backend.to_numpy(crps(Xb, zb))), crps(X, z))
    assert energy_score(Xb, zb) == pytest.approx(energy_score(X, z))
    assert spread_skill(Xb, zb) == pytest.approx(spread_skill(X, z))
    assert interval_coverage(Xb, z, 0.9) == interval_coverage(X, z, 0.9)  # a NumPy truth is moved over


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: interval_coverage(np.zeros((1, 3)), np.zeros(3)), "at least 2 members"),
        (lambda: interval_coverage(np.zeros((4, 3)), np.zeros(4)), "x_true has shape"),
        (lambda: interval_coverage(np.zeros((4, 3)), np.zeros(3), level=1.5), "strictly between 0 and 1"),
        (lambda: crps(np.full((4, 3), np.nan), np.zeros(3)), "NaN"),
        (lambda: energy_score(np.zeros(4), 0.0), r"shape \(J, \*x_shape\)"),
    ],
)
def test_bad_input_is_refused_clearly(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- simulation-based calibration --------------------------------------------


def test_exact_posterior_samples_pass_sbc():
    res = sbc(_exact(), CASE.prior, CASE.forward, n_trials=300, random_state=0, verbose=False)
    for level in (0.5, 0.9):
        assert abs(res.coverage[level] - level) < 3 * res.coverage_se[level]
    assert res.p_value > 0.01
    assert res.calibrated()
    assert res.ranks.shape == (300, len(res.summaries)) and res.ranks.min() >= 0 and res.ranks.max() <= 31
    assert 0.85 < np.median(res.spread_skill) < 1.3


def test_halved_spread_is_flagged():
    res = sbc(_exact(0.5), CASE.prior, CASE.forward, n_trials=300, random_state=0, verbose=False)
    assert res.coverage[0.9] < 0.75 and res.coverage[0.5] < 0.35
    assert res.p_value < 1e-6
    assert not res.calibrated()
    # an over-confident ensemble puts the truth in the extreme ranks: the U shape
    hist = res.rank_histogram(4).sum(axis=0)
    assert hist[0] + hist[-1] > 1.5 * (hist[1] + hist[2])


def test_enkg_paper_update_is_flagged():
    make = solver_factory("enkg", n_particles=32, n_steps=20, update="paper")
    res = sbc(make, CASE.prior, CASE.forward, n_trials=40, random_state=0, verbose=False)
    assert not res.calibrated()
    assert res.coverage[0.9] < 0.75


@pytest.mark.slow
def test_enkg_kalman_sqrt_passes_sbc():
    make = solver_factory("enkg", n_particles=64, n_steps=40, update="kalman-sqrt")
    res = sbc(make, CASE.prior, CASE.forward, n_trials=100, random_state=0, verbose=False)
    assert res.p_value > 0.001
    assert abs(res.coverage[0.9] - 0.9) < 0.05


def test_sbc_is_reproducible_and_its_streams_are_independent():
    a = sbc(_exact(), CASE.prior, CASE.forward, n_trials=20, random_state=3, verbose=False)
    b = sbc(_exact(), CASE.prior, CASE.forward, n_trials=20, random_state=3, verbose=False)
    c = sbc(_exact(), CASE.prior, CASE.forward, n_trials=20, random_state=4, verbose=False)
    np.testing.assert_array_equal(a.ranks, b.ranks)
    assert not np.array_equal(a.ranks, c.ranks)
    assert len(np.unique(a.seeds)) == a.seeds.size  # truth, noise, solver and ties: all distinct streams


def test_sbc_with_a_thread_pool_matches_the_serial_run():
    serial = sbc(_exact(), CASE.prior, CASE.forward, n_trials=12, random_state=1, verbose=False)
    with cf.ThreadPoolExecutor(2) as pool:
        pooled = sbc(
            _exact(), CASE.prior, CASE.forward, n_trials=12, random_state=1, executor=pool, verbose=False
        )
    np.testing.assert_array_equal(serial.ranks, pooled.ranks)
    assert serial.coverage == pooled.coverage


def test_sbc_with_a_plain_callable_forward():
    A, make = CASE.A, solver_factory("eki", n_particles=16)
    res = sbc(make, CASE.prior, lambda X: X @ A.T, noise_std=CASE.noise_std, n_trials=6, random_state=0)
    ref = sbc(make, CASE.prior, CASE.forward, n_trials=6, random_state=0)
    np.testing.assert_array_equal(res.ranks, ref.ranks)  # same noise stream whichever way G is given


def test_sbc_states_its_cost_before_running():
    make = solver_factory("enkg", n_particles=16, n_steps=10)
    per_fit = make(CASE.prior).expected_evaluations()
    plan = sbc_plan(make, CASE.prior, n_trials=7)
    assert plan["n_forward_evals"] == 7 * per_fit["n_forward_evals"]
    assert plan["n_denoiser_evals"] == 7 * per_fit["n_denoiser_evals"]
    calls = []

    def never(X):
        calls.append(1)
        return X @ CASE.A.T

    with kd.config_context(max_forward_evals=10), warnings.catch_warnings():
        warnings.simplefilter("error", kd.CostWarning)  # stop at the warning: nothing may be evaluated yet
        with pytest.raises(kd.CostWarning, match="SBC: 7 fits of EnKG"):
            sbc(make, CASE.prior, never, noise_std=0.3, n_trials=7, random_state=0)
    assert calls == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_trials": 1}, "n_trials must be an integer >= 2"),
        ({"levels": (0.0,)}, "strictly between 0 and 1"),
        ({"noise_std": 0.1}, "only for a plain callable"),
        ({"coordinates": [99]}, "index the flattened unknown"),
        ({"random_state": "zero"}, "random_state must be"),
    ],
)
def test_sbc_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sbc(_exact(), CASE.prior, CASE.forward, **{"n_trials": 4, **kwargs})


def test_sbc_refuses_noiseless_data_and_a_callable_without_noise():
    with pytest.raises(ValueError, match="needs noise_std"):
        sbc(_exact(), CASE.prior, lambda X: X @ CASE.A.T, n_trials=4)
    with pytest.raises(ValueError, match="noisy data"):
        sbc(_exact(), CASE.prior, lambda X: X @ CASE.A.T, noise_std=0.0, n_trials=4)


def test_sbc_result_exports_to_netcdf_and_npz(tmp_path):
    xr = pytest.importorskip("xarray")
    res = sbc(_exact(), CASE.prior, CASE.forward, n_trials=10, random_state=0, verbose=False)
    path = kd.export_results(res, tmp_path / "sbc.nc")
    with xr.open_dataset(path) as ds:
        np.testing.assert_array_equal(ds["ranks"].values, res.ranks)
        assert list(ds["summary"].values) == res.summaries
        assert ds.attrs["n_particles"] == 31 and ds.attrs["p_value"] == pytest.approx(res.p_value)
    npz = np.load(kd.export_results(res, tmp_path / "sbc.npz"))
    np.testing.assert_array_equal(npz["ranks"], res.ranks)
    for name in ("sbc.nc", "sbc.npz"):
        back = kd.diagnostics.load_sbc(tmp_path / name)
        np.testing.assert_array_equal(back.ranks, res.ranks)
        assert back.coverage == res.coverage and back.summaries == res.summaries
        assert back.p_value == pytest.approx(res.p_value) and back.n_particles == res.n_particles


def test_sbc_plot_draws_histograms_and_coverage():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    res = sbc(_exact(), CASE.prior, CASE.forward, n_trials=20, random_state=0, verbose=False)
    fig = res.plot()
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "nominal level"
    assert "coverage" in str(res) and "p =" in str(res)


# -- what solvers promise, and the testing kit's check --------------------------


def test_promises_calibration_follows_the_declaration():
    p = CASE.prior
    assert promises_calibration(kd.EnKGSolver(p, update="kalman-sqrt"))
    assert not promises_calibration(kd.EnKGSolver(p, update="paper"))
    assert promises_calibration(kd.EKISolver(p)) and not promises_calibration(kd.EKISolver(p, update="paper"))
    assert not promises_calibration(kd.DPSSolver(p))
    assert promises_calibration(ExactPosteriorSampler(p)) and not promises_calibration(
        ExactPosteriorSampler(p, spread_factor=0.5)
    )


def _run_calibration_check(factory):
    ((name, run),) = solver_checks(factory, select=["check_calibrated_intervals"])
    run()


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(solver_factory("eki"), id="EKI"),
        pytest.param(solver_factory("enkg", update="kalman-sqrt"), id="EnKG-kalman-sqrt"),
        pytest.param(_exact(), id="exact"),
    ],
)
def test_calibration_check_passes_calibrated_solvers(factory):
    _run_calibration_check(factory)


class _OverconfidentButPromising(ExactPosteriorSampler):
    calibrated_when = True  # the promise a wrong solver could make


def test_calibration_check_fails_a_solver_that_breaks_its_promise():
    with pytest.raises(AssertionError, match="promises a calibrated ensemble"):
        _run_calibration_check(lambda prior: _OverconfidentButPromising(prior, spread_factor=0.5))


def test_calibration_check_skips_solvers_without_the_promise():
    from kalmandiff.testing import SkipCheck

    with pytest.raises(SkipCheck, match="does not promise"):
        _run_calibration_check(solver_factory("enkg", update="paper"))


def test_posterior_interval_mass_of_exact_draws_is_the_level():
    case = gaussian_case(d=8, m=4, noise=0.3, seed=1)
    X = ExactPosteriorSampler(case.prior, 4000, random_state=0).fit(case.y, case.forward).particles_
    for level in (0.5, 0.9):
        assert posterior_interval_mass(X, case.mean, case.std, level) == pytest.approx(level, abs=0.015)
