"""Member failures: exceptions, NaN outputs and hangs inside a BlackBox, under both policies."""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators import MemberFailureError
from kalmandiff.testing import FailingForward, gaussian_case

CASE = gaussian_case(4, 3, 0.1, seed=5)
A = CASE["A"]


# Forward models that fail on purpose, from kalmandiff.testing (per-member black boxes).
flaky = FailingForward(A, "raise")
nan_for_some = FailingForward(A, "nan")


def solver(**kw):
    kw.setdefault("n_particles", 20)
    return kd.EnKGSolver(CASE["prior"], n_steps=12, random_state=0, verbose=False, **kw)


@pytest.mark.parametrize(
    "fn, reason", [(flaky, "RuntimeError: solver diverged"), (nan_for_some, "non-finite")]
)
def test_resample_completes_and_reports(fn, reason):
    box = kd.problems.BlackBox(fn, (4,), (3,), noise_std=0.1)
    s = solver(on_failure="resample").fit(CASE["y"], box)
    assert s.stats_["n_failed"] > 0 and np.all(np.isfinite(s.particles_))
    assert s.history_[-1]["n_failed"] == s.stats_["n_failed"]
    # Still informative: closer to the posterior mean than the prior mean is (with ~20% of the
    # members failing in each of 19 evaluations of a 20-member ensemble).
    err = np.linalg.norm(s.reconstruct() - CASE["mean"])
    assert err < np.linalg.norm(CASE["prior_mean"] - CASE["mean"])


@pytest.mark.parametrize(
    "fn, reason", [(flaky, "RuntimeError: solver diverged"), (nan_for_some, "non-finite")]
)
def test_raise_names_members_and_reason(fn, reason):
    box = kd.problems.BlackBox(fn, (4,), (3,), noise_std=0.1)
    with pytest.raises(MemberFailureError, match=reason) as info:
        solver(on_failure="raise").fit(CASE["y"], box)
    assert info.value.members and all(j in box.last_failures for j in info.value.members)


def _hangs_once(call_number):
    """A per-member function whose ``call_number``-th call hangs until released."""
    fn = FailingForward(A, "hang", hang_call=call_number)
    return fn, fn


@pytest.mark.parametrize("policy", ["resample", "raise"])
def test_a_hanging_member_times_out(policy):
    fn, release = _hangs_once(30)  # one member of the second ensemble evaluation
    with ThreadPoolExecutor(max_workers=4) as pool:
        box = kd.problems.BlackBox(fn, (4,), (3,), noise_std=0.1, executor=pool, timeout=0.5)
        t0 = time.perf_counter()
        try:
            if policy == "raise":
                with pytest.raises(MemberFailureError, match="timed out") as info:
                    solver(on_failure="raise").fit(CASE["y"], box)
                assert len(info.value.members) == 1  # threads may run calls out of order
            else:
                s = solver(on_failure="resample").fit(CASE["y"], box)
                assert s.stats_["n_failed"] == 1 and np.all(np.isfinite(s.particles_))
        finally:
            release.release()
        assert time.perf_counter() - t0 < 8


def test_fewer_than_two_successes_is_a_clear_error():
    box = kd.problems.BlackBox(lambda x: np.full(3, np.nan) if x[0] < 5 else A @ x, (4,), (3,), noise_std=0.1)
    with pytest.raises(RuntimeError, match="at least two"):
        solver(on_failure="resample").fit(CASE["y"], box)


def test_nan_tolerance_imputes_isolated_entries():
    def one_nan(X):
        out = X @ A.T
        out[0, 1] = np.nan  # one datum of one member: 1/3 of its outputs
        return out

    strict = solver(n_particles=8, on_failure="raise")
    with pytest.raises(MemberFailureError):
        strict.fit(CASE["y"], one_nan, noise_std=0.1)
    tolerant = solver(n_particles=8, on_failure="raise", nan_tolerance=0.5).fit(
        CASE["y"], one_nan, noise_std=0.1
    )
    assert tolerant.stats_["n_failed"] == 0 and np.all(np.isfinite(tolerant.particles_))


def test_imputation_uses_the_successful_members_mean():
    from kalmandiff.estimators._evaluation import Accounting, ForwardEvaluator

    problem = kd.problems.CallableProblem(lambda X: X, (3,), (3,), 0.1)
    ev = ForwardEvaluator(problem, Accounting(), nan_tolerance=0.5)
    Y = np.array([[1.0, 2.0, 3.0], [3.0, np.nan, 5.0], [np.nan, np.nan, np.nan], [5.0, 6.0, 7.0]])
    G, failed = ev.accept(Y, 4)
    np.testing.assert_array_equal(failed, [False, False, True, False])
    assert G[1, 1] == pytest.approx(4.0)  # mean of 2 and 6 (the failed row does not count)


@pytest.mark.parametrize(
    "bad, match", [(dict(nan_tolerance=1.5), "nan_tolerance"), (dict(nan_tolerance=-0.1), "nan_tolerance")]
)
def test_bad_tolerance(bad, match):
    with pytest.raises(ValueError, match=match):
        solver(**bad).fit(CASE["y"], lambda X: X @ A.T, noise_std=0.1)
