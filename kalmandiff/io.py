"""Saving fitted solvers and exporting results (xarray/netCDF, or ``.npz`` without xarray).

* :func:`save` / :func:`load` keep a whole fitted solver (parameters, prior,
  particles, statistics, history) in one pickle file, to pick a session up
  later.  Pickles run code when loaded: only load files you trust.
* :func:`export_results` writes the results in an open, self-describing
  format for other tools: an ``xarray.Dataset`` in the spirit of ArviZ's
  InferenceData (particles, observation and statistics with explicit
  dimensions, attributes naming the library, its version and the settings),
  saved as netCDF; or a NumPy ``.npz`` archive with the same variables.
"""

from __future__ import annotations

import datetime
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ._backend import to_numpy

__all__ = ["save", "load", "export_results", "results_dataset"]

_FORMAT = 1
_FITTED = ("particles_", "history_", "stats_", "stopped_early_", "n_particles_", "n_iter_")


def save(solver, path) -> Path:
    """Write a fitted (or unfitted) solver to ``path``; callbacks are not saved.

    Particles are stored as NumPy arrays; :func:`load` returns them as such.
    """
    from . import __version__

    params = solver.get_params(deep=False)
    if params.get("callbacks"):
        params["callbacks"] = None  # closures rarely pickle; re-attach them after loading
    fitted = {k: getattr(solver, k) for k in _FITTED if hasattr(solver, k)}
    if "particles_" in fitted:
        fitted["particles_"] = np.asarray(to_numpy(fitted["particles_"]))
    payload = {
        "format": _FORMAT,
        "version": __version__,
        "class": type(solver),
        "params": params,
        "fitted": fitted,
    }
    path = Path(path)
    with open(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load(path):
    """Read a solver written by :func:`save` (or ``solver.save``); returns the solver."""
    with open(path, "rb") as fh:
        payload = pickle.load(fh)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a kalmandiff solver file (format {_FORMAT}).")
    solver = payload["class"](**payload["params"])
    for key, value in payload["fitted"].items():
        setattr(solver, key, value)
    if "particles_" in payload["fitted"]:
        solver._y_like = payload["fitted"]["particles_"]
    return solver


def _history_arrays(history: list[dict]) -> dict[str, np.ndarray]:
    keys = sorted(
        {k for rec in history for k, v in rec.items() if isinstance(v, (int, float, bool)) or v is None}
    )
    out = {}
    for k in keys:
        vals = [rec.get(k) for rec in history]
        if all(v is None or isinstance(v, (int, float, bool, np.number)) for v in vals):
            # netCDF stores no booleans: keep them as int8 (0/1).
            arr = np.array([np.nan if v is None else float(v) for v in vals])
            out[k] = arr.astype(np.int8) if all(isinstance(v, bool) for v in vals) else arr
    return out


def _attributes(solver) -> dict[str, Any]:
    from . import __version__

    params = {k: repr(v) for k, v in solver.get_params(deep=False).items() if k != "callbacks"}
    attrs = {
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "inference_library": "kalmandiff",
        "inference_library_version": __version__,
        "solver": type(solver).__name__,
        "settings": json.dumps(params),
    }
    for k, v in getattr(solver, "stats_", {}).items():
        attrs[f"stats_{k}"] = float(v) if isinstance(v, (int, float, np.number)) else str(v)
    return attrs


def results_dataset(solver, y=None, x_true=None):
    """The results as an ``xarray.Dataset`` (needs xarray).

    Variables: ``particles`` (``particle, x_0, x_1, ...``), ``mean``, ``std``,
    ``observation`` (``y_0, ...``) and ``x_true`` when given, one
    ``history_<field>`` per numeric history field along ``step``; the
    attributes hold the library, its version, the solver's settings (JSON)
    and its ``stats_``.
    """
    import xarray as xr

    X = np.asarray(to_numpy(solver.particles_))
    xdims = [f"x_{i}" for i in range(X.ndim - 1)]
    data = {
        "particles": (["particle", *xdims], X),
        "mean": (xdims, X.mean(axis=0)),
        "std": (xdims, X.std(axis=0)),
    }
    if y is not None:
        y = np.asarray(to_numpy(y))
        data["observation"] = ([f"y_{i}" for i in range(y.ndim)], y)
    if x_true is not None:
        data["x_true"] = (xdims, np.asarray(to_numpy(x_true)))
    for k, v in _history_arrays(getattr(solver, "history_", [])).items():
        data[f"history_{k}"] = (["step"], v)
    return xr.Dataset(data, attrs=_attributes(solver))


def _is_comparison(obj) -> bool:
    from .compare import ComparisonTable

    attrs = getattr(obj, "attrs", None)
    return isinstance(obj, ComparisonTable) or (isinstance(attrs, dict) and "solvers" in attrs)


def export_results(solver, path, y=None, x_true=None):
    """Write a fitted solver's results for other tools.

    A path ending in ``.nc`` is written as netCDF through xarray (the scipy
    backend suffices); anything else, or no xarray, gives a ``.npz``
    archive with the same variables and a JSON ``attributes`` entry.

    Parameters
    ----------
    solver : fitted solver, the result of :func:`kalmandiff.compare`, or an SBCResult
        A :class:`~kalmandiff.diagnostics.SBCResult` (from
        :func:`kalmandiff.diagnostics.sbc`) writes its ranks, coverage and
        scores per trial (:meth:`~kalmandiff.diagnostics.SBCResult.export`).
        A comparison (its table or DataFrame) writes one file per fitted
        solver, ``<stem>-<solver name><suffix>`` beside ``path`` (into
        ``path`` when it is an existing directory).
    path : str or path-like
    y, x_true : array, optional
        Stored alongside, for plotting and metrics later.

    Returns
    -------
    pathlib.Path or list of pathlib.Path
        The file written (its suffix tells which format was used); a list,
        one per solver, for a comparison.
    """
    from .diagnostics import SBCResult

    if isinstance(solver, SBCResult):
        return solver.export(path)  # a calibration study exports its own arrays
    if not hasattr(solver, "particles_") and not hasattr(solver, "get_params"):
        from .compare import _fitted_solvers

        fitted = _fitted_solvers(solver) if _is_comparison(solver) else {}
        if not fitted:
            raise TypeError(
                f"export_results needs a fitted solver or the result of kd.compare (got {type(solver).__name__})."
            )
        path = Path(path)
        if path.is_dir():
            targets = {name: path / f"{name}.npz" for name in fitted}
        else:
            targets = {name: path.with_name(f"{path.stem}-{name}{path.suffix}") for name in fitted}
        return [export_results(s, targets[name], y=y, x_true=x_true) for name, s in fitted.items()]
    path = Path(path)
    if path.suffix == ".nc":
        try:
            ds = results_dataset(solver, y=y, x_true=x_true)
        except ImportError:
            path = path.with_suffix(".npz")
        else:
            ds.to_netcdf(path)
            return path
    X = np.asarray(to_numpy(solver.particles_))
    arrays = {"particles": X, "mean": X.mean(axis=0), "std": X.std(axis=0)}
    if y is not None:
        arrays["observation"] = np.asarray(to_numpy(y))
    if x_true is not None:
        arrays["x_true"] = np.asarray(to_numpy(x_true))
    for k, v in _history_arrays(getattr(solver, "history_", [])).items():
        arrays[f"history_{k}"] = v
    arrays["attributes"] = np.array(json.dumps(_attributes(solver)))
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    np.savez(path, **arrays)
    return path
