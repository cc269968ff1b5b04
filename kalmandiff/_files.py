"""Files that never run code when read: arrays in a NumPy ``.npz`` archive, everything else in JSON.

Saved solvers, checkpoints and results exports are ``.npz`` archives read
with ``numpy.load(..., allow_pickle=False)``: one entry ``__kalmandiff__``
holds a JSON document (what the file is, the format, the library version,
and the saved data as a tree of plain values), the arrays sit beside it as
``.npy`` entries that the tree refers to by name.  Nothing in a file names
code to run: the only types rebuilt from it are plain values, NumPy arrays,
torch tensors (for random-generator states) and NumPy random generators of
the bit generators listed in :data:`_BIT_GENERATORS`.  A file that is
anything else (a pickle, a damaged archive, another program's ``.npz``) is
refused with an error that names it and says what it is.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NotPlainData", "encode", "decode", "write_archive", "read_archive", "describe_file"]

FORMAT = 2
META = "__kalmandiff__"
_TAG = "__kd_"
#: entry names of the arrays that a tree refers to
ARRAY_PREFIX = "__kd_array_"
#: the NumPy bit generators a saved ``random_state`` Generator may name
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")


class NotPlainData(TypeError):
    """A value that a safe file cannot hold (a function, a torch module, an arbitrary object)."""


def encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON-ready data; its arrays go into ``arrays`` (named ``__kd_array_0``, ...).

    Raises
    ------
    NotPlainData
        For anything but None, bool, int, float, str, lists, tuples, dicts,
        arrays (NumPy, torch, or any namespace ``to_numpy`` converts) and
        NumPy random generators.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [encode(v, arrays) for v in value]
        return items if isinstance(value, list) else {_TAG + "tuple": items}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith(_TAG) for k in value):
            return {k: encode(v, arrays) for k, v in value.items()}
        return {_TAG + "items": [[encode(k, arrays), encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, np.random.Generator):
        state = value.bit_generator.state
        return {_TAG + "generator": {"bit_generator": state["bit_generator"], "state": encode(state, arrays)}}
    if _is_torch_tensor(value):
        return {_TAG + "torch": _add(arrays, value.detach().cpu().numpy())}
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        from ._backend import to_numpy

        arr = np.asarray(to_numpy(value))
        if arr.dtype.hasobject:
            raise NotPlainData("an array of Python objects")
        return {_TAG + "array": _add(arrays, arr)}
    raise NotPlainData(f"a {type(value).__module__}.{type(value).__qualname__}")


def _add(arrays: dict, arr: np.ndarray) -> str:
    name = f"{ARRAY_PREFIX}{len(arrays)}"
    arrays[name] = np.array(arr, copy=True)
    return name


def _is_torch_tensor(value) -> bool:
    torch = _torch_if_loaded()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_if_loaded():
    import sys

    return sys.modules.get("torch")


def decode(data: Any, arrays) -> Any:
    """The inverse of :func:`encode`; ``arrays`` maps entry names to arrays."""
    if isinstance(data, list):
        return [decode(v, arrays) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1:
        ((key, inner),) = data.items()
        if key == _TAG + "tuple":
            return tuple(decode(v, arrays) for v in inner)
        if key == _TAG + "items":
            return {_hashable(decode(k, arrays)): decode(v, arrays) for k, v in inner}
        if key == _TAG + "array":
            return np.asarray(arrays[inner])
        if key == _TAG + "torch":
            import torch

            return torch.from_numpy(np.array(arrays[inner], copy=True))
        if key == _TAG + "generator":
            return _generator(inner, arrays)
    return {k: decode(v, arrays) for k, v in data.items()}


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


def _generator(inner: dict, arrays) -> np.random.Generator:
    name = inner.get("bit_generator")
    if name not in _BIT_GENERATORS:
        raise ValueError(f"a saved random generator names an unknown bit generator {name!r}.")
    bitgen = getattr(np.random, name)()
    bitgen.state = decode(inner["state"], arrays)
    return np.random.Generator(bitgen)


def write_archive(path, kind: str, tree: Any, extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``tree`` (and ``extra`` arrays under their own names) to ``path`` atomically.

    The archive is written to a temporary file in the same folder, flushed
    and renamed over ``path``, so a process that dies mid-write leaves the
    previous file intact.  ``path`` is used as given (no ``.npz`` appended).
    """
    from ._version import __version__

    arrays: dict[str, np.ndarray] = {}
    meta = {"kalmandiff": kind, "format": FORMAT, "version": __version__, "tree": encode(tree, arrays)}
    entries = {**(extra or {}), **arrays, META: np.array(json.dumps(meta))}
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **entries)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_archive(path, kinds: tuple[str, ...], what: str) -> tuple[dict, Any]:
    """Read a file written by :func:`write_archive` whose kind is one of ``kinds``.

    Returns
    -------
    meta : dict
        ``kalmandiff`` (the kind), ``format``, ``version``.
    tree : object
        The decoded data.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Anything else than such a file: the message names ``path``, says
        what the file is (:func:`describe_file`) and how to open it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}.")
    meta = _metadata(path)
    if meta is None or meta.get("kalmandiff") not in kinds:
        raise ValueError(f"{path} is not a {what}: {describe_file(path)}")
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a kalmandiff file of format {meta.get('format')!r} (written by kalmandiff "
            f"{meta.get('version')}); this version reads format {FORMAT}."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            tree = decode(meta["tree"], _LazyArrays(archive))
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is a damaged {what} ({type(exc).__name__}: {exc}).") from exc
    return meta, tree


class _LazyArrays:
    """Entries of an open archive by name, read on demand (never as pickles)."""

    def __init__(self, archive):
        self.archive = archive

    def __getitem__(self, name):
        return self.archive[name]


def _metadata(path: Path) -> dict | None:
    """The JSON document of a kalmandiff archive; None for any other file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files") or META not in archive.files:
                return None
            meta = json.loads(str(archive[META][()]))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError, KeyError):
        return None
    return meta if isinstance(meta, dict) else None


def describe_file(path) -> str:
    """What the file at ``path`` is, and how to open it, in one or two sentences (never by running it)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return f"it cannot be read ({exc})."
    if not head:
        return "it is empty."
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
        return (
            "it is a Python pickle (kalmandiff wrote saved solvers and checkpoints as pickles before "
            "format 2). kalmandiff never unpickles a file, since unpickling runs whatever code the file "
            "names; if you made it yourself and trust it, read it with pickle.load and save it again."
        )
    if head.startswith(b"CDF") or head.startswith(b"\x89HDF"):
        return "it is a netCDF/HDF5 file (e.g. a results export): open it with xarray.open_dataset(path)."
    if head.startswith(b"\x93NUMPY"):
        return "it is a single NumPy array (.npy): open it with numpy.load(path)."
    if not head.startswith(b"PK"):
        return f"it is not a NumPy .npz archive (it begins with the bytes {head!r})."
    meta = _metadata(path)
    if meta is not None:
        return f"it is a kalmandiff {meta.get('kalmandiff')} file (format {meta.get('format')})."
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        return f"it is a damaged .npz (zip) archive ({type(exc).__name__}: {exc})."
    if {"particles", "attributes"} <= set(names):
        return (
            "it is a results export of an older kalmandiff (kd.export_results or the CLI's --save), "
            "without the solver: read its arrays with kalmandiff.io.load_results(path) or numpy.load(path)."
        )
    return (
        f"it is a NumPy .npz archive of another program (entries {names[:8]}): open it with numpy.load(path)."
    )
