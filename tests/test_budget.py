"""Planned cost is the cost that runs, and solvers swap at equal cost (issue 23 item 4, issue 20 item 4).

Every check here runs over the solver registry, so a new solver is covered
without editing this file.  The ground truth for "spent" is independent of
the solvers' own accounting: the forward problems below count the rows they
are called on.
"""

import json
import pickle
import sys
import warnings

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators import registered_solvers
from kalmandiff.estimators._params import PARAMETER_CONCEPTS
from kalmandiff.estimators._planning import BudgetError, PlannedEvaluations

SPECS = {spec.name: spec for spec in registered_solvers()}
PLANNED_KEYS = (
    "n_denoiser_evals",
    "n_sequential_denoiser_evals",
    "n_forward_evals",
    "n_sequential_forward_evals",
    "n_forward_vjps",
    "n_denoiser_vjps",
)


def _counting(problem):
    """``problem`` whose ``forward`` counts the rows it evaluates (in ``problem.rows``)."""
    base = type(problem)

    class Counting(base):
        def forward(self, X):
            self.rows += int(X.shape[0])
            return super().forward(X)

    problem.__class__ = Counting
    problem.rows = 0
    return problem


def _linear():
    A = np.random.default_rng(0).normal(size=(4, 8))
    problem = _counting(kd.problems.LinearProblem(A, (8,), noise_std=0.1))
    return problem, kd.priors.GaussianPrior(np.zeros(8), 1.0)


def _nonlinear():
    # Phase retrieval, |F x|: nonlinear and torch-differentiable.  The prior's mean is not zero so that no
    # sign symmetry makes a solver's gradient vanish exactly (RMP would then skip its line probe).
    problem = _counting(kd.problems.PhaseRetrieval(shape=(1, 4, 4), oversample=2.0, noise_std=0.05))
    return problem, kd.priors.GaussianPrior(np.full((1, 4, 4), 0.5), 1.0)


PROBLEMS = {"linear": _linear, "nonlinear": _nonlinear}


def _observe(problem):
    truth = np.random.default_rng(5).normal(size=problem.x_shape)
    y = problem.observe(truth, random_state=1)
    problem.rows = 0
    return y


def _spent(solver, problem):
    return problem.rows - int(solver.stats_.get("n_forward_probe_evals", 0))


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
@pytest.mark.parametrize("name", sorted(SPECS))
def test_planned_is_spent_for_every_registered_solver(name, kind):
    problem, prior = PROBLEMS[kind]()
    spec = SPECS[name]
    solver = spec.cls(prior, n_particles=3, random_state=0, verbose=False, **spec.quick)
    y = _observe(problem)
    plan = solver.expected_evaluations(problem)
    assert isinstance(plan, PlannedEvaluations) and set(PLANNED_KEYS) <= set(plan)
    solver.fit(y, problem)
    assert solver.stats_["n_forward_evals"] == _spent(solver, problem)  # the accounting counts every row
    for key in PLANNED_KEYS:
        if plan.exact:
            assert solver.stats_[key] == plan[key], key
        else:
            assert plan.upper_bound and solver.stats_[key] <= plan[key], key


def test_the_check_fails_on_the_plan_diffpir_used_to_make():
    # Before the fix DiffPIR planned the dense closed form (0 forward evaluations) on every problem.
    problem, prior = _nonlinear()
    solver = kd.DiffPIRSolver(prior, n_particles=3, n_steps=6, random_state=0, verbose=False)
    wrong = solver.expected_evaluations(problem, data_step="closed-form-dense")
    solver.fit(_observe(problem), problem)
    assert wrong["n_forward_evals"] == 0 != _spent(solver, problem)
    assert solver.expected_evaluations(problem)["n_forward_evals"] == _spent(solver, problem) == 3 * 6 * 2


def test_diffpir_plans_by_the_problem_and_warns_before_a_costly_nonlinear_run():
    problem, prior = _nonlinear()
    solver = kd.DiffPIRSolver(prior, n_particles=10_000, n_steps=1000, verbose=False)
    plan = solver.expected_evaluations(problem)
    assert plan.exact and plan["n_forward_evals"] == 10_000 * 1000 * 2
    assert plan["n_forward_vjps"] == 10_000 * 1000
    linear, lprior = _linear()
    assert kd.DiffPIRSolver(lprior).expected_evaluations(linear)["n_forward_evals"] == 0
    no_problem = solver.expected_evaluations()  # "auto" cannot know: the nonlinear plan, flagged
    assert not no_problem.exact and not no_problem.upper_bound and "problem" in no_problem.note
    assert no_problem.describe().startswith("about ")
    y = _observe(problem)
    with warnings.catch_warnings():
        warnings.simplefilter("error", kd.CostWarning)
        with pytest.raises(kd.CostWarning, match="20,000,000 forward evaluations"):
            solver.fit(y, problem)
    assert problem.rows == 0  # warned before any evaluation


def test_every_solver_plans_for_a_navier_stokes_problem():
    # The issue: expected_evaluations(problem) raised "unsupported operand type(s) for *: 'NavierStokes2D'".
    ns = kd.problems.NavierStokes2D(resolution=16, t_final=0.1, subsample=2, noise_std=0.1)
    prior = kd.priors.GaussianRandomFieldPrior(shape=(1, 16, 16))
    for spec in registered_solvers():
        solver = spec.cls(prior, **spec.quick)
        per_particle = solver.expected_evaluations(ns, n_particles=1)["n_forward_evals"]
        assert solver.expected_evaluations(ns)["n_forward_evals"] == per_particle * solver.n_particles
    diffpir = kd.DiffPIRSolver(prior, n_steps=7)
    assert diffpir.expected_evaluations(ns)["n_forward_evals"] == diffpir.n_particles * 7 * 2


def test_an_upper_bound_is_flagged_and_said_up_to():
    prior = kd.priors.GaussianPrior(np.zeros(8), 1.0)
    adaptive = kd.EKISolver(prior, n_particles=8, max_iter=50)
    plan = adaptive.expected_evaluations()
    assert plan.upper_bound and not plan.exact and plan.describe() == "up to 400"
    assert kd.EKISolver(prior, n_particles=8, dt=0.5).expected_evaluations().exact
    with (
        kd.config_context(max_forward_evals=10),
        pytest.warns(kd.CostWarning, match="plans up to 400 forward"),
    ):
        adaptive._warn_if_costly(plan)
    assert pickle.loads(pickle.dumps(plan)).upper_bound  # the flag survives a round trip (CLI workers)
    assert repr(plan).endswith("upper_bound=True)") and json.loads(json.dumps(plan)) == dict(plan)


def test_the_old_first_argument_still_means_n_particles():
    solver = kd.EnKGSolver(kd.priors.GaussianPrior(np.zeros(8), 1.0), n_steps=10)
    with pytest.warns(DeprecationWarning, match="n_particles=n"):
        old = solver.expected_evaluations(3)
    assert dict(old) == dict(solver.expected_evaluations(n_particles=3))
    inst = kd.problems.make("linear-gaussian")
    assert dict(solver.expected_evaluations(inst)) == dict(solver.expected_evaluations(inst.problem))


# --------------------------------------------------------------------------
# one name per budget; an error that names the equivalent
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_a_budget_parameter_a_solver_lacks_names_its_equivalent(name):
    cls = SPECS[name].cls
    own = set(cls._get_param_names())
    renamed = cls._RENAMED_PARAMETERS
    for foreign in PARAMETER_CONCEPTS:
        if foreign in own or foreign in renamed:
            continue
        with pytest.raises(TypeError) as err:
            cls(None, **{foreign: 3})
        message = str(err.value)
        assert message.startswith(f"{cls.__name__} has no {foreign}; "), message
        assert foreign not in message.split(";")[1].split(". Its parameters")[0], message


def test_the_issue_example_and_the_readme_arguments():
    prior = kd.priors.GaussianPrior(np.zeros(8), 1.0)
    with pytest.raises(TypeError, match="EKISolver has no n_steps; its iteration count is max_iter"):
        kd.EKISolver(prior, n_steps=30)
    readme = dict(n_particles=64, n_steps=30, n_updates=1, random_state=1)
    for spec in registered_solvers():
        try:
            spec.cls(prior, **readme)
        except TypeError as exc:
            first = str(exc).split(". Its parameters")[0]
            assert "has no" in first and any(p in first for p in spec.cls._get_param_names()), first
    with pytest.raises(TypeError, match="did you mean n_particles"):
        kd.EnKGSolver(prior, n_partciles=8)
    with pytest.raises(ValueError, match="EnKGSolver has no max_iter; its number of noise levels is n_steps"):
        kd.EnKGSolver(prior).set_params(max_iter=8)  # set_params raises scikit-learn's ValueError


@pytest.mark.parametrize(("cls", "old"), [(kd.DPGSolver, "n_samples"), (kd.SCGSolver, "n_candidates")])
def test_renamed_budget_parameters_keep_working_with_a_warning(cls, old):
    prior = kd.priors.GaussianPrior(np.zeros(8), 1.0)
    with pytest.warns(DeprecationWarning, match=f"{old}=...\\) is now n_queries"):
        solver = cls(prior, **{old: 7})
    assert solver.n_queries == 7 and old not in solver.get_params()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from sklearn.base import clone

        assert clone(solver).n_queries == 7  # the clone uses the new name, without a warning
    with pytest.warns(DeprecationWarning):
        solver.set_params(**{old: 5})
    assert solver.n_queries == 5
    with pytest.raises(TypeError, match="got both"):
        cls(prior, **{old: 7, "n_queries": 7})
    assert cls.defaults_for("navier-stokes")["n_queries"] > 0  # the reference settings use the new name


def test_gsg_dpg_and_scg_share_one_per_step_query_budget():
    prior = kd.priors.GaussianPrior(np.zeros(8), 1.0)
    forward = {}
    for cls in (kd.DPGSolver, kd.GSGSolver, kd.SCGSolver):
        solver = (
            cls(prior, n_steps=8, n_queries=10, threshold=0.0)
            if cls is kd.SCGSolver
            else cls(prior, n_steps=8, n_queries=10)
        )
        forward[cls.__name__] = solver.expected_evaluations()["n_forward_evals"]
    # DPG and GSG (central: 1 + 2 * (Q // 2)) add the estimate's own loss; SCG's last step is plain
    assert forward == {"DPGSolver": 8 * 11, "GSGSolver": 8 * 11, "SCGSolver": 7 * 10}


# --------------------------------------------------------------------------
# for_budget and compare(..., budget=N)
# --------------------------------------------------------------------------

BUDGET = 600


@pytest.mark.parametrize("kind", sorted(PROBLEMS))
@pytest.mark.parametrize("name", sorted(SPECS))
def test_for_budget_plans_and_spends_the_budget(name, kind):
    problem, prior = PROBLEMS[kind]()
    cls = SPECS[name].cls
    solver = cls.for_budget(prior, BUDGET, problem=problem, random_state=0, verbose=False)
    plan = solver.expected_evaluations(problem)
    assert plan["n_forward_evals"] <= BUDGET
    solver.fit(_observe(problem), problem)
    spent = _spent(solver, problem)
    assert spent <= plan["n_forward_evals"]
    if cls is kd.DiffPIRSolver and kind == "linear":
        assert spent == 0  # the dense closed-form data step never calls the forward model
    elif plan.exact:
        assert spent == plan["n_forward_evals"] >= 0.9 * BUDGET
    else:
        assert plan.upper_bound  # adaptive (EKI's data-misfit controller): at most the budget


def test_for_budget_keeps_the_given_parameters_and_refuses_an_impossible_budget():
    prior = kd.priors.GaussianPrior(np.zeros(8), 1.0)
    solver = kd.EnKGSolver.for_budget(prior, 10_000, n_steps=20)
    per_particle = kd.EnKGSolver(prior, n_steps=20).expected_evaluations(n_particles=1)["n_forward_evals"]
    assert solver.n_steps == 20 and solver.n_particles == 10_000 // per_particle
    with pytest.raises(BudgetError, match="needs at least"):
        kd.EnKGSolver.for_budget(prior, 1)
    with pytest.raises(ValueError, match="over the budget"):
        kd.EnKGSolver.for_budget(prior, 100, n_particles=64, n_steps=80)
    # a budget parameter at its minimum: the next one is lowered (DPG's 2 draws, fewer steps)
    small = kd.DPGSolver.for_budget(prior, 300)
    assert small.n_queries == 2 and small.expected_evaluations()["n_forward_evals"] == 300
    # one more sample at its 1000 steps would overspend and one leaves a third unspent: two samples
    # with the steps lowered to fit spend it all
    dps = kd.DPSSolver.for_budget(prior, 1500)
    assert (dps.n_particles, dps.n_steps) == (2, 750)


def test_compare_at_a_budget_spends_at_most_it_and_prints_without_optional_packages(monkeypatch):
    inst = kd.problems.make("linear-gaussian")
    solvers = [
        kd.EnKGSolver(inst.prior, n_steps=10),
        kd.EKISolver(inst.prior, dt=0.25),
        kd.SCGSolver(inst.prior, n_steps=20),
        kd.EKISolver(inst.prior, n_particles=4),  # n_particles fixed: for_budget lowers max_iter
    ]
    budget = 400
    table = kd.compare(solvers, inst.problem, inst.y, inst.x_true, budget=budget, as_frame=False)
    assert table["error"] == [None] * 4
    assert all(n <= budget for n in table["n_forward_evals"])
    assert table["planned_forward_evals"][:3] == table["n_forward_evals"][:3]
    assert all(n >= 0.9 * budget for n in table["n_forward_evals"][:3])
    assert "n_steps=10" in table["budget_params"][0]  # a parameter set by the user is kept
    assert table["budget_params"][3].startswith("n_particles=4,") and table["planned_upper_bound"][3]
    assert table.solvers["EnKGSolver"].n_steps == 10
    monkeypatch.setitem(sys.modules, "tabulate", None)  # the optional package is absent
    pd = pytest.importorskip("pandas")
    frame = kd.compare(solvers[:1], inst.problem, inst.y, inst.x_true, budget=budget, as_frame=True)
    assert isinstance(frame, pd.DataFrame)
    markdown = kd.ComparisonTable.from_frame(frame).to_markdown()
    assert markdown.splitlines()[0].startswith("| solver | relative_l2 |") and "EnKGSolver" in markdown
    assert "from_frame(table).to_markdown()" in sys.modules["kalmandiff.compare"].__doc__


def test_compare_records_a_budget_a_solver_cannot_meet():
    inst = kd.problems.make("linear-gaussian")
    table = kd.compare(
        [kd.EnKGSolver(inst.prior, n_steps=10)], inst.problem, inst.y, budget=1, as_frame=False
    )
    assert table["error"][0].startswith("BudgetError: EnKGSolver needs at least")
    with pytest.raises(ValueError, match="budget must be"):
        kd.compare([kd.EnKGSolver(inst.prior)], inst.problem, inst.y, budget=-5)
