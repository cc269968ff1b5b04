"""Tabulate the Navier-Stokes study: relative L2 against ensemble size J and steps N.

The study itself runs through :mod:`benchmarks.run` (suite ``ns-study``, settings in
:mod:`benchmarks.suites`), in slices that fit the machine, for example::

    python -m benchmarks run --suite ns-study --problem ns32-grf-noise1 --resume \\
        --solver "EnKG paper J=64 N=20" "EnKG kalman-sqrt J=64 N=20" "EKI J=64"

This module reads whatever has finished (``records.jsonl``) and writes, per
problem, a table of mean ± standard deviation over instances with the number
of instances in each cell, the data misfit (chi^2 per datum, about 1 at the
noise level), and a figure of error against J; the gradient-based reference of
:mod:`benchmarks.studies.ns_gradient_reference`, when its results exist, is listed beside
each problem so that a poor figure can be told apart from a poor method::

    python -m benchmarks ns-study [--results benchmarks/results/ns-study] \\
        [--reference benchmarks/results/ns_reference/results.json]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.report import PRIOR_MEAN

_LABEL = re.compile(r"^(?P<method>.+?) J=(?P<J>\d+)(?: N=(?P<N>\d+))?$")


def parse_label(label: str) -> tuple[str, int, int | None] | None:
    """``"EnKG paper J=256 N=20"`` -> ``("EnKG paper", 256, 20)``; None for other labels."""
    m = _LABEL.match(label)
    if m is None:
        return None
    return m["method"], int(m["J"]), (int(m["N"]) if m["N"] else None)


def load_records(results_dir: Path) -> list[dict]:
    """Finished records of a run (``records.jsonl``, falling back to ``results.json``)."""
    log = results_dir / "records.jsonl"
    if log.exists():
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return json.loads((results_dir / "results.json").read_text())["records"]


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    v = np.asarray(values, dtype=float)
    if v.size == 1:
        return f"{v[0]:.3f} (1)"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f} ({v.size})"


def tables(records: list[dict], reference: dict | None = None) -> str:
    """Markdown: one table per problem, rows = method and N, columns = J."""
    by_problem: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    chi2: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    failures: dict[str, list[str]] = defaultdict(list)
    for r in records:
        if "error" in r:
            failures[r["problem"]].append(f"{r['solver']} (seed {r['seed']}): {r['error'][:120]}")
            continue
        key = ("prior mean", 0, None) if r["solver"] == PRIOR_MEAN else parse_label(r["solver"])
        if key is None:
            continue
        by_problem[r["problem"]][key].append(r["relative_l2"])
        if "chi2_per_datum" in r:
            chi2[r["problem"]][key].append(r["chi2_per_datum"])
    out = []
    for problem in sorted(set(by_problem) | set(reference or {})):
        cells = by_problem.get(problem, {})
        Js = sorted({J for (_, J, _) in cells if J})
        rows = sorted({(m, N) for (m, J, N) in cells if J}, key=lambda t: (t[0], t[1] or 0))
        out.append(f"#### {problem}\n")
        if not Js:
            out.append("No ensemble run of this problem has finished yet.\n")
        else:
            out.append("Relative L2 of the ensemble mean, mean ± std over instances (count):\n")
            out.append("| method | N | " + " | ".join(f"J = {J}" for J in Js) + " |")
            out.append("|---|---:|" + "---:|" * len(Js))
        for m, N in rows:
            out.append(
                f"| {m} | {N or '-'} | " + " | ".join(_cell(cells.get((m, J, N), [])) for J in Js) + " |"
            )
        if ("prior mean", 0, None) in cells:
            out.append(f"| prior mean | - | {_cell(cells[('prior mean', 0, None)])} |" + " |" * (len(Js) - 1))
        fits = chi2.get(problem, {})
        if fits:
            out.append("\nData misfit of the ensemble mean, chi^2 per datum (1 = the noise level):\n")
            out.append("| method | N | " + " | ".join(f"J = {J}" for J in Js) + " |")
            out.append("|---|---:|" + "---:|" * len(Js))
            for m, N in rows:
                vals = [fits.get((m, J, N), []) for J in Js]
                out.append(
                    f"| {m} | {N or '-'} | "
                    + " | ".join(f"{np.mean(v):.2f}" if v else "" for v in vals)
                    + " |"
                )
        if reference and problem in reference:
            out.append("\nGradient-based reference (autograd through the solver; same instances):\n")
            out.append(reference[problem])
        if failures.get(problem):
            out.append("\nFailures: " + "; ".join(failures[problem]))
        out.append("")
    return "\n".join(out)


#: Gradient-reference estimators drawn as horizontal lines in the figure.
REFERENCE_LINES = ("grf-map", "gauss-map")


def figure(records: list[dict], path: Path, references: dict | None = None) -> None:
    """Relative L2 against J, one panel per problem, one line per method and N.

    ``references`` maps a problem key to ``{estimator: mean relative L2}``;
    the estimators of :data:`REFERENCE_LINES` are drawn as dashed lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data: dict[str, dict] = defaultdict(lambda: defaultdict(dict))
    for r in records:
        key = parse_label(r["solver"]) if "error" not in r else None
        if key is None:
            continue
        m, J, N = key
        data[r["problem"]][(m, N)].setdefault(J, []).append(r["relative_l2"])
    problems = sorted(data)
    if not problems:
        return
    ncols = min(3, len(problems))
    nrows = -(-len(problems) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 4.0 * nrows), squeeze=False)
    for ax in axes.flat[len(problems) :]:
        ax.set_visible(False)
    # one colour per (method, N) across every panel
    keys = sorted({k for p in problems for k in data[p]}, key=lambda t: (t[0], t[1] or 0))
    colour = {k: f"C{i % 7}" for i, k in enumerate(keys)}
    for ax, problem in zip(axes.flat, problems):
        for (m, N), series in sorted(data[problem].items(), key=lambda t: (t[0][0], t[0][1] or 0)):
            Js = sorted(series)
            means = [np.mean(series[J]) for J in Js]
            errs = [np.std(series[J]) for J in Js]
            ax.errorbar(
                Js,
                means,
                yerr=errs,
                marker="o",
                capsize=3,
                color=colour[(m, N)],
                label=m + (f", N={N}" if N else ""),
            )
        ax.axhline(1.0, color="0.5", ls=":", lw=1, label="prior mean")
        for k, (name, value) in enumerate(
            (n, v) for n, v in (references or {}).get(problem, {}).items() if n in REFERENCE_LINES
        ):
            ax.axhline(value, color=f"C{7 + k}", ls="--", lw=1, label=f"{name} (gradient reference)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ensemble size J")
        ax.set_ylabel("relative L2 error")
        ax.set_title(problem, fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reference_means(paths: list[Path]) -> dict[str, dict[str, float]]:
    """``{study problem: {estimator: mean relative L2 over instances}}`` of the reference files."""
    out: dict[str, dict[str, float]] = {}
    for key, rows in _reference_rows(paths).items():
        out[key] = {
            name: float(np.mean([v[0] for v in per_seed.values()])) for name, per_seed in rows.items()
        }
    return out


def _reference_rows(paths: list[Path]) -> dict[str, dict[str, dict]]:
    by_key: dict[str, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for path in paths:
        if not path.exists():
            continue
        payload = json.loads(path.read_text())
        problem = payload["problem"]
        family = "ns32-neural" if problem.get("t_prior", 0) > 0 else "ns32-grf"
        key = f"{family}-noise{problem['noise_std']:g}"
        for r in payload["records"]:
            by_key[key][r["estimator"]][r["seed"]] = (r["rel_l2"], r["chi2"], r["seed"])
    return by_key


def reference_tables(paths: list[Path]) -> dict[str, str]:
    """Tables of :mod:`benchmarks.studies.ns_gradient_reference` results, keyed by the study's problem key.

    An evolved-truth run (``t_prior > 0``) at noise ``s`` belongs to
    ``ns32-neural-noise<s>``, a GRF-truth run to ``ns32-grf-noise<s>``.  Each
    estimator's relative L2 and chi^2 are averaged over the instances.
    """
    out: dict[str, str] = {}
    for key, rows in _reference_rows(paths).items():
        lines = [
            "| estimator | relative L2 (mean, per instance) | chi^2 per datum (mean) |",
            "|---|---|---:|",
        ]
        for name, per_seed in rows.items():
            vals = [per_seed[s] for s in sorted(per_seed)]
            errs = ", ".join(f"{e:.2f}" for e, _, _ in vals)
            lines.append(
                f"| {name} | {np.mean([e for e, _, _ in vals]):.3f} ({errs}) | {np.mean([c for _, c, _ in vals]):.2f} |"
            )
        out[key] = "\n".join(lines)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", nargs="+", default=["benchmarks/results/ns-study"], help="result folders, merged"
    )
    parser.add_argument(
        "--out", default=None, help="where study.md / study.png go (default: the first folder)"
    )
    parser.add_argument(
        "--reference",
        nargs="*",
        default=["benchmarks/results/ns_reference/results.json"],
        help="results.json files of benchmarks.studies.ns_gradient_reference (one per noise level)",
    )
    args = parser.parse_args(argv)
    records = [r for folder in args.results for r in load_records(Path(folder))]
    out = Path(args.out or args.results[0])
    out.mkdir(parents=True, exist_ok=True)
    ref_paths = [Path(p) for p in args.reference]
    text = tables(records, reference_tables(ref_paths))
    (out / "study.md").write_text(text)
    figure(records, out / "study.png", reference_means(ref_paths))
    print(text)
    print(f"wrote {out}/study.md and study.png")


if __name__ == "__main__":
    main()
