"""``python -m benchmarks``: every study is listed, every name runs its module, one tiny run end to end."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as entry

ROOT = Path(__file__).resolve().parents[1]
STUDY_FILES = sorted(p.stem for p in (ROOT / "benchmarks" / "studies").glob("*.py") if p.stem != "__init__")


def test_list_names_every_study_file_and_the_harness():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--list"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    listed = {line.split()[0] for line in out.splitlines()}
    # the names are written out here, not derived with the code under test
    expected = {stem.removeprefix("bench_").replace("_", "-") for stem in STUDY_FILES} | {"run", "report"}
    assert listed == expected
    assert len(STUDY_FILES) >= 17  # the moves kept every study


@pytest.mark.parametrize("name", sorted(entry.available()))
def test_every_name_imports_a_module_with_a_main(name):
    module = importlib.import_module(entry.module_of(name))
    assert callable(module.main)
    assert Path(module.__file__).resolve() == entry.available()[name].resolve()


def test_unknown_name_is_an_error(capsys):
    assert entry.main(["no-such-study"]) == 2
    assert "--list" in capsys.readouterr().err


def test_a_tiny_run_through_the_entry_point(tmp_path, capsys):
    out = tmp_path / "interf.json"
    argv = ["interferometry", "--npix", "8", "--batches", "1", "2", "--repeats", "1", "--json", str(out)]
    assert entry.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["npix"], r["J"]) for r in rows] == [(8, 1), (8, 2)]
    assert all(r["evals_per_second"] > 0 for r in rows)
    assert "| 8 | 2 |" in capsys.readouterr().out


def test_shared_options_parse_the_same_everywhere():
    from benchmarks._common import add_seed_count, add_sizes, command_line, parser_for

    parser = parser_for("First line.\n\nMore.")
    add_seed_count(parser, 3)
    add_sizes(parser, "--particles", [16, 64])
    args = parser.parse_args(["--particles", "8"])
    assert (args.seeds, args.particles) == (3, [8])
    assert parser.description == "First line."
    assert (
        command_line("calibration", ["exact", "--seeds", "1"])
        == "python -m benchmarks calibration exact --seeds 1"
    )
