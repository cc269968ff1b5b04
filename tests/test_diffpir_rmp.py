"""DiffPIR and RMP: exact data steps, linear-Gaussian accuracy, accounting, gradient refusal, failures."""

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff._backend import stream_seed, to_numpy
from kalmandiff.diffusion import edm_sigma_schedule
from kalmandiff.estimators import MemberFailureError
from kalmandiff.estimators.diffpir import DiffPIRSolver
from kalmandiff.estimators.rmp import RMPSolver
from kalmandiff.problems._base import CallableProblem
from kalmandiff.testing import gaussian_case, random_spd
from kalmandiff.testing import posterior_scores as scores

NOISE = 0.1


def linear_case(xp=None, to_xp=None, seed=0):
    case = gaussian_case(8, 4, NOISE, seed=seed)
    problem = kd.problems.LinearProblem(case["A"], (8,), NOISE)
    y = case["y"] if xp is None else to_xp(case["y"], xp, dtype=xp.float64)
    return case, problem, y


def gaussian_denoiser(mu, S):
    """Exact EDM denoiser of N(mu, S), written here: mu + S (S + s^2 I)^{-1} (x - mu)."""
    d = mu.size
    return lambda X, s: mu + (X - mu) @ np.linalg.solve(S + s**2 * np.eye(d), S).T


class CountingPrior:
    """A prior wrapper that counts denoiser calls (to check that refusals happen before any work)."""

    def __init__(self, prior):
        self.prior, self.event_shape, self.calls = prior, prior.event_shape, 0

    def denoise(self, x, sigma):
        self.calls += 1
        return self.prior.denoise(x, sigma)

    def sample(self, n, random_state=None, like=None):
        return self.prior.sample(n, random_state=random_state, like=like)


# --------------------------------------------------------------------------
# DiffPIR
# --------------------------------------------------------------------------


def test_diffpir_closed_form_beats_the_prior_mean_with_formula_counts(xp, to_xp):
    case, problem, y = linear_case(xp, to_xp)
    J, N = 50, 40
    solver = DiffPIRSolver(case["prior"], n_particles=J, n_steps=N, random_state=0, verbose=False)
    solver.fit(y, problem)
    x_hat = to_numpy(solver.reconstruct())
    err, prior_err, _ = scores(solver, case)
    assert np.all(np.isfinite(x_hat)) and err < 0.4 * prior_err
    s = solver.stats_
    assert solver.data_step_ == "closed-form-dense"
    assert (s["n_denoiser_evals"], s["n_sequential_denoiser_evals"]) == (J * N, N)
    # the dense closed form never evaluates the forward model on particles
    assert (s["n_forward_evals"], s["n_sequential_forward_evals"], s["n_forward_vjps"]) == (0, 0, 0)
    assert len(solver.history_) == N


@pytest.mark.parametrize("dense_max", [4096, 1], ids=["dense", "conjugate-gradients"])
def test_diffpir_proximal_step_equals_a_numpy_solve(dense_max):
    """One step from sigma_max to 0 is exactly prox(D(sigma_max z)); checked against numpy.linalg.solve."""
    case, problem, y = linear_case()
    J, lam, smax, seed = 5, 2.5, 80.0, 3
    solver = DiffPIRSolver(
        case["prior"],
        n_particles=J,
        n_steps=1,
        lam=lam,
        dense_max=dense_max,
        random_state=seed,
        verbose=False,
    )
    out = to_numpy(solver.fit(y, problem).particles_)
    z = np.random.default_rng(stream_seed(seed, "solver")).standard_normal((J, 8))
    x0 = to_numpy(case["prior"].denoise(smax * z, smax))
    A, rho = case["A"], lam / smax**2
    lhs = A.T @ A / NOISE**2 + rho * np.eye(8)
    rhs = (A.T @ y / NOISE**2)[None, :] + rho * x0
    expected = np.linalg.solve(lhs, rhs.T).T
    np.testing.assert_allclose(out, expected, rtol=1e-7, atol=1e-9)
    if dense_max == 1:
        assert solver.data_step_ == "closed-form-cg" and solver.stats_["n_forward_evals"] > 0


def test_diffpir_paper_gradient_step_equals_the_analytic_gradient():
    """grad_step='paper': x0 - sigma^2/lam * A^T (A x0 - y) / noise^2, the gradient by torch autograd."""
    pytest.importorskip("torch")
    case, problem, y = linear_case()
    J, lam, smax, seed = 4, 3.0, 5.0, 1
    solver = DiffPIRSolver(
        case["prior"],
        n_particles=J,
        n_steps=1,
        lam=lam,
        sigma_max=smax,
        data_step="gradient",
        grad_step="paper",
        random_state=seed,
        verbose=False,
    )
    out = to_numpy(solver.fit(y, problem).particles_)
    z = np.random.default_rng(stream_seed(seed, "solver")).standard_normal((J, 8))
    x0 = to_numpy(case["prior"].denoise(smax * z, smax))
    A = case["A"]
    expected = x0 - smax**2 / lam * ((x0 @ A.T - y) @ A) / NOISE**2
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    assert solver.stats_["n_forward_evals"] == J and solver.stats_["n_forward_vjps"] == J


def test_diffpir_gradient_step_on_a_linear_problem(xp, to_xp):
    """The non-linear path (line step) works through torch and beats the prior mean; counts by formula."""
    pytest.importorskip("torch")
    case, problem, y = linear_case(xp, to_xp)
    J, N = 20, 30
    solver = DiffPIRSolver(
        case["prior"], n_particles=J, n_steps=N, data_step="gradient", random_state=0, verbose=False
    )
    solver.fit(y, problem)
    err, prior_err, _ = scores(solver, case)
    assert np.isfinite(err) and err < 0.5 * prior_err
    s = solver.stats_
    # one autograd gradient (forward + VJP) and one forward probe for the curvature per step
    assert (s["n_forward_evals"], s["n_sequential_forward_evals"], s["n_forward_vjps"]) == (
        2 * J * N,
        2 * N,
        J * N,
    )
    assert s["n_denoiser_evals"] == J * N and s["n_denoiser_vjps"] == 0
    formula = solver.expected_evaluations(data_step="gradient")
    assert {k: s[k] for k in formula} == formula


def test_diffpir_closed_form_on_a_non_linear_problem_is_refused():
    case, _, y = linear_case()
    fn = CallableProblem(lambda X: X[:, :4] ** 2, (8,), (4,), NOISE, differentiable=True)
    with pytest.raises(ValueError, match="LinearOperatorProblem"):
        DiffPIRSolver(case["prior"], data_step="closed-form", verbose=False).fit(y, fn)


@pytest.mark.parametrize("make", [DiffPIRSolver, RMPSolver], ids=["DiffPIR", "RMP"])
def test_non_differentiable_forward_is_refused_before_any_work(make):
    case, _, y = linear_case()
    prior = CountingPrior(case["prior"])
    A = case["A"]
    with pytest.raises(ValueError, match="EnKGSolver") as info:
        make(prior, n_particles=4, n_steps=5, verbose=False).fit(y, lambda X: X @ A.T, noise_std=NOISE)
    assert "EKISolver" in str(info.value) and "not differentiable" in str(info.value)
    assert prior.calls == 0


def failing_forward(A, bad_call, bad_row):
    """A differentiable linear forward whose ``bad_call``-th call returns NaN for one row."""
    calls = {"n": 0}

    def fn(X):
        calls["n"] += 1
        out = X @ A.T if not hasattr(X, "detach") else X @ X.new_tensor(A.T)
        if calls["n"] == bad_call:
            mask = np.ones((X.shape[0], 1))
            mask[bad_row] = np.nan
            out = out * (out.new_tensor(mask) if hasattr(out, "new_tensor") else mask)
        return out

    return CallableProblem(fn, (8,), (4,), NOISE, differentiable=True)


@pytest.mark.parametrize("make", [DiffPIRSolver, RMPSolver], ids=["DiffPIR", "RMP"])
def test_failure_policy(make):
    pytest.importorskip("torch")
    case, _, y = linear_case()
    kw = dict(n_particles=6, n_steps=6, random_state=0, verbose=False)
    with pytest.raises(MemberFailureError) as info:
        make(case["prior"], **kw).fit(y, failing_forward(case["A"], 3, 2))
    assert info.value.members == [2]
    solver = make(case["prior"], on_failure="resample", **kw).fit(y, failing_forward(case["A"], 3, 2))
    assert solver.stats_["n_failed"] == 1
    assert np.all(np.isfinite(to_numpy(solver.particles_)))


@pytest.mark.parametrize("make", [DiffPIRSolver, RMPSolver], ids=["DiffPIR", "RMP"])
def test_seeded_runs_repeat(make):
    pytest.importorskip("torch")
    case, problem, y = linear_case()
    a = make(case["prior"], n_particles=4, n_steps=8, random_state=7, verbose=False).fit(y, problem)
    b = make(case["prior"], n_particles=4, n_steps=8, random_state=7, verbose=False).fit(y, problem)
    np.testing.assert_array_equal(to_numpy(a.reconstruct()), to_numpy(b.reconstruct()))


@pytest.mark.parametrize(
    "make, bad",
    [
        (DiffPIRSolver, dict(zeta=1.5)),
        (DiffPIRSolver, dict(lam=0.0)),
        (DiffPIRSolver, dict(data_step="exact")),
        (DiffPIRSolver, dict(grad_step="newton")),
        (RMPSolver, dict(n_inner=0)),
        (RMPSolver, dict(step_size=2.0)),
        (RMPSolver, dict(mean_step="adam")),
        (RMPSolver, dict(trust_radius=0.0)),
        (RMPSolver, dict(n_steps=1)),
    ],
)
def test_bad_parameters_name_the_argument(make, bad):
    case, problem, y = linear_case()
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        make(case["prior"], verbose=False, **bad).fit(y, problem)


# --------------------------------------------------------------------------
# RMP
# --------------------------------------------------------------------------


def rmp_reference(mu, S, A, y, noise, sigmas):
    """RMP with each step's Gaussian target solved exactly (numpy), same approximations as the paper.

    The target of step sigma -> s is N(m; x, delta) p_s(x) N(y; A D_s(x), noise^2 I) with the
    exact Gaussian denoiser D_s(x) = K x + (I - K) mu, K = S (S + s^2)^{-1}: a Gaussian in x.
    """
    d = mu.size
    m = np.zeros(d)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        delta = s**2 - s_next**2
        C = np.linalg.inv(S + s_next**2 * np.eye(d))
        K = S @ C
        b = mu - K @ mu
        H = np.eye(d) / delta + C + K.T @ A.T @ A @ K / noise**2
        g = m / delta + C @ mu + K.T @ A.T @ (y - A @ b) / noise**2
        m = np.linalg.solve(H, g)
    return m


def test_rmp_linear_gaussian_matches_its_exact_inner_solution(xp, to_xp):
    pytest.importorskip("torch")
    d, m_obs = 8, 4
    rng = np.random.default_rng(11)
    mu = rng.standard_normal(d)
    S = random_spd(d, rng)
    A = rng.standard_normal((m_obs, d)) / np.sqrt(d)
    y = A @ rng.multivariate_normal(mu, S) + NOISE * rng.standard_normal(m_obs)
    post = mu + S @ A.T @ np.linalg.solve(A @ S @ A.T + NOISE**2 * np.eye(m_obs), y - A @ mu)
    prior = kd.priors.GaussianPrior(mu, S)
    problem = kd.problems.LinearProblem(A, (d,), NOISE)

    N, n_inner, J = 30, 5, 2
    solver = RMPSolver(prior, n_particles=J, n_steps=N, n_inner=n_inner, random_state=0, verbose=False)
    x_hat = to_numpy(solver.fit(to_xp(y, xp, dtype=xp.float64), problem).reconstruct())
    ref = rmp_reference(mu, S, A, y, NOISE, edm_sigma_schedule(N, append_zero=False))

    assert np.all(np.isfinite(x_hat))
    err = np.linalg.norm(x_hat - post) / np.linalg.norm(post)
    prior_err = np.linalg.norm(mu - post) / np.linalg.norm(post)
    assert err < 0.5 * prior_err
    # the inner loop converges to what an exact solve of each step gives
    np.testing.assert_allclose(x_hat, ref, rtol=0, atol=0.02 * np.linalg.norm(post))
    seq = (N - 1) * n_inner * 2  # a score and a curvature probe per CG iteration
    s = solver.stats_
    assert (s["n_denoiser_evals"], s["n_sequential_denoiser_evals"]) == (J * seq, seq)
    assert (s["n_forward_evals"], s["n_sequential_forward_evals"]) == (J * seq, seq)
    assert s["n_forward_vjps"] == s["n_denoiser_vjps"] == J * seq
    assert len(solver.history_) == N - 1


def test_rmp_reference_with_the_exact_likelihood_gives_the_exact_posterior_mean():
    """The paper's central claim, checked in numpy: mean propagation is exact for linear-Gaussian problems.

    With the exact noised likelihood N(y; A D_s(x), A S_{0|s} A^T + noise^2) in place of the paper's
    N(y; A D_s(x), noise^2), the propagated mean lands on the posterior mean; the approximation's bias
    is what RMPSolver inherits.
    """
    d, m_obs = 8, 4
    rng = np.random.default_rng(11)
    mu, S = rng.standard_normal(d), random_spd(d, rng)
    A = rng.standard_normal((m_obs, d)) / np.sqrt(d)
    y = A @ rng.multivariate_normal(mu, S) + NOISE * rng.standard_normal(m_obs)
    post = mu + S @ A.T @ np.linalg.solve(A @ S @ A.T + NOISE**2 * np.eye(m_obs), y - A @ mu)
    m = np.zeros(d)
    sig = edm_sigma_schedule(30, append_zero=False)
    for s, s_next in zip(sig[:-1], sig[1:]):
        delta = s**2 - s_next**2
        C = np.linalg.inv(S + s_next**2 * np.eye(d))
        K = S @ C
        R = np.linalg.inv(NOISE**2 * np.eye(m_obs) + A @ (S - K @ S) @ A.T)
        H = np.eye(d) / delta + C + K.T @ A.T @ R @ A @ K
        m = np.linalg.solve(H, m / delta + C @ mu + K.T @ A.T @ R @ (y - A @ (mu - K @ mu)))
    assert np.linalg.norm(m - post) / np.linalg.norm(post) < 1e-3


def test_rmp_reconstruct_returns_the_propagated_mean():
    pytest.importorskip("torch")
    case, problem, y = linear_case()
    solver = RMPSolver(case["prior"], n_particles=3, n_steps=10, random_state=0, verbose=False).fit(
        y, problem
    )
    x_hat, x_std = solver.reconstruct(return_std=True)
    np.testing.assert_array_equal(to_numpy(x_hat), to_numpy(solver.mean_))
    assert x_std.shape == x_hat.shape and float(np.min(to_numpy(x_std))) > 0
    assert solver.particles_.shape == (3, 8)


def test_rmp_natural_mean_step_runs_on_a_well_conditioned_case():
    pytest.importorskip("torch")
    case = gaussian_case(8, 4, 0.5, seed=0)
    problem = kd.problems.LinearProblem(case["A"], (8,), 0.5)
    solver = RMPSolver(case["prior"], mean_step="natural", random_state=0, verbose=False)
    solver.fit(case["y"], problem)
    err, prior_err, _ = scores(solver, case)
    assert err < 0.5 * prior_err
    assert solver.stats_["n_sequential_forward_evals"] == (30 - 1) * 5


def test_torch_data_stay_in_torch():
    torch = pytest.importorskip("torch")
    case, problem, y = linear_case()
    yt = torch.as_tensor(y)
    solvers = [
        DiffPIRSolver(case["prior"], n_particles=4, n_steps=6, data_step="gradient", verbose=False),
        DiffPIRSolver(case["prior"], n_particles=4, n_steps=6, verbose=False),
        RMPSolver(case["prior"], n_particles=2, n_steps=6, verbose=False),
    ]
    for solver in solvers:
        x = solver.set_params(random_state=0).fit(yt, problem).reconstruct()
        assert isinstance(x, torch.Tensor) and bool(torch.all(torch.isfinite(x)))


def test_diffpir_conjugate_gradients_match_the_dense_solve_on_an_image_operator(xp, to_xp):
    """Super-resolution of a GRF image: the matrix-free CG data step equals the dense one."""
    prior = kd.priors.GaussianRandomFieldPrior((1, 16, 16), scale=1.0)
    problem = kd.problems.SuperResolution((1, 16, 16), factor=2, noise_std=0.05)
    x_true = prior.sample(1, random_state=0)[0]
    y = to_xp(problem.observe(x_true, random_state=1), xp, dtype=xp.float64)
    runs = {}
    for dense_max in (4096, 1):
        solver = DiffPIRSolver(
            prior, n_particles=3, n_steps=8, dense_max=dense_max, random_state=0, verbose=False
        )
        runs[dense_max] = solver.fit(y, problem)
    dense, cg = (to_numpy(runs[k].particles_) for k in (4096, 1))
    np.testing.assert_allclose(cg, dense, rtol=0, atol=1e-6 * np.abs(dense).max())
    s = runs[1].stats_
    assert runs[1].data_step_ == "closed-form-cg" and s["n_forward_evals"] == s["n_forward_vjps"] > 0
    assert runs[4096].stats_["n_forward_evals"] == 0
