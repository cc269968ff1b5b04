"""The spun-up Navier-Stokes family: its instances, its shipped network and its best stationary Gaussian."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.priors.pretrained import stationary_gaussian_cov


def _stationary_fields(n, side, rng):
    """Real fields with an anisotropic stationary spectrum (smoothed white noise), shape ``(n, 1, side, side)``."""
    kx = np.fft.fftfreq(side)[None, :]
    ky = np.fft.fftfreq(side)[:, None]
    filt = np.exp(-(kx**2) / 0.02 - ky**2 / 0.05)
    white = rng.standard_normal((n, 1, side, side))
    return np.real(np.fft.ifft2(np.fft.fft2(white) * filt)) + 0.3


def _power(fields):
    mean = fields.mean(axis=0)
    return mean, np.mean(np.abs(np.fft.fft2(fields - mean)) ** 2, axis=0)[0] / fields[0, 0].size


def test_stationary_cov_is_the_shift_averaged_sample_covariance():
    # Wiener-Khinchin, computed independently: the sample covariance averaged over all cyclic shifts
    rng = np.random.default_rng(0)
    fields = _stationary_fields(40, 6, rng)
    mean, power = _power(fields)
    fluct = (fields - mean)[:, 0]
    side = fluct.shape[-1]
    expected = np.zeros((side * side, side * side))
    for a in range(side):
        for b in range(side):
            shifted = np.roll(fluct, (a, b), axis=(1, 2)).reshape(len(fluct), -1)
            expected += shifted.T @ shifted / len(fluct)
    expected /= side * side
    np.testing.assert_allclose(stationary_gaussian_cov(power), expected, atol=1e-12)
    # a covariance missing the 1 / pixels normalisation of the power would fail here
    assert not np.allclose(stationary_gaussian_cov(power * side * side), expected, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 3.0])
def test_gaussian_prior_of_the_spectrum_denoises_as_the_per_mode_wiener_filter(sigma):
    rng = np.random.default_rng(1)
    fields = _stationary_fields(50, 8, rng)
    mean, power = _power(fields)
    prior = kd.priors.GaussianPrior(mean, stationary_gaussian_cov(power))
    x = fields[:5] + sigma * rng.standard_normal(fields[:5].shape)
    wiener = mean + np.real(np.fft.ifft2(np.fft.fft2(x - mean) * power / (power + sigma**2)))
    np.testing.assert_allclose(np.asarray(prior.denoise(x, sigma)), wiener, atol=1e-10)
    # a filter with the gain of the wrong variance (sigma instead of sigma^2) differs
    wrong = mean + np.real(np.fft.ifft2(np.fft.fft2(x - mean) * power / (power + sigma)))
    assert not np.allclose(np.asarray(prior.denoise(x, sigma)), wrong, atol=1e-6)


def test_shipped_gaussian_is_the_wiener_filter_of_the_shipped_spectrum():
    from kalmandiff.priors.pretrained import NS_SPUNUP_GAUSSIAN_PATH, ns_spunup_gaussian_prior

    saved = np.load(NS_SPUNUP_GAUSSIAN_PATH)
    mean, power = saved["mean"], saved["power"]
    assert mean.shape == (1, 32, 32) and power.shape == (32, 32)
    # the power of real fields is symmetric under k -> -k, so the covariance is real
    np.testing.assert_allclose(power, np.roll(power[::-1, ::-1], 1, axis=(0, 1)), atol=1e-10 * power.max())
    prior = ns_spunup_gaussian_prior()
    x = mean + 2.0 * np.random.default_rng(2).standard_normal((3, 1, 32, 32))
    wiener = mean + np.real(np.fft.ifft2(np.fft.fft2(x - mean) * power / (power + 4.0)))
    np.testing.assert_allclose(np.asarray(prior.denoise(x, 2.0)), wiener, atol=1e-9)


def test_spunup_instance_does_not_depend_on_the_prior():
    pytest.importorskip("torch")
    net = kd.problems.make("navier-stokes", family="spun-up", random_state=5)
    gauss = kd.problems.make("navier-stokes", family="spun-up", random_state=5, prior="gaussian")
    assert net.info["prior"] == "network" and gauss.info["prior"] == "gaussian"
    assert net.info["family"] == "spun-up" and net.info["t_prior"] == 1.0
    assert isinstance(net.prior, kd.priors.TorchDenoiser) and net.prior.event_shape == (1, 32, 32)
    assert isinstance(gauss.prior, kd.priors.GaussianPrior)
    np.testing.assert_array_equal(net.x_true, gauss.x_true)
    np.testing.assert_array_equal(net.y, gauss.y)
    assert repr(net.problem) == repr(gauss.problem)
    # the truth is the GRF family's draw of the same stream, evolved one time unit
    grf = kd.problems.make("navier-stokes", random_state=5, t_prior=1.0)
    np.testing.assert_array_equal(net.x_true, grf.x_true)
    assert not np.array_equal(net.x_true, kd.problems.make("navier-stokes", random_state=5).x_true)
    other = kd.problems.make("navier-stokes", family="spun-up", random_state=6, prior="gaussian")
    assert not np.array_equal(other.x_true, gauss.x_true)


def test_spunup_refuses_settings_its_priors_were_not_trained_for():
    with pytest.raises(ValueError, match="family must be"):
        kd.problems.make("navier-stokes", family="turbulent")
    with pytest.raises(ValueError, match="spun-up"):
        kd.problems.make("navier-stokes", family="spun-up", size="medium")
    with pytest.raises(ValueError, match="spun-up"):
        kd.problems.make("navier-stokes", family="spun-up", reynolds=1000.0)
    with pytest.raises(ValueError, match="prior must be"):
        kd.problems.make("navier-stokes", family="spun-up", prior="diffusion")
    with pytest.raises(ValueError, match="prior="):
        kd.problems.make("navier-stokes", prior="gaussian")


def test_shipped_network_denoises_fresh_spunup_fields_better_than_the_gaussian():
    # ground truth: fields drawn and evolved here, from a stream the training never used
    pytest.importorskip("torch")
    from kalmandiff.priors.pretrained import load_ns_spunup_prior, ns_spunup_gaussian_prior
    from kalmandiff.problems.navier_stokes import NavierStokes2D, sample_ns_grf

    solver = NavierStokes2D(resolution=32, reynolds=200.0, subsample=1, noise_std=0.0, dtype="float64")
    fields = solver.solve(sample_ns_grf(24, 32, np.random.default_rng(12345)), t_final=1.0)
    sigma = float(fields.std())
    noisy = fields + sigma * np.random.default_rng(7).standard_normal(fields.shape)
    net_err = np.linalg.norm(np.asarray(load_ns_spunup_prior().denoise(noisy, sigma), dtype=float) - fields)
    gauss_err = np.linalg.norm(np.asarray(ns_spunup_gaussian_prior().denoise(noisy, sigma)) - fields)
    assert net_err < 0.95 * gauss_err
    # and it does denoise (a network returning its input would fail here)
    assert net_err < 0.6 * np.linalg.norm(noisy - fields)
