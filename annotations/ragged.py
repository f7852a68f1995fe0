"""Vectorised ragged-array helpers: concatenating many variable-length pieces without a Python loop
per piece (only a few long pieces are copied one by one).

Every encoded value in the precomputed annotation format is a sequence of 4-byte-aligned pieces
(records, counts, ids), so the helpers work on uint32 words: a quarter of the index memory that a
byte-level gather would need.
"""

from __future__ import annotations

import numpy as np

# Mean piece length above which copying slice by slice is cheaper than building a per-word index.
LONG_PIECE_WORDS = 64


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
    dtype = np.result_type(*sources)
    starts = np.stack([o[:-1] for _, o in parts], axis=1)
    lengths = np.stack([np.diff(o) for _, o in parts], axis=1)
    totals = lengths.sum(axis=1)
    if n_entries and (lengths == lengths[0]).all():
        # Every part is as long in every entry (records, counts, one id each): the result is an
        # (E, width) array, filled one block of columns per part with no index arrays at all.
        out = np.empty((n_entries, int(totals[0])), dtype=dtype)
        column = 0
        for (words, offsets), width in zip(parts, lengths[0].tolist()):
            out[:, column : column + width] = words[offsets[0] : offsets[-1]].reshape(n_entries, width)
            column += width
        return out.ravel(), totals
    if int(totals.sum()) >= LONG_PIECE_WORDS * lengths.size:
        # Few long pieces (the lists of a spatial cell): slice copies beat a per-word index.
        out = np.empty(int(totals.sum()), dtype=dtype)
        position = 0
        for entry_starts, entry_lengths in zip(starts.tolist(), lengths.tolist()):
            for source, start, length in zip(sources, entry_starts, entry_lengths):
                out[position : position + length] = source[start : start + length]
                position += length
        return out, totals
    which = np.tile(np.arange(len(parts), dtype=np.int64), n_entries)
    words = gather_pieces(sources, which, starts.ravel(), lengths.ravel())
    return words.astype(dtype, copy=False), totals
