"""kd.compare: one row per solver, counts from stats_, errors in rows, Markdown rendering, plots."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.compare import COUNT_COLUMNS, TIME_COLUMNS, ComparisonTable, compare, plot_comparison
from kalmandiff.estimators.diffpir import DiffPIRSolver
from kalmandiff.estimators.rmp import RMPSolver
from kalmandiff.testing import gaussian_case

NOISE = 0.1


@pytest.fixture
def setting():
    case = gaussian_case(6, 3, NOISE, seed=2)
    problem = kd.problems.LinearProblem(case["A"], (6,), NOISE)
    x_true = np.random.default_rng(5).standard_normal(6)
    y = problem.observe(x_true, random_state=1)
    solvers = [
        kd.EnKGSolver(case["prior"], n_particles=8, n_steps=8, random_state=0, verbose=False),
        kd.EKISolver(case["prior"], n_particles=8, random_state=0, verbose=False),
        DiffPIRSolver(case["prior"], n_particles=4, n_steps=10, random_state=0, verbose=False),
    ]
    return case, problem, x_true, y, solvers


def test_rows_columns_and_counts_equal_each_solvers_stats(setting):
    _, problem, x_true, y, solvers = setting
    table = compare(solvers, problem, y, x_true, as_frame=False)
    assert isinstance(table, ComparisonTable) and len(table) == 3
    assert table["solver"] == ["EnKGSolver", "EKISolver", "DiffPIRSolver"]
    assert table.columns == ["solver", "relative_l2", *COUNT_COLUMNS, *TIME_COLUMNS, "error"]
    for row in table:
        fitted = table.solvers[row["solver"]]
        for key in COUNT_COLUMNS:
            assert row[key] == fitted.stats_.get(key, 0)
        for key in TIME_COLUMNS:
            assert row[key] == fitted.stats_[key]
        x_hat = np.asarray(fitted.reconstruct())
        assert row["relative_l2"] == pytest.approx(np.linalg.norm(x_hat - x_true) / np.linalg.norm(x_true))
        assert row["error"] is None


def test_clone_leaves_the_given_solvers_untouched_unless_asked(setting):
    _, problem, _, y, solvers = setting
    table = compare(solvers[:1], problem, y, as_frame=False)
    assert not hasattr(solvers[0], "stats_")
    assert table.solvers["EnKGSolver"] is not solvers[0]
    assert table.solvers["EnKGSolver"].prior is solvers[0].prior
    assert "relative_l2" not in table.columns  # no truth, no metrics
    table = compare(solvers[:1], problem, y, clone=False, as_frame=False)
    assert table.solvers["EnKGSolver"] is solvers[0] and hasattr(solvers[0], "stats_")


def test_seeded_solvers_give_the_same_answer_inside_and_outside_compare(setting):
    _, problem, x_true, y, solvers = setting
    table = compare({"a": solvers[0]}, problem, y, x_true, as_frame=False)
    alone = solvers[0].fit(y, problem).reconstruct()
    np.testing.assert_array_equal(np.asarray(table.solvers["a"].reconstruct()), np.asarray(alone))


def test_an_error_is_recorded_in_its_row_or_raised(setting):
    case, _, x_true, y, solvers = setting
    A = case["A"]

    def forward(X):  # a plain callable: not differentiable, so RMP refuses it
        return X @ A.T

    named = {"EnKG": solvers[0], "RMP": RMPSolver(case["prior"], verbose=False)}
    table = compare(named, forward, y, x_true, noise_std=NOISE, as_frame=False)
    rows = {r["solver"]: r for r in table}
    assert rows["EnKG"]["error"] is None and np.isfinite(rows["EnKG"]["relative_l2"])
    assert rows["RMP"]["error"].startswith("ValueError:") and "EnKGSolver" in rows["RMP"]["error"]
    assert np.isnan(rows["RMP"]["relative_l2"]) and rows["RMP"]["n_denoiser_evals"] is None
    assert table.solvers["RMP"] is None
    assert "ValueError" in table.to_markdown()
    with pytest.raises(ValueError, match="not differentiable"):
        compare(named, forward, y, x_true, noise_std=NOISE, errors="raise", as_frame=False)


def test_markdown_and_text_rendering(setting):
    _, problem, x_true, y, solvers = setting
    table = compare(solvers, problem, y, x_true, as_frame=False)
    lines = table.to_markdown().splitlines()
    assert len(lines) == 2 + len(table)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == table.columns
    rule = lines[1].strip("|").split("|")
    assert rule[0] == ":---" and rule[header.index("n_forward_evals")] == "---:"
    for line, row in zip(lines[2:], table.to_records()):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["solver"]
        assert cells[header.index("n_denoiser_evals")] == str(row["n_denoiser_evals"])
        assert float(cells[header.index("relative_l2")]) == pytest.approx(row["relative_l2"], rel=1e-3)
        assert cells[header.index("error")] == "-"
    assert table._repr_markdown_() == table.to_markdown()
    text = str(table).splitlines()
    assert len(text) == 2 + len(table) and all(name in str(table) for name in table["solver"])


def test_repeated_class_names_are_numbered_and_bad_options_refused(setting):
    _, problem, _, y, solvers = setting
    table = compare([solvers[0], solvers[0]], problem, y, as_frame=False)
    assert table["solver"] == ["EnKGSolver", "EnKGSolver#2"]
    with pytest.raises(ValueError, match="errors"):
        compare(solvers, problem, y, errors="ignore")
    with pytest.raises(ValueError, match="solvers"):
        compare([], problem, y)


def test_as_frame_true_needs_pandas(setting):
    _, problem, _, y, solvers = setting
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            compare(solvers[:1], problem, y, as_frame=True)
        assert isinstance(compare(solvers[:1], problem, y), ComparisonTable)
    else:  # pragma: no cover - pandas is not a dependency
        frame = compare(solvers[:1], problem, y, as_frame=True)
        assert list(frame["solver"]) == ["EnKGSolver"] and "solvers" in frame.attrs


def test_plot_comparison_draws_truth_each_solver_and_data(setting):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    _, problem, x_true, y, solvers = setting
    table = compare(solvers, problem, y, x_true, as_frame=False)
    fig = plot_comparison(table, problem, x_true, y)
    # a 1-D unknown: the three estimates overlaid on the truth, the data in a second panel
    overlay, data = fig.axes
    labels = [t.get_text() for t in overlay.get_legend().get_texts()]
    assert len(overlay.lines) == 4 and labels[0] == "truth"
    assert labels[1].startswith("EnKG (relative L2 = ")
    assert data.get_title() == "observation"
    plt_ = pytest.importorskip("matplotlib.pyplot")
    plt_.close(fig)
    # images: truth, each solver and the data as panels, with colour bars
    grf = kd.priors.GaussianRandomFieldPrior((1, 6, 6), scale=1.0)
    img_problem = kd.problems.LinearProblem(np.eye(36), (1, 6, 6), NOISE)
    truth = grf.sample(1, random_state=0)[0]
    fitted = [
        kd.EKISolver(grf, n_particles=8, random_state=0, verbose=False).fit(
            img_problem.observe(truth, random_state=1), img_problem
        )
    ]
    fig = plot_comparison(fitted, img_problem, truth, img_problem.observe(truth, random_state=1))
    panels = [ax for ax in fig.axes if ax.images]
    titles = [ax.get_title() for ax in panels]
    assert titles == ["truth", titles[1]] and titles[1].startswith("EKI\nrelative L2 = ")
    assert panels[0].images[0].get_clim() == panels[1].images[0].get_clim()  # one scale ...
    assert len(fig.axes) == 4  # ... one colour bar for both; the data (a vector) is a curve
    assert fig.axes[2].get_title() == "observation" and fig.axes[2].lines
    import matplotlib.pyplot as plt

    plt.close(fig)
    grf = kd.priors.GaussianRandomFieldPrior((1, 8, 8), scale=1.0)
    img = grf.sample(1, random_state=0)[0]
    fig = plot_comparison([], None, img)
    assert len([a for a in fig.axes if a.images]) == 1 and len(fig.axes) == 2  # the image and its colour bar
    plt.close(fig)
