"""The docs' example of a solver written outside the package (docs/writing_a_solver.rst) passes check_solver,
with only public names."""

import importlib.util
from pathlib import Path

import numpy as np

import kalmandiff as kd
from kalmandiff.testing import accuracy_case, check_solver, posterior_scores

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "my_solver.py"


def _example():
    spec = importlib.util.spec_from_file_location("my_solver", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_is_about_forty_lines_of_code_on_public_names():
    code = [ln for ln in EXAMPLE.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert len(code) <= 50
    assert "._" not in EXAMPLE.read_text().replace("_param_constraints", "")  # no private module


def test_the_example_solver_passes_every_check():
    TemperedEKI = _example().TemperedEKI

    def factory(prior):
        return TemperedEKI(prior, n_particles=16, random_state=0, verbose=False)

    report = check_solver(factory, cases=("gaussian", "mixture"))
    assert not report.failed and not report.skipped, str(report)
    assert report.solver == "TemperedEKI"


def test_the_example_solver_converges_to_the_exact_posterior():
    TemperedEKI = _example().TemperedEKI
    case = accuracy_case("gaussian")
    solver = TemperedEKI(case.prior, n_particles=2000, random_state=0, verbose=False).fit(
        case.y, case.forward
    )
    err, prior_err, ratio = posterior_scores(solver, case)
    assert err < 0.05 * prior_err and 0.8 < ratio < 1.2


def test_the_example_solver_saves_and_loads_safely(tmp_path):
    TemperedEKI = _example().TemperedEKI
    case = accuracy_case("gaussian")
    fitted = TemperedEKI(case.prior, n_particles=16, random_state=0, verbose=False).fit(case.y, case.forward)
    back = kd.load(fitted.save(tmp_path / "mine.npz"), solver_class=TemperedEKI)
    np.testing.assert_array_equal(back.particles_, fitted.particles_)
    assert back.n_iter == 4 and type(back) is TemperedEKI
