"""A solver written outside kalmandiff: tempered ensemble Kalman inversion, passing check_solver."""

import numpy as np

from kalmandiff.estimators import POSITIVE_INT, BaseSolver, ForwardRequest, SafePoint, solver_parameters


@solver_parameters  # the annotated attributes below are the parameters (plus BaseSolver's)
class TemperedEKI(BaseSolver):
    """Ensemble Kalman inversion in ``n_iter`` equal tempered steps, with perturbed observations.

    Parameters
    ----------
    prior : Prior
    n_particles : int, default 32
    n_iter : int, default 4
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
            ok = ctx.handle_failures(failed)  # on_failure: raise, or resample failed members
            Xg, Gg = ctx.take_ok(X, ok), ctx.take_ok(G, ok)
            n = Xg.shape[0]
            dX, dG = Xg - xp.mean(Xg, axis=0), Gg - xp.mean(Gg, axis=0)
            noise = ctx.rng.normal((n, Gg.shape[1]), like=ctx.y_flat) * float(self.n_iter) ** 0.5
            K = xp.linalg.solve(dG.T @ dG / (n - 1) + R, (ctx.y_flat + noise * std - Gg).T)
            X = ctx.merge_successes(X, Xg + (dX.T @ dG / (n - 1) @ K).T, ok)
            it += 1
            ctx.record(step=it - 1, misfit=ctx.misfit(Gg), spread=ctx.spread(X))
        return xp.reshape(X, (J, *ctx.x_shape))
