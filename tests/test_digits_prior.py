"""The digits family and its shipped network prior; the training utilities (EMA, validation, schedule, resume)."""

import glob
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import kalmandiff as kd  # noqa: E402
from kalmandiff.priors.pretrained import DIGITS_PRIOR_PATH, load_digits_prior  # noqa: E402
from kalmandiff.priors.torch_denoiser import TorchDenoiser  # noqa: E402
from kalmandiff.priors.training import _lr_factor, train_denoiser, validation_loss  # noqa: E402
from kalmandiff.problems.digits import digit_images, digits_split  # noqa: E402

# --------------------------------------------------------------------------
# the family
# --------------------------------------------------------------------------


def test_digits_are_sklearns_upsampled_and_split_once():
    from sklearn.datasets import load_digits

    eight = digit_images(8)[:, 0]
    np.testing.assert_allclose(eight, load_digits().images / 8.0 - 1.0)  # grey 0..16 -> [-1, 1]
    train, test = digits_split(16)
    assert train.shape == (1597, 1, 16, 16) and test.shape == (200, 1, 16, 16)
    assert train.min() >= -1 and train.max() <= 1
    # the split is a partition: no held-out digit is among the training ones
    flat_train = {im.tobytes() for im in train}
    assert not any(im.tobytes() in flat_train for im in test if np.ptp(im) > 0)
    # upsampling keeps each digit where it was: its 2x2 block means match the 8x8 original better
    # than those of the upsampled image moved by one pixel in any direction
    big = digit_images(16)[:, 0]

    def block_error(img):
        return np.abs(img.reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4)) - eight).mean()

    moved = [np.roll(big, s, axis=a) for s in (-1, 1) for a in (1, 2)]
    assert block_error(big) < 0.8 * min(block_error(m) for m in moved)


# --------------------------------------------------------------------------
# the shipped network, through make(...)
# --------------------------------------------------------------------------


def test_shipped_priors_weigh_under_10_mb():
    data = os.path.dirname(DIGITS_PRIOR_PATH)
    sizes = [os.path.getsize(p) for p in glob.glob(os.path.join(data, "*"))]
    assert os.path.isfile(DIGITS_PRIOR_PATH) and sum(sizes) < 10 * 2**20


@pytest.mark.parametrize("name", ["phase-retrieval", "inpainting"])
def test_make_attaches_the_network_by_default_and_prior_leaves_the_instance_alone(name):
    net = kd.problems.make(name, random_state=3)
    gauss = kd.problems.make(name, random_state=3, prior="gaussian")
    assert isinstance(net.prior, TorchDenoiser) and net.info["prior"] == "network"
    assert isinstance(gauss.prior, kd.priors.GaussianPrior) and gauss.info["prior"] == "gaussian"
    assert net.prior.event_shape == tuple(net.problem.x_shape) == (1, 16, 16)
    np.testing.assert_array_equal(net.x_true, gauss.x_true)
    np.testing.assert_array_equal(net.y, gauss.y)
    assert repr(net.problem) == repr(gauss.problem)
    # the truth is a held-out digit, never one the network was trained on
    _, test = digits_split(16)
    np.testing.assert_array_equal(net.x_true, test[net.info["digit_index"]])
    other = kd.problems.make(name, random_state=4, prior="gaussian")
    assert not np.array_equal(other.y, gauss.y)


def test_make_refuses_a_network_where_none_ships():
    with pytest.raises(ValueError, match="no network prior"):
        kd.problems.make("phase-retrieval", family="smooth", prior="network")
    with pytest.raises(ValueError, match="no network prior"):
        kd.problems.make("inpainting", size="medium", prior="network")
    with pytest.raises(ValueError, match="prior must be"):
        kd.problems.make("inpainting", prior="diffusion")
    with pytest.raises(ValueError, match="family"):
        kd.problems.make("inpainting", family="faces")
    # elsewhere the default is the family's best Gaussian
    assert kd.problems.make("inpainting", size="medium").info["prior"] == "gaussian"
    assert kd.problems.make("phase-retrieval", family="smooth").info["prior"] == "gaussian"


@pytest.mark.parametrize("sigma", [0.1, 0.5, 1.0])
def test_network_denoises_held_out_digits_better_than_the_best_gaussian(sigma):
    # ground truth: the 200 held-out digits; the Gaussian is the exact posterior mean under the
    # Gaussian of the same training images, i.e. the best linear denoiser of that family
    _, test = digits_split(16)
    noisy = test + sigma * np.random.default_rng(7).standard_normal(test.shape)
    net_err = np.linalg.norm(np.asarray(load_digits_prior().denoise(noisy, sigma)) - test)
    gauss_err = np.linalg.norm(np.asarray(kd.problems.digits_gaussian_prior(16).denoise(noisy, sigma)) - test)
    assert net_err < 0.9 * gauss_err
    # and it does denoise (a wrong network, returning its input, would fail here)
    assert net_err < 0.8 * np.linalg.norm(noisy - test)


# --------------------------------------------------------------------------
# the training utilities
# --------------------------------------------------------------------------

_TINY = dict(
    model_channels=4,
    channel_mult=(1, 2),
    batch_size=8,
    lr=3e-3,
    warmup_steps=2,
    padding="zeros",
    random_state=0,
    progress=False,
)


@pytest.fixture(scope="module")
def tiny_digits():
    train, test = digits_split(8)
    return train[:256].astype(np.float32), test[:32].astype(np.float32)


def test_ema_follows_the_exponential_average_of_the_weights(tiny_digits, tmp_path):
    # one step per call, resuming: after step k the EMA must be decay * ema_{k-1} + (1 - decay) * net_k,
    # with ema_1 = net_1 (AveragedModel copies the first weights)
    data, _ = tiny_digits
    ck, halflife = tmp_path / "ck.pt", 2.0
    decay = 0.5 ** (1 / halflife)
    ema_prev = None
    for k in range(1, 5):
        train_denoiser(data, n_steps=k, checkpoint=ck, ema_halflife_steps=halflife, **_TINY)
        state = torch.load(ck, weights_only=True)
        assert state["step"] == k and state["ema_n_averaged"] == k
        for name, w in state["net"].items():
            expected = w if ema_prev is None else decay * ema_prev[name] + (1 - decay) * w
            torch.testing.assert_close(state["ema"][name], expected, rtol=1e-5, atol=1e-6)
        ema_prev = state["ema"]


def test_resume_reproduces_an_uninterrupted_run(tiny_digits, tmp_path):
    # cosine schedule, validation and EMA: a run cut in two by stop_step ends bit-identical to one run
    data, val = tiny_digits
    kw = dict(_TINY, n_steps=12, lr_schedule="cosine", validation_data=val, validate_every=4)
    whole = train_denoiser(data, **kw)
    first = train_denoiser(data, stop_step=5, checkpoint=tmp_path / "ck.pt", **kw)
    assert first.steps == 5
    rest = train_denoiser(data, checkpoint=tmp_path / "ck.pt", **kw)
    assert rest.steps == 12 and rest.losses == whole.losses
    assert rest.val_losses == whole.val_losses and [s for s, _ in whole.val_losses] == [4, 8, 12]
    for a, b in zip(rest.ema.state_dict().values(), whole.ema.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a different schedule is another run: refused
    with pytest.raises(ValueError, match="another configuration"):
        train_denoiser(data, checkpoint=tmp_path / "ck.pt", **{**kw, "n_steps": 20})


def test_validation_loss_is_the_recorded_one_and_falls_with_training(tiny_digits):
    data, val = tiny_digits
    kw = dict(_TINY, model_channels=8, batch_size=16, lr=1e-2, ema_halflife_steps=10.0)
    res = train_denoiser(data, n_steps=80, validation_data=val, validate_every=20, **kw)
    step, last = res.val_losses[-1]
    assert step == 80 and [s for s, _ in res.val_losses] == [20, 40, 60, 80]
    # the recorded loss is the EMA network's on the fixed draws of seed 0
    assert last == pytest.approx(validation_loss(res.ema, val), rel=1e-6)
    assert last < 0.8 * res.val_losses[0][1]
    # and it measures denoising: the untrained network scores worse
    untrained = train_denoiser(data, n_steps=1, **kw).net
    assert validation_loss(untrained, val) > 1.5 * last


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    f = _lr_factor("cosine", warmup_steps=10, n_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the cosine
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    g = _lr_factor("constant", warmup_steps=10, n_steps=110, min_lr_ratio=0.1)
    assert g(0) == pytest.approx(0.1) and g(100) == 1.0
