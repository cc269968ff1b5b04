"""The Navier-Stokes structure study's measures, against exact answers (benchmarks/studies/ns_structure.py)."""

import numpy as np
import pytest

from benchmarks.studies.ns_structure import excess_kurtosis, stationary_gaussian_denoiser


@pytest.mark.parametrize(
    "draw, expected, tol",
    [  # tolerances: a few standard errors of the sample kurtosis at 400,000 draws
        (lambda rng, n: rng.standard_normal(n), 0.0, 0.03),
        (lambda rng, n: rng.laplace(size=n), 3.0, 0.2),
        (lambda rng, n: rng.uniform(size=n), -1.2, 0.01),
    ],
)
def test_excess_kurtosis_matches_the_distributions(draw, expected, tol):
    values = draw(np.random.default_rng(0), 400_000)
    assert excess_kurtosis(values) == pytest.approx(expected, abs=tol)


def test_stationary_gaussian_denoiser_is_the_exact_wiener_filter_of_a_stationary_field():
    """Fitted to many draws of a known stationary Gaussian field, it is that field's exact denoiser."""
    rng = np.random.default_rng(1)
    R = 16
    k = np.fft.fftfreq(R) * R
    power = 4.0 / (1.0 + k[:, None] ** 2 + k[None, :] ** 2) ** 1.5  # per-mode variance, times R^2
    mean = np.linspace(-1.0, 1.0, R)[None, :] * np.ones((R, 1))

    def draw(n):
        z = np.fft.fft2(rng.standard_normal((n, 1, R, R)))
        return mean + np.real(np.fft.ifft2(z * np.sqrt(power)))

    denoise = stationary_gaussian_denoiser(draw(20_000))
    x = draw(8) + 0.7 * rng.standard_normal((8, 1, R, R))
    exact = mean + np.real(np.fft.ifft2(np.fft.fft2(x - mean) * power / (power + 0.7**2)))
    np.testing.assert_allclose(denoise(x, 0.7), exact, atol=0.03)
    # and the check has teeth: a filter that ignores the mean field is far off
    assert (
        np.abs(denoise(x, 0.7) - np.real(np.fft.ifft2(np.fft.fft2(x) * power / (power + 0.49)))).max() > 0.3
    )
