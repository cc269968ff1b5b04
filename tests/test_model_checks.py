"""check_prior and check_forward (issue 16, item 4): the shipped models pass; broken ones are named."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.problems import ForwardProblem
from kalmandiff.testing import check_forward, check_prior, mixture_case, problem_instance

PRIORS = {
    "gaussian": lambda: kd.priors.GaussianPrior(np.arange(4.0), np.diag([0.5, 1.0, 2.0, 1.5])),
    "mixture": lambda: mixture_case().prior,
    "grf": lambda: kd.priors.GaussianRandomFieldPrior(shape=(1, 8, 8), alpha=2.5, tau=3.0),
}


@pytest.mark.parametrize("name", PRIORS)
def test_shipped_priors_pass(name):
    report = check_prior(PRIORS[name]())
    assert set(report.passed) == {
        "check_denoise_shape_dtype",
        "check_denoise_small_sigma",
        "check_sample_shape",
        "check_tweedie",
    }


@pytest.mark.parametrize("name", kd.problems.available())
def test_registered_problems_pass(name):
    report = check_forward(problem_instance(name))
    assert "check_forward_shapes" in report.passed and "check_forward_batch" in report.passed


def test_linear_problems_check_adjoint_and_autograd():
    report = check_forward(problem_instance("deblur"))
    assert {"check_forward_adjoint", "check_forward_autograd"} <= set(report.passed)


class _Shifted(kd.priors.GaussianPrior):
    """Broken: denoises towards the wrong point (D(x, sigma) = x + 0.1 even as sigma -> 0)."""

    def denoise(self, x, sigma):
        return super().denoise(x, sigma) + 0.1


class _Float64Only(kd.priors.GaussianPrior):
    """Broken: returns float64 for float32 input."""

    def denoise(self, x, sigma):
        return np.asarray(super().denoise(np.asarray(x, dtype=np.float64), sigma))


class _Overconfident(kd.priors.GaussianPrior):
    """Broken: shrinks twice as hard as the conditional mean (not Tweedie-consistent)."""

    def denoise(self, x, sigma):
        D = super().denoise(x, sigma)
        return D + (D - x)


@pytest.mark.parametrize(
    "cls, name",
    [
        (_Shifted, "check_denoise_small_sigma"),
        (_Float64Only, "check_denoise_shape_dtype"),
        (_Overconfident, "check_tweedie"),
    ],
)
def test_broken_priors_are_caught_by_name(cls, name):
    report = check_prior(cls(np.zeros(3), 1.0), raise_on_failure=False)
    assert name in report.failed
    with pytest.raises(AssertionError, match=name):
        report.raise_if_failed()


class _BatchNormalised(ForwardProblem):
    """Broken: divides by the batch's mean, so a member's result depends on the others."""

    x_shape, y_shape, noise_std = (3,), (3,), 0.1

    def forward(self, X):
        return X / np.mean(np.abs(X))


class _WrongAdjoint(kd.problems.LinearProblem):
    """Broken: an adjoint that is not the transpose."""

    def adjoint(self, Y):
        return 2.0 * super().adjoint(Y)


class _NoGradient(ForwardProblem):
    """Broken: claims differentiability but detaches (autograd gives zero)."""

    x_shape, y_shape, noise_std, differentiable = (3,), (3,), 0.1, True

    def forward(self, X):
        try:
            import torch

            if isinstance(X, torch.Tensor):
                return X.detach() ** 2
        except ImportError:  # pragma: no cover
            pass
        return X**2


@pytest.mark.parametrize(
    "problem, name",
    [
        (_BatchNormalised(), "check_forward_batch"),
        (_WrongAdjoint(np.eye(3), (3,), noise_std=0.1), "check_forward_adjoint"),
        (_NoGradient(), "check_forward_autograd"),
    ],
)
def test_broken_forward_models_are_caught_by_name(problem, name):
    pytest.importorskip("torch")
    report = check_forward(problem, raise_on_failure=False)
    assert list(report.failed) == [name]


@pytest.mark.slow
def test_the_shipped_network_prior_passes():
    """The pretrained Navier-Stokes denoiser (TorchDenoiser): samples through its PF-ODE (~45 s)."""
    pytest.importorskip("torch")
    from kalmandiff.priors.pretrained import load_navier_stokes_prior

    report = check_prior(load_navier_stokes_prior(), n_samples=200)
    assert not report.skipped and len(report.passed) == 4
