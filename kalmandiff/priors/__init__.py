"""Priors in the EDM convention.

Analytic priors with exact denoisers and posteriors are always available;
the torch ones (``TorchDenoiser``, the adapters, ``train_denoiser`` and the
shipped Navier-Stokes and digits priors) are imported on first use, so kalmandiff works
without torch installed.
"""

from importlib import import_module

from ._base import Prior
from .gaussian import GaussianPrior
from .grf import GaussianRandomFieldPrior
from .lowrank import LowRankGaussianPrior
from .mixture import GaussianMixturePrior

# Public torch-based names -> the module that defines them (imported lazily: torch is optional).
_TORCH_NAMES = {
    "TorchDenoiser": "torch_denoiser",
    "EDMPrecond": "adapters",
    "VPDenoiser": "adapters",
    "ScoreDenoiser": "adapters",
    "ScaledDenoiser": "adapters",
    "from_diffusers": "adapters",
    "load_edm_checkpoint": "adapters",
    "save_edm_checkpoint": "adapters",
    "SmallUNet": "unet",
    "train_denoiser": "training",
    "TrainResult": "training",
    "load_navier_stokes_prior": "pretrained",
    "load_digits_prior": "pretrained",
}

__all__ = [
    "Prior",
    "GaussianPrior",
    "GaussianMixturePrior",
    "GaussianRandomFieldPrior",
    "LowRankGaussianPrior",
    *_TORCH_NAMES,
]


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        try:
            module = import_module(f".{_TORCH_NAMES[name]}", __name__)
        except ImportError as exc:
            raise ImportError(
                f"kalmandiff.priors.{name} needs torch: pip install torch (the CPU build: torch==2.13.0)."
            ) from exc
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
