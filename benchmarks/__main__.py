"""One entry point for every benchmark and study: ``python -m benchmarks <name> [options]``.

``python -m benchmarks --list`` names them with the first line of each one's docstring;
``python -m benchmarks <name> --help`` gives that one's options.  The names:

* ``run``: a benchmark suite (:mod:`benchmarks.run`, settings in :mod:`benchmarks.suites`);
* ``report``: tables and figures again from a suite's results (:mod:`benchmarks.report`);
* every module of :mod:`benchmarks.studies`, under its file name with ``bench_`` dropped and
  ``_`` written ``-`` (``studies/bench_calibration.py`` is ``calibration``,
  ``studies/ns_study.py`` is ``ns-study``).  A new study is a new file there with a
  ``main(argv)``; nothing else needs to know about it.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: The suite harness's entry points (the studies are found on disk).
_HARNESS = {"run": "benchmarks.run", "report": "benchmarks.report"}


def study_name(stem: str) -> str:
    """The command name of ``benchmarks/studies/<stem>.py``."""
    return stem.removeprefix("bench_").replace("_", "-")


def available() -> dict[str, Path]:
    """Every runnable name and the file that holds it, harness first, then studies by name."""
    names = {name: _HERE / f"{module.rsplit('.', 1)[1]}.py" for name, module in _HARNESS.items()}
    studies = {study_name(path.stem): path for path in (_HERE / "studies").glob("[!_]*.py")}
    names.update(sorted(studies.items()))
    return names


def module_of(name: str) -> str:
    """The importable module path of a runnable name."""
    if name in _HARNESS:
        return _HARNESS[name]
    return f"benchmarks.studies.{available()[name].stem}"


def summary(path: Path) -> str:
    """First line of a module's docstring, read without importing it (a study may import torch)."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def listing() -> str:
    """The ``--list`` text: one line per name."""
    names = available()
    width = max(map(len, names))
    return "\n".join(f"{name:<{width}}  {summary(path)}" for name, path in names.items())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark named by ``argv[0]`` with the rest of ``argv``; list them without one."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("--list", "-l", "list"):
        print(listing())
        return 0
    if argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + listing())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in available():
        print(f"unknown benchmark {name!r}; `python -m benchmarks --list` names them", file=sys.stderr)
        return 2
    # argparse in the study then says "python -m benchmarks NAME" in its usage line
    sys.argv[0] = f"python -m benchmarks {name}"
    result = importlib.import_module(module_of(name)).main(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
