"""Atomic checkpoints of a solver's state, so a killed run resumes where it stopped.

A checkpoint is one pickle file holding the solver's loop state (particles as
NumPy arrays, step index), every random generator's state, the accounting
and the history, plus a fingerprint of what must match for a resume to be
valid: the solver class, its parameters (except ``random_state``, whose
generator state is restored instead, and the display options), the prior's
type and shape, and the data ``y``.  Files are written to a temporary name
in the same folder, flushed to disk and renamed over the old one, so a
process that dies mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .._backend import to_numpy
from ._params import POSITIVE_INT

__all__ = ["CheckpointStore", "fingerprint"]

_FORMAT = 1
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

    def __init__(self, path, every: int, expected: dict[str, Any]):
        if not POSITIVE_INT.is_satisfied_by(every):
            raise ValueError(f"checkpoint_every must be a positive int (got {every!r}).")
        self.path = Path(path)
        self.every = int(every)
        self.expected = expected

    def load(self) -> dict[str, Any] | None:
        """The saved payload if the file exists and matches this run; None if there is no file."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as fh:
            payload = pickle.load(fh)
        if payload.get("format") != _FORMAT:
            raise ValueError(f"{self.path} is not a kalmandiff checkpoint of format {_FORMAT}.")
        found = payload["fingerprint"]
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
        return payload

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
            "format": _FORMAT,
            "fingerprint": self.expected,
            "state": {k: _host(v) for k, v in state.items()},
            "rng": rng_state,
            "counters": counters,
            "elapsed_s": elapsed_s,
            "history": history,
            "done": done,
        }
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def _host(value):
    """Arrays go to NumPy (CuPy/torch/strict arrays are not portable pickles), also inside dicts;
    scalars stay."""
    if isinstance(value, dict):
        return {k: _host(v) for k, v in value.items()}
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return np.array(to_numpy(value), copy=True)
    return value
