"""PSNR and SSIM against analytic values and a brute-force re-implementation."""

import numpy as np
import pytest

from kalmandiff.metrics import psnr, relative_l2, ssim

C1 = (0.01 * 2.0) ** 2  # data range 2
C2 = (0.03 * 2.0) ** 2


def _ssim_brute_force(a, b, data_range=2.0, size=11, sigma=1.5):
    """Wang et al. (2004) SSIM written window by window, with a 2-D Gaussian window."""
    r = size // 2
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    w = np.exp(-(yy**2 + xx**2) / (2 * sigma**2))
    w /= w.sum()
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            p, q = a[i : i + size, j : j + size], b[i : i + size, j : j + size]
            mp, mq = np.sum(w * p), np.sum(w * q)
            vp, vq = np.sum(w * (p - mp) ** 2), np.sum(w * (q - mq) ** 2)
            cpq = np.sum(w * (p - mp) * (q - mq))
            values.append((2 * mp * mq + c1) * (2 * cpq + c2) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
    return np.mean(values)


# -- PSNR -----------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0.1, -0.02, 0.5])
def test_psnr_constant_offset(xp, delta):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16))
    # MSE = delta**2, so PSNR = 20 log10(2 / |delta|)
    value = psnr(xp.asarray(x + delta), xp.asarray(x))
    assert value == pytest.approx(20 * np.log10(2 / abs(delta)), rel=1e-12)


def test_psnr_data_range_and_identity():
    x = np.linspace(0, 1, 50)
    assert psnr(x + 0.1, x, data_range=1.0) == pytest.approx(20.0)
    assert psnr(x, x) == np.inf
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, data_range=0)
    with pytest.raises(ValueError, match="shapes"):
        psnr(x[:10], x)


def test_psnr_ensemble_is_mean_over_members():
    x = np.zeros((4, 4))
    ens = np.stack([x + 0.1, x + 0.2, x - 0.4])
    expected = np.mean([20 * np.log10(2 / d) for d in (0.1, 0.2, 0.4)])
    assert psnr(ens, x) == pytest.approx(expected)


def test_psnr_accepts_torch():
    torch = pytest.importorskip("torch")
    x = torch.zeros(5, dtype=torch.float64)
    assert psnr(x + 0.2, x) == pytest.approx(20.0)


# -- SSIM -----------------------------------------------------------------------


def test_ssim_identical_images(xp):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 16, 20))
    assert ssim(xp.asarray(x), xp.asarray(x)) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("a, c", [(0.2, 0.1), (-0.5, 0.3), (0.0, -0.4)])
def test_ssim_constant_images_analytic(a, c):
    # constant images: variances and covariance vanish, so only the luminance term remains
    x = np.full((16, 16), a)
    expected = (2 * a * (a + c) + C1) / (a**2 + (a + c) ** 2 + C1)
    assert ssim(x + c, x) == pytest.approx(expected, rel=1e-10)


def test_ssim_constant_offset_matches_brute_force():
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.8, 0.8, (16, 18))
    # an offset leaves the contrast-structure term at one; the brute force computes everything
    assert ssim(x + 0.15, x) == pytest.approx(_ssim_brute_force(x + 0.15, x), rel=1e-10)


def test_ssim_general_pair_matches_brute_force():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (15, 17))
    y = 0.6 * x + 0.3 * rng.standard_normal(x.shape) - 0.1
    assert ssim(y, x) == pytest.approx(_ssim_brute_force(y, x), rel=1e-10)
    assert ssim(y, x, data_range=1.0) == pytest.approx(_ssim_brute_force(y, x, data_range=1.0), rel=1e-10)
    assert ssim(y, x) == pytest.approx(ssim(x, y), rel=1e-12)  # symmetric


def test_ssim_channels_and_ensemble_average():
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (3, 12, 12))
    y = x + 0.2 * rng.standard_normal(x.shape)
    per_channel = [_ssim_brute_force(y[c], x[c]) for c in range(3)]
    assert ssim(y, x) == pytest.approx(np.mean(per_channel), rel=1e-10)
    ens = np.stack([y, x])
    assert ssim(ens, x) == pytest.approx((ssim(y, x) + 1.0) / 2, rel=1e-12)


def test_ssim_against_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (20, 20))
    y = x + 0.3 * rng.standard_normal(x.shape)
    expected = skm.structural_similarity(
        y, x, data_range=2.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(y, x) == pytest.approx(expected, rel=1e-8)


def test_ssim_bad_input():
    x = np.zeros((8, 8))
    with pytest.raises(ValueError, match="smaller"):
        ssim(x, x)
    with pytest.raises(ValueError, match="win_size"):
        ssim(x, x, win_size=4)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        ssim(np.zeros(20), np.zeros(20))


def test_relative_l2_unchanged():
    x = np.array([3.0, 4.0])
    assert relative_l2(x + np.array([0.3, 0.4]), x) == pytest.approx(0.1)
