"""Sphinx configuration of the kalmandiff documentation.

Build with ``docs/build.sh`` (or ``sphinx-build -W -b html docs docs/_build/html``).
The gallery scripts in ``examples/`` are executed on every build, so a broken
example fails the build rather than rotting.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # gallery scripts draw off-screen

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # the package from this checkout, even when not installed
sys.path.insert(0, str(HERE / "_ext"))  # the project's own Sphinx extensions

import kalmandiff  # noqa: E402  (after the path is set)

project = "kalmandiff"
author = "kalmandiff developers"
copyright = "kalmandiff developers"  # noqa: A001 - Sphinx's name
release = kalmandiff.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "registered_solvers",  # docs/_ext: the API page's solver tables, from the solver registry
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "notebooks", "**.ipynb_checkpoints", "auto_examples/*.ipynb"]
templates_path = ["_templates"]

# -- API reference ------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
# Show what a class inherits from kalmandiff's own bases (fit, reconstruct, observe...),
# not what it inherits from scikit-learn, exceptions or builtins.
autodoc_default_options = {
    "members": True,
    "inherited-members": "BaseEstimator,BaseException,object,tuple,dict",
    "show-inheritance": True,
}
autodoc_typehints = "none"  # numpydoc sections already give the types
numpydoc_show_class_members = False  # autosummary lists them; avoids duplicate-toctree warnings
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()  # content checks are ruff's and reviewers' job; keep -W about rendering

# No network during the build: intersphinx only resolves against inventories
# already cached, and a missing one is not an error.
intersphinx_mapping = {}

# -- Markdown pages (benchmarks.md, scaling.md) --------------------------------
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# -- Gallery -------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",  # execute every plot_*.py
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "min_reported_time": 1,
    # Show what the examples print, not the repr of their last expression (lists of axes).
    "capture_repr": (),
}

# -- HTML -------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"kalmandiff {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    # Gallery pages get the full width for code and output (named pages, not a second
    # wildcard: pydata-sphinx-theme warns when two wildcards match one page).
    "secondary_sidebar_items": {
        "**": ["page-toc"],
        "auto_examples/index": [],
        **{f"auto_examples/{p.stem}": [] for p in (ROOT / "examples").glob("plot_*.py")},
    },
    "header_links_before_dropdown": 6,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}


# -- Docstring hooks -------------------------------------------------------------
# A star-argument inside a shape, as in ``(n, *event_shape)``: a lone ``*`` that docutils
# would read as the start of emphasis.
_SHAPE_STAR = re.compile(r"(?<=[(\s,])\*(?=[A-Za-z_]\w*[,)])")


def _escape_star_in_shapes(app, what, name, obj, options, lines):
    """Escape ``*`` in shapes written outside literals (``x : array, shape (n, *event_shape)``).

    numpydoc copies type fields into reStructuredText as they are, where a lone
    ``*`` starts emphasis; the docstrings read better unescaped in the source.
    """
    for i, line in enumerate(lines):
        if "*" not in line:
            continue
        parts = line.split("``")
        parts[::2] = [_SHAPE_STAR.sub(r"\\*", part) for part in parts[::2]]
        lines[i] = "``".join(parts)


def _skip_sklearn_routing(app, what, name, obj, skip, options):
    """Hide ``__init__`` and what scikit-learn adds (``get_params``, metadata-routing methods)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    if name == "__init__":  # its parameters are in the class docstring
        return True
    if (getattr(obj, "__module__", None) or "").startswith("sklearn."):  # get_params, routing...
        return True
    return None


def setup(app):
    # Before numpydoc (priority 500) turns the sections into reStructuredText.
    app.connect("autodoc-process-docstring", _escape_star_in_shapes, priority=400)
    app.connect("autodoc-skip-member", _skip_sklearn_routing)
