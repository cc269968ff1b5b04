"""Docstring templating: the parameter blocks every solver's docstring shares.

:func:`fill_docstring` runs at registration (:func:`~kalmandiff.estimators.register_solver`),
so a solver's docstring writes ``%(shared)s`` (and a family's ``%(common)s``)
instead of repeating them.
"""

from __future__ import annotations

__all__ = ["SHARED_PARAMETERS", "fill_docstring"]


#: The parameters every solver shares, one block for every solver's docstring (``%(shared)s``).
SHARED_PARAMETERS = """forward_batch_size : int or None, default None
        Forward-model chunk size (None: every evaluation of a step in one call).
    nan_tolerance : float, default 0.0
        An evaluation fails when more than this fraction of its outputs is
        not finite; isolated non-finite entries of the others are imputed
        with the successful members' mean of that datum.
    device : {None, "cpu", "cuda"}, default None
        Where the computation runs; None follows ``y``.
    random_state : None, int or numpy.random.Generator
        Seeds the solver's own random stream (independent of a problem
        instance's truth and noise given the same integer).
    verbose : bool or "auto", default "auto"
        Progress bar (on in terminals and notebooks, off under CI/pytest).
    callbacks : list of callables, optional
        Each receives the per-step record (see ``history_``); returning True
        (or raising StopIteration) stops the run."""


def fill_docstring(cls):
    """Insert the shared parameter blocks at ``%(common)s`` (a family's, e.g. the guided
    solvers') and ``%(shared)s`` in a solver's docstring."""
    doc = cls.__doc__ or ""
    common = getattr(cls, "_COMMON_PARAMETERS_DOC", None)
    if common is not None:
        doc = doc.replace("%(common)s", common)
    cls.__doc__ = doc.replace("%(shared)s", SHARED_PARAMETERS)
    return cls
