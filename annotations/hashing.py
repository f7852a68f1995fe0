"""Hashes the sharded format needs, vectorised over uint64 keys.

``murmurhash3_x86_128`` is written here in numpy because the PyPI binding (``mmh3``) hashes one
key per Python call: ten million ids would cost seconds in call overhead alone.  Only the 8-byte
input case is needed (the key is a little-endian uint64), which has no body blocks, just the tail.
"""

from __future__ import annotations

import numpy as np

_C1, _C2, _C3 = np.uint32(0x239B961B), np.uint32(0xAB0E9789), np.uint32(0x38B34AE5)


def _rotl32(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def murmurhash3_x86_128_low64(keys: np.ndarray, seed: int = 0) -> np.ndarray:
    """Low 64 bits of MurmurHash3_x86_128 of each key's 8 little-endian bytes."""
    keys = np.ascontiguousarray(keys, dtype="<u8")
    words = keys.view("<u4").reshape(-1, 2)
    with np.errstate(over="ignore"):
        k1 = words[:, 0].astype(np.uint32)
        k2 = words[:, 1].astype(np.uint32)
        h1 = np.full(len(keys), seed, dtype=np.uint32)
        h2, h3, h4 = h1.copy(), h1.copy(), h1.copy()
        k2 = _rotl32(k2 * _C2, 16) * _C3
        h2 ^= k2
        k1 = _rotl32(k1 * _C1, 15) * _C2
        h1 ^= k1
        length = np.uint32(8)
        h1 ^= length
        h2 ^= length
        h3 ^= length
        h4 ^= length
        h1 = h1 + h2 + h3 + h4
        h2 = h2 + h1
        h3 = h3 + h1
        h4 = h4 + h1
        h1, h2, h3, h4 = _fmix32(h1), _fmix32(h2), _fmix32(h3), _fmix32(h4)
        h1 = h1 + h2 + h3 + h4
        h2 = h2 + h1
    return h1.astype(np.uint64) | (h2.astype(np.uint64) << np.uint64(32))


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
