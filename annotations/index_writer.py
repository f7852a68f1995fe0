"""Write a uint64-keyed index (annotation ids, segment ids, spatial cells) as files.

Two layouts, both from Neuroglancer's spec: one file per key (unsharded), or the
``neuroglancer_uint64_sharded_v1`` format (``sharded.md``).  Values come from an *encoder*
callback that turns a batch of entry numbers into their concatenated encodings, so only one
batch of encoded bytes is in memory at a time.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import deflate
import numpy as np

from .hashing import murmurhash3_x86_128_low64
from .ragged import offsets_from_lengths

# (entry numbers) -> (uint32 words of all values in that order, words per value)
Encoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

BATCH_WORDS = 4 << 20  # encode about 16 MiB of values at a time: index arrays stay ~100 MiB
TARGET_SHARD_BYTES = 128 << 20
TARGET_MINISHARD_ENTRIES = 1024
GZIP_LEVEL = 1  # libdeflate's level 6 gains ~0.3% on float coordinates, for ~1.8x the time


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

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Shard and minishard number of each key."""
        shifted = keys >> np.uint64(self.preshift_bits)
        hashed = murmurhash3_x86_128_low64(shifted) if self.hash == "murmurhash3_x86_128" else shifted
        minishard = hashed & np.uint64((1 << self.minishard_bits) - 1)
        shard = (hashed >> np.uint64(self.minishard_bits)) & np.uint64((1 << self.shard_bits) - 1)
        return shard, minishard


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


def _batches(weights: np.ndarray) -> Iterator[slice]:
    """Consecutive slices of entries whose weights sum to about BATCH_WORDS each."""
    if len(weights) == 0:
        return
    batch = (np.cumsum(weights) - weights) // BATCH_WORDS  # by where each entry starts
    edges = [0, *(np.flatnonzero(np.diff(batch)) + 1).tolist(), len(weights)]
    for a, b in zip(edges[:-1], edges[1:]):
        yield slice(a, b)


def _gzip(data: bytes | memoryview) -> bytes:
    # libdeflate (the 'deflate' package): ~2.5x zlib's speed at level 1, and slightly smaller.
    return deflate.gzip_compress(data, GZIP_LEVEL)


def _encoded_values(
    entries: np.ndarray, encode: Encoder, weights: np.ndarray, gzip: bool
) -> Iterator[tuple[bytes | memoryview, np.ndarray]]:
    """(bytes to write, byte size of each value) for ``entries`` in order, batch by batch."""
    for part in _batches(weights[entries]):
        words, lengths = encode(entries[part])
        data = memoryview(np.ascontiguousarray(words, dtype="<u4")).cast("B")
        sizes = lengths.astype(np.int64) * 4
        if gzip:
            offsets = offsets_from_lengths(sizes)
            pieces = [_gzip(data[offsets[i] : offsets[i + 1]]) for i in range(len(sizes))]
            yield b"".join(pieces), np.array([len(p) for p in pieces], dtype=np.int64)
        else:
            yield data, sizes


def write_sharded(
    folder: Path,
    keys: np.ndarray,
    encode: Encoder,
    spec: ShardingSpec,
    weights: np.ndarray,
    on_progress: Callable[[int], None] = lambda n: None,
) -> None:
    """Write ``keys`` → ``encode(entries)`` as sharded files in ``folder``.

    ``weights`` estimates each entry's encoded size in words, to size the batches.
    """
    folder.mkdir(parents=True, exist_ok=True)
    keys = np.asarray(keys, dtype=np.uint64)
    shard, minishard = spec.locate(keys)
    order = np.lexsort((keys, minishard, shard))
    shard_starts = offsets_from_lengths(np.bincount(shard.astype(np.int64), minlength=1 << spec.shard_bits))
    digits = math.ceil(spec.shard_bits / 4)
    n_minishards = 1 << spec.minishard_bits
    index_bytes = 16 * n_minishards
    for s in range(1 << spec.shard_bits):
        entries = order[shard_starts[s] : shard_starts[s + 1]]
        if len(entries) == 0:
            continue  # a missing shard file reads as "no keys", the same as an empty one
        with open(folder / f"{s:0{digits}x}.shard" if digits else folder / "0.shard", "wb") as f:
            f.seek(index_bytes)
            sizes = []
            for data, part_sizes in _encoded_values(entries, encode, weights, spec.data_encoding == "gzip"):
                f.write(data)
                sizes.append(part_sizes)
                on_progress(len(part_sizes))
            shard_index = _write_minishard_indices(f, keys[entries], minishard[entries], np.concatenate(sizes), spec)
            f.seek(0)
            f.write(shard_index.tobytes())


def _write_minishard_indices(f, keys: np.ndarray, minishards: np.ndarray, sizes: np.ndarray, spec: ShardingSpec) -> np.ndarray:
    """Append each minishard's index after the data; return the shard index (start, end per minishard)."""
    n_minishards = 1 << spec.minishard_bits
    index_bytes = 16 * n_minishards
    data_starts = offsets_from_lengths(sizes)[:-1]  # relative to the end of the shard index
    counts = np.bincount(minishards.astype(np.int64), minlength=n_minishards)
    bounds = offsets_from_lengths(counts)
    shard_index = np.zeros((n_minishards, 2), dtype="<u8")
    position = int(sizes.sum())
    for m in np.flatnonzero(counts):
        a, b = bounds[m], bounds[m + 1]
        table = np.empty((3, b - a), dtype="<u8")
        table[0] = np.diff(keys[a:b], prepend=np.uint64(0))
        # Values are contiguous, so every start after the first is 0 bytes past the previous end.
        table[1] = 0
        table[1, 0] = data_starts[a]
        table[2] = sizes[a:b]
        encoded = table.tobytes()
        if spec.minishard_index_encoding == "gzip":
            encoded = _gzip(encoded)
        f.seek(index_bytes + position)
        f.write(encoded)
        shard_index[m] = (position, position + len(encoded))
        position += len(encoded)
    return shard_index


def write_unsharded(
    folder: Path,
    names: list[str],
    encode: Encoder,
    weights: np.ndarray,
    on_progress: Callable[[int], None] = lambda n: None,
) -> None:
    """Write one file per entry, named ``names[i]``: the layout for small sets."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = np.arange(len(names), dtype=np.int64)
    done = 0
    for data, sizes in _encoded_values(entries, encode, weights, gzip=False):
        offsets = offsets_from_lengths(sizes)
        for i in range(len(sizes)):
            with open(os.path.join(folder, names[done + i]), "wb") as f:
                f.write(data[offsets[i] : offsets[i + 1]])
        done += len(sizes)
        on_progress(len(sizes))
