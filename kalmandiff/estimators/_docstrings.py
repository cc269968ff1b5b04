"""Docstring templating: the parameter blocks every solver's docstring shares.

:func:`fill_docstring` runs at registration (:func:`~kalmandiff.estimators.register_solver`),
so a solver's docstring writes ``%(shared)s`` (and a family's ``%(common)s``)
instead of repeating them.
"""

from __future__ import annotations

__all__ = ["SHARED_PARAMETERS", "GUIDED_PARAMETERS", "fill_docstring"]


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


#: The parameters every guided (VP-family) solver shares, for their docstrings (``%(common)s``).
GUIDED_PARAMETERS = """n_particles : int, default 1
        Number ``P`` of independent samples run side by side (the reference
        runs one); :meth:`reconstruct` returns their mean and spread.
    n_steps : int, default 1000
        Number ``N`` of reverse VP-SDE steps (the reference's 1000).
    beta_d, beta_min : float, default 19.9, 0.1
        VP noise schedule, ``sigma(t) = sqrt(exp(beta_d t**2/2 + beta_min t) - 1)``.
    t_min : float, default 1e-3
        Last grid time (times run linearly from 1 to ``t_min``).
    sigma_final : float, default 0.01
        Noise level reached by the last step, in units of ``data_scale``.
    data_scale : float or "auto", default "auto"
        Unit ``c`` of the noise schedule: the sampler walks the reference's
        schedule on ``x / c`` (noise levels ``c sigma(t)``, injected noise
        variances times ``c**2``).  The reference assumes ``c = 1``, data of
        unit scale (images in [-1, 1]); on data of another scale it ends at
        the wrong noise level (a black hole in Jy per pixel: the last noise
        level 0.01 is 15 times the prior's pixel standard deviation, so a
        sample is mostly noise, whatever the guidance).  ``"auto"``: the
        prior's pointwise standard deviation ``sqrt(mean_k Var x_k)`` where
        the prior states its moments (Gaussian, Gaussian-mixture and
        Gaussian-random-field priors), else 1 (give a network prior the
        standard deviation of its training data); and 1 whenever a
        scale-carrying parameter (``guidance_scale``, GSG's ``mu``) is a
        number, so that a number keeps its reference meaning exactly.
        :meth:`resolved_data_scale` says which ``c`` a configuration uses.
    batch_size : int or None, default 64
        Denoiser chunk size (None: all at once).
    on_failure : {"raise", "resample"}, default "raise"
        ``"raise"`` stops with :class:`MemberFailureError` when forward
        evaluations fail; ``"resample"`` drops the failed queries from the
        step (a sample whose own evaluation fails takes an unguided step).
    %(shared)s"""
