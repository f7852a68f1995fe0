"""The ``neuroglancer_uint64_sharded_v1`` format (Neuroglancer's ``sharded.md``): the sharding
spec, the hash that places a key, the compressed Morton code that keys volume chunks and
annotation cells, and the writer of one shard file.

One place for the format: precomputed annotation indices (:mod:`annotations.index_writer`) and
meshes and skeletons (:mod:`meshes`) write their shards here, and the precomputed view finds
the shard file a sharded source's chunk is in (:mod:`volumes.present_precomputed`).
"""

from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import deflate
import numpy as np

TARGET_SHARD_BYTES = 128 << 20
TARGET_MINISHARD_ENTRIES = 1024
GZIP_LEVEL = 1  # libdeflate's level 6 gains ~0.3% on float coordinates, for ~1.8x the time

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
    """Low 64 bits of MurmurHash3_x86_128 of each key's 8 little-endian bytes.

    Written in numpy because the PyPI binding (``mmh3``) hashes one key per Python call: ten
    million ids would cost seconds in call overhead alone.  Only the 8-byte input case is needed
    (the key is a little-endian uint64), which has no body blocks, just the tail.
    """
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


@dataclass(frozen=True)
class ShardingSpec:
    hash: str  # "identity" or "murmurhash3_x86_128"
    preshift_bits: int
    minishard_bits: int
    shard_bits: int
    minishard_index_encoding: str = "gzip"
    data_encoding: str = "raw"

    def to_json(self) -> dict:
        return {
            "@type": "neuroglancer_uint64_sharded_v1",
            "hash": self.hash,
            "preshift_bits": self.preshift_bits,
            "minishard_bits": self.minishard_bits,
            "shard_bits": self.shard_bits,
            "minishard_index_encoding": self.minishard_index_encoding,
            "data_encoding": self.data_encoding,
        }

    @classmethod
    def from_json(cls, spec: dict) -> "ShardingSpec":
        return cls(spec["hash"], int(spec["preshift_bits"]), int(spec["minishard_bits"]), int(spec["shard_bits"]),
                   spec.get("minishard_index_encoding", "raw"), spec.get("data_encoding", "raw"))

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shard and minishard number of each key."""
        shifted = np.asarray(keys, dtype=np.uint64) >> np.uint64(self.preshift_bits)
        hashed = murmurhash3_x86_128_low64(shifted) if self.hash == "murmurhash3_x86_128" else shifted
        minishard = hashed & np.uint64((1 << self.minishard_bits) - 1)
        shard = (hashed >> np.uint64(self.minishard_bits)) & np.uint64((1 << self.shard_bits) - 1)
        return shard, minishard

    def shard_name(self, shard: int) -> str:
        """The file name of shard number ``shard``: lower-case hex, zero-padded to the shard bits."""
        digits = math.ceil(self.shard_bits / 4)
        return f"{shard:0{digits}x}.shard" if digits else "0.shard"


def choose_sharding(
    n_keys: int,
    total_bytes: int,
    *,
    hash: str,
    key_bits: int = 64,
    minishard_index_encoding: str = "gzip",
    data_encoding: str = "raw",
) -> ShardingSpec:
    """Shard and minishard bits for ``n_keys`` values of ``total_bytes`` in all.

    Shards aim at ~128 MiB (few files, each still cheap to rewrite) and minishards at ~1024 keys
    (a minishard index of ~24 KiB raw is one small read for the viewer).  For the identity hash over
    Morton codes of ``key_bits`` bits, the preshift keeps the top bits, so every minishard and shard
    is a spatially compact block of cells.
    """
    shard_bits = max(0, math.ceil(math.log2(max(1.0, total_bytes / TARGET_SHARD_BYTES))))
    per_shard = n_keys / (1 << shard_bits)
    minishard_bits = max(0, math.ceil(math.log2(max(1.0, per_shard / TARGET_MINISHARD_ENTRIES))))
    preshift_bits = 0
    if hash == "identity":
        used = min(shard_bits + minishard_bits, key_bits)
        minishard_bits = min(minishard_bits, used)
        shard_bits = used - minishard_bits
        preshift_bits = key_bits - used
    return ShardingSpec(hash, preshift_bits, minishard_bits, shard_bits, minishard_index_encoding, data_encoding)


def gzip_bytes(data: bytes | memoryview) -> bytes:
    # libdeflate (the 'deflate' package): ~2.5x zlib's speed at level 1, and slightly smaller.
    return deflate.gzip_compress(data, GZIP_LEVEL)


def order_in_shards(keys: np.ndarray, spec: ShardingSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, shard, minishard): ``keys[order]`` is in shard, minishard, key order, as every shard
    file lists them; ``shard`` and ``minishard`` are per key (not reordered)."""
    keys = np.asarray(keys, dtype=np.uint64)
    shard, minishard = spec.locate(keys)
    return np.lexsort((keys, minishard, shard)), shard, minishard


def write_shard(
    path: str | os.PathLike,
    keys: np.ndarray,
    minishards: np.ndarray,
    parts: Iterable[tuple[bytes | memoryview, np.ndarray, np.ndarray | None]],
    spec: ShardingSpec,
) -> None:
    """Write one shard file at ``path``, atomically (a hidden sibling renamed into place).

    ``keys`` (with their ``minishards``) are in minishard, key order.  ``parts`` gives their data in
    that order, batch by batch, as (bytes, size of each value, bytes before each value that no key
    names or None): the unnamed bytes are what a multi-resolution mesh's fragments are, which the
    format puts just before the manifest that its segment id names (``meshes.md``).
    """
    path = Path(path)
    n_minishards = 1 << spec.minishard_bits
    index_bytes = 16 * n_minishards
    temporary = path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}")
    try:
        with open(temporary, "wb") as f:
            f.seek(index_bytes)
            sizes, gaps = [], []
            for data, part_sizes, part_gaps in parts:
                f.write(data)
                sizes.append(np.asarray(part_sizes, dtype=np.int64))
                gaps.append(np.zeros(len(part_sizes), np.int64) if part_gaps is None else np.asarray(part_gaps, np.int64))
            sizes_all = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
            gaps_all = np.concatenate(gaps) if gaps else np.zeros(0, np.int64)
            if len(sizes_all) != len(keys):
                raise ValueError(f"{len(sizes_all)} values for {len(keys)} keys")
            shard_index = _write_minishard_indices(f, np.asarray(keys, np.uint64), np.asarray(minishards, np.uint64),
                                                   sizes_all, gaps_all, spec)
            f.seek(0)
            f.write(shard_index.tobytes())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_minishard_indices(f, keys: np.ndarray, minishards: np.ndarray, sizes: np.ndarray, gaps: np.ndarray,
                             spec: ShardingSpec) -> np.ndarray:
    """Append each minishard's index after the data; return the shard index (start, end per minishard)."""
    n_minishards = 1 << spec.minishard_bits
    index_bytes = 16 * n_minishards
    ends = np.cumsum(gaps + sizes)
    data_starts = ends - sizes  # relative to the end of the shard index
    counts = np.bincount(minishards.astype(np.int64), minlength=n_minishards)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    shard_index = np.zeros((n_minishards, 2), dtype="<u8")
    position = int(ends[-1]) if len(ends) else 0
    for m in np.flatnonzero(counts):
        a, b = bounds[m], bounds[m + 1]
        table = np.empty((3, b - a), dtype="<u8")
        table[0] = np.diff(keys[a:b], prepend=np.uint64(0))
        # Each start is given as the bytes past the previous value's end: the unnamed bytes between.
        table[1] = gaps[a:b]
        table[1, 0] = data_starts[a]
        table[2] = sizes[a:b]
        encoded = table.tobytes()
        if spec.minishard_index_encoding == "gzip":
            encoded = gzip_bytes(encoded)
        f.seek(index_bytes + position)
        f.write(encoded)
        shard_index[m] = (position, position + len(encoded))
        position += len(encoded)
    return shard_index


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
