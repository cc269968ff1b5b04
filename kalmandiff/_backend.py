"""Array namespaces, devices, random numbers and DLPack bridges.

Everything numerical in kalmandiff is written once against the Python array
API standard.  This module is the only place that knows which concrete
libraries exist:

* :func:`get_namespace` picks the namespace from the data (NumPy, CuPy,
  torch, ``array_api_strict``), through :mod:`array_api_compat`.
* :func:`namespace_for_device` maps a user's ``device=`` option (``"cpu"``,
  ``"cuda"``) to a namespace; CuPy is imported lazily, only when asked for.
* :func:`check_random_state` and :class:`RandomSource` turn a user's
  ``random_state`` into generators.  An integer seed names a *family* of
  streams: every consumer (a problem's truth, its observation noise, each
  solver, a prior's sampler) derives its own generator from the seed and a
  stream name, so equal integers given to a problem and to a solver never
  correlate their draws (see :func:`stream_seed`).  :class:`RandomSource`
  fans one stream out to NumPy, CuPy and torch generators, so that the same
  seed gives the same draws whatever the backend, and its state can be
  saved and restored.
* :func:`to_torch` / :func:`from_torch` move arrays across the torch
  boundary through DLPack, zero-copy wherever the standard allows.
"""

from __future__ import annotations

import numbers
import zlib
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import array_namespace, is_cupy_array, is_numpy_array, is_torch_array
from array_api_compat import device as array_device

__all__ = [
    "move_like",
    "get_namespace",
    "namespace_for_device",
    "check_device",
    "RandomSource",
    "check_random_state",
    "stream_seed",
    "spawn_streams",
    "to_numpy",
    "to_torch",
    "from_torch",
    "asarray_like",
    "array_device",
    "is_cupy_array",
    "is_numpy_array",
    "is_torch_array",
]

_DEVICES = ("cpu", "cuda")


def get_namespace(*arrays: Any):
    """Return the array-API namespace that the arrays belong to.

    Python scalars and ``None`` are ignored.  Mixing namespaces (NumPy with
    CuPy, say) raises ``TypeError`` from :mod:`array_api_compat`.
    """
    arrays = [a for a in arrays if a is not None and not isinstance(a, numbers.Number)]
    return array_namespace(*arrays)


def check_device(device: str | None) -> str | None:
    """Validate a ``device=`` option: ``None`` (follow the data), ``"cpu"`` or ``"cuda"``."""
    if device is None:
        return None
    if not isinstance(device, str) or device.split(":")[0] not in _DEVICES:
        raise ValueError(f"device must be None, 'cpu' or 'cuda' (got {device!r}).")
    return device


def _import_cupy():
    """Import CuPy and check that a GPU is usable; raise a clear error otherwise."""
    try:
        import cupy
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "device='cuda' needs CuPy, which is not installed. Install the GPU extra: "
            "pip install 'kalmandiff[gpu]' (or a cupy-cudaXXx wheel matching your CUDA)."
        ) from exc
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            f"device='cuda' was requested but CuPy cannot reach a GPU ({exc}). "
            "Use device='cpu' on a machine without an NVIDIA driver."
        ) from exc
    if n < 1:  # pragma: no cover - depends on the machine
        raise RuntimeError("device='cuda' was requested but no CUDA device is visible.")
    return cupy


def namespace_for_device(device: str | None):
    """Return the namespace that holds arrays on ``device``.

    ``None`` and ``"cpu"`` give NumPy (through :mod:`array_api_compat`);
    ``"cuda"`` gives CuPy, imported only now, with a clear ``RuntimeError``
    when CuPy or a GPU is missing.
    """
    device = check_device(device)
    if device is None or device == "cpu":
        return array_api_compat.array_namespace(np.empty(0))
    cupy = _import_cupy()
    return array_api_compat.array_namespace(cupy.empty(0))


def to_numpy(x: Any) -> np.ndarray:
    """Copy (or view, on CPU) any supported array as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    if is_cupy_array(x):
        return x.get()
    if is_torch_array(x):
        return x.detach().resolve_conj().cpu().numpy()
    if isinstance(x, (numbers.Number, list, tuple)):
        return np.asarray(x)
    # array_api_strict and other standard arrays: go through DLPack / buffer.
    try:
        return np.from_dlpack(x)
    except Exception:
        return np.asarray(x)


def asarray_like(value: Any, like: Any, dtype=None):
    """Put ``value`` (NumPy array, scalar, ...) in the namespace and device of ``like``."""
    xp = get_namespace(like)
    if dtype is None:
        dtype = like.dtype
    if not (is_cupy_array(value) or is_torch_array(value)):
        value = np.asarray(value)
    return xp.asarray(value, dtype=dtype, device=array_device(like))


# --------------------------------------------------------------------------
# random numbers
# --------------------------------------------------------------------------


def move_like(arr: Any, like: Any):
    """``arr`` in the namespace and on the device of ``like`` (itself if already there)."""
    try:
        if get_namespace(arr) is get_namespace(like) and array_device(arr) == array_device(like):
            return arr
    except TypeError:
        pass
    return asarray_like(to_numpy(arr), like)


def stream_seed(seed: int, stream: str) -> np.random.SeedSequence:
    """The seed sequence of the named ``stream`` in the family of integer ``seed``.

    Streams of one seed are statistically independent of each other and of
    plain ``numpy.random.default_rng(seed)``: the stream name is hashed into
    the :class:`~numpy.random.SeedSequence`'s spawn key, the mechanism NumPy
    uses for independent child streams.  This is why
    ``kd.problems.make(name, random_state=0)`` and ``EnKGSolver(...,
    random_state=0)`` can share an integer without sharing draws.

    Parameters
    ----------
    seed : int
        A non-negative integer.
    stream : str
        The consumer's name, e.g. ``"truth"``, ``"noise"``, ``"solver"``.
    """
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream must be a non-empty string (got {stream!r}).")
    key = zlib.crc32(stream.encode("utf-8"))
    return np.random.SeedSequence(int(seed), spawn_key=(key,))


def check_random_state(random_state: Any, stream: str) -> np.random.Generator:
    """Turn ``None``, an int or a :class:`numpy.random.Generator` into a Generator.

    Parameters
    ----------
    random_state : None, int, numpy.random.Generator, SeedSequence or RandomSource
        A Generator is used as is (and advanced), as in SPEC 7: the caller
        who passes one Generator to two consumers chooses to share it.  An
        int selects the named ``stream`` of that seed (:func:`stream_seed`);
        ``None`` draws fresh entropy.
    stream : str
        The consumer's stream name, used only for an integer seed.
    """
    if isinstance(random_state, bool):
        raise ValueError("random_state must be None, an int or a Generator, not a bool.")
    if isinstance(random_state, (numbers.Integral, np.integer)):
        return np.random.default_rng(stream_seed(int(random_state), stream))
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.SeedSequence):
        return np.random.default_rng(random_state)
    if isinstance(random_state, RandomSource):
        return random_state.numpy
    raise ValueError(
        "random_state must be None, an int, a numpy.random.Generator or a SeedSequence "
        f"(got {type(random_state).__name__})."
    )


def spawn_streams(random_state: Any, *streams: str) -> list[np.random.Generator]:
    """One independent Generator per stream name, from one ``random_state``.

    An int or None gives each name its own stream of the seed
    (:func:`stream_seed`); a Generator (or RandomSource) spawns independent
    children, advancing the parent, so that a problem instance built from
    one Generator still draws its truth and its noise independently.
    """
    if isinstance(random_state, RandomSource):
        random_state = random_state.numpy
    if isinstance(random_state, np.random.Generator):
        return list(random_state.spawn(len(streams)))
    if random_state is None:
        parent = np.random.SeedSequence()
        return [np.random.default_rng(s) for s in parent.spawn(len(streams))]
    return [check_random_state(random_state, name) for name in streams]


class RandomSource:
    """One source of randomness for every backend.

    NumPy draws come from a :class:`numpy.random.Generator`.  CuPy and torch
    generators are seeded lazily from that generator the first time they are
    needed, so one ``random_state`` fixes every draw.  Draws for NumPy-like
    namespaces (NumPy itself, ``array_api_strict``) are made with NumPy and
    converted, which keeps results identical across those namespaces.

    Parameters
    ----------
    random_state : None, int, numpy.random.Generator or RandomSource
        The seed.  A RandomSource is shared, not copied; an int selects the
        named ``stream`` of that seed (:func:`stream_seed`).
    stream : str
        The consumer's stream name (``"solver"``, ``"noise"``, ...).
    """

    def __init__(self, random_state: Any = None, stream: str = ""):
        if isinstance(random_state, RandomSource):
            self.numpy = random_state.numpy
            self._cupy = random_state._cupy
            self._torch = random_state._torch
        else:
            # an integer seed without a stream name is refused by stream_seed
            self.numpy = check_random_state(random_state, stream)
            self._cupy = None
            self._torch = {}

    def _child_seed(self) -> int:
        return int(self.numpy.integers(0, 2**63 - 1))

    def normal(self, shape: tuple[int, ...], like: Any = None, xp=None, dtype=None):
        """Standard normal draws of ``shape`` in the namespace/device of ``like``.

        Parameters
        ----------
        shape : tuple of int
        like : array, optional
            Draws are returned in this array's namespace, device and dtype.
        xp : namespace, optional
            Used when ``like`` is not given (default NumPy).
        dtype : dtype, optional
            Overrides the dtype (default: ``like.dtype`` or float64).
        """
        shape = tuple(int(s) for s in shape)
        if like is not None:
            xp = get_namespace(like)
            dtype = like.dtype if dtype is None else dtype
        if xp is None:
            xp = namespace_for_device("cpu")
        if like is not None and is_cupy_array(like):
            if self._cupy is None:
                import cupy

                self._cupy = cupy.random.default_rng(self._child_seed())
            out = self._cupy.standard_normal(shape, dtype="float64")
            return xp.astype(out, dtype) if dtype is not None else out
        if like is not None and is_torch_array(like):
            import torch

            dev = like.device
            key = str(dev)
            if key not in self._torch:
                gen = torch.Generator(device=dev)
                gen.manual_seed(self._child_seed())
                self._torch[key] = gen
            return torch.randn(shape, generator=self._torch[key], device=dev, dtype=dtype)
        draws = self.numpy.standard_normal(shape)
        if like is not None:
            return asarray_like(draws, like, dtype=dtype)
        return xp.asarray(draws, dtype=dtype) if dtype is not None else xp.asarray(draws)

    def uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform draws on [0, 1) as a NumPy array (for small host-side choices)."""
        return self.numpy.random(shape)

    def get_state(self) -> dict:
        """Return a picklable snapshot of every generator's state."""
        state = {"numpy": self.numpy.bit_generator.state}
        if self._cupy is not None:  # pragma: no cover - GPU only
            state["cupy"] = self._cupy.bit_generator.state
        state["torch"] = {k: g.get_state() for k, g in self._torch.items()}
        return state

    def set_state(self, state: dict) -> None:
        """Restore a snapshot taken by :meth:`get_state`."""
        self.numpy.bit_generator.state = state["numpy"]
        if "cupy" in state:  # pragma: no cover - GPU only
            import cupy

            if self._cupy is None:
                self._cupy = cupy.random.default_rng(0)
            self._cupy.bit_generator.state = state["cupy"]
        if state.get("torch"):
            import torch

            for key, tstate in state["torch"].items():
                gen = self._torch.get(key)
                if gen is None:
                    gen = torch.Generator(device=key)
                    self._torch[key] = gen
                gen.set_state(tstate)


# --------------------------------------------------------------------------
# DLPack bridges
# --------------------------------------------------------------------------


def to_torch(x: Any, device: Any = None):
    """Hand an array to torch through DLPack.

    NumPy arrays become CPU tensors and CuPy arrays CUDA tensors sharing the
    same memory (zero-copy) when they are C-contiguous; otherwise a
    contiguous copy is made first, because torch's DLPack import rejects
    some strides (negative ones in particular).  ``device`` moves the result
    afterwards (a copy when it differs).
    """
    import torch

    if is_torch_array(x):
        out = x
    else:
        if is_numpy_array(x):
            x = np.ascontiguousarray(x)
        elif is_cupy_array(x):  # pragma: no cover - GPU only
            import cupy

            x = cupy.ascontiguousarray(x)
            # torch reads on its current stream; make CuPy's work visible.
            cupy.cuda.get_current_stream().synchronize()
        out = torch.from_dlpack(x)
    if device is not None:
        out = out.to(device)
    return out


def from_torch(t: Any, like: Any = None):
    """Bring a torch tensor back into the namespace of ``like`` through DLPack.

    The tensor is detached and its conjugate bit resolved first (torch refuses
    to export either).  A CPU tensor becomes a NumPy array sharing memory, a
    CUDA tensor a CuPy array sharing memory.  With ``like=None`` the
    namespace follows the tensor's device.
    """
    t = t.detach().resolve_conj()
    if not t.is_contiguous():
        t = t.contiguous()
    if like is not None and is_torch_array(like):
        return t.to(like.device)
    if like is not None and not (is_numpy_array(like) or is_cupy_array(like)):
        # A strict/other namespace: go through NumPy, keeping the tensor's dtype.
        host = t.cpu().numpy()
        xp = get_namespace(like)
        return xp.asarray(host, device=array_device(like))
    if t.device.type == "cuda":  # pragma: no cover - GPU only
        import cupy

        torch_stream = __import__("torch").cuda.current_stream(t.device)
        torch_stream.synchronize()
        return cupy.from_dlpack(t)
    if t.device.type != "cpu":
        t = t.cpu()
    return np.from_dlpack(t)
