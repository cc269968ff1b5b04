"""TorchDenoiser (DLPack, chunking, autograd), adapters, checkpoints, training and the shipped prior."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from kalmandiff.diffusion import sample as ode_sample  # noqa: E402
from kalmandiff.estimators.enkg import EnKGSolver  # noqa: E402
from kalmandiff.priors.adapters import (  # noqa: E402
    EDMPrecond,
    ScaledDenoiser,
    ScoreDenoiser,
    VPDenoiser,
    from_diffusers,
    load_edm_checkpoint,
    save_edm_checkpoint,
)
from kalmandiff.priors.gaussian import GaussianPrior  # noqa: E402
from kalmandiff.priors.grf import GaussianRandomFieldPrior  # noqa: E402
from kalmandiff.priors.torch_denoiser import TorchDenoiser  # noqa: E402
from kalmandiff.priors.training import edm_loss, random_roll, train_denoiser  # noqa: E402
from kalmandiff.priors.unet import SmallUNet  # noqa: E402

# --------------------------------------------------------------------------
# independent torch re-implementations of analytic denoisers
# --------------------------------------------------------------------------


class TorchGRFDenoiser(torch.nn.Module):
    """``D(x, sigma) = ifft(fft(x) * mu / (mu + sigma^2))`` with full complex FFTs (the prior uses rfft)."""

    def __init__(self, spectrum):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(np.asarray(spectrum, dtype=np.float64)))

    def forward(self, x, sigma):
        gain = self.mu / (self.mu + sigma.reshape(-1, 1, 1, 1) ** 2)
        return torch.fft.ifftn(torch.fft.fftn(x, dim=(-2, -1)) * gain, dim=(-2, -1)).real.to(x.dtype)


class Recorder(torch.nn.Module):
    """``D(x, sigma) = x / (1 + sigma^2)`` (the N(0, I) denoiser), recording what the network sees."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, sigma):
        out = x / (1.0 + sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2)
        self.calls.append({"n": x.shape[0], "ptr": x.data_ptr(), "out": out, "sigma": sigma.clone()})
        return out


def gaussian_case(d=4, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((d, d))
    cov = B @ B.T / d + 0.3 * np.eye(d)
    mean = rng.standard_normal(d)
    return mean, cov


# --------------------------------------------------------------------------
# TorchDenoiser: DLPack zero-copy, dtypes, chunking, namespaces
# --------------------------------------------------------------------------


def test_numpy_zero_copy_in_and_out():
    rec = Recorder()
    prior = TorchDenoiser(rec, event_shape=(2, 3), batch_size=64)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    out = prior.denoise(x, 1.0)
    assert rec.calls[0]["ptr"] == x.ctypes.data  # the network read x's own memory
    assert out.ctypes.data == rec.calls[0]["out"].data_ptr()  # and we got its output's memory
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, x / 2.0)


def test_dtype_mismatch_and_strided_input_are_copied_correctly():
    rec = Recorder()
    prior = TorchDenoiser(rec, event_shape=(3,), batch_size=64)  # float32 network
    base = np.random.default_rng(1).standard_normal((6, 6))
    x = base[::2, ::2]  # float64, non-contiguous
    out = prior.denoise(x, 2.0)
    assert out.dtype == np.float64 and out.shape == (3, 3)
    np.testing.assert_allclose(out, x / 5.0, rtol=1e-6)
    assert rec.calls[0]["ptr"] != x.ctypes.data


@pytest.mark.parametrize("n, batch_size", [(13, 4), (4, 4), (1, 3), (7, None)])
def test_chunks_cover_every_particle(n, batch_size):
    rec = Recorder()
    prior = TorchDenoiser(rec, event_shape=(2,), batch_size=batch_size)
    x = np.arange(2 * n, dtype=np.float32).reshape(n, 2) + 1.0
    sigma = np.linspace(0.5, 2.0, n)
    out = prior.denoise(x, sigma)
    np.testing.assert_allclose(out, x / (1.0 + sigma[:, None] ** 2), rtol=1e-6)
    sizes = [c["n"] for c in rec.calls]
    assert sum(sizes) == n
    assert max(sizes) <= (batch_size or n)
    seen = np.concatenate([c["sigma"].numpy() for c in rec.calls])
    np.testing.assert_allclose(seen, sigma, rtol=1e-6)  # each chunk got its own particles' sigmas


def test_namespaces_follow_input(xp):
    grf = GaussianRandomFieldPrior((1, 8, 8), alpha=2.0, tau=2.0, scale=1.0)
    prior = TorchDenoiser(TorchGRFDenoiser(grf.spectrum), (1, 8, 8), batch_size=3, dtype=torch.float64)
    x_np = np.random.default_rng(2).standard_normal((5, 1, 8, 8))
    x = xp.asarray(x_np)
    sigma = xp.asarray(np.array([0.1, 0.5, 1.0, 2.0, 5.0]))
    out = prior.denoise(x, sigma)
    assert type(out) is type(x)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(np.asarray(out), np.asarray(grf.denoise(x, sigma)), atol=1e-12)


def test_torch_path_keeps_autograd():
    grf = GaussianRandomFieldPrior((1, 4, 4), alpha=2.0, tau=2.0, scale=1.0)
    prior = TorchDenoiser(TorchGRFDenoiser(grf.spectrum), (1, 4, 4), batch_size=2, dtype=torch.float64)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: prior.denoise(t, 0.7), (x,))
    out = prior.denoise(x, torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    assert out.requires_grad and torch.is_tensor(out)
    # The denoiser is linear and self-adjoint: grad of sum(D x) is D applied to ones.
    out.sum().backward()
    ones = torch.ones_like(x)
    expected = grf.denoise(ones.detach(), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(x.grad, expected)


def test_solver_clone_shares_the_network():
    from sklearn.base import clone

    prior = TorchDenoiser(Recorder(), (2,))
    solver = EnKGSolver(prior, n_particles=4, n_steps=2)
    assert clone(solver).prior.module is prior.module


def test_constructor_errors():
    rec = Recorder()
    with pytest.raises(ValueError, match="module"):
        TorchDenoiser(3, (2,))
    with pytest.raises(ValueError, match="event_shape"):
        TorchDenoiser(rec, ())
    with pytest.raises(ValueError, match="batch_size"):
        TorchDenoiser(rec, (2,), batch_size=0)
    with pytest.raises(ValueError, match="dtype"):
        TorchDenoiser(rec, (2,), dtype=torch.int32)
    prior = TorchDenoiser(rec, (2,))
    with pytest.raises(ValueError, match="expects a batch"):
        prior.denoise(np.zeros((3, 4), dtype=np.float32), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        prior.denoise(np.zeros((3, 2), dtype=np.float32), np.ones(2))


# --------------------------------------------------------------------------
# the torch GRF denoiser reproduces the analytic prior inside EnKG and sampling
# --------------------------------------------------------------------------


def test_enkg_particles_match_analytic_grf_prior():
    shape = (1, 16, 16)
    grf = GaussianRandomFieldPrior(shape, alpha=2.5, tau=3.0, scale=1.0)
    net = TorchDenoiser(TorchGRFDenoiser(grf.spectrum), shape, batch_size=5, dtype=torch.float64)
    rng = np.random.default_rng(3)
    A = rng.standard_normal((12, 256)) / 16.0
    x_true = grf.sample(1, random_state=4)[0]
    y = A @ x_true.ravel() + 0.05 * rng.standard_normal(12)

    def forward(X):
        return np.reshape(X, (X.shape[0], -1)) @ A.T

    runs = []
    for prior in (grf, net):
        # localization=None: "auto" leaves a learned prior unlocalised, and this compares the denoisers
        solver = EnKGSolver(
            prior, n_particles=16, n_steps=10, localization=None, random_state=7, verbose=False
        )
        runs.append(solver.fit(y, forward, noise_std=0.05).particles_)
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-9, atol=1e-9)


def test_sample_matches_ode_with_analytic_denoiser():
    shape = (1, 8, 8)
    grf = GaussianRandomFieldPrior(shape, alpha=2.0, tau=2.0, scale=1.0)
    net = TorchDenoiser(TorchGRFDenoiser(grf.spectrum), shape, dtype=torch.float64)
    got = net.sample(3, random_state=5, n_steps=8)
    ref = ode_sample(grf.denoise, 3, shape, n_steps=8, random_state=5)
    np.testing.assert_allclose(got, ref, atol=1e-10)


# --------------------------------------------------------------------------
# adapters: exact conversions of analytic models
# --------------------------------------------------------------------------


def vp_gaussian_eps(mean, cov, abar_of_t, kind="epsilon"):
    """An epsilon / v / score / x0 model of N(mean, cov) under VP noising, from the exact VP score."""
    m = torch.as_tensor(mean)
    C = torch.as_tensor(cov)
    eye = torch.eye(len(mean), dtype=C.dtype)

    def model(x_t, t):
        out = []
        for xi, ti in zip(x_t, t):
            ab = abar_of_t(ti).to(C.dtype)
            resid = xi - torch.sqrt(ab) * m
            score = -torch.linalg.solve(ab * C + (1 - ab) * eye, resid)
            eps = -torch.sqrt(1 - ab) * score
            x0 = (xi - torch.sqrt(1 - ab) * eps) / torch.sqrt(ab)
            out.append(
                {
                    "epsilon": eps,
                    "score": score,
                    "v_prediction": torch.sqrt(ab) * eps - torch.sqrt(1 - ab) * x0,
                    "sample": x0,
                }[kind]
            )
        return torch.stack(out)

    return model


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "score", "sample"])
def test_vp_continuous_model_converts_to_analytic_edm_denoiser(kind):
    mean, cov = gaussian_case()
    beta_d, beta_min = 19.9, 0.1

    def abar(t_scaled):  # Song et al.'s VP-SDE, written independently of the adapter
        t = t_scaled / 999.0
        return torch.exp(-0.5 * beta_d * t**2 - beta_min * t)

    den = VPDenoiser(vp_gaussian_eps(mean, cov, abar, kind), prediction=kind)
    x = np.random.default_rng(0).standard_normal((6, 4)) * 3
    sigma = np.array([0.002, 0.1, 0.5, 1.0, 10.0, 80.0])
    got = den(torch.as_tensor(x), torch.as_tensor(sigma)).numpy()
    np.testing.assert_allclose(got, GaussianPrior(mean, cov).denoise(x, sigma), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("timestep", ["continuous", "nearest"])
def test_vp_discrete_schedule_is_exact_at_its_levels(timestep):
    mean, cov = gaussian_case(seed=1)
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    table = torch.as_tensor(abar)

    def abar_of_t(t):
        return table[int(round(float(t)))]

    den = VPDenoiser(vp_gaussian_eps(mean, cov, abar_of_t), alphas_cumprod=abar, timestep=timestep)
    idx = np.array([0, 10, 250, 999])
    sigma = np.sqrt((1 - abar[idx]) / abar[idx])
    x = np.random.default_rng(1).standard_normal((4, 4))
    got = den(torch.as_tensor(x), torch.as_tensor(sigma)).numpy()
    np.testing.assert_allclose(got, GaussianPrior(mean, cov).denoise(x, sigma), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(den.sigma_to_t(torch.as_tensor(sigma)).numpy(), idx, atol=1e-6)


def test_score_and_precond_and_scaled_adapters_are_exact():
    mean, cov = gaussian_case(seed=2)
    g = GaussianPrior(mean, cov)
    x = np.random.default_rng(2).standard_normal((5, 4)) * 2
    sigma = np.array([0.01, 0.3, 1.0, 4.0, 50.0])
    ref = g.denoise(x, sigma)

    def exact(t, s):
        return torch.as_tensor(g.denoise(t.numpy(), s.numpy()))

    # score network: s = (D - x) / sigma^2
    score = ScoreDenoiser(lambda t, s: (exact(t, s) - t) / s[:, None] ** 2)
    np.testing.assert_allclose(score(torch.as_tensor(x), torch.as_tensor(sigma)).numpy(), ref, rtol=1e-10)

    # EDM preconditioning around the ideal raw network F* = (D - c_skip x) / c_out
    sd = 0.7

    def raw(u, c_noise):
        s = torch.exp(4 * c_noise)[:, None]
        xx = u * torch.sqrt(s**2 + sd**2)
        return (exact(xx, s[:, 0]) - sd**2 / (s**2 + sd**2) * xx) / (s * sd / torch.sqrt(s**2 + sd**2))

    pre = EDMPrecond(raw, sigma_data=sd)
    np.testing.assert_allclose(pre(torch.as_tensor(x), torch.as_tensor(sigma)).numpy(), ref, rtol=1e-8)

    # units: a network on u = x / 10 of N(m, C) is the denoiser of N(10 m, 100 C) in x
    scaled = ScaledDenoiser(lambda u, s: exact(u, s), scale=10.0)
    g10 = GaussianPrior(10 * mean, 100 * cov)
    got = scaled(torch.as_tensor(10 * x), torch.as_tensor(10 * sigma)).numpy()
    np.testing.assert_allclose(got, g10.denoise(10 * x, 10 * sigma), rtol=1e-8, atol=1e-8)
    # [0, 1] data with a [-1, 1] network: x = (u + 1) / 2
    sym = ScaledDenoiser.unit_to_symmetric(lambda u, s: exact(u, s))
    g01 = GaussianPrior(0.5 * mean + 0.5, 0.25 * cov)
    got = sym(torch.as_tensor(0.5 * x + 0.5), torch.as_tensor(0.5 * sigma)).numpy()
    np.testing.assert_allclose(got, g01.denoise(0.5 * x + 0.5, 0.5 * sigma), rtol=1e-8, atol=1e-8)


def test_adapter_errors():
    with pytest.raises(ValueError, match="prediction"):
        VPDenoiser(lambda x, t: x, prediction="noise")
    with pytest.raises(ValueError, match="alphas_cumprod"):
        VPDenoiser(lambda x, t: x, alphas_cumprod=[0.5, 0.9])
    with pytest.raises(ValueError, match="sigma_data"):
        EDMPrecond(torch.nn.Identity(), sigma_data=-1.0)
    with pytest.raises(ValueError, match="scale"):
        ScaledDenoiser(lambda x, s: x, scale=0.0)


@pytest.mark.slow  # importing diffusers alone takes several seconds
def test_diffusers_unet_round_trip(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction")
    unet.save_pretrained(tmp_path / "unet")
    scheduler.save_pretrained(tmp_path / "sched")
    unet2 = diffusers.UNet2DModel.from_pretrained(tmp_path / "unet")
    sched2 = diffusers.DDPMScheduler.from_pretrained(tmp_path / "sched")
    den = from_diffusers(unet2, sched2, timestep="nearest")
    assert den.prediction == "v_prediction"
    prior = TorchDenoiser(den, (1, 8, 8), batch_size=3)

    abar = sched2.alphas_cumprod.double().numpy()
    t_idx = np.array([3, 40, 97, 60, 10])
    sigma = np.sqrt((1 - abar[t_idx]) / abar[t_idx])
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    got = prior.denoise(x, sigma)
    # Independent: diffusers' own x0 from a v-prediction at x_t = sqrt(abar) x (the EDM x scaled back).
    with torch.no_grad():
        ab = torch.as_tensor(abar[t_idx], dtype=torch.float32)[:, None, None, None]
        x_t = torch.as_tensor(x) * torch.sqrt(ab)
        v = unet(x_t, torch.as_tensor(t_idx)).sample
        ref = (torch.sqrt(ab) * x_t - torch.sqrt(1 - ab) * v).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------


def test_load_edm_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    cfg = {"unet": {"model_channels": 8, "channel_mult": [1, 2]}, "sigma_data": 0.4, "event_shape": [1, 8, 8]}
    net = EDMPrecond(SmallUNet(model_channels=8, channel_mult=(1, 2)), sigma_data=0.4)
    for p in net.parameters():  # zero-initialised layers would hide a failed load
        torch.nn.init.normal_(p, std=0.1)
    save_edm_checkpoint(tmp_path / "m.pt", net, cfg, ema=net, note="tiny")
    loaded = load_edm_checkpoint(tmp_path / "m.pt")
    x, s = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 5.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, s), net.eval()(x, s))
    assert loaded.checkpoint_info["note"] == "tiny"

    # a foreign layout: {"config", "state_dict"} with a custom architecture via model_factory
    torch.save(
        {"config": {"sigma_data": 1.0}, "state_dict": EDMPrecond(torch.nn.Identity()).state_dict()},
        tmp_path / "other.pt",
    )
    other = load_edm_checkpoint(tmp_path / "other.pt", model_factory=lambda c: _ConstantNet())
    np.testing.assert_allclose(
        other(x, s).detach().numpy(), (x / (1 + s[:, None, None, None] ** 2)).numpy(), rtol=1e-6
    )

    with pytest.raises(FileNotFoundError):
        load_edm_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="EDM-style"):
        load_edm_checkpoint(tmp_path / "bad.pt")


class _ConstantNet(torch.nn.Module):
    """F = 0: EDMPrecond with sigma_data = 1 is then the N(0, I) denoiser c_skip x = x / (1 + sigma^2)."""

    def forward(self, x, c_noise):
        return torch.zeros_like(x)


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------


def test_training_reduces_loss_on_tiny_data(tmp_path):
    torch.set_num_threads(1)
    grf = GaussianRandomFieldPrior((1, 8, 8), alpha=3.0, tau=1.0, scale=0.5)
    data = grf.sample(128, random_state=0).astype(np.float32)

    def held_out_loss(net):
        gen = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return float(edm_loss(net.eval(), torch.as_tensor(data[:64]), gen))

    kw = dict(
        model_channels=8,
        channel_mult=(1, 2),
        batch_size=32,
        lr=3e-3,
        warmup_steps=5,
        ema_halflife_steps=5.0,
        random_state=0,
        progress=False,
        augment=random_roll(),
    )
    res0 = train_denoiser(data, n_steps=1, **kw)
    res = train_denoiser(data, n_steps=60, checkpoint=tmp_path / "ck.pt", checkpoint_every=25, **kw)
    assert res.steps == 60 and len(res.losses) == 60
    assert held_out_loss(res.ema) < 0.8 * held_out_loss(res0.ema)
    # Resuming from the checkpoint continues to n_steps, not from scratch.
    more = train_denoiser(data, n_steps=70, checkpoint=tmp_path / "ck.pt", **kw)
    assert more.steps == 70 and more.losses[:60] == res.losses
    # The trained network is a TorchDenoiser after a save/load round trip.
    res.save(tmp_path / "m.pt")
    prior = TorchDenoiser(load_edm_checkpoint(tmp_path / "m.pt"), (1, 8, 8))
    out = prior.denoise(data[:3], 0.5)
    np.testing.assert_allclose(out, res.denoiser().denoise(data[:3], 0.5), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="data"):
        train_denoiser(np.zeros((4, 1, 1, 1, 1)), n_steps=1, progress=False)


# --------------------------------------------------------------------------
# the shipped Navier-Stokes prior
# --------------------------------------------------------------------------


def test_shipped_navier_stokes_prior():
    from kalmandiff.priors.pretrained import NS_PRIOR_PATH, load_navier_stokes_prior

    if not __import__("os").path.isfile(NS_PRIOR_PATH):
        pytest.skip("shipped weights not present")
    prior = load_navier_stokes_prior(batch_size=8)
    assert prior.event_shape == (1, 32, 32)
    x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)) * 5.0
    # At a tiny noise level the denoiser is (nearly) the identity: c_skip -> 1, c_out -> 0.
    np.testing.assert_allclose(prior.denoise(x, 1e-4), x, atol=1e-3)
    # Units: the physical denoiser is 10 * (network denoiser in x / 10).
    inner = prior.module.denoiser
    with torch.no_grad():
        ref = 10 * inner(torch.as_tensor(x / 10, dtype=torch.float32), torch.full((3,), 0.2)).numpy()
    np.testing.assert_allclose(prior.denoise(x.astype(np.float32), 2.0), ref, rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(np.abs(prior.denoise(x, 80.0)).max()))


@pytest.mark.slow
def test_shipped_prior_beats_the_grf_prior_on_fresh_navier_stokes_fields():
    from kalmandiff.metrics import relative_l2
    from kalmandiff.priors.pretrained import NS_PRIOR_PATH, load_navier_stokes_prior
    from kalmandiff.problems.navier_stokes import NavierStokes2D, ns_grf_params, sample_ns_grf

    if not __import__("os").path.isfile(NS_PRIOR_PATH):
        pytest.skip("shipped weights not present")
    # Fields made as the training data were, from a seed the training did not use.
    evolve = NavierStokes2D(resolution=32, t_final=5.0, subsample=1, noise_std=0.0, dtype="float64")
    x = evolve.solve(sample_ns_grf(8, 32, random_state=12345))
    noisy = x + 3.0 * np.random.default_rng(0).standard_normal(x.shape)
    grf = GaussianRandomFieldPrior((1, 32, 32), **ns_grf_params(32))
    err_net = relative_l2(load_navier_stokes_prior().denoise(noisy, 3.0), x)
    err_grf = relative_l2(grf.denoise(noisy, 3.0), x)
    assert err_net < 0.8 * err_grf
