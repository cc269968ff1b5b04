"""The framework's rooms on their own: the observation's cotangent, the failure policy in one call,
the recorder's schema and the problems' capabilities, each against an independent computation."""

from dataclasses import fields

import numpy as np
import pytest

from kalmandiff._backend import RandomSource
from kalmandiff.compare import COUNT_COLUMNS, TIME_COLUMNS
from kalmandiff.estimators import HISTORY_KEYS, STATS_KEYS, MemberFailureError
from kalmandiff.estimators._failures import FailurePolicy
from kalmandiff.estimators._observation import Observation, weighted_cotangent
from kalmandiff.estimators._recorder import Accounting, Recorder
from kalmandiff.problems import BlackBox, CallableProblem, LinearProblem

torch = pytest.importorskip("torch")

RNG = np.random.default_rng(3)
A = RNG.normal(size=(3, 4))
STD = np.array([0.1, 0.2, 0.5])


def _problem():
    return LinearProblem(A, (4,), noise_std=STD)


def test_the_misfit_is_half_the_noise_weighted_squared_residual():
    problem, y = _problem(), RNG.normal(size=3)
    G = RNG.normal(size=(5, 3))
    expected = 0.5 * np.sum(((G - y) / STD) ** 2, axis=1)
    np.testing.assert_allclose(Observation(problem, y).misfit(G), expected, rtol=1e-14)


def test_the_cotangent_is_the_analytic_gradient_of_the_weighted_loss():
    """d/dG of sum_j c_j sum_k w_k (G_jk - y_k)^2 is 2 c_j w_k (G_jk - y_k); a wrong factor fails."""
    problem, y = _problem(), RNG.normal(size=3)
    G = torch.as_tensor(RNG.normal(size=(4, 3)))
    w = torch.as_tensor(1.0 / STD**2)
    c = torch.tensor([0.5, 1.0, 2.0, 0.25], dtype=torch.float64)
    cot, loss = weighted_cotangent(problem, G, torch.as_tensor(y), w, lambda _: c)
    r = G.numpy() - y
    np.testing.assert_allclose(cot.numpy(), 2 * c.numpy()[:, None] * w.numpy() * r, rtol=1e-13)
    np.testing.assert_allclose(loss.numpy(), np.sum(w.numpy() * r**2, axis=1), rtol=1e-13)


def test_a_member_left_out_of_the_cotangent_has_a_zero_row_and_no_nan():
    problem, y = _problem(), torch.zeros(3, dtype=torch.float64)
    G = torch.ones((3, 3), dtype=torch.float64)
    G[1] = float("nan")
    keep = torch.tensor([True, False, True])
    cot, loss = weighted_cotangent(
        problem, G, y, torch.ones(3, dtype=torch.float64), lambda _: 1.0, keep=keep
    )
    assert torch.all(cot[1] == 0) and torch.isfinite(cot).all() and loss[1] == 0
    np.testing.assert_allclose(cot[[0, 2]].numpy(), 2.0)


def _policy(policy, problem=None):
    problem = problem or _problem()
    return FailurePolicy(policy, problem, Accounting(), RandomSource(0, stream="solver"), np)


def test_update_moves_the_successful_members_in_place_and_redraws_the_failed():
    X = np.arange(12.0).reshape(6, 2)
    G = X[:, :1] * 1.0
    failed = np.array([False, True, False, False, True, False])
    policy = _policy("resample")
    seen = {}

    def rule(X_ok, G_ok):
        seen["rows"] = X_ok.copy()
        return X_ok + 100.0, "info"

    X_new, info = policy.update(X, G, failed, rule)
    assert info == "info" and policy.acct.n_failed == 2
    np.testing.assert_array_equal(seen["rows"], X[~failed])
    np.testing.assert_array_equal(X_new[~failed], X[~failed] + 100.0)
    # the failed rows are redrawn around the moved successful members, not left as they were
    assert not np.any(np.isin(X_new[failed], X[failed]))
    assert np.all(np.abs(X_new[failed] - (X[~failed] + 100.0).mean(axis=0)) < 20.0)


def test_update_under_raise_names_the_members_and_the_problems_reasons():
    box = BlackBox(lambda x: A @ x, (4,), (3,), noise_std=0.1)
    box.last_failures = {2: "the solver blew up"}
    failed = np.array([False, False, True, False])
    with pytest.raises(MemberFailureError, match="member 2: the solver blew up") as info:
        _policy("raise", box).update(np.zeros((4, 4)), np.zeros((4, 3)), failed, lambda X, G: (X, None))
    assert info.value.members == [2]


def test_every_key_list_is_derived_from_the_accounting_fields():
    names = [f.name for f in fields(Accounting) if "kind" in f.metadata]
    assert set(STATS_KEYS) == {*names, "time_total_s", "time_overhead_s", "peak_rss_mb"}
    flagged = [f.name for f in fields(Accounting) if f.metadata.get("history")]
    assert HISTORY_KEYS[-len(flagged) :] == tuple(flagged)
    assert set(COUNT_COLUMNS) | set(TIME_COLUMNS) - {"time_total_s"} <= set(STATS_KEYS)
    acct = Accounting(n_forward_evals=7, n_failed=2)
    recorder = Recorder(acct)
    recorder.record(0, misfit=np.array([1.0, np.nan, 3.0]))
    entry = recorder.history[0]
    assert tuple(entry) == HISTORY_KEYS and entry["n_forward_evals"] == 7 and entry["n_failed"] == 2
    assert entry["misfit_mean"] == 2.0  # the non-finite member is left out


def test_problems_declare_their_capabilities():
    assert _problem().linear_operator and not CallableProblem(lambda X: X, (3,), (3,)).linear_operator
    box = BlackBox(lambda x: x, (3,), (3,), noise_std=0.1)
    assert box.reports_member_failures() and box.member_failures() == {}
    assert not CallableProblem(lambda X: X, (3,), (3,)).reports_member_failures()
