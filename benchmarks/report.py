"""Tables and figures from benchmark records (see :mod:`benchmarks.run`).

Every function takes the list of per-task records that ``run`` writes to
``results.json``, so reports can be regenerated without rerunning::

    python -m benchmarks report benchmarks/results/cpu
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.suites import SUITES, Suite

#: Solver label of the pseudo-solver reporting the prior mean (the floor a method must beat).
PRIOR_MEAN = "prior mean"
#: a cheaper configuration "matches" the reference when its mean error is at most this much larger
MATCH_TOLERANCE = 0.02


def estimate_path(out_dir, problem: str, seed: int, label: str) -> Path:
    """Where ``run`` saves, and the figures read, one task's estimate (``.npy``)."""
    slug = "".join(c if c.isalnum() else "-" for c in label)
    return Path(out_dir) / "arrays" / f"{problem}__{seed}__{slug}.npy"


def _groups(records: list[dict]) -> dict:
    """Records grouped by problem, then solver label, in first-seen order."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        out[r["problem"]][r["solver"]].append(r)
    return out


def _values(rows: list[dict], key: str) -> list[float]:
    return [float(r[key]) for r in rows if r.get(key) is not None and "error" not in r]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def _median(rows: list[dict], key: str) -> float | None:
    v = _values(rows, key)
    return statistics.median(v) if v else None


def _fmt(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def _split(rows: list[dict]) -> str:
    """Median shares of the wall time: denoiser / forward / the solver's own work."""
    wall = _median(rows, "wall_s")
    if not wall:
        return "-"
    parts = [_median(rows, k) or 0.0 for k in ("time_denoiser_s", "time_forward_s", "time_overhead_s")]
    return " / ".join(f"{100 * p / wall:.0f}" for p in parts)


def _metric_columns(suite: Suite, problem: str, groups: dict) -> list[str]:
    spec = suite.problem(problem)
    present = {k for rows in groups.values() for r in rows for k in r}
    extra = [
        m for m in ("relative_l2", "psnr", "chisq_cphase", "chisq_logcamp", "psnr_blur10") if m in present
    ]
    return [spec.metric] + [m for m in extra if m != spec.metric]


def problem_table(suite: Suite, problem: str, groups: dict) -> str:
    """Markdown table of one problem: metrics (mean ± std over instances) and costs."""
    metrics = _metric_columns(suite, problem, groups)
    head = ["solver", *metrics, "forward evals", "seq. forward", "denoiser evals", "seq. denoiser"]
    head += ["wall s (median)", "split % den/fwd/own", "peak RSS MiB", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, rows in groups.items():
        ok = [r for r in rows if "error" not in r]
        first = ok[0] if ok else {}
        cells = [label, *(_mean_std(_values(ok, m)) for m in metrics)]
        cells += [_fmt(first.get(k)) for k in ("n_forward_evals", "n_sequential_forward_evals")]
        cells += [_fmt(first.get(k)) for k in ("n_denoiser_evals", "n_sequential_denoiser_evals")]
        cells += [_fmt(_median(ok, "wall_s"), ".1f"), _split(ok), _fmt(_max(ok, "peak_rss_mib"))]
        cells.append(str(len(rows) - len(ok)) if len(ok) < len(rows) else "0")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _max(rows: list[dict], key: str):
    v = _values(rows, key)
    return max(v) if v else None


def summary(suite: Suite, records: list[dict], meta: dict) -> str:
    """The whole markdown report of a run."""
    out = [f"# Suite `{suite.name}`", "", suite.description, ""]
    out += [f"- {k}: {v}" for k, v in meta.items() if k != "total_s"]
    out += [f"- total wall time: {meta.get('total_s', 0):.0f} s", ""]
    for problem, groups in _groups(records).items():
        spec = suite.problem(problem)
        seeds = sorted({r["seed"] for rows in groups.values() for r in rows})
        arrow = "higher is better" if spec.higher_is_better else "lower is better"
        out += [f"## {problem}", "", f"{spec.description}. Seeds {seeds}; `{spec.metric}`: {arrow}.", ""]
        out += [problem_table(suite, problem, groups), ""]
        errors = [r for rows in groups.values() for r in rows if "error" in r]
        out += [f"- {r['solver']} (seed {r['seed']}) failed: {r['error']}" for r in errors]
        if errors:
            out.append("")
    if suite.name == "speed":
        out += [speed_section(records), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------
# the speed comparison
# --------------------------------------------------------------------------


def speed_rows(records: list[dict], reference: str = "reference") -> list[dict]:
    """Every configuration against the reference on one problem, paired by instance seed.

    ``records`` must come from one problem.  Returns one dict per configuration:
    mean error over the seeds where both ran, mean paired difference to the
    reference (and its standard error), wall-time and denoiser-evaluation ratios
    (reference / configuration), the number of failed seeds, and whether it
    matches the reference's accuracy: no failed seed and mean error at most
    ``(1 + MATCH_TOLERANCE)`` times the reference's.
    """
    by_solver: dict = defaultdict(dict)
    failed: dict = defaultdict(int)
    for r in records:
        if r["solver"] == PRIOR_MEAN:
            continue
        if "error" in r:
            failed[r["solver"]] += 1
            by_solver.setdefault(r["solver"], {})
        else:
            by_solver[r["solver"]][r["seed"]] = r
    ref = by_solver.get(reference)
    if not ref:
        return []
    ref_wall = statistics.median(r["wall_s"] for r in ref.values())
    ref_nfe = statistics.fmean(r["n_sequential_denoiser_evals"] for r in ref.values())
    rows = []
    for label, runs in by_solver.items():
        seeds = sorted(set(runs) & set(ref))
        if not seeds:
            rows.append({"config": label, "failed": failed[label], "matches": False})
            continue
        diffs = [runs[s]["relative_l2"] - ref[s]["relative_l2"] for s in seeds]
        err = statistics.fmean(runs[s]["relative_l2"] for s in seeds)
        ref_err = statistics.fmean(ref[s]["relative_l2"] for s in seeds)
        wall = statistics.median(runs[s]["wall_s"] for s in seeds)
        nfe = statistics.fmean(runs[s]["n_sequential_denoiser_evals"] for s in seeds)
        se = statistics.stdev(diffs) / np.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
        rows.append(
            {
                "config": label,
                "relative_l2": err,
                "diff": statistics.fmean(diffs),
                "diff_se": se,
                "seq_denoiser_evals": nfe,
                "seq_forward_evals": statistics.fmean(runs[s]["n_sequential_forward_evals"] for s in seeds),
                "wall_s": wall,
                "time_ratio": ref_wall / wall,
                "nfe_ratio": ref_nfe / nfe,
                "failed": failed[label],
                "matches": failed[label] == 0 and err <= (1 + MATCH_TOLERANCE) * ref_err,
            }
        )
    return rows


def speed_section(records: list[dict]) -> str:
    """Markdown, per problem: each configuration against the reference, and the fastest match."""
    out = []
    for problem, groups in _groups(records).items():
        rows = speed_rows([r for rows in groups.values() for r in rows])
        if rows:
            out += [f"### Against the reference configuration: {problem}", "", _speed_table(rows), ""]
    return "\n".join(out) if out else "(no reference run)"


def _speed_table(rows: list[dict]) -> str:
    head = "| configuration | rel. L2 (mean) | Δ vs reference (± s.e.) | seq. denoiser evals | seq. forward evals"
    head += " | wall s | time ratio ref/this | NFE ratio | failed seeds | matches |\n"
    head += "|---|---|---|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        if "relative_l2" not in r:
            lines.append(f"| {r['config']} | - | - | - | - | - | - | - | {r['failed']} | no |")
            continue
        lines.append(
            f"| {r['config']} | {r['relative_l2']:.3f} | {r['diff']:+.3f} ± {r['diff_se']:.3f} | "
            f"{r['seq_denoiser_evals']:,.0f} | {r['seq_forward_evals']:,.0f} | {r['wall_s']:.1f} | "
            f"{r['time_ratio']:.2f} | {r['nfe_ratio']:.2f} | {r['failed']} | {'yes' if r['matches'] else 'no'} |"
        )
    best = min((r for r in rows if r["matches"]), key=lambda r: r["wall_s"])
    ref = next(r for r in rows if r["config"] == "reference")
    lines.append(
        f"\nFastest configuration within {100 * MATCH_TOLERANCE:.0f}% of the reference's mean error: "
        f"**{best['config']}**, {best['time_ratio']:.2f}x faster in wall time with "
        f"{best['seq_denoiser_evals']:,.0f} sequential denoiser evaluations per particle "
        f"(reference {ref['seq_denoiser_evals']:,.0f})."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------
# figures and the plan
# --------------------------------------------------------------------------


def figures(suite: Suite, records: list[dict], out_dir: Path) -> list[Path]:
    """``<problem>.png`` (truth and estimates, first seed) and ``cost.png``; none without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return []
    paths = []
    for problem, groups in _groups(records).items():
        paths.append(_estimates_figure(plt, suite, problem, groups, out_dir))
    paths.append(_cost_figure(plt, suite, records, out_dir))
    return [p for p in paths if p is not None]


def _estimates_figure(plt, suite, problem, groups, out_dir: Path):
    import kalmandiff as kd

    seed = min(r["seed"] for rows in groups.values() for r in rows)
    spec = suite.problem(problem)
    inst = kd.problems.make(spec.family, random_state=seed, **spec.make_kwargs)
    truth = np.asarray(inst.x_true)
    panels = [("truth", truth)]
    for label in groups:
        path = estimate_path(out_dir, problem, seed, label)
        if path.exists():
            img = np.load(path).reshape(truth.shape)
            if spec.family == "phase-retrieval":  # show what the score saw: the map's symmetries aligned
                img = inst.problem.align(img, truth)
            panels.append((label, img))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6), squeeze=False)
    lim = float(np.max(np.abs(truth)))
    cmap = "afmhot" if spec.family == "interferometry" else "RdBu_r"
    vmin = 0.0 if spec.family == "interferometry" else -lim
    for ax, (label, img) in zip(axes[0], panels):
        ax.imshow(np.asarray(img).reshape(truth.shape)[0], cmap=cmap, vmin=vmin, vmax=lim)
        row = groups.get(label, [])
        metric = next((r.get(spec.metric) for r in row if r["seed"] == seed and spec.metric in r), None)
        ax.set_title(label if metric is None else f"{label}\n{spec.metric} {metric:.3g}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{problem}, seed {seed}", fontsize=9)
    fig.tight_layout()
    path = out_dir / f"{problem}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cost_figure(plt, suite, records, out_dir: Path):
    from matplotlib.ticker import NullFormatter

    groups = _groups(records)
    labels = list(dict.fromkeys(r["solver"] for r in records if r["solver"] != PRIOR_MEAN))
    colours = {label: f"C{k % 10}" for k, label in enumerate(labels)}  # one colour per solver everywhere
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.4), squeeze=False)
    for ax, (problem, by_solver) in zip(axes[0], groups.items()):
        spec = suite.problem(problem)
        for label, rows in by_solver.items():
            ok = [r for r in rows if "error" not in r and r.get(spec.metric) is not None]
            if not ok or label == PRIOR_MEAN:
                if ok:
                    ax.axhline(statistics.fmean(r[spec.metric] for r in ok), color="grey", ls=":", lw=1)
                continue
            cost = statistics.fmean(r.get("n_forward_evals", 0) for r in ok) or 1
            vals = [r[spec.metric] for r in ok]
            ax.errorbar(
                cost,
                statistics.fmean(vals),
                yerr=np.std(vals),
                fmt="o",
                capsize=3,
                label=label,
                color=colours[label],
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        if spec.metric.startswith("chisq"):
            ax.set_yscale("log")  # failed runs reach chi^2 of 1e3; a good fit is about 1
        ax.set_xlabel("forward evaluations (total)")
        ax.set_ylabel(spec.metric)
        ax.set_title(problem, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    path = out_dir / "cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plan(suite: Suite, tasks: list) -> str:
    """The tasks of a run with each solver's evaluation counts by formula (no fitting)."""
    import kalmandiff as kd

    lines = [f"suite {suite.name}: {len(tasks)} tasks on {suite.device}, {suite.dtype}"]
    seen = set()
    for problem, _, label in tasks:
        if (problem, label) in seen or label == PRIOR_MEAN:
            continue
        seen.add((problem, label))
        spec = suite.solver(label, problem)
        solver = getattr(kd, spec.cls)(**spec.params)
        counts = solver.expected_evaluations() if hasattr(solver, "expected_evaluations") else {}
        n = sum(1 for p, _, lab in tasks if p == problem and lab == label)
        shown = ", ".join(f"{k} {v:,}" for k, v in counts.items())
        lines.append(f"  {problem:14s} {label:18s} x{n}  {shown}")
    return "\n".join(lines)


def main(argv=None) -> None:
    """Regenerate ``summary.md`` and the figures of a results folder."""
    out_dir = Path((argv or sys.argv[1:])[0])
    payload = json.loads((out_dir / "results.json").read_text())
    suite = SUITES[payload["meta"]["suite"]]
    (out_dir / "summary.md").write_text(summary(suite, payload["records"], payload["meta"]))
    figures(suite, payload["records"], out_dir)
    print(f"wrote {out_dir}/summary.md and figures")


if __name__ == "__main__":
    main()
