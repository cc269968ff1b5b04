"""Saved solvers, results and checkpoints never run code when read (DESIGN.md), and say what a bad file is.

A planted pickle whose unpickling writes a marker file stands in for a file
received from someone else: it must never be unpickled, through ``kd.load``,
``kd.io.read_checkpoint`` or a fit that resumes from a checkpoint.
"""

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.testing import gaussian_case, grf_case, mixture_case

CASE = gaussian_case(4, 3, 0.2, seed=1)


def forward(X):
    return X @ CASE.A.T


class _Payload:
    """Unpickling this object writes a marker file: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).write_text, ("the payload ran",))


def _planted_pickle(path, marker):
    path.write_bytes(pickle.dumps({"format": 1, "payload": _Payload(marker)}))
    return path


def _solver(**kw):
    return kd.EnKGSolver(CASE.prior, n_particles=8, n_steps=6, random_state=0, verbose=False, **kw)


def test_load_never_unpickles_a_planted_pickle(tmp_path):
    marker = tmp_path / "marker"
    path = _planted_pickle(tmp_path / "enkg.npz", marker)
    with pytest.raises(ValueError, match=r"enkg\.npz.*pickle.*never unpickles"):
        kd.load(path)
    with pytest.raises(ValueError, match="pickle"):
        kd.io.read_checkpoint(path)
    assert not marker.exists()


def test_a_pickle_inside_an_archive_is_never_unpickled(tmp_path):
    """A saved solver whose particles entry was replaced by an object array holding the payload."""
    marker = tmp_path / "marker"
    good = _solver().fit(CASE.y, forward, noise_std=0.2).save(tmp_path / "good.npz")
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        assert "particles.npy" in src.namelist()
        for item in src.infolist():
            if item.filename != "particles.npy":
                dst.writestr(item, src.read(item.filename))
        payload = np.empty(1, dtype=object)
        payload[0] = _Payload(marker)
        with dst.open("particles.npy", "w") as fh:
            np.lib.format.write_array(fh, payload, allow_pickle=True)
    with pytest.raises(ValueError, match=r"bad\.npz is a damaged"):
        kd.load(bad)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload does run when unpickled
    assert marker.exists()


def test_resume_never_unpickles_a_planted_checkpoint_and_can_start_afresh(tmp_path):
    marker = tmp_path / "marker"
    ckpt = _planted_pickle(tmp_path / "run.ckpt", marker)
    with pytest.raises(ValueError, match=r"run\.ckpt.*pickle.*resume='never'"):
        _solver().fit(CASE.y, forward, noise_std=0.2, checkpoint=ckpt)
    with pytest.warns(RuntimeWarning, match=r"starting afresh over .*run\.ckpt"):
        over = _solver().fit(CASE.y, forward, noise_std=0.2, checkpoint=ckpt, resume="if_valid")
    assert not marker.exists()
    fresh = _solver().fit(CASE.y, forward, noise_std=0.2)
    np.testing.assert_array_equal(over.particles_, fresh.particles_)
    assert kd.io.read_checkpoint(ckpt)["done"]  # the planted file was replaced by a real checkpoint
    _planted_pickle(ckpt, marker)
    never = _solver().fit(CASE.y, forward, noise_std=0.2, checkpoint=ckpt, resume="never")
    np.testing.assert_array_equal(never.particles_, fresh.particles_)
    assert not marker.exists()


def test_a_corrupt_checkpoint_names_the_file(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    _solver().fit(CASE.y, forward, noise_std=0.2, checkpoint=ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:200])  # truncated, as by a full disk
    with pytest.raises(ValueError, match=r"run\.ckpt.*(damaged|not a kalmandiff)"):
        _solver().fit(CASE.y, forward, noise_std=0.2, checkpoint=ckpt)
    with pytest.warns(RuntimeWarning, match="starting afresh"):
        _solver().fit(CASE.y, forward, noise_std=0.2, checkpoint=ckpt, resume="if_valid")
    with pytest.raises(ValueError, match="resume must be one of"):
        _solver().fit(CASE.y, forward, noise_std=0.2, checkpoint=ckpt, resume="sometimes")


def test_a_checkpoint_of_another_run_can_be_started_over_when_asked(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    _solver().fit(CASE.y, forward, noise_std=0.2, checkpoint=ckpt)
    with pytest.raises(ValueError, match="another run.*resume='never'"):
        _solver().fit(CASE.y + 1, forward, noise_std=0.2, checkpoint=ckpt)
    other = _solver().fit(CASE.y + 1, forward, noise_std=0.2, checkpoint=ckpt, resume="never")
    np.testing.assert_array_equal(
        other.particles_, _solver().fit(CASE.y + 1, forward, noise_std=0.2).particles_
    )


@pytest.mark.parametrize(
    "head, what",
    [
        (b"", "empty"),
        (b"CDF\x01rest", "netCDF"),
        (b"\x89HDF\r\n\x1a\n", "netCDF/HDF5"),
        (b"hello, world", "not a NumPy .npz"),
        (b"PK\x03\x04broken", "damaged"),
    ],
)
def test_a_foreign_or_corrupt_file_says_what_it_is(tmp_path, head, what):
    path = tmp_path / "thing.npz"
    path.write_bytes(head)
    with pytest.raises(ValueError, match=rf"thing\.npz is not a kalmandiff solver file.*{what}"):
        kd.load(path)


def test_another_programs_npz_and_an_old_export_are_named(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match=r"another program.*'weights'.*numpy\.load"):
        kd.load(tmp_path / "other.npz")
    np.savez(tmp_path / "old.npz", particles=np.ones((2, 3)), attributes=np.array("{}"))
    with pytest.raises(ValueError, match=r"results export.*load_results"):
        kd.load(tmp_path / "old.npz")
    assert kd.io.load_results(tmp_path / "old.npz")["particles"].shape == (2, 3)


def test_load_reads_what_the_cli_saves(tmp_path):
    """``python -m kalmandiff run ... --save D.npz`` writes a file kd.load reads back as a solver."""
    target = tmp_path / "eki.npz"
    cmd = [sys.executable, "-m", "kalmandiff", "run", "--problem", "linear-gaussian", "--solver", "eki"]
    out = subprocess.run(
        [*cmd, "--particles", "20", "--save", str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "MPLBACKEND": "Agg"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    solver = kd.load(target)  # today's kd.load: UnpicklingError
    assert type(solver) is kd.EKISolver and solver.n_particles == 20
    results = kd.io.load_results(target)
    np.testing.assert_array_equal(solver.particles_, results["particles"])
    np.testing.assert_allclose(solver.reconstruct(), results["mean"])
    assert results["attributes"]["solver"] == "EKISolver"


def test_an_export_loads_back_as_the_solver(tmp_path):
    fitted = _solver().fit(CASE.y, forward, noise_std=0.2)
    path = kd.export_results(fitted, tmp_path / "res.npz", y=CASE.y)
    back = kd.load(path)
    np.testing.assert_array_equal(back.particles_, fitted.particles_)
    assert back.history_ == fitted.history_ and back.stats_ == fitted.stats_


@pytest.mark.parametrize(
    "prior",
    [
        CASE.prior,  # full covariance
        kd.priors.GaussianPrior(np.zeros((2, 3)), 2.0),
        kd.priors.GaussianPrior(np.ones(3), np.array([1.0, 2.0, 3.0])),
        mixture_case(3, 2, 0.1, seed=0).prior,
        kd.priors.GaussianMixturePrior([0.3, 0.7], np.array([[-1.0, 0.0], [1.0, 2.0]]), np.array([0.5, 2.0])),
        grf_case(8, 4, 0.1, seed=0).prior,
        kd.priors.LowRankGaussianPrior.from_samples(np.random.default_rng(0).standard_normal((6, 5)), 2),
    ],
    ids=["gaussian-full", "gaussian-iso", "gaussian-diag", "mixture-full", "mixture-iso", "grf", "lowrank"],
)
def test_analytic_priors_are_stored_by_class_and_arrays(tmp_path, prior):
    solver = kd.EKISolver(prior, n_particles=4, random_state=0, verbose=False)
    back = kd.load(solver.save(tmp_path / "s.npz"))
    assert type(back.prior) is type(prior) and back.prior is not prior
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, *prior.event_shape))
    for sigma in (0.1, 1.0, 10.0):
        np.testing.assert_array_equal(back.prior.denoise(x, sigma), prior.denoise(x, sigma))  # bit for bit


def test_a_prior_that_cannot_be_stored_is_asked_for_by_name(tmp_path):
    torch = pytest.importorskip("torch")
    net = kd.priors.TorchDenoiser(lambda x, sigma: x / (1 + sigma**2)[:, None], (4,), batch_size=None)
    fitted = kd.EKISolver(net, n_particles=8, max_iter=3, random_state=0, verbose=False).fit(
        CASE.y, forward, noise_std=0.2
    )
    path = fitted.save(tmp_path / "net.npz")
    with pytest.raises(ValueError, match=r"net\.npz.*TorchDenoiser.*\(4,\).*not stored.*prior=prior"):
        kd.load(path)
    back = kd.load(path, prior=net)
    assert back.prior is net
    np.testing.assert_array_equal(back.reconstruct(), fitted.reconstruct())
    results_only = kd.load(path, prior=None)
    np.testing.assert_array_equal(results_only.reconstruct(), fitted.reconstruct())
    with pytest.raises(ValueError, match="event_shape"):
        kd.load(path, prior=kd.priors.GaussianPrior(np.zeros(5), 1.0))
    del torch


def test_a_parameter_that_is_not_plain_data_is_asked_for_and_a_generator_is_kept(tmp_path):
    def taper(distances):  # a callable localisation, which a file cannot hold
        return np.ones_like(distances)

    solver = kd.EnKGSolver(CASE.prior, localization=taper, random_state=np.random.default_rng(5))
    path = solver.save(tmp_path / "s.npz")
    with pytest.raises(ValueError, match=r"does not store the parameters localization \(a .*function"):
        kd.load(path)
    back = kd.load(path, localization=taper)
    assert back.localization is taper
    assert back.random_state.bit_generator.state == np.random.default_rng(5).bit_generator.state


def test_callbacks_are_not_stored_and_may_be_passed_back(tmp_path):
    seen = []
    path = _solver(callbacks=[seen.append]).save(tmp_path / "s.npz")
    assert kd.load(path).callbacks is None
    assert kd.load(path, callbacks=[seen.append]).callbacks == [seen.append]


def test_export_refuses_a_suffix_it_would_not_write(tmp_path):
    """``x.h5`` was silently written as ``x.npz``: now it is refused, naming the formats."""
    import kalmandiff as kd

    prior = kd.priors.GaussianPrior(np.zeros(3), 1.0)
    solver = kd.EKISolver(prior, n_particles=8, random_state=0, verbose=False)
    solver.fit(np.ones(2), lambda X: X[:, :2], noise_std=0.5)
    with pytest.raises(ValueError, match=r"\.npz or \.nc"):
        kd.export_results(solver, tmp_path / "x.h5")
    assert not (tmp_path / "x.npz").exists()
    assert kd.export_results(solver, tmp_path / "x.npz").exists()
