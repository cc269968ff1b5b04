"""Command line: ``python -m kalmandiff demo | run | compare`` (also the ``kalmandiff`` script).

Every sub-command works on a built-in problem (``kd.problems.make``), needs
no download, prints a table of metrics, evaluation counts and times, and
can write the results and a figure.  Everything is checked before the first
fit: the paths and formats of ``--save`` and ``--figure``, every solver's
parameters, and the planned cost (a run above ``max_forward_evals`` is
refused unless ``--allow-costly``; ``--dry-run`` prints the plan with an
estimate in seconds and stops).  Results are written before the figure, and
a failed write keeps them in a fallback file that the message names.  Bad
arguments give a one-line error and exit status 2, a failed write exit
status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import os
import sys
import tempfile
import time

import numpy as np

__all__ = ["main"]

#: the demo's problem: one whose ``make`` ships a network and its best Gaussian (``prior=``)
DEMO_PROBLEM = "phase-retrieval"

#: The demo's rows: ``label: (solver, prior, settings)``.  EnKG with the shipped network against
#: the best Gaussian of the same training images, under EnKG and under EKI (no diffusion), on
#: the same data: the comparison that shows whether the learned prior matters.  20 steps keep
#: it under a minute on a laptop core.
DEMO_SOLVERS = {
    "enkg+network": ("enkg", "network", {}),
    "enkg+gaussian": ("enkg", "gaussian", {}),
    "eki+gaussian": ("eki", "gaussian", {}),
}
DEMO_STEPS = 20


# --------------------------------------------------------------------------
# building problems and solvers from names
# --------------------------------------------------------------------------


def _default_prior(inst):
    """The instance's own prior (every built-in problem has one), else a generic GRF."""
    from .problems import default_prior

    return default_prior(inst)


def _parse_params(items: list[str] | None) -> dict:
    params = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param expects NAME=VALUE (got {item!r}).")
        key, value = item.split("=", 1)
        try:
            params[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key.strip()] = value
    return params


def _make_solver(name: str, prior, args, extra: dict):
    """The solver ``name`` with the command line's settings; its parameters checked, nothing fitted."""
    from .estimators import available_solvers

    solvers = available_solvers()
    if name not in solvers:
        raise ValueError(f"unknown solver {name!r}; available: {', '.join(solvers)}.")
    cls = solvers[name]
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {"random_state": args.seed}
    if "n_particles" in accepted and args.particles is not None:
        kwargs["n_particles"] = args.particles
    if "n_steps" in accepted and args.steps is not None:
        kwargs["n_steps"] = args.steps
    unknown = [k for k in extra if k not in accepted]
    if unknown:
        raise ValueError(f"{name}: {cls.__name__} has no parameter {', '.join(unknown)}.")
    kwargs.update(extra)
    solver = cls(prior, **kwargs)
    try:
        solver._check_parameters()  # the checks fit would make, before any solver is fitted
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return solver


def _problem(args):
    import kalmandiff as kd

    if args.problem not in kd.problems.available():
        raise ValueError(
            f"unknown problem {args.problem!r}; available: {', '.join(kd.problems.available())}."
        )
    return kd.problems.make(args.problem, size=args.size, random_state=args.seed)


# --------------------------------------------------------------------------
# planning: every solver built and costed before the first fit
# --------------------------------------------------------------------------


def _build_solvers(inst, plans: dict[str, tuple], skip_missing: bool = False, priors=None) -> dict:
    """``{label: solver}`` for ``plans = {label: (args, extra params)}``, all checked before any fit.

    ``priors`` (the demo): ``{label: (solver name, prior)}``; otherwise the label is the solver's
    name and its prior the instance's.  ``skip_missing`` (the demo): a solver whose optional
    dependency is missing is left out, with a note.
    """
    solvers = {}
    for label, (args, extra) in plans.items():
        name, prior = priors[label] if priors else (label, _default_prior(inst))
        try:
            solvers[label] = _make_solver(name, prior, args, extra)
        except ImportError as exc:
            if not skip_missing:
                raise
            print(f"skipping {label}: {exc}", file=sys.stderr)
    return solvers


def _planned(solver) -> dict | None:
    """``expected_evaluations()``, or None where the solver cannot cost its run in advance."""
    return solver._planned_evaluations()


def _probe(inst):
    """Seconds per forward and denoiser evaluation on this problem and machine (a few timed calls)."""
    from .estimators._cost import probe_costs

    return probe_costs(inst.problem, _default_prior(inst), budget_s=10.0)  # interactive: seconds are fine


def _print_plan(solvers: dict, probe) -> None:
    from .estimators._cost import VJP_COST_FACTOR, format_seconds

    head = f"{'solver':<24}{'forward':>14}{'denoiser':>14}{'VJPs':>12}{'estimate':>16}"
    print(head)
    print("-" * len(head))
    for name, solver in solvers.items():
        plan = _planned(solver)
        label = f"{name} ({type(solver).__name__})"[:23]
        if plan is None:
            print(f"{label:<24}{'(not costed in advance)':>40}")
            continue
        vjps = int(plan.get("n_forward_vjps", 0)) + int(plan.get("n_denoiser_vjps", 0))
        typical, _ = probe.seconds(plan)
        bound = "up to " if solver._planned_is_bound() else ""  # a run that may stop early
        print(
            f"{label:<24}{int(plan.get('n_forward_evals', 0)):>14,}{int(plan.get('n_denoiser_evals', 0)):>14,}"
            f"{vjps:>12,}{bound + format_seconds(typical):>16}"
        )
    rough = (
        f"x{probe.forward_rough_factor:.2g} on the roughest probe input"
        if probe.n_rough_levels
        else "rough inputs not probed: the probe's time budget ran out"
    )
    print(
        f"\nestimated on this machine from {probe.n_forward} timed forward and {probe.n_denoiser} denoiser "
        f"evaluations: a forward call costs {probe.forward_call_s:.3g} s + {probe.forward_sample_s:.3g} s "
        f"per member (x{probe.forward_spread_factor:.2g} for distinct prior draws, {rough}), a denoiser "
        f"call {probe.denoiser_call_s:.3g} s + {probe.denoiser_sample_s:.3g} s per member; a VJP is counted "
        f"as {VJP_COST_FACTOR:g} evaluations."
    )


def _refuse_costly(inst, solvers: dict, args) -> None:
    """Stop before fitting when a solver plans more forward evaluations than the package limit."""
    import kalmandiff as kd

    limit = kd.get_config()["max_forward_evals"]
    if getattr(args, "allow_costly", False) or limit is None:
        return
    costly = {n: p for n, s in solvers.items() if (p := _planned(s)) and p.get("n_forward_evals", 0) > limit}
    if not costly:
        return
    probe = _probe(inst)
    lines = [
        f"{name} ({type(solvers[name]).__name__}) plans {int(plan['n_forward_evals']):,} forward evaluations, "
        f"{probe.describe(plan)} on this machine"
        for name, plan in costly.items()
    ]
    raise ValueError(
        "; ".join(lines) + f". That is more than max_forward_evals={limit:,.0f}: lower --particles / --steps "
        "(or the solver's budget with --param, see --dry-run), or pass --allow-costly to run it anyway."
    )


# --------------------------------------------------------------------------
# running and reporting
# --------------------------------------------------------------------------


def _fit_all(inst, solvers: dict, args, skip_missing: bool = False) -> list[tuple[str, object, dict, float]]:
    """Fit each solver in turn; if one fails, the finished fits are kept (written) before the error.

    ``skip_missing`` (the demo): a solver whose optional dependency (torch) is missing is skipped.
    """
    rows = []
    for name, solver in solvers.items():
        print(f"fitting {type(solver).__name__} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            solver.fit(inst.y, inst.problem)
        except ImportError as exc:
            if not skip_missing:
                raise
            print(f"skipping {name}: {exc}", file=sys.stderr)
            continue
        except BaseException:
            if rows:
                print(f"{name} failed; keeping the {len(rows)} finished fit(s).", file=sys.stderr)
                for failure in _write_results(
                    inst, rows, args, fallback_only=not getattr(args, "save", None)
                ):
                    print(failure, file=sys.stderr)
            raise
        metrics = inst.problem.metrics(_aligned(inst, solver.reconstruct()), inst.x_true)
        rows.append((name, solver, metrics, time.perf_counter() - t0))
    return rows


def _aligned(inst, x_hat):
    """The estimate as scored: moved by the map's symmetries (``problem.align``) where the problem has them.

    Phase retrieval cannot tell an image from its negative or its 180-degree turn, so an estimate
    is scored against the truth through its closest copy.
    """
    align = getattr(inst.problem, "align", None)
    return x_hat if align is None else align(x_hat, inst.x_true)


class _AlignedView:
    """A fitted solver seen through the problem's symmetries (for the figure): estimate and std turned alike."""

    def __init__(self, solver, problem, x_true):
        self._solver, self._problem, self._x_true = solver, problem, x_true

    def reconstruct(self, return_std=False):
        from ._backend import to_numpy

        mean, std = (np.asarray(to_numpy(a), dtype=float) for a in self._solver.reconstruct(return_std=True))
        channels = np.arange(mean.shape[0])
        index = self._problem.symmetry_index(mean, self._x_true)
        mean = self._problem.symmetries(mean)[index, channels]
        std = np.abs(self._problem.symmetries(std)[index, channels])  # a sign does not flip a spread
        return (mean, std) if return_std else mean

    def __getattr__(self, name):
        return getattr(self._solver, name)


def _alignment_note(inst) -> str | None:
    if getattr(inst.problem, "align", None) is None:
        return None
    return (
        "errors taken up to the map's symmetries (sign and 180-degree rotation, which the data cannot "
        "tell apart): problem.align(x_hat, x_true)"
    )


def _row_label(name: str, solver) -> str:
    # EnKG's default update="auto" resolves at fit: name the update that ran
    kind = getattr(solver, "update_", None) or type(solver).__name__
    return f"{name} ({kind})"


def _print_table(inst, rows) -> None:
    baseline = inst.problem.metrics(np.zeros_like(np.asarray(inst.x_true)), inst.x_true)
    keys = [k for k, v in baseline.items() if isinstance(v, (int, float))][:4]
    width = max([24] + [len(_row_label(name, solver)) + 2 for name, solver, _, _ in rows])
    head = (
        f"{'solver':<{width}}"
        + "".join(f"{k[:12]:>13}" for k in keys)
        + f"{'forward':>12}{'denoiser':>12}{'time [s]':>10}"
    )
    print(head)
    print("-" * len(head))

    def line(label, metrics, fwd, den, seconds):
        vals = "".join(f"{metrics.get(k, float('nan')):>13.4g}" for k in keys)
        print(f"{label:<{width}}{vals}{fwd:>12}{den:>12}{seconds:>10}")

    line("zero field", baseline, "-", "-", "-")
    for name, solver, metrics, seconds in rows:
        st = solver.stats_
        line(
            _row_label(name, solver),
            metrics,
            f"{st['n_forward_evals']:,}",
            f"{st['n_denoiser_evals']:,}",
            f"{seconds:.1f}",
        )


def _writable_dir(directory: str, option: str) -> None:
    if not os.path.isdir(directory):
        raise ValueError(f"{option}: directory {directory!r} does not exist; create it first.")
    if not os.access(directory, os.W_OK):
        raise ValueError(f"{option}: directory {directory!r} is not writable.")


#: what ``--save`` writes, by file extension (``export_results``'s formats)
SAVE_FORMATS = {".npz": "NumPy archive", ".nc": "netCDF, needs xarray"}


def _check_save_format(path: str) -> None:
    ext = os.path.splitext(path)[1]  # case-sensitive, as export_results is: x.NPZ would be renamed
    if ext not in SAVE_FORMATS:
        supported = ", ".join(f"{k} ({v})" for k, v in SAVE_FORMATS.items())
        raise ValueError(
            f"--save: cannot write {path!r}: unknown extension {ext or '(none)'!r}; supported: {supported}, "
            "or an existing directory (one <solver>.npz per solver)."
        )
    if ext == ".nc" and importlib.util.find_spec("xarray") is None:
        raise ValueError("--save: writing .nc needs xarray (pip install xarray scipy); or save to .npz.")


def _save_targets(save: str, names: list[str]) -> dict[str, str]:
    """Where ``--save`` writes each solver's results: checked before any fitting.

    A directory (existing, or a path ending in a separator) gets ``DIR/<solver>.npz``;
    a file name gets the results of a single solver, or ``<solver>-<name>`` beside it for several.
    """
    if save.endswith(("/", os.sep)) or os.path.isdir(save):
        _writable_dir(save, "--save")
        return {name: os.path.join(save, f"{name}.npz") for name in names}
    _check_save_format(save)
    directory, base = os.path.split(save)
    _writable_dir(directory or ".", "--save")
    if len(names) == 1:
        return {names[0]: save}
    return {name: os.path.join(directory, f"{name}-{base}") for name in names}


def _figure_formats() -> dict[str, str]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return FigureCanvasAgg.get_supported_filetypes()


def _check_figure(figure: str) -> None:
    if os.path.isdir(figure):
        raise ValueError(f"--figure: {figure!r} is a directory; give a file name such as out.png.")
    _writable_dir(os.path.dirname(figure) or ".", "--figure")
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError(
            "--figure needs matplotlib, which is not installed: pip install 'kalmandiff[plot]' "
            "(or pass --figure none)."
        )
    ext = os.path.splitext(figure)[1].lower().lstrip(".")
    formats = _figure_formats()
    if ext not in formats:
        raise ValueError(
            f"--figure: cannot write {figure!r}: unknown image format {ext or '(no extension)'!r}; "
            f"supported: {', '.join(sorted(formats))} (or --figure none)."
        )


def _check_outputs(args, names: list[str]) -> None:
    """Refuse unwritable or unknown-format ``--figure`` / ``--save`` paths before any (possibly long) fitting."""
    figure = getattr(args, "figure", None)
    if figure and figure.lower() == "none":
        args.figure = figure = None
    if figure:
        _check_figure(figure)
    if getattr(args, "save", None):
        args.save_targets = _save_targets(args.save, names)


class OutputError(RuntimeError):
    """Writing a result or figure failed (after the fits, which were kept in a fallback file)."""


def _fallback_path(name: str) -> str:
    """A fresh file for results that could not be written where asked: the working or temp directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for directory in (os.getcwd(), tempfile.gettempdir()):
        if os.access(directory, os.W_OK):
            return os.path.join(directory, f"kalmandiff-unsaved-{name}-{stamp}-{os.getpid()}.npz")
    return os.path.join(tempfile.gettempdir(), f"kalmandiff-unsaved-{name}-{stamp}.npz")


def _export(solver, path, inst):
    from .io import export_results

    return export_results(solver, path, y=inst.y, x_true=inst.x_true)


def _keep_in_fallback(inst, name: str, solver) -> str:
    """Write ``solver``'s results to a fallback file; its path (or why even that failed)."""
    path = _fallback_path(name)
    try:
        return f"kept in {_export(solver, path, inst)}"
    except OSError as exc:
        return f"and the fallback {path} failed too ({exc.strerror or exc})"


def _write_results(inst, rows, args, fallback_only: bool = False) -> list[str]:
    """Write each fit where ``--save`` asks (or only to fallback files); the failures, named."""
    targets = getattr(args, "save_targets", None) or {}
    failures = []
    for name, solver, _, _ in rows:
        if fallback_only or name not in targets:
            print(f"results of {name} {_keep_in_fallback(inst, name, solver)}", file=sys.stderr)
            continue
        try:
            print(f"results written to {_export(solver, targets[name], inst)}")
        except OSError as exc:
            failures.append(
                f"could not write {targets[name]} ({exc.strerror or exc}); the results of {name} are "
                + _keep_in_fallback(inst, name, solver)
            )
    return failures


def _write_figure(inst, rows, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plotting

    views = {
        name: _AlignedView(s, inst.problem, inst.x_true) if _alignment_note(inst) else s
        for name, s, _, _ in rows
    }
    fig = plotting.plot_solutions(
        views,
        x_true=inst.x_true,
        y=inst.y,
        problem=inst.problem,
        caption=_caption(inst),
    )
    fig.savefig(args.figure, dpi=120)
    plt.close(fig)
    print(f"figure written to {os.path.abspath(args.figure)}")


def _caption(inst) -> str:
    describe = getattr(inst.problem, "describe_observation", None)
    what = describe() if callable(describe) else f"y of shape {tuple(inst.problem.y_shape)}"
    return f"Observation: {what}."


def _outputs(inst, rows, args) -> None:
    """Results first (they are what a long fit produced), then the figure; failures keep the results."""
    failures = _write_results(inst, rows, args) if getattr(args, "save", None) else []
    if getattr(args, "figure", None):
        try:
            _write_figure(inst, rows, args)
        except (OSError, ValueError, RuntimeError) as exc:
            message = f"could not write the figure {args.figure} ({exc})"
            if not getattr(args, "save", None):
                kept = "; ".join(f"{name} {_keep_in_fallback(inst, name, s)}" for name, s, _, _ in rows)
                message += f"; the results: {kept}"
            failures.append(message)
    if failures:
        raise OutputError("; ".join(failures))


def _execute(inst, solvers: dict, args, skip_missing: bool = False) -> int:
    """Plan, then (unless --dry-run) fit, report and write: the one path of run, compare and demo."""
    if getattr(args, "dry_run", False):
        _print_plan(solvers, _probe(inst))
        return 0
    _refuse_costly(inst, solvers, args)
    rows = _fit_all(inst, solvers, args, skip_missing)
    _print_table(inst, rows)
    if note := _alignment_note(inst):
        print(f"({note})")
    _outputs(inst, rows, args)
    return 0


def _demo_rows() -> dict[str, tuple[str, str | None, dict]]:
    """``DEMO_SOLVERS`` as ``label: (solver, prior kind, settings)``; a bare settings dict is the solver
    of that name with the instance's own prior (kind None)."""
    return {
        label: (label, None, dict(row)) if isinstance(row, dict) else (row[0], row[1], dict(row[2]))
        for label, row in DEMO_SOLVERS.items()
    }


def _demo(args) -> int:
    rows = _demo_rows()
    _check_outputs(args, list(rows))
    insts = _demo_instances(args, {kind for _, kind, _ in rows.values()})
    # the network's instance leads: the --dry-run probe times its prior, the costliest
    inst = insts.get("network", next(iter(insts.values())))
    print(f"problem: {inst.problem!r}")
    for kind, other in insts.items():
        print(f"prior{'' if kind is None else f' ({kind})'}: {_default_prior(other)!r}")
    print()
    plans = {label: (_demo_args(args, settings), settings) for label, (_, _, settings) in rows.items()}
    priors = {label: (solver, _default_prior(insts[kind])) for label, (solver, kind, _) in rows.items()}
    solvers = _build_solvers(inst, plans, skip_missing=True, priors=priors)
    return _execute(inst, solvers, args, skip_missing=True)


def _demo_instances(args, kinds: set) -> dict:
    """The demo's instance under each prior kind (``make(..., prior=kind)``; None: the instance's own).

    The truth and the data must not depend on the prior: the rows are compared on the same data.
    """
    import kalmandiff as kd

    if args.problem not in kd.problems.available():
        raise ValueError(
            f"unknown problem {args.problem!r}; available: {', '.join(kd.problems.available())}."
        )
    insts = {}
    for kind in sorted(kinds, key=str):
        options = {} if kind is None else {"prior": kind}
        try:
            insts[kind] = kd.problems.make(args.problem, size=args.size, random_state=args.seed, **options)
        except TypeError:
            raise ValueError(
                f"the demo compares a shipped network with the best Gaussian, which {args.problem!r} does not "
                f"offer (no prior= option); try 'kalmandiff compare --problem {args.problem} --solvers enkg,eki'."
            ) from None
    first = next(iter(insts.values()))
    for kind, other in insts.items():
        if not np.array_equal(np.asarray(other.y), np.asarray(first.y)):
            raise RuntimeError(
                f"{args.problem}: the data of the prior={kind!r} instance differ from the others'."
            )
    return insts


def _demo_args(args, settings: dict):
    """The command-line options minus those a demo solver sets itself."""
    ns = argparse.Namespace(**vars(args))
    if "n_steps" in settings:
        ns.steps = None
    if "n_particles" in settings:
        ns.particles = None
    return ns


def _run(args) -> int:
    _check_outputs(args, [args.solver])
    params = _parse_params(args.param)
    inst = _problem(args)
    return _execute(inst, _build_solvers(inst, {args.solver: (args, params)}), args)


def _compare(args) -> int:
    names = [n.strip() for n in args.solvers.split(",") if n.strip()]
    if not names:
        raise ValueError("--solvers needs a comma-separated list, e.g. enkg,eki.")
    if len(set(names)) < len(names):
        raise ValueError(f"--solvers names a solver twice: {args.solvers!r}.")
    _check_outputs(args, names)
    params = _per_solver_params(_parse_params(args.param), names)
    inst = _problem(args)
    return _execute(inst, _build_solvers(inst, {name: (args, params[name]) for name in names}), args)


def _per_solver_params(params: dict, names: list[str]) -> dict[str, dict]:
    """``NAME=V`` goes to every solver, ``SOLVER.NAME=V`` to that solver only."""
    shared = {k: v for k, v in params.items() if "." not in k}
    out = {name: dict(shared) for name in names}
    for key, value in params.items():
        if "." in key:
            solver, name = key.split(".", 1)
            if solver not in out:
                raise ValueError(f"--param {key}: {solver!r} is not among --solvers ({', '.join(names)}).")
            out[solver][name] = value
    return out


# --------------------------------------------------------------------------
# the parser
# --------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, problem_default: str | None = None) -> None:
    if problem_default is None:
        p.add_argument(
            "--problem", required=True, help="built-in problem, e.g. navier-stokes, phase-retrieval"
        )
    else:
        p.add_argument(
            "--problem", default=problem_default, help=f"built-in problem (default {problem_default})"
        )
    p.add_argument(
        "--size", default="small", choices=("small", "medium", "paper"), help="problem size (default small)"
    )
    p.add_argument("--particles", type=int, default=64, help="ensemble size / samples (default 64)")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps (solver default if omitted)")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed for the problem and the solvers (default 0)"
    )
    p.add_argument(
        "--figure",
        metavar="PNG",
        help="write truth, estimates, their ensemble std and the data (any matplotlib format: .png, "
        ".pdf, .svg, ...; 'none' to skip); written after the results",
    )
    p.add_argument(
        "--save",
        metavar="FILE|DIR",
        help="export results as .npz or .nc (netCDF, needs xarray); a directory gets one <solver>.npz per "
        "solver, several solvers with a file name get <solver>-<name> beside it. If writing fails, the "
        "results go to a fallback file that the error names",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print each solver's planned forward / denoiser evaluations and an estimate in seconds "
        "(from a few timed calls), then exit without fitting",
    )
    p.add_argument(
        "--allow-costly",
        action="store_true",
        help="run even when a solver plans more forward evaluations than kd.get_config()"
        "['max_forward_evals'] (1e6 by default); without it such a run is refused before fitting",
    )


def _parser() -> argparse.ArgumentParser:
    from .estimators import available_solvers
    from .problems import available

    parser = argparse.ArgumentParser(
        prog="kalmandiff",
        description="Solve inverse problems y = G(x) + noise with a diffusion-model prior on x, calling G only "
        "as a black box. Start with 'kalmandiff demo'.",
        epilog=f"built-in problems: {', '.join(available())}. Solvers: {', '.join(available_solvers())}.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="does the diffusion prior matter? EnKG with a shipped network against the best Gaussian, on "
        "phase retrieval of handwritten digits (under a minute on a laptop)",
        description="Recover a held-out 16x16 handwritten digit from the magnitudes of its oversampled Fourier "
        "transform (phase retrieval, noise 0.05), calling the forward map only as a black box: EnKG with the "
        "shipped diffusion network (trained on other digits), EnKG with the best Gaussian of the same training "
        "digits, and EKI (no diffusion) with that Gaussian, on the same data. Prints errors (taken up to the "
        "map's sign and 180-degree-rotation symmetries), evaluation counts and times, and draws the estimates.",
    )
    _common(demo, problem_default=DEMO_PROBLEM)
    demo.set_defaults(func=_demo, steps=DEMO_STEPS, figure="kalmandiff-demo.png")
    run = sub.add_parser(
        "run",
        help="one solver on one built-in problem",
        description="Fit one solver to a built-in problem and print its metrics and costs.",
    )
    _common(run)
    run.add_argument("--solver", required=True, help="enkg, eki, ... (see the epilog of 'kalmandiff -h')")
    run.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="extra solver parameter, e.g. --param update=kalman (repeatable)",
    )
    run.set_defaults(func=_run)
    cmp_ = sub.add_parser(
        "compare",
        help="several solvers on one built-in problem, one table",
        description="Fit several solvers to the same problem and data and print one table.",
    )
    _common(cmp_)
    cmp_.add_argument("--solvers", required=True, help="comma-separated, e.g. enkg,eki,dpg")
    cmp_.add_argument(
        "--param",
        action="append",
        metavar="[SOLVER.]NAME=VALUE",
        help="parameter given to every solver, or with a SOLVER. prefix to that one (e.g. enkg.n_updates=1); "
        "all are checked before the first fit",
    )
    cmp_.set_defaults(func=_compare)
    return parser


def _version() -> str:
    from ._version import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kalmandiff`` and the ``kalmandiff`` script.

    Returns
    -------
    int
        0 on success; 1 when a result or figure could not be written (the
        results are then in a fallback file that the message names); 2 for
        bad arguments or a failed fit.
    """
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (OutputError, OSError) as exc:
        print(f"kalmandiff: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, NotImplementedError, ImportError) as exc:
        print(f"kalmandiff: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
