"""The exception a check raises when it does not apply (its own module: every check module reads it)."""

__all__ = ["SkipCheck"]


class SkipCheck(Exception):
    """Raised by a check that does not apply to the solver (e.g. ask/tell for a solver without ``start``)."""
