"""How long ``import kalmandiff`` and a command-line error take, in fresh interpreters.

Each repeat starts a new Python process (nothing cached in ``sys.modules``)
and measures, with ``time.perf_counter`` inside it, ``import numpy`` and
then ``import kalmandiff`` on top of it; a second process per repeat runs
``python -m kalmandiff run --bogus`` (an argument error) and is timed from
outside, start to exit.  The heavy optional modules a bare import pulls in
are listed too (none is the goal: scikit-learn, SciPy, torch, matplotlib,
tqdm, pandas, xarray are imported where they are used).

Usage::

    python -m benchmarks import-time [--repeat 11] [--json PATH]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import add_json, parser_for

#: top-level packages that ``import kalmandiff`` must not import
HEAVY = ("sklearn", "scipy", "torch", "matplotlib", "tqdm", "pandas", "xarray", "cupy")

_PROBE = f"""
import json, sys, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import kalmandiff
t2 = time.perf_counter()
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
print(json.dumps({{"numpy_s": t1 - t0, "kalmandiff_s": t2 - t1, "heavy": heavy}}))
"""


def _env() -> dict:
    """This process's environment, with the kalmandiff it imports first on the children's path."""
    import kalmandiff

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    root = str(Path(kalmandiff.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def measure(repeat: int = 11) -> dict:
    """Median (and all) times over ``repeat`` fresh processes."""
    imports, cli = [], []
    heavy: set[str] = set()
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, env=_env()
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        imports.append(row)
        heavy.update(row["heavy"])
        start = time.perf_counter()
        err = subprocess.run(
            [sys.executable, "-m", "kalmandiff", "run", "--bogus"], capture_output=True, text=True, env=_env()
        )
        cli.append(time.perf_counter() - start)
        if err.returncode != 2:
            raise RuntimeError(f"the CLI error path exited {err.returncode}: {err.stderr[-500:]}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=_env())
    bare = time.perf_counter() - start
    return {
        "repeat": repeat,
        "numpy_s_median": statistics.median(r["numpy_s"] for r in imports),
        "kalmandiff_beyond_numpy_s_median": statistics.median(r["kalmandiff_s"] for r in imports),
        "cli_error_wall_s_median": statistics.median(cli),
        "bare_interpreter_wall_s": bare,
        "heavy_modules_imported": sorted(heavy),
        "kalmandiff_beyond_numpy_s": [r["kalmandiff_s"] for r in imports],
        "cli_error_wall_s": cli,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__)
    parser.add_argument("--repeat", type=int, default=11, help="fresh processes per measurement")
    add_json(parser)
    args = parser.parse_args(argv)
    res = measure(args.repeat)
    print(
        f"import numpy                   {res['numpy_s_median'] * 1e3:7.1f} ms (median of {res['repeat']})\n"
        f"import kalmandiff beyond numpy {res['kalmandiff_beyond_numpy_s_median'] * 1e3:7.1f} ms\n"
        f"CLI argument error, wall       {res['cli_error_wall_s_median'] * 1e3:7.1f} ms "
        f"(bare interpreter {res['bare_interpreter_wall_s'] * 1e3:.0f} ms)\n"
        f"heavy modules imported: {', '.join(res['heavy_modules_imported']) or 'none'}"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
