"""Checks of benchmarks/studies/ns_gradient_reference.py on tiny Navier-Stokes instances."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kalmandiff as kd  # noqa: E402
from benchmarks.studies import ns_gradient_reference as ref  # noqa: E402

# 16 x 16 grid, short horizon, fixed time step: a smooth objective (no step-count jumps) in milliseconds.
TINY = {"resolution": 16, "t_final": 0.2, "dt": 0.05}


def tiny(noise=0.1, seed=1):
    inst, sigma = ref.make_instance(seed, noise, **TINY)
    return inst, sigma, ref.Likelihood(ref.float64_twin(inst.problem), inst.y, sigma)


def test_make_instance_passes_noise_std():
    inst, sigma = ref.make_instance(3, 2.0, **TINY)
    assert float(inst.problem.noise_std) == 2.0 and sigma == 2.0
    clean, sigma0 = ref.make_instance(3, 0.0, **TINY)
    assert float(clean.problem.noise_std) == 0.0 and sigma0 == ref.NOISELESS_SIGMA
    # noiseless data are the forward model of the truth; noisy ones differ by about noise_std
    G = clean.problem(clean.x_true[None])[0]
    np.testing.assert_allclose(clean.y, G, atol=1e-6)
    assert 1.5 < np.std(np.asarray(inst.y) - G) < 2.5


def test_float64_twin_matches_the_instance_forward():
    inst, _, lik = tiny()
    x = inst.x_true[None]
    a = np.asarray(inst.problem(x.astype(np.float32)), dtype=float)
    b = np.asarray(lik.problem(x), dtype=float)
    assert lik.problem.dtype == "float64" and inst.problem.dtype == "float32"
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * np.abs(a).max())


def test_truth_chi2_is_about_one_and_prior_mean_is_not():
    _, _, lik = tiny(noise=0.1)
    inst, _, _ = tiny(noise=0.1)
    assert 0.7 < lik.chi2(inst.x_true) < 1.4
    assert lik.chi2(np.zeros_like(inst.x_true)) > 100.0


def test_lbfgs_memo_solves_a_quadratic_without_repeated_evaluations():
    rng = np.random.default_rng(0)
    A = torch.as_tensor(rng.standard_normal((20, 20)))
    H = A @ A.T + 20 * torch.eye(20)
    b = torch.as_tensor(rng.standard_normal(20))
    points = []

    def fn(v):
        points.append(v.clone())
        return 0.5 * v @ H @ v - b @ v, H @ v - b

    v, history, reason = ref.lbfgs(fn, torch.zeros(20, dtype=torch.float64), 200, lambda: len(points))
    assert reason == "converged"
    np.testing.assert_allclose(v.numpy(), torch.linalg.solve(H, b).numpy(), atol=1e-6)
    # every evaluation was at a new point: the memo answered L-BFGS's re-evaluations
    assert all(not torch.equal(p, q) for i, p in enumerate(points) for q in points[:i])


def test_least_squares_fits_the_data_far_better_than_the_prior_mean():
    inst, _, lik = tiny(noise=0.1)
    chi2_zero = lik.chi2(np.zeros_like(inst.x_true))
    rows, x_conv, x_early = ref.least_squares(lik, inst.x_true, max_evals=25)
    early, conv = rows
    assert early["estimator"] == "ls-discrepancy" and conv["estimator"] == "ls-converged"
    assert early["stop"] == "chi2<=1" and early["chi2"] <= 1.0
    assert conv["chi2"] <= early["chi2"] < chi2_zero / 100
    assert early["n_forward"] <= conv["n_forward"] <= 25 + 25  # one line search may overrun the cap
    assert conv["n_forward_vjp"] == conv["n_forward"]


def test_whitened_problem_is_the_forward_model_of_the_whitened_field():
    inst, _, lik = tiny(noise=0.5)
    sqrt_c = ref.grf_sqrt_operator(inst.prior)
    white = ref.whitened_problem(lik, sqrt_c)
    z = torch.as_tensor(np.random.default_rng(1).standard_normal((2, *lik.x_shape)))
    with torch.no_grad():
        expected = lik.problem.forward(sqrt_c(z))
        got = white.forward(z)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-12)


def test_grf_map_is_the_exact_posterior_mean_for_a_linear_map():
    # The GRF prior is Gaussian: under a linear map its MAP is the closed-form posterior mean.
    prior = kd.priors.GaussianRandomFieldPrior(shape=(1, 8, 8), alpha=2.5, tau=3.0)
    d, m, noise = 64, 20, 0.05
    A = np.random.default_rng(2).standard_normal((m, d)) / np.sqrt(d)
    problem = kd.problems.LinearProblem(A, (1, 8, 8), noise)
    x_true = np.asarray(prior.sample(1, random_state=3))[0]
    y = problem.observe(x_true, random_state=4)
    eye = np.eye(d)
    D1 = np.stack([np.asarray(prior.denoise(e.reshape(1, 1, 8, 8), 1.0)).ravel() for e in eye])
    C = D1 @ np.linalg.inv(eye - D1)  # D(x, 1) = C (C + I)^-1 x
    post = C @ A.T @ np.linalg.solve(A @ C @ A.T + noise**2 * np.eye(m), np.asarray(y))
    row, x = ref.whitened_map(
        "grf-map", ref.Likelihood(problem, y, noise), ref.grf_sqrt_operator(prior), x_true, 200
    )
    # the study stops where a step lowers the objective by under 1e-9 of it: x to about 1e-5
    assert np.linalg.norm(x.ravel() - post) <= 1e-4 * np.linalg.norm(post)
    assert row["stop"] in ("converged", "max_evals") and row["n_forward"] == row["n_forward_vjp"]


def test_grf_sqrt_operator_has_the_prior_covariance():
    inst, _, _ = tiny()
    prior = inst.prior
    sqrt_c = ref.grf_sqrt_operator(prior)
    Z = torch.as_tensor(np.random.default_rng(2).standard_normal((4000, *prior.event_shape)))
    X = sqrt_c(Z).numpy()
    # pointwise variance of C^(1/2) z is the prior's, and the map is linear and symmetric
    assert np.std(X) == pytest.approx(prior.pointwise_std, rel=0.03)
    u, v = Z[0], Z[1]
    assert float(torch.sum(sqrt_c(u) * v)) == pytest.approx(float(torch.sum(u * sqrt_c(v))), rel=1e-10)


def test_grf_map_beats_the_prior_mean_and_keeps_the_misfit_near_the_noise():
    inst, _, lik = tiny(noise=0.5)
    row = ref.grf_map(lik, inst.prior, inst.x_true, max_evals=40)
    assert row["rel_l2"] < 0.9
    assert row["chi2"] < 0.2 * lik.chi2(np.zeros_like(inst.x_true))


def test_script_writes_json_and_table_with_the_promised_keys(tmp_path, capsys):
    out = tmp_path / "ref"
    argv = ["--seeds", "1", "2", "--resolution", "16", "--t-final", "0.2", "--no-network"]
    argv += ["--ls-max-evals", "6", "--map-max-evals", "6", "--out", str(out)]
    result = ref.main(argv)
    data = json.loads((out / "results.json").read_text())
    assert data["seeds"] == [1, 2] and data["problem"]["noise_std"] == 1.0
    names = {r["estimator"] for r in data["records"]}
    assert {"truth", "prior-mean", "ls-discrepancy", "ls-converged", "grf-map"} <= names
    for r in data["records"]:
        assert set(ref.RECORD_KEYS) <= set(r), r["estimator"]
    prior_mean = [r for r in data["records"] if r["estimator"] == "prior-mean"]
    assert all(r["rel_l2"] == pytest.approx(1.0) for r in prior_mean)
    table = (out / "summary.md").read_text()
    assert "| grf-map |" in table and "seed 2: rel L2 / chi2" in table
    assert "| ls-discrepancy |" in capsys.readouterr().out
    assert len(result["records"]) == len(data["records"])


def test_network_estimators_run_and_record_their_costs(tmp_path):
    """DPS and the latent MAP on the 32 x 32 instance, cut to a handful of steps (a few seconds)."""
    argv = ["--seeds", "1", "--t-final", "0.1", "--ls-max-evals", "3", "--map-max-evals", "3"]
    argv += ["--latent-steps", "2", "--latent-max-evals", "3", "--dps-steps", "3", "--dps-zetas", "1", "3"]
    argv += ["--out", str(tmp_path)]
    data = ref.main(argv)
    rows = {r["estimator"]: r for r in data["records"]}
    assert {"latent-map", "latent-map[seed check]", "dps(zeta=1)", "dps-best", "dps-chi2"} <= set(rows)
    lat = rows["latent-map"]
    assert lat["n_denoiser"] == 3 * lat["n_forward"] and lat["solver_seed"] == 1001
    assert lat["start_scale"] == 0.1 and lat["stop"] in ("converged", "max_evals", "non-finite")
    assert rows["latent-map[seed check]"]["solver_seed"] == 2001
    dps = rows["dps(zeta=1)"]
    assert dps["solver_seed"] == 1001 and dps["n_forward"] == 3 * 2 and dps["n_denoiser_vjp"] == 3 * 2
    checks = [r for r in data["records"] if r["estimator"].endswith("[seed check]") and "zeta" in r]
    assert len(checks) == 1 and checks[0]["solver_seed"] == 2001
    assert np.isfinite(rows["dps-best"]["rel_l2"])


def test_relative_l2_is_the_package_metric():
    inst, _, lik = tiny()
    row = ref._record("x", 2 * inst.x_true, lik, inst.x_true, 0.0)
    assert row["rel_l2"] == pytest.approx(kd.metrics.relative_l2(2 * inst.x_true, inst.x_true))
    assert row["rel_l2"] == pytest.approx(1.0)


def test_stationary_gaussian_fit_reproduces_the_fields_statistics():
    """Samples of the fitted stationary Gaussian have the fields' mean and per-mode power."""
    import torch

    rng = np.random.default_rng(5)
    # fields with a known anisotropic spectrum and a non-zero mean field
    k = np.fft.fftfreq(8)[:, None] ** 2 + 2 * np.fft.fftfreq(8)[None, :] ** 2
    amp = 1.0 / (1.0 + 30 * k)
    fields = 2.0 + np.real(np.fft.ifft2(amp * np.fft.fft2(rng.standard_normal((4000, 1, 8, 8)))))
    sqrt_c = ref.stationary_gaussian_sqrt(fields)
    z = torch.as_tensor(rng.standard_normal((4000, 1, 8, 8)))
    with torch.no_grad():
        samples = sqrt_c(z).numpy()
    np.testing.assert_allclose(samples.mean(0), fields.mean(0), atol=0.05)
    p_fields = np.mean(np.abs(np.fft.fft2(fields - fields.mean(0))) ** 2, axis=0)
    p_samples = np.mean(np.abs(np.fft.fft2(samples - samples.mean(0))) ** 2, axis=0)
    np.testing.assert_allclose(p_samples, p_fields, rtol=0.15)
