"""Linear problems: explicit matrix, box inpainting, super-resolution, Gaussian deblurring.

Oracles: the adjoint identity, scipy.ndimage.convolve, torch's interpolate
and conv2d, plain NumPy reshapes and analytic Gaussian kernels.
"""

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

import kalmandiff as kd
from kalmandiff._backend import to_numpy
from kalmandiff.problems import GaussianDeblur, Inpainting, LinearProblem, SuperResolution
from kalmandiff.problems.imaging import smooth_test_image
from kalmandiff.problems.linear import LinearOperatorProblem

# deepinv-style registry of linear operators, one factory per entry.
LINEAR_OPERATORS = {
    "linear": lambda: LinearProblem(np.random.default_rng(1).standard_normal((5, 12)), (3, 4), noise_std=0.1),
    "inpainting-random": lambda: Inpainting((2, 12, 10), random_state=3),
    "inpainting-box": lambda: Inpainting((1, 8, 8), box=(2, 1, 3, 5)),
    "sr-bicubic-2": lambda: SuperResolution((2, 8, 12), factor=2),
    "sr-bicubic-4": lambda: SuperResolution((1, 16, 8), factor=4),
    "sr-bicubic-noaa": lambda: SuperResolution((1, 8, 8), factor=2, antialias=False),
    "sr-avgpool": lambda: SuperResolution((2, 8, 12), factor=4, kind="avgpool"),
    "deblur": lambda: GaussianDeblur((2, 9, 11), kernel_size=7, kernel_std=1.2),
    "deblur-wide": lambda: GaussianDeblur((1, 6, 5), kernel_size=61, kernel_std=3.0),
}


def _f64(xp, a):
    return xp.asarray(np.asarray(a, dtype=float), dtype=xp.float64)


@pytest.fixture(params=sorted(LINEAR_OPERATORS))
def operator(request):
    return LINEAR_OPERATORS[request.param]()


# -- generic linear-operator properties --------------------------------------


def test_adjointness(operator, xp):
    like = xp.asarray(0.0, dtype=xp.float64)
    gap = operator.adjointness_test(random_state=0, like=like)
    # scale: <Au, v> is a sum of prod(y_shape) terms of order one.
    assert abs(gap) < 1e-10 * math.prod(operator.y_shape)


def test_adjointness_explicit(operator, xp):
    rng = np.random.default_rng(2)
    u = rng.standard_normal((3, *operator.x_shape))
    v = rng.standard_normal((3, *operator.y_shape))
    Au = to_numpy(operator(_f64(xp, u)))
    ATv = to_numpy(operator.adjoint(_f64(xp, v)))
    np.testing.assert_allclose(
        np.sum(Au * v, axis=tuple(range(1, v.ndim))),
        np.sum(u * ATv, axis=tuple(range(1, u.ndim))),
        rtol=1e-12,
        atol=1e-12,
    )


def test_as_matrix_matches_forward_and_adjoint(operator, xp):
    A = operator.as_matrix()
    d, m = math.prod(operator.x_shape), math.prod(operator.y_shape)
    assert A.shape == (m, d)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, *operator.x_shape))
    Y = rng.standard_normal((4, *operator.y_shape))
    out = to_numpy(operator(_f64(xp, X)))
    np.testing.assert_allclose(out.reshape(4, m), X.reshape(4, d) @ A.T, atol=1e-12)
    back = to_numpy(operator.adjoint(_f64(xp, Y)))
    np.testing.assert_allclose(back.reshape(4, d), Y.reshape(4, m) @ A, atol=1e-12)
    # the generic basis-vector construction agrees with any specialised one
    np.testing.assert_allclose(LinearOperatorProblem.as_matrix(operator), A, atol=1e-12)


def test_namespace_shape_and_dtype(operator, xp):
    X = xp.asarray(np.random.default_rng(4).standard_normal((2, *operator.x_shape)), dtype=xp.float32)
    Y = operator(X)
    assert type(Y) is type(X)
    assert tuple(Y.shape) == (2, *operator.y_shape)
    assert Y.dtype == xp.float32
    assert tuple(operator.adjoint(Y).shape) == (2, *operator.x_shape)


def test_numpy_and_strict_agree(operator):
    import array_api_strict as xs

    X = np.random.default_rng(5).standard_normal((2, *operator.x_shape))
    np.testing.assert_allclose(to_numpy(operator(xs.asarray(X))), operator(X), rtol=1e-13, atol=1e-14)


def test_noise_cov(operator):
    m = math.prod(operator.y_shape)
    cov = operator.noise_cov()
    var = np.broadcast_to(np.asarray(operator.noise_std, dtype=float) ** 2, operator.y_shape).ravel()
    np.testing.assert_array_equal(cov, np.diag(var))
    np.testing.assert_array_equal(operator.noise_cov(diagonal=True), var)
    assert cov.shape == (m, m)


def test_adjoint_rejects_bad_shape(operator):
    with pytest.raises(ValueError, match="adjoint expects"):
        operator.adjoint(np.zeros((2, 1)))


def test_torch_gradcheck(operator):
    torch = pytest.importorskip("torch")
    X = torch.randn((1, *operator.x_shape), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X.requires_grad_(True)
    assert operator.differentiable
    assert torch.autograd.gradcheck(operator, (X,), fast_mode=True)
    np.testing.assert_allclose(operator(X).detach().numpy(), operator(X.detach().numpy()), atol=1e-13)


# -- LinearProblem --------------------------------------------------------------


def test_linear_problem_matches_matmul(xp):
    rng = np.random.default_rng(6)
    A = rng.standard_normal((4, 6))
    problem = LinearProblem(A, (2, 3), noise_std=[0.1, 0.2, 0.3, 0.4])
    X = rng.standard_normal((5, 2, 3))
    np.testing.assert_allclose(to_numpy(problem(_f64(xp, X))), np.einsum("md,jd->jm", A, X.reshape(5, 6)))
    np.testing.assert_array_equal(problem.matrix, A)
    np.testing.assert_allclose(np.diag(problem.noise_cov()), [0.01, 0.04, 0.09, 0.16])
    assert problem.y_shape == (4,)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.ones(3), 3), "2-D"),
        ((np.ones((2, 3)), 4), "columns"),
        ((np.full((2, 2), np.nan), 2), "finite"),
        ((np.ones((2, 2)), 2, -1.0), "noise_std"),
        ((np.ones((2, 2)), 2, np.ones(3)), "noise_std"),
        ((np.ones((2, 2)), (0,)), "x_shape"),
    ],
)
def test_linear_problem_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        LinearProblem(*args)


def test_as_matrix_refuses_large():
    with pytest.raises(ValueError, match="max_entries"):
        GaussianDeblur((1, 8, 8), kernel_size=3).as_matrix(max_entries=100)
    with pytest.raises(ValueError, match="max_entries"):
        LinearOperatorProblem.as_matrix(Inpainting((1, 8, 8), box=(1, 1, 2, 2)), max_entries=100)


# -- Gaussian deblurring ---------------------------------------------------------


def test_deblur_kernel_is_truncated_normalised_gaussian():
    problem = GaussianDeblur((1, 8, 8), kernel_size=61, kernel_std=3.0)
    k = problem.kernel
    assert k.shape == (61, 61)
    assert k.sum() == pytest.approx(1.0, abs=1e-14)
    # gaussian_filter's default truncation: radius int(4 * 3 + 0.5) = 12 per axis.
    t = np.arange(61) - 30
    g = np.where(np.abs(t) <= 12, np.exp(-(t**2) / (2 * 3.0**2)), 0.0)
    g /= g.sum()
    np.testing.assert_allclose(k, np.outer(g, g), atol=1e-15)
    np.testing.assert_allclose(problem.kernel_1d, g, atol=1e-15)


@pytest.mark.parametrize(
    "shape, ksize, std", [((1, 20, 17), 9, 1.5), ((2, 6, 7), 61, 3.0), ((1, 5, 1), 5, 1.0)]
)
def test_deblur_matches_scipy_mirror_convolution(xp, shape, ksize, std):
    problem = GaussianDeblur(shape, kernel_size=ksize, kernel_std=std)
    X = np.random.default_rng(7).standard_normal((2, *shape))
    expected = np.stack([[ndi.convolve(img, problem.kernel, mode="mirror") for img in x] for x in X])
    np.testing.assert_allclose(to_numpy(problem(_f64(xp, X))), expected, atol=1e-13)


def test_deblur_matches_reference_reflection_pad_conv2d():
    torch = pytest.importorskip("torch")
    problem = GaussianDeblur((3, 64, 64), kernel_size=61, kernel_std=3.0)
    X = np.random.default_rng(8).standard_normal((2, 3, 64, 64))
    weight = torch.from_numpy(problem.kernel)[None, None].repeat(3, 1, 1, 1)
    padded = torch.nn.functional.pad(torch.from_numpy(X), (30, 30, 30, 30), mode="reflect")
    expected = torch.nn.functional.conv2d(padded, weight, groups=3).numpy()
    np.testing.assert_allclose(problem(X), expected, atol=1e-13)


def test_deblur_preserves_constants():
    problem = GaussianDeblur((1, 10, 10), kernel_size=7, kernel_std=2.0)
    np.testing.assert_allclose(problem(np.full((1, 1, 10, 10), 0.3)), 0.3, atol=1e-15)


@pytest.mark.parametrize(
    "kwargs", [{"kernel_size": 4}, {"kernel_size": 0}, {"kernel_std": 0.0}, {"shape": (8, 8)}]
)
def test_deblur_bad_arguments(kwargs):
    kwargs = {"shape": (1, 8, 8), **kwargs}
    with pytest.raises(ValueError):
        GaussianDeblur(**kwargs)


# -- super-resolution ------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_bicubic_matches_torch_interpolate(xp, factor, antialias, hw):
    torch = pytest.importorskip("torch")
    H, W = hw
    problem = SuperResolution((2, H, W), factor=factor, antialias=antialias)
    X = np.random.default_rng(9).standard_normal((3, 2, H, W))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(X),
        size=(H // factor, W // factor),
        mode="bicubic",
        antialias=antialias,
        align_corners=False,
    ).numpy()
    np.testing.assert_allclose(to_numpy(problem(_f64(xp, X))), expected, atol=1e-13)


def test_avgpool_is_block_mean(xp):
    problem = SuperResolution((3, 8, 12), factor=4, kind="avgpool")
    X = np.random.default_rng(10).standard_normal((2, 3, 8, 12))
    expected = X.reshape(2, 3, 2, 4, 3, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(to_numpy(problem(_f64(xp, X))), expected, atol=1e-15)


def test_super_resolution_factor_one_is_identity():
    for kind in ("bicubic", "avgpool"):
        problem = SuperResolution((1, 6, 6), factor=1, kind=kind)
        np.testing.assert_allclose(problem.as_matrix(), np.eye(36), atol=1e-15)


@pytest.mark.parametrize(
    "kwargs", [{"factor": 3}, {"factor": 0}, {"factor": 1.5}, {"kind": "nearest"}, {"noise_std": -0.1}]
)
def test_super_resolution_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SuperResolution((1, 8, 8), **kwargs)


# -- inpainting ------------------------------------------------------------------


def test_inpainting_mask_reproducible_and_seed_dependent():
    a = Inpainting((1, 64, 64), random_state=0)
    b = Inpainting((1, 64, 64), random_state=0)
    np.testing.assert_array_equal(a.mask, b.mask)
    boxes = {Inpainting((1, 64, 64), random_state=s).box for s in range(6)}
    assert len(boxes) > 1


def test_inpainting_box_respects_scaled_ranges():
    # the paper's (105, 180) sides and 32-pixel margin, scaled from 256 to 64 pixels
    lo, hi, margin = round(105 / 4), round(180 / 4), 8
    for seed in range(20):
        top, left, h, w = Inpainting((1, 64, 64), random_state=seed).box
        assert lo <= h < hi and lo <= w < hi
        assert margin <= top and top + h <= 64 - margin
        assert margin <= left and left + w <= 64 - margin


def test_inpainting_paper_size_box_ranges():
    for seed in range(5):
        top, left, h, w = Inpainting((3, 256, 256), random_state=seed).box
        assert 105 <= h < 180 and 105 <= w < 180
        assert 32 <= top <= 256 - 32 - h and 32 <= left <= 256 - 32 - w


def test_inpainting_forward_zeroes_the_box(xp):
    problem = Inpainting((2, 8, 9), box=(1, 2, 3, 4), noise_std=0.0)
    X = np.random.default_rng(11).standard_normal((3, 2, 8, 9))
    expected = X.copy()
    expected[:, :, 1:4, 2:6] = 0.0
    np.testing.assert_array_equal(to_numpy(problem(_f64(xp, X))), expected)
    assert problem.mask.sum() == 8 * 9 - 12


@pytest.mark.parametrize(
    "kwargs",
    [
        {"box": (6, 0, 4, 2)},
        {"box": (0, 0, 0, 2)},
        {"box": (1, 2)},
        {"box_size_range": (5, 5)},
        {"box_size_range": (4, 9), "margin": 2},
        {"shape": (1, 8)},
    ],
)
def test_inpainting_bad_arguments(kwargs):
    kwargs = {"shape": (1, 8, 8), **kwargs}
    with pytest.raises(ValueError):
        Inpainting(**kwargs)


# -- metrics and factories --------------------------------------------------------


def test_image_metrics_average_over_members():
    x_true = smooth_test_image((1, 16, 16), random_state=0)
    ens = np.stack([x_true + 0.05, x_true - 0.1])
    problem = Inpainting((1, 16, 16), random_state=0)
    out = problem.metrics(ens, x_true)
    # MSE 0.0025 and 0.01 on data range 2 (no clipping: x_true lies in [-0.9, 0.9])
    assert out["psnr"] == pytest.approx(np.mean([10 * np.log10(4 / 0.0025), 10 * np.log10(4 / 0.01)]))
    assert 0 < out["ssim"] < 1
    expected_rel = np.mean([np.linalg.norm(e - x_true) / np.linalg.norm(x_true) for e in ens])
    assert out["relative_l2"] == pytest.approx(expected_rel)
    assert np.isnan(
        Inpainting((1, 8, 8), random_state=0).metrics(x_true[:, :8, :8], x_true[:, :8, :8])["ssim"]
    )


def test_metrics_clip_estimate_to_image_range():
    x_true = np.full((1, 16, 16), 0.5)
    out = Inpainting((1, 16, 16), random_state=0).metrics(np.full((1, 16, 16), 5.0), x_true)
    assert out["psnr"] == pytest.approx(10 * np.log10(4 / 0.5**2))  # the estimate counts as 1.0
    assert out["relative_l2"] == pytest.approx(9.0)  # on the raw estimate


def test_smooth_test_image_is_deterministic_and_in_range():
    a = smooth_test_image((3, 32, 32), random_state=4)
    np.testing.assert_array_equal(a, smooth_test_image((3, 32, 32), random_state=4))
    assert a.min() >= -1 and a.max() <= 1
    assert not np.allclose(a[0], a[1])
    # smooth: neighbouring pixels differ by much less than the range
    assert np.abs(np.diff(a, axis=-1)).max() < 0.5


# inpainting's default family is the 16x16 digits (32x32 at "medium"); the others default to the
# smooth images (32x32, 64x64)
@pytest.mark.parametrize(
    "name, small, medium", [("inpainting", 16, 32), ("super-resolution", 32, 64), ("deblur", 32, 64)]
)
def test_registered_factories(name, small, medium):
    inst = kd.problems.make(name, size="small", random_state=3, prior="gaussian")
    again = kd.problems.make(name, size="small", random_state=3, prior="gaussian")
    problem = inst.problem
    assert inst.x_true.shape == problem.x_shape == (1, small, small)
    assert inst.y.shape == problem.y_shape
    np.testing.assert_array_equal(inst.y, again.y)
    residual = inst.y - problem(inst.x_true[None])[0]
    assert 0.03 < residual.std() < 0.07  # noise_std 0.05
    assert kd.problems.make(name, size="medium").x_true.shape == (1, medium, medium)
    smooth = kd.problems.make(name, size="small", random_state=3, family="smooth")
    assert smooth.x_true.shape == (1, 32, 32) and smooth.info["family"] == "smooth"
    with pytest.raises(ValueError, match="size"):
        kd.problems.make(name, size="huge")


def test_factory_kwargs_override():
    inst = kd.problems.make("super-resolution", shape=(1, 16, 16), factor=2, noise_std=0.0)
    assert inst.problem.y_shape == (1, 8, 8)
    np.testing.assert_allclose(inst.y, inst.problem(inst.x_true[None])[0])


def test_linear_gaussian_factory():
    try:
        inst = kd.problems.make("linear-gaussian", random_state=0)
    except NotImplementedError:
        pytest.skip("GaussianPrior is not implemented yet")
    problem = inst.problem
    assert isinstance(problem, LinearProblem)
    assert inst.x_true.shape == problem.x_shape and inst.y.shape == problem.y_shape
    assert inst.prior is not None
    np.testing.assert_array_equal(inst.y, kd.problems.make("linear-gaussian", random_state=0).y)
    # the pieces an exact posterior needs fit together
    post = inst.prior.posterior(problem.matrix, inst.y, problem.noise_cov())
    assert tuple(post.event_shape) == problem.x_shape
    assert problem.noise_cov().shape == (4, 4) and np.allclose(np.diag(problem.noise_cov()), 0.01)
