"""Sphinx extension: the API page's solver tables, generated from kalmandiff's solver registry.

``.. registered-solvers::`` becomes an autosummary table of every solver
registered with :func:`kalmandiff.estimators.register_solver`, in the
registry's order; the option ``:derivative-free:`` or ``:gradient-based:``
keeps one kind.  The solvers' stub pages (``generated/kalmandiff.<Class>``)
are written at ``builder-inited``, as autosummary writes its own, because
autosummary only finds tables written out in the sources.  A new solver
module thus appears on the API page without an edit to ``api.rst``
(``tests/test_solver_registry.py`` checks that every registered solver does).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

#: folder of the stub pages, relative to the documentation sources (as ``:toctree:`` in api.rst)
TOCTREE = "generated"


def solver_names(derivative_free: bool | None = None) -> list[str]:
    """Full names (``kalmandiff.EnKGSolver``) of the registered solvers, optionally of one kind."""
    from kalmandiff.estimators import registered_solvers

    return [f"kalmandiff.{spec.cls.__name__}" for spec in registered_solvers(derivative_free)]


def autosummary_source(names: list[str]) -> str:
    """The reStructuredText of an autosummary table of ``names`` with stub pages."""
    head = [".. autosummary::", f"   :toctree: {TOCTREE}", "   :nosignatures:", ""]
    return "\n".join(head + [f"   {name}" for name in names]) + "\n"


class RegisteredSolvers(SphinxDirective):
    """``.. registered-solvers::`` [``:derivative-free:`` | ``:gradient-based:``]."""

    has_content = False
    option_spec = {"derivative-free": directives.flag, "gradient-based": directives.flag}

    def run(self):
        if "derivative-free" in self.options and "gradient-based" in self.options:
            raise self.error("registered-solvers: choose :derivative-free: or :gradient-based:, not both.")
        kind = (
            True if "derivative-free" in self.options else False if "gradient-based" in self.options else None
        )
        names = solver_names(kind)
        if not names:
            return []
        # Relative to the current module, as autosummary wants them (the stub pages keep the full names).
        prefix = f"{self.env.ref_context.get('py:module') or ''}."
        names = [name.removeprefix(prefix) for name in names]
        return self.parse_text_to_nodes(autosummary_source(names))


def generate_stub_pages(app) -> None:
    """Write the stub page of every registered solver (autosummary's generator and templates)."""
    if not app.config.autosummary_generate:
        return
    from sphinx.ext.autosummary.generate import generate_autosummary_docs

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "registered_solvers.rst"
        source.write_text(autosummary_source(solver_names()), encoding="utf-8")
        generate_autosummary_docs(
            [str(source)],
            output_dir=Path(app.srcdir) / TOCTREE,
            suffix=".rst",
            app=app,
            imported_members=app.config.autosummary_imported_members,
            overwrite=app.config.autosummary_generate_overwrite,
        )


def setup(app):
    app.setup_extension("sphinx.ext.autosummary")
    app.add_directive("registered-solvers", RegisteredSolvers)
    app.connect("builder-inited", generate_stub_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
