"""The documentation builds with warnings as errors, executing every gallery example.

The sources (``docs/`` and ``examples/``) are copied to a temporary directory first, so
the build's generated files never land in the checkout.  Skipped when the docs extra
(sphinx, sphinx-gallery, numpydoc, myst-parser, pydata-sphinx-theme) is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_MODULES = ("sphinx", "sphinx_gallery", "numpydoc", "myst_parser", "pydata_sphinx_theme", "matplotlib")
MISSING = [m for m in DOCS_MODULES if importlib.util.find_spec(m) is None]

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"docs extra not installed: {', '.join(MISSING)}")


def _copy_sources(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("_build", "generated", "auto_examples", "__pycache__", "*.pyc")
    shutil.copytree(ROOT / "docs", dest / "docs", ignore=ignore)
    shutil.copytree(ROOT / "examples", dest / "examples", ignore=ignore)
    return dest / "docs"


def test_examples_are_gallery_scripts():
    """Every example is a ``plot_*.py`` script with a titled docstring, so the gallery runs it."""
    scripts = sorted((ROOT / "examples").glob("*.py"))
    assert scripts, "no examples found"
    for path in scripts:
        assert path.name.startswith("plot_"), f"{path.name} would not be executed by sphinx-gallery"
        lines = path.read_text().split('"""')[1].strip().splitlines()
        assert len(lines) >= 2 and set(lines[1]) == {"="} and len(lines[1]) >= len(lines[0]), path.name


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    """``sphinx-build -W`` succeeds: API pages render, markdown pages parse, examples run."""
    src = _copy_sources(tmp_path)
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(src), str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    pages = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    for page in (
        "index.html",
        "quickstart.html",
        "design.html",
        "api.html",
        "benchmarks.html",
        "scaling.html",
    ):
        assert page in pages, f"{page} missing from the build"
    examples = sorted(p.stem for p in (ROOT / "examples").glob("plot_*.py"))
    for name in examples:
        html = (out / "auto_examples" / f"{name}.html").read_text()
        # an executed example embeds its figures; a failed one would have stopped the build
        assert f"sphx_glr_{name}_001.png" in html, f"{name} produced no figure"
    # the solver tables of the API page come from the registry: a page for every registered solver
    from kalmandiff.estimators import registered_solvers

    api = (out / "api.html").read_text()
    for spec in registered_solvers():
        page = f"kalmandiff.{spec.cls.__name__}.html"
        assert (out / "generated" / page).exists() and page in api, (
            f"{spec.cls.__name__} missing from the API page"
        )
