"""The scikit-learn estimator contract, for every solver (DESIGN.md, principle 5)."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils import estimator_checks as checks

import kalmandiff as kd
from kalmandiff.estimators import NotFittedError, registered_solvers

PRIOR = kd.priors.GaussianPrior(np.zeros(3), 1.0)
A = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]])
Y = np.array([0.3, -0.2])

FORWARD = kd.problems.LinearProblem(A, (3,), noise_std=0.1)
SMALL = dict(n_particles=8, random_state=0, verbose=False)


def _quick(spec, **kw):
    return lambda: spec.cls(PRIOR, **{**spec.quick, **SMALL, **kw})


# Every registered solver, at its quick settings: the contract is checked over the registry.
SOLVERS = [
    pytest.param(_quick(spec), id=spec.cls.__name__.removesuffix("Solver")) for spec in registered_solvers()
]


SKLEARN_CHECKS = [
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_estimators_unfitted,
    checks.check_no_attributes_set_in_init,
    checks.check_estimator_repr,
    checks.check_estimator_cloneable,
    checks.check_do_not_raise_errors_in_init_or_set_params,
]


@pytest.mark.parametrize("make", SOLVERS)
@pytest.mark.parametrize("check", SKLEARN_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_api_checks(make, check):
    est = make()
    check(type(est).__name__, est)


@pytest.mark.parametrize("make", SOLVERS)
def test_parameters_default_constructible(make):
    checks.check_parameters_default_constructible(type(make()).__name__, make())


@pytest.mark.parametrize("make", SOLVERS)
def test_reconstruct_before_fit_raises_not_fitted(make):
    with pytest.raises(NotFittedError):
        make().reconstruct()
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)


@pytest.mark.parametrize("make", SOLVERS)
def test_fit_returns_self_and_mutates_neither_params_nor_y(make):
    est = make()
    before = est.get_params()
    y = Y.copy()
    assert est.fit(y, FORWARD) is est
    np.testing.assert_array_equal(y, Y)
    after = est.get_params()
    assert before.keys() == after.keys() and all(before[k] is after[k] for k in before)
    assert est.particles_.shape == (8, 3) and isinstance(est.stats_, dict)


@pytest.mark.parametrize("make", SOLVERS)
def test_clone_shares_the_prior_instead_of_copying_it(make):
    est = make()
    twin = clone(est)
    assert twin is not est and twin.prior is est.prior
    assert twin.get_params().keys() == est.get_params().keys()


@pytest.mark.parametrize("make", SOLVERS)
def test_set_params_changes_the_result_and_refit_is_idempotent(make):
    est = make()
    a = est.fit(Y, FORWARD).particles_.copy()
    b = est.fit(Y, FORWARD).particles_.copy()
    np.testing.assert_array_equal(a, b)
    c = est.set_params(random_state=1).fit(Y, FORWARD).particles_
    assert not np.allclose(a, c)


@pytest.mark.parametrize("make", SOLVERS)
def test_html_repr_and_stats_keys(make):
    est = make()
    assert "<" in est._repr_html_()
    est.fit(Y, FORWARD)
    required = {
        "n_denoiser_evals",
        "n_forward_evals",
        "n_sequential_denoiser_evals",
        "n_sequential_forward_evals",
        "time_total_s",
        "time_denoiser_s",
        "time_forward_s",
        "n_failed",
    }
    assert required <= set(est.stats_)


STATS_KEYS = {
    "n_denoiser_evals",
    "n_sequential_denoiser_evals",
    "n_forward_evals",
    "n_sequential_forward_evals",
    "n_forward_vjps",
    "n_sequential_forward_vjps",
    "n_denoiser_vjps",
    "n_sequential_denoiser_vjps",
    "n_failed",
    "n_forward_probe_evals",
    "time_total_s",
    "time_denoiser_s",
    "time_forward_s",
    "time_gradient_s",
    "time_overhead_s",
    "peak_rss_mb",
}


@pytest.mark.parametrize("make", SOLVERS)
def test_one_record_schema_for_every_solver(make):
    """``stats_`` has the same keys for every solver; every ``history_`` record has the common keys."""
    from kalmandiff.estimators import HISTORY_KEYS

    est = make().fit(Y, FORWARD)
    assert set(est.stats_) == STATS_KEYS
    assert est.history_
    for rec in est.history_:
        assert set(HISTORY_KEYS) <= set(rec)
    misfits = [r["misfit_mean"] for r in est.history_ if r["misfit_mean"] is not None]
    assert all(np.isfinite(m) and m >= 0 for m in misfits)


class _Interrupt(Exception):
    pass


def _interrupt_at(step):
    def callback(record):
        if record["step"] == step:
            raise _Interrupt

    return callback


_DIFFPIR = next(s for s in registered_solvers() if s.name == "diffpir")
RESUME_CASES = [*SOLVERS, pytest.param(_quick(_DIFFPIR, data_step="gradient"), id="DiffPIR-gradient")]
COUNT_KEYS = (
    "n_denoiser_evals",
    "n_forward_evals",
    "n_sequential_forward_evals",
    "n_forward_vjps",
    "n_failed",
)


@pytest.mark.parametrize("make", RESUME_CASES)
def test_checkpoint_resume_equals_the_uninterrupted_run(make, tmp_path):
    """Every solver checkpoints mid-run and resumes to the particles of an uninterrupted run."""
    fresh = make().fit(Y, FORWARD)
    ckpt = tmp_path / "run.ckpt"
    stop = min(3, len(fresh.history_) - 1)
    with pytest.raises(_Interrupt):
        make().set_params(callbacks=[_interrupt_at(stop)]).fit(
            Y, FORWARD, checkpoint=ckpt, checkpoint_every=2
        )
    with open(ckpt, "rb") as fh:
        saved = pickle.load(fh)
    assert not saved["done"] and len(saved["history"]) == 2 * (stop // 2)  # a mid-run checkpoint
    resumed = make().fit(Y, FORWARD, checkpoint=ckpt, checkpoint_every=2)
    np.testing.assert_array_equal(resumed.particles_, fresh.particles_)
    np.testing.assert_allclose(resumed.reconstruct(), fresh.reconstruct(), rtol=1e-12, atol=1e-12)
    assert [r["step"] for r in resumed.history_] == [r["step"] for r in fresh.history_]
    assert {k: resumed.stats_[k] for k in COUNT_KEYS} == {k: fresh.stats_[k] for k in COUNT_KEYS}
    # A finished checkpoint gives the final particles without running again.
    again = make().fit(Y, FORWARD, checkpoint=ckpt)
    np.testing.assert_array_equal(again.particles_, fresh.particles_)


@pytest.mark.parametrize("make", SOLVERS)
def test_ask_tell_equals_fit_or_is_refused_clearly(make):
    """Derivative-free solvers run under ask/tell to fit's particles; gradient-based ones refuse it."""
    name = type(make()).__name__
    if name not in kd.estimators.derivative_free_solvers():
        with pytest.raises(NotImplementedError, match="differentiates the forward model.*EnKGSolver"):
            make().start(Y, FORWARD)
        return
    fitted = make().fit(Y, FORWARD)
    solver = make().start(Y, FORWARD)
    n_asks = 0
    while (X := solver.ask()) is not None:
        solver.tell(FORWARD(X))
        n_asks += 1
    assert solver.done_ and n_asks == fitted.stats_["n_sequential_forward_evals"]
    np.testing.assert_array_equal(solver.particles_, fitted.particles_)
    assert [r["misfit_mean"] for r in solver.history_] == [r["misfit_mean"] for r in fitted.history_]


def _array_api_forward(X):
    """A plain callable written with array-API operations: torch autograd can follow it."""
    from array_api_compat import array_namespace

    xp = array_namespace(X)
    return X @ xp.asarray(A.T, dtype=X.dtype, device=getattr(X, "device", None))


def _numpy_forward(X):
    return np.asarray(X) @ A.T


@pytest.mark.parametrize("make", SOLVERS)
def test_every_solver_accepts_the_same_plain_callable(make):
    """One autograd probe decides for every gradient-based solver; derivative-free ones never probe."""
    name = type(make()).__name__
    est = make().fit(Y, _array_api_forward, noise_std=0.1)
    assert np.all(np.isfinite(est.particles_))
    if name in kd.estimators.derivative_free_solvers():
        make().fit(Y, _numpy_forward, noise_std=0.1)
        return
    with pytest.raises(
        ValueError, match=f"{name} differentiates the forward model.*not differentiable.*EnKGSolver"
    ):
        make().fit(Y, _numpy_forward, noise_std=0.1)


@pytest.mark.parametrize("make", SOLVERS)
@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(y=np.array([np.nan, 0.0])), "NaN"),
        (dict(y=np.zeros(3)), "shape"),
        (dict(on_failure="ignore"), "on_failure"),
        (dict(n_particles=0), "n_particles"),
        (dict(random_state="seed"), None),
    ],
    ids=["nan-y", "y-shape", "on_failure", "n_particles", "random_state"],
)
def test_bad_input_is_refused_before_any_work(make, bad, match):
    bad = dict(bad)
    y = bad.pop("y", Y)
    with pytest.raises((ValueError, TypeError), match=match):
        make().set_params(**bad).fit(y, FORWARD)
