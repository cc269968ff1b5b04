"""Tests of the 2D Navier-Stokes forward problem against analytic solutions, invariants and an
independent NumPy re-implementation written here."""

import math
import pickle

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff._backend import stream_seed
from kalmandiff.problems.navier_stokes import NavierStokes2D, ns_grf_params, sample_ns_grf


def _grid(n):
    s = 2 * np.pi * np.arange(n) / n
    return np.meshgrid(s, s, indexing="ij")


def _smooth_field(n, seed, kmax=4, amp=1.0):
    """A real random trigonometric polynomial with modes |k_i| <= kmax, shape (1, n, n)."""
    rng = np.random.default_rng(seed)
    x, y = _grid(n)
    w = np.zeros((n, n))
    for a in range(-kmax, kmax + 1):
        for b in range(0, kmax + 1):
            if (a, b) == (0, 0):
                continue
            c, s = rng.standard_normal(2) / (a * a + b * b)
            w += c * np.cos(a * x + b * y) + s * np.sin(a * x + b * y)
    return amp * w[None] / np.abs(w).max()


def _np(a):
    return np.asarray(kd._backend.to_numpy(a))


def _spectral_stats(w):
    """Energy 0.5 sum |k|^-2 |w_k|^2 and enstrophy 0.5 sum |w_k|^2 (Fourier-series coefficients)."""
    n = w.shape[-1]
    w_hat = np.fft.fft2(w) / n**2
    k = np.fft.fftfreq(n, 1.0 / n)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    k2[0, 0] = np.inf
    return 0.5 * np.sum(np.abs(w_hat) ** 2 / k2), 0.5 * np.sum(np.abs(w_hat) ** 2), k2


# --------------------------------------------------------------------------
# analytic solutions
# --------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_taylor_green_decays_at_viscous_rate(xp, k):
    # w0 = 2k cos(kx) cos(ky) is a steady Euler solution; with viscosity it decays as exp(-2k^2 t/Re).
    n, re, t = 16, 50.0, 0.7
    x, y = _grid(n)
    w0 = 2 * k * np.cos(k * x) * np.cos(k * y)
    prob = NavierStokes2D(resolution=n, reynolds=re, t_final=t, subsample=1, forcing=None, dtype="float64")
    out = _np(prob(xp.asarray(w0[None, None])))[0, 0]
    # Crank-Nicolson's O(dt^2) error in the decay factor is a few 1e-6 here.
    np.testing.assert_allclose(out, w0 * math.exp(-2 * k**2 * t / re), rtol=0, atol=5e-5 * np.abs(w0).max())


def test_same_shell_modes_decay_together():
    # Any combination of modes with the same |k|^2 = 25 has a vanishing Jacobian J(psi, w).
    n, re, t = 32, 80.0, 1.0
    x, y = _grid(n)
    w0 = np.cos(3 * x + 4 * y) + 0.7 * np.sin(5 * y) - 1.3 * np.cos(4 * x - 3 * y + 0.4) + 0.5 * np.sin(5 * x)
    prob = NavierStokes2D(resolution=n, reynolds=re, t_final=t, subsample=1, forcing="none", dtype="float64")
    out = prob.solve(w0[None, None])[0, 0]
    np.testing.assert_allclose(out, w0 * math.exp(-25 * t / re), rtol=0, atol=5e-5 * np.abs(w0).max())


def test_kolmogorov_forcing_drives_shear_flow(xp):
    # From rest, f = -4 cos(4y) makes a shear flow w(y) with no advection:
    # w(t) = f (1 - exp(-16 t / Re)) / (16 / Re); y varies along the second array axis.
    n, re, t = 16, 200.0, 1.0
    _, y = _grid(n)
    prob = NavierStokes2D(resolution=n, reynolds=re, t_final=t, subsample=1, dtype="float64")
    out = _np(prob(xp.zeros((1, 1, n, n), dtype=xp.float64)))[0, 0]
    lam = 16.0 / re
    expected = -4 * np.cos(4 * y) * (1 - math.exp(-lam * t)) / lam
    # Crank-Nicolson's O(dt^2) error is about 1e-5 relative here; a sign, axis or rate error is O(1).
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_forcing_callable_and_array_match_named():
    n = 16
    x0 = _smooth_field(n, 0)[None]
    named = NavierStokes2D(resolution=n, t_final=0.3, dtype="float64")
    fn = NavierStokes2D(resolution=n, t_final=0.3, dtype="float64", forcing=lambda x, y: -4 * np.cos(4 * y))
    arr = NavierStokes2D(resolution=n, t_final=0.3, dtype="float64", forcing=-4 * np.cos(4 * _grid(n)[1]))
    swapped = NavierStokes2D(
        resolution=n, t_final=0.3, dtype="float64", forcing=lambda x, y: -4 * np.cos(4 * x)
    )
    np.testing.assert_allclose(fn(x0), named(x0), atol=1e-13)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(fn))(x0), named(x0), atol=1e-13)
    np.testing.assert_allclose(arr(x0), named(x0), atol=1e-13)
    assert np.abs(swapped(x0) - named(x0)).max() > 0.1


# --------------------------------------------------------------------------
# an independent re-implementation: advective form, full complex FFT, one field at a time
# --------------------------------------------------------------------------


def _reference_solve(w0, re, t_final, dt, forcing):
    n = w0.shape[-1]
    k = np.fft.fftfreq(n, 1.0 / n)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    k2 = kx**2 + ky**2
    keep = (np.abs(kx) < n / 3) & (np.abs(ky) < n / 3) & (k2 > 0)
    nu = 1.0 / re
    f_hat = np.fft.fft2(forcing) * keep

    def tendency(w_hat):
        psi = np.where(keep, w_hat / np.where(k2 > 0, k2, 1), 0)
        u = np.real(np.fft.ifft2(1j * ky * psi))
        v = np.real(np.fft.ifft2(-1j * kx * psi))
        wx = np.real(np.fft.ifft2(1j * kx * w_hat))
        wy = np.real(np.fft.ifft2(1j * ky * w_hat))
        return -np.fft.fft2(u * wx + v * wy) * keep + f_hat

    w_hat = np.fft.fft2(w0) * keep
    for _ in range(round(t_final / dt)):
        a = 1 - 0.5 * dt * nu * k2
        b = 1 + 0.5 * dt * nu * k2
        n0 = tendency(w_hat)
        w_star = (a * w_hat + dt * n0) / b
        w_hat = (a * w_hat + 0.5 * dt * (n0 + tendency(w_star))) / b
    return np.real(np.fft.ifft2(w_hat))


def test_matches_independent_numpy_implementation(xp):
    n, re, t, dt = 24, 100.0, 0.5, 0.025
    w0 = _smooth_field(n, 3, kmax=6, amp=5.0)
    forcing = -4 * np.cos(4 * _grid(n)[1])
    prob = NavierStokes2D(resolution=n, reynolds=re, t_final=t, subsample=1, dt=dt, dtype="float64")
    out = _np(prob(xp.asarray(w0[None])))[0, 0]
    ref = _reference_solve(w0[0], re, t, dt, forcing)
    assert np.abs(ref - w0[0]).max() > 0.5  # the flow really moved
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-10)


def test_time_step_lands_on_t_final():
    # dt does not divide t_final: the last step is shortened (compare with the reference on the same steps).
    n, t = 16, 0.1
    w0 = _smooth_field(n, 5, amp=3.0)
    prob = NavierStokes2D(resolution=n, t_final=t, subsample=1, dt=0.03, dtype="float64")
    ref = NavierStokes2D(resolution=n, t_final=0.09, subsample=1, dt=0.03, dtype="float64")
    last = NavierStokes2D(resolution=n, t_final=0.01, subsample=1, dt=0.01, dtype="float64")
    np.testing.assert_allclose(prob.solve(w0[None]), last.solve(ref.solve(w0[None])), atol=1e-13)


def test_second_order_in_time():
    n, re, t = 32, 200.0, 1.0
    w0 = _smooth_field(n, 1, kmax=5, amp=6.0)[None]

    def run(dt):
        prob = NavierStokes2D(resolution=n, reynolds=re, t_final=t, subsample=1, dt=dt, dtype="float64")
        return prob.solve(w0)[0, 0]

    ref = run(0.02 / 32)
    errors = [np.linalg.norm(run(dt) - ref) for dt in (0.02, 0.01, 0.005)]
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.2)), orders


# --------------------------------------------------------------------------
# energy and enstrophy
# --------------------------------------------------------------------------


def test_unforced_energy_and_enstrophy_decrease_monotonically():
    n, re = 32, 100.0
    prob = NavierStokes2D(resolution=n, reynolds=re, t_final=0.1, subsample=1, forcing=None, dtype="float64")
    w = _smooth_field(n, 2, kmax=6, amp=8.0)[None]
    stats = [_spectral_stats(w[0, 0])[:2]]
    for _ in range(10):
        w = prob.solve(w)
        stats.append(_spectral_stats(w[0, 0])[:2])
    energy, enstrophy = np.array(stats).T
    assert np.all(np.diff(energy) < 0) and np.all(np.diff(enstrophy) < 0)


def test_enstrophy_dissipation_rate():
    # Advection conserves enstrophy Z, so dZ/dt = -nu sum |k|^2 |w_k|^2 (palinstrophy), exactly in the
    # dealiased semi-discrete system.  Central difference over a short interval with small steps.
    n, re, h = 32, 100.0, 0.02
    w0 = _smooth_field(n, 4, kmax=6, amp=8.0)[None]
    prob = NavierStokes2D(
        resolution=n, reynolds=re, t_final=h, subsample=1, forcing=None, dt=h / 20, dtype="float64"
    )
    w0 = NavierStokes2D(resolution=n, t_final=0.0, subsample=1, dtype="float64").solve(w0)  # band-limit
    w1 = prob.solve(w0)
    wm = NavierStokes2D(
        resolution=n, reynolds=re, t_final=h / 2, subsample=1, forcing=None, dt=h / 20, dtype="float64"
    )
    wm = wm.solve(w0)[0, 0]
    _, z0, k2 = _spectral_stats(w0[0, 0])
    _, z1, _ = _spectral_stats(w1[0, 0])
    w_hat = np.fft.fft2(wm) / n**2
    k2[0, 0] = 0
    rate = -(1 / re) * np.sum(k2 * np.abs(w_hat) ** 2)
    np.testing.assert_allclose((z1 - z0) / h, rate, rtol=1e-3)


def test_nearly_inviscid_flow_conserves_energy_and_enstrophy():
    n = 32
    w0 = _smooth_field(n, 6, kmax=10, amp=8.0)[None]  # up to the band edge, where aliasing would bite
    prob = NavierStokes2D(
        resolution=n, reynolds=math.inf, t_final=0.5, subsample=1, forcing=None, dtype="float64"
    )
    w1 = prob.solve(w0)
    w0 = NavierStokes2D(resolution=n, t_final=0.0, subsample=1, dtype="float64").solve(w0)
    e0, z0, _ = _spectral_stats(w0[0, 0])
    e1, z1, _ = _spectral_stats(w1[0, 0])
    assert np.abs(w1 - w0).max() > 1.0  # the flow really moved
    assert abs(e1 - e0) / e0 < 1e-5 and abs(z1 - z0) / z0 < 1e-4


def test_t_final_zero_projects_to_mean_free_band():
    n = 12
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((2, 1, n, n)) + 3.0
    out = NavierStokes2D(resolution=n, t_final=0.0, subsample=1, dtype="float64").solve(w0)
    k = np.fft.fftfreq(n, 1.0 / n)
    keep = (np.abs(k[:, None]) < n / 3) & (np.abs(k[None, :]) < n / 3)
    keep[0, 0] = False
    np.testing.assert_allclose(out, np.real(np.fft.ifft2(np.fft.fft2(w0) * keep)), atol=1e-12)


# --------------------------------------------------------------------------
# batching, namespaces, precision
# --------------------------------------------------------------------------


def test_batch_equals_members_one_by_one(xp):
    n = 16
    X = np.concatenate([_smooth_field(n, s, amp=a)[None] for s, a in ((0, 1.0), (1, 8.0), (2, 3.0))])
    prob = NavierStokes2D(resolution=n, t_final=0.5, dtype="float64")
    batch = _np(prob(xp.asarray(X)))
    single = np.concatenate([_np(prob(xp.asarray(X[i : i + 1]))) for i in range(3)])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-12)


def test_numpy_and_array_api_strict_agree():
    import array_api_strict as xps

    n = 16
    X = np.concatenate([_smooth_field(n, s, amp=5.0)[None] for s in range(2)])
    prob = NavierStokes2D(resolution=n, t_final=0.5, dtype="float64")
    out = prob(xps.asarray(X))
    assert isinstance(out, type(xps.asarray(0.0))) and out.dtype == xps.float64
    np.testing.assert_allclose(_np(out), prob(X), rtol=0, atol=1e-12)


def test_float32_close_to_float64(xp):
    n = 32
    X = sample_ns_grf(2, n, random_state=0)
    p64 = NavierStokes2D(resolution=n, dtype="float64")
    p32 = NavierStokes2D(resolution=n, dtype="float32")
    y64 = _np(p64(xp.asarray(X)))
    y32 = _np(p32(xp.asarray(X, dtype=xp.float32)))
    assert y32.dtype == np.float32
    assert np.linalg.norm(y32 - y64) / np.linalg.norm(y64) < 1e-4
    # Computing in float32 and returning in the input's dtype.
    assert _np(p32(xp.asarray(X))).dtype == np.float64


# --------------------------------------------------------------------------
# member failures
# --------------------------------------------------------------------------


def _three_members(n):
    return np.concatenate([_smooth_field(n, s, amp=3.0)[None] for s in range(3)])


def test_blow_up_with_fixed_step_is_isolated(xp):
    n = 16
    X = _three_members(n)
    X[1] *= 1e6
    prob = NavierStokes2D(resolution=n, t_final=1.0, dt=0.1, dtype="float64")
    out = _np(prob(xp.asarray(X)))
    assert np.all(np.isnan(out[1]))
    for i in (0, 2):
        assert np.all(np.isfinite(out[i]))
        np.testing.assert_allclose(out[i], _np(prob(xp.asarray(X[i : i + 1])))[0], rtol=0, atol=1e-12)


def test_collapsing_adaptive_step_is_isolated():
    # A huge field makes the CFL step tiny: the member hits max_steps and fails; the others keep their
    # own step sizes (not the batch minimum) and match their solo runs.
    n = 16
    X = _three_members(n)
    X[0] *= 1e4
    prob = NavierStokes2D(resolution=n, t_final=0.5, dtype="float64", max_steps=300)
    out = prob(X)
    assert np.all(np.isnan(out[0]))
    for i in (1, 2):
        np.testing.assert_allclose(out[i], prob(X[i : i + 1])[0], rtol=0, atol=1e-12)


def test_non_finite_input_member_is_nan_row():
    n = 16
    X = _three_members(n)
    X[2, 0, 3, 4] = np.inf
    prob = NavierStokes2D(resolution=n, t_final=0.2, dtype="float64")
    out = prob(X)
    assert np.all(np.isnan(out[2])) and np.all(np.isfinite(out[:2]))
    np.testing.assert_allclose(out[:2], prob(X[:2]), atol=1e-12)


# --------------------------------------------------------------------------
# observation
# --------------------------------------------------------------------------


@pytest.mark.parametrize("s", [1, 2, 4, 8])
def test_subsampling_shape_and_values(xp, s):
    n = 16
    X = _three_members(n)
    prob = NavierStokes2D(resolution=n, t_final=0.2, subsample=s, dtype="float64")
    full = NavierStokes2D(resolution=n, t_final=0.2, subsample=1, dtype="float64")
    out = _np(prob(xp.asarray(X)))
    assert prob.y_shape == (1, n // s, n // s) and out.shape == (3, *prob.y_shape)
    np.testing.assert_allclose(out, _np(full(xp.asarray(X)))[:, :, ::s, ::s], atol=1e-13)


def test_observe_noise_level(xp):
    n, sigma = 32, 0.7
    prob = NavierStokes2D(resolution=n, t_final=0.2, subsample=1, noise_std=sigma, dtype="float64")
    x = _smooth_field(n, 0, amp=3.0)
    clean = _np(prob(xp.asarray(x[None])))[0]
    resid = np.concatenate(
        [(_np(prob.observe(xp.asarray(x), random_state=s)) - clean).ravel() for s in range(4)]
    )
    assert abs(resid.std() / sigma - 1) < 0.05 and abs(resid.mean()) < 0.05
    np.testing.assert_array_equal(_np(prob.observe(xp.asarray(x), 7)), _np(prob.observe(xp.asarray(x), 7)))


def test_shape_errors_and_bad_arguments():
    prob = NavierStokes2D(resolution=16)
    with pytest.raises(ValueError, match="expects a batch"):
        prob(np.zeros((1, 16, 16)))
    bad = [
        {"resolution": 3},
        {"resolution": 12.0},
        {"subsample": 3},
        {"resolution": 20, "subsample": 8},
        {"reynolds": 0},
        {"reynolds": -5},
        {"t_final": -1},
        {"dt": 0},
        {"cfl": -0.1},
        {"dtype": "float16"},
        {"max_steps": 0},
        {"noise_std": -1.0},
        {"forcing": "tidal"},
        {"forcing": np.zeros((8, 8))},
    ]
    for kwargs in bad:
        kwargs = {"resolution": 16, **kwargs}
        name = next(iter(k for k in kwargs if k != "resolution"), "resolution")
        with pytest.raises(ValueError, match=name):
            NavierStokes2D(**kwargs)


# --------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------


def test_torch_matches_numpy_and_gradcheck():
    torch = pytest.importorskip("torch")
    n = 8
    prob = NavierStokes2D(resolution=n, t_final=0.1, dt=0.05, subsample=2, dtype="float64")
    X = _smooth_field(n, 0, kmax=2, amp=3.0)[None]
    Xt = torch.tensor(X, requires_grad=True)
    out = prob(Xt)
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(out.detach().numpy(), prob(X), atol=1e-12)
    # fast_mode checks the Jacobian along random directions against finite differences.
    assert torch.autograd.gradcheck(prob, (Xt,), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.slow
def test_torch_full_gradcheck():
    torch = pytest.importorskip("torch")
    prob = NavierStokes2D(resolution=8, t_final=0.1, dt=0.05, subsample=2, dtype="float64")
    Xt = torch.tensor(_smooth_field(8, 1, kmax=2, amp=3.0)[None], requires_grad=True)
    assert torch.autograd.gradcheck(prob, (Xt,), eps=1e-6, atol=1e-7)


def test_torch_adaptive_batch_with_failure():
    torch = pytest.importorskip("torch")
    n = 16
    X = _three_members(n)
    X[1] *= 1e6
    prob = NavierStokes2D(resolution=n, t_final=0.3, dt=0.1, dtype="float64")
    out = prob(torch.tensor(X)).numpy()
    np.testing.assert_allclose(out, prob(X), atol=1e-12)


# --------------------------------------------------------------------------
# GRF preset, registry, metrics, plot
# --------------------------------------------------------------------------


def test_grf_sampler_spectrum():
    # Monte Carlo power spectrum of the sampler against c (|k|^2 + tau^2)^(-alpha), c = 2 tau^(2 alpha - 2).
    n, m = 16, 4000
    x = sample_ns_grf(m, n, random_state=0)[:, 0]
    power = np.mean(np.abs(np.fft.fft2(x) / n**2) ** 2, axis=0)
    k = np.fft.fftfreq(n, 1.0 / n)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    expected = 2 * 3.0**3 * (k2 + 9.0) ** -2.5
    sel = (k2 > 0) & (k2 <= 8)
    np.testing.assert_allclose(power[sel], expected[sel], rtol=0.12)
    assert power[0, 0] < 1e-20
    p = ns_grf_params(n)
    assert p["alpha"] == 2.5 and p["tau"] == 3.0 and p["length"] == pytest.approx(2 * np.pi)
    # scale is the pointwise standard deviation (the GRF prior's convention).
    assert np.sqrt(np.sum(expected[k2 > 0])) == pytest.approx(p["scale"], rel=1e-12)
    assert np.std(x) == pytest.approx(p["scale"], rel=0.03)


def test_grf_prior_preset_matches_sampler():
    # The library's GRF prior (when available) must have the sampler's spectrum: its exact denoiser
    # multiplies mode k by mu_k / (mu_k + sigma^2).
    inst = kd.problems.make("navier-stokes", size="small")
    if inst.prior is None:
        pytest.skip("GaussianRandomFieldPrior not available yet")
    n = inst.problem.resolution
    x, y = _grid(n)
    wave = np.cos(2 * x + y)[None, None]
    out = np.asarray(kd._backend.to_numpy(inst.prior.denoise(wave, 1.0)))
    ratio = np.sum(out * wave) / np.sum(wave * wave)
    mu = 2 * 3.0**3 * n**2 * (5 + 9.0) ** -2.5  # |k|^2 = 5 for the wave (2, 1)
    assert ratio == pytest.approx(mu / (mu + 1.0), rel=1e-6)


def test_registry_small_instance_is_deterministic():
    a = kd.problems.make("navier-stokes", size="small", random_state=3)
    b = kd.problems.make("navier-stokes", size="small", random_state=3)
    c = kd.problems.make("navier-stokes", size="small", random_state=4)
    assert a.x_true.shape == (1, 32, 32) and a.y.shape == (1, 16, 16)
    np.testing.assert_array_equal(a.x_true, b.x_true)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.x_true, c.x_true)
    clean = a.problem(a.x_true[None])[0]
    assert 0.5 < np.std(a.y - clean) < 1.5  # noise_std 1 on 256 values
    with pytest.raises(ValueError, match="size"):
        kd.problems.make("navier-stokes", size="huge")
    # Overrides: an evolved truth on a smaller grid.
    d = kd.problems.make("navier-stokes", size="small", random_state=3, resolution=16, t_prior=0.2)
    evolve = NavierStokes2D(resolution=16, t_final=0.2, subsample=1, dtype="float64")
    np.testing.assert_allclose(
        d.x_true, evolve.solve(sample_ns_grf(1, 16, np.random.default_rng(stream_seed(3, "truth"))))[0]
    )


@pytest.mark.slow
def test_registry_medium_evolves_prior_draw():
    inst = kd.problems.make("navier-stokes", size="medium", random_state=0)
    assert inst.x_true.shape == (1, 64, 64) and inst.y.shape == (1, 32, 32)
    draw = sample_ns_grf(1, 64, np.random.default_rng(stream_seed(0, "truth")))
    evolve = NavierStokes2D(resolution=64, t_final=5.0, subsample=1, dtype="float64")
    np.testing.assert_allclose(inst.x_true, evolve.solve(draw)[0], atol=1e-10)


def test_metrics_relative_l2_over_members():
    prob = NavierStokes2D(resolution=8)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 8))
    ens = x + rng.standard_normal((5, 1, 8, 8))
    expected = np.mean([np.linalg.norm(e - x) / np.linalg.norm(x) for e in ens])
    assert prob.metrics(ens, x)["relative_l2"] == pytest.approx(expected)


def test_plot_runs():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inst = kd.problems.make("navier-stokes", size="small")
    ax = inst.problem.plot(x=inst.x_true[None], y=inst.y, x_true=inst.x_true)
    assert len(ax) == 3 and ax[0].images[0].get_cmap().name == "RdBu_r"
    plt.close("all")


# --------------------------------------------------------------------------
# the EnKG authors' operator: dealias="reference" against a NumPy transcription of their solver
# --------------------------------------------------------------------------


def _authors_solve(w0, re, t_final, dt=None, forcing=True):
    """The EnKG reference code's Navier-Stokes solver, transcribed here into NumPy.

    ``w0``: vorticity ``(J, n, n)``, ``n`` even, float64.  On the ``rfft2``
    half-plane, ``|k|^2`` counts the Nyquist wavenumber as ``n/2`` but first
    derivatives count it as 0; the nonlinear term is computed from the part
    of the vorticity inside the disc ``|k|^2 <= 2 (n/3)^2`` (mean removed)
    and is not filtered afterwards, nor is the state or the forcing.
    Crank-Nicolson + Heun; ``dt=None`` takes one CFL step for the whole batch
    from the speed of the unfiltered state; the clock runs while
    ``t < t_final`` and the step that would pass it is shortened.
    """
    n = w0.shape[-1]
    rows = np.arange(n)[:, None]
    cols = np.arange(n // 2 + 1)[None, :]
    k_rows = np.where(rows < n // 2, rows, rows - n).astype(float)  # the Nyquist row is -n/2
    k_cols = cols.astype(float)
    ksq = k_rows**2 + k_cols**2
    dx = np.where(rows == n // 2, 0.0, k_rows)  # derivative wavenumbers
    dy = np.where(cols == n // 2, 0.0, k_cols)
    inside = (ksq <= (n / 3) ** 2 + (n / 3) ** 2) & (ksq > 0)
    stream = 1.0 / np.where(ksq > 0, ksq, 1.0)
    f = -4.0 * np.cos(4.0 * _grid(n)[1]) if forcing else None
    f_hat = np.fft.rfft2(f) if forcing else 0.0
    mu = (np.sqrt(np.abs(f).max()) if forcing else 1.0) / re
    h = 1.0 / n

    def to_grid(a):
        return np.fft.irfft2(a, s=(n, n))

    def velocity(w_hat):
        return to_grid(1j * dy * stream * w_hat), to_grid(-1j * dx * stream * w_hat)

    def advection(w_hat):
        low = np.where(inside, w_hat, 0.0)
        u, v = velocity(low)
        w = to_grid(low)
        return f_hat - 1j * (dx * np.fft.rfft2(u * w) + dy * np.fft.rfft2(v * w))

    def cfl_step(w_hat):
        u, v = velocity(w_hat)
        top = np.sqrt(u**2 + v**2).max()  # one step for the whole batch
        viscous = 0.5 * h**2 / mu
        return viscous if top == 0 else min(0.5 * h / top, viscous)

    w_hat = np.fft.rfft2(w0)
    step = cfl_step(w_hat) if dt is None else dt
    clock = 0.0
    while clock < t_final:
        tau = t_final - clock if clock + step > t_final else step
        lhs = 1.0 + 0.5 * tau * ksq / re
        a0 = advection(w_hat)
        guess = (w_hat + tau * (a0 - 0.5 * ksq / re * w_hat)) / lhs
        a1 = advection(guess)
        w_hat = (w_hat + tau * (0.5 * (a0 + a1) - 0.5 * ksq / re * w_hat)) / lhs
        clock += tau
        if dt is None:
            step = cfl_step(w_hat)
    return to_grid(w_hat)


def _rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("n", [32, 64])
@pytest.mark.parametrize("dt", [None, 0.01])
def test_reference_dealias_matches_authors_solver(n, dt):
    # A GRF initial condition (all wavenumbers, mean of a draw) at the paper's Re and t_final.
    w0 = sample_ns_grf(1, n, random_state=n)
    prob = NavierStokes2D(resolution=n, subsample=1, dt=dt, dtype="float64", dealias="reference")
    out = prob.solve(w0)[:, 0]
    ref = _authors_solve(w0[:, 0], 200.0, 1.0, dt)
    assert _rel(ref, w0[:, 0]) > 0.5  # the flow really moved
    assert _rel(out, ref) < 1e-10
    # ... and it is a different operator from the default one.
    assert _rel(NavierStokes2D(resolution=n, subsample=1, dt=dt, dtype="float64").solve(w0)[:, 0], ref) > 1e-4


def test_reference_dealias_in_every_namespace(xp):
    # Members keep their own adaptive step: a batch equals the transcription run member by member
    # (the authors' code takes the batch's smallest step, which differs by the time-stepping error).
    n = 16
    X = sample_ns_grf(3, n, random_state=5)
    X[1] *= 3.0
    prob = NavierStokes2D(resolution=n, t_final=0.5, subsample=1, dtype="float64", dealias="reference")
    out = _np(prob(xp.asarray(X)))[:, 0]
    solo = np.concatenate([_authors_solve(X[i : i + 1, 0], 200.0, 0.5) for i in range(3)])
    for i in range(3):
        assert _rel(out[i], solo[i]) < 1e-12
    batch = _authors_solve(X[:, 0], 200.0, 0.5)
    assert 1e-9 < _rel(batch[0], solo[0]) < 1e-2


def test_reference_dealias_keeps_mean_and_every_wavenumber():
    n = 16
    X = sample_ns_grf(2, n, random_state=1) + 0.75
    # t_final = 0 is the identity: nothing is filtered.
    same = NavierStokes2D(resolution=n, t_final=0.0, subsample=1, dtype="float64", dealias="reference")
    np.testing.assert_allclose(same.solve(X), X, rtol=0, atol=1e-13)
    prob = NavierStokes2D(
        resolution=n, t_final=0.4, subsample=1, forcing=None, dtype="float64", dealias="reference"
    )
    out = prob.solve(X)
    np.testing.assert_allclose(out.mean(axis=(-2, -1)), 0.75, rtol=0, atol=1e-12)
    for i in range(2):
        assert _rel(out[i, 0], _authors_solve(X[i : i + 1, 0], 200.0, 0.4, forcing=False)[0]) < 1e-12
    corner = np.abs(np.fft.fft2(out[:, 0])[:, n // 2, n // 2])  # outside both the disc and the square
    assert np.all(corner > 1e-8)


def test_square_dealias_is_the_unchanged_default():
    n = 16
    x, y = _grid(n)
    w0 = 3 * np.cos(x + 2 * y) - 2 * np.sin(3 * x - y) + np.cos(5 * x) * np.sin(2 * y) + 0.5
    default = NavierStokes2D(resolution=n, t_final=0.5, subsample=1, dtype="float64")
    square = NavierStokes2D(resolution=n, t_final=0.5, subsample=1, dtype="float64", dealias="square")
    out = default.solve(w0[None, None])[0, 0]
    np.testing.assert_array_equal(square.solve(w0[None, None])[0, 0], out)
    # Values computed by the solver before the dealias option existed.
    assert np.linalg.norm(out) == pytest.approx(46.3747470179195, rel=1e-12)
    np.testing.assert_allclose(
        [out[0, 0], out[3, 7], out[11, 2]],
        [0.6879341535059803, 1.5119021028253103, 6.79378400937757],
        rtol=1e-11,
    )
    assert repr(default) == repr(square) and "dealias" not in repr(default)


def test_input_scale_takes_network_units():
    # The EnKG loader hands out w / 10 and its operator multiplies by 10 before solving.
    n = 32
    w0 = sample_ns_grf(2, n, random_state=2)
    plain = NavierStokes2D(resolution=n, t_final=0.5, dtype="float64", dealias="reference")
    scaled = NavierStokes2D(resolution=n, t_final=0.5, dtype="float64", dealias="reference", input_scale=10)
    np.testing.assert_allclose(scaled(w0 / 10), plain(w0), rtol=0, atol=1e-11 * np.abs(plain(w0)).max())
    # One member: the authors' code takes one step size for the whole batch.
    ref = _authors_solve(10.0 * (w0[:1, 0] / 10), 200.0, 0.5)[:, ::2, ::2]
    assert _rel(scaled(w0[:1] / 10)[:, 0], ref) < 1e-10
    assert scaled.input_scale == 10.0 and "input_scale=10.0" in repr(scaled)
    # The registry gives the truth and the prior in the unknown's units, the data in vorticity units.
    a = kd.problems.make("navier-stokes", size="small", random_state=1, dtype="float64")
    b = kd.problems.make("navier-stokes", size="small", random_state=1, dtype="float64", input_scale=10.0)
    np.testing.assert_allclose(b.x_true, a.x_true / 10, rtol=1e-15)
    np.testing.assert_allclose(b.y, a.y, rtol=0, atol=1e-12)
    if a.prior is not None:
        assert b.prior.pointwise_std == pytest.approx(a.prior.pointwise_std / 10, rel=1e-12)


def test_registry_evolves_truth_with_the_problems_scheme():
    d = kd.problems.make("navier-stokes", size="small", random_state=3, resolution=16, t_prior=0.2)
    e = kd.problems.make(
        "navier-stokes", size="small", random_state=3, resolution=16, t_prior=0.2, dealias="reference"
    )
    assert e.problem.dealias == "reference" and d.problem.dealias == "square"
    evolve = NavierStokes2D(resolution=16, t_final=0.0, subsample=1, dtype="float64")
    x0 = evolve.solve(e.x_true[None])[0]  # the reference truth keeps content the square band drops
    assert _rel(x0, e.x_true) > 1e-6 and _rel(d.x_true, e.x_true) > 1e-6


def test_reference_dealias_pickles_and_differentiates():
    torch = pytest.importorskip("torch")
    n = 8
    prob = NavierStokes2D(
        resolution=n, t_final=0.1, dt=0.05, dtype="float64", dealias="reference", input_scale=2.0
    )
    X = sample_ns_grf(1, n, random_state=0) / 2
    back = pickle.loads(pickle.dumps(prob))
    assert back.dealias == "reference" and back.input_scale == 2.0 and repr(back) == repr(prob)
    np.testing.assert_array_equal(back(X), prob(X))
    Xt = torch.tensor(X, requires_grad=True)
    np.testing.assert_allclose(prob(Xt).detach().numpy(), prob(X), rtol=0, atol=1e-12)
    # The adaptive path too, where the step comes from the unfiltered state's speed.
    adaptive = pickle.loads(pickle.dumps(NavierStokes2D(resolution=n, t_final=0.1, dealias="reference")))
    np.testing.assert_allclose(adaptive(torch.tensor(X)).numpy(), adaptive(X), rtol=0, atol=1e-6)
    assert torch.autograd.gradcheck(prob, (Xt,), eps=1e-6, atol=1e-7, fast_mode=True)


def test_dealias_and_input_scale_are_validated():
    for kwargs, name in (
        ({"dealias": "disc"}, "dealias"),
        ({"dealias": None}, "dealias"),
        ({"dealias": "Reference"}, "dealias"),
        ({"resolution": 15, "subsample": 1, "dealias": "reference"}, "even resolution"),
        ({"input_scale": 0.0}, "input_scale"),
        ({"input_scale": -10.0}, "input_scale"),
        ({"input_scale": float("nan")}, "input_scale"),
        ({"input_scale": "10"}, "input_scale"),
    ):
        with pytest.raises(ValueError, match=name):
            NavierStokes2D(**{"resolution": 16, **kwargs})
    NavierStokes2D(resolution=15, subsample=1)  # odd grids stay fine for the square scheme


# --------------------------------------------------------------------------
# the GRF preset's scale against a NumPy transcription of the reference sampler
# --------------------------------------------------------------------------


def _pino_grf(xi, s, alpha=2.5, tau=3.0):
    """PINO's ``GaussianRF2d(s, s, 2 pi, 2 pi, alpha, tau)`` transcribed: ``xi`` of shape
    ``(m, s, s//2 + 1, 2)`` (its standard normals) -> fields ``(m, s, s)``."""
    k_rows = np.fft.fftfreq(s, 1.0 / s)[:, None]
    k_cols = np.arange(s // 2 + 1)[None, :]
    amp = s * s * tau ** (alpha - 1.0) * (k_rows**2 + k_cols**2 + tau**2) ** (-alpha / 2)
    amp[0, 0] = 0.0
    return np.fft.irfft2(amp * (xi[..., 0] + 1j * xi[..., 1]), s=(s, s))


def test_grf_preset_scale_against_the_reference_sampler():
    s = 16
    k = np.fft.fftfreq(s, 1.0 / s)
    lam = 3.0**3 * (k[:, None] ** 2 + k[None, :] ** 2 + 9.0) ** -2.5  # sigma_g^2 lambda_k
    lam[0, 0] = 0.0
    on_columns = np.zeros((s, s), dtype=bool)
    on_columns[:, [0, s // 2]] = True
    # The reference sampler is linear in its normals: its exact covariance from the unit inputs.
    basis = np.eye(s * (s // 2 + 1) * 2).reshape(-1, s, s // 2 + 1, 2)
    responses = _pino_grf(basis, s)
    power = np.sum(np.abs(np.fft.fft2(responses) / s**2) ** 2, axis=0)  # E |w_k|^2
    np.testing.assert_allclose(power[~on_columns], 2 * lam[~on_columns], rtol=1e-10)
    np.testing.assert_allclose(power[on_columns], lam[on_columns], rtol=1e-10, atol=1e-14)
    ref_var = np.mean(np.sum(responses**2, axis=0))  # pointwise variance
    # The preset (sample_ns_grf, ns_grf_params) has 2 sigma_g^2 lambda_k on every mode.
    scale = ns_grf_params(s)["scale"]
    assert scale**2 == pytest.approx(np.sum(2 * lam), rel=1e-12)
    assert ref_var / scale**2 == pytest.approx(0.912, abs=1e-3)  # documented: about 0.916 for R >= 32
    assert ns_grf_params(64)["scale"] == pytest.approx(1.99, abs=0.005)
    # Monte Carlo: the library's sampler against the transcription driven by its own normals.
    rng = np.random.default_rng(0)
    ours = sample_ns_grf(3000, s, random_state=rng)[:, 0]
    theirs = _pino_grf(rng.standard_normal((3000, s, s // 2 + 1, 2)), s)
    assert np.var(theirs) / np.var(ours) == pytest.approx(ref_var / scale**2, rel=0.05)
    mc = np.mean(np.abs(np.fft.fft2(theirs) / s**2) ** 2, axis=0)
    assert mc[0, 1] / mc[1, 0] == pytest.approx(2.0, rel=0.15)  # the anisotropy on the k_2 = 0 column
    # The GRF prior without scale has half the preset's power.
    prior = kd.priors.GaussianRandomFieldPrior((1, s, s), alpha=2.5, tau=3.0)
    assert prior.pointwise_std**2 == pytest.approx(scale**2 / 2, rel=1e-12)
    preset = kd.priors.GaussianRandomFieldPrior((1, s, s), **ns_grf_params(s))
    assert preset.pointwise_std == pytest.approx(scale, rel=1e-12)
