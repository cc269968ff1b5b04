"""The command line, run as a user would: in a subprocess."""

import subprocess
import sys


def run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "kalmandiff", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_explains_the_demo():
    out = run("--help")
    assert out.returncode == 0 and "demo" in out.stdout


def test_bad_argument_gives_usage_not_traceback():
    out = run("demo", "--particles", "many")
    assert out.returncode == 2 and "invalid int value" in out.stderr and "Traceback" not in out.stderr


def test_invalid_value_is_reported_without_traceback():
    out = run("demo", "--particles", "1")
    assert out.returncode == 2 and "n_particles" in out.stderr and "Traceback" not in out.stderr


def test_small_demo_prints_a_table_and_beats_the_prior_mean(tmp_path):
    fig = tmp_path / "demo.png"
    out = run("demo", "--particles", "12", "--steps", "8", "--figure", str(fig))
    assert out.returncode == 0, out.stderr
    rows = {line[:26].strip(): line[26:].split() for line in out.stdout.splitlines() if "  " in line}
    enkg = float(rows["EnKG (paper update)"][0])
    assert enkg < 0.8  # the zero field scores 1.0
    assert fig.stat().st_size > 1000
