"""Atomic checkpoints of a solver's state, so a killed run resumes where it stopped.

A checkpoint is one NumPy ``.npz`` archive (arrays as ``.npy`` entries, the
rest as JSON; read with ``allow_pickle=False``, so a checkpoint found in a
shared folder never runs code) holding the solver's loop state (particles as
NumPy arrays, step index), every random generator's state, the accounting
and the history, plus a fingerprint of what must match for a resume to be
valid: the solver class, its parameters (except ``random_state``, whose
generator state is restored instead, and the display options), the prior's
type and shape, and the data ``y``.  Files are written to a temporary name
in the same folder, flushed to disk and renamed over the old one, so a
process that dies mid-write leaves the previous checkpoint intact.

What a run does with an existing file is its ``resume`` policy
(:data:`RESUME_POLICIES`): ``"auto"`` resumes a matching checkpoint and
refuses any other file; ``"if_valid"`` resumes a matching checkpoint and
starts afresh, with a warning, over one that is damaged, foreign or of
another run; ``"never"`` starts afresh.  A fresh start overwrites the file
at its first save.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .._backend import to_numpy
from .._files import read_archive, write_archive
from ._params import POSITIVE_INT

__all__ = ["CheckpointStore", "fingerprint", "RESUME_POLICIES"]

#: what ``fit(..., checkpoint=path, resume=...)`` does with an existing file
RESUME_POLICIES = ("auto", "if_valid", "never")
# Parameters that may differ between a run and its resume.
_FREE = {"random_state", "verbose", "callbacks", "prior", "device", "batch_size", "forward_batch_size"}


def fingerprint(solver, y) -> dict[str, Any]:
    """What a checkpoint must agree on with the run that resumes from it."""
    params = {k: repr(v) for k, v in sorted(solver.get_params(deep=False).items()) if k not in _FREE}
    prior = solver.prior
    y_np = np.ascontiguousarray(to_numpy(y))
    return {
        "solver": type(solver).__name__,
        "params": params,
        "prior": f"{type(prior).__name__}{tuple(getattr(prior, 'event_shape', ()))}",
        "y": hashlib.sha256(y_np.tobytes()).hexdigest() + str(y_np.dtype) + str(y_np.shape),
    }


class CheckpointStore:
    """Read and write one solver's checkpoint file.

    Parameters
    ----------
    path : str or os.PathLike
    every : int
        Save at every ``every``-th safe point (steps for EnKG, iterations
        for EKI) and at the end.
    expected : dict
        The :func:`fingerprint` of the current run.
    """

    def __init__(self, path, every: int, expected: dict[str, Any], resume: str = "auto"):
        if not POSITIVE_INT.is_satisfied_by(every):
            raise ValueError(f"checkpoint_every must be a positive int (got {every!r}).")
        if resume not in RESUME_POLICIES:
            raise ValueError(f"resume must be one of {RESUME_POLICIES} (got {resume!r}).")
        self.path = Path(path)
        self.every = int(every)
        self.expected = expected
        self.resume = resume

    def load(self) -> dict[str, Any] | None:
        """The saved payload if the file exists and matches this run; None if there is none, or if the
        policy starts afresh over it."""
        if self.resume == "never" or not self.path.exists():
            return None
        try:
            payload = read_archive(self.path, ("checkpoint",), "kalmandiff checkpoint")[1]
            self._check_fingerprint(payload)
        except ValueError as exc:
            if self.resume == "if_valid":
                warnings.warn(f"starting afresh over {self.path}: {exc}", RuntimeWarning, stacklevel=5)
                return None
            raise ValueError(
                f"{exc} To start afresh over it (it is overwritten at the first checkpoint), pass "
                "resume='never' (or resume='if_valid': resume only a matching checkpoint)."
            ) from exc
        return payload

    def _check_fingerprint(self, payload: dict) -> None:
        found = payload.get("fingerprint") if isinstance(payload, dict) else None
        if not isinstance(found, dict):
            raise ValueError(f"{self.path} is a kalmandiff checkpoint without a fingerprint (damaged).")
        diff = [k for k in self.expected if found.get(k) != self.expected[k]]
        if diff:
            details = []
            if "params" in diff:
                keys = set(found["params"]) | set(self.expected["params"])
                details = [
                    k for k in sorted(keys) if found["params"].get(k) != self.expected["params"].get(k)
                ]
            raise ValueError(
                f"the checkpoint {self.path} belongs to another run (differs in: {', '.join(diff)}"
                f"{' ' + str(details) if details else ''}). Delete it or choose another path."
            )

    def due(self, index: int) -> bool:
        return index % self.every == 0

    def save(
        self,
        state: dict[str, Any],
        rng_state: dict,
        counters: dict,
        elapsed_s: float,
        history: list,
        done: bool = False,
    ) -> None:
        """Write the payload atomically: a temporary file in the same folder, then a rename."""
        payload = {
            "fingerprint": self.expected,
            "state": {k: _host(v) for k, v in state.items()},
            "rng": rng_state,
            "counters": counters,
            "elapsed_s": elapsed_s,
            "history": history,
            "done": done,
        }
        write_archive(self.path, "checkpoint", payload)


def _host(value):
    """Arrays go to NumPy (CuPy/torch/strict arrays are not portable), also inside dicts; scalars stay."""
    if isinstance(value, dict):
        return {k: _host(v) for k, v in value.items()}
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return np.array(to_numpy(value), copy=True)
    return value
