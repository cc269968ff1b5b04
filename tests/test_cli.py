"""The command line, run as a user would: in a subprocess."""

import re
import subprocess
import sys

import numpy as np
import pytest


def run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "kalmandiff", *args], capture_output=True, text=True, timeout=timeout
    )


def table(stdout: str) -> dict:
    """Rows of the printed table: label (without the solver kind in brackets) -> list of cells."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith(("enkg", "eki", "scg", "dpg", "zero field")):
            label, cells = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            rows[label.split(" (")[0]] = cells.split()
    return rows


def errors(stdout: str) -> dict:
    """``{row label: relative L2}`` from the printed table (the column is found by its header)."""
    header = next(line for line in stdout.splitlines() if line.startswith("solver"))
    column = header.split()[1:].index("relative_l2")
    return {label: float(cells[column]) for label, cells in table(stdout).items()}


def demo_failures(stdout: str) -> list[str]:
    """What is wrong with a demo's table: empty when it shows the learned prior at work.

    EnKG with the shipped network must recover the digit (relative L2 below 0.1; measured 0.045,
    while an answer that ignores the data is off by the difference of two digits, about 1) and
    beat both runs with the best Gaussian by 40% (measured 0.045 against 0.11 and 0.16).
    """
    err = errors(stdout)
    failures = []
    if not err["enkg+network"] < 0.1:
        failures.append(f"EnKG + network does not recover the digit: {err['enkg+network']:.3f}")
    best_gaussian = min(err["enkg+gaussian"], err["eki+gaussian"])
    if not err["enkg+network"] < 0.6 * best_gaussian:
        failures.append(
            f"the network is not 40% below the best Gaussian: {err['enkg+network']:.3f} / {best_gaussian:.3f}"
        )
    return failures


def test_help_explains_the_commands():
    out = run("--help")
    assert out.returncode == 0
    for word in ("demo", "run", "compare", "navier-stokes"):
        assert word in out.stdout


def test_bad_arguments_give_usage_not_traceback():
    for args in (["demo", "--particles", "many"], ["run", "--problem", "navier-stokes"], ["frobnicate"]):
        out = run(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr and "usage" in out.stderr


def test_invalid_values_are_reported_without_traceback():
    cases = [
        (["demo", "--particles", "1"], "n_particles"),
        (["run", "--problem", "nowhere", "--solver", "enkg"], "unknown problem"),
        (["run", "--problem", "navier-stokes", "--solver", "magic"], "unknown solver"),
        (["run", "--problem", "navier-stokes", "--solver", "enkg", "--param", "nonsense=1"], "no parameter"),
    ]
    for args, message in cases:
        out = run(*args)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr


@pytest.mark.slow
def test_demo_shows_the_learned_prior_beat_the_best_gaussian(tmp_path):
    """The demo as a new user runs it (about 35 s on two loaded cores): phase retrieval of a digit."""
    fig = tmp_path / "demo.png"
    out = run("demo", "--figure", str(fig))
    assert out.returncode == 0, out.stderr
    assert float(errors(out.stdout)["zero field"]) == 1.0
    assert demo_failures(out.stdout) == [], out.stdout
    assert "180-degree rotation" in out.stdout  # the errors are taken up to the map's symmetries
    assert fig.stat().st_size > 1000


def _demo_in_process(monkeypatch, capsys, wrong_instances, *argv) -> str:
    """Run the demo in this process with ``_demo_instances`` replaced: a purpose-built wrong demo."""
    from kalmandiff import cli

    right = cli._demo_instances
    monkeypatch.setattr(cli, "_demo_instances", lambda args, kinds: wrong_instances(right(args, kinds)))
    assert cli.main(["demo", "--figure", "none", *argv]) == 0
    return capsys.readouterr().out


def test_demo_check_fails_when_the_network_is_swapped_for_the_gaussian(monkeypatch, capsys):
    out = _demo_in_process(monkeypatch, capsys, lambda insts: {**insts, "network": insts["gaussian"]})
    assert any("not 40% below" in f for f in demo_failures(out))


@pytest.mark.slow
def test_demo_check_fails_when_the_solvers_ignore_the_data(monkeypatch, capsys):
    import dataclasses

    import kalmandiff as kd

    def other_data(insts):
        # the solvers are given another digit's data: their answers no longer depend on this y
        other = kd.problems.make("phase-retrieval", random_state=1, prior="gaussian")
        return {kind: dataclasses.replace(inst, y=other.y) for kind, inst in insts.items()}

    out = _demo_in_process(monkeypatch, capsys, other_data, "--particles", "16", "--steps", "10")
    assert any("does not recover" in f for f in demo_failures(out))


def test_run_and_compare_write_results(tmp_path):
    out = run(
        "run",
        "--problem",
        "linear-gaussian",
        "--solver",
        "eki",
        "--particles",
        "50",
        "--save",
        str(tmp_path / "eki.npz"),
    )
    assert out.returncode == 0, out.stderr
    with np.load(tmp_path / "eki.npz") as f:
        assert f["particles"].shape[0] == 50
    out = run(
        "compare",
        "--problem",
        "linear-gaussian",
        "--solvers",
        "enkg,eki",
        "--particles",
        "20",
        "--steps",
        "10",
    )
    assert out.returncode == 0, out.stderr
    rows = table(out.stdout)
    assert {"enkg", "eki", "zero field"} <= set(rows)
    assert int(rows["eki"][-3].replace(",", "")) > 0  # forward evaluations are reported


# --------------------------------------------------------------------------
# nothing lost, nothing run before everything is checked (issue 20, item 2)
# --------------------------------------------------------------------------

LINEAR = ["--problem", "linear-gaussian", "--particles", "20", "--steps", "10"]


def test_version():
    import kalmandiff

    out = run("--version")
    assert out.returncode == 0 and kalmandiff.__version__ in out.stdout


def test_compare_checks_every_solvers_parameters_before_the_first_fit():
    out = run("compare", *LINEAR, "--solvers", "enkg,eki", "--param", "n_updates=1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "EKISolver has no parameter n_updates" in out.stderr
    assert "fitting" not in out.stderr  # EnKG was not fitted first and thrown away


def test_compare_gives_a_prefixed_parameter_to_one_solver(tmp_path):
    out = run("compare", *LINEAR, "--solvers", "enkg,eki", "--param", "enkg.n_updates=1", "--dry-run")
    assert out.returncode == 0, out.stderr
    out = run("compare", *LINEAR, "--solvers", "enkg,eki", "--param", "dpg.n_updates=1")
    assert out.returncode == 2 and "not among --solvers" in out.stderr


def test_unknown_figure_format_is_refused_before_fitting(tmp_path):
    out = run(
        "run",
        *LINEAR,
        "--solver",
        "eki",
        "--figure",
        str(tmp_path / "out.xyz"),
        "--save",
        str(tmp_path / "D.npz"),
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown image format 'xyz'" in out.stderr and "png" in out.stderr
    assert "fitting" not in out.stderr


def test_unknown_save_extension_is_refused_not_renamed(tmp_path):
    out = run("run", *LINEAR, "--solver", "eki", "--save", str(tmp_path / "x.h5"))
    assert out.returncode == 2 and "'.h5'" in out.stderr and ".npz" in out.stderr and ".nc" in out.stderr
    assert list(tmp_path.iterdir()) == []  # in particular no x.npz


def test_dry_run_prints_the_plan_and_fits_nothing():
    import kalmandiff as kd

    out = run("compare", *LINEAR, "--solvers", "enkg,eki", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "fitting" not in out.stderr
    inst = kd.problems.make("linear-gaussian", random_state=0)
    rows = table(out.stdout)
    for name, cls in (("enkg", kd.EnKGSolver), ("eki", kd.EKISolver)):
        kwargs = {"n_steps": 10} if name == "enkg" else {}
        planned = cls(inst.prior, n_particles=20, **kwargs).expected_evaluations()
        assert int(rows[name][0].replace(",", "")) == planned["n_forward_evals"]
        assert int(rows[name][1].replace(",", "")) == planned["n_denoiser_evals"]
    assert "timed forward" in out.stdout  # the estimate in seconds comes from a probe


def test_a_plan_above_the_limit_is_refused_with_its_estimated_time():
    import kalmandiff as kd

    inst = kd.problems.make("navier-stokes", random_state=0)
    planned = kd.DPGSolver(inst.prior, n_particles=64).expected_evaluations()["n_forward_evals"]
    assert planned > kd.get_config()["max_forward_evals"]
    out = run("run", "--problem", "navier-stokes", "--solver", "dpg", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{planned:,} forward evaluations" in out.stderr
    assert "on this machine" in out.stderr and "--allow-costly" in out.stderr
    assert "fitting" not in out.stderr


# In-process runs for the failures that a subprocess cannot provoke (a full disk, a broken fit).


def _main(*args):
    from kalmandiff.cli import main

    return main(list(args))


def test_results_are_written_before_the_figure(tmp_path, monkeypatch, capsys):
    import matplotlib.figure

    def full_disk(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk)
    rc = _main(
        "run",
        *LINEAR,
        "--solver",
        "eki",
        "--figure",
        str(tmp_path / "f.png"),
        "--save",
        str(tmp_path / "D.npz"),
    )
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in err and "f.png" in err
    with np.load(tmp_path / "D.npz") as f:
        assert f["particles"].shape[0] == 20


def test_a_failed_save_keeps_the_results_in_a_named_fallback_file(tmp_path, monkeypatch, capsys):
    import re

    import kalmandiff.io

    real = kalmandiff.io.export_results
    target = tmp_path / "out" / "D.npz"
    target.parent.mkdir()

    def failing(solver, path, **kw):
        if str(path) == str(target):
            raise OSError(28, "No space left on device")
        return real(solver, path, **kw)

    monkeypatch.setattr(kalmandiff.io, "export_results", failing)
    monkeypatch.chdir(tmp_path)
    rc = _main("run", *LINEAR, "--solver", "eki", "--save", str(target))
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "No space left on device" in err
    fallback = re.search(r"kept in (\S+\.npz)", err).group(1)
    with np.load(fallback) as f:
        assert f["particles"].shape[0] == 20


def test_a_failing_later_fit_keeps_the_finished_ones(tmp_path, monkeypatch, capsys):
    import kalmandiff as kd

    def broken(self, *a, **k):
        raise RuntimeError("simulator crashed")

    monkeypatch.setattr(kd.EKISolver, "fit", broken)
    rc = _main("compare", *LINEAR, "--solvers", "enkg,eki", "--save", str(tmp_path) + "/")
    err = capsys.readouterr().err
    assert rc == 2 and "simulator crashed" in err
    with np.load(tmp_path / "enkg.npz") as f:
        assert f["particles"].shape[0] == 20
