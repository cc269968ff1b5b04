"""The member-failure policy: what a run does when the forward model fails for some members.

A member fails when its forward evaluation raised or came back non-finite
(:class:`~kalmandiff.estimators._evaluation.ForwardEvaluator` decides).
``on_failure="raise"`` stops with :class:`MemberFailureError`, naming the
members and the problem's reasons (:meth:`ForwardProblem.member_failures`);
``"resample"`` updates the successful members and redraws the failed ones
from the successful ones' Gaussian.  :meth:`FailurePolicy.update` does all
of it in one call.
"""

from __future__ import annotations

import warnings

import numpy as np

from .._backend import asarray_like
from ._ensemble import redraw_from_ensemble
from ._protocol import MemberFailureError

__all__ = ["FAILURE_POLICIES", "FailurePolicy"]

#: the values of every solver's ``on_failure``
FAILURE_POLICIES = ("raise", "resample")


class FailurePolicy:
    """``on_failure`` applied to one run.

    Parameters
    ----------
    policy : {"raise", "resample"}
    problem : ForwardProblem
        Asked for the reasons of failed members.
    acct : Accounting
        Counts the failed members (``stats_["n_failed"]``).
    rng : RandomSource
        Redraws failed members.
    xp : namespace of the computation
    """

    def __init__(self, policy: str, problem, acct, rng, xp):
        self.policy = policy
        self.problem = problem
        self.acct = acct
        self.rng = rng
        self.xp = xp

    def update(self, X_flat, G, failed: np.ndarray, rule):
        """The ensemble after ``rule``, given forward values and failures: the policy in one call.

        Parameters
        ----------
        X_flat : array ``(J, d)``
        G : array ``(J, m)``
        failed : bool ndarray ``(J,)``
        rule : callable
            ``rule(X_ok, G_ok) -> (X_ok_new, info)`` on the successful members' rows.

        Returns
        -------
        X_new : array ``(J, d)``
            Updated successful members in their places, failed ones redrawn.
        info
            What ``rule`` returned beside the members.
        """
        ok = self.check(failed)
        X_ok, info = rule(self.take_ok(X_flat, ok), self.take_ok(G, ok))
        return self.merge(X_flat, X_ok, ok), info

    def check(self, failed: np.ndarray) -> np.ndarray:
        """Count failed members and apply the policy (raise, or warn past half); the mask of successes."""
        n_bad = int(failed.sum())
        if n_bad == 0:
            return ~failed
        self.acct.n_failed += n_bad
        members = [int(i) for i in np.flatnonzero(failed)]
        if self.policy == "raise":
            raise MemberFailureError(self._failure_message(members, failed.size), members)
        n_ok = failed.size - n_bad
        if n_ok < 2:
            raise RuntimeError(
                f"only {n_ok} of {failed.size} members have a finite forward value; at least two are needed."
            )
        if n_bad > failed.size / 2:
            warnings.warn(
                f"{n_bad} of {failed.size} members failed in one evaluation.", RuntimeWarning, stacklevel=4
            )
        return ~failed

    def _failure_message(self, members: list[int], n: int) -> str:
        reasons = self.problem.member_failures() if hasattr(self.problem, "member_failures") else {}
        why = "; ".join(f"member {j}: {reasons[j]}" for j in members[:5] if j in reasons)
        n_bad = len(members)
        return (
            f"the forward model failed for {n_bad} of {n} members: "
            f"{members[:20]}{' ...' if n_bad > 20 else ''}{' (' + why + ')' if why else ''}. "
            "Use on_failure='resample' to carry on with the successful members."
        )

    def take_ok(self, A, ok: np.ndarray):
        """Rows of ``A`` where ``ok`` is True."""
        if ok.all():
            return A
        return self.xp.take(A, asarray_like(np.flatnonzero(ok), A, dtype=self.xp.int64), axis=0)

    def merge(self, X_flat, X_ok, ok: np.ndarray):
        """Put updated successful members ``X_ok`` back in order; redraw the failed ones.

        ``X_flat`` is the ensemble before the update (``(J, d)``), ``X_ok``
        the update of its rows where ``ok`` is True.
        """
        if ok.all():
            return X_ok
        xp = self.xp
        J, n_ok = ok.size, int(ok.sum())
        pos = np.empty(J, dtype=np.int64)
        pos[ok] = np.arange(n_ok)
        pos[~ok] = n_ok + np.flatnonzero(~ok)
        full = xp.take(xp.concat([X_ok, X_flat], axis=0), asarray_like(pos, X_flat, dtype=xp.int64), axis=0)
        return self.resample(full, ok)

    def resample(self, X_flat, ok: np.ndarray):
        """Redraw failed members (rows where ``ok`` is False) from the successful ones' Gaussian."""
        if ok.all():
            return X_flat
        xp = self.xp
        J = X_flat.shape[0]
        good = xp.take(X_flat, asarray_like(np.flatnonzero(ok), X_flat, dtype=xp.int64), axis=0)
        new = redraw_from_ensemble(good, int((~ok).sum()), self.rng)
        # Row j comes from X_flat[j] when it succeeded, else from the next redrawn row.
        source = np.arange(J)
        source[~ok] = J + np.arange(int((~ok).sum()))
        stacked = xp.concat([X_flat, new], axis=0)
        return xp.take(stacked, asarray_like(source, X_flat, dtype=xp.int64), axis=0)
