"""A torch network as a prior: particles cross the torch boundary through DLPack, in chunks.

The wrapped module computes the EDM denoiser ``D(x, sigma)`` (DESIGN.md,
principle 4): ``module(x, sigma)`` with ``x`` a tensor ``(b, *event_shape)``
and ``sigma`` a tensor ``(b,)``, both in the module's dtype and on its
device, returns a tensor shaped like ``x``.  Networks trained in another
convention are brought to this one by :mod:`kalmandiff.priors.adapters`.

Two paths:

* NumPy / CuPy / ``array_api_strict`` particles (the ensemble solvers):
  arrays go to torch through DLPack, zero-copy when the dtype and device
  already match (NumPy <-> CPU torch, CuPy <-> CUDA torch), the network runs
  under :func:`torch.inference_mode` in chunks of ``batch_size``, and the
  result comes back through DLPack, again without a copy.
* torch particles (DPS-style solvers): the network runs in the ambient
  grad mode, so a tensor that requires grad gets gradients through it.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .._backend import from_torch, is_cupy_array, is_numpy_array, is_torch_array, to_numpy, to_torch
from ._base import Prior

__all__ = ["TorchDenoiser"]

_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64")


def _check_dtype(dtype):
    import torch

    if isinstance(dtype, str) and dtype in _DTYPE_NAMES:
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype or one of {_DTYPE_NAMES} (got {dtype!r}).")
    return dtype


def _module_device(module):
    """Device of the module's first parameter or buffer (CPU for a module without any)."""
    import torch

    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


class TorchDenoiser(Prior):
    """Wrap a torch module computing the EDM denoiser ``D(x, sigma)`` as a :class:`Prior`.

    Parameters
    ----------
    module : torch.nn.Module or callable
        ``module(x, sigma) -> D`` with ``x`` of shape ``(b, *event_shape)``
        and ``sigma`` of shape ``(b,)`` (same units as ``x``).  A
        ``torch.nn.Module`` is put in ``eval()`` mode and moved to
        ``device`` / ``dtype`` (in place, as ``Module.to`` does).
    event_shape : tuple of int
        Shape of one sample, e.g. ``(1, 32, 32)``.
    batch_size : int or None, default 64
        Largest number of particles sent to the network at once; the last
        chunk is shorter, so every particle is denoised.  Peak memory is
        bounded by one chunk's activations.  ``None``: one call.
    device : str or torch.device, optional
        Where the network runs (default: the module's current device).
    dtype : torch.dtype or str, default torch.float32
        The network's dtype; inputs of another dtype are cast (a copy) and
        the result is cast back to the input's dtype.

    Notes
    -----
    Non-torch inputs run under :func:`torch.inference_mode` and come back in
    their own namespace and device: NumPy arrays through CPU tensors, CuPy
    arrays through CUDA tensors (CuPy's stream is synchronised before torch
    reads, torch's before CuPy does), ``array_api_strict`` arrays through
    NumPy.  A C-contiguous input whose dtype and device match the network is
    not copied on the way in, and a single-chunk result is not copied on
    the way out.  Torch inputs keep autograd: gradients with respect to a
    tensor that requires grad flow through the network.

    :meth:`sample` solves the probability-flow ODE from ``N(0, sigma_max^2 I)``
    with :func:`kalmandiff.diffusion.sample`.

    Examples
    --------
    >>> import numpy as np, torch
    >>> class Shrink(torch.nn.Module):            # D for x_0 ~ N(0, I)
    ...     def forward(self, x, sigma):
    ...         return x / (1 + sigma[:, None] ** 2)
    >>> prior = TorchDenoiser(Shrink(), event_shape=(3,), batch_size=2)
    >>> prior.denoise(np.ones((5, 3), dtype=np.float32), 1.0)[0]
    array([0.5, 0.5, 0.5], dtype=float32)
    """

    learned = True  # a trained network: its covariance is unknown

    def __init__(self, module, event_shape, batch_size: int | None = 64, device=None, dtype=None):
        import torch

        if not callable(module):
            raise ValueError(f"module must be a callable torch module (got {type(module).__name__}).")
        try:
            event_shape = tuple(int(s) for s in event_shape)
        except TypeError as exc:
            raise ValueError(f"event_shape must be a tuple of positive ints (got {event_shape!r}).") from exc
        if not event_shape or min(event_shape) < 1:
            raise ValueError(f"event_shape must be a non-empty tuple of positive ints (got {event_shape!r}).")
        if batch_size is not None and (
            not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive int or None (got {batch_size!r}).")
        self.dtype = _check_dtype(torch.float32 if dtype is None else dtype)
        if isinstance(module, torch.nn.Module):
            self.device = torch.device(device) if device is not None else _module_device(module)
            module = module.to(device=self.device, dtype=self.dtype).eval()
        else:
            self.device = torch.device("cpu" if device is None else device)
        self.module = module
        self.event_shape = event_shape
        self.batch_size = None if batch_size is None else int(batch_size)

    def __repr__(self) -> str:
        return (
            f"TorchDenoiser({type(self.module).__name__}, event_shape={self.event_shape}, "
            f"batch_size={self.batch_size}, device='{self.device}', dtype={self.dtype})"
        )

    # -- sigma --------------------------------------------------------------
    def _sigma_tensor(self, sigma, n: int, like_tensor):
        """``sigma`` (scalar, array or tensor) as a ``(n,)`` tensor next to ``like_tensor``."""
        import torch

        if is_torch_array(sigma):
            s = sigma.to(device=like_tensor.device, dtype=like_tensor.dtype)
        else:
            if not isinstance(sigma, numbers.Number):
                sigma = to_numpy(sigma)
            s = torch.as_tensor(np.asarray(sigma, dtype=np.float64), device=like_tensor.device)
            s = s.to(like_tensor.dtype)
        if s.ndim == 0:
            return s.expand(n)
        if s.shape != (n,):
            raise ValueError(f"sigma must be a scalar or have shape ({n},) (got {tuple(s.shape)}).")
        return s

    # -- the network over chunks ----------------------------------------------
    def _chunks(self, n: int):
        bs = max(n, 1) if self.batch_size is None else self.batch_size
        return [(i, min(i + bs, n)) for i in range(0, n, bs)] or [(0, 0)]

    def _run_inference(self, t, s):
        """Network on ``t`` in chunks into one preallocated tensor (no autograd)."""
        import torch

        bounds = self._chunks(t.shape[0])
        if len(bounds) == 1:
            return self.module(t, s)
        out = torch.empty_like(t)
        for i, j in bounds:
            out[i:j] = self.module(t[i:j], s[i:j])
        return out

    def _run_autograd(self, t, s):
        """Network on ``t`` in chunks joined with ``torch.cat`` (differentiable)."""
        import torch

        bounds = self._chunks(t.shape[0])
        if len(bounds) == 1:
            return self.module(t, s)
        return torch.cat([self.module(t[i:j], s[i:j]) for i, j in bounds], dim=0)

    # -- public ---------------------------------------------------------------
    def denoise(self, x, sigma):
        """Return ``D(x, sigma)`` computed by the network, in x's namespace, device and dtype.

        Parameters
        ----------
        x : array of shape ``(n, *event_shape)``
            NumPy, CuPy, torch or ``array_api_strict`` (real floating dtype).
        sigma : float or array of shape ``(n,)``
            Noise level(s), in the units of ``x``.

        Returns
        -------
        array of shape ``(n, *event_shape)``
            For a torch input, a tensor attached to the autograd graph when
            grad mode is on and ``x`` requires grad.
        """
        self._check_batch(x)
        if is_torch_array(x):
            return self._denoise_torch(x, sigma)
        return self._denoise_array(x, sigma)

    def _denoise_torch(self, x, sigma):
        t = x.to(device=self.device, dtype=self.dtype)
        out = self._run_autograd(t, self._sigma_tensor(sigma, x.shape[0], t))
        return out.to(device=x.device, dtype=x.dtype)

    def _denoise_array(self, x, sigma):
        import torch

        if is_numpy_array(x) or is_cupy_array(x):
            host = x
        else:
            # array_api_strict and other standard arrays: through NumPy (zero-copy via the buffer).
            host = to_numpy(x)
        with torch.inference_mode():
            t = to_torch(host)
            in_dtype = t.dtype
            t = t.to(device=self.device, dtype=self.dtype)
            out = self._run_inference(t, self._sigma_tensor(sigma, x.shape[0], t))
            out = out.to(dtype=in_dtype)
            if out.device != _device_of(x):
                out = out.to(_device_of(x))
            return from_torch(out, like=x)

    def sample(
        self,
        n: int,
        random_state: Any = None,
        like: Any = None,
        *,
        n_steps: int = 40,
        sigma_max: float = 80.0,
        sigma_min: float = 0.002,
        method: str = "heun",
    ):
        """Draw ``n`` samples by solving the PF-ODE (:func:`kalmandiff.diffusion.sample`).

        Parameters
        ----------
        n : int
        random_state : None, int or numpy.random.Generator
        like : array, optional
            Namespace, device and dtype of the result (default NumPy float64).
        n_steps, sigma_max, sigma_min, method
            Schedule and integrator of the ODE (EDM's defaults, 40 Heun steps).

        Returns
        -------
        array of shape ``(n, *event_shape)``
        """
        from ..diffusion import sample

        return sample(
            self.denoise,
            n,
            self.event_shape,
            n_steps=n_steps,
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            method=method,
            random_state=random_state,
            like=like,
        )


def _device_of(x):
    """The torch device an array of the NumPy/CuPy/strict families lives on."""
    import torch

    if is_cupy_array(x):  # pragma: no cover - GPU only
        return torch.device("cuda", x.device.id)
    return torch.device("cpu")
