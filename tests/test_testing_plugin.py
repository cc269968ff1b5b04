"""The pytest plugin (entry point pytest11 -> kalmandiff.testing.plugin) and its fixtures."""

import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.testing import PosteriorCase

ROOT = Path(__file__).resolve().parents[1]


def test_the_plugin_is_registered_as_an_entry_point(pytestconfig):
    eps = metadata.entry_points(group="pytest11")
    assert any(ep.value == "kalmandiff.testing.plugin" for ep in eps)
    assert pytestconfig.pluginmanager.has_plugin("kalmandiff") or any(
        getattr(p, "__name__", "") == "kalmandiff.testing.plugin"
        for p in pytestconfig.pluginmanager.get_plugins()
    )


def test_kd_problem_defaults_to_linear_gaussian(kd_problem):
    assert kd_problem.info["d"] == 8 and kd_problem.y.shape == tuple(kd_problem.problem.y_shape)


@pytest.mark.parametrize("kd_problem", kd.problems.available(), indirect=True)
def test_kd_problem_by_name(kd_problem):
    G = kd_problem.problem(np.asarray(kd_problem.x_true)[None])
    assert tuple(G.shape[1:]) == tuple(kd_problem.problem.y_shape)


@pytest.mark.parametrize(
    "kd_problem", [{"name": "inpainting", "shape": (1, 6, 6), "family": "smooth"}], indirect=True
)
def test_kd_problem_with_settings(kd_problem):
    assert kd_problem.problem.x_shape == (1, 6, 6)


def test_kd_posterior_case_defaults_to_gaussian(kd_posterior_case):
    assert isinstance(kd_posterior_case, PosteriorCase) and kd_posterior_case.name == "gaussian"


@pytest.mark.parametrize("kd_posterior_case", ["mixture", {"name": "grf", "n": 4, "n_obs": 2}], indirect=True)
def test_kd_posterior_case_by_name(kd_posterior_case):
    assert kd_posterior_case.name in ("mixture", "grf")
    assert kd_posterior_case.mean.shape == tuple(kd_posterior_case.forward.x_shape)


def test_kd_problem_names(kd_problem_names):
    assert kd_problem_names == kd.problems.available()


def test_the_documented_user_test_file_passes():
    """docs/examples/test_my_solver.py, shown on the testing page, runs as a user's test suite would."""
    import subprocess

    example = ROOT / "docs" / "examples" / "test_my_solver.py"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(example.parent),
            str(example),
        ],
        capture_output=True,
        text=True,
        cwd=example.parent,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout
