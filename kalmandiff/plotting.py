"""Figures for notebooks: reconstructions, uncertainty maps and convergence curves.

matplotlib is imported inside each function, so ``import kalmandiff`` never
pays for it (install it with ``pip install kalmandiff[plot]``).  Every
function accepts arrays from any supported namespace and returns the
matplotlib axes it drew on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend import to_numpy
from ._colour import colour_limits

__all__ = [
    "plot_reconstruction",
    "plot_uncertainty",
    "plot_history",
    "plot_comparison",
    "plot_solutions",
    "colour_limits",
]


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("kalmandiff.plotting needs matplotlib: pip install 'kalmandiff[plot]'.") from exc
    return plt


def _as_image(a) -> np.ndarray:
    """A 2-D picture of an array: squeeze singleton axes; a (C, H, W) image shows channel 0 (or RGB)."""
    arr = np.squeeze(np.asarray(to_numpy(a), dtype=float))
    if arr.ndim == 3 and arr.shape[0] == 3:
        arr = np.moveaxis(arr, 0, -1)
        return np.clip((arr + 1) / 2 if arr.min() < 0 else arr, 0, 1)
    if arr.ndim == 3:
        arr = arr[0]
    return arr


def _show(ax, arr: np.ndarray, title: str, cmap: str | None, vlim: tuple | None):
    if arr.ndim == 1:
        ax.plot(arr, lw=0.8)
    elif arr.ndim == 2:
        kw = {} if vlim is None else {"vmin": vlim[0], "vmax": vlim[1]}
        im = ax.imshow(arr, cmap=cmap, **kw)
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.imshow(arr)
        ax.set_axis_off()
    ax.set_title(title, fontsize=10)


def _axes(n: int, axes, width: float = 3.3):
    if axes is not None:
        return list(np.atleast_1d(axes).ravel())
    plt = _pyplot()
    fig, ax = plt.subplots(1, n, figsize=(width * n, width * 0.9), squeeze=False, layout="constrained")
    return list(ax[0])


def plot_reconstruction(x_true=None, x_hat=None, y=None, x_std=None, axes=None, cmap: str | None = None):
    """Truth, estimate, observation and ensemble standard deviation side by side.

    Parameters
    ----------
    x_true, x_hat : array of shape ``x_shape``, optional
        Shown on a common colour scale (the truth's range when given).
    y : array of shape ``y_shape``, optional
        The observation (an image if it is 2-D after squeezing, else a line).
    x_std : array of shape ``x_shape``, optional
        Pointwise ensemble standard deviation, its own scale.
    axes : sequence of matplotlib axes, optional
    cmap : str, optional
        Colour map for fields (default ``"RdBu_r"`` for signed data, ``"gray"`` otherwise).

    Returns
    -------
    list of matplotlib axes
    """
    panels = [
        (n, a)
        for n, a in (("truth", x_true), ("estimate", x_hat), ("observation", y), ("ensemble std", x_std))
        if a is not None
    ]
    if not panels:
        raise ValueError("give at least one of x_true, x_hat, y, x_std.")
    ref = _as_image(x_true if x_true is not None else x_hat if x_hat is not None else panels[0][1])
    cmap = cmap or ("RdBu_r" if ref.min() < 0 else "gray")
    vlim = colour_limits(ref)
    axes = _axes(len(panels), axes)
    for ax, (name, arr) in zip(axes, panels):
        img = _as_image(arr)
        shared = name in ("truth", "estimate")
        _show(ax, img, name, "viridis" if name == "ensemble std" else cmap, vlim if shared else None)
    return axes


def plot_uncertainty(solver, x_true=None, axes=None, cmap: str | None = None):
    """Ensemble mean and standard-deviation maps of a fitted solver (and the truth, if given).

    Also shows ``|mean - truth|`` next to the standard deviation when the truth
    is known, so one can see whether the spread is where the error is.  The
    two maps have separate colour scales (each its own colour bar): compare
    their patterns, and their colour bars for the magnitudes.
    """
    mean, std = solver.reconstruct(return_std=True)
    if x_true is None:
        return plot_reconstruction(x_hat=mean, x_std=std, axes=axes, cmap=cmap)
    err = np.abs(np.asarray(to_numpy(mean)) - np.asarray(to_numpy(x_true)))
    axes = _axes(4, axes)
    plot_reconstruction(x_true=x_true, x_hat=mean, axes=axes[:2], cmap=cmap)
    e, s = _as_image(err), _as_image(std)
    # each on its own scale (its own colour bar): a collapsed ensemble's spread would vanish on the error's
    _show(axes[2], e, "|estimate - truth|", "viridis", (0.0, float(e.max()) or 1.0))
    _show(axes[3], s, "ensemble std", "viridis", (0.0, float(s.max()) or 1.0))
    return axes


#: readable titles of the history records
_HISTORY_LABELS = {
    "misfit_mean": "data misfit (ensemble mean)",
    "misfit_std": "data misfit (ensemble std)",
    "spread": "ensemble spread",
    "sigma": "noise level sigma",
}


def _noise_label(solver) -> str | None:
    problem = getattr(getattr(solver, "_ctx", None), "problem", None)
    std = getattr(problem, "noise_std", None)
    if std is None:
        return None
    arr = np.asarray(to_numpy(std), dtype=float)
    if arr.size == 1 or np.all(arr == arr.flat[0]):
        return f"noise std {float(arr.flat[0]):.3g}"
    return f"noise std {float(arr.min()):.3g}-{float(arr.max()):.3g}"


def plot_history(history: Any, keys=("misfit_mean", "spread"), ax=None, label: str | None = None):
    """Convergence curves from a solver's ``history_`` (or the solver itself).

    Every panel spans the same steps (the whole run, also where a record is
    missing, e.g. no misfit on unguided steps); the legend names the solver
    and, when given a fitted solver, the observation noise level.

    Parameters
    ----------
    history : solver or list of dict
    keys : sequence of str
        Record fields to draw against the step index, one panel each, on a
        log scale when they are positive.
    ax : matplotlib axes or sequence of them, optional
    label : str, optional
        Legend label (for overlaying several solvers on the same axes);
        default: the solver's name, when ``history`` is a solver.

    Returns
    -------
    list of matplotlib axes
    """
    records = getattr(history, "history_", history)
    if not records:
        raise ValueError("the history is empty: fit the solver first.")
    if label is None and hasattr(history, "history_"):
        label = type(history).__name__.removesuffix("Solver")
        noise = _noise_label(history)
        if noise:
            label = f"{label} ({noise})"
    axes = _axes(len(keys), ax, width=3.8)
    steps = np.array([r["step"] for r in records])
    for a, key in zip(axes, keys):
        vals = np.array([np.nan if r.get(key) is None else r[key] for r in records], dtype=float)
        ok = np.isfinite(vals)
        a.plot(steps[ok], vals[ok], marker=".", ms=3, lw=1, label=label)
        if ok.any() and np.all(vals[ok] > 0):
            a.set_yscale("log")
        lo, hi = a.get_xlim() if a.has_data() and len(a.lines) > 1 else (np.inf, -np.inf)
        a.set_xlim(min(lo, float(steps.min()) - 0.5), max(hi, float(steps.max()) + 0.5))
        a.set_xlabel("step")
        a.set_title(_HISTORY_LABELS.get(key, key.replace("_", " ")), fontsize=10)
        if label:
            a.legend(fontsize=8)
    return axes


def plot_comparison(*args, **kwargs):
    """Reconstructions of several solvers side by side: see :func:`kalmandiff.compare.plot_comparison`."""
    from .compare import plot_comparison as _plot

    return _plot(*args, **kwargs)


def _metric_note(problem, x_hat, x_true) -> str | None:
    """``"relative L2 = 0.73"``: the problem's headline metric of an estimate, for its title."""
    if problem is None or x_true is None:
        return None
    from .compare import metric_label

    metrics = {k: v for k, v in problem.metrics(x_hat, x_true).items() if isinstance(v, (int, float))}
    if not metrics:
        return None
    key = "psnr" if "psnr" in metrics else next(iter(metrics))
    return metric_label(key, float(metrics[key]))


def _std_title(std: np.ndarray, solver) -> str:
    if np.all(std == 0):
        n = getattr(solver, "n_particles_", None)
        return f"ensemble std: 0 ({n} particle{'s' if n != 1 else ''})"
    return "ensemble std"


def plot_solutions(solvers, x_true=None, y=None, problem=None, caption: str | None = None, cmap=None):
    """Truth, each solver's estimate with its ensemble standard deviation, and the observation.

    One column per solver: the estimate (``reconstruct()``) above its
    pointwise ensemble standard deviation (``reconstruct(return_std=True)``),
    framed by the truth (first column) and the observation (last).  Truth
    and estimates share one colour scale, symmetric about zero for signed
    fields (white is zero in the default ``RdBu_r``); the standard
    deviations share one scale from zero, so their sizes compare across
    solvers; the observation has its own.  Works for any problem whose
    unknown is an image (``(H, W)``, ``(1, H, W)`` or ``(3, H, W)``); a 1-D
    unknown is drawn by :func:`plot_comparison`.

    Parameters
    ----------
    solvers : dict of name -> fitted solver
    x_true : array of shape ``x_shape``, optional
    y : array of shape ``y_shape``, optional
    problem : ForwardProblem, optional
        Its ``metrics`` put each estimate's headline error in the title.
    caption : str, optional
        Printed under the panels: what the observation is.
    cmap : str, optional
        Colour map of the fields (default ``"RdBu_r"`` for signed data, ``"gray"`` otherwise).

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    if not solvers:
        raise ValueError("plot_solutions needs at least one fitted solver.")
    fits = {
        name: [np.asarray(to_numpy(a)) for a in s.reconstruct(return_std=True)] for name, s in solvers.items()
    }
    ref = x_true if x_true is not None else next(iter(fits.values()))[0]
    if np.squeeze(np.asarray(to_numpy(ref))).ndim < 2:
        fig = plot_comparison(solvers, problem=problem, x_true=x_true, y=y)
        if caption:
            fig.supxlabel(caption, fontsize=9)
        return fig
    n_cols = len(fits) + (x_true is not None) + (y is not None)
    fig, axes = plt.subplots(
        2,
        n_cols,
        figsize=(2.7 * n_cols + 1.0, 5.6 + 0.3 * bool(caption)),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes[1]:
        ax.set_axis_off()
    fields = _as_image(ref)
    cmap = cmap or ("RdBu_r" if fields.min() < 0 else "gray")
    vlim = colour_limits(np.stack([fields] + [_as_image(m) for m, _ in fits.values()]))
    std_max = max(float(np.nanmax(sd)) for _, sd in fits.values()) or 1.0
    col = 0
    field_axes, std_axes, field_im, std_im = [], [], None, None
    if x_true is not None:
        field_im = _image(axes[0][col], _as_image(x_true), "truth", cmap, vlim)
        field_axes.append(axes[0][col])
        col += 1
    for name, (mean, sd) in fits.items():
        note = _metric_note(problem, mean, x_true)
        title = str(name).removesuffix("Solver") if str(name).endswith("Solver") else str(name)
        field_im = _image(
            axes[0][col], _as_image(mean), title if note is None else f"{title}\n{note}", cmap, vlim
        )
        axes[1][col].set_axis_on()
        std_im = _image(
            axes[1][col], _std_image(sd), _std_title(sd, solvers[name]), "viridis", (0.0, std_max)
        )
        field_axes.append(axes[0][col])
        std_axes.append(axes[1][col])
        col += 1
    if field_im is not None:
        fig.colorbar(field_im, ax=field_axes, shrink=0.8, label="field (truth's scale)")
    if std_im is not None:
        fig.colorbar(std_im, ax=std_axes, shrink=0.8, label="ensemble std")
    if y is not None:
        obs = _as_image(y)
        if obs.ndim == 2:
            im = _image(axes[0][col], obs, "observation", cmap, colour_limits(obs))
            fig.colorbar(im, ax=axes[0][col], shrink=0.8, location="bottom", label="data")
        else:
            axes[0][col].plot(np.ravel(obs), lw=0.8)
            axes[0][col].set_title("observation", fontsize=9)
    if caption:
        fig.supxlabel(caption, fontsize=9)
    return fig


def _std_image(std) -> np.ndarray:
    """A standard deviation as one 2-D map: a multi-channel image's channels averaged (never as RGB)."""
    arr = np.squeeze(np.asarray(to_numpy(std), dtype=float))
    return arr.mean(axis=0) if arr.ndim == 3 else arr


def _image(ax, img: np.ndarray, title: str, cmap, vlim):
    """One image panel without its own colour bar (the caller adds shared ones)."""
    if img.ndim == 3:  # RGB
        ax.imshow(img)
        im = None
    else:
        im = ax.imshow(img, cmap=cmap, vmin=vlim[0], vmax=vlim[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    return im
