"""Command line: ``python -m kalmandiff demo | run | compare`` (also the ``kalmandiff`` script).

Every sub-command works on a built-in problem (``kd.problems.make``), needs
no download, prints a table of metrics, evaluation counts and times, and
can write a figure and the results.  Bad arguments give a one-line error and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import os
import sys
import time

import numpy as np

__all__ = ["main"]

# The demo's solvers and the settings that keep it near two minutes on two CPU cores.
DEMO_SOLVERS = {
    "enkg": {"n_updates": 1},
    "eki": {},
    "scg": {"n_steps": 100, "n_candidates": 16, "n_particles": 1},
}


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
        raise ValueError(f"{cls.__name__} has no parameter {', '.join(unknown)}.")
    kwargs.update(extra)
    return cls(prior, **kwargs)


def _problem(args):
    import kalmandiff as kd

    if args.problem not in kd.problems.available():
        raise ValueError(
            f"unknown problem {args.problem!r}; available: {', '.join(kd.problems.available())}."
        )
    return kd.problems.make(args.problem, size=args.size, random_state=args.seed)


# --------------------------------------------------------------------------
# running and reporting
# --------------------------------------------------------------------------


def _fit_all(inst, names: list[str], args, extra: dict) -> list[tuple[str, object, dict, float]]:
    prior = _default_prior(inst)
    rows = []
    for name in names:
        solver = _make_solver(name, prior, args, extra)
        print(f"fitting {type(solver).__name__} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        solver.fit(inst.y, inst.problem)
        rows.append(
            (name, solver, inst.problem.metrics(solver.reconstruct(), inst.x_true), time.perf_counter() - t0)
        )
    return rows


def _print_table(inst, rows) -> None:
    baseline = inst.problem.metrics(np.zeros_like(np.asarray(inst.x_true)), inst.x_true)
    keys = [k for k, v in baseline.items() if isinstance(v, (int, float))][:4]
    head = (
        f"{'solver':<24}"
        + "".join(f"{k[:12]:>13}" for k in keys)
        + f"{'forward':>12}{'denoiser':>12}{'time [s]':>10}"
    )
    print(head)
    print("-" * len(head))

    def line(label, metrics, fwd, den, seconds):
        vals = "".join(f"{metrics.get(k, float('nan')):>13.4g}" for k in keys)
        print(f"{label:<24}{vals}{fwd:>12}{den:>12}{seconds:>10}")

    line("zero field", baseline, "-", "-", "-")
    for name, solver, metrics, seconds in rows:
        st = solver.stats_
        # EnKG's default update="auto" resolves at fit: name the update that ran
        kind = getattr(solver, "update_", None) or type(solver).__name__
        line(
            f"{name} ({kind})"[:23],
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


def _save_targets(save: str, names: list[str]) -> dict[str, str]:
    """Where ``--save`` writes each solver's results: checked before any fitting.

    A directory (existing, or a path ending in a separator) gets ``DIR/<solver>.npz``;
    a file name gets the results of a single solver, or ``<solver>-<name>`` beside it for several.
    """
    if save.endswith(("/", os.sep)) or os.path.isdir(save):
        _writable_dir(save, "--save")
        return {name: os.path.join(save, f"{name}.npz") for name in names}
    directory, base = os.path.split(save)
    _writable_dir(directory or ".", "--save")
    if len(names) == 1:
        return {names[0]: save}
    return {name: os.path.join(directory, f"{name}-{base}") for name in names}


def _check_outputs(args, names: list[str]) -> None:
    """Refuse unwritable ``--figure`` / ``--save`` paths before any (possibly long) fitting."""
    figure = getattr(args, "figure", None)
    if figure and figure.lower() == "none":
        args.figure = figure = None
    if figure:
        if os.path.isdir(figure):
            raise ValueError(f"--figure: {figure!r} is a directory; give a file name such as out.png.")
        _writable_dir(os.path.dirname(figure) or ".", "--figure")
        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError(
                "--figure needs matplotlib, which is not installed: pip install 'kalmandiff[plot]' "
                "(or pass --figure none)."
            )
    if getattr(args, "save", None):
        args.save_targets = _save_targets(args.save, names)


def _outputs(inst, rows, args) -> None:
    if getattr(args, "figure", None):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from . import plotting

        plotting.plot_comparison({name: s for name, s, _, _ in rows}, x_true=inst.x_true, y=inst.y)
        plt.savefig(args.figure, dpi=120)
        print(f"figure written to {os.path.abspath(args.figure)}")
    if getattr(args, "save", None):
        from .io import export_results

        targets = getattr(args, "save_targets", None) or _save_targets(args.save, [r[0] for r in rows])
        for name, solver, _, _ in rows:
            path = export_results(solver, targets[name], y=inst.y, x_true=inst.x_true)
            print(f"results written to {path}")


def _demo(args) -> int:
    from .estimators import available_solvers

    _check_outputs(args, list(DEMO_SOLVERS))
    inst = _problem(args)
    print(f"problem: {inst.problem!r}\nprior:   {_default_prior(inst)!r}\n")
    rows = []
    for name, settings in DEMO_SOLVERS.items():
        if name in available_solvers():
            try:
                rows += _fit_all(inst, [name], _demo_args(args, settings), dict(settings))
            except ImportError as exc:  # the torch-based baselines without torch installed
                print(f"skipping {name}: {exc}", file=sys.stderr)
    _print_table(inst, rows)
    _outputs(inst, rows, args)
    return 0


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
    inst = _problem(args)
    rows = _fit_all(inst, [args.solver], args, _parse_params(args.param))
    _print_table(inst, rows)
    _outputs(inst, rows, args)
    return 0


def _compare(args) -> int:
    inst = _problem(args)
    names = [n.strip() for n in args.solvers.split(",") if n.strip()]
    if not names:
        raise ValueError("--solvers needs a comma-separated list, e.g. enkg,eki.")
    _check_outputs(args, names)
    rows = _fit_all(inst, names, args, _parse_params(args.param))
    _print_table(inst, rows)
    _outputs(inst, rows, args)
    return 0


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
        help="write truth, data and estimates side by side ('none' to skip)",
    )
    p.add_argument(
        "--save",
        metavar="FILE|DIR",
        help="export results (.nc with xarray, else .npz); a directory gets one <solver>.npz per solver, "
        "several solvers with a file name get <solver>-<name> beside it",
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="EnKG and two baselines on a small Navier-Stokes problem (about two minutes on a laptop)",
        description="Recover the initial vorticity of a small built-in Navier-Stokes flow (32x32, observed at "
        "t=1 on a 16x16 grid with noise 1) with EnKG and baselines under a Gaussian random field prior; print "
        "errors, evaluation counts and times.",
    )
    _common(demo, problem_default="navier-stokes")
    demo.set_defaults(func=_demo, steps=30, figure="kalmandiff-demo.png")
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
        "--param", action="append", metavar="NAME=VALUE", help="parameter given to every solver"
    )
    cmp_.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m kalmandiff`` and the ``kalmandiff`` script."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, NotImplementedError, ImportError) as exc:
        print(f"kalmandiff: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
