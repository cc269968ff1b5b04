"""check_solver on a solver written outside the package, and on broken variants of it.

``TinyEKI`` is what a user would write: a derivative-free ensemble Kalman
solver on the framework's step protocol (``_iterate`` yields ``SafePoint``
and ``ForwardRequest``), about thirty lines.  It passes every check; each
broken variant is caught, and the report names the check that caught it.
"""

import numpy as np
import pytest

from kalmandiff.estimators import BaseSolver, ForwardRequest, SafePoint, VJPRequest
from kalmandiff.estimators._params import POSITIVE_INT, solver_parameters
from kalmandiff.estimators._registry import register_solver, unregister_solver
from kalmandiff.testing import (
    CheckReport,
    check_solver,
    gaussian_case,
    parametrize_with_checks,
    posterior_scores,
    solver_checks,
)


@solver_parameters
class TinyEKI(BaseSolver):
    """Ensemble Kalman inversion with ``n_iter`` equal tempered steps (perturbed observations).

    Parameters
    ----------
    prior : Prior
    n_particles : int, default 16
    n_iter : int, default 4
    """

    n_particles: int = 16
    n_iter: int = 4
    _param_constraints = {"n_iter": [POSITIVE_INT]}

    def _draws(self, ctx, shape):
        return ctx.rng.numpy.standard_normal(shape)

    def _iterate(self, ctx, state):
        xp, J = ctx.xp, int(self.n_particles)
        std = ctx.positive_noise_std("kalman")
        if state is not None and "final" in state:  # a finished checkpoint
            return state["final"]
        if state is None:
            X = self.prior.sample(J, random_state=ctx.rng.numpy, like=ctx.like())
            X, it = xp.reshape(xp.asarray(X, dtype=ctx.y.dtype), (J, -1)), 0
        else:
            X, it = state["X"], state["it"]
        while it < self.n_iter:
            yield SafePoint(it, {"X": X, "it": it})
            G, failed = yield ForwardRequest(xp.reshape(X, (J, *ctx.x_shape)))
            ok = self._successes(ctx, failed)
            Xg, Gg = ctx.take_ok(X, ok), ctx.take_ok(G, ok)
            n = Xg.shape[0]
            dX, dG = Xg - xp.mean(Xg, axis=0), Gg - xp.mean(Gg, axis=0)
            Cxg, Cgg = dX.T @ dG / (n - 1), dG.T @ dG / (n - 1)
            R = self.n_iter * xp.asarray(np.diag(np.asarray(std) ** 2))
            eta = xp.asarray(self._draws(ctx, (n, Gg.shape[1]))) * (self.n_iter**0.5 * std)
            K = xp.linalg.solve(Cgg + R, (ctx.y_flat + eta - Gg).T)
            X = ctx.merge_successes(X, Xg + (Cxg @ K).T, ok)
            it += 1
            ctx.record(step=it - 1, misfit=ctx.misfit(Gg), spread=ctx.spread(X))
        return xp.reshape(X, (J, *ctx.x_shape))

    def _successes(self, ctx, failed):
        return ctx.handle_failures(failed)


class IgnoresRandomState(TinyEKI):
    """Broken: draws its perturbations from an unseeded generator."""

    def _draws(self, ctx, shape):
        return np.random.default_rng().standard_normal(shape)


class LetsNaNThrough(TinyEKI):
    """Broken: treats every member as a success, so a failed member's NaN enters the update."""

    def _successes(self, ctx, failed):
        return np.ones(len(failed), bool)


def factory(cls, **kw):
    return lambda prior: cls(
        prior, **{"n_particles": 16, "n_iter": 4, "random_state": 0, "verbose": False, **kw}
    )


def test_a_solver_written_outside_the_package_passes_every_check():
    report = check_solver(factory(TinyEKI), cases=("gaussian", "mixture"))
    assert isinstance(report, CheckReport) and report and not report.failed
    assert {"check_same_seed_same_result", "check_ask_tell", "check_checkpoint_resume"} <= set(report.passed)
    assert "check_posterior_accuracy[mixture]" in report.passed


def test_tiny_eki_converges_to_the_exact_posterior_with_many_particles():
    case = gaussian_case(4, 3, 0.1, seed=1)
    solver = TinyEKI(case.prior, n_particles=2000, random_state=0).fit(case.y, case.forward)
    err, prior_err, ratio = posterior_scores(solver, case)
    assert err < 0.05 < prior_err and 0.85 < ratio < 1.15


def test_ignoring_random_state_is_caught_by_name():
    with pytest.raises(AssertionError, match="check_same_seed_same_result") as info:
        check_solver(factory(IgnoresRandomState))
    assert "check_checkpoint_resume" in str(info.value)  # a resumed run cannot replay either


def test_a_nan_let_through_is_caught_by_name():
    report = check_solver(factory(LetsNaNThrough), raise_on_failure=False)
    assert not report
    assert {"check_failure_raise", "check_failure_resample"} <= set(report.failed)
    assert "check_same_seed_same_result" in report.passed
    with pytest.raises(
        AssertionError, match=r"FAILED check_failure_raise.*\n.*FAILED check_failure_resample"
    ):
        report.raise_if_failed()


def test_a_solver_that_misses_the_accuracy_tolerance_is_caught():
    report = check_solver(factory(TinyEKI, n_particles=4, n_iter=1), mean_tol=1e-3, raise_on_failure=False)
    assert list(report.failed) == ["check_posterior_accuracy[gaussian]"]
    assert "mean_tol" in report.failed["check_posterior_accuracy[gaussian]"]


def test_select_and_exclude_checks_by_name():
    names = [name for name, _ in solver_checks(factory(TinyEKI))]
    assert len(names) == len(set(names)) and "check_no_attributes_set_in_init" in names
    assert [n for n, _ in solver_checks(factory(TinyEKI), select=["check_ask_tell"])] == ["check_ask_tell"]
    assert "check_ask_tell" not in [n for n, _ in solver_checks(factory(TinyEKI), exclude=["check_ask_tell"])]
    with pytest.raises(ValueError, match="unknown checks"):
        solver_checks(factory(TinyEKI), select=["check_everything"])


@parametrize_with_checks(
    {"TinyEKI": factory(TinyEKI)}, cases=("gaussian", "grf"), accuracy_params={"n_particles": 512}
)
def test_tiny_eki_with_parametrize_with_checks(check):
    check()


# -- a gradient-based solver written outside the package ----------------------------------


@solver_parameters
class TinyGradientDescent(BaseSolver):
    """Gradient descent on the data misfit from prior draws: a toy gradient-based solver in NumPy.

    It asks for forward values with ``vjp=True`` and then for the vector-Jacobian products of the
    weighted residuals: ``fit`` answers them (a linear problem's adjoint, torch autograd otherwise),
    ask/tell leaves them to the user.

    Parameters
    ----------
    prior : Prior
    n_particles : int, default 8
    n_iter : int, default 4
    step : float, default 1e-3
    """

    n_particles: int = 8
    n_iter: int = 4
    step: float = 1e-3
    _param_constraints = {"n_iter": [POSITIVE_INT]}

    def _iterate(self, ctx, state):
        xp, J, shape = ctx.xp, int(self.n_particles), (int(self.n_particles), *ctx.x_shape)
        if state is not None and "final" in state:
            return state["final"]
        if state is None:
            X, it = xp.asarray(self.prior.sample(J, random_state=ctx.rng.numpy, like=ctx.like())), 0
            X = xp.astype(xp.reshape(X, shape), ctx.y.dtype)
        else:
            X, it = state["X"], state["it"]
        w = xp.reshape(1.0 / ctx.positive_noise_std("gradient") ** 2, (1, -1))
        while it < self.n_iter:
            yield SafePoint(it, {"X": X, "it": it})
            G, failed = yield ForwardRequest(X, vjp=True)
            ok = ctx.handle_failures(failed)
            R = w * ctx.flat_residual(G, xp.reshape(ctx.y_flat, (1, -1)))
            grad = yield VJPRequest(X, xp.reshape(R, (J, *ctx.problem.y_shape)))
            X = xp.reshape(ctx.resample_failed(self._flat(X - self.step * grad), ok), shape)
            ctx.record(step=it, misfit=ctx.misfit(G), spread=ctx.spread(X))
            it += 1
        return X


@pytest.fixture
def tiny_gradient():
    cls = register_solver("tiny-gradient", derivative_free=False)(TinyGradientDescent)
    yield cls
    unregister_solver("tiny-gradient")


def test_a_gradient_based_solver_written_outside_the_package_passes_the_contract(tiny_gradient):
    # Four steps of 1e-3 hardly move the particles (0.03 of the exact posterior shift), which
    # check_answer_follows_y rightly reports; the rest of the contract holds.
    report = check_solver(
        factory(tiny_gradient, n_particles=8, n_iter=4),
        cases=(),
        exclude=["check_answer_follows_y"],
        raise_on_failure=False,
    )
    assert not report.failed, str(report)
    assert {
        "check_ask_tell",
        "check_checkpoint_resume",
        "check_plain_callable",
        "check_failure_resample",
    } <= set(report.passed)


# -- wrong solvers that the checks must catch ---------------------------------------------


class IgnoresTheData(TinyEKI):
    """Wrong: evaluates the forward model as asked, then keeps the prior draws (answers the prior)."""

    def _iterate(self, ctx, state):
        X = yield from TinyEKI._iterate(self, ctx, state)
        J = int(self.n_particles)
        prior_draws = self.prior.sample(J, random_state=np.random.default_rng(0), like=ctx.like())
        return ctx.xp.reshape(ctx.xp.asarray(prior_draws, dtype=X.dtype), X.shape)


class FitsZeroData(TinyEKI):
    """Wrong: fits y = 0 instead of the observation."""

    def _iterate(self, ctx, state):
        ctx.y_flat = ctx.y_flat * 0.0
        return (yield from TinyEKI._iterate(self, ctx, state))


class NeverCallsForward(TinyEKI):
    """Wrong: records steps and returns prior draws without ever asking for a forward evaluation."""

    def _iterate(self, ctx, state):
        xp, J = ctx.xp, int(self.n_particles)
        X = xp.asarray(self.prior.sample(J, random_state=ctx.rng.numpy, like=ctx.like()), dtype=ctx.y.dtype)
        for it in range(self.n_iter):
            yield SafePoint(it, {"X": X, "it": it})
            ctx.record(step=it, misfit=None, spread=ctx.spread(xp.reshape(X, (J, -1))))
        return xp.reshape(X, (J, *ctx.x_shape))


ACCURACY = ["check_posterior_accuracy[gaussian]", "check_answer_follows_y"]


@pytest.mark.parametrize("wrong", [IgnoresTheData, FitsZeroData, NeverCallsForward])
def test_a_solver_that_does_not_use_y_fails_the_accuracy_checks(wrong):
    report = check_solver(factory(wrong), raise_on_failure=False, cases=("gaussian", "mixture"))
    assert set(ACCURACY) | {"check_posterior_accuracy[mixture]"} <= set(report.failed), str(report)
    assert "0 means the answer ignores y" in report.failed["check_answer_follows_y"]


def test_the_right_solver_passes_the_accuracy_checks_the_wrong_ones_fail():
    # the same checks, on the solver the wrong ones were derived from
    report = check_solver(factory(TinyEKI), select=ACCURACY, raise_on_failure=False)
    assert report.passed == ACCURACY[::-1] or set(report.passed) == set(ACCURACY), str(report)


def test_a_solver_that_never_calls_the_forward_model_is_caught_by_ask_tell_and_plain_callable():
    report = check_solver(factory(NeverCallsForward), raise_on_failure=False)
    assert {"check_ask_tell", "check_plain_callable"} <= set(report.failed), str(report)
    assert "never asked for a forward evaluation" in report.failed["check_ask_tell"]
    assert "only to probe it" in report.failed["check_plain_callable"]


def test_the_prior_mean_fails_the_accuracy_case_by_a_wide_margin():
    from kalmandiff.testing import accuracy_case

    for name in ("gaussian", "mixture", "grf"):
        case = accuracy_case(name)
        norm = np.linalg.norm(case.mean)
        prior_err = np.linalg.norm(case.prior_mean - case.mean) / norm
        rng = np.random.default_rng(1)
        # the mean of 8 prior draws (what a data-ignoring 8-particle solver returns), 50 times
        sampled = [
            np.linalg.norm(case.prior.sample(8, random_state=rng).mean(0) - case.mean) / norm
            for _ in range(50)
        ]
        assert min(sampled) > 0.5 * prior_err, name  # mean_tol = 0.5 refuses them all


def test_the_label_is_taken_without_calling_the_factory_with_none():
    def reads_the_prior(prior):
        return TinyEKI(prior, n_particles=4 * prior.event_shape[0], n_iter=4, random_state=0, verbose=False)

    report = check_solver(reads_the_prior, select=["check_not_fitted"])
    assert report.solver == "TinyEKI" and report.passed == ["check_not_fitted"]


def test_a_wrapper_that_copies_the_prior_on_clone_gets_the_fix_in_the_message():
    from sklearn.base import BaseEstimator

    import kalmandiff as kd

    class Wrapper(BaseEstimator):
        """A thin wrapper around EKISolver without __sklearn_clone__: clone deep-copies its prior."""

        def __init__(self, prior=None, n_particles=8):
            self.prior = prior
            self.n_particles = n_particles

    report = check_solver(
        lambda prior: Wrapper(prior), select=["check_clone_shares_prior"], raise_on_failure=False
    )
    assert "__sklearn_clone__" in report.failed["check_clone_shares_prior"]

    class Subclass(kd.EKISolver):
        """A thin subclass inherits BaseSolver's __sklearn_clone__ and passes."""

    report = check_solver(lambda prior: Subclass(prior, n_particles=8), select=["check_clone_shares_prior"])
    assert report.passed == ["check_clone_shares_prior"]
