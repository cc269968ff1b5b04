"""Saving fitted solvers and exporting results, in files that never run code when read.

* :func:`save` / :func:`load` keep a whole fitted solver (its class, parameters,
  prior, particles, statistics, history) in one NumPy ``.npz`` archive: arrays
  as ``.npy`` entries, everything else as JSON, read with
  ``allow_pickle=False`` (DESIGN.md: a file received from someone else never
  runs code when loaded).  What is stored, and what :func:`load` needs back:

  - parameters that are plain data (numbers, strings, None, lists, dicts,
    arrays, a NumPy ``Generator`` as ``random_state``) are stored as they are;
  - ``callbacks`` are not stored (re-attach them with ``set_params``);
  - the prior is stored by class and arrays when it is one of the analytic
    priors (:class:`~kalmandiff.priors.GaussianPrior`,
    :class:`~kalmandiff.priors.GaussianMixturePrior`,
    :class:`~kalmandiff.priors.GaussianRandomFieldPrior`,
    :class:`~kalmandiff.priors.LowRankGaussianPrior`: the same prior, bit for
    bit; Gaussian and mixture covariances are stored as their
    eigendecompositions); any other prior (a :class:`~kalmandiff.priors.TorchDenoiser`, a
    user's prior) is named only, and ``load(path, prior=...)`` takes it back
    (``prior=None`` reads the results without one);
  - any other parameter that is not plain data is named only, and must be
    passed to :func:`load` as a keyword.

  The solver's class is looked up among the registered solvers by name (or
  passed as ``solver_class=``); the file never names code to import.
* :func:`export_results` writes the results for other tools: an
  ``xarray.Dataset`` in the spirit of ArviZ's InferenceData saved as netCDF,
  or a ``.npz`` archive with the same variables, which :func:`load` also reads
  back as a solver and :func:`load_results` as plain arrays.
* :func:`read_checkpoint` reads a fit's checkpoint (``fit(..., checkpoint=path)``),
  also a safe ``.npz`` archive.
"""

from __future__ import annotations

import datetime
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ._backend import to_numpy
from ._files import NotPlainData, encode, read_archive, write_archive

__all__ = ["save", "load", "load_results", "read_checkpoint", "export_results", "results_dataset"]

_FITTED = ("particles_", "history_", "stats_", "stopped_early_", "n_particles_", "n_iter_", "update_")


class _StoredPrior:
    """The default of ``load(prior=...)``: the prior stored in the file."""

    def __repr__(self) -> str:
        return "<the stored prior>"


_UNSET = _StoredPrior()


# --------------------------------------------------------------------------
# priors by class and arrays
# --------------------------------------------------------------------------


def _describe_prior(prior) -> dict | None:
    """``{"class": name, "args": constructor arguments}`` for an analytic prior; None for any other."""
    from . import priors

    kind = type(prior)
    if kind is priors.GaussianPrior:  # its eigendecomposition, so that the loaded prior is bit for bit
        eigen = {"mean": prior.mean, "evals": prior._evals, "evecs": prior._evecs, "kind": prior.cov_kind}
        return {"class": kind.__name__, "eigen": eigen}
    elif kind is priors.GaussianMixturePrior:
        eigen = {
            "weights": prior.weights,
            "means": prior.means,
            "evals": list(prior._evals),
            "evecs": list(prior._evecs),
            "kind": prior.cov_kind,
        }
        return {"class": kind.__name__, "eigen": eigen}
    elif kind is priors.GaussianRandomFieldPrior:
        args = {
            "shape": list(prior.shape),
            "alpha": prior.alpha,
            "tau": prior.tau,
            "scale": prior.scale,
            "length": prior.length,
            "mean": np.asarray(prior._mean),
        }
    elif kind is getattr(priors, "LowRankGaussianPrior", None):
        args = {
            "mean": prior._mean.reshape(prior.event_shape),
            "components": prior._U,
            "variances": prior._v,
            "residual_variance": prior._r,
        }
    else:
        return None
    return {"class": kind.__name__, "args": args}


def _build_prior(description: dict):
    from . import priors

    allowed = ("GaussianPrior", "GaussianMixturePrior", "GaussianRandomFieldPrior", "LowRankGaussianPrior")
    name = description.get("class")
    if name not in allowed:
        raise ValueError(f"a stored prior names the class {name!r}, which is not one of {allowed}.")
    if name in ("GaussianPrior", "GaussianMixturePrior"):
        return getattr(priors, name)._from_eigen(**description["eigen"])
    return getattr(priors, name)(**description["args"])


# --------------------------------------------------------------------------
# solvers
# --------------------------------------------------------------------------


def _solver_tree(solver, extra: dict) -> dict:
    """The safe description of ``solver``; its particles go into ``extra["particles"]``."""
    params = dict(solver.get_params(deep=False))
    params.pop("callbacks", None)  # closures: re-attach them after loading
    prior = params.pop("prior", None)
    stored, missing = {}, {}
    for name, value in params.items():
        try:
            encode(value, {})  # only plain data is stored
            stored[name] = value
        except NotPlainData as exc:
            missing[name] = str(exc)
    prior_desc = None if prior is None else _describe_prior(prior)
    fitted = {}
    for key in _FITTED:
        if not hasattr(solver, key):
            continue
        value = getattr(solver, key)
        if key == "particles_":
            extra["particles"] = np.asarray(to_numpy(value))
            value = None  # stored once, as the archive's "particles" entry
        fitted[key] = value
    return {
        "class": type(solver).__name__,
        "params": stored,
        "not_stored": missing,
        "prior": prior_desc,
        "prior_name": None if prior is None else repr(prior),
        "prior_event_shape": None if prior is None else list(getattr(prior, "event_shape", ())),
        "fitted": fitted,
    }


def save(solver, path) -> Path:
    """Write a fitted (or unfitted) solver to ``path``, a ``.npz`` archive that never runs code when read.

    Parameters
    ----------
    solver : solver
        Any kalmandiff solver (``get_params`` and the fitted ``particles_``,
        ``history_``, ``stats_``).
    path : str or path-like
        The file, used as given (any suffix; ``.npz`` is conventional);
        written atomically (a temporary file, then a rename).

    Returns
    -------
    pathlib.Path

    Notes
    -----
    See :mod:`kalmandiff.io` for what is stored: plain parameters, the prior
    when it is analytic (by class and arrays), the fitted state; callbacks
    are dropped; a prior or parameter that is not plain data is only named,
    and :func:`load` asks for it back.
    """
    extra: dict[str, np.ndarray] = {}
    tree = _solver_tree(solver, extra)
    try:
        return write_archive(path, "solver", tree, extra)
    except NotPlainData as exc:
        raise TypeError(f"cannot save {type(solver).__name__}: its fitted state holds {exc}.") from exc


def _solver_class(name: str, solver_class):
    if solver_class is not None:
        if solver_class.__name__ != name:
            raise ValueError(f"the file holds a {name}, not a {solver_class.__name__}.")
        return solver_class
    from .estimators._registry import registered_solvers

    for spec in registered_solvers():
        if spec.cls.__name__ == name:
            return spec.cls
    raise ValueError(
        f"the file holds a {name}, which is not a registered solver: pass its class, "
        f"kd.load(path, solver_class={name})."
    )


def _prior_for(path, tree: dict, prior):
    if prior is not _UNSET:
        stored = tree.get("prior_event_shape")
        shape = tuple(getattr(prior, "event_shape", ())) if prior is not None else None
        if prior is not None and stored is not None and tuple(stored) != shape:
            raise ValueError(
                f"the prior passed to load has event_shape {shape}; the solver in {path} was fitted "
                f"with a prior of event_shape {tuple(stored)} ({tree.get('prior_name')})."
            )
        return prior
    if tree.get("prior") is not None:
        return _build_prior(tree["prior"])
    if tree.get("prior_name") is None:
        return None
    raise ValueError(
        f"{path} holds a {tree['class']} whose prior, {tree['prior_name']} (event_shape "
        f"{tuple(tree.get('prior_event_shape') or ())}), is not stored: only the analytic priors are "
        "(GaussianPrior, GaussianMixturePrior, GaussianRandomFieldPrior, LowRankGaussianPrior). "
        "Pass it back, kd.load(path, prior=prior), or prior=None to read the results without it."
    )


def load(path, *, prior: Any = _UNSET, solver_class=None, **params):
    """Read a solver written by :func:`save` (or a ``.npz`` written by :func:`export_results` or the CLI).

    The file is read with ``numpy.load(..., allow_pickle=False)`` and JSON:
    nothing in it can run code.

    Parameters
    ----------
    path : str or path-like
    prior : Prior or None, optional
        The prior, when the file could not store it (a
        :class:`~kalmandiff.priors.TorchDenoiser`, a user's prior); it must
        have the stored event shape.  ``None`` reads the solver without a
        prior (``reconstruct`` works, ``fit`` asks for one).  Default: the
        stored analytic prior.
    solver_class : type, optional
        The solver's class, when it is not a registered solver.
    **params
        Values for parameters that were not stored (not plain data), or
        overrides (e.g. ``callbacks=[...]``).

    Returns
    -------
    solver
        With its parameters and, if it was fitted, ``particles_`` (NumPy),
        ``history_``, ``stats_``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file is not a kalmandiff solver file (the message says what it
        is: a pickle, a netCDF export, another program's archive, a damaged
        archive, and how to open it), or the prior or a parameter must be
        passed back.
    """
    _, tree = read_archive(path, ("solver", "results"), "kalmandiff solver file (kd.save)")
    cls = _solver_class(tree["class"], solver_class)
    missing = sorted(set(tree.get("not_stored", {})) - set(params))
    if missing:
        what = ", ".join(f"{k} ({tree['not_stored'][k]})" for k in missing)
        raise ValueError(
            f"{path} does not store the parameters {what}, which are not plain data: pass them, "
            f"kd.load(path, {missing[0]}=...)."
        )
    solver = cls(prior=_prior_for(path, tree, prior), **{**tree["params"], **params})
    fitted = dict(tree.get("fitted", {}))
    if "particles_" in fitted:
        fitted["particles_"] = _particles(path)
    for key, value in fitted.items():
        setattr(solver, key, value)
    if "particles_" in fitted:
        solver._y_like = fitted["particles_"]
    return solver


def _particles(path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return np.array(archive["particles"])
    except (KeyError, ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is a damaged kalmandiff file ({type(exc).__name__}: {exc}).") from exc


def load_results(path) -> dict[str, Any]:
    """The arrays and attributes of a results export (:func:`export_results`, the CLI's ``--save``).

    Parameters
    ----------
    path : str or path-like
        A ``.npz`` export (netCDF exports open with ``xarray.open_dataset``).

    Returns
    -------
    dict
        ``particles``, ``mean``, ``std`` (and ``observation``, ``x_true``,
        ``history_<field>`` where stored) as NumPy arrays, and
        ``attributes``: the library, its version, the solver's settings and
        its ``stats_`` (a dict).

    Raises
    ------
    ValueError
        The file is not a results export (the message says what it is).
    """
    from ._files import ARRAY_PREFIX, META, describe_file

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if not {"particles", "attributes"} <= names:
                raise ValueError(f"{path} is not a kalmandiff results export: {describe_file(path)}")
            keys = sorted(k for k in names - {"attributes", META} if not k.startswith(ARRAY_PREFIX))
            out = {k: np.array(archive[k]) for k in keys}
            out["attributes"] = json.loads(str(archive["attributes"][()]))
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a kalmandiff results export: {describe_file(path)}") from exc
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path} is not a kalmandiff results export: {describe_file(path)}") from exc
    return out


def read_checkpoint(path) -> dict[str, Any]:
    """The content of a fit's checkpoint (``fit(..., checkpoint=path)``), read without running code.

    Returns
    -------
    dict
        ``fingerprint`` (what a resuming run must match), ``state`` (the
        solver's loop state: NumPy arrays and numbers), ``rng``, ``counters``,
        ``elapsed_s``, ``history`` (the records so far) and ``done``.

    Raises
    ------
    FileNotFoundError, ValueError
        No file, or not a kalmandiff checkpoint (the message names the file
        and says what it is).
    """
    _, tree = read_archive(path, ("checkpoint",), "kalmandiff checkpoint")
    return tree


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
    from ._version import __version__

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
    backend suffices); ``.npz`` or no suffix (or ``.nc`` without xarray,
    with a warning) gives a ``.npz`` archive with the same variables and a
    JSON ``attributes`` entry; any other suffix is a ValueError.

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
        from .compare import fitted_solvers

        fitted = fitted_solvers(solver) if _is_comparison(solver) else {}
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
    if path.suffix not in ("", ".nc", ".npz"):
        raise ValueError(
            f"export_results writes .npz or .nc (netCDF) files, not {path.suffix!r} ({path}); "
            "name the file with one of those suffixes."
        )
    if path.suffix == ".nc":
        try:
            ds = results_dataset(solver, y=y, x_true=x_true)
        except ImportError:
            warnings.warn(
                f"xarray is not installed: {path} is written as {path.with_suffix('.npz')}.", stacklevel=2
            )
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
    # The solver rides along (kd.load reads the export back as a solver); its particles are the
    # export's "particles" entry, stored once.
    tree = _solver_tree(solver, arrays) if hasattr(solver, "get_params") else None
    return write_archive(path, "results", tree, arrays)
