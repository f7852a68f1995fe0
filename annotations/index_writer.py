"""Write a uint64-keyed index (annotation ids, segment ids, spatial cells) as files.

Two layouts, both from Neuroglancer's spec: one file per key (unsharded), or the
``neuroglancer_uint64_sharded_v1`` format (``sharded.md``).  Values come from an *encoder*
callback that turns a batch of entry numbers into their concatenated encodings, so only one
batch of encoded bytes is in memory at a time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from volumes.sharding import ShardingSpec, choose_sharding, gzip_bytes, order_in_shards, write_shard

from .ragged import offsets_from_lengths

# (entry numbers) -> (uint32 words of all values in that order, words per value)
Encoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

BATCH_WORDS = 4 << 20  # encode about 16 MiB of values at a time: index arrays stay ~100 MiB

__all__ = ["Encoder", "ShardingSpec", "choose_sharding", "write_sharded", "write_unsharded"]


def _batches(weights: np.ndarray) -> Iterator[slice]:
    """Consecutive slices of entries whose weights sum to about BATCH_WORDS each."""
    if len(weights) == 0:
        return
    batch = (np.cumsum(weights) - weights) // BATCH_WORDS  # by where each entry starts
    edges = [0, *(np.flatnonzero(np.diff(batch)) + 1).tolist(), len(weights)]
    for a, b in zip(edges[:-1], edges[1:]):
        yield slice(a, b)


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
            pieces = [gzip_bytes(data[offsets[i] : offsets[i + 1]]) for i in range(len(sizes))]
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
    order, shard, minishard = order_in_shards(keys, spec)
    shard_starts = offsets_from_lengths(np.bincount(shard.astype(np.int64), minlength=1 << spec.shard_bits))
    for s in range(1 << spec.shard_bits):
        entries = order[shard_starts[s] : shard_starts[s + 1]]
        if len(entries) == 0:
            continue  # a missing shard file reads as "no keys", the same as an empty one
        parts = ((data, sizes, None) for data, sizes in _encoded_values(entries, encode, weights, spec.data_encoding == "gzip"))
        write_shard(folder / spec.shard_name(s), keys[entries], minishard[entries], _counted(parts, on_progress), spec)


def _counted(parts, on_progress: Callable[[int], None]):
    for part in parts:
        yield part
        on_progress(len(part[1]))


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
