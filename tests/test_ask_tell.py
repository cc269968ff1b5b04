"""Ask/tell: the user evaluates G; the particles are exactly those of fit()."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.testing import gaussian_case, parametrize_with_checks, solver_factory

CASE = gaussian_case(5, 3, 0.2, seed=2)


def forward(X):
    return X @ CASE["A"].T


SOLVERS = {
    "enkg-paper": lambda: kd.EnKGSolver(
        CASE["prior"], n_particles=10, n_steps=12, random_state=1, verbose=False
    ),
    "enkg-kalman": lambda: kd.EnKGSolver(
        CASE["prior"], n_particles=10, n_steps=12, update="kalman", random_state=1, verbose=False
    ),
    "eki": lambda: kd.EKISolver(CASE["prior"], n_particles=10, random_state=1, verbose=False),
}


# ask/tell gives fit's particles: kalmandiff.testing's check, for these settings too
# (every registered solver runs it in test_estimator_contract.py).
@parametrize_with_checks(
    {
        "enkg-paper": solver_factory("enkg", n_particles=10, n_steps=12, random_state=1),
        "enkg-kalman": solver_factory("enkg", n_particles=10, n_steps=12, update="kalman", random_state=1),
        "eki": solver_factory("eki", n_particles=10, max_iter=500, random_state=1),
    },
    select=["check_ask_tell"],
)
def test_ask_tell_reproduces_fit(check):
    check()


def test_ask_tell_with_a_plain_noise_std_reproduces_fit():
    fitted = SOLVERS["eki"]().fit(CASE["y"], forward, noise_std=0.2)
    solver = SOLVERS["eki"]().start(CASE["y"], noise_std=0.2)
    while (X := solver.ask()) is not None:
        solver.tell(X @ CASE["A"].T)  # e.g. results read back from files of a SLURM array
    np.testing.assert_array_equal(solver.particles_, fitted.particles_)
    np.testing.assert_array_equal(solver.reconstruct(), fitted.reconstruct())


def test_ask_tell_with_a_problem_and_failed_members():
    problem = kd.problems.LinearProblem(CASE["A"], (5,), noise_std=0.2)
    solver = kd.EnKGSolver(
        CASE["prior"], n_particles=10, n_steps=12, random_state=1, verbose=False, on_failure="resample"
    ).start(CASE["y"], problem)
    first = True
    while (X := solver.ask()) is not None:
        G = problem(X)
        if first:
            G[2] = np.nan  # member 2's simulation crashed
            first = False
        solver.tell(G)
    assert solver.stats_["n_failed"] == 1 and np.all(np.isfinite(solver.particles_))


def test_tell_checks_the_shape_and_order_of_calls():
    solver = SOLVERS["eki"]()
    with pytest.raises(kd.NotFittedError):
        solver.ask()
    solver.start(CASE["y"], noise_std=0.2)
    X = solver.ask()
    with pytest.raises(ValueError, match="shape"):
        solver.tell(np.zeros((X.shape[0], 4)))
    solver2 = SOLVERS["eki"]()
    with pytest.raises(RuntimeError, match="start"):
        solver2.tell(np.zeros((10, 3)))


# -- every registered solver, gradient-based ones included -------------------------------------


def _drive(solver, forward, vjp):
    """The user's loop: forward values for arrays, vector-Jacobian products for VJPRequests."""
    asked = {"forward": 0, "vjp": 0}
    while (request := solver.ask()) is not None:
        if isinstance(request, kd.estimators.VJPRequest):
            X, V = request  # a named pair: (J, *x_shape) inputs, (J, *y_shape) cotangents
            assert V.shape == (X.shape[0], *CASE_3.forward.y_shape)
            solver.tell(vjp(X, V))
            asked["vjp"] += 1
        else:
            solver.tell(forward(request))
            asked["forward"] += 1
    return asked


CASE_3 = gaussian_case(3, 2, 0.1, seed=0)
REGISTERED = {spec.name: solver_factory(spec.name) for spec in kd.estimators.registered_solvers()}
REGISTERED["diffpir-gradient"] = solver_factory("diffpir", data_step="gradient")
REGISTERED["diffpir-cg"] = solver_factory("diffpir", dense_max=1)  # matrix-free closed form: A and A^T asked


@pytest.mark.parametrize("name", list(REGISTERED))
def test_every_solver_runs_under_ask_tell_to_the_particles_of_fit(name):
    """A black-box NumPy model with an adjoint answers every request; the particles are fit's (exactly for
    the derivative-free solvers; to rounding for the gradient-based ones, whose fit differentiates in torch)."""
    make, problem = REGISTERED[name], CASE_3.forward
    fitted = make(CASE_3.prior).fit(CASE_3.y, problem)
    solver = make(CASE_3.prior).start(CASE_3.y, problem)  # supplies noise_std and residuals; never called
    A = np.asarray(CASE_3.A)
    asked = _drive(solver, lambda X: np.asarray(X) @ A.T, lambda X, V: np.asarray(V) @ A)
    assert solver.done_
    assert asked["forward"] == fitted.stats_["n_sequential_forward_evals"]
    assert asked["vjp"] == fitted.stats_["n_sequential_forward_vjps"]
    for key in ("n_forward_evals", "n_forward_vjps", "n_denoiser_evals", "n_denoiser_vjps"):
        assert solver.stats_[key] == fitted.stats_[key], key
    if spec_of(name).derivative_free:
        np.testing.assert_array_equal(solver.particles_, fitted.particles_)
    else:
        np.testing.assert_allclose(solver.particles_, fitted.particles_, rtol=1e-9, atol=1e-11)


def spec_of(name):
    base = name.split("-")[0]
    return next(s for s in kd.estimators.registered_solvers() if s.name == base)


@pytest.mark.parametrize("name", ["dps", "rmp"])
def test_vjps_answered_as_fit_computes_them_give_fits_particles_exactly(name):
    """The protocol adds nothing: answering in torch, as fit does (autograd through G), is bit-exact."""
    torch = pytest.importorskip("torch")
    make, problem = REGISTERED[name], CASE_3.forward
    fitted = make(CASE_3.prior).fit(CASE_3.y, problem)
    solver = make(CASE_3.prior).start(CASE_3.y, problem)
    graph = {}  # the last forward evaluation, kept for the VJP request that follows it

    def forward(X):
        graph["X"] = torch.as_tensor(X).requires_grad_(True)
        graph["G"] = problem(graph["X"])
        return graph["G"].detach().numpy()

    def vjp(X, V):
        (g,) = torch.autograd.grad(graph["G"], graph["X"], torch.as_tensor(V))
        return g.numpy()

    _drive(solver, forward, vjp)
    np.testing.assert_array_equal(solver.particles_, fitted.particles_)


def test_a_vjp_answer_of_the_wrong_shape_is_refused():
    solver = solver_factory("dps")(CASE_3.prior).start(CASE_3.y, noise_std=0.1)
    solver.tell(np.asarray(solver.ask()) @ np.asarray(CASE_3.A).T)
    request = solver.ask()
    assert isinstance(request, kd.estimators.VJPRequest)
    with pytest.raises(ValueError, match="vector-Jacobian"):
        solver.tell(np.zeros((request.X.shape[0], 2)))
    solver.tell(np.asarray(request.cotangent) @ np.asarray(CASE_3.A))  # retried with the right shape
    assert not isinstance(solver.ask(), kd.estimators.VJPRequest)


def test_gradient_solvers_under_ask_tell_with_a_nonlinear_black_box():
    """A non-linear model with a hand-written Jacobian (no torch on the user's side) drives DPS and RMP;
    fit with the same model written for torch autograd gives the same particles to rounding."""
    torch = pytest.importorskip("torch")
    A = np.asarray(CASE_3.A)

    def forward_np(X):
        Z = np.asarray(X) @ A.T
        return np.tanh(Z) + 0.3 * Z**2

    def vjp_np(X, V):
        Z = np.asarray(X) @ A.T
        return (np.asarray(V) * (1 - np.tanh(Z) ** 2 + 0.6 * Z)) @ A

    def forward_torch(X):  # in the namespace of its input, as every forward model
        if not isinstance(X, torch.Tensor):
            return forward_np(X)
        Z = X @ torch.as_tensor(A.T, dtype=X.dtype)
        return torch.tanh(Z) + 0.3 * Z**2

    problem = kd.problems.CallableProblem(forward_torch, (3,), (2,), 0.1, differentiable=True)
    y = forward_np(np.asarray(CASE_3.x_true)[None])[0] + 0.05
    for name in ("dps", "rmp", "diffpir-gradient"):
        fitted = REGISTERED[name](CASE_3.prior).fit(y, problem)
        solver = REGISTERED[name](CASE_3.prior).start(y, noise_std=0.1)
        _drive(solver, forward_np, vjp_np)
        np.testing.assert_allclose(solver.particles_, fitted.particles_, rtol=1e-8, atol=1e-10)
