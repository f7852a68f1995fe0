"""Neuroglancer's compressed Morton code of spatial cells, the keys of the spatial index
(the sharding hash is in :mod:`volumes.sharding`)."""

from __future__ import annotations

import numpy as np


def compressed_morton_code(cells: np.ndarray, grid_shape: tuple[int, ...]) -> np.ndarray:
    """Neuroglancer's compressed Morton code of integer cell positions ``(n, rank)``.

    Bits are interleaved dimension by dimension, skipping a dimension once its grid size needs no
    more bits (``volume.md#compressed-morton-code``).
    """
    cells = np.asarray(cells, dtype=np.uint64)
    code = np.zeros(len(cells), dtype=np.uint64)
    out_bit = 0
    for bit in range(32):
        for d, size in enumerate(grid_shape):
            if (size - 1) >> bit:
                code |= ((cells[:, d] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(out_bit)
                out_bit += 1
    return code


def morton_bits(grid_shape: tuple[int, ...]) -> int:
    """How many bits the compressed Morton code of this grid uses."""
    return sum(int(size - 1).bit_length() for size in grid_shape)
