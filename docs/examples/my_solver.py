"""A solver written outside kalmandiff: tempered ensemble Kalman inversion, passing check_solver."""

import numpy as np

from kalmandiff.estimators import POSITIVE_INT, BaseSolver, ForwardRequest, SafePoint, solver_parameters


def tempered_step(ctx, X, G, std, R, n_iter):
    # one tempered Kalman step of the successful members X (n, d) given their G (n, m)
    xp, n = ctx.xp, X.shape[0]
    dX, dG = X - xp.mean(X, axis=0), G - xp.mean(G, axis=0)
    noise = ctx.rng.normal((n, G.shape[1]), like=ctx.y_flat) * float(n_iter) ** 0.5
    K = xp.linalg.solve(dG.T @ dG / (n - 1) + R, (ctx.y_flat + noise * std - G).T)
    return X + (dX.T @ dG / (n - 1) @ K).T, ctx.misfit(G)  # the one misfit definition


@solver_parameters  # the annotated attributes below are the parameters (plus BaseSolver's)
class TemperedEKI(BaseSolver):
    """Ensemble Kalman inversion in ``n_iter`` equal tempered steps, with perturbed observations.

    Parameters: ``prior``, ``n_particles`` (default 32), ``n_iter`` (default 4).
    """

    n_particles: int = 32
    n_iter: int = 4
    calibrated_when = True  # ES-MDA's ensemble samples a linear-Gaussian posterior: check_solver checks it
    _param_constraints = {"n_iter": [POSITIVE_INT]}

    def _iterate(self, ctx, state):
        xp, J = ctx.xp, int(self.n_particles)
        if state is not None and "final" in state:  # resumed from a finished checkpoint
            return state["final"]
        std = ctx.positive_noise_std("kalman")  # (m,); refuses noiseless data
        if state is None:
            X = self.prior.sample(J, random_state=ctx.rng.numpy, like=ctx.like())
            X, it = xp.reshape(xp.asarray(X, dtype=ctx.y.dtype), (J, -1)), 0
        else:
            X, it = state["X"], state["it"]
        R = xp.asarray(np.diag(self.n_iter * np.asarray(std) ** 2), dtype=ctx.y.dtype)
        while it < self.n_iter:
            yield SafePoint(it, {"X": X, "it": it})  # checkpoints are written here
            G, failed = yield ForwardRequest(xp.reshape(X, (J, *ctx.x_shape)))
            # on_failure in one call: the rule moves the successful members; failed ones raise or are redrawn
            X, misfit = ctx.failures.update(
                X, G, failed, lambda Xg, Gg: tempered_step(ctx, Xg, Gg, std, R, self.n_iter)
            )
            it += 1
            ctx.record(step=it - 1, misfit=misfit, spread=ctx.spread(X))
        return xp.reshape(X, (J, *ctx.x_shape))
