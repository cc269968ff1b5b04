"""ClosurePhaseInterferometry: geometry, closure quantities, noise, metrics.

Oracles: eht-imaging (when installed), analytic identities (point sources,
(u, v) ellipses, shift and scale invariance of closures, station-gain
invariance) and straightforward re-implementations written here.
"""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.problems import ClosurePhaseInterferometry
from kalmandiff.problems import _interferometry_geometry as geo
from kalmandiff.problems.interferometry import blur_circular, crescent_image

M87 = (12.51373, 12.39112)
C = 299792458.0


@pytest.fixture(scope="module")
def problem16():
    """The default EHT2017/M87 observation on a 16-pixel image (fast to build)."""
    return ClosurePhaseInterferometry(npix=16)


@pytest.fixture(scope="module")
def small8():
    """A tiny problem for gradients and namespace checks (one scan per hour)."""
    return ClosurePhaseInterferometry(npix=8, tadv_s=3600.0)


def _random_image(npix, seed=0, scale=0.01):
    return np.random.default_rng(seed).random((1, npix, npix)) * scale


def _vis_lookup(p):
    """(time, station a, station b) -> visibility index, both orientations marked by sign."""
    out = {}
    for m, (t, (a, b)) in enumerate(zip(p.vis_times, p.baselines)):
        out[(t, int(a), int(b))] = (m, 1)
        out[(t, int(b), int(a))] = (m, -1)
    return out


# --------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------


def test_counts_for_m87_eht2017(problem16):
    p = problem16
    assert p.n_visibilities == 837
    assert len(p.times) == 98
    assert p.n_closure_phases == 508
    assert p.n_log_closure_amplitudes == 427
    assert p.y_shape == (508 + 427 + 1,)
    assert p.x_shape == (1, 16, 16)
    assert "SPT" in p.stations
    assert p.stations.index("SPT") not in set(p.baselines.ravel())
    assert p.stations[0] == "ALMA"  # smallest SEFD is the reference


def test_closure_set_sizes_per_time(problem16):
    """With every baseline present, (N-1)(N-2)/2 triangles and N(N-3)/2 quadrangles per time."""
    p = problem16
    for t in p.times:
        n = len(set(p.baselines[p.vis_times == t].ravel()))
        assert np.sum(p.triangle_times == t) == (n - 1) * (n - 2) // 2
        assert np.sum(p.quadrangle_times == t) == max(n * (n - 3) // 2, 0)
        present = sorted(set(p.baselines[p.vis_times == t].ravel()))
        assert np.all(p.triangles[p.triangle_times == t][:, 0] == present[0])
        assert np.all(p.quadrangles[p.quadrangle_times == t][:, 0] == present[0])


def test_uv_tracks_are_ellipses(problem16):
    """u**2 + ((v - cos(dec) bz / lambda) / sin(dec))**2 = (bx**2 + by**2) / lambda**2 for every point."""
    p = problem16
    table = geo.load_station_table("EHT2017")
    xyz = {n: table.xyz[i] for i, n in enumerate(table.names)}
    lam = C / 230e9
    dec = np.deg2rad(M87[1])
    names = np.array(p.stations)
    b = np.array([xyz[a] - xyz[c] for a, c in zip(names[p.baselines[:, 0]], names[p.baselines[:, 1]])])
    u, v = p.uv[:, 0], p.uv[:, 1]
    lhs = u**2 + ((v - np.cos(dec) * b[:, 2] / lam) / np.sin(dec)) ** 2
    rhs = (b[:, 0] ** 2 + b[:, 1] ** 2) / lam**2
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10)


def test_elevation_cut(problem16):
    """Every kept visibility has both stations strictly inside (10, 85) degrees of elevation."""
    p = problem16
    table = geo.load_station_table("EHT2017")
    xyz = {n: table.xyz[i] for i, n in enumerate(table.names)}
    dec = np.deg2rad(M87[1])
    src = np.array([np.cos(dec), 0.0, np.sin(dec)])
    for col in (0, 1):
        theta = (p.vis_times - M87[0]) * np.pi / 12
        r = np.array([xyz[p.stations[s]] for s in p.baselines[:, col]])
        rot = np.stack(
            [
                np.cos(theta) * r[:, 0] - np.sin(theta) * r[:, 1],
                np.sin(theta) * r[:, 0] + np.cos(theta) * r[:, 1],
                r[:, 2],
            ],
            1,
        )
        el = 90 - np.rad2deg(np.arccos(rot @ src / np.linalg.norm(rot, axis=1)))
        assert np.all((el > 10) & (el < 85))


def test_thermal_sigma_formula(problem16):
    p = problem16
    table = geo.load_station_table("EHT2017")
    sefd = {n: table.sefd[i, 0] for i, n in enumerate(table.names)}
    s1 = np.array([sefd[p.stations[a]] for a in p.baselines[:, 0]])
    s2 = np.array([sefd[p.stations[b]] for b in p.baselines[:, 1]])
    np.testing.assert_allclose(p.vis_sigma, np.sqrt(s1 * s2 / (2e9 * 10.0)) / 1.76, rtol=1e-14)


def test_point_source_visibilities(problem16):
    """One bright pixel: V = P(u, v) exp(2 pi i (u x_k + v y_j)), x_k = (N/2 - 1/2 - k) p (east left)."""
    npix, j, k = 16, 3, 12
    psize = 160.0 / npix * np.pi / 180 / 3600 / 1e6
    img = np.zeros((1, npix, npix))
    img[0, j, k] = 1.5
    for pulse, response in [
        ("delta", lambda u, v: 1.0),
        ("triangle", lambda u, v: np.sinc(psize * u) ** 2 * np.sinc(psize * v) ** 2),
        ("rect", lambda u, v: np.sinc(psize * u) * np.sinc(psize * v)),
    ]:
        p = problem16 if pulse == "triangle" else ClosurePhaseInterferometry(npix=npix, pulse=pulse)
        u, v = p.uv[:, 0], p.uv[:, 1]
        x_k, y_j = (npix / 2 - 0.5 - k) * psize, (npix / 2 - 0.5 - j) * psize
        expected = 1.5 * response(u, v) * np.exp(2j * np.pi * (u * x_k + v * y_j))
        np.testing.assert_allclose(p.visibilities(img), expected, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------
# closure quantities
# --------------------------------------------------------------------------


def test_closures_match_direct_computation(problem16):
    """Closure phases arg(V12 V23 V31) and ln|V12||V34|/|V14||V23| recomputed from the station lists."""
    p = problem16
    img = _random_image(16, seed=1)
    vis = p.visibilities(img)
    look = _vis_lookup(p)

    def v(t, a, b):
        m, s = look[(t, int(a), int(b))]
        return vis[m] if s > 0 else np.conj(vis[m])

    cp = [
        np.angle(v(t, a, b) * v(t, b, c) * v(t, c, a)) for t, (a, b, c) in zip(p.triangle_times, p.triangles)
    ]
    lca = [
        np.log(abs(v(t, a, b)) * abs(v(t, c, d)) / (abs(v(t, a, d)) * abs(v(t, b, c))))
        for t, (a, b, c, d) in zip(p.quadrangle_times, p.quadrangles)
    ]
    y = p(img[None])[0]
    cp_f, lca_f, flux = p.split_data(y)
    np.testing.assert_allclose(np.angle(np.exp(1j * (cp_f - np.array(cp)))), 0.0, atol=1e-12)
    np.testing.assert_allclose(lca_f, lca, rtol=1e-12, atol=1e-12)
    assert flux == pytest.approx(img.sum(), rel=1e-14)
    assert np.all((cp_f > -np.pi) & (cp_f <= np.pi))
    np.testing.assert_allclose(p.closure_phases(img), cp_f)
    np.testing.assert_allclose(p.log_closure_amplitudes(img), lca_f)


def test_closures_invariant_to_shift_and_scale(problem16):
    """Translating an image multiplies V by a station-based phase; scaling it cancels in closure ratios."""
    p = problem16
    img = np.zeros((1, 16, 16))
    img[0, 4:10, 5:11] = _random_image(6, seed=2)[0]
    moved = 3.0 * np.roll(img, (2, -3), axis=(1, 2))
    Y = p(np.stack([img, moved]))
    d = p.residual(Y[1:], Y[0])[0]
    np.testing.assert_allclose(p.split_data(d)[0], 0.0, atol=1e-10)
    np.testing.assert_allclose(p.split_data(d)[1], 0.0, atol=1e-10)


def test_station_corruption_cancels_in_closures(problem16):
    p = ClosurePhaseInterferometry(npix=16, station_corruption={"gain_std": 0.3, "gain_offset": 0.3})
    x = crescent_image(16)
    clean = p(x[None])[0]
    y = p.observe(x, random_state=3, noise=False)
    np.testing.assert_allclose(p.residual(y, clean), 0.0, atol=1e-10)
    vis = p.visibilities(x)
    assert np.max(np.abs(np.abs(p.observed_visibilities_) / np.abs(vis) - 1)) > 0.1  # gains applied
    assert np.max(np.abs(np.angle(p.observed_visibilities_ / vis))) > 1.0  # phases applied
    # SNRs, hence the closure sigmas, are unchanged by the gains.
    corrupted_std = p.noise_std.copy()
    np.testing.assert_allclose(corrupted_std, p.set_noise_from_image(x), rtol=1e-12)


def test_residual_wraps_closure_phases(xp, small8):
    p = small8
    rng = np.random.default_rng(0)
    y = rng.normal(size=p.y_shape)
    delta = 0.1 * rng.normal(size=(2, *p.y_shape))
    turns = np.zeros((2, *p.y_shape))
    turns[:, : p.n_closure_phases] = 2 * np.pi * rng.integers(-2, 3, size=(2, p.n_closure_phases))
    r = p.residual(xp.asarray(y + delta + turns), xp.asarray(y))
    np.testing.assert_allclose(np.asarray(r), delta, atol=1e-12)


def test_namespaces_agree(xp, small8):
    p = small8
    X = _random_image(8, seed=4)[None].repeat(3, axis=0) * np.arange(1, 4)[:, None, None, None]
    ref = p(X)
    out = p(xp.asarray(X))
    assert type(out) is type(xp.asarray(X))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-12, atol=1e-14)
    vis = p.visibilities(xp.asarray(X[0]))
    np.testing.assert_allclose(np.asarray(vis), p.visibilities(X[0]), rtol=1e-12)
    out32 = p(xp.asarray(X, dtype=xp.float32))
    assert out32.dtype == xp.float32
    p.set_noise_from_image(X[0])
    y = p(X[:1])[0]
    chi = p.chisq_cphase(xp.asarray(X), xp.asarray(y))
    np.testing.assert_allclose(np.asarray(chi), p.chisq_cphase(X, y), rtol=1e-12)
    assert p.chisq_cphase(xp.asarray(X[0]), xp.asarray(y)) == pytest.approx(0.0, abs=1e-20)


def test_torch_gradcheck(small8):
    torch = pytest.importorskip("torch")
    p = small8
    x = torch.tensor(_random_image(8, seed=5)[None] + 0.002, dtype=torch.float64, requires_grad=True)
    np.testing.assert_allclose(p(x).detach().numpy(), p(x.detach().numpy()), rtol=1e-12, atol=1e-14)
    assert torch.autograd.gradcheck(p, (x,), eps=1e-7, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------
# noise and observations
# --------------------------------------------------------------------------


def test_observe_noise_model(problem16):
    p = ClosurePhaseInterferometry(npix=16, random_state=7)
    with pytest.raises(RuntimeError, match="observe"):
        _ = p.noise_std
    x = crescent_image(16)
    y = p.observe(x)
    assert y.shape == p.y_shape
    z = (p.observed_visibilities_ - p.visibilities(x)) / p.vis_sigma
    assert np.mean(z.real**2) == pytest.approx(1.0, abs=0.15)
    assert np.mean(z.imag**2) == pytest.approx(1.0, abs=0.15)
    assert abs(np.mean(z.real * z.imag)) < 0.1
    # noise_std follows the observed amplitudes: sqrt(sum sigma^2 / |V|^2) on each triangle.
    look = _vis_lookup(p)
    inv_snr2 = (p.vis_sigma / np.abs(p.observed_visibilities_)) ** 2
    sig = [
        np.sqrt(sum(inv_snr2[look[(t, a, b)][0]] for a, b in ((i, j), (j, k), (k, i))))
        for t, (i, j, k) in zip(p.triangle_times, p.triangles)
    ]
    np.testing.assert_allclose(p.split_data(p.noise_std)[0], sig, rtol=1e-12)
    assert p.noise_std[-1] == p.flux_sigma
    np.testing.assert_array_equal(p.observe(x, random_state=1), p.observe(x, random_state=1))
    assert not np.array_equal(p.observe(x, random_state=1), p.observe(x, random_state=2))
    assert np.array_equal(p.observation_, p.observe(x, random_state=2))


def test_observe_keeps_namespace(xp, small8):
    p = small8
    x = xp.asarray(crescent_image(8))
    y = p.observe(x, random_state=0)
    assert type(y) is type(x) and tuple(y.shape) == p.y_shape
    w = p.misfit_weights(like=y)
    assert tuple(w.shape) == p.y_shape


def test_chisq_of_noisy_data_is_about_one():
    p = ClosurePhaseInterferometry(npix=16)
    x = crescent_image(16)
    chis = []
    for seed in range(4):
        p.observe(x, random_state=seed)
        chis.append((p.chisq_cphase(x), p.chisq_logcamp(x)))
    chis = np.mean(chis, axis=0)
    assert 0.8 < chis[0] < 1.25 and 0.8 < chis[1] < 1.25


# --------------------------------------------------------------------------
# metrics, helpers and factory
# --------------------------------------------------------------------------


def test_metrics(problem16):
    p = ClosurePhaseInterferometry(npix=16)
    x = crescent_image(16)
    p.set_noise_from_image(x)
    y = p(x[None])[0]
    m = p.metrics(x, x, y=y)
    assert (
        m["relative_l2"] == 0 and m["psnr"] == np.inf and m["chisq_cphase"] == 0 and m["chisq_logcamp"] == 0
    )
    assert set(m) >= {"psnr_blur10", "psnr_blur15", "psnr_blur20"}
    other = crescent_image(16, position_angle_deg=90.0)
    m1 = p.metrics(other, x, y=y)
    mse = np.mean((other - x) ** 2)
    assert m1["psnr"] == pytest.approx(10 * np.log10(x.max() ** 2 / mse))
    assert m1["chisq_cphase"] == pytest.approx(p.chisq_cphase(other, y))
    both = p.metrics(np.stack([other, other]), x, y=y)
    assert both["psnr"] == pytest.approx(m1["psnr"]) and both["chisq_logcamp"] == pytest.approx(
        m1["chisq_logcamp"]
    )
    assert "chisq_cphase" not in ClosurePhaseInterferometry(npix=16).metrics(other, x)


def test_blur_circular_moments():
    img = np.zeros((41, 41))
    img[20, 20] = 2.0
    out = blur_circular(img, fwhm_uas=10.0, pixel_size_uas=1.0)
    assert out.sum() == pytest.approx(2.0)
    r2 = ((np.arange(41) - 20) ** 2)[:, None] + ((np.arange(41) - 20) ** 2)[None, :]
    sigma = 10.0 / (2 * np.sqrt(2 * np.log(2)))
    assert (out * r2).sum() / out.sum() == pytest.approx(2 * sigma**2, rel=1e-3)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside ehtim
def test_blur_matches_ehtim():
    eh = pytest.importorskip("ehtim")
    x = crescent_image(32, 160.0)
    im = eh.image.make_empty(32, 160.0 * eh.RADPERUAS, *M87)
    im.imvec = x.ravel()
    for fwhm in (10.0, 20.0):
        ref = im.blur_circ(fwhm * eh.RADPERUAS).imvec.reshape(x.shape)
        np.testing.assert_allclose(blur_circular(x, fwhm, 5.0), ref, rtol=1e-9, atol=1e-15)


def test_crescent_image():
    x = crescent_image(64, 160.0, diameter_uas=40.0, position_angle_deg=90.0, flux_jy=0.6)
    assert x.shape == (1, 64, 64) and x.sum() == pytest.approx(0.6) and x.min() >= 0
    centres = (31.5 - np.arange(64)) * 2.5  # east / north offsets of columns / rows
    east, north = (x[0] * centres[None, :]).sum() / 0.6, (x[0] * centres[:, None]).sum() / 0.6
    assert east > 2.0 and abs(north) < 1e-9  # brighter to the east, which is on the left
    r = np.hypot(centres[None, :], centres[:, None])
    assert (x[0] * r).sum() / 0.6 == pytest.approx(20.0, abs=1.0)  # mean radius ~ diameter / 2
    north = crescent_image(64, position_angle_deg=0.0)
    assert np.unravel_index(np.argmax(north[0]), (64, 64))[0] < 32
    with pytest.raises(ValueError, match="asymmetry"):
        crescent_image(asymmetry=2.0)


def test_factory():
    inst = kd.problems.make("interferometry", size="small", random_state=0)
    p = inst.problem
    assert p.npix == 32 and inst.x_true.shape == p.x_shape and inst.y.shape == p.y_shape
    assert abs(inst.y[-1] - 0.6) < 5 * p.flux_sigma
    again = kd.problems.make("interferometry", size="small", random_state=0)
    np.testing.assert_array_equal(inst.y, again.y)
    with pytest.raises(ValueError, match="size"):
        kd.problems.make("interferometry", size="huge")


def test_station_tables_and_sources(tmp_path, problem16):
    table = geo.load_station_table("EHT2017")
    path = tmp_path / "arr.txt"
    path.write_text(
        "# my array\n"
        + "\n".join(f"{n} {x} {y} {z} {s[0]}" for n, (x, y, z), s in zip(table.names, table.xyz, table.sefd))
    )
    mapping = {n: (*xyz, s[0]) for n, xyz, s in zip(table.names, table.xyz, table.sefd)}
    for arr in (path, str(path), mapping, "eht2017"):
        p = ClosurePhaseInterferometry(npix=16, array=arr, ra_hours=M87[0], dec_deg=M87[1])
        np.testing.assert_array_equal(p.uv, problem16.uv)
    sgra = ClosurePhaseInterferometry(npix=16, source="SgrA*")
    assert sgra.n_visibilities > 0 and sgra.n_visibilities != problem16.n_visibilities


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"npix": 1}, "npix"),
        ({"fov_uas": -1.0}, "fov_uas"),
        ({"tadv_s": 0}, "tadv_s"),
        ({"array": "NOPE"}, "array"),
        ({"array": {"A": (1.0, 2.0, 3.0, 10.0)}}, "two stations"),
        ({"source": "Vega"}, "source"),
        ({"ra_hours": 3.0}, "dec_deg"),
        ({"elevation_limits_deg": (50, 10)}, "elevation_limits_deg"),
        ({"pulse": "gauss"}, "pulse"),
        ({"station_corruption": {"gain": 0.1}}, "station_corruption"),
        ({"station_corruption": "yes"}, "station_corruption"),
        ({"flux_sigma": 0.0}, "flux_sigma"),
        ({"tstart_gmst_h": 5.0, "tstop_gmst_h": 5.0}, "no baseline"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClosurePhaseInterferometry(npix=kwargs.pop("npix", 8), **kwargs)


def test_bad_shapes(small8):
    with pytest.raises(ValueError):
        small8(np.zeros((2, 1, 9, 9)))
    with pytest.raises(ValueError, match="observe"):
        small8.observe(np.zeros((2, 1, 8, 8)))


def test_plot_smoke(small8):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = crescent_image(8)
    ax = small8.plot(x=x, x_true=x, y=small8(x[None])[0])
    assert len(ax) == 3
    plt.close("all")


# --------------------------------------------------------------------------
# eht-imaging as an oracle
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ehtim_obs(problem16):
    eh = pytest.importorskip("ehtim")
    table = geo.load_station_table("EHT2017")
    tarr = np.array(
        [
            (n, *xyz, s[0], s[1], 0j, 0j, 0.0, 0.0, 0.0)
            for n, xyz, s in zip(table.names, table.xyz, table.sefd)
        ],
        dtype=eh.const_def.DTARR,
    )
    img = _random_image(16, seed=11)
    im = eh.image.make_empty(16, 160.0 * eh.RADPERUAS, *M87, rf=230e9, source="M87")
    im.imvec = img.ravel()
    obs = im.observe(
        eh.array.Array(tarr),
        10.0,
        600.0,
        0.0,
        24.0,
        2e9,
        ttype="direct",
        add_th_noise=False,
        timetype="GMST",
        verbose=False,
    )
    return eh, im, obs, img


def test_agrees_with_ehtim_visibilities(problem16, ehtim_obs):
    _, _, obs, img = ehtim_obs
    p = problem16
    ours = {
        (t, p.stations[a], p.stations[b]): m for m, (t, (a, b)) in enumerate(zip(p.vis_times, p.baselines))
    }
    idx = np.array([ours[(d["time"], d["t1"], d["t2"])] for d in obs.data])
    assert len(idx) == p.n_visibilities == len(set(idx))
    np.testing.assert_allclose(p.uv[idx, 0], obs.data["u"], rtol=1e-10)
    np.testing.assert_allclose(p.uv[idx, 1], obs.data["v"], rtol=1e-10)
    np.testing.assert_allclose(p.vis_sigma[idx], obs.data["sigma"], rtol=1e-12)
    np.testing.assert_allclose(p.visibilities(img)[idx], obs.data["vis"], rtol=1e-9)


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")  # inside ehtim
def test_agrees_with_ehtim_closures_and_chisq(problem16, ehtim_obs):
    eh, im, obs, img = ehtim_obs
    from ehtim.imaging import imager_utils as iu

    p = problem16
    names = np.array(p.stations)
    p.set_noise_from_image(img)
    y = p(img[None])[0]
    cp, lca, _ = p.split_data(y)
    s_cp, s_lca, _ = p.split_data(p.noise_std)

    ref_cp = obs.c_phases(count="min", ang_unit="rad")
    key = {(t, *names[s]): i for i, (t, s) in enumerate(zip(p.triangle_times, p.triangles))}
    idx = np.array([key[(r["time"], r["t1"], r["t2"], r["t3"])] for r in ref_cp])
    assert len(idx) == p.n_closure_phases == len(set(idx))
    np.testing.assert_allclose(np.angle(np.exp(1j * (cp[idx] - ref_cp["cphase"]))), 0.0, atol=1e-9)
    np.testing.assert_allclose(s_cp[idx], ref_cp["sigmacp"], rtol=1e-9)

    ref_lca = obs.c_amplitudes(count="min", ctype="logcamp", debias=False)
    key = {(t, *names[s]): i for i, (t, s) in enumerate(zip(p.quadrangle_times, p.quadrangles))}
    idx = np.array([key[(r["time"], r["t1"], r["t2"], r["t3"], r["t4"])] for r in ref_lca])
    assert len(idx) == p.n_log_closure_amplitudes == len(set(idx))
    np.testing.assert_allclose(lca[idx], ref_lca["camp"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(s_lca[idx], ref_lca["sigmaca"], rtol=1e-9)

    model = _random_image(16, seed=12)
    data_cp, sig_cp, A_cp = iu.chisqdata_cphase(obs, im, [])
    data_lca, sig_lca, A_lca = iu.chisqdata_logcamp(obs, im, [], debias=False)
    assert p.chisq_cphase(model, y) == pytest.approx(
        iu.chisq_cphase(model.ravel(), A_cp, data_cp, sig_cp), rel=1e-8
    )
    assert p.chisq_logcamp(model, y) == pytest.approx(
        iu.chisq_logcamp(model.ravel(), A_lca, data_lca, sig_lca), rel=1e-8
    )
