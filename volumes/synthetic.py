"""Synthetic volumes: Gaussian blobs with noise, and the matching label volume.

Used by ``ngserve demo``, the tests and the benchmarks, so all of them look at
data with real structure rather than constant chunks.
"""

from __future__ import annotations

import numpy as np


def blobs(
    shape: tuple[int, ...], n_blobs: int = 24, seed: int = 0, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """An image in [0, 1] (float32) and a uint32 label volume of the same shape.

    Each blob is an anisotropic Gaussian; a voxel belongs to the label of the
    blob that contributes most to it, where that contribution exceeds 0.5.
    """
    rng = np.random.default_rng(seed)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    image = np.zeros(shape, np.float32)
    best = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint32)
    for i in range(n_blobs):
        centre = [rng.uniform(0.1 * s, 0.9 * s) for s in shape]
        sigma = [rng.uniform(0.04, 0.1) * s for s in shape]
        g = np.ones((1,) * len(shape), np.float32)
        for axis, (c, s) in enumerate(zip(centre, sigma)):
            g = g * np.exp(-0.5 * ((grids[axis] - c) / s) ** 2).astype(np.float32)
        image += g * rng.uniform(0.5, 1.0)
        wins = (g > best) & (g > 0.5)
        labels[wins] = i + 1
        np.maximum(best, g, out=best)
    image += rng.normal(0, noise, shape).astype(np.float32)
    np.clip(image, 0, 1, out=image)
    return image, labels
