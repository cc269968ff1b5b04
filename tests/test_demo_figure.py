"""The demo's figure: uncertainty panels, white at zero, a caption saying what was observed (issue 20, item 7)."""

import matplotlib
import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.plotting import colour_limits, plot_solutions

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def ns_fits():
    inst = kd.problems.make("navier-stokes", random_state=0)
    solvers = {
        name: kd.EKISolver(inst.prior, n_particles=n, max_iter=2, random_state=k, verbose=False).fit(
            inst.y, inst.problem
        )
        for k, (name, n) in enumerate((("eki-8", 8), ("eki-4", 4)))
    }
    return inst, solvers


def _images(fig):
    return {ax.get_title(): ax.images[0] for ax in fig.axes if ax.images}


def test_colour_limits_are_symmetric_for_signed_data():
    assert colour_limits(np.array([-1.0, 5.0])) == (-5.0, 5.0)
    assert colour_limits(np.array([-7.0, 2.0])) == (-7.0, 7.0)
    assert colour_limits(np.array([0.5, 2.0])) == (0.5, 2.0)  # unsigned: its range
    assert colour_limits(np.array([np.nan, -2.0, 1.0])) == (-2.0, 2.0)


def test_comparison_figure_puts_white_at_zero():
    truth = np.linspace(-1.0, 5.0, 64).reshape(1, 8, 8)  # a signed field with an asymmetric range
    case = kd.problems.make("linear-gaussian", random_state=0)

    class Fitted:
        def reconstruct(self, return_std=False):
            return truth

    fig = kd.plot_comparison({"a": Fitted()}, x_true=truth, y=case.y)
    clims = {title.split("\n")[0]: im.get_clim() for title, im in _images(fig).items()}
    assert clims["truth"] == clims["a"] == (-5.0, 5.0)


def test_solutions_figure_shows_each_solvers_std_on_one_scale(ns_fits):
    inst, solvers = ns_fits
    fig = plot_solutions(solvers, x_true=inst.x_true, y=inst.y, problem=inst.problem, caption="seen: y")
    std_images = [ax.images[0] for ax in fig.axes if ax.images and ax.get_title() == "ensemble std"]
    assert len(std_images) == len(solvers)
    for im, solver in zip(std_images, solvers.values()):
        expected = np.std(np.asarray(solver.particles_), axis=0)[0]  # the particles' own spread
        np.testing.assert_allclose(np.asarray(im.get_array()), expected, rtol=1e-12)
        assert im.get_clim() == (
            0.0,
            max(float(np.std(np.asarray(s.particles_), axis=0).max()) for s in solvers.values()),
        )
    field_clims = {im.get_clim() for t, im in _images(fig).items() if t == "truth" or t.startswith("eki")}
    assert len(field_clims) == 1  # truth and estimates on one scale
    lo, hi = field_clims.pop()
    assert lo == -hi and hi >= np.abs(inst.x_true).max()
    assert fig.get_supxlabel() == "seen: y"


def test_single_particle_std_says_it_is_zero(ns_fits):
    inst, solvers = ns_fits
    one = kd.SCGSolver(inst.prior, n_particles=1, n_steps=5, n_queries=2, random_state=0, verbose=False)
    one.fit(inst.y, inst.problem)
    fig = plot_solutions({"scg": one}, x_true=inst.x_true, y=inst.y)
    assert any(ax.get_title() == "ensemble std: 0 (1 particle)" for ax in fig.axes)


def test_navier_stokes_says_what_it_observes():
    inst = kd.problems.make("navier-stokes", random_state=0)
    text = inst.problem.describe_observation()
    assert text == "vorticity at t = 1 on a 16x16 grid (every 2nd point of 32x32), noise std 1"
    generic = kd.problems.make("linear-gaussian", random_state=0).problem.describe_observation()
    assert "shape" in generic and "noise std" in generic


def test_colour_image_std_is_one_map_per_solver():
    rng = np.random.default_rng(0)
    particles = rng.uniform(-1, 1, size=(5, 3, 8, 8))

    class FittedRGB:
        n_particles_ = 5

        def reconstruct(self, return_std=False):
            return particles.mean(axis=0), particles.std(axis=0)

    fig = plot_solutions({"a": FittedRGB()}, x_true=particles[0])
    (std_ax,) = [ax for ax in fig.axes if ax.get_title() == "ensemble std"]
    np.testing.assert_allclose(std_ax.images[0].get_array(), particles.std(axis=0).mean(axis=0))
