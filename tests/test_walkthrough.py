"""The notebook walkthrough (jupytext percent format) runs from top to bottom."""

import os
import runpy
from pathlib import Path

import pytest

WALKTHROUGH = Path(__file__).parents[1] / "docs" / "notebooks" / "walkthrough.py"


@pytest.mark.slow
def test_walkthrough_executes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(WALKTHROUGH), run_name="__main__")
    out = capsys.readouterr().out
    assert "ask/tell reproduces fit: True" in out
    for name in ("walkthrough_uncertainty.png", "walkthrough_history.png", "walkthrough_solver.pkl"):
        assert (tmp_path / name).stat().st_size > 0
    assert any(p.name.startswith("walkthrough_results") for p in tmp_path.iterdir())


def test_walkthrough_is_a_jupytext_notebook():
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(WALKTHROUGH)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds.count("markdown") >= 5 and kinds.count("code") >= 5
    assert os.path.splitext(WALKTHROUGH)[1] == ".py"
