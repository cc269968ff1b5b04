"""Handwritten digits as an image family with structure: scikit-learn's bundled 8x8 digits, upsampled.

scikit-learn ships the 1,797 images of the UCI optical digits set
(:func:`sklearn.datasets.load_digits`, no download).  They are upsampled to
``size x size`` by linear interpolation and mapped from grey levels
``0..16`` to ``[-1, 1]`` (background ``-1``, ink ``+1``).  A fixed
permutation (seed 0) splits them once into the training images of the
shipped network prior and held-out test images, which are where the
built-in problems draw their truths from: the network never saw them.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["digit_images", "digits_split", "DIGITS_N_TEST"]

#: Images held out from training (the last of the seed-0 permutation).
DIGITS_N_TEST = 200


@functools.lru_cache(maxsize=4)
def _digit_images_cached(size: int) -> np.ndarray:
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    raw = load_digits().images.astype(np.float64) / 16.0  # (1797, 8, 8) in [0, 1]
    if size != 8:
        # grid_mode keeps the pixel centres aligned, so the upsampled digit is not shifted
        raw = np.stack([zoom(im, size / 8, order=1, grid_mode=True, mode="nearest") for im in raw])
    images = np.clip(raw, 0.0, 1.0) * 2.0 - 1.0
    images.setflags(write=False)
    return images


def digit_images(size: int = 16) -> np.ndarray:
    """All 1,797 digits upsampled to ``size x size``, values in ``[-1, 1]``, shape ``(1797, 1, size, size)``.

    Parameters
    ----------
    size : int, default 16
        Side in pixels; a multiple of 8 (``8`` gives the original images).

    Returns
    -------
    ndarray, float64, read-only
    """
    size = int(size)
    if size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8 (got {size!r}).")
    return _digit_images_cached(size)[:, None]


def digits_split(size: int = 16, n_test: int = DIGITS_N_TEST) -> tuple[np.ndarray, np.ndarray]:
    """The fixed train / test split of :func:`digit_images`: ``(train, test)``, each ``(n, 1, size, size)``.

    A seed-0 permutation of the 1,797 images; the last ``n_test`` are the
    test images (the shipped network never saw them), the rest the
    training images of the network and of the best Gaussian.
    """
    images = digit_images(size)
    order = np.random.default_rng(0).permutation(images.shape[0])
    return images[order[:-n_test]], images[order[-n_test:]]
