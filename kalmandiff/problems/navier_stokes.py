"""Two-dimensional incompressible Navier-Stokes on the periodic torus, as a forward problem.

The unknown is the initial vorticity ``w0`` on ``[0, 2 pi]^2``; the data
are the vorticity at ``t_final``, subsampled, plus Gaussian noise.  This is
the EnKG / InverseBench setting (itself PINO's Kolmogorov flow)::

    dw/dt + u . grad(w) = (1/Re) lap(w) + f,    u = (d psi/dy, -d psi/dx),   -lap(psi) = w,

with ``x`` along the first array axis and ``y`` along the second
(``meshgrid(indexing="ij")``) and ``f = -4 cos(4 y)`` by default.

Discretisation
--------------
Pseudo-spectral in space (``rfftn`` over the last two axes), with Orszag's
2/3 rule: only wavenumbers with ``3 |k_1| < R`` and ``3 |k_2| < R`` are
kept, so every quadratic product is computed without aliasing and the
inviscid semi-discrete system conserves energy and enstrophy exactly.  The
mean vorticity (``k = 0``) is set to zero: on a periodic domain the
vorticity of a velocity field has zero mean, and a constant would only be
carried along unchanged.  In time, Crank-Nicolson for the viscous term and
Heun (explicit trapezoidal RK2) for advection and forcing, second order::

    w*      = [w_n + dt (N(w_n)               - nu G w_n / 2)] / (1 + dt nu G / 2)
    w_{n+1} = [w_n + dt ((N(w_n) + N(w*)) / 2 - nu G w_n / 2)] / (1 + dt nu G / 2)

with ``G = |k|^2`` and ``N(w) = -div(u w) + f`` (dealiased).

The EnKG authors' operator
--------------------------
``NavierStokes2D(dealias="reference")`` reproduces, to round-off, the
solver of the EnKG reference code (``ForwardNavierStokes2d`` in
``devzhk/enkg-pytorch``, adapted from PINO's periodic solver), which
dealiases differently: it keeps the *disc* ``|k|^2 <= 2 (R/3)^2`` (radius
``sqrt(2) R / 3``), and filters only the vorticity that enters the
nonlinear term (mean removed there).  The state itself is never filtered, so
the output keeps the input's mean and its content at every wavenumber, and
the forcing is not filtered either.  Its first-derivative wavenumbers are
zero at the Nyquist frequency.  The time scheme, the CFL rule and the
shortened last step are the ones above; its CFL speed is that of the
unfiltered state.  The one difference that is kept on purpose: the reference
takes a single adaptive step for the whole batch (the minimum over its
members), whereas here every member has its own, so a batch gives each
member's solo result (a batch of one matches the reference to round-off).

Every particle of a batch keeps its own clock and step size, so a batch
gives the same result as evaluating its members one by one, and a member
that blows up is dropped (its output row is NaN) without touching the rest.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .._backend import array_device, asarray_like, check_random_state, get_namespace, to_numpy
from ._base import ForwardProblem
from ._base import check_noise_std as _check_noise_std
from ._geometry import Geometry

__all__ = ["NavierStokes2D", "ns_grf_params", "sample_ns_grf"]

_SUBSAMPLES = (1, 2, 4, 8)
_DTYPES = ("float32", "float64")
_DEALIAS = ("square", "reference")

#: the speed (velocity, vorticity units) whose adaptive solve ``max_steps="auto"`` still allows
AUTO_CAP_SPEED = 100.0


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------


def _positive(value: Any, name: str, allow_inf: bool = False, allow_zero: bool = False) -> float:
    """Return ``value`` as a float, or raise a ValueError naming the argument."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (value >= 0 if allow_zero else value > 0) and (allow_inf or math.isfinite(value))
        ok = ok and not math.isnan(value)
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"{name} must be a {kind} {'number' if allow_inf else 'finite number'} (got {value!r})."
        )
    return value


def _grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Physical coordinates ``(x, y)`` of the ``R x R`` grid on ``[0, 2 pi)^2``, ``indexing='ij'``."""
    s = 2.0 * np.pi * np.arange(resolution) / resolution
    return np.meshgrid(s, s, indexing="ij")


def _forcing_field(forcing: Any, resolution: int) -> np.ndarray:
    """The forcing as a float64 ``(R, R)`` array from a name, a callable ``f(x, y)`` or an array."""
    if forcing is None or (isinstance(forcing, str) and forcing == "none"):
        return np.zeros((resolution, resolution))
    if isinstance(forcing, str):
        if forcing != "kolmogorov":
            raise ValueError(
                f"forcing must be 'kolmogorov', 'none', None, a callable f(x, y) or an (R, R) array (got {forcing!r})."
            )
        _, y = _grid(resolution)
        return -4.0 * np.cos(4.0 * y)
    if callable(forcing):
        x, y = _grid(resolution)
        field = np.broadcast_to(np.asarray(to_numpy(forcing(x, y)), dtype=float), (resolution, resolution))
    else:
        field = np.asarray(to_numpy(forcing), dtype=float)
        if field.shape != (resolution, resolution):
            raise ValueError(
                f"an array forcing must have shape (resolution, resolution) = {(resolution, resolution)} "
                f"(got {field.shape})."
            )
    if not np.all(np.isfinite(field)):
        raise ValueError("forcing must be finite everywhere.")
    return np.array(field)


# --------------------------------------------------------------------------
# spectral operators in one namespace / dtype / device
# --------------------------------------------------------------------------


class _SpectralOps:
    """The solver's constant arrays, converted once per namespace, dtype and device.

    All of them live on the half-plane grid of ``rfftn``: shape ``(R, R//2 + 1)``.
    ``filter_state`` selects the scheme: True for ``"square"`` (the state is
    band-limited), False for ``"reference"`` (only the nonlinear term's
    input is, through ``mask``).
    """

    def __init__(
        self,
        consts: dict[str, np.ndarray],
        like,
        real_dtype,
        complex_dtype,
        resolution: int,
        filter_state: bool = True,
    ):
        self.xp = get_namespace(like)
        self.resolution = resolution
        self.filter_state = filter_state
        self.real_dtype = real_dtype
        self.complex_dtype = complex_dtype
        for name, value in consts.items():
            dtype = complex_dtype if np.iscomplexobj(value) else real_dtype
            setattr(self, name, asarray_like(value, like, dtype=dtype))

    def to_spectral(self, w):
        """Spectrum of real fields ``(J, R, R)``; band-limited and mean-free if the scheme filters the state."""
        if not self.filter_state:
            return self.xp.fft.rfftn(w, axes=(-2, -1))
        return self.xp.fft.rfftn(w, axes=(-2, -1)) * self.mask

    def to_physical(self, w_hat):
        """Real fields ``(J, R, R)`` from spectra."""
        R = self.resolution
        return self.xp.fft.irfftn(w_hat, s=(R, R), axes=(-2, -1))

    def rhs(self, w_hat, with_speed: bool = True, state_speed: bool = False):
        """Dealiased ``N(w) = -div(u w) + f`` and, optionally, each member's maximum speed.

        The speed is that of the velocity entering the nonlinear term, or,
        with ``state_speed`` (the reference scheme's CFL rule), that of the
        unfiltered state, at the cost of two more inverse FFTs.
        """
        xp = self.xp
        # One inverse and one forward FFT call per evaluation, over all members at once.
        if self.filter_state:
            parts = [self.vel_x * w_hat, self.vel_y * w_hat, w_hat]
        else:
            # vel_x and vel_y include the mask: only the filtered vorticity is advected.
            parts = [self.vel_x * w_hat, self.vel_y * w_hat, self.mask * w_hat]
            if with_speed and state_speed:
                parts += [self.state_vel_x * w_hat, self.state_vel_y * w_hat]
        fields = self.to_physical(xp.stack(parts, axis=0))
        u, v, w = fields[0, ...], fields[1, ...], fields[2, ...]
        flux = xp.fft.rfftn(xp.stack([u * w, v * w], axis=0), axes=(-2, -1))
        n_hat = self.div_x * flux[0, ...] + self.div_y * flux[1, ...] + self.forcing_hat
        if not with_speed:
            return n_hat, None
        if len(parts) == 5:
            u, v = fields[3, ...], fields[4, ...]
        speed = xp.max(xp.sqrt(u * u + v * v), axis=(-2, -1))
        return n_hat, speed

    def step(self, w_hat, n0, dt: np.ndarray):
        """One Crank-Nicolson / Heun step of sizes ``dt`` (one per member, float64 NumPy)."""
        dt = asarray_like(np.reshape(dt, (-1, 1, 1)), self.laplace, dtype=self.real_dtype)
        half = (0.5 * dt) * self.laplace
        inv = 1.0 / (1.0 + half)
        damp = (1.0 - half) * inv
        gain = dt * inv
        base = damp * w_hat
        w_star = base + gain * n0
        n1, _ = self.rhs(w_star, with_speed=False)
        return base + (0.5 * gain) * (n0 + n1)


# --------------------------------------------------------------------------
# the problem
# --------------------------------------------------------------------------


class NavierStokes2D(ForwardProblem):
    """Recover the initial vorticity of a 2D periodic flow from its final vorticity.

    ``G(w0) = w(t_final)[::s, ::s]``, where ``w`` solves the vorticity
    equation on the torus ``[0, 2 pi]^2`` from ``w(0) = w0`` (see the module
    docstring for the equations and the scheme).

    Parameters
    ----------
    resolution : int, default 64
        Grid size ``R``; the unknown is an ``R x R`` vorticity field.
    reynolds : float, default 200.0
        Reynolds number; the viscosity is ``1 / reynolds`` (``inf`` gives
        the inviscid equations).
    t_final : float, default 1.0
        Time at which the vorticity is observed (time units of the equation).
    subsample : {1, 2, 4, 8}, default 2
        Keep every ``subsample``-th grid point along each axis; must divide
        ``resolution``.
    noise_std : float or array, default 1.0
        Standard deviation of the observation noise, in vorticity units
        (scalar, or broadcastable to ``y_shape``).
    forcing : "kolmogorov", "none", None, callable or array, default "kolmogorov"
        ``"kolmogorov"`` is ``f = -4 cos(4 y)``; a callable is evaluated as
        ``f(x, y)`` on NumPy grids of shape ``(R, R)`` (``indexing='ij'``);
        an array must have shape ``(R, R)``.  The forcing does not depend on
        time.  A callable is evaluated once, at construction.
    dt : float or None, default None
        Fixed time step; the last step is shortened to land on ``t_final``.
        ``None`` chooses each step from a CFL condition, per member::

            dt = min(cfl * h / max|u|, cfl * h**2 / mu),   h = 1 / R,   mu = sqrt(max|f|) / Re

        as the reference solver does (``h = 1/R`` there, not the grid
        spacing ``2 pi / R``, which makes the advective bound ``2 pi``
        times stricter than a textbook CFL; ``mu = 1/Re`` without forcing).
    cfl : float, default 0.5
        Safety factor of the adaptive step.
    dtype : {"float32", "float64"} or None, default "float32"
        Precision of the computation (``None``: the input's floating dtype).
        Outputs come back in the input's floating dtype.
    max_steps : int or "auto", default "auto"
        Step cap per member and evaluation: a member that has not reached
        ``t_final`` after this many steps (its adaptive step collapsed on a
        rough or blowing-up input) is a failure (NaN row, reason in
        :attr:`last_failures`), so one runaway member cannot stretch a
        forward call from a fraction of a second to minutes.  ``"auto"``
        allows the steps of an adaptive solve at a speed of
        :data:`AUTO_CAP_SPEED` (100, about 40 times the largest speed of a
        GRF prior draw or an evolved truth, and above the 70 of the noisy
        queries DPG makes at ``R = 32``)::

            max_steps = max(100, ceil(100 * R * t_final / cfl))

        (6400 steps at ``R = 32``, ``t_final = 1``, where a prior draw takes
        about 130); with a fixed ``dt`` it is the step count
        ``ceil(t_final / dt)`` plus one.
    dealias : {"square", "reference"}, default "square"
        ``"square"``: Orszag's 2/3 rule on the square ``3 |k_i| < R``,
        applied to the state, whose mean is removed (module docstring).
        ``"reference"``: the EnKG authors' operator: the disc
        ``|k|^2 <= 2 (R/3)^2`` filters only the input of the nonlinear term,
        the state keeps its mean and every wavenumber, the forcing is not
        filtered, Nyquist first derivatives are zero and the adaptive step
        uses the unfiltered state's speed (module docstring).  It agrees with
        an independent transcription of their solver to about ``1e-15``
        relative L2 in float64 (``tests/test_navier_stokes.py``), member by
        member (their code takes one step size for the whole batch).
        Needs an even ``resolution``.  The two operators' outputs differ,
        in relative L2 at ``R = 32, 64, 128`` (``t_final = 1``,
        ``Re = 200``, float64, mean of 4 members), by about 0.15, 0.026
        and 7e-4 from draws of :func:`sample_ns_grf`, and by 0.56, 0.096
        and 5e-3 from draws first evolved for 5 time units (the paper's
        kind of truth): use ``"reference"`` to compare with the paper's
        numbers at coarse grids.
    input_scale : float, default 1.0
        The vorticity is ``input_scale * X``: the unknown is measured in
        units of ``1 / input_scale`` vorticity, while outputs, observations
        and ``noise_std`` stay in vorticity units.  The EnKG code feeds its
        operator the diffusion model's space: its loader (``LMDBData``,
        ``std = 5``) divides the stored vorticity by ``2 * std = 10`` and its
        operator multiplies its input by ``unnorm_scale = 10`` before
        solving, so ``input_scale=10`` takes fields in their network units
        directly.

    Attributes
    ----------
    x_shape : (1, R, R)
        One channel, so that a ``(C, H, W)`` field prior fits.
    y_shape : (1, R // subsample, R // subsample)
    differentiable : True
        Torch autograd differentiates through :meth:`forward`; adaptive
        step sizes are treated as constants (they are chosen from detached
        values), so the gradient is that of the discrete scheme with the
        step sequence frozen.

    Notes
    -----
    A member is a *failure* when its solution becomes non-finite or its
    step count exceeds ``max_steps``; its whole output row is NaN, it stops
    being stepped, and the other members are unaffected (solvers detect NaN
    rows through their failure policy, whose error names the reason kept in
    ``last_failures``).  With ``dealias="square"`` the mean
    of the input vorticity and its content outside the 2/3 band are
    discarded at ``t = 0``; with ``"reference"`` both are kept (the mean is
    carried unchanged, up to the mean of the forcing).

    Examples
    --------
    The authors' operator, taking their network-space fields ``w / 10``:

    >>> problem = NavierStokes2D(resolution=128, dealias="reference", input_scale=10.0)
    >>> problem.x_shape, problem.y_shape
    ((1, 128, 128), (1, 64, 64))
    """

    differentiable = True
    #: Not local, measured: a small bump (1 cell wide) added to a draw of :func:`sample_ns_grf` changes
    #: the final vorticity over the whole torus (the velocity is a non-local function of the vorticity),
    #: with 99% of the response's energy reaching 0.47-0.55 of the domain side from the bump and only
    #: 58-81% inside 0.25, the largest taper radius (R = 32 and 64, Re = 200, t_final = 1, 4 draws x 2
    #: positions; tests/test_localization.py checks it).  So spatial tapers are refused.  The
    #: geometry-free correction is off under ``localization="auto"`` too: measured mixed (32 x 32 GRF
    #: instances, EnKG kalman-sqrt, 20 steps: relative L2 0.797 against 0.811 at J = 64, but
    #: 0.664 against 0.637 at J = 256; docs/benchmarks.md), so not "never worse than none".
    geometry = Geometry(
        local=False,
        sampling_error_correction=False,
        note="non-local, measured; sampling-error correction measured mixed (docs/benchmarks.md)",
    )

    def __init__(
        self,
        resolution: int = 64,
        reynolds: float = 200.0,
        t_final: float = 1.0,
        subsample: int = 2,
        noise_std: Any = 1.0,
        forcing: str | Callable | Any = "kolmogorov",
        dt: float | None = None,
        cfl: float = 0.5,
        dtype: str | None = "float32",
        max_steps: int | str = "auto",
        dealias: str = "square",
        input_scale: float = 1.0,
    ):
        if not isinstance(resolution, (int, np.integer)) or isinstance(resolution, bool) or resolution < 4:
            raise ValueError(f"resolution must be an integer >= 4 (got {resolution!r}).")
        if subsample not in _SUBSAMPLES or isinstance(subsample, bool):
            raise ValueError(f"subsample must be one of {_SUBSAMPLES} (got {subsample!r}).")
        if resolution % subsample:
            raise ValueError(f"subsample ({subsample}) must divide resolution ({resolution}).")
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32', 'float64' or None (got {dtype!r}).")
        if max_steps != "auto" and (
            not isinstance(max_steps, (int, np.integer)) or isinstance(max_steps, bool) or max_steps < 1
        ):
            raise ValueError(f"max_steps must be a positive integer or 'auto' (got {max_steps!r}).")
        if not isinstance(dealias, str) or dealias not in _DEALIAS:
            raise ValueError(f"dealias must be 'square' or 'reference' (got {dealias!r}).")
        if dealias == "reference" and resolution % 2:
            raise ValueError(
                f"dealias='reference' needs an even resolution, as the reference solver's wavenumber "
                f"tables do (got resolution={resolution})."
            )
        self.resolution = int(resolution)
        self.reynolds = _positive(reynolds, "reynolds", allow_inf=True)
        self.t_final = _positive(t_final, "t_final", allow_zero=True)
        self.subsample = int(subsample)
        self.dt = None if dt is None else _positive(dt, "dt")
        self.cfl = _positive(cfl, "cfl")
        self.dtype = dtype
        self.max_steps = max_steps if max_steps == "auto" else int(max_steps)
        #: ``{member: reason}`` for the members that failed in the last call (empty when none did)
        self.last_failures: dict[int, str] = {}
        self.dealias = dealias
        self.input_scale = _positive(input_scale, "input_scale")
        self.forcing_field = _forcing_field(forcing, self.resolution)
        # A callable is evaluated once; keeping its values (not the function) keeps the problem picklable.
        self.forcing = self.forcing_field if callable(forcing) else forcing

        r = self.resolution // self.subsample
        self.x_shape = (1, self.resolution, self.resolution)
        self.y_shape = (1, r, r)
        self.noise_std = _check_noise_std(noise_std, self.y_shape)
        self._consts = self._build_constants()
        self._cache: dict[tuple, _SpectralOps] = {}

    def __getstate__(self):
        # Converted constants may live on a GPU or hold torch tensors: rebuild them after unpickling.
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    # -- constants ---------------------------------------------------------
    @property
    def viscosity(self) -> float:
        """Kinematic viscosity ``1 / reynolds``."""
        return 1.0 / self.reynolds

    def _build_constants(self) -> dict[str, np.ndarray]:
        R = self.resolution
        k1 = np.fft.fftfreq(R, d=1.0 / R)[:, None]  # integer wavenumbers along x (axis -2)
        k2 = np.fft.rfftfreq(R, d=1.0 / R)[None, :]  # along y (axis -1), half plane
        if self.dealias == "reference":
            return self._reference_constants(k1, k2)
        # Orszag's 2/3 rule; the strict inequality keeps products alias-free when 3 divides R.
        mask = ((3 * np.abs(k1) < R) & (3 * np.abs(k2) < R)).astype(float)
        mask[0, 0] = 0.0
        g = k1**2 + k2**2
        inv_g = np.divide(mask, g, out=np.zeros_like(g), where=g > 0)
        forcing_hat = np.fft.rfftn(self.forcing_field) * mask
        return {
            "mask": mask,
            "laplace": self.viscosity * g,
            # u = d psi/dy = i k2 psi_hat, v = -d psi/dx = -i k1 psi_hat, psi_hat = w_hat / |k|^2
            "vel_x": 1j * k2 * inv_g,
            "vel_y": -1j * k1 * inv_g,
            # -div(u w): dealiased so that the state never leaves the 2/3 band
            "div_x": -1j * k1 * mask,
            "div_y": -1j * k2 * mask,
            "forcing_hat": forcing_hat,
        }

    def _reference_constants(self, k1: np.ndarray, k2: np.ndarray) -> dict[str, np.ndarray]:
        """The EnKG authors' operator (``dealias="reference"``; ``R`` even)."""
        R = self.resolution
        g = k1**2 + k2**2  # |k|^2 with the Nyquist wavenumber counted as R/2
        # First derivatives of the reference treat the Nyquist wavenumber (row R/2, last column) as 0.
        d1 = np.where(np.abs(k1) == R // 2, 0.0, k1)
        d2 = np.where(k2 == R // 2, 0.0, k2)
        # The disc |k|^2 <= (R/3)^2 + (R/3)^2, in integers: no rounding at the edge when 3 divides R.
        mask = (9 * g <= 2 * R * R).astype(float)
        mask[0, 0] = 0.0
        inv_g = np.divide(1.0, g, out=np.zeros_like(g), where=g > 0)
        state_vel_x = 1j * d2 * inv_g
        state_vel_y = -1j * d1 * inv_g
        return {
            "mask": mask,  # applied to the nonlinear term's input only
            "laplace": self.viscosity * g,
            "vel_x": state_vel_x * mask,
            "vel_y": state_vel_y * mask,
            "state_vel_x": state_vel_x,  # the CFL rule's speed: velocity of the whole state
            "state_vel_y": state_vel_y,
            "div_x": -1j * d1,
            "div_y": -1j * d2,
            "forcing_hat": np.fft.rfftn(self.forcing_field),
        }

    def _ops(self, like) -> _SpectralOps:
        xp = get_namespace(like)
        key = (getattr(xp, "__name__", str(xp)), str(like.dtype), str(array_device(like)))
        if key not in self._cache:
            cdtype = xp.complex64 if like.dtype == xp.float32 else xp.complex128
            self._cache[key] = _SpectralOps(
                self._consts,
                like,
                like.dtype,
                cdtype,
                self.resolution,
                filter_state=self.dealias == "square",
            )
        return self._cache[key]

    # -- time stepping -----------------------------------------------------
    def step_cap(self, t_end: float | None = None) -> int:
        """The step cap per member of a solve to ``t_end`` (default ``t_final``): see ``max_steps``."""
        t_end = self.t_final if t_end is None else t_end
        if self.max_steps != "auto":
            return int(self.max_steps)
        if self.dt is not None:
            return math.ceil(t_end / self.dt) + 1
        return max(100, math.ceil(AUTO_CAP_SPEED * self.resolution * t_end / self.cfl))

    def _step_sizes(self, speed: np.ndarray, remaining: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Step per member and whether it is the member's last (float64 NumPy)."""
        if self.dt is not None:
            dt = np.full_like(remaining, self.dt)
        else:
            h = 1.0 / self.resolution
            f_max = float(np.max(np.abs(self.forcing_field)))
            mu = self.viscosity * (math.sqrt(f_max) if f_max > 0 else 1.0)
            viscous = self.cfl * h**2 / mu if mu > 0 else np.inf
            with np.errstate(divide="ignore"):
                advective = np.where(speed > 0, self.cfl * h / speed, np.inf)
            dt = np.minimum(advective, viscous)
        # Land exactly on t_final; a step within rounding of the end is the last one.
        last = dt >= remaining * (1.0 - 1e-10)
        return np.where(last, remaining, dt), last

    def solve(self, X, t_final: float | None = None):
        """Evolve a batch of vorticity fields to ``t_final`` at full resolution.

        Parameters
        ----------
        X : array of shape ``(J, 1, R, R)``
            Initial vorticity of each member, divided by ``input_scale``
            (any supported namespace).
        t_final : float, optional
            Overrides the problem's ``t_final``.

        Returns
        -------
        array of shape ``(J, 1, R, R)``
            Vorticity at ``t_final``, in the namespace, device and floating
            dtype of ``X``; rows of failed members are NaN.
        """
        t_end = self.t_final if t_final is None else _positive(t_final, "t_final", allow_zero=True)
        xp = get_namespace(X)
        out_dtype = X.dtype if xp.isdtype(X.dtype, "real floating") else xp.float64
        work_dtype = out_dtype if self.dtype is None else getattr(xp, self.dtype)
        W = xp.astype(xp.reshape(X, (X.shape[0], self.resolution, self.resolution)), work_dtype)
        if self.input_scale != 1.0:
            W = W * self.input_scale
        ops = self._ops(W)
        self.last_failures = {}
        # Overflow in a blowing-up member is expected and handled below; keep NumPy quiet about it.
        with np.errstate(over="ignore", invalid="ignore"):
            fields = self._integrate(ops, ops.to_spectral(W), t_end)
        fields = xp.astype(fields, out_dtype)
        # A member with any non-finite value is a failure: its whole row becomes NaN.
        ok = xp.all(xp.isfinite(fields), axis=(-2, -1))
        if not bool(xp.all(ok)):
            fields = xp.where(xp.reshape(ok, (-1, 1, 1)), fields, xp.full_like(fields, float("nan")))
            for j in np.flatnonzero(~to_numpy(ok)):
                self.last_failures.setdefault(int(j), "the solution became non-finite")
        return xp.reshape(fields, (X.shape[0], 1, self.resolution, self.resolution))

    def _integrate(self, ops: _SpectralOps, w_hat, t_end: float):
        """Step every member to ``t_end`` with its own clock; return real fields ``(J, R, R)``."""
        xp = ops.xp
        J = w_hat.shape[0]
        if t_end == 0.0 or J == 0:
            return ops.to_physical(w_hat)
        active = np.arange(J)
        clock = np.zeros(J)
        n_steps = np.zeros(J, dtype=int)
        done_idx: list[np.ndarray] = []
        done_fields: list[Any] = []

        def keep_rows(arrays, keep):
            if bool(np.all(keep)):
                return arrays
            idx = asarray_like(np.flatnonzero(keep), w_hat, dtype=xp.int64)
            return [xp.take(a, idx, axis=0) for a in arrays]

        # The reference scheme's CFL speed is that of the unfiltered state (only needed for adaptive steps).
        state_speed = self.dealias == "reference" and self.dt is None
        cap = self.step_cap(t_end)
        while active.size:
            n0, speed = ops.rhs(w_hat, state_speed=state_speed)
            speed = to_numpy(speed).astype(float)
            capped = np.isfinite(speed) & (n_steps >= cap)
            bad = ~np.isfinite(speed) | capped
            if bad.any():
                for j, t, v in zip(active[capped], clock[capped], speed[capped]):
                    self.last_failures[int(j)] = (
                        f"step cap: {cap} time steps reached t = {t:.3g} of {t_end:g} (speed {v:.3g}; "
                        "a rough or blowing-up input; raise max_steps to allow more)"
                    )
                # Failed members leave the batch: their rows are filled with NaN at the end.
                keep = ~bad
                if not keep.any():
                    break
                w_hat, n0 = keep_rows([w_hat, n0], keep)
                active, clock, n_steps, speed = active[keep], clock[keep], n_steps[keep], speed[keep]
            dt, last = self._step_sizes(speed, t_end - clock)
            w_hat = ops.step(w_hat, n0, dt)
            clock = np.where(last, t_end, clock + dt)
            n_steps += 1
            if last.any():
                (finished,) = keep_rows([w_hat], last)
                done_idx.append(active[last])
                done_fields.append(ops.to_physical(finished))
                if last.all():
                    break
                (w_hat,) = keep_rows([w_hat], ~last)
                active, clock, n_steps = active[~last], clock[~last], n_steps[~last]
        return self._assemble(ops, done_idx, done_fields, J)

    def _assemble(self, ops: _SpectralOps, done_idx, done_fields, J: int):
        """Put finished members back in input order; members never finished are NaN."""
        xp = ops.xp
        R = self.resolution
        order = np.concatenate(done_idx) if done_idx else np.zeros(0, dtype=int)
        n_failed = J - order.size
        parts = list(done_fields)
        if n_failed:
            failed = np.setdiff1d(np.arange(J), order)
            order = np.concatenate([order, failed])
            parts.append(
                xp.full((n_failed, R, R), float("nan"), dtype=ops.real_dtype, device=array_device(ops.mask))
            )
        fields = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
        if np.array_equal(order, np.arange(J)):
            return fields
        inverse = asarray_like(np.argsort(order), ops.mask, dtype=xp.int64)
        return xp.take(fields, inverse, axis=0)

    # -- the forward map ---------------------------------------------------
    def forward(self, X):
        """Final vorticity, subsampled: ``(J, 1, R, R) -> (J, 1, R/s, R/s)``.

        Rows of members whose solution blew up are NaN.
        """
        s = self.subsample
        return self.solve(X)[..., ::s, ::s]

    def metrics(self, x_hat, x_true) -> dict[str, float]:
        """Relative L2 error ``||x_hat - x_true|| / ||x_true||``, the paper's metric.

        ``x_hat`` of shape ``(J, 1, R, R)`` (an ensemble) gives the mean of
        the members' errors, as the EnKG paper reports it.
        """
        from ..metrics import relative_l2

        return {"relative_l2": relative_l2(x_hat, x_true)}

    def plot(self, x=None, y=None, x_true=None, ax=None):
        """Show vorticity fields (truth, estimate, observation) with a diverging colormap.

        An estimate with an ensemble axis is shown as its mean.  Matplotlib
        is imported only here.

        Returns
        -------
        array of matplotlib Axes
        """
        import matplotlib.pyplot as plt

        panels = []
        for name, arr in (("truth", x_true), ("estimate", x), ("observation", y)):
            if arr is None:
                continue
            arr = np.asarray(to_numpy(arr), dtype=float)
            if arr.ndim == 4:
                arr = np.nanmean(arr, axis=0)
            panels.append((name, np.reshape(arr, arr.shape[-2:])))
        if not panels:
            raise ValueError("plot needs at least one of x, y, x_true.")
        if ax is None:
            _, ax = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
            ax = ax[0]
        ax = np.atleast_1d(ax)
        for a, (name, field) in zip(ax, panels):
            lim = float(np.nanmax(np.abs(field))) or 1.0
            # Transposed so that x runs left to right and y upwards.
            im = a.imshow(
                field.T,
                origin="lower",
                cmap="RdBu_r",
                vmin=-lim,
                vmax=lim,
                extent=(0, 2 * np.pi, 0, 2 * np.pi),
            )
            a.set_title(f"{name} vorticity")
            a.set_xlabel("x")
            a.set_ylabel("y")
            a.figure.colorbar(im, ax=a, fraction=0.046)
        return ax

    def describe_observation(self) -> str:
        """``"vorticity at t = 1 on a 16x16 grid (every 2nd point of 32x32), noise std 1"``."""
        from ._base import _noise_words

        r, R, s = self.y_shape[-1], self.resolution, self.subsample
        grid = f"{r}x{r} grid" + (
            "" if s == 1 else f" (every {s}{'nd' if s == 2 else 'th'} point of {R}x{R})"
        )
        return f"vorticity at t = {self.t_final:g} on a {grid}, {_noise_words(self.noise_std)}"

    def __repr__(self) -> str:
        extra = "" if self.dealias == "square" else f", dealias={self.dealias!r}"
        extra += "" if self.input_scale == 1.0 else f", input_scale={self.input_scale}"
        return (
            f"NavierStokes2D(resolution={self.resolution}, reynolds={self.reynolds}, t_final={self.t_final}, "
            f"subsample={self.subsample}, noise_std={self.noise_std!r}, dt={self.dt}, dtype={self.dtype!r}"
            f"{extra})"
        )


# --------------------------------------------------------------------------
# initial-condition statistics
# --------------------------------------------------------------------------


def ns_grf_params(resolution: int, alpha: float = 2.5, tau: float = 3.0) -> dict[str, Any]:
    """Gaussian-random-field parameters of the Navier-Stokes initial vorticity.

    PINO's data generator (whose setting EnKG's data follow) draws the
    initial vorticity with covariance ``c (-lap + tau^2)^(-alpha)`` on the
    torus of side ``2 pi``, ``alpha = 2.5``, ``tau = 3`` and
    ``c = 2 tau^(2 alpha - 2)`` (its sampler's amplitude, without the
    anisotropic factor it has on one column of its half-plane).  In grid
    terms, with ``x = ifftn(sqrt(mu) * fftn(z))`` and ``z`` white noise of
    unit variance per grid point::

        mu_k = c R^2 (4 pi^2 |k|^2 / L^2 + tau^2)^(-alpha),   mu_0 = 0,

    so that each Fourier-series coefficient ``w_k`` of
    ``w(x) = sum_k w_k exp(i k.x)`` has variance ``c (|k|^2 + tau^2)^(-alpha)``
    whatever the resolution.

    How this scale relates to the others (vorticity units, ``alpha = 2.5``,
    ``tau = 3``; checked numerically in ``tests/test_navier_stokes.py``):

    * The reference sampler, PINO's ``GaussianRF2d(s, s, 2 pi, 2 pi,
      alpha=2.5, tau=3)``, puts independent complex normals of variance
      ``2 (s^2 sigma_g)^2 lambda_k`` on the ``rfft2`` half-plane, with
      ``sigma_g = tau^(alpha - 1)`` and
      ``lambda_k = (|k|^2 + tau^2)^(-alpha)``, and ``irfft2`` keeps only the
      Hermitian part of its ``k_2 = 0`` and ``k_2 = s/2`` columns.  Its
      Fourier-series coefficients thus have variance
      ``2 sigma_g^2 lambda_k`` -- this preset's ``c lambda_k`` -- except on
      those two columns, where it is half that.  Its pointwise variance is
      about 0.916 times ``scale**2`` here (standard deviation 1.90 instead
      of 1.99 at ``R = 64``); no isotropic field matches it exactly.
    * :class:`kalmandiff.priors.GaussianRandomFieldPrior` without ``scale``
      uses ``c = tau^(2 alpha - 2)``, half this preset's (and the reference
      sampler's off-column) power: pass ``scale=ns_grf_params(R)["scale"]``,
      or ``**ns_grf_params(R)``, to get this preset.
    * In the EnKG code's network units (vorticity / 10, see
      ``NavierStokes2D(input_scale=...)``) divide ``scale`` by 10.

    Parameters
    ----------
    resolution : int
        Grid size ``R``.
    alpha, tau : float
        Smoothness and inverse length scale.

    Returns
    -------
    dict
        ``alpha``, ``tau``, ``length`` (``2 pi``) and ``scale``, the
        pointwise standard deviation of the field on this grid (about 2
        vorticity units; about 1.99 for ``R >= 64``): the keyword
        arguments of :class:`kalmandiff.priors.GaussianRandomFieldPrior`,
        whose ``scale`` is that standard deviation.
    """
    lam = _grf_spectrum(resolution, alpha, tau, 2.0 * np.pi)
    c = 2.0 * tau ** (2.0 * alpha - 2.0)
    return {
        "alpha": float(alpha),
        "tau": float(tau),
        "scale": math.sqrt(c * lam.sum()),
        "length": 2.0 * np.pi,
    }


def _grf_spectrum(resolution: int, alpha: float, tau: float, length: float) -> np.ndarray:
    """``(4 pi^2 |k|^2 / L^2 + tau^2)^(-alpha)`` on the full ``fftn`` grid, mean mode zero."""
    k = np.fft.fftfreq(resolution, d=1.0 / resolution)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    lam = (4.0 * np.pi**2 * k2 / length**2 + tau**2) ** (-alpha)
    lam[0, 0] = 0.0
    return lam


def sample_ns_grf(n: int, resolution: int, random_state: Any = None, alpha: float = 2.5, tau: float = 3.0):
    """Draw ``n`` initial vorticity fields ``(n, 1, R, R)`` (NumPy float64) from the GRF preset.

    ``x = real(ifftn(sqrt(mu) * fftn(z)))`` with ``z`` standard normal per
    grid point and ``mu`` as in :func:`ns_grf_params`: isotropic, pointwise
    standard deviation ``ns_grf_params(R)["scale"]`` (about 2 vorticity
    units), the power of PINO's ``GaussianRF2d(alpha=2.5, tau=3)`` on every
    mode except its ``k_2 = 0`` and ``k_2 = R/2`` columns, where that
    sampler has half of it (see :func:`ns_grf_params`).  Twice the power of
    ``GaussianRandomFieldPrior(alpha=2.5, tau=3)`` without ``scale``.  Used
    to make ground truths without depending on the prior classes.
    """
    rng = check_random_state(random_state, "truth")
    lam = _grf_spectrum(resolution, alpha, tau, 2.0 * np.pi)
    mu = 2.0 * tau ** (2.0 * alpha - 2.0) * resolution**2 * lam
    z = rng.standard_normal((n, 1, resolution, resolution))
    # mu is even in k, so the result is real up to rounding.
    return np.real(np.fft.ifftn(np.sqrt(mu) * np.fft.fftn(z, axes=(-2, -1)), axes=(-2, -1)))
