"""Linear-Gaussian and Gaussian-mixture test problems with exact posteriors.

The exact posterior moments are computed here with textbook formulas, apart
from the solvers and priors under test.
"""

import numpy as np

import kalmandiff as kd


def random_spd(d, rng, lo=0.5, hi=2.0):
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (Q * rng.uniform(lo, hi, d)) @ Q.T


def gaussian_case(d, m, noise, seed=0):
    """Prior N(mu, S), y = A x + N(0, noise^2 I); returns prior, A, y, exact mean and std."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(d)
    S = random_spd(d, rng)
    A = rng.standard_normal((m, d)) / np.sqrt(d)
    x = rng.multivariate_normal(mu, S)
    y = A @ x + noise * rng.standard_normal(m)
    K = S @ A.T @ np.linalg.inv(A @ S @ A.T + noise**2 * np.eye(m))
    post_mean = mu + K @ (y - A @ mu)
    post_cov = S - K @ A @ S
    return dict(
        prior=kd.priors.GaussianPrior(mu, S),
        A=A,
        y=y,
        mean=post_mean,
        std=np.sqrt(np.diag(post_cov)),
        prior_mean=mu,
    )


def mixture_case(d, m, noise, seed=0, K=3, spread=2.0):
    """A K-component mixture prior with a linear observation and its exact posterior moments."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 1.5, K)
    w /= w.sum()
    means = spread * rng.standard_normal((K, d))
    covs = np.stack([random_spd(d, rng, 0.3, 1.0) for _ in range(K)])
    A = rng.standard_normal((m, d)) / np.sqrt(d)
    k = rng.choice(K, p=w)
    x = rng.multivariate_normal(means[k], covs[k])
    y = A @ x + noise * rng.standard_normal(m)
    R = noise**2 * np.eye(m)
    logw, ms, Cs = [], [], []
    for i in range(K):
        P = A @ covs[i] @ A.T + R
        r = y - A @ means[i]
        _, logdet = np.linalg.slogdet(P)
        logw.append(np.log(w[i]) - 0.5 * (r @ np.linalg.solve(P, r) + logdet))
        G = covs[i] @ A.T @ np.linalg.inv(P)
        ms.append(means[i] + G @ r)
        Cs.append(covs[i] - G @ A @ covs[i])
    logw = np.array(logw)
    wt = np.exp(logw - logw.max())
    wt /= wt.sum()
    mean = sum(wt[i] * ms[i] for i in range(K))
    second = sum(wt[i] * (Cs[i] + np.outer(ms[i], ms[i])) for i in range(K))
    cov = second - np.outer(mean, mean)
    prior = kd.priors.GaussianMixturePrior(w, means, covs)
    return dict(prior=prior, A=A, y=y, mean=mean, std=np.sqrt(np.diag(cov)), prior_mean=w @ means)


def scores(solver, case):
    """Relative posterior-mean error, the prior mean's error, and the spread ratio."""
    x_hat, x_std = solver.reconstruct(return_std=True)
    x_hat, x_std = np.asarray(x_hat), np.asarray(x_std)
    norm = np.linalg.norm(case["mean"])
    return (
        np.linalg.norm(x_hat - case["mean"]) / norm,
        np.linalg.norm(case["prior_mean"] - case["mean"]) / norm,
        float(np.mean(x_std) / np.mean(case["std"])),
    )
