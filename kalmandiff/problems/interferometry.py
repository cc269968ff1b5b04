"""Black-hole imaging from closure quantities: the EHT forward problem of the EnKG paper.

An image of the sky (Jy per pixel) is observed by a very-long-baseline
interferometer: each pair of stations measures one Fourier component
(visibility) of the image at a time-dependent spatial frequency (u, v) set by
the Earth's rotation.  Atmospheric phases and gain errors at the stations
corrupt the visibilities, so the data kept are the quantities they cancel
from: closure phases on station triangles, log closure amplitudes on
quadrangles, and one total-flux datum.  The map from image to data is
nonlinear, and the closure phases live on a circle.

The geometry (stations, tracks, closure sets, direct Fourier transform) is in
:mod:`._interferometry_geometry`; this module holds the batched, array-generic
forward map, the noise simulation, the chi-squared figures and the metrics.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._backend import RandomSource, array_device, asarray_like, get_namespace, to_numpy
from . import _interferometry_geometry as geo
from ._base import ForwardProblem
from ._geometry import NON_LOCAL

__all__ = ["ClosurePhaseInterferometry", "crescent_image", "blur_circular"]

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_CORRUPTION_DEFAULTS = {"gain_std": 0.1, "gain_offset": 0.1, "phase": True}
_BLUR_FWHMS_UAS = (10.0, 15.0, 20.0)


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number (got {value!r}).")
    return float(value)


def _check_corruption(station_corruption) -> dict | None:
    """Normalise ``station_corruption`` to None or a dict with every key set."""
    if station_corruption is None or station_corruption is False:
        return None
    if station_corruption is True:
        return dict(_CORRUPTION_DEFAULTS)
    if not isinstance(station_corruption, dict):
        raise ValueError(
            "station_corruption must be False, True or a dict with keys gain_std, gain_offset, phase "
            f"(got {type(station_corruption).__name__})."
        )
    unknown = set(station_corruption) - set(_CORRUPTION_DEFAULTS)
    if unknown:
        raise ValueError(
            f"station_corruption has unknown keys {sorted(unknown)}; allowed: {sorted(_CORRUPTION_DEFAULTS)}."
        )
    out = {**_CORRUPTION_DEFAULTS, **station_corruption}
    for key in ("gain_std", "gain_offset"):
        if not isinstance(out[key], numbers.Real) or out[key] < 0:
            raise ValueError(f"station_corruption[{key!r}] must be a non-negative number (got {out[key]!r}).")
    out["phase"] = bool(out["phase"])
    return out


def _wrap(xp, angle):
    """Wrap angles (radians) into (-pi, pi], smoothly (differentiable away from the cut)."""
    return xp.atan2(xp.sin(angle), xp.cos(angle))


class ClosurePhaseInterferometry(ForwardProblem):
    """Closure phases, log closure amplitudes and total flux of a sky image.

    The unknown is an image ``x`` of shape ``(1, npix, npix)`` in Jy per
    pixel, row ``j`` going from north (top) to south and column ``k`` from
    east (left) to west, as displayed on the sky (right ascension grows to
    the left).  The data are ``y = (closure phases [rad], log closure
    amplitudes, total flux [Jy])`` of shape ``(n_cp + n_lca + 1,)``.  The
    conventions (time in GMST, (u, v) signs, pixel centres, triangle pixel
    pulse, thermal noise, minimal closure sets with the most sensitive station
    as reference) are those of eht-imaging, against which the tests check
    every intermediate quantity.

    Parameters
    ----------
    npix : int
        Image side in pixels.
    fov_uas : float
        Field of view (side) in micro-arcseconds.
    array : str, path-like or mapping
        Station table: a shipped name (``"EHT2017"``), a text file
        ``name X Y Z SEFD [SEFD_L]`` (metres, Jy) or ``{name: (X, Y, Z, SEFD)}``.
    source : str
        ``"M87"`` or ``"SgrA*"``, or a label when ``ra_hours``/``dec_deg`` are given.
    ra_hours, dec_deg : float, optional
        Source coordinates (hours, degrees); override ``source``.
    freq_ghz : float
        Observing frequency.
    tint_s : float
        Integration time of one visibility (sets its thermal noise).
    tadv_s : float
        Interval between scans.
    tstart_gmst_h, tstop_gmst_h : float
        Observing window in GMST hours (``stop < start`` wraps past 24 h).
    bandwidth_ghz : float
        Recorded bandwidth (sets the thermal noise).
    elevation_limits_deg : (float, float)
        A station observes when the source is strictly between these elevations.
    flux_sigma : float
        Standard deviation (Jy) of the total-flux datum.  The default, 0.02 Jy,
        is about 3 % of M87's 0.6 Jy compact flux; rescale it with the images.
    station_corruption : bool or dict
        ``observe`` multiplies each visibility by the station gains
        ``sqrt(g_a g_b)`` with ``g = |(1 + gain_offset n) (1 + gain_std n_t)|``
        (a constant and a per-time draw per station) and, if ``phase``, by
        ``exp(i (phi_b - phi_a))`` with ``phi ~ U[0, 2 pi)`` per station and time.
        True means ``dict(gain_std=0.1, gain_offset=0.1, phase=True)``.  Closure
        quantities cancel these; they make ``observe`` realistic.
    random_state : None, int or numpy.random.Generator
        Default randomness of :meth:`observe` when it is given none.
    pulse : {"triangle", "rect", "delta"}
        Pixel shape: ``"triangle"`` (eht-imaging's default) multiplies each
        visibility by ``sinc(p u)**2 sinc(p v)**2`` with ``p`` the pixel size.

    Attributes
    ----------
    x_shape, y_shape : tuple of int
    noise_std : ndarray of shape ``y_shape``
        Linearised standard deviations of the data: for closure phases
        ``sqrt(sum_k sigma_k**2 / |V_k|**2)`` (rad), for log closure
        amplitudes ``sqrt(sum_k 1 / SNR_k**2)``, then ``flux_sigma``.  They
        depend on the visibility amplitudes, so they are set by
        :meth:`observe` from the observed (noisy) visibilities, as
        eht-imaging and the EnKG reference do, or by
        :meth:`set_noise_from_image`.  Reading it before raises.
    stations : tuple of str
        Station names, ordered by increasing SEFD (the first is the reference).
    uv : ndarray of shape (M, 2)
        Spatial frequencies of the visibilities, in wavelengths.
    baselines : ndarray of int, shape (M, 2)
        Station indices of each visibility.
    vis_times : ndarray of shape (M,)
        GMST hours of each visibility; ``times`` lists the distinct ones.
    vis_sigma : ndarray of shape (M,)
        Thermal noise (Jy) of the real and of the imaginary part.
    triangles, quadrangles : ndarray of int, shapes (n_cp, 3) and (n_lca, 4)
        Stations of each closure phase ``(1, 2, 3)`` and log closure amplitude
        ``ln|V12| + ln|V34| - ln|V14| - ln|V23|``; ``triangle_times`` and
        ``quadrangle_times`` give their GMST hours.
    observation_ : array or None
        The last observation made by :meth:`observe`.
    observed_visibilities_ : complex ndarray of shape (M,) or None
        Its corrupted, noisy visibilities.

    Notes
    -----
    ``forward`` is a dense matrix product followed by elementwise maps, all
    through the array API, so it runs batched on NumPy, CuPy or torch, and
    torch autograd differentiates it (``differentiable = True``).
    :meth:`add_noise` (inherited) adds Gaussian noise in data space, the
    linearised model; :meth:`observe` simulates the physical noise.
    """

    differentiable = True

    #: Not local: every visibility, hence every closure quantity, depends on every pixel.
    geometry = NON_LOCAL

    def __init__(
        self,
        npix: int = 64,
        fov_uas: float = 160.0,
        array: Any = "EHT2017",
        source: str = "M87",
        *,
        ra_hours: float | None = None,
        dec_deg: float | None = None,
        freq_ghz: float = 230.0,
        tint_s: float = 10.0,
        tadv_s: float = 600.0,
        tstart_gmst_h: float = 0.0,
        tstop_gmst_h: float = 24.0,
        bandwidth_ghz: float = 2.0,
        elevation_limits_deg: tuple[float, float] = (10.0, 85.0),
        flux_sigma: float = 0.02,
        station_corruption: bool | dict = False,
        random_state: Any = None,
        pulse: str = "triangle",
    ):
        if isinstance(npix, bool) or not isinstance(npix, (int, np.integer)) or npix < 2:
            raise ValueError(f"npix must be an integer >= 2 (got {npix!r}).")
        self.npix = int(npix)
        self.fov_uas = _positive("fov_uas", fov_uas)
        self.freq_ghz = _positive("freq_ghz", freq_ghz)
        self.tint_s = _positive("tint_s", tint_s)
        self.tadv_s = _positive("tadv_s", tadv_s)
        self.bandwidth_ghz = _positive("bandwidth_ghz", bandwidth_ghz)
        self.flux_sigma = _positive("flux_sigma", flux_sigma)
        self.tstart_gmst_h, self.tstop_gmst_h = float(tstart_gmst_h), float(tstop_gmst_h)
        limits = tuple(float(e) for e in np.ravel(elevation_limits_deg))
        if len(limits) != 2 or not -90.0 <= limits[0] < limits[1] <= 90.0:
            raise ValueError(
                f"elevation_limits_deg must be (low, high) with -90 <= low < high <= 90 (got {elevation_limits_deg!r})."
            )
        self.elevation_limits_deg = limits
        if pulse not in ("triangle", "rect", "delta"):
            raise ValueError(f"pulse must be 'triangle', 'rect' or 'delta' (got {pulse!r}).")
        self.pulse = pulse
        self.station_corruption = _check_corruption(station_corruption)
        self.array = array
        self.source, self.ra_hours, self.dec_deg = geo.resolve_source(source, ra_hours, dec_deg)
        self.random_state = random_state
        self._rng = RandomSource(random_state, stream="noise")

        table = geo.load_station_table(array).sorted_by_sefd()
        self.stations = table.names
        self.pixel_size_uas = self.fov_uas / self.npix
        times = geo.observing_times(self.tstart_gmst_h, self.tstop_gmst_h, self.tadv_s)
        tracks = geo.uv_tracks(
            table,
            self.ra_hours,
            self.dec_deg,
            self.freq_ghz * 1e9,
            times,
            limits,
            self.bandwidth_ghz * 1e9,
            self.tint_s,
        )
        if len(tracks.sigma) == 0:
            raise ValueError("no baseline sees the source: widen the time range or the elevation limits.")
        self._tracks = tracks
        self._sets = geo.closure_sets(tracks)
        if len(self._sets.tri_vis) == 0:
            raise ValueError("no closure triangle: fewer than three stations ever see the source together.")

        self.n_visibilities = len(tracks.sigma)
        self.n_closure_phases = len(self._sets.tri_vis)
        self.n_log_closure_amplitudes = len(self._sets.quad_vis)
        self.x_shape = (1, self.npix, self.npix)
        self.y_shape = (self.n_closure_phases + self.n_log_closure_amplitudes + 1,)
        self._noise_std = None
        self._constants_cache: dict = {}
        self.observation_ = None
        self.observed_visibilities_ = None

    # -- geometry, read-only views ----------------------------------------
    @property
    def uv(self) -> np.ndarray:
        """(M, 2) spatial frequencies in wavelengths."""
        return self._tracks.uv

    @property
    def baselines(self) -> np.ndarray:
        """(M, 2) station indices (into ``stations``) of each visibility."""
        return self._tracks.baselines

    @property
    def vis_times(self) -> np.ndarray:
        """(M,) GMST hours of each visibility."""
        return self._tracks.times[self._tracks.time_index]

    @property
    def times(self) -> np.ndarray:
        """(T,) distinct GMST hours at which the source is observed."""
        return self._tracks.times

    @property
    def vis_sigma(self) -> np.ndarray:
        """(M,) thermal noise in Jy, per real and per imaginary part."""
        return self._tracks.sigma

    @property
    def triangles(self) -> np.ndarray:
        """(n_cp, 3) station indices of each closure phase."""
        return self._sets.tri_stations

    @property
    def triangle_times(self) -> np.ndarray:
        """(n_cp,) GMST hours of each closure phase."""
        return self._tracks.times[self._sets.tri_time]

    @property
    def quadrangles(self) -> np.ndarray:
        """(n_lca, 4) station indices of each log closure amplitude."""
        return self._sets.quad_stations

    @property
    def quadrangle_times(self) -> np.ndarray:
        """(n_lca,) GMST hours of each log closure amplitude."""
        return self._tracks.times[self._sets.quad_time]

    @property
    def noise_std(self) -> np.ndarray:
        """Per-datum standard deviations, shape ``y_shape`` (see the class docstring)."""
        if self._noise_std is None:
            raise RuntimeError(
                "noise_std of closure quantities depends on the visibility amplitudes: call "
                "observe(x_true) or set_noise_from_image(x) first."
            )
        return self._noise_std

    @noise_std.setter
    def noise_std(self, value) -> None:
        value = np.broadcast_to(np.asarray(to_numpy(value), dtype=float), self.y_shape).copy()
        if not np.all(np.isfinite(value)) or np.any(value <= 0):
            raise ValueError("noise_std must be positive and finite for every datum.")
        self._noise_std = value

    # -- constants in the caller's namespace ------------------------------
    def dft_matrix(self) -> np.ndarray:
        """The complex direct Fourier transform ``A`` (M, npix**2): ``V = A @ x.ravel()`` (a new array)."""
        return geo.dft_matrix(self.uv, self.npix, self.pixel_size_uas * geo.UAS_TO_RAD, self.pulse)

    def _constants(self, like) -> dict:
        """DFT matrix and closure tables in the namespace, device and dtype of ``like`` (cached)."""
        xp = get_namespace(like)
        key = (xp.__name__, str(array_device(like)), str(like.dtype))
        if key not in self._constants_cache:
            mat = self.dft_matrix()
            # One real product gives both parts: [Re | Im], shape (npix**2, 2M).
            stacked = np.ascontiguousarray(np.concatenate([mat.real.T, mat.imag.T], axis=1))
            self._constants_cache[key] = {
                "dft": asarray_like(stacked, like),
                "tri": asarray_like(self._sets.tri_vis.ravel(), like, dtype=xp.int64),
                "tri_sign": asarray_like(self._sets.tri_sign, like),
                "quad": asarray_like(self._sets.quad_vis.ravel(), like, dtype=xp.int64),
                "quad_sign": asarray_like(np.array([1.0, 1.0, -1.0, -1.0]), like),
            }
        return self._constants_cache[key]

    # -- the forward map ----------------------------------------------------
    def _as_batch(self, X):
        """Return ``(batch, single)``: a float batch ``(J, *x_shape)`` and whether X had no batch axis."""
        xp = get_namespace(X)
        if not xp.isdtype(X.dtype, "real floating"):
            X = xp.astype(X, xp.float64)
        if tuple(X.shape) == self.x_shape:
            return xp.reshape(X, (1, *self.x_shape)), True
        if tuple(X.shape[1:]) != self.x_shape:
            raise ValueError(
                f"expected an image {self.x_shape} or a batch (J, {self.x_shape}); got {tuple(X.shape)}."
            )
        return X, False

    def _vis_parts(self, X):
        """Real and imaginary visibilities ``(J, M)`` of a batch ``(J, *x_shape)``."""
        xp = get_namespace(X)
        out = xp.reshape(X, (X.shape[0], self.npix * self.npix)) @ self._constants(X)["dft"]
        m = self.n_visibilities
        return out[:, :m], out[:, m:]

    def _closures(self, re, im):
        """Closure phases ``(J, n_cp)`` and log closure amplitudes ``(J, n_lca)`` from visibilities."""
        xp = get_namespace(re)
        c = self._constants(re)
        j = re.shape[0]
        phase = xp.atan2(im, re)
        cp = xp.reshape(xp.take(phase, c["tri"], axis=1), (j, self.n_closure_phases, 3))
        cp = _wrap(xp, xp.sum(cp * c["tri_sign"], axis=-1))
        log_amp = 0.5 * xp.log(re**2 + im**2)
        lca = xp.reshape(xp.take(log_amp, c["quad"], axis=1), (j, self.n_log_closure_amplitudes, 4))
        return cp, xp.sum(lca * c["quad_sign"], axis=-1)

    def forward(self, X):
        """Noiseless data of a batch: ``(J, 1, npix, npix) -> (J, n_cp + n_lca + 1)``.

        Columns are the closure phases (rad, in (-pi, pi]), the log closure
        amplitudes and the total flux (Jy), in the namespace and dtype of X.
        """
        xp = get_namespace(X)
        X, _ = self._as_batch(X)
        re, im = self._vis_parts(X)
        cp, lca = self._closures(re, im)
        flux = xp.sum(xp.reshape(X, (X.shape[0], self.npix * self.npix)), axis=1)
        return xp.concat([cp, lca, flux[:, None]], axis=1)

    def visibilities(self, X):
        """Complex visibilities (Jy) of an image ``x_shape`` -> (M,) or a batch -> (J, M)."""
        xp = get_namespace(X)
        Xb, single = self._as_batch(X)
        re, im = self._vis_parts(Xb)
        cdtype = xp.complex64 if re.dtype == xp.float32 else xp.complex128
        vis = xp.astype(re, cdtype) + xp.astype(im, cdtype) * 1j
        return vis[0, ...] if single else vis

    def closure_phases(self, X):
        """Closure phases (rad, in (-pi, pi]) of an image -> (n_cp,) or a batch -> (J, n_cp)."""
        Xb, single = self._as_batch(X)
        cp, _ = self._closures(*self._vis_parts(Xb))
        return cp[0, ...] if single else cp

    def log_closure_amplitudes(self, X):
        """Log closure amplitudes of an image -> (n_lca,) or a batch -> (J, n_lca)."""
        Xb, single = self._as_batch(X)
        _, lca = self._closures(*self._vis_parts(Xb))
        return lca[0, ...] if single else lca

    def split_data(self, Y):
        """Split data ``(..., n_cp + n_lca + 1)`` into closure phases, log closure amplitudes, flux."""
        n_cp, n_lca = self.n_closure_phases, self.n_log_closure_amplitudes
        return Y[..., :n_cp], Y[..., n_cp : n_cp + n_lca], Y[..., n_cp + n_lca]

    def residual(self, Y, y):
        """``Y - y`` with the closure-phase part wrapped into (-pi, pi]."""
        xp = get_namespace(Y, y)
        d = Y - y
        n_cp = self.n_closure_phases
        return xp.concat([_wrap(xp, d[..., :n_cp]), d[..., n_cp:]], axis=-1)

    # -- noise ----------------------------------------------------------------
    def _closure_sigmas(self, vis: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """Linearised data standard deviations from visibilities and their thermal sigmas (NumPy)."""
        inv_snr2 = (sigma / np.abs(vis)) ** 2
        s_cp = np.sqrt(inv_snr2[self._sets.tri_vis].sum(axis=1))
        s_lca = np.sqrt(inv_snr2[self._sets.quad_vis].sum(axis=1))
        return np.concatenate([s_cp, s_lca, [self.flux_sigma]])

    def set_noise_from_image(self, x) -> np.ndarray:
        """Set ``noise_std`` from the noiseless visibilities of an image ``x`` (shape ``x_shape``).

        Returns the new ``noise_std``.
        """
        vis = self.visibilities(np.asarray(to_numpy(x), dtype=float).reshape(self.x_shape))
        self.noise_std = self._closure_sigmas(vis, self.vis_sigma)
        return self._noise_std

    def _corruption(self, rng: np.random.Generator):
        """Per-visibility gain factors ``sqrt(g_a g_b)`` and phases ``phi_b - phi_a``."""
        opts = self.station_corruption
        n_sta, n_t = len(self.stations), len(self.times)
        const = 1.0 + opts["gain_offset"] * rng.standard_normal(n_sta)
        gains = np.abs(const[:, None] * (1.0 + opts["gain_std"] * rng.standard_normal((n_sta, n_t))))
        phases = 2.0 * np.pi * rng.random((n_sta, n_t)) if opts["phase"] else np.zeros((n_sta, n_t))
        a, b, t = self.baselines[:, 0], self.baselines[:, 1], self._tracks.time_index
        return np.sqrt(gains[a, t] * gains[b, t]), phases[b, t] - phases[a, t]

    def observe(self, x, random_state=None, *, noise: bool = True):
        """Simulate one observation of the image ``x`` (shape ``x_shape``).

        Complex thermal noise ``vis_sigma * (n1 + i n2)`` is added to the
        visibilities, then the station corruptions (if configured) are
        applied, and the closure quantities are formed from the result; the
        flux datum gets ``flux_sigma * n``.  ``noise_std`` is set from the
        observed visibilities, and the observation is kept in
        ``observation_`` (for :meth:`metrics` and the chi-squared functions).

        Parameters
        ----------
        x : array of shape ``x_shape``
            True image, Jy per pixel.
        random_state : None, int or numpy.random.Generator
            None uses the problem's own ``random_state`` stream.
        noise : bool
            False skips the thermal and flux noise (station corruptions stay).

        Returns
        -------
        y : array of shape ``y_shape``, in the namespace of ``x``
        """
        if tuple(x.shape) != self.x_shape:
            raise ValueError(f"observe expects one image of shape {self.x_shape}; got {tuple(x.shape)}.")
        rng = (self._rng if random_state is None else RandomSource(random_state, stream="noise")).numpy
        x_np = np.asarray(to_numpy(x), dtype=float)
        vis = self.visibilities(x_np)
        sigma = self.vis_sigma.copy()
        if noise:
            draws = rng.standard_normal((2, self.n_visibilities))
            vis = vis + sigma * (draws[0] + 1j * draws[1])
        if self.station_corruption is not None:
            gain, dphase = self._corruption(rng)
            vis = vis * gain * np.exp(1j * dphase)
            sigma = sigma * gain  # the a-priori calibrated noise scales with the gains
        cp, lca = self._closures(vis.real[None], vis.imag[None])
        flux = x_np.sum() + (self.flux_sigma * rng.standard_normal() if noise else 0.0)
        y = np.concatenate([cp[0], lca[0], [flux]])
        self.noise_std = self._closure_sigmas(vis, sigma)
        self.observed_visibilities_ = vis
        self.observation_ = asarray_like(y, x)
        return self.observation_

    # -- figures of merit ---------------------------------------------------
    def _data_like(self, y, like):
        if y is None:
            y = self.observation_
        if y is None:
            raise ValueError("no data: pass y, or call observe() first.")
        return asarray_like(np.asarray(to_numpy(y), dtype=float), like)

    def chisq_cphase(self, x, y=None):
        """eht-imaging's closure-phase chi-squared ``(2/N) sum (1 - cos(psi_obs - psi)) / sigma**2``.

        Parameters
        ----------
        x : array of shape ``x_shape`` or ``(J, *x_shape)``
        y : array of shape ``y_shape``, optional
            Data (default: the last observation); the sigmas are ``noise_std``.

        Returns
        -------
        float, or array (J,) for a batch
        """
        xp = get_namespace(x)
        Xb, single = self._as_batch(x)
        cp = self.closure_phases(Xb)
        cp_obs = self.split_data(self._data_like(y, cp))[0]
        sigma = asarray_like(self.noise_std[: self.n_closure_phases], cp)
        chi = 2.0 * xp.mean((1.0 - xp.cos(cp_obs - cp)) / sigma**2, axis=-1)
        return float(chi[0, ...]) if single else chi

    def chisq_logcamp(self, x, y=None):
        """eht-imaging's log-closure-amplitude chi-squared ``(1/N) sum ((L_obs - L) / sigma)**2``.

        Same arguments and returns as :meth:`chisq_cphase`.
        """
        xp = get_namespace(x)
        Xb, single = self._as_batch(x)
        lca = self.log_closure_amplitudes(Xb)
        lca_obs = self.split_data(self._data_like(y, lca))[1]
        n_cp = self.n_closure_phases
        sigma = asarray_like(self.noise_std[n_cp : n_cp + self.n_log_closure_amplitudes], lca)
        chi = xp.mean(((lca_obs - lca) / sigma) ** 2, axis=-1)
        return float(chi[0, ...]) if single else chi

    def metrics(self, x_hat, x_true, y=None) -> dict[str, float]:
        """Figures of merit of the EHT imaging literature.

        ``relative_l2``; ``psnr`` = 10 log10(max(x_true)**2 / MSE); the PSNR
        after blurring both images with circular Gaussians of FWHM 10, 15 and
        20 micro-arcseconds (``psnr_blur10`` ...); and, when data are at hand
        (``y`` or the last observation), ``chisq_cphase`` and ``chisq_logcamp``
        (ideal value about 1).  An ensemble ``(J, *x_shape)`` gets the mean
        over its members.  No shift search is done.
        """
        from ..metrics import relative_l2

        x_hat = np.asarray(to_numpy(x_hat), dtype=float)
        x_true = np.asarray(to_numpy(x_true), dtype=float).reshape(self.x_shape)
        members = x_hat.reshape(-1, *self.x_shape)
        out = {"relative_l2": relative_l2(x_hat, x_true), "psnr": _mean_psnr(members, x_true)}
        for fwhm in _BLUR_FWHMS_UAS:
            blur_hat = blur_circular(members, fwhm, self.pixel_size_uas)
            blur_true = blur_circular(x_true, fwhm, self.pixel_size_uas)
            out[f"psnr_blur{fwhm:g}"] = _mean_psnr(blur_hat, blur_true)
        if (y is not None or self.observation_ is not None) and self._noise_std is not None:
            out["chisq_cphase"] = float(np.mean(self.chisq_cphase(members, y)))
            out["chisq_logcamp"] = float(np.mean(self.chisq_logcamp(members, y)))
        return out

    def plot(self, x=None, y=None, x_true=None, ax=None):  # pragma: no cover - graphics
        """Show images on the sky (afmhot, micro-arcseconds, east left) and closure phases over time."""
        import matplotlib.pyplot as plt

        panels = [
            (n, a) for n, a in (("truth", x_true), ("estimate", x), ("closure phases", y)) if a is not None
        ]
        if ax is None:
            _, ax = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
            ax = ax[0]
        half = self.fov_uas / 2.0
        for a, (name, arr) in zip(np.atleast_1d(ax), panels):
            arr = np.asarray(to_numpy(arr), dtype=float)
            if name == "closure phases":
                a.plot(self.triangle_times, np.rad2deg(self.split_data(arr)[0]), ".", ms=3)
                a.set_xlabel("GMST (h)")
                a.set_ylabel("closure phase (deg)")
            else:
                a.imshow(arr.reshape(self.npix, self.npix), cmap="afmhot", extent=(half, -half, -half, half))
                a.set_xlabel("relative RA (µas)")
                a.set_ylabel("relative Dec (µas)")
            a.set_title(name)
        return ax

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(npix={self.npix}, fov_uas={self.fov_uas}, source={self.source!r}, "
            f"n_visibilities={self.n_visibilities}, y_shape={self.y_shape})"
        )


# --------------------------------------------------------------------------
# helpers: blur, PSNR, a synthetic black-hole image
# --------------------------------------------------------------------------


def blur_circular(image, fwhm_uas: float, pixel_size_uas: float) -> np.ndarray:
    """Convolve images with a unit-sum circular Gaussian of the given FWHM.

    Parameters
    ----------
    image : array of shape (..., N, N)
        Only the last two axes are blurred; outside the field is zero.
    fwhm_uas, pixel_size_uas : float
        Beam full width at half maximum and pixel size, micro-arcseconds.

    Returns
    -------
    ndarray, same shape (NumPy)
    """
    from scipy.ndimage import gaussian_filter

    image = np.asarray(to_numpy(image), dtype=float)
    sigma_px = _positive("fwhm_uas", fwhm_uas) / _FWHM_PER_SIGMA / _positive("pixel_size_uas", pixel_size_uas)
    sigmas = (0.0,) * (image.ndim - 2) + (sigma_px, sigma_px)
    return gaussian_filter(image, sigmas, mode="constant", cval=0.0)


def _psnr(estimate: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((estimate - reference) ** 2))
    peak = float(np.max(reference))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


def _mean_psnr(members: np.ndarray, reference: np.ndarray) -> float:
    members = members.reshape(-1, *reference.shape)
    return float(np.mean([_psnr(m, reference) for m in members]))


def crescent_image(
    npix: int = 64,
    fov_uas: float = 160.0,
    diameter_uas: float = 40.0,
    width_uas: float = 6.0,
    asymmetry: float = 0.5,
    position_angle_deg: float = 180.0,
    flux_jy: float = 0.6,
) -> np.ndarray:
    """A black-hole-like crescent: a Gaussian ring brighter on one side.

    Brightness ``exp(-(r - d/2)**2 / (2 s**2)) * (1 + asymmetry * cos(theta - PA))``
    with ``s = width / 2.355`` and ``theta`` the position angle east of north,
    normalised to ``flux_jy``; on the pixel grid of
    :class:`ClosurePhaseInterferometry` (north up, east left).

    Returns
    -------
    ndarray of shape (1, npix, npix)
        Jy per pixel.
    """
    if not 0.0 <= asymmetry <= 1.0:
        raise ValueError(f"asymmetry must be in [0, 1] (got {asymmetry!r}).")
    psize = _positive("fov_uas", fov_uas) / npix
    centres = geo.pixel_centres(int(npix), psize)
    north, east = np.meshgrid(centres, centres, indexing="ij")  # rows: Dec, columns: RA
    radius = np.hypot(east, north)
    theta = np.arctan2(east, north)
    sigma = _positive("width_uas", width_uas) / _FWHM_PER_SIGMA
    ring = np.exp(-0.5 * ((radius - _positive("diameter_uas", diameter_uas) / 2.0) / sigma) ** 2)
    image = ring * (1.0 + asymmetry * np.cos(theta - np.deg2rad(position_angle_deg)))
    return (_positive("flux_jy", flux_jy) * image / image.sum())[None]
