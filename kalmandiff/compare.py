"""Compare solvers on one problem in one line: a table of accuracy, evaluation counts and times.

>>> table = kd.compare([kd.EnKGSolver(prior), kd.EKISolver(prior)], problem, y, x_true)  # doctest: +SKIP
>>> print(table)                                                                        # doctest: +SKIP
>>> print(kd.ComparisonTable.from_frame(table).to_markdown())   # Markdown, no tabulate  # doctest: +SKIP
>>> kd.compare([...], problem, y, x_true, budget=100_000)      # at equal forward cost  # doctest: +SKIP

``print(table)`` works whatever :func:`compare` returned (a pandas
DataFrame when pandas is installed, else a :class:`ComparisonTable`);
:meth:`ComparisonTable.to_markdown` renders Markdown without optional
packages (a DataFrame's own ``to_markdown`` needs ``tabulate``), and
:meth:`ComparisonTable.from_frame` turns a DataFrame into one.

:func:`compare` fits every solver on the same data and collects what
the paper's tables report; :func:`plot_comparison` shows the
reconstructions side by side.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._backend import to_numpy
from ._colour import colour_limits
from .estimators._recorder import COUNT_COLUMNS, TIME_COLUMNS

__all__ = ["compare", "plot_comparison", "ComparisonTable", "COUNT_COLUMNS", "TIME_COLUMNS", "fitted_solvers"]

_ERRORS = ("record", "raise")


class ComparisonTable:
    """The result of :func:`compare` when pandas is not installed: one record per solver.

    Prints as a plain-text table (``str``), renders as Markdown in notebooks
    (``_repr_markdown_``) and converts to records or Markdown.

    Attributes
    ----------
    columns : list of str
    solvers : dict
        Name -> the fitted solver (None where ``fit`` failed).
    """

    def __init__(self, records: list[dict], columns: list[str], solvers: dict | None = None):
        self._records = [dict(r) for r in records]
        self.columns = list(columns)
        self.solvers = dict(solvers or {})

    # -- container behaviour ---------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        return iter(self.to_records())

    def __getitem__(self, key):
        """A row by position (a dict), or a column by name (a list)."""
        if isinstance(key, str):
            if key not in self.columns:
                raise KeyError(f"no column {key!r}; columns are {self.columns}.")
            return [r.get(key) for r in self._records]
        return dict(self._records[key])

    @classmethod
    def from_frame(cls, table) -> ComparisonTable:
        """A ComparisonTable from :func:`compare`'s pandas DataFrame (or a ComparisonTable, returned as is).

        For the dependency-free renderings (``str``, :meth:`to_markdown`) of a
        DataFrame; its fitted solvers (``attrs["solvers"]``) come along.
        """
        if isinstance(table, ComparisonTable):
            return table
        columns = [str(c) for c in table.columns]
        records = [
            {c: _python_scalar(v) for c, v in zip(columns, row)} for row in table.itertuples(index=False)
        ]
        return cls(records, columns, dict(getattr(table, "attrs", {}).get("solvers", {}) or {}))

    def to_records(self) -> list[dict]:
        """The rows as a list of dicts (copies), columns in order."""
        return [{c: r.get(c) for c in self.columns} for r in self._records]

    # -- rendering -------------------------------------------------------------
    def _cells(self, floatfmt: str) -> list[list[str]]:
        return [[_format(r.get(c), floatfmt) for c in self.columns] for r in self._records]

    def to_markdown(self, floatfmt: str = ".4g") -> str:
        """A GitHub-flavoured Markdown table; numbers right-aligned, ``floatfmt`` for floats."""
        rows = self._cells(floatfmt)
        numeric = [self._is_numeric(c) for c in self.columns]
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"
        body = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join([head, rule, *body])

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        rows = self._cells(".4g")
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(self.columns)]
        numeric = [self._is_numeric(c) for c in self.columns]

        def line(cells):
            return "  ".join(
                cell.rjust(w) if n else cell.ljust(w) for cell, w, n in zip(cells, widths, numeric)
            ).rstrip()

        return "\n".join([line(self.columns), line(["-" * w for w in widths]), *(line(r) for r in rows)])

    def __repr__(self) -> str:
        return f"ComparisonTable({len(self)} solvers)\n{self}"

    def _is_numeric(self, column: str) -> bool:
        values = [r.get(column) for r in self._records if r.get(column) is not None]
        return bool(values) and all(isinstance(v, numbers.Number) for v in values)


def _python_scalar(value):
    """A DataFrame cell as a plain Python value (NumPy scalars unwrapped; pandas' missing values None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (ImportError, TypeError, ValueError):
        pass
    return value


def _format(value, floatfmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else format(float(value), floatfmt)
    return str(value)


# --------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------


def _named(solvers) -> list[tuple[str, Any]]:
    """``[(name, solver)]`` from a mapping or a sequence; repeated class names get ``#2``, ``#3``."""
    if isinstance(solvers, Mapping):
        return [(str(k), v) for k, v in solvers.items()]
    if not isinstance(solvers, Sequence) or isinstance(solvers, str):
        raise ValueError("solvers must be a list of solvers or a dict name -> solver.")
    out, seen = [], {}
    for s in solvers:
        base = type(s).__name__
        seen[base] = seen.get(base, 0) + 1
        out.append((base if seen[base] == 1 else f"{base}#{seen[base]}", s))
    return out


def _metrics(problem, x_hat, x_true) -> dict[str, float]:
    x_hat, x_true = np.asarray(to_numpy(x_hat)), np.asarray(to_numpy(x_true))
    if hasattr(problem, "metrics"):
        return {k: float(v) for k, v in problem.metrics(x_hat, x_true).items()}
    from .metrics import relative_l2

    return {"relative_l2": float(relative_l2(x_hat, x_true))}


def compare(
    solvers,
    problem,
    y,
    x_true=None,
    *,
    clone: bool = True,
    errors: str = "record",
    as_frame: Any = "auto",
    budget: int | None = None,
    **fit_kwargs,
):
    """Fit each solver on ``(y, problem)`` and tabulate accuracy, evaluation counts and times.

    Parameters
    ----------
    solvers : list of solvers, or dict name -> solver
        Unfitted or fitted kalmandiff solvers.  Rows are named by the dict
        keys, else by class name (``EnKGSolver#2`` for a repeat).
    problem : ForwardProblem or callable
        The forward model, passed to every ``fit``.
    y : array
        The observation.
    x_true : array, optional
        The truth; when given, ``problem.metrics(x_hat, x_true)`` (or the
        relative L2 error for a plain callable) fills the metric columns.
    clone : bool, default True
        Fit ``sklearn.base.clone`` copies (same parameters, the prior shared,
        not copied), leaving the given solvers untouched; the fitted copies
        are in the table's ``solvers``.  ``False`` fits the given instances.
    errors : {"record", "raise"}, default "record"
        ``"record"``: an exception in one solver's ``fit`` or ``reconstruct``
        fills its row's ``error`` column (``"TypeName: message"``) and the
        comparison goes on; ``"raise"`` re-raises it.
    as_frame : {"auto", True, False}, default "auto"
        Return a pandas DataFrame (``"auto"``: when pandas is importable),
        with the fitted solvers in ``df.attrs["solvers"]``; otherwise a
        :class:`ComparisonTable`.  Either prints with ``print``; for
        Markdown without optional packages use
        ``ComparisonTable.from_frame(table).to_markdown()``.
    budget : int, optional
        Forward evaluations each solver may spend: every solver is replaced
        by ``type(solver).for_budget(solver.prior, budget, problem=problem,
        **params)``, where ``params`` are its parameters except the budget
        parameters left at their defaults (``_BUDGET_PARAMETERS``: e.g.
        EnKG's ``n_particles`` and ``n_steps``, DPG's ``n_queries`` and
        ``n_steps``), which ``for_budget`` chooses.  So
        ``kd.EnKGSolver(prior, n_steps=20)`` keeps its 20 steps and gets the
        ensemble the budget buys.  Every solver then plans at most
        ``budget`` forward evaluations, and a non-adaptive one nearly that
        many (within 10% below it wherever one step of its budget parameter
        is under a tenth of the budget); an adaptive one (EKI's data-misfit
        controller) may stop earlier, and DiffPIR's closed-form data step on
        a linear problem makes none.  The table gains the columns
        ``planned_forward_evals`` (from ``expected_evaluations(problem)``),
        ``planned_upper_bound`` (True where the plan is "up to": the run may
        stop earlier) and ``budget_params`` (the chosen values).  A solver
        that cannot fit the budget gets an error row (``errors="record"``).
    **fit_kwargs
        Passed to every ``fit`` (``noise_std`` for a plain callable, say).

    Returns
    -------
    ComparisonTable or pandas.DataFrame
        Columns: ``solver``, the metrics, :data:`COUNT_COLUMNS` (each
        solver's ``stats_``: totals and sequential counts), :data:`TIME_COLUMNS`
        (seconds) and ``error`` (None where the fit succeeded).
    """
    if errors not in _ERRORS:
        raise ValueError(f"errors must be one of {_ERRORS} (got {errors!r}).")
    if as_frame not in ("auto", True, False):
        raise ValueError(f"as_frame must be 'auto', True or False (got {as_frame!r}).")
    named = _named(solvers)
    if not named:
        raise ValueError("solvers is empty: give at least one solver.")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget < 0
    ):
        raise ValueError(f"budget must be a non-negative int of forward evaluations (got {budget!r}).")
    records, fitted, metric_names = [], {}, []
    for name, solver in named:
        planned = {}
        if budget is not None:
            solver, planned = _at_budget(solver, problem, int(budget), errors)
        if "error" in planned:
            record, est = {"solver": name, "error": planned.pop("error")}, None
            record.update(dict.fromkeys(COUNT_COLUMNS + TIME_COLUMNS))
        else:
            record, est = _run_one(name, solver, problem, y, x_true, clone, errors, fit_kwargs)
        record.update(planned)
        fitted[name] = est
        metric_names += [k for k in record.get("_metrics", ()) if k not in metric_names]
        records.append(record)
    budget_columns = (
        ["planned_forward_evals", "planned_upper_bound", "budget_params"] if budget is not None else []
    )
    columns = ["solver", *metric_names, *COUNT_COLUMNS, *budget_columns, *TIME_COLUMNS, "error"]
    for r in records:
        metrics = r.pop("_metrics", {})
        for k in metric_names:
            r[k] = metrics.get(k, math.nan)
    return _as_output(records, columns, fitted, as_frame)


def _at_budget(solver, problem, budget: int, errors: str):
    """``(solver for the budget, its table entries)``; the entries hold ``"error"`` when none fits."""
    from .estimators._planning import budget_parameters

    cls = type(solver)
    try:
        changed = solver._changed_params()
        free = {k for k in budget_parameters(solver) if k not in changed}
        params = {k: v for k, v in solver.get_params(deep=False).items() if k != "prior" and k not in free}
        est = cls.for_budget(solver.prior, budget, problem=problem, **params)
        plan = est.expected_evaluations(problem)
    except Exception as exc:  # noqa: BLE001 - reported in the row, by design
        if errors == "raise":
            raise
        return solver, {"error": f"{type(exc).__name__}: {exc}"}
    chosen = ", ".join(f"{k}={v}" for k, v in budget_parameters(est).items())
    return est, {
        "planned_forward_evals": int(plan["n_forward_evals"]),
        "planned_upper_bound": bool(plan.upper_bound),
        "budget_params": chosen,
    }


def _run_one(name, solver, problem, y, x_true, clone, errors, fit_kwargs):
    """Fit one solver and build its row (the metrics under ``"_metrics"``)."""
    from sklearn.base import clone as sk_clone

    record: dict[str, Any] = {"solver": name}
    est = None
    try:
        est = sk_clone(solver) if clone else solver
        est.fit(y, problem, **fit_kwargs)
        x_hat = est.reconstruct()
        if x_true is not None:
            record["_metrics"] = _metrics(problem, x_hat, x_true)
        record["error"] = None
    except Exception as exc:  # noqa: BLE001 - reported in the row, by design
        if errors == "raise":
            raise
        record["error"] = f"{type(exc).__name__}: {exc}"
        est = est if est is not None and hasattr(est, "stats_") else None
    stats = getattr(est, "stats_", None) or {}
    for key in COUNT_COLUMNS:
        record[key] = int(stats[key]) if key in stats else (0 if stats else None)
    for key in TIME_COLUMNS:
        record[key] = float(stats[key]) if key in stats else None
    return record, est


class _SharedSolvers(dict):
    """Name -> fitted solver, shared rather than copied when pandas deep-copies a frame's ``attrs``."""

    def __deepcopy__(self, memo):
        return self


def _as_output(records, columns, fitted, as_frame):
    if as_frame is not False:
        try:
            import pandas as pd
        except ImportError:
            if as_frame is True:
                raise ImportError("as_frame=True needs pandas; install it or use as_frame='auto'.") from None
        else:
            frame = pd.DataFrame.from_records(records, columns=columns)
            frame.attrs["solvers"] = _SharedSolvers(fitted)
            return frame
    return ComparisonTable(records, columns, fitted)


# --------------------------------------------------------------------------
# plot
# --------------------------------------------------------------------------


def fitted_solvers(results) -> dict:
    """``{name: fitted solver}`` of a :func:`compare` result (table or DataFrame), a list or a dict of solvers."""
    if isinstance(results, ComparisonTable):
        return {k: v for k, v in results.solvers.items() if v is not None}
    attrs = getattr(results, "attrs", None)
    if isinstance(attrs, dict) and "solvers" in attrs:
        return {k: v for k, v in attrs["solvers"].items() if v is not None}
    return dict(_named(results))


#: readable names of the metrics in figure titles
_METRIC_LABELS = {
    "relative_l2": ("relative L2", ""),
    "psnr": ("PSNR", " dB"),
    "ssim": ("SSIM", ""),
    "psnr_blur10": ("PSNR (blurred)", " dB"),
    "chisq_cphase": ("closure-phase chi^2", ""),
    "chisq_logcamp": ("log closure amp. chi^2", ""),
}


def metric_label(key: str, value: float) -> str:
    """A metric for a figure title: ``metric_label("relative_l2", 0.1823) == "relative L2 = 0.18"``."""
    name, unit = _METRIC_LABELS.get(key, (key.replace("_", " "), ""))
    if unit == " dB":
        return f"{name} = {value:.1f} dB"
    return f"{name} = {value:.3g}{unit}" if abs(value) >= 10 else f"{name} = {value:.2g}{unit}"


def _display_name(name: str) -> str:
    """``"EnKGSolver" -> "EnKG"``; user-given names are kept."""
    return name.removesuffix("Solver") if name.endswith("Solver") and len(name) > 6 else name


def plot_comparison(results_or_solvers, problem=None, x_true=None, y=None, axes=None, cmap=None):
    """Show the truth, each solver's reconstruction and (optionally) the data, side by side.

    Images share the truth's colour scale, shown by one colour bar (the
    observation has its own); a 1-D unknown is drawn as curves overlaid on
    the truth in one panel.  Each estimate's title names the solver and its
    headline metric in words (``"EnKG"`` / ``"relative L2 = 0.18"``).

    Parameters
    ----------
    results_or_solvers : ComparisonTable, DataFrame from :func:`compare`, list or dict of fitted solvers
    problem : ForwardProblem, optional
        Used for the panel titles' metric (``problem.metrics``).
    x_true : array, optional
        The truth, drawn first; also fixes the colour scale.
    y : array, optional
        The observation, drawn last.
    axes : sequence of matplotlib Axes, optional
        One per panel; by default a new figure with one row.
    cmap : str, optional
        Colour map of image panels (default ``"RdBu_r"`` for signed data, else ``"gray"``).

    Returns
    -------
    matplotlib.figure.Figure
        Images (``(H, W)`` or ``(1, H, W)``, or ``(3, H, W)`` in [-1, 1]) are
        drawn with ``imshow``; a 1-D unknown as curves (estimates over the
        truth in one panel, the data in a second).
    """
    import matplotlib.pyplot as plt

    solvers = fitted_solvers(results_or_solvers)
    estimates = []
    for name, est in solvers.items():
        x_hat = np.asarray(to_numpy(est.reconstruct()))
        note = None
        if x_true is not None:
            metrics = _metrics(problem, x_hat, x_true)
            key = "psnr" if "psnr" in metrics else next(iter(metrics))
            note = metric_label(key, metrics[key])
        estimates.append((_display_name(str(name)), x_hat, note))
    truth = None if x_true is None else np.asarray(to_numpy(x_true))
    obs = None if y is None else np.asarray(to_numpy(y))
    if truth is None and not estimates and obs is None:
        raise ValueError("nothing to plot: no fitted solver, truth or observation.")
    ref = truth if truth is not None else estimates[0][1] if estimates else obs
    if np.squeeze(ref).ndim == 1:
        return _plot_curves(truth, estimates, obs, axes)
    panels = ([("truth", truth, None)] if truth is not None else []) + estimates
    if obs is not None:
        panels.append(("observation", obs, None))
    if axes is None:
        fig, axes = plt.subplots(
            1, len(panels), figsize=(2.8 * len(panels) + 0.8, 3.3), squeeze=False, layout="constrained"
        )
        axes = list(axes[0])
    else:
        axes = list(np.ravel(axes))
        if len(axes) < len(panels):
            raise ValueError(f"axes has {len(axes)} entries; {len(panels)} panels are needed.")
        fig = axes[0].figure
        if not _uses_layout_engine(fig):
            # colour bars in a tight_layout figure overlap the panels; constrained layout makes room
            fig.set_layout_engine("constrained")
    lo, hi = colour_limits(ref)  # symmetric for signed fields: white is zero
    shared, shared_im = [], None
    for ax, (title, arr, note) in zip(axes, panels):
        im = _draw(ax, arr, None if title == "observation" else (lo, hi), cmap)
        ax.set_title(title if note is None else f"{title}\n{note}", fontsize=9)
        if im is None:
            continue
        if title == "observation":
            fig.colorbar(im, ax=ax, shrink=0.8, location="bottom", label="data")
        else:
            shared.append(ax)
            shared_im = im
    if shared_im is not None:
        fig.colorbar(shared_im, ax=shared, shrink=0.8, label="value (truth's scale)")
    if not _uses_layout_engine(fig):
        fig.tight_layout()
    return fig


def _uses_layout_engine(fig) -> bool:
    get = getattr(fig, "get_layout_engine", None)
    return get is not None and get() is not None


def _plot_curves(truth, estimates, obs, axes):
    """A 1-D unknown: the estimates overlaid on the truth in one panel, the data in a second."""
    import matplotlib.pyplot as plt

    n = 1 + (obs is not None)
    if axes is None:
        fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.3), squeeze=False, layout="constrained")
        axes = list(axes[0])
    else:
        axes = list(np.ravel(axes))
        if len(axes) < n:
            raise ValueError(f"axes has {len(axes)} entries; {n} panels are needed.")
        fig = axes[0].figure
    ax = axes[0]
    if truth is not None:
        ax.plot(np.ravel(truth), color="k", lw=2.0, label="truth")
    for name, x_hat, note in estimates:
        ax.plot(np.ravel(x_hat), lw=1.2, marker=".", ms=4, label=name if note is None else f"{name} ({note})")
    ax.set_xlabel("entry of x")
    ax.set_title("estimates and truth", fontsize=9)
    ax.legend(fontsize=7)
    if obs is not None:
        axes[1].plot(np.ravel(obs), color="0.3", marker=".", ms=4, lw=0.8)
        axes[1].set_xlabel("entry of y")
        axes[1].set_title("observation", fontsize=9)
    return fig


def _draw(ax, arr, limits, cmap):
    """Draw one panel; returns the image (for a colour bar), or None for RGB images and curves."""
    img = np.squeeze(arr)
    if img.ndim == 3 and img.shape[0] == 3:
        ax.imshow(np.clip((np.moveaxis(img, 0, -1) + 1) / 2, 0, 1))
        im = None
    elif img.ndim == 2:
        lo, hi = limits if limits is not None else colour_limits(img)
        im = ax.imshow(img, cmap=cmap or ("RdBu_r" if lo < 0 else "gray"), vmin=lo, vmax=hi)
    else:
        ax.plot(np.ravel(img))
        return None
    ax.set_xticks([])
    ax.set_yticks([])
    return im
