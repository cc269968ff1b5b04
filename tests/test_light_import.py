"""``import kalmandiff`` stays light, and the estimator contract holds without scikit-learn's base class.

The solvers implement ``get_params`` / ``set_params`` / the repr themselves
(:mod:`kalmandiff.estimators._estimator`), so that importing the package
does not pay for ``sklearn.base`` (most of a second); these tests hold the
import to that and check the contract's details against scikit-learn's own
behaviour.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kalmandiff as kd
from kalmandiff.estimators._estimator import BaseEstimator

HEAVY = {"sklearn", "torch", "scipy", "matplotlib", "tqdm", "pandas", "xarray"}


#: the child processes import the kalmandiff under test, not another installed copy
_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join([str(Path(kd.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
}


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args, "-c", code], capture_output=True, text=True, timeout=120, env=_ENV
    )


def test_import_kalmandiff_imports_no_heavy_module():
    code = (
        "import kalmandiff, sys; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'sklearn','torch','scipy','matplotlib','tqdm','pandas','xarray'}))"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cli_argument_error_imports_no_heavy_module():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kalmandiff", "run", "--bogus"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_ENV,
    )
    assert out.returncode == 2
    imported = {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert "kalmandiff" in imported and not imported & HEAVY


def test_not_fitted_error_without_sklearn_leaves_sklearn_unimported():
    code = """
import sys, kalmandiff as kd
prior = kd.priors.GaussianPrior([0.0, 0.0], 1.0)
try:
    kd.EnKGSolver(prior).reconstruct()
except kd.NotFittedError as exc:
    print(type(exc) is kd.NotFittedError, isinstance(exc, ValueError), isinstance(exc, AttributeError))
print('sklearn' in sys.modules)
"""
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True", "False"]


def test_not_fitted_error_is_sklearns_once_sklearn_is_imported():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    solver = kd.EnKGSolver(kd.priors.GaussianPrior([0.0, 0.0], 1.0))
    with pytest.raises(SklearnNotFittedError, match="EnKGSolver instance is not fitted"):
        solver.reconstruct()
    with pytest.raises(kd.NotFittedError):
        solver.reconstruct()
    with pytest.raises(SklearnNotFittedError):
        solver.ask()
    err = kd.NotFittedError("x")
    assert isinstance(err, SklearnNotFittedError) and isinstance(err, kd.NotFittedError)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and back.args == ("x",)


def test_pickled_sklearn_compatible_error_loads_in_a_fresh_process():
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    err = kd.NotFittedError("stale")  # sklearn is imported: the object is of the private subclass
    assert isinstance(err, SklearnNotFittedError)
    blob = pickle.dumps(err)
    code = f"import pickle, kalmandiff as kd; e = pickle.loads({blob!r}); print(isinstance(e, kd.NotFittedError))"
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_clone_shares_the_prior_and_keeps_every_parameter():
    from sklearn.base import clone

    prior = kd.priors.GaussianPrior(np.zeros(3), 1.0)
    solver = kd.EnKGSolver(prior, n_particles=8, update="kalman", random_state=3)
    twin = clone(solver)
    assert twin is not solver and twin.prior is prior
    assert twin.get_params() == solver.get_params()
    assert not hasattr(twin, "particles_")


# -- the contract, on a small estimator of our own --------------------------


class _Inner(BaseEstimator):
    def __init__(self, a=1, b="x"):
        self.a = a
        self.b = b


class _Outer(BaseEstimator):
    def __init__(self, inner=None, *, alpha=0.5, items=None):
        self.inner = inner
        self.alpha = alpha
        self.items = items


def test_get_params_is_sorted_and_deep_adds_nested_names():
    inner = _Inner(a=2)
    est = _Outer(inner, alpha=0.1)
    assert list(est.get_params(deep=False)) == ["alpha", "inner", "items"]
    deep = est.get_params()
    assert deep["inner"] is inner and deep["inner__a"] == 2 and deep["inner__b"] == "x"
    assert _Outer._get_param_names() == ["alpha", "inner", "items"]


def test_set_params_sets_nested_and_refuses_unknown_names():
    est = _Outer(_Inner())
    assert est.set_params(alpha=3.0, inner__b="y") is est
    assert est.alpha == 3.0 and est.inner.b == "y"
    assert est.set_params() is est
    with pytest.raises(
        ValueError, match=r"Invalid parameter 'beta' for estimator _Outer.*\['alpha', 'inner', 'items'\]"
    ):
        est.set_params(beta=1)
    with pytest.raises(ValueError, match="Invalid parameter 'z' for estimator _Inner"):
        est.set_params(inner__z=1)


def test_varargs_in_init_are_refused():
    class Bad(BaseEstimator):
        def __init__(self, *args):
            self.args = args

    with pytest.raises(RuntimeError, match="no varargs"):
        Bad().get_params()


def test_repr_names_only_changed_parameters_and_is_bounded():
    assert repr(_Outer()) == "_Outer()"
    assert repr(_Outer(alpha=0.25, items=[1, 2])) == "_Outer(alpha=0.25, items=[1, 2])"
    assert repr(_Outer(alpha=0.5)) == "_Outer()"  # equal to the default
    assert len(repr(_Outer(items=list(range(10_000))))) <= 703
    solver = kd.EnKGSolver(kd.priors.GaussianPrior(np.zeros(2), 1.0), n_particles=16)
    text = repr(solver)
    assert text.startswith("EnKGSolver(prior=GaussianPrior(") and "n_particles=16" in text
    assert "n_steps" not in text
    assert "<code>n_particles</code>" in solver._repr_html_()


def test_a_broken_parameter_repr_does_not_break_the_estimators():
    class Loud:
        def __repr__(self):
            raise RuntimeError("no")

    assert repr(_Outer(Loud())) == "_Outer(inner=<Loud object>)"


def test_import_time_benchmark_reports_no_heavy_module(tmp_path):
    from benchmarks.studies import import_time

    assert import_time.main(["--repeat", "1", "--json", str(tmp_path / "t.json")]) == 0
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["heavy_modules_imported"] == []
    assert res["kalmandiff_beyond_numpy_s_median"] > 0
