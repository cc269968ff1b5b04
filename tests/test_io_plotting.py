"""Saving, loading and exporting results; the plotting helpers draw what they are given."""

import json

import matplotlib
import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.testing import gaussian_case

matplotlib.use("Agg")

CASE = gaussian_case(4, 3, 0.2, seed=1)


@pytest.fixture(scope="module")
def fitted():
    s = kd.EnKGSolver(
        CASE["prior"], n_particles=16, n_steps=10, update="kalman", random_state=0, verbose=False
    )
    return s.fit(CASE["y"], lambda X: X @ CASE["A"].T, noise_std=0.2)


def test_save_load_round_trip(fitted, tmp_path):
    path = fitted.save(tmp_path / "enkg.pkl")
    back = kd.load(path)
    assert type(back) is kd.EnKGSolver and back.get_params()["update"] == "kalman"
    np.testing.assert_array_equal(back.particles_, fitted.particles_)
    np.testing.assert_array_equal(back.reconstruct(), fitted.reconstruct())
    assert back.stats_ == fitted.stats_ and back.history_ == fitted.history_
    # The loaded solver can be fitted again and gives the same particles (same seed).
    again = back.fit(CASE["y"], lambda X: X @ CASE["A"].T, noise_std=0.2)
    np.testing.assert_array_equal(again.particles_, fitted.particles_)


def test_load_rejects_other_files(tmp_path):
    p = tmp_path / "x.pkl"
    import pickle

    p.write_bytes(pickle.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="not a kalmandiff"):
        kd.load(p)


def test_export_npz(fitted, tmp_path):
    path = kd.export_results(fitted, tmp_path / "res", y=CASE["y"], x_true=CASE["mean"])
    assert path.suffix == ".npz"
    with np.load(path) as f:
        np.testing.assert_array_equal(f["particles"], fitted.particles_)
        np.testing.assert_allclose(f["mean"], fitted.reconstruct())
        np.testing.assert_array_equal(f["observation"], CASE["y"])
        assert f["history_misfit_mean"].shape == (10,)
        assert f["history_corrected"].dtype == np.int8
        attrs = json.loads(str(f["attributes"]))
    assert attrs["inference_library"] == "kalmandiff" and attrs["solver"] == "EnKGSolver"
    assert attrs["stats_n_forward_evals"] == fitted.stats_["n_forward_evals"]


def test_export_netcdf(fitted, tmp_path):
    xr = pytest.importorskip("xarray")
    path = kd.export_results(fitted, tmp_path / "res.nc", y=CASE["y"])
    ds = xr.open_dataset(path)
    np.testing.assert_allclose(ds["particles"].values, fitted.particles_)
    assert ds["particles"].dims == ("particle", "x_0") and ds.attrs["inference_library"] == "kalmandiff"
    assert json.loads(ds.attrs["settings"])["update"] == "'kalman'"
    ds.close()


def test_plots_draw_the_data(fitted):
    axes = kd.plotting.plot_reconstruction(
        x_true=np.eye(4), x_hat=2 * np.eye(4), y=np.arange(3.0), x_std=np.ones((4, 4))
    )
    assert len(axes) == 4
    np.testing.assert_array_equal(axes[1].images[0].get_array(), 2 * np.eye(4))
    assert axes[0].images[0].get_clim() == axes[1].images[0].get_clim()  # truth and estimate share a scale
    lines = kd.plotting.plot_history(fitted, keys=("misfit_mean", "spread"))
    spread = [r["spread"] for r in fitted.history_]
    np.testing.assert_allclose(lines[1].lines[0].get_ydata(), spread)
    with pytest.raises(ValueError):
        kd.plotting.plot_reconstruction()


def test_uncertainty_and_comparison_plots():
    inst = kd.problems.make("navier-stokes", size="small")
    s = kd.EKISolver(inst.prior, n_particles=8, dt=0.5, random_state=0, verbose=False).fit(
        inst.y, inst.problem
    )
    axes = kd.plotting.plot_uncertainty(s, x_true=inst.x_true)
    err = np.abs(np.squeeze(s.reconstruct() - inst.x_true))
    np.testing.assert_allclose(axes[2].images[0].get_array(), err)
    fig = kd.plotting.plot_comparison({"EKI": s}, x_true=inst.x_true, y=inst.y)
    images = [a.images[0].get_array() for a in fig.axes if a.images]
    np.testing.assert_allclose(images[0], np.squeeze(inst.x_true))
    np.testing.assert_allclose(images[1], np.squeeze(s.reconstruct()))
