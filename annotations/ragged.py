"""Vectorised ragged-array helpers: concatenating many variable-length pieces without a Python loop.

Every encoded value in the precomputed annotation format is a sequence of 4-byte-aligned pieces
(records, counts, ids), so the helpers work on uint32 words: a quarter of the index memory that a
byte-level gather would need.
"""

from __future__ import annotations

import numpy as np


def ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each ``(s, n)``, as int64."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    # Each output position is its index plus the shift from its piece's output start to its source start.
    shift = np.repeat(starts - (ends - lengths), lengths)
    return shift + np.arange(total, dtype=np.int64)


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """``[0, l0, l0+l1, ...]``: the start of each piece in the concatenation, plus the total."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def run_offsets(sorted_values: np.ndarray) -> np.ndarray:
    """Runs of equal values in a sorted array, as offsets: run ``i`` is ``[o[i], o[i + 1])``."""
    n = len(sorted_values)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    return np.r_[0, np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1, n].astype(np.int64)


def gather_pieces(sources: list[np.ndarray], which: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``sources[which[i]][starts[i] : starts[i] + lengths[i]]`` over all pieces ``i``.

    Sources are 1-D arrays of one dtype; pieces are emitted in order.
    """
    base = offsets_from_lengths(np.array([len(s) for s in sources], dtype=np.int64))[:-1]
    joined = np.concatenate(sources) if len(sources) > 1 else sources[0]
    return joined[ragged_arange(base[which] + starts, lengths)]


def interleave_pieces(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-entry concatenation of several ragged arrays.

    ``parts`` is a list of ``(words, offsets)`` ragged arrays with the same number of entries ``E``;
    the result holds, for each entry in turn, its piece from every part, and the per-entry lengths.
    """
    n_entries = len(parts[0][1]) - 1
    sources = [w for w, _ in parts]
    which = np.tile(np.arange(len(parts), dtype=np.int64), n_entries)
    starts = np.stack([o[:-1] for _, o in parts], axis=1).ravel()
    lengths = np.stack([np.diff(o) for _, o in parts], axis=1).ravel()
    words = gather_pieces(sources, which, starts, lengths)
    return words, lengths.reshape(n_entries, len(parts)).sum(axis=1)
