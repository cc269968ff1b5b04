"""What the benchmark suites run: problems, their priors and metrics, and solver settings.

Everything here is data plus small builders, so that a reader can see every
setting of a published number in one file.  :mod:`benchmarks.run` executes
a suite; each *task* is one (problem, instance seed, solver) triple and runs
in a fresh process.

Suites
------
``smoke``
    Seconds; checks the machinery (the test suite runs it).
``cpu``
    Under an hour on two CPU cores: Navier-Stokes 64x64 (GRF prior, GRF
    truth), Navier-Stokes 32x32 (the shipped neural prior, evolved truth as
    the paper's data), phase retrieval and closure-phase interferometry at
    32x32, every derivative-free solver plus DPS, three instances each.
``speed``
    The reference code's EnKG configuration against cheaper ones on one
    problem and one prior (the shipped network prior): accuracy against
    denoiser evaluations and wall time.
``ns-study``
    The paper's Navier-Stokes experiment at CPU scale: error against
    ensemble size J and steps N at noise 0 / 1 / 2, for an evolved truth
    with the network prior and a GRF truth with the exact GRF prior; EnKG
    (paper and calibrated updates) and EKI.  Far more than one session of
    two cores: run it in slices with ``--problem`` / ``--solver`` and
    ``--resume``; :mod:`benchmarks.studies.ns_study` tabulates whatever has finished.
``enkg-updates``
    EnKG's paper update against the calibrated ``kalman-sqrt`` update
    (fixed and adaptive tempering) and EKI at J in {64, 256}, N in
    {20, 40} on phase retrieval and the black hole (minutes each).
``gpu``
    The paper's sizes (Navier-Stokes 128x128 with J = 2048 and N = 80,
    interferometry 64x64 with J = 1024): CuPy particles, torch priors on
    CUDA.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

import kalmandiff as kd
from benchmarks.studies.compare_small import fitted_gaussian_prior
from kalmandiff._backend import to_numpy
from kalmandiff.problems.interferometry import crescent_image

__all__ = ["ProblemSpec", "SolverSpec", "Suite", "SUITES", "build_prior", "score"]

#: Seeds of the test instances; priors are fitted on seeds from 10_000 on, never these.
INSTANCE_SEEDS = (1, 2, 3)
PRIOR_FIT_SEED = 10_000


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
    """One benchmark problem.

    Attributes
    ----------
    key : str
        Name in the results (``ns64-grf`` ...).
    family : str
        Registry name for :func:`kalmandiff.problems.make`.
    make_kwargs : dict
        Size and overrides passed to ``make``.
    prior : str
        Key of :data:`PRIORS`.
    metric : str
        Headline metric (a key that :func:`score` returns).
    higher_is_better : bool
    description : str
        One line for the report.
    """

    key: str
    family: str
    make_kwargs: dict
    prior: str
    metric: str = "relative_l2"
    higher_is_better: bool = False
    description: str = ""


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """A solver class (name in :mod:`kalmandiff`) with the settings to run it with."""

    label: str
    cls: str
    params: dict = dataclasses.field(default_factory=dict)
    #: problem keys the spec applies to (empty: all problems of the suite)
    only: tuple = ()


@dataclasses.dataclass(frozen=True)
class Suite:
    """Problems x solvers x instance seeds, and how to run them."""

    name: str
    problems: tuple
    solvers: tuple
    seeds: tuple = INSTANCE_SEEDS
    dtype: str = "float32"
    device: str = "cpu"
    description: str = ""

    def tasks(self, problems=None, solvers=None, n_instances=None) -> list[tuple[str, int, str]]:
        """``(problem key, seed, solver label)`` triples, optionally filtered."""
        seeds = self.seeds if n_instances is None else self.seeds[:n_instances]
        out = []
        for p in self.problems:
            if problems and p.key not in problems:
                continue
            for s in self.solvers:
                if (solvers and s.label not in solvers) or (s.only and p.key not in s.only):
                    continue
                out.extend((p.key, seed, s.label) for seed in seeds)
        return out

    def problem(self, key: str) -> ProblemSpec:
        return next(p for p in self.problems if p.key == key)

    def solver(self, label: str, problem: str) -> SolverSpec:
        """The entry ``label`` that applies to ``problem``."""
        return next(s for s in self.solvers if s.label == label and (not s.only or problem in s.only))


# --------------------------------------------------------------------------
# priors
# --------------------------------------------------------------------------


def _gaussian_fit(images: np.ndarray, ridge: float) -> kd.priors.GaussianPrior:
    """Gaussian prior with the empirical mean and covariance (plus ``ridge * I``) of ``images``."""
    return kd.problems.fitted_gaussian_prior(images, ridge=ridge)


def smooth_image_prior(inst, n: int = 2000) -> kd.priors.GaussianPrior:
    """Gaussian fitted to ``n`` smooth test images of the instance's shape (seeds >= 10_000)."""
    return fitted_gaussian_prior(tuple(inst.problem.x_shape), n=n, first_seed=PRIOR_FIT_SEED)


def crescent_prior(inst, n: int = 2000) -> kd.priors.GaussianPrior:
    """Gaussian fitted to ``n`` crescents drawn as ``make("interferometry")`` draws its truths.

    Diameter 38-42 uas, width 5-7 uas, asymmetry 0.4-0.7, position angle 150-210 deg, 0.6 Jy, on
    the instance's grid; the ridge is 1% of the mean pixel variance.
    """
    problem = inst.problem
    u = np.random.default_rng(PRIOR_FIT_SEED).random((n, 4))
    images = np.stack(
        [
            crescent_image(
                problem.npix,
                problem.fov_uas,
                diameter_uas=38.0 + 4.0 * a,
                width_uas=5.0 + 2.0 * b,
                asymmetry=0.4 + 0.3 * c,
                position_angle_deg=150.0 + 60.0 * e,
                flux_jy=0.6,
            )
            for a, b, c, e in u
        ]
    )
    return _gaussian_fit(images, ridge=0.01 * float(images.var(0).mean()))


def _instance_prior(inst, device: str):
    return inst.prior


def _neural_ns_prior(inst, device: str, path: str | None = None):
    return kd.priors.load_navier_stokes_prior(batch_size=64, device=device, path=path)


def _checkpoint_prior(path: str, scale: float = 1.0):
    """A prior from a user's EDM checkpoint (GPU suite option ``--ns-checkpoint``)."""

    def build(inst, device: str):
        from kalmandiff.priors import ScaledDenoiser, TorchDenoiser, load_edm_checkpoint

        net = load_edm_checkpoint(path)
        return TorchDenoiser(ScaledDenoiser(net, scale=scale), tuple(inst.problem.x_shape), device=device)

    return build


PRIORS: dict[str, Callable[[Any, str], Any]] = {
    "instance": _instance_prior,
    "ns-neural": _neural_ns_prior,
    "smooth-gaussian": lambda inst, device: smooth_image_prior(inst),
    "crescent-gaussian": lambda inst, device: crescent_prior(inst),
}


def build_prior(key: str, inst, device: str = "cpu", ns_prior_path: str | None = None):
    """The prior named ``key`` for instance ``inst`` (a path ``*.pt`` loads an EDM checkpoint).

    ``ns_prior_path`` replaces the shipped network of ``"ns-neural"`` with another
    one saved by ``scripts/train_ns_prior.py``.
    """
    if key.endswith(".pt"):
        return _checkpoint_prior(key)(inst, device)
    if key == "ns-neural":
        return _neural_ns_prior(inst, device, ns_prior_path)
    return PRIORS[key](inst, device)


# --------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------


def score(spec: ProblemSpec, inst, x_hat) -> dict[str, float]:
    """Figures of merit of the estimate ``x_hat`` (one image, ``x_shape``) on ``inst``.

    Every problem reports ``relative_l2``.  Phase retrieval reports it and the
    PSNR (range 2, images in [-1, 1]) after :meth:`PhaseRetrieval.align`,
    since ``x``, ``-x`` and the image turned 180 degrees give the same data;
    interferometry adds its blurred PSNRs and closure chi-squares
    (:meth:`ClosurePhaseInterferometry.metrics`, ideal chi^2 about 1).
    """
    x_hat = np.asarray(to_numpy(x_hat), dtype=float).reshape(inst.problem.x_shape)
    x_true = np.asarray(inst.x_true, dtype=float)
    if spec.family == "phase-retrieval":
        aligned = inst.problem.align(x_hat, x_true)
        return {
            "relative_l2": kd.metrics.relative_l2(aligned, x_true),
            "psnr": kd.metrics.psnr(aligned, x_true, data_range=2.0),
        }
    if spec.family == "interferometry":
        return inst.problem.metrics(x_hat, x_true, np.asarray(to_numpy(inst.y)))
    return {"relative_l2": kd.metrics.relative_l2(x_hat, x_true)}


# --------------------------------------------------------------------------
# the suites
# --------------------------------------------------------------------------

NS64_GRF = ProblemSpec(
    "ns64-grf",
    "navier-stokes",
    # max_steps: a diverged member (huge vorticity, tiny CFL steps) becomes a NaN row after 5x the
    # usual number of steps, instead of running 50x longer (DPG diverges on this problem).
    {"size": "medium", "t_prior": 0.0, "max_steps": 2000},
    "instance",
    description="Navier-Stokes 64x64, GRF truth (not evolved) and its exact GRF prior; "
    "32x32 noisy observation (noise 1) of the vorticity at T = 1",
)
NS32_NEURAL = ProblemSpec(
    "ns32-neural",
    "navier-stokes",
    {"size": "small", "t_prior": 5.0, "max_steps": 2000},
    "ns-neural",
    description="Navier-Stokes 32x32, truth evolved 5 time units as the paper's data; the shipped "
    "network prior (trained on such fields); 16x16 observation, noise 1",
)
PR32 = ProblemSpec(
    "pr32",
    "phase-retrieval",
    {"size": "small", "family": "smooth"},
    "smooth-gaussian",
    metric="psnr",
    higher_is_better=True,
    description="Phase retrieval 32x32 (oversampling 2, noise 0.05), Gaussian prior fitted to 2000 "
    "other smooth test images; metrics after sign/twin alignment",
)
BH32 = ProblemSpec(
    "bh32",
    "interferometry",
    {"size": "small"},
    "crescent-gaussian",
    metric="chisq_cphase",
    description="Closure-phase interferometry, 32x32, EHT 2017 array on M87, crescent truth; "
    "Gaussian prior fitted to 2000 other crescents",
)

_QUIET = {"verbose": False}


def _solver(label: str, cls: str, only: tuple = (), **params) -> SolverSpec:
    return SolverSpec(label, cls, {**_QUIET, **params}, only)


# CPU budgets: each method gets a few hundred to about two thousand forward evaluations per
# instance on the Navier-Stokes problems (4.5 evaluations/s at 64x64 on one core), more on the
# cheap imaging problems; the paper's budgets (J = 2048, 80 steps; 1000 VP steps) are the GPU suite's.
_NS_CPU_SOLVERS = (
    _solver("EnKG", "EnKGSolver", n_particles=32, n_steps=10, update="paper"),
    _solver("EnKG kalman-sqrt", "EnKGSolver", n_particles=32, n_steps=10, update="kalman-sqrt"),
    _solver("EKI", "EKISolver", n_particles=32, max_iter=12),
    _solver("DPG", "DPGSolver", n_steps=12, n_queries=32, batch_size=32),
    _solver("SCG", "SCGSolver", n_steps=12, n_queries=32),
    _solver("GSG", "GSGSolver", n_steps=12, n_queries=32),
    _solver("DPS", "DPSSolver", n_steps=20),
)
_IMAGE_CPU_SOLVERS = (
    _solver("EnKG", "EnKGSolver", n_particles=128, n_steps=40, update="paper"),
    _solver("EnKG kalman-sqrt", "EnKGSolver", n_particles=128, n_steps=40, update="kalman-sqrt"),
    _solver("EKI", "EKISolver", n_particles=128, max_iter=100),
    _solver("DPG", "DPGSolver", n_steps=200, n_queries=64),
    _solver("SCG", "SCGSolver", n_steps=200, n_queries=64),
    _solver("GSG", "GSGSolver", n_steps=200, n_queries=64),
    _solver("DPS", "DPSSolver", n_steps=200),
)


def _for(problems: tuple, solvers: tuple) -> tuple:
    keys = tuple(p.key for p in problems)
    return tuple(dataclasses.replace(s, only=keys) for s in solvers)


CPU = Suite(
    "cpu",
    problems=(NS64_GRF, NS32_NEURAL, PR32, BH32),
    solvers=_for((NS64_GRF, NS32_NEURAL), _NS_CPU_SOLVERS) + _for((PR32, BH32), _IMAGE_CPU_SOLVERS),
    description="Every derivative-free solver plus DPS at CPU budgets; three instances per problem.",
)

# The reference code's EnKG (enkg-pytorch scripts/navier-stokes*.sh): 80 Euler steps of the EDM
# schedule, phi in k_i = min(1 + (N - i)//4, 20) Euler steps, 2 updates per step, h = 2, window
# 0.05/0.05, denoiser batch 64, float32.  Against it: cheaper settings of the same solver.
_REFERENCE = {
    **{
        k: v
        for k, v in kd.EnKGSolver.defaults_for("navier-stokes").items()
        if k not in ("n_particles", "update")
    },
    "phi_factor": 4,  # enkg-pytorch hard-codes 4 (InverseBench: 8)
    "phi_max_steps": 20,
}
_SPEED_J = 32
NS32_GRF = ProblemSpec(
    "ns32-grf",
    "navier-stokes",
    {"size": "small"},
    "instance",
    description="Navier-Stokes 32x32, GRF truth and its exact GRF prior (a cheap FFT denoiser); "
    "16x16 observation, noise 1",
)


def _speed(label: str, **changes) -> SolverSpec:
    return _solver(label, "EnKGSolver", n_particles=_SPEED_J, **{**_REFERENCE, "update": "paper", **changes})


SPEED = Suite(
    "speed",
    problems=(NS32_NEURAL, NS32_GRF),
    solvers=(
        _speed("reference"),
        _speed("phi x8", phi_factor=8),
        _speed("phi 1 step", phi_max_steps=1),
        _speed("N=40", n_steps=40),
        _speed("N=20", n_steps=20),
        _speed("1 update h=4", n_updates=1, guidance_scale=4.0),
    ),
    description="EnKG at the reference code's settings (J = 32 here) against cheaper ones: same "
    "problem, prior, ensemble size and seeds, run side by side.",
)

GPU = Suite(
    "gpu",
    problems=(
        ProblemSpec(
            "ns128-grf",
            "navier-stokes",
            {"size": "paper", "t_prior": 0.0},
            "instance",
            description="Navier-Stokes 128x128, GRF truth and prior, 64x64 observation, noise 1",
        ),
        ProblemSpec(
            "ns128-evolved",
            "navier-stokes",
            {"size": "paper", "t_prior": 5.0},
            "instance",
            description="Navier-Stokes 128x128, evolved truth as the paper's data; GRF prior unless "
            "--ns-checkpoint gives a trained 128x128 EDM network",
        ),
        dataclasses.replace(NS32_NEURAL, key="ns32-neural"),
        ProblemSpec(
            "bh64",
            "interferometry",
            {"size": "paper"},
            "crescent-gaussian",
            metric="chisq_cphase",
            description="Closure-phase interferometry 64x64 (paper's track), Gaussian crescent prior",
        ),
    ),
    solvers=(
        _solver(
            "EnKG",
            "EnKGSolver",
            ("ns128-grf", "ns128-evolved", "ns32-neural"),
            n_particles=2048,
            **_REFERENCE,
            update="paper",
            forward_batch_size=512,
        ),
        _solver(
            "EnKG kalman-sqrt",
            "EnKGSolver",
            ("ns128-grf", "ns128-evolved", "ns32-neural"),
            n_particles=2048,
            **_REFERENCE,
            update="kalman-sqrt",
            forward_batch_size=512,
        ),
        _solver("EnKG", "EnKGSolver", ("bh64",), **kd.EnKGSolver.defaults_for("black-hole")),
        _solver("EKI", "EKISolver", n_particles=512, max_iter=500),
        _solver("DPG", "DPGSolver", n_steps=1000, n_queries=4000, batch_size=500),
        _solver("SCG", "SCGSolver", n_steps=1000, n_queries=512),
        _solver("GSG", "GSGSolver", n_steps=1000, n_queries=1024, batch_size=512),
        _solver("DPS", "DPSSolver", n_steps=1000),
    ),
    device="cuda",
    seeds=INSTANCE_SEEDS,
    description="The paper's sizes on one GPU: CuPy particles, torch priors on CUDA.",
)

# --------------------------------------------------------------------------
# the Navier-Stokes study: error against J and N
# --------------------------------------------------------------------------

STUDY_J = (64, 256, 1024, 2048)
STUDY_N = (20, 40, 80)
STUDY_NOISE = (0.0, 1.0, 2.0)


def _noise_key(noise: float) -> str:
    return f"noise{noise:g}"


def _study_problems() -> tuple:
    out = []
    for base in (NS32_NEURAL, NS32_GRF):
        for noise in STUDY_NOISE:
            out.append(
                dataclasses.replace(
                    base,
                    key=f"{base.key}-{_noise_key(noise)}",
                    make_kwargs={**base.make_kwargs, "noise_std": noise, "max_steps": 2000},
                    description=base.description.replace("noise 1", f"noise {noise:g}"),
                )
            )
    return tuple(out)


def study_label(method: str, J: int, N: int | None = None) -> str:
    """The label of one cell of the study: ``"EnKG paper J=256 N=20"``, ``"EKI J=256"``."""
    return f"{method} J={J}" + ("" if N is None else f" N={N}")


def _study_solvers(problems: tuple) -> tuple:
    """EnKG (paper, kalman-sqrt with Euler or Heun steps) at every (J, N) and EKI at every J.

    The calibrated update and EKI need a positive noise covariance, so they
    skip the noise-0 problems (the paper's normalised update does not).
    """
    noisy = tuple(p.key for p in problems if not p.key.endswith(_noise_key(0.0)))
    every = tuple(p.key for p in problems)
    out = []
    for J in STUDY_J:
        for N in STUDY_N:
            base = {**_REFERENCE, "n_particles": J, "n_steps": N}
            out.append(_solver(study_label("EnKG paper", J, N), "EnKGSolver", every, **base, update="paper"))
            out.append(
                _solver(
                    study_label("EnKG kalman-sqrt", J, N), "EnKGSolver", noisy, **base, update="kalman-sqrt"
                )
            )
            # Heun steps make phi and the prediction second-order consistent (on exact Gaussian
            # posteriors the calibrated bias then all but vanishes, tests/test_enkg.py)
            out.append(
                _solver(
                    study_label("EnKG kalman-sqrt heun", J, N),
                    "EnKGSolver",
                    noisy,
                    **base,
                    update="kalman-sqrt",
                    ode_method="heun",
                )
            )
        out.append(_solver(study_label("EKI", J), "EKISolver", noisy, n_particles=J, max_iter=100))
    return tuple(out)


_STUDY_PROBLEMS = _study_problems()
NS_STUDY = Suite(
    "ns-study",
    problems=_STUDY_PROBLEMS,
    solvers=_study_solvers(_STUDY_PROBLEMS),
    description="The paper's Navier-Stokes experiment at 32x32: relative L2 against J and N at "
    "noise 0 / 1 / 2; evolved truth + network prior and GRF truth + exact GRF prior.",
)

# --------------------------------------------------------------------------
# which EnKG update: paper, calibrated (fixed or adaptive tempering), EKI beside them
# --------------------------------------------------------------------------

UPDATES_J = (64, 256)
UPDATES_N = (20, 40)


def _update_solvers() -> tuple:
    out = []
    for J in UPDATES_J:
        for N in UPDATES_N:
            base = {"n_particles": J, "n_steps": N}
            out.append(_solver(study_label("EnKG paper", J, N), "EnKGSolver", **base, update="paper"))
            out.append(
                _solver(study_label("EnKG kalman-sqrt", J, N), "EnKGSolver", **base, update="kalman-sqrt")
            )
            out.append(
                _solver(
                    study_label("EnKG kalman-sqrt adaptive", J, N),
                    "EnKGSolver",
                    **base,
                    update="kalman-sqrt",
                    tempering="adaptive",
                )
            )
        out.append(_solver(study_label("EKI", J), "EKISolver", n_particles=J, max_iter=100))
    return tuple(out)


ENKG_UPDATES = Suite(
    "enkg-updates",
    problems=(PR32, BH32),
    solvers=_update_solvers(),
    description="EnKG's updates side by side (paper, kalman-sqrt with fixed and adaptive tempering) "
    "and EKI, error against J and N on the CPU suite's image problems; the Navier-Stokes "
    "problems are the ns-study's.",
)

SMOKE = Suite(
    "smoke",
    problems=(
        ProblemSpec(
            "ns16-grf",
            "navier-stokes",
            {"size": "small", "resolution": 16},
            "instance",
            description="Navier-Stokes 16x16, GRF truth and prior",
        ),
        dataclasses.replace(
            PR32,
            key="pr16",
            make_kwargs={"size": "small", "shape": (1, 16, 16)},
            description="Phase retrieval 16x16, fitted Gaussian prior",
        ),
    ),
    solvers=(
        _solver("EnKG", "EnKGSolver", n_particles=8, n_steps=6, update="paper"),
        _solver("EKI", "EKISolver", n_particles=8, max_iter=3),
        _solver("SCG", "SCGSolver", n_steps=4, n_queries=4),
    ),
    seeds=(1, 2),
    description="Seconds: the machinery only.",
)

SUITES = {s.name: s for s in (SMOKE, CPU, SPEED, NS_STUDY, ENKG_UPDATES, GPU)}
