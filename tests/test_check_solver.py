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
    {"TinyEKI": factory(TinyEKI)}, cases=("gaussian", "grf"), accuracy_params={"n_particles": 256}
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
    report = check_solver(factory(tiny_gradient, n_particles=8, n_iter=4), cases=(), raise_on_failure=False)
    assert not report.failed, str(report)
    assert {
        "check_ask_tell",
        "check_checkpoint_resume",
        "check_plain_callable",
        "check_failure_resample",
    } <= set(report.passed)
