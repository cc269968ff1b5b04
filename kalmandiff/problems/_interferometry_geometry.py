"""Geometry of a VLBI observation: stations, (u, v) tracks, thermal noise and closure sets.

Everything here is plain NumPy, evaluated once when a
:class:`~kalmandiff.problems.ClosurePhaseInterferometry` is built.  The
conventions are those of the eht-imaging package (ehtim), so that its
numbers can serve as a test oracle:

* times are Greenwich mean sidereal time (GMST) in hours, the hour angle is
  ``(GMST - RA) * 15 deg`` and station positions (Earth-centred, Earth-fixed,
  metres) are rotated about the polar axis by it;
* a baseline ``(a, b)`` between stations ``a < b`` (in the SEFD order below)
  has ``(u, v) = (r_a - r_b) . (p_U, p_V) / lambda`` with ``p_U = (0, 1, 0)``
  and ``p_V = (-sin dec, 0, cos dec)``;
* stations are ordered by increasing ``sqrt(SEFD_R**2 + SEFD_L**2)`` (a stable
  sort), so the most sensitive station is the reference of the closure sets;
* the image pixel centres are ``x_k = (N/2 - 1/2 - k) p`` (right ascension
  grows to the left) and ``y_j = (N/2 - 1/2 - j) p``, the image vector is
  ``imvec[j * N + k]`` and ``V(u, v) = P(u, v) sum_jk I_jk exp(+2 pi i (u x_k + v y_j))``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SPEED_OF_LIGHT",
    "SOURCES",
    "StationTable",
    "load_station_table",
    "shipped_arrays",
    "resolve_source",
    "observing_times",
    "UVTracks",
    "uv_tracks",
    "ClosureSets",
    "closure_sets",
    "thermal_sigma",
    "pixel_centres",
    "pulse_response",
    "dft_matrix",
    "UAS_TO_RAD",
]

SPEED_OF_LIGHT = 299792458.0  # m/s
UAS_TO_RAD = np.pi / 180.0 / 3600.0 / 1e6

# Right ascension (hours) and declination (degrees) of the usual EHT targets.
SOURCES = {
    "M87": (12.51373, 12.39112),
    "SGRA*": (17.761122472222223, -28.992189444444445),
}

_DATA_DIR = Path(__file__).resolve().parent / "data"
_PULSES = ("triangle", "rect", "delta")


# --------------------------------------------------------------------------
# stations
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class StationTable:
    """Station names, positions and sensitivities.

    Attributes
    ----------
    names : tuple of str
    xyz : ndarray of shape (S, 3)
        Earth-centred, Earth-fixed positions in metres.
    sefd : ndarray of shape (S, 2)
        System equivalent flux densities of the R and L receivers, in Jy.
    """

    names: tuple
    xyz: np.ndarray
    sefd: np.ndarray

    def sorted_by_sefd(self) -> StationTable:
        """Return the table ordered by increasing ``sqrt(SEFD_R**2 + SEFD_L**2)`` (stable)."""
        order = np.argsort(np.hypot(self.sefd[:, 0], self.sefd[:, 1]), kind="stable")
        return StationTable(tuple(self.names[i] for i in order), self.xyz[order], self.sefd[order])


def shipped_arrays() -> list[str]:
    """Names of the station tables shipped with kalmandiff (``"EHT2017"``, ...)."""
    return sorted(p.stem for p in _DATA_DIR.glob("*.txt"))


def _table_from_rows(rows, origin: str) -> StationTable:
    names, xyz, sefd = [], [], []
    for name, values in rows:
        values = [float(v) for v in values]
        if len(values) not in (4, 5):
            raise ValueError(
                f"array: station {name!r} in {origin} needs X, Y, Z (m) and one or two SEFDs (Jy); "
                f"got {len(values)} numbers."
            )
        if len(values) == 4:
            values.append(values[3])
        names.append(str(name))
        xyz.append(values[:3])
        sefd.append(values[3:])
    if len(names) < 2:
        raise ValueError(f"array: {origin} must list at least two stations (got {len(names)}).")
    if len(set(names)) != len(names):
        raise ValueError(f"array: station names in {origin} must be unique (got {names}).")
    xyz = np.asarray(xyz, dtype=float)
    sefd = np.asarray(sefd, dtype=float)
    if not np.all(np.isfinite(xyz)) or np.any(np.all(xyz == 0.0, axis=1)):
        raise ValueError(
            f"array: station positions in {origin} must be finite and not at the Earth's centre "
            "(space stations are not supported)."
        )
    if np.any(~np.isfinite(sefd)) or np.any(sefd <= 0):
        raise ValueError(f"array: SEFDs in {origin} must be positive numbers (Jy).")
    return StationTable(tuple(names), xyz, sefd)


def _parse_table_file(path: Path) -> StationTable:
    rows = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if fields[0].lower() == "site":  # optional header line
            continue
        try:
            rows.append((fields[0], [float(f) for f in fields[1:]]))
        except ValueError as exc:
            raise ValueError(f"array: cannot read the line {line!r} of {path}.") from exc
    return _table_from_rows(rows, str(path))


def load_station_table(array) -> StationTable:
    """Read a station table.

    Parameters
    ----------
    array : str, path-like, mapping or StationTable
        The name of a shipped table (see :func:`shipped_arrays`, case
        insensitive), the path of a text file with one station per line
        (``name X Y Z SEFD`` or ``name X Y Z SEFD_R SEFD_L``; metres and Jy;
        ``#`` starts a comment), or a mapping ``name -> (X, Y, Z, SEFD[, SEFD_L])``.

    Returns
    -------
    StationTable
        In the order given (not yet sorted by SEFD).
    """
    if isinstance(array, StationTable):
        return array
    if isinstance(array, Mapping):
        return _table_from_rows(list(array.items()), "the station mapping")
    if isinstance(array, (str, os.PathLike)):
        shipped = {name.lower(): name for name in shipped_arrays()}
        if isinstance(array, str) and array.lower() in shipped:
            return _parse_table_file(_DATA_DIR / f"{shipped[array.lower()]}.txt")
        path = Path(array)
        if path.is_file():
            return _parse_table_file(path)
        raise ValueError(
            f"array must be a shipped table ({', '.join(shipped_arrays())}), the path of a station file "
            f"or a mapping of stations; got {array!r}."
        )
    raise ValueError(
        f"array must be a table name, a path or a mapping of stations (got {type(array).__name__})."
    )


def resolve_source(source, ra_hours, dec_deg) -> tuple[str, float, float]:
    """Return ``(name, ra_hours, dec_deg)`` from a source name or explicit coordinates.

    Explicit ``ra_hours`` and ``dec_deg`` win (``source`` is then only a label);
    otherwise ``source`` must be one of :data:`SOURCES` (case insensitive).
    """
    if (ra_hours is None) != (dec_deg is None):
        raise ValueError("ra_hours and dec_deg must be given together (or neither).")
    if ra_hours is not None:
        ra, dec = float(ra_hours), float(dec_deg)
        if not 0.0 <= ra < 24.0:
            raise ValueError(f"ra_hours must be in [0, 24) (got {ra_hours!r}).")
        if not -90.0 <= dec <= 90.0:
            raise ValueError(f"dec_deg must be in [-90, 90] (got {dec_deg!r}).")
        return ("custom" if source is None else str(source)), ra, dec
    key = str(source).upper()
    if key not in SOURCES:
        raise ValueError(
            f"source must be one of {', '.join(SOURCES)} or given by ra_hours/dec_deg (got {source!r})."
        )
    ra, dec = SOURCES[key]
    return str(source), ra, dec


# --------------------------------------------------------------------------
# (u, v) tracks
# --------------------------------------------------------------------------


def observing_times(tstart_h: float, tstop_h: float, tadv_s: float) -> np.ndarray:
    """Scan start times in hours: ``arange(tstart, tstop, tadv / 3600)``, wrapping past 24 h."""
    if tstop_h < tstart_h:
        tstop_h = tstop_h + 24.0
    return np.arange(tstart_h, tstop_h, tadv_s / 3600.0)


@dataclass(frozen=True)
class UVTracks:
    """The visibilities of one observation, time-major then baseline.

    Attributes
    ----------
    time_index : ndarray of int, shape (M,)
        Index of each visibility's time in ``times``.
    times : ndarray, shape (T,)
        GMST hours of the times at which at least one baseline sees the source.
    baselines : ndarray of int, shape (M, 2)
        Station indices ``(a, b)`` with ``a < b``.
    uv : ndarray, shape (M, 2)
        Spatial frequencies in wavelengths.
    sigma : ndarray, shape (M,)
        Thermal noise standard deviation of the real and of the imaginary part, in Jy.
    """

    time_index: np.ndarray
    times: np.ndarray
    baselines: np.ndarray
    uv: np.ndarray
    sigma: np.ndarray


def _rotate_z(xyz: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Rotate positions ``(S, 3)`` about the z axis by each angle ``(T,)``: ``(T, S, 3)``."""
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    return np.stack([c * x - s * y, s * x + c * y, np.broadcast_to(z, (len(theta), len(z)))], axis=-1)


def thermal_sigma(sefd: np.ndarray, a: np.ndarray, b: np.ndarray, bandwidth_hz: float, tint_s: float):
    """Stokes I thermal noise (Jy) on baselines ``a-b``, with 2-bit quantisation efficiency 0.88.

    Each circular-polarisation product has ``sqrt(S_a S_b / (2 bw tint)) / 0.88``;
    Stokes I = (RR + LL) / 2 has half the root sum of squares of the two.
    """
    sig_rr = np.sqrt(sefd[a, 0] * sefd[b, 0] / (2.0 * bandwidth_hz * tint_s)) / 0.88
    sig_ll = np.sqrt(sefd[a, 1] * sefd[b, 1] / (2.0 * bandwidth_hz * tint_s)) / 0.88
    return 0.5 * np.sqrt(sig_rr**2 + sig_ll**2)


def uv_tracks(
    stations: StationTable,
    ra_hours: float,
    dec_deg: float,
    freq_hz: float,
    times_h: np.ndarray,
    elevation_limits_deg: tuple[float, float],
    bandwidth_hz: float,
    tint_s: float,
) -> UVTracks:
    """Earth-rotation (u, v) coverage with an elevation cut at both ends of each baseline.

    A visibility at time ``t`` on ``(a, b)`` is kept when both stations see
    the source strictly between the elevation limits.
    """
    dec = np.deg2rad(dec_deg)
    source = np.array([np.cos(dec), 0.0, np.sin(dec)])
    proj = np.array([[0.0, 1.0, 0.0], [-np.sin(dec), 0.0, np.cos(dec)]])  # p_U, p_V
    wavelength = SPEED_OF_LIGHT / freq_hz

    theta = np.mod((times_h - ra_hours) * np.deg2rad(15.0), 2.0 * np.pi)
    pos = _rotate_z(stations.xyz, theta)  # (T, S, 3)
    cos_zenith = pos @ source / np.linalg.norm(pos, axis=-1)
    elev = np.rad2deg(0.5 * np.pi - np.arccos(np.clip(cos_zenith, -1.0, 1.0)))
    lo, hi = elevation_limits_deg
    visible = (elev > lo) & (elev < hi)  # (T, S)

    pairs = np.array(list(itertools.combinations(range(len(stations.names)), 2)), dtype=int)
    seen = visible[:, pairs[:, 0]] & visible[:, pairs[:, 1]]  # (T, P)
    t_idx, p_idx = np.nonzero(seen)  # row-major: time-major, then pair order
    a, b = pairs[p_idx, 0], pairs[p_idx, 1]
    uv = np.einsum("mi,ki->mk", pos[t_idx, a] - pos[t_idx, b], proj) / wavelength

    kept_times, time_index = np.unique(t_idx, return_inverse=True)
    return UVTracks(
        time_index=time_index.astype(int),
        times=times_h[kept_times],
        baselines=np.stack([a, b], axis=1),
        uv=uv,
        sigma=thermal_sigma(stations.sefd, a, b, bandwidth_hz, tint_s),
    )


# --------------------------------------------------------------------------
# minimal closure sets
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClosureSets:
    """Minimal non-redundant closure triangles and quadrangles, per time.

    Attributes
    ----------
    tri_vis, tri_sign : ndarray, shape (n_cp, 3)
        Visibility indices and signs (+1 as stored, -1 conjugated) of the
        baselines ``(s1, s2), (s2, s3), (s3, s1)``; the closure phase is
        ``sum(sign * arg V[vis])``.
    tri_stations : ndarray of int, shape (n_cp, 3)
    tri_time : ndarray of int, shape (n_cp,)
        Index into the observing times.
    quad_vis : ndarray of int, shape (n_lca, 4)
        Visibility indices of ``(s1, s2), (s3, s4), (s1, s4), (s2, s3)``; the
        log closure amplitude is ``ln|V12| + ln|V34| - ln|V14| - ln|V23|``.
    quad_stations : ndarray of int, shape (n_lca, 4)
    quad_time : ndarray of int, shape (n_lca,)
    """

    tri_vis: np.ndarray
    tri_sign: np.ndarray
    tri_stations: np.ndarray
    tri_time: np.ndarray
    quad_vis: np.ndarray
    quad_stations: np.ndarray
    quad_time: np.ndarray


def _edge(lookup: dict, p: int, q: int):
    """Visibility index and orientation sign of baseline ``p -> q``, or None if it is missing."""
    if (p, q) in lookup:
        return lookup[(p, q)], 1.0
    if (q, p) in lookup:
        return lookup[(q, p)], -1.0
    return None


def _triangles(present: list[int]) -> list[tuple[int, int, int]]:
    """(ref, a, b) for every pair a < b of the non-reference stations."""
    ref, others = present[0], present[1:]
    return [(ref, a, b) for a, b in itertools.combinations(others, 2)]


def _quadrangles(present: list[int]) -> list[tuple[int, int, int, int]]:
    """The N(N-3)/2 quadrangles (ref, s_i, s_j, s_k), k = 1 if j = i-1 else j+1."""
    quads = []
    for i in range(3, len(present)):
        for j in range(1, i):
            k = 1 if j == i - 1 else j + 1
            quads.append((present[0], present[i], present[j], present[k]))
    return quads


def closure_sets(tracks: UVTracks) -> ClosureSets:
    """Minimal closure-phase triangles and log-closure-amplitude quadrangles of each time.

    The reference station of a time is the first present station in SEFD
    order; a combination with a missing baseline is skipped.
    """
    tri_vis, tri_sign, tri_st, tri_t = [], [], [], []
    quad_vis, quad_st, quad_t = [], [], []
    for t in range(len(tracks.times)):
        rows = np.flatnonzero(tracks.time_index == t)
        lookup = {(int(tracks.baselines[m, 0]), int(tracks.baselines[m, 1])): int(m) for m in rows}
        present = sorted({s for pair in lookup for s in pair})
        for tri in _triangles(present):
            edges = [
                _edge(lookup, tri[0], tri[1]),
                _edge(lookup, tri[1], tri[2]),
                _edge(lookup, tri[2], tri[0]),
            ]
            if any(e is None for e in edges):
                continue
            tri_vis.append([e[0] for e in edges])
            tri_sign.append([e[1] for e in edges])
            tri_st.append(tri)
            tri_t.append(t)
        for q in _quadrangles(present):
            edges = [_edge(lookup, q[0], q[1]), _edge(lookup, q[2], q[3])]
            edges += [_edge(lookup, q[0], q[3]), _edge(lookup, q[1], q[2])]
            if any(e is None for e in edges):
                continue
            quad_vis.append([e[0] for e in edges])
            quad_st.append(q)
            quad_t.append(t)

    def arr(rows, width, dtype):
        return np.asarray(rows, dtype=dtype).reshape(-1, width) if width else np.asarray(rows, dtype=dtype)

    return ClosureSets(
        tri_vis=arr(tri_vis, 3, int),
        tri_sign=arr(tri_sign, 3, float),
        tri_stations=arr(tri_st, 3, int),
        tri_time=arr(tri_t, 0, int),
        quad_vis=arr(quad_vis, 4, int),
        quad_stations=arr(quad_st, 4, int),
        quad_time=arr(quad_t, 0, int),
    )


# --------------------------------------------------------------------------
# the direct Fourier transform
# --------------------------------------------------------------------------


def pixel_centres(npix: int, psize: float) -> np.ndarray:
    """Pixel-centre offsets ``(N/2 - 1/2 - k) * psize``, k = 0..N-1 (first pixel east/north)."""
    return (npix / 2.0 - 0.5 - np.arange(npix)) * psize


def pulse_response(uv: np.ndarray, psize: float, pulse: str) -> np.ndarray:
    """Fourier transform of the pixel pulse at each (u, v): ``(M,)``.

    ``"triangle"`` (bilinear interpolation between pixel centres) gives
    ``sinc(p u)**2 sinc(p v)**2``; ``"rect"`` (square pixels) gives
    ``sinc(p u) sinc(p v)``; ``"delta"`` (point sources) gives 1.  ``sinc`` is
    the normalised ``sin(pi x) / (pi x)``.
    """
    if pulse == "triangle":
        return (np.sinc(psize * uv[:, 0]) * np.sinc(psize * uv[:, 1])) ** 2
    if pulse == "rect":
        return np.sinc(psize * uv[:, 0]) * np.sinc(psize * uv[:, 1])
    if pulse == "delta":
        return np.ones(len(uv))
    raise ValueError(f"pulse must be one of {', '.join(_PULSES)} (got {pulse!r}).")


def dft_matrix(uv: np.ndarray, npix: int, psize: float, pulse: str) -> np.ndarray:
    """Dense direct Fourier transform ``A`` of shape ``(M, npix * npix)``, complex.

    ``V = A @ imvec`` with ``imvec[j * npix + k]`` the flux (Jy) of row j, column k.
    """
    centres = pixel_centres(npix, psize)
    ex = np.exp(2j * np.pi * np.outer(uv[:, 0], centres))  # (M, N) over columns k
    ey = np.exp(2j * np.pi * np.outer(uv[:, 1], centres))  # (M, N) over rows j
    mat = ey[:, :, None] * ex[:, None, :] * pulse_response(uv, psize, pulse)[:, None, None]
    return mat.reshape(len(uv), npix * npix)
