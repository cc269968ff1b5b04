"""Issue 15, "the first hour of a new user": what a newcomer meets first works without surprises."""

from __future__ import annotations

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators import available_solvers
from kalmandiff.problems import _fixtures

#: settings that keep any solver to a few dozen forward evaluations
TINY = {
    "n_particles": 4,
    "n_steps": 3,
    "n_updates": 1,
    "max_iter": 2,
    "n_queries": 2,
}


def _tiny(cls, prior):
    solver = cls(prior, random_state=0, verbose=False)
    params = solver.get_params()
    solver.set_params(**{k: v for k, v in TINY.items() if k in params})
    return solver


# --------------------------------------------------------------------------
# item 2: every built-in problem comes with its prior
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", kd.problems.available())
def test_every_builtin_problem_has_a_matching_prior(name):
    inst = kd.problems.make(name, size="small", random_state=0)
    assert inst.prior is not None
    assert tuple(inst.prior.event_shape) == tuple(inst.problem.x_shape)
    assert tuple(np.shape(inst.x_true)) == tuple(inst.problem.x_shape)


@pytest.mark.parametrize("name", kd.problems.available())
@pytest.mark.parametrize("solver_name", sorted(available_solvers(derivative_free=True)))
def test_every_problem_runs_with_every_derivative_free_solver(name, solver_name):
    inst = kd.problems.make(name, size="small", random_state=0)
    solver = _tiny(available_solvers()[solver_name], inst.prior).fit(inst.y, inst.problem)
    x_hat = np.asarray(solver.reconstruct())
    assert x_hat.shape == tuple(inst.problem.x_shape)
    assert np.all(np.isfinite(x_hat))


@pytest.mark.parametrize("name", ["deblur", "interferometry"])
def test_fitted_prior_denoises_held_out_truths(name):
    # the prior matches how truths are drawn: its exact denoiser removes most of the added noise
    inst = kd.problems.make(name, size="small", random_state=3)
    x = np.asarray(inst.x_true)[None]
    sigma = 0.5 * float(x.std())
    noisy = x + sigma * np.random.default_rng(0).standard_normal(x.shape)
    denoised = np.asarray(inst.prior.denoise(noisy, sigma))
    assert np.linalg.norm(denoised - x) < 0.5 * np.linalg.norm(noisy - x)
    draws = np.asarray(inst.prior.sample(16, random_state=0))
    assert draws.shape == (16, *inst.problem.x_shape)


def test_prior_fit_does_not_touch_the_instance_streams():
    # a Generator given to make() advances identically whether or not the prior was cached already
    _fixtures.smooth_image_prior.cache_clear()
    g1 = np.random.default_rng(5)
    a = kd.problems.make("inpainting", random_state=g1, family="smooth")
    after_first = g1.random()
    g2 = np.random.default_rng(5)
    b = kd.problems.make("inpainting", random_state=g2, family="smooth")  # prior cached now
    assert g2.random() == after_first
    np.testing.assert_array_equal(a.x_true, b.x_true)
    np.testing.assert_array_equal(np.asarray(a.prior.mean), np.asarray(b.prior.mean))
    # and the fit does not depend on the instance's seed
    c = kd.problems.make("inpainting", random_state=11, family="smooth")
    _fixtures.smooth_image_prior.cache_clear()
    d = kd.problems.make("inpainting", random_state=0, family="smooth")
    np.testing.assert_allclose(np.asarray(c.prior.mean), np.asarray(d.prior.mean))


def test_large_unknowns_get_a_cheap_prior():
    # a fitted low-rank plus ridge Gaussian: O(d k) memory, never a dense d x d covariance
    prior = kd.problems.smooth_image_prior((1, 64, 64))
    assert isinstance(prior, kd.priors.LowRankGaussianPrior)
    assert tuple(prior.event_shape) == (1, 64, 64)
    assert prior.components.shape == (prior.n_components, 64 * 64) and prior.n_components < 400


def test_fitted_gaussian_prior_rejects_a_single_image():
    with pytest.raises(ValueError, match="n >= 2"):
        kd.problems.fitted_gaussian_prior(np.zeros((1, 4)))


@pytest.mark.parametrize("solver_name", sorted(available_solvers()))
def test_prior_none_error_names_the_fix(solver_name):
    inst = kd.problems.make("linear-gaussian")
    solver = available_solvers()[solver_name](None, verbose=False)
    with pytest.raises(ValueError, match=r"prior=None.*kd\.problems\.make"):
        solver.fit(inst.y, inst.problem)


# --------------------------------------------------------------------------
# item 4: the command line checks its output paths before fitting
# --------------------------------------------------------------------------


def _cli(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "kalmandiff", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def test_cli_refuses_a_missing_save_directory_before_fitting(tmp_path):
    out = _cli("run", "--problem", "linear-gaussian", "--solver", "eki", "--save", "/nonexistent/x.npz")
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
    assert "fitting" not in out.stderr  # refused before any fitting
    out = _cli(
        "run", "--problem", "linear-gaussian", "--solver", "eki", "--figure", str(tmp_path / "no" / "f.png")
    )
    assert out.returncode == 2 and "--figure" in out.stderr and "fitting" not in out.stderr


def test_cli_compare_saves_into_a_directory(tmp_path):
    common = ("--problem", "linear-gaussian", "--solvers", "enkg,eki", "--particles", "8", "--steps", "4")
    out = _cli("compare", *common, "--save", str(tmp_path / "out.npz"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "enkg-out.npz").exists() and (tmp_path / "eki-out.npz").exists()
    sub = tmp_path / "results"
    sub.mkdir()
    out = _cli("compare", *common, "--save", str(sub))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in sub.iterdir()) == ["eki.npz", "enkg.npz"]


def test_demo_writes_its_figure_by_default(tmp_path, monkeypatch):
    from kalmandiff import cli

    written = {}
    monkeypatch.setattr(cli, "DEMO_SOLVERS", {"eki": {"max_iter": 2}})
    monkeypatch.setattr(cli, "_outputs", lambda inst, rows, args: written.update(figure=args.figure))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--problem", "linear-gaussian", "--particles", "8"]) == 0
    assert written["figure"] == "kalmandiff-demo.png"
    assert cli.main(["demo", "--problem", "linear-gaussian", "--particles", "8", "--figure", "none"]) == 0
    assert written["figure"] is None


def test_a_figure_without_matplotlib_is_refused_before_fitting(tmp_path, monkeypatch, capsys):
    """matplotlib is the 'plot' extra: a base install must say so before fitting, not lose the run."""
    import importlib.util

    from kalmandiff import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a))
    monkeypatch.setattr(cli, "DEMO_SOLVERS", {"eki": {"max_iter": 2}})
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--problem", "linear-gaussian", "--particles", "8"]) == 2
    err = capsys.readouterr().err
    assert "kalmandiff[plot]" in err and "fitting" not in err
    assert cli.main(["demo", "--problem", "linear-gaussian", "--particles", "8", "--figure", "none"]) == 0


# --------------------------------------------------------------------------
# item 3: a missing noise level is an error, not a silent zero
# --------------------------------------------------------------------------


def _linear_case():
    inst = kd.problems.make("linear-gaussian")
    A = inst.problem.matrix
    return inst, (lambda X: X @ A.T)


@pytest.mark.parametrize("solver_name", ["enkg", "eki", "dpg"])
def test_plain_callable_without_noise_std_is_refused(solver_name):
    inst, fn = _linear_case()
    solver = _tiny(available_solvers()[solver_name], inst.prior)
    with pytest.raises(ValueError, match="noise_std"):
        solver.fit(inst.y, fn)
    # an explicit noise level, zero included, is accepted (the default update needs no positive noise)
    solver.fit(inst.y, fn, noise_std=0.1)
    assert solver.stats_["n_forward_evals"] > 0


def test_explicit_zero_noise_runs_and_matches_a_noiseless_problem():
    inst, fn = _linear_case()
    a = _tiny(kd.EnKGSolver, inst.prior).fit(inst.y, fn, noise_std=0)
    problem = kd.problems.LinearProblem(inst.problem.matrix, inst.problem.x_shape, noise_std=0.0)
    b = _tiny(kd.EnKGSolver, inst.prior).fit(inst.y, problem)
    np.testing.assert_array_equal(np.asarray(a.particles_), np.asarray(b.particles_))


def test_start_without_noise_std_and_tell_before_ask_are_refused():
    inst, fn = _linear_case()
    with pytest.raises(ValueError, match="noise_std"):
        _tiny(kd.EKISolver, inst.prior).start(inst.y)
    solver = _tiny(kd.EKISolver, inst.prior).start(inst.y, noise_std=0.1)
    with pytest.raises(RuntimeError, match="before ask"):
        solver.tell(np.zeros((4, *inst.problem.y_shape)))
    X = solver.ask()
    with pytest.raises(ValueError, match="shape"):
        solver.tell(np.zeros((X.shape[0], 99)))
    solver.tell(fn(X))  # a failed tell can be retried with the right values
    with pytest.raises(RuntimeError, match="before ask"):
        solver.tell(fn(X))  # the same values twice
    while (X := solver.ask()) is not None:
        solver.tell(fn(X))
    assert solver.done_


# --------------------------------------------------------------------------
# item 1: cost is stated before the run
# --------------------------------------------------------------------------


@pytest.mark.parametrize("solver_name", sorted(available_solvers()))
def test_every_solver_costs_itself_in_advance(solver_name):
    inst = kd.problems.make("linear-gaussian")
    solver = _tiny(available_solvers()[solver_name], inst.prior)
    planned = solver.expected_evaluations()
    for key in ("n_forward_evals", "n_denoiser_evals", "n_sequential_forward_evals"):
        assert int(planned[key]) >= 0


def test_a_costly_run_warns_before_it_starts():
    import warnings

    inst = kd.problems.make("linear-gaussian")
    solver = _tiny(kd.EnKGSolver, inst.prior)
    planned = solver.expected_evaluations()["n_forward_evals"]
    calls = []

    def forward(X):
        calls.append(len(X))
        return inst.problem(X)

    box = kd.problems.BlackBox(
        lambda x: inst.problem(x[None])[0], inst.problem.x_shape, inst.problem.y_shape, inst.problem.noise_std
    )
    with kd.config_context(max_forward_evals=planned - 1):
        with pytest.warns(kd.CostWarning, match=f"{planned:,} forward evaluations"):
            solver.fit(inst.y, forward, noise_std=0.1)
    with kd.config_context(max_forward_evals=planned):  # at the limit: no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error", kd.CostWarning)
            solver.fit(inst.y, box)
    # an error filter stops the run before any forward evaluation
    calls.clear()
    with kd.config_context(max_forward_evals=0), warnings.catch_warnings():
        warnings.simplefilter("error", kd.CostWarning)
        with pytest.raises(kd.CostWarning):
            solver.fit(inst.y, forward, noise_std=0.1)
    assert calls == []
    assert kd.get_config()["max_forward_evals"] == 1e6  # the context restored the default


def test_set_config_validates_and_none_switches_off():
    with pytest.raises(ValueError, match="max_forward_evals"):
        kd.set_config(max_forward_evals=-1)
    with kd.config_context(max_forward_evals=None):
        assert kd.get_config()["max_forward_evals"] is None
    assert kd.get_config()["max_forward_evals"] == 1e6


def test_scg_at_its_default_ensemble_size_warns():
    # the example: 98 million forward evaluations at n_particles=256
    solver = kd.SCGSolver(kd.problems.make("linear-gaussian").prior, n_particles=256)
    assert solver.expected_evaluations()["n_forward_evals"] > 1e6
    with pytest.warns(kd.CostWarning, match="SCGSolver plans"):
        solver._warn_if_costly(solver.expected_evaluations())


def test_progress_bar_states_the_plan_stays_and_counts_the_guided_steps(capsys):
    inst = kd.problems.make("linear-gaussian")
    solver = kd.SCGSolver(inst.prior, n_particles=2, n_steps=10, n_queries=3, verbose=True, random_state=0)
    planned = solver.expected_evaluations()
    label = solver._progress_label(planned)
    assert "forward" in label and "denoiser" in label and "SCG" in label
    weights = solver._progress_weights()
    assert len(weights) == 10 and sum(weights) > 10  # guided steps weigh more than plain ones
    solver.fit(inst.y, inst.problem)
    err = capsys.readouterr().err
    assert "planned" in err and f"{sum(weights)}/{sum(weights)}" in err  # left on screen, full
    eki = kd.EKISolver(inst.prior, n_particles=8, verbose=True, random_state=0).fit(inst.y, inst.problem)
    err = capsys.readouterr().err
    n = len(eki.history_)
    assert f"{n}/{n}" in err  # EKI's bar has a total and ends at the iterations it ran


# --------------------------------------------------------------------------
# item 7: smaller surprises
# --------------------------------------------------------------------------


def test_problem_instance_repr_is_a_short_summary():
    inst = kd.problems.make("deblur")
    text = repr(inst)
    assert len(text) < 300 and "\n" not in text
    assert "GaussianDeblur" in text and "(1, 32, 32)" in text and "GaussianPrior" in text
    assert "array(" not in text


def test_forward_returning_nested_lists_says_what_it_returned():
    inst, _ = _linear_case()
    A = inst.problem.matrix
    solver = _tiny(kd.EKISolver, inst.prior)
    with pytest.raises(ValueError, match="returned a list, not an array"):
        solver.fit(inst.y, lambda X: (np.asarray(X) @ A.T).tolist(), noise_std=0.1)


def test_export_results_accepts_a_comparison(tmp_path):
    inst = kd.problems.make("linear-gaussian")
    solvers = [_tiny(kd.EnKGSolver, inst.prior), _tiny(kd.EKISolver, inst.prior)]
    table = kd.compare(solvers, inst.problem, inst.y, x_true=inst.x_true)
    paths = kd.export_results(table, tmp_path / "run.npz", y=inst.y)
    assert len(paths) == 2 and all(p.exists() for p in paths)
    assert {p.name for p in paths} == {"run-EnKGSolver.npz", "run-EKISolver.npz"}
    with np.load(paths[0]) as f:
        assert f["particles"].shape[0] == 4
    with pytest.raises(TypeError, match="fitted solver or the result of kd.compare"):
        kd.export_results(object(), tmp_path / "x.npz")


def test_observe_on_a_torch_tensor_gives_no_warning():
    import warnings

    torch = pytest.importorskip("torch")
    inst = kd.problems.make("deblur")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = inst.problem.observe(torch.as_tensor(inst.x_true), random_state=0)
    assert isinstance(y, torch.Tensor)


# --------------------------------------------------------------------------
# item 5: figures ready for a paper
# --------------------------------------------------------------------------


@pytest.fixture
def pyplot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def test_metric_labels_are_readable():
    from kalmandiff.compare import metric_label

    assert metric_label("relative_l2", 0.1823) == "relative L2 = 0.18"
    assert metric_label("psnr", 26.59) == "PSNR = 26.6 dB"
    assert metric_label("some_score", 3.0) == "some score = 3"


def test_comparison_of_a_1d_problem_overlays_the_truth(pyplot):
    inst = kd.problems.make("linear-gaussian")
    a = _tiny(kd.EnKGSolver, inst.prior).fit(inst.y, inst.problem)
    b = _tiny(kd.EKISolver, inst.prior).fit(inst.y, inst.problem)
    fig = kd.plot_comparison({"EnKG": a, "EKI": b}, inst.problem, inst.x_true, inst.y)
    overlay = fig.axes[0]
    assert len(overlay.lines) == 3  # truth, EnKG, EKI on one axis
    np.testing.assert_allclose(overlay.lines[0].get_ydata(), np.ravel(inst.x_true))
    labels = [t.get_text() for t in overlay.get_legend().get_texts()]
    assert labels[0] == "truth" and labels[1].startswith("EnKG (relative L2 = ")
    assert fig.axes[1].get_title() == "observation"


def test_uncertainty_maps_have_their_own_scales(pyplot):
    inst = kd.problems.make("deblur")
    s = _tiny(kd.EKISolver, inst.prior).fit(inst.y, inst.problem)
    axes = kd.plotting.plot_uncertainty(s, x_true=inst.x_true)
    err_clim = axes[2].images[0].get_clim()
    std_clim = axes[3].images[0].get_clim()
    _, std = s.reconstruct(return_std=True)
    assert std_clim[1] == pytest.approx(float(np.max(std)))
    assert err_clim[1] == pytest.approx(float(np.max(np.abs(s.reconstruct() - inst.x_true))))


def test_history_panels_span_the_same_steps_and_name_the_solver(pyplot):
    inst = kd.problems.make("linear-gaussian")
    s = _tiny(kd.EnKGSolver, inst.prior).fit(inst.y, inst.problem)
    axes = kd.plotting.plot_history(s, keys=("misfit_mean", "spread"))
    assert axes[0].get_xlim() == axes[1].get_xlim()
    steps = [r["step"] for r in s.history_]
    lo, hi = axes[0].get_xlim()
    assert lo < min(steps) and hi > max(steps)
    label = axes[0].get_legend().get_texts()[0].get_text()
    assert label.startswith("EnKG") and "noise std 0.1" in label
    assert axes[1].get_title() == "ensemble spread"


def test_eki_label_says_its_plan_is_an_upper_bound():
    prior = kd.problems.make("linear-gaussian").prior
    adaptive = kd.EKISolver(prior, n_particles=8)  # the data-misfit controller (dt=None) may stop early
    fixed = kd.EKISolver(prior, n_particles=8, dt=0.5)
    assert "up to" in adaptive._progress_label(adaptive.expected_evaluations())
    assert "up to" not in fixed._progress_label(fixed.expected_evaluations())
