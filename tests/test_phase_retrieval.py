"""Fourier phase retrieval: a NumPy re-implementation, invariances, Parseval, autograd."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff._backend import to_numpy
from kalmandiff.problems import PhaseRetrieval


def _reference(X, pad):
    """Straight NumPy version of the paper's map: |fftshift(fft2(ifftshift(pad(x)), norm='ortho'))|."""
    ph, pw = pad
    Xp = np.pad(X, [(0, 0), (0, 0), (ph, ph), (pw, pw)])
    F = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(Xp, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return np.abs(F)


def _f64(xp, a):
    return xp.asarray(np.asarray(a, dtype=float), dtype=xp.float64)


@pytest.mark.parametrize(
    "shape, oversample", [((1, 8, 8), 2.0), ((2, 12, 10), 2.0), ((1, 9, 7), 1.0), ((1, 6, 6), 0.0)]
)
def test_matches_numpy_reference(xp, shape, oversample):
    problem = PhaseRetrieval(shape, oversample=oversample, noise_std=0.0)
    _, H, W = shape
    pad = (int(oversample / 8 * H), int(oversample / 8 * W))
    assert problem.pad == pad
    assert problem.y_shape == (shape[0], H + 2 * pad[0], W + 2 * pad[1])
    X = np.random.default_rng(0).standard_normal((3, *shape))
    Y = problem(_f64(xp, X))
    assert type(Y) is type(_f64(xp, X))
    np.testing.assert_allclose(to_numpy(Y), _reference(X, pad), atol=1e-13)


def test_paper_padding():
    problem = PhaseRetrieval((3, 256, 256), oversample=2.0)
    assert problem.pad == (64, 64)
    assert problem.y_shape == (3, 384, 384)


def test_parseval(xp):
    problem = PhaseRetrieval((2, 10, 8), noise_std=0.0)
    X = np.random.default_rng(1).standard_normal((4, 2, 10, 8))
    Y = to_numpy(problem(_f64(xp, X)))
    np.testing.assert_allclose(
        np.linalg.norm(Y.reshape(4, -1), axis=1), np.linalg.norm(X.reshape(4, -1), axis=1)
    )


def test_global_sign_invariance(xp):
    problem = PhaseRetrieval((1, 8, 8), noise_std=0.0)
    X = np.random.default_rng(2).standard_normal((2, 1, 8, 8))
    np.testing.assert_allclose(to_numpy(problem(_f64(xp, -X))), to_numpy(problem(_f64(xp, X))), atol=1e-14)


def test_shift_invariance_within_support(xp):
    # content with a zero border of 2 pixels can move by up to 2 pixels without leaving the canvas
    problem = PhaseRetrieval((1, 12, 12), noise_std=0.0)
    X = np.zeros((1, 1, 12, 12))
    X[..., 2:10, 2:10] = np.random.default_rng(3).standard_normal((8, 8))
    shifted = np.roll(X, (2, -1), axis=(-2, -1))
    np.testing.assert_allclose(
        to_numpy(problem(_f64(xp, shifted))), to_numpy(problem(_f64(xp, X))), atol=1e-13
    )
    # the phases, by contrast, do change: the map really discards them
    F = np.fft.fft2(np.pad(X, [(0, 0), (0, 0), (3, 3), (3, 3)]))
    Fs = np.fft.fft2(np.pad(shifted, [(0, 0), (0, 0), (3, 3), (3, 3)]))
    assert not np.allclose(F, Fs)


def test_twin_image_invariance(xp):
    # for real x, the point reflection x[-n] has the conjugate transform, and flipping both axes
    # is that reflection followed by a circular shift: |F| cannot tell an image from its twin
    problem = PhaseRetrieval((1, 8, 6), noise_std=0.0)
    X = np.random.default_rng(4).standard_normal((1, 1, 8, 6))
    twin = X[..., ::-1, ::-1].copy()
    np.testing.assert_allclose(to_numpy(problem(_f64(xp, twin))), to_numpy(problem(_f64(xp, X))), atol=1e-13)


def test_float32_dtype(xp):
    problem = PhaseRetrieval((1, 8, 8))
    Y = problem(xp.asarray(np.ones((1, 1, 8, 8)), dtype=xp.float32))
    assert Y.dtype == xp.float32


def test_torch_matches_and_gradcheck():
    torch = pytest.importorskip("torch")
    problem = PhaseRetrieval((1, 4, 4), noise_std=0.0)
    X = torch.randn((2, 1, 4, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X.requires_grad_(True)
    assert problem.differentiable
    np.testing.assert_allclose(
        problem(X).detach().numpy(), _reference(X.detach().numpy(), problem.pad), atol=1e-13
    )
    assert torch.autograd.gradcheck(problem, (X,))


def test_observe_adds_noise_of_the_right_size():
    problem = PhaseRetrieval((1, 32, 32), noise_std=0.05)
    x = np.random.default_rng(5).standard_normal((1, 32, 32))
    y = problem.observe(x, random_state=0)
    residual = y - problem(x[None])[0]
    assert residual.std() == pytest.approx(0.05, rel=0.05)


@pytest.mark.parametrize(
    "kwargs", [{"oversample": -1.0}, {"oversample": float("nan")}, {"noise_std": -0.1}, {"shape": (8, 8)}]
)
def test_bad_arguments(kwargs):
    kwargs = {"shape": (1, 8, 8), **kwargs}
    with pytest.raises(ValueError):
        PhaseRetrieval(**kwargs)


@pytest.mark.parametrize("family, side", [("digits", 16), ("smooth", 32)])
def test_registered_factory(family, side):
    inst = kd.problems.make("phase-retrieval", size="small", random_state=1, family=family, prior="gaussian")
    assert inst.x_true.shape == (1, side, side)
    assert inst.y.shape == inst.problem.y_shape == (1, side * 3 // 2, side * 3 // 2)
    again = kd.problems.make("phase-retrieval", random_state=1, family=family, prior="gaussian")
    np.testing.assert_array_equal(inst.y, again.y)
    metrics = inst.problem.metrics(inst.x_true, inst.x_true)
    assert metrics["psnr"] == np.inf and metrics["ssim"] == pytest.approx(1.0) and metrics["relative_l2"] == 0


# --------------------------------------------------------------------------
# symmetries and alignment, against a brute-force search of the canvas group
# --------------------------------------------------------------------------


def _canvas_group_images(problem, x):
    """Every image in the window that a sign, a point reflection and a circular shift of the padded
    canvas make of ``x`` (one channel): all of them keep |F|; only those that stay inside the window
    are images of the unknown's domain."""
    (ph, pw), (_, H, W) = problem.pad, problem.x_shape
    canvas = np.pad(x, [(0, 0), (ph, ph), (pw, pw)])
    inside = np.zeros(canvas.shape, dtype=bool)
    inside[:, ph : ph + H, pw : pw + W] = True
    out = []
    for sign in (1.0, -1.0):
        for reflected in (canvas, np.roll(canvas[:, ::-1, ::-1], (1, 1), axis=(-2, -1))):
            for dy in range(canvas.shape[-2]):
                for dx in range(canvas.shape[-1]):
                    moved = sign * np.roll(reflected, (dy, dx), axis=(-2, -1))
                    if not np.any(moved[~inside]):
                        out.append(moved[:, ph : ph + H, pw : pw + W])
    return out


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 9, 7), (1, 6, 10)])
def test_symmetries_are_exact_and_the_only_ones_of_a_full_support_image(shape):
    problem = PhaseRetrieval(shape, oversample=2.0, noise_std=0.0)
    x = np.random.default_rng(1).standard_normal(shape)
    copies = problem.symmetries(x)
    y = np.asarray(problem(x[None]))
    for c in copies:
        np.testing.assert_allclose(np.asarray(problem(c[None])), y, atol=1e-12)
    brute = _canvas_group_images(problem, x)
    # the brute force finds the same four images (each once per group element that makes it)
    unique = {np.round(b, 12).tobytes() for b in brute}
    assert unique == {np.round(c, 12).tobytes() for c in copies}


@pytest.mark.parametrize("seed", range(5))
def test_align_picks_the_closest_copy_that_brute_force_finds(seed):
    rng = np.random.default_rng(seed)
    problem = PhaseRetrieval((1, 8, 8), oversample=2.0, noise_std=0.0)
    x_true = rng.standard_normal((1, 8, 8))
    # an estimate near one of the copies the data cannot tell apart (the twin, sign flipped)
    x_hat = -x_true[..., ::-1, ::-1] + 0.3 * rng.standard_normal((1, 8, 8))
    brute = min(_canvas_group_images(problem, x_hat), key=lambda c: np.linalg.norm(c - x_true))
    aligned = problem.align(x_hat, x_true)
    np.testing.assert_array_equal(aligned, brute)
    # the check would catch an alignment that forgets the rotation: sign alone stays far off
    sign_only = min((x_hat, -x_hat), key=lambda c: np.linalg.norm(c - x_true))
    assert kd.metrics.relative_l2(aligned, x_true) < 0.5 * kd.metrics.relative_l2(sign_only, x_true)


def test_align_acts_per_channel_and_per_member():
    rng = np.random.default_rng(3)
    problem = PhaseRetrieval((2, 6, 6), oversample=2.0, noise_std=0.0)
    x_true = rng.standard_normal((2, 6, 6))
    # channel 0 negated, channel 1 turned: the data are those of x_true, channel by channel
    x_hat = np.stack([-x_true[0], x_true[1, ::-1, ::-1]])
    np.testing.assert_allclose(
        np.asarray(problem(x_hat[None])), np.asarray(problem(x_true[None])), atol=1e-12
    )
    np.testing.assert_array_equal(problem.align(x_hat, x_true), x_true)
    np.testing.assert_array_equal(problem.symmetry_index(x_hat, x_true), [1, 2])
    ensemble = np.stack([x_hat, -x_true, x_true])
    np.testing.assert_array_equal(problem.align(ensemble, x_true), np.stack([x_true] * 3))
