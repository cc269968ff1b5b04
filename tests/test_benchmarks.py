"""The benchmark runner: tasks, records against independent recomputation, reports."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import kalmandiff as kd
from benchmarks import report, run
from benchmarks.suites import PR32, SUITES, ProblemSpec, score


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    argv = ["--suite", "smoke", "--problem", "ns16-grf", "--instances", "1", "--jobs", "0", "--out", str(out)]
    rc = run.main(argv)
    payload = json.loads((out / "results.json").read_text())
    return rc, out, payload


def test_smoke_suite_writes_every_task(smoke_run):
    rc, out, payload = smoke_run
    assert rc == 0
    records = payload["records"]
    assert [r["solver"] for r in records] == ["prior mean", "EnKG", "EKI", "SCG"]
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["solver"] for r in rows] == [r["solver"] for r in records]
    md = (out / "summary.md").read_text()
    assert all(f"| {label} |" in md for label in ("prior mean", "EnKG", "EKI", "SCG"))
    assert (out / "ns16-grf.png").stat().st_size > 0 and (out / "cost.png").stat().st_size > 0


def test_records_match_independent_recomputation(smoke_run):
    """Metrics recomputed from the saved estimates and the rebuilt truth; counts from the formula."""
    _, out, payload = smoke_run
    suite = SUITES["smoke"]
    spec = suite.problem("ns16-grf")
    truth = kd.problems.make(spec.family, random_state=1, **spec.make_kwargs).x_true
    for r in payload["records"]:
        est = np.load(report.estimate_path(out, "ns16-grf", 1, r["solver"]))
        expected = np.linalg.norm(est - truth) / np.linalg.norm(truth)
        assert r["relative_l2"] == pytest.approx(expected, rel=1e-5)
    # the GRF prior has mean zero, so the prior-mean estimate misses the truth by exactly 100%
    assert payload["records"][0]["relative_l2"] == pytest.approx(1.0)
    enkg = next(r for r in payload["records"] if r["solver"] == "EnKG")
    counts = kd.EnKGSolver(**suite.solver("EnKG", "ns16-grf").params).expected_evaluations()
    for key, value in counts.items():
        assert enkg[key] == value
    split = enkg["time_denoiser_s"] + enkg["time_forward_s"] + enkg["time_overhead_s"]
    assert split == pytest.approx(enkg["wall_s"], rel=0.2)


def test_suite_filters_and_problem_restrictions():
    cpu = SUITES["cpu"]
    tasks = cpu.tasks(problems=["pr32"], solvers=["EnKG"], n_instances=2)
    assert tasks == [("pr32", 1, "EnKG"), ("pr32", 2, "EnKG")]
    # the Navier-Stokes and imaging budgets differ: each label resolves per problem
    assert (
        cpu.solver("EnKG", "pr32").params["n_particles"]
        != cpu.solver("EnKG", "ns64-grf").params["n_particles"]
    )
    gpu = SUITES["gpu"]
    assert gpu.solver("EnKG", "bh64").params["n_updates"] == 1
    assert gpu.solver("EnKG", "ns128-grf").params["n_particles"] == 2048


def test_every_suite_entry_is_a_valid_solver_configuration():
    """Every solver spec builds and validates (bad parameter names fail here, not after an hour)."""
    for suite in SUITES.values():
        for spec in suite.solvers:
            solver = getattr(kd, spec.cls)(**spec.params)
            assert set(spec.params) <= set(solver.get_params())
            solver._check_parameters()


def test_phase_retrieval_score_is_invariant_to_sign_and_twin():
    inst = kd.problems.make("phase-retrieval", size="small", random_state=3)
    twin = -inst.x_true[..., ::-1, ::-1]
    s = score(PR32, inst, twin)
    assert s["relative_l2"] == pytest.approx(0.0, abs=1e-12)
    other = score(PR32, inst, inst.x_true + 0.1)
    assert other["psnr"] == pytest.approx(10 * np.log10(4 / 0.01), rel=1e-9)


def test_speed_rows_pair_by_seed_and_pick_the_fastest_match():
    def rec(solver, seed, err, wall, nfe):
        return {
            "problem": "p",
            "solver": solver,
            "seed": seed,
            "relative_l2": err,
            "wall_s": wall,
            "n_sequential_denoiser_evals": nfe,
            "n_sequential_forward_evals": 10,
        }

    records = [rec("reference", 1, 0.50, 100.0, 1000), rec("reference", 2, 0.30, 120.0, 1000)]
    records += [rec("cheap", 1, 0.51, 20.0, 200), rec("cheap", 2, 0.30, 30.0, 200)]
    records += [rec("bad", 1, 0.9, 5.0, 50), rec("bad", 2, 0.9, 5.0, 50)]
    records += [rec("flaky", 1, 0.3, 5.0, 50), {**rec("flaky", 2, 0, 0, 0), "error": "MemberFailureError"}]
    rows = {r["config"]: r for r in report.speed_rows(records)}
    assert rows["cheap"]["diff"] == pytest.approx(0.005)
    assert rows["cheap"]["time_ratio"] == pytest.approx(110.0 / 25.0)
    assert rows["cheap"]["nfe_ratio"] == pytest.approx(5.0)
    assert rows["cheap"]["matches"] and not rows["bad"]["matches"]
    # a configuration that failed on any seed never matches, however good its other seeds
    assert rows["flaky"]["failed"] == 1 and not rows["flaky"]["matches"]
    assert "**cheap**, 4.40x faster" in report.speed_section(records)


def test_unknown_parameter_is_reported_in_the_row(tmp_path, monkeypatch):
    suite = SUITES["smoke"]
    bad = type(suite.solvers[0])("EnKG", "EnKGSolver", {"n_particels": 8})
    monkeypatch.setitem(SUITES, "smoke", type(suite)("smoke", suite.problems, (bad,), seeds=(1,)))
    record = run.run_task("smoke", "ns16-grf", 1, "EnKG", str(tmp_path), {})
    assert "n_particels" in record["error"]


def test_dry_run_lists_counts(capsys):
    assert run.main(["--suite", "cpu", "--problem", "ns64-grf", "--solver", "EnKG", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "n_sequential_forward_evals" in out and "x3" in out


def test_problem_spec_defaults():
    spec = ProblemSpec("k", "navier-stokes", {}, "instance")
    assert spec.metric == "relative_l2" and not spec.higher_is_better


def test_data_fit_of_the_truth_is_the_noise_level():
    """chi^2 per datum of the true field is ~1 (256 data: 1 +- 0.09); of the prior mean, far above."""
    inst = kd.problems.make("navier-stokes", size="small", random_state=4)
    truth = run.data_fit(inst, inst.x_true)["chi2_per_datum"]
    assert 0.7 < truth < 1.3
    assert run.data_fit(inst, np.zeros_like(inst.x_true))["chi2_per_datum"] > 5


def test_solver_seed_offset_changes_the_solver_not_the_instance(tmp_path):
    argv = [
        "--suite",
        "smoke",
        "--problem",
        "ns16-grf",
        "--solver",
        "EnKG",
        "--instances",
        "1",
        "--jobs",
        "0",
    ]
    run.main(argv + ["--out", str(tmp_path / "a")])
    run.main(argv + ["--out", str(tmp_path / "b"), "--solver-seed-offset", "1000"])
    a, b = (json.loads((tmp_path / k / "results.json").read_text()) for k in "ab")
    ra, rb = a["records"][0], b["records"][0]
    assert (ra["solver_seed"], rb["solver_seed"]) == (1, 1001)
    assert ra["relative_l2"] != rb["relative_l2"]


def test_ns_study_tables_average_over_instances():
    from benchmarks.studies import ns_study

    assert ns_study.parse_label("EnKG paper J=256 N=20") == ("EnKG paper", 256, 20)
    assert ns_study.parse_label("EKI J=64") == ("EKI", 64, None)
    assert ns_study.parse_label("prior mean") is None
    recs = [
        {"problem": "p", "seed": s, "solver": "EnKG paper J=64 N=20", "relative_l2": v, "chi2_per_datum": 2.0}
        for s, v in ((1, 0.5), (2, 0.7), (3, 0.9))
    ]
    recs.append({"problem": "p", "seed": 1, "solver": "EKI J=256", "relative_l2": 0.4})
    recs.append({"problem": "p", "seed": 2, "solver": "EKI J=256", "error": "ValueError: diverged"})
    text = ns_study.tables(recs)
    v = np.array([0.5, 0.7, 0.9])
    assert f"{v.mean():.3f} ± {v.std(ddof=1):.3f} (3)" in text
    assert "| EKI | - |  | 0.400 (1) |" in text
    assert "ValueError: diverged" in text and "| 2.00 |" in text
