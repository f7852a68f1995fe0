"""Binary encodings of the annotation spec, built for many annotations at once.

A *record* is one annotation's geometry, properties and padding (the "single annotation
encoding" without relationships).  Records of fixed-size types form a 2-D word array; polyline
records vary in length and live in a ragged word array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Shapes
from .index_writer import Encoder
from .properties import PropertySpec, record_dtype
from .ragged import gather_pieces, interleave_pieces, offsets_from_lengths, ragged_arange, run_offsets


@dataclass
class Records:
    """Encoded records of N annotations, as uint32 words."""

    words: np.ndarray  # (N, width) for fixed-size types; 1-D for polylines
    offsets: np.ndarray | None = None  # polylines: record i is words[offsets[i] : offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        if self.offsets is None:
            return np.full(len(self.words), self.words.shape[1], dtype=np.int64)
        return np.diff(self.offsets)

    def take(self, annotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Records of ``annotations`` concatenated in that order, and each one's length in words."""
        if self.offsets is None:
            # np.take copies whole rows; fancy indexing self.words[annotations] is ~5x slower here.
            return np.take(self.words, annotations, axis=0).ravel(), np.full(len(annotations), self.words.shape[1], dtype=np.int64)
        lengths = self.lengths[annotations]
        return gather_pieces([self.words], np.zeros(len(annotations), np.int64), self.offsets[annotations], lengths), lengths


def encode_records(shapes: Shapes, properties: list[PropertySpec]) -> Records:
    """Records of all annotations; ``properties`` are already in layout order."""
    if shapes.type == "polyline":
        property_words = _fixed_records(None, properties, len(shapes))
        counts = np.diff(shapes.vertex_offsets)
        vertex_words = np.ascontiguousarray(shapes.coords, dtype="<f4").view("<u4").ravel()
        parts = [
            (counts.astype("<u4"), np.arange(len(counts) + 1)),
            (vertex_words, shapes.vertex_offsets * shapes.rank),
            (property_words.ravel(), np.arange(len(counts) + 1) * property_words.shape[1]),
        ]
        words, lengths = interleave_pieces(parts)
        return Records(words, offsets_from_lengths(lengths))
    return Records(_fixed_records(shapes.coords, properties, len(shapes)))


def _fixed_records(coords: np.ndarray | None, properties: list[PropertySpec], n: int) -> np.ndarray:
    geometry = [] if coords is None else [("geometry", ("<f4", (coords.shape[1],)))]
    dtype = record_dtype(geometry, properties)
    records = np.zeros(n, dtype=dtype)  # zeros: the padding bytes must be 0
    if coords is not None:
        records["geometry"] = coords
    for i, spec in enumerate(properties):
        records[f"property{i}"] = spec.values
    return records.view("<u4").reshape(n, dtype.itemsize // 4)


def _u64_words(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values, dtype="<u8").view("<u4")


def multiple_annotation_encoder(
    records: Records, ids: np.ndarray, members: np.ndarray, member_offsets: np.ndarray
) -> tuple[Encoder, np.ndarray]:
    """Encoder for lists of annotations (spatial cells, related segments), and each list's size.

    List ``g`` holds ``members[member_offsets[g] : member_offsets[g + 1]]`` and encodes as the
    spec's "multiple annotation encoding": uint64 count, the records, then the uint64 ids.
    """
    counts = np.diff(member_offsets)
    record_lengths = records.lengths
    # Lists are never empty, which reduceat needs.
    size_words = 2 + counts * 2 + np.add.reduceat(record_lengths[members], member_offsets[:-1])

    def encode(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = counts[groups]
        chosen = members[ragged_arange(member_offsets[groups], n)]
        record_words, lengths = records.take(chosen)
        group_record_words = np.add.reduceat(lengths, offsets_from_lengths(n)[:-1])
        parts = [
            (_u64_words(n).ravel(), np.arange(len(n) + 1) * 2),
            (record_words, offsets_from_lengths(group_record_words)),
            (_u64_words(ids[chosen]).ravel(), offsets_from_lengths(n * 2)),
        ]
        return interleave_pieces(parts)

    return encode, size_words


def by_id_encoder(records: Records, relationships: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Encoder, np.ndarray]:
    """Encoder for the annotation id index, and each annotation's size in words.

    Each value is the record followed, per relationship, by a uint32 count and the uint64 ids.
    """
    size_words = records.lengths.copy()
    for _, offsets in relationships:
        size_words += 1 + 2 * np.diff(offsets)

    def encode(annotations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        record_words, lengths = records.take(annotations)
        parts = [(record_words, offsets_from_lengths(lengths))]
        for values, offsets in relationships:
            n = offsets[annotations + 1] - offsets[annotations]
            related = values[ragged_arange(offsets[annotations], n)]
            parts.append((n.astype("<u4"), np.arange(len(n) + 1)))
            parts.append((_u64_words(related).ravel(), offsets_from_lengths(n * 2)))
        return interleave_pieces(parts)

    return encode, size_words


def group_by_segment(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Invert a relationship: (segment ids, annotation numbers grouped by segment, group offsets).

    An annotation listing a segment twice is listed once under it.
    """
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    order = np.lexsort((owner, values))
    segments, owner = values[order], owner[order]
    distinct = np.r_[True, (segments[1:] != segments[:-1]) | (owner[1:] != owner[:-1])] if len(order) else np.zeros(0, bool)
    segments, owner = segments[distinct], owner[distinct]
    offsets = run_offsets(segments)
    return segments[offsets[:-1]], owner, offsets
