"""What every benchmark's command line shares: seeds, sizes, output paths, threads, the machine line.

A study builds its parser with :func:`parser_for` and adds the shared options with the
``add_*`` helpers, so that ``--seeds``, ``--json``, ``--out`` and ``--threads`` mean the same
everywhere; :func:`machine_line` and :func:`command_line` give the header that
docs/benchmarks.md quotes beside each measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np


def parser_for(doc: str | None, raw: bool = False) -> argparse.ArgumentParser:
    """A parser described by the first line of a module docstring (the whole of it when ``raw``)."""
    if raw:
        return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])


def add_seed_count(parser, default: int, flag: str = "--seeds") -> None:
    """``--seeds N``: seeds ``0 .. N-1`` of the cases (truth, noise and solver on their own streams)."""
    parser.add_argument(flag, type=int, default=default, help=f"number of seeds, 0..N-1 (default {default})")


def add_seed_list(parser, default, flag: str = "--seeds") -> None:
    """``--seeds 1 2 3``: the instance seeds themselves."""
    parser.add_argument(
        flag, type=int, nargs="+", default=list(default), help=f"seeds (default {list(default)})"
    )


def add_sizes(parser, flag: str, default, help: str = "") -> None:
    """An integer list option such as ``--particles 16 64 256`` or ``--steps 20 80``."""
    parser.add_argument(
        flag, type=int, nargs="+", default=list(default), help=help or f"(default {list(default)})"
    )


def add_json(parser) -> None:
    """``--json PATH``: also write the results there."""
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the results as JSON here")


def add_out(parser, default: str | None, help: str = "output path") -> None:
    """``--out PATH`` with a study's default under ``benchmarks/results/``."""
    parser.add_argument("--out", default=default, help=f"{help} (default {default})")


def add_threads(parser, default: int = 1) -> None:
    """``--threads N``: torch and BLAS threads (one by default: the machine is shared)."""
    parser.add_argument("--threads", type=int, default=default, help=f"torch threads (default {default})")


def limit_threads(n: int = 1) -> None:
    """Run torch (when installed) on ``n`` threads, and BLAS too where it has not started yet."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    try:
        import torch
    except ImportError:  # a study that needs no torch runs without it
        return
    torch.set_num_threads(n)


def machine() -> dict:
    """The machine and versions a measurement ran on, for a results file."""
    return {
        "date": datetime.date.today().isoformat(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def machine_line() -> str:
    """The one-line header of a printed table: date, platform, cores, numpy."""
    m = machine()
    return f"date {m['date']}, {m['platform']}, {m['cores']} cores, numpy {m['numpy']}"


def command_line(name: str, argv: list[str] | None) -> str:
    """The command that reproduces a run: ``python -m benchmarks <name> <argv>``."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m benchmarks", name, *args])


def write_json(path, payload: dict) -> None:
    """Write ``payload`` with the machine description under ``meta`` (kept if already there)."""
    payload = {"meta": machine(), **payload}
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2)
