"""Checkpoints: a killed run resumes to the particles of an uninterrupted run; writes are atomic."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _resume_job import PRIOR, Y, make_solver, slow_forward

import kalmandiff as kd

HERE = Path(__file__).parent


def _steps_saved(path):
    try:
        return len(kd.io.read_checkpoint(path)["history"])
    except (OSError, ValueError, KeyError):
        return 0


def test_killed_subprocess_resumes_to_the_uninterrupted_particles(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(HERE / "_resume_job.py"), str(ckpt)], env=env)
    deadline = time.time() + 120
    while _steps_saved(ckpt) < 8 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _steps_saved(ckpt)
    assert 8 <= done_before < 40

    resumed = make_solver().fit(Y, slow_forward, noise_std=0.1, checkpoint=ckpt, checkpoint_every=1)
    fresh = make_solver().fit(Y, slow_forward, noise_std=0.1)
    np.testing.assert_array_equal(resumed.particles_, fresh.particles_)
    assert len(resumed.history_) == len(fresh.history_) == 40
    for key in (
        "n_denoiser_evals",
        "n_forward_evals",
        "n_sequential_denoiser_evals",
        "n_sequential_forward_evals",
    ):
        assert resumed.stats_[key] == fresh.stats_[key]
    assert not list(tmp_path.glob("*.tmp")), "no temporary file may be left behind"


@pytest.mark.parametrize("solver", ["enkg", "enkg-adaptive", "eki"])
def test_resume_in_process_after_an_interruption(tmp_path, solver):
    A = np.random.default_rng(1).standard_normal((3, 5))
    calls = {"n": 0}

    def forward(X):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # the user stops the run
        return X @ A.T

    def make():
        if solver == "enkg":
            return kd.EnKGSolver(PRIOR, n_particles=12, n_steps=20, random_state=0, verbose=False)
        if solver == "enkg-adaptive":  # its pseudo-time t must travel with the checkpoint
            return kd.EnKGSolver(
                PRIOR,
                n_particles=12,
                n_steps=20,
                update="kalman-sqrt",
                tempering="adaptive",
                random_state=0,
                verbose=False,
            )
        return kd.EKISolver(PRIOR, n_particles=12, dt=0.1, random_state=0, verbose=False)

    ckpt = tmp_path / "c.pkl"
    with pytest.raises(KeyboardInterrupt):
        make().fit(Y, forward, noise_std=0.1, checkpoint=ckpt, checkpoint_every=2)
    resumed = make().fit(Y, forward, noise_std=0.1, checkpoint=ckpt, checkpoint_every=2)
    fresh = make().fit(Y, lambda X: X @ A.T, noise_std=0.1)
    np.testing.assert_allclose(resumed.particles_, fresh.particles_, rtol=0, atol=0)
    # A finished checkpoint returns the final particles without running anything.
    again = make().fit(Y, _never_called, noise_std=0.1, checkpoint=ckpt)
    np.testing.assert_array_equal(again.particles_, fresh.particles_)


def _never_called(X):
    if X.shape[0] > 1:  # the one-particle probe is allowed
        raise AssertionError("a finished checkpoint must not evaluate the forward model")
    return X @ np.zeros((5, 3))


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    ckpt = tmp_path / "c.pkl"
    A = np.ones((3, 5))
    kd.EnKGSolver(PRIOR, n_particles=4, n_steps=5, verbose=False).fit(
        Y, lambda X: X @ A.T, noise_std=0.1, checkpoint=ckpt
    )
    with pytest.raises(ValueError, match="another run.*n_steps"):
        kd.EnKGSolver(PRIOR, n_particles=4, n_steps=6, verbose=False).fit(
            Y, lambda X: X @ A.T, noise_std=0.1, checkpoint=ckpt
        )
    with pytest.raises(ValueError, match="another run.*y"):
        kd.EnKGSolver(PRIOR, n_particles=4, n_steps=5, verbose=False).fit(
            Y + 1, lambda X: X @ A.T, noise_std=0.1, checkpoint=ckpt
        )


def test_a_write_that_dies_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    from kalmandiff import _files
    from kalmandiff.estimators import _checkpoint

    ckpt = tmp_path / "c.pkl"
    store = _checkpoint.CheckpointStore(ckpt, 1, {"solver": "x"})
    store.save({"i": 1}, {}, {}, 0.0, [])
    before = ckpt.read_bytes()

    def dying_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(_files.np, "savez", dying_dump)
    with pytest.raises(OSError):
        store.save({"i": 2}, {}, {}, 0.0, [])
    assert ckpt.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_every_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every"):
        kd.EnKGSolver(PRIOR, n_particles=4, n_steps=5, verbose=False).fit(
            Y, lambda X: X @ np.ones((5, 3)), noise_std=0.1, checkpoint=tmp_path / "c", checkpoint_every=0
        )
