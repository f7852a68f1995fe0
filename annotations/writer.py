"""``write_annotations``: a table in, a precomputed annotation folder out, atomically."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from volumes import building

from .encoding import Records, by_id_encoder, encode_records, group_by_segment, multiple_annotation_encoder
from .errors import AnnotationInputError
from .index_writer import Encoder, choose_sharding, write_sharded, write_unsharded
from .properties import property_id
from .spatial import build_levels
from .table import AnnotationTable, load_annotations

DEFAULT_LIMIT = 10_000
UNSHARDED_MAX = 10_000  # above this, one file per annotation id becomes a burden
GZIP_MIN_MEAN_BYTES = 1024  # gzip a value only when it is big enough to pay for a call and a header


def write_annotations(
    table,
    output: str | Path,
    *,
    type: str = "point",
    columns: Sequence[str] | None = None,
    dimensions: Sequence[str] | None = None,
    scale: Sequence[float] | None = None,
    units: str | Sequence[str] = "nm",
    physical: bool = False,
    id_column: str | None = None,
    properties: Sequence = (),
    relationships: Sequence[str] = (),
    limit: int = DEFAULT_LIMIT,
    sharded: bool | None = None,
    compression: str = "auto",
    overwrite: bool = False,
    progress: bool | None = None,
    seed: int | None = None,
    stats: dict | None = None,
) -> Path:
    """Write ``table`` as a Neuroglancer precomputed annotation source at ``output``.

    ``table`` is a CSV/TSV/Parquet/JSON/NDJSON path, a DataFrame, a mapping of column arrays, or a
    2-D array whose columns are ``columns``.  ``columns`` are the geometry columns: the position
    (point; polyline vertices, grouped by ``id_column``), both points (line, box) or centre then
    radii (ellipsoid).  Coordinates are in voxels of size ``scale`` (in ``units``) unless
    ``physical`` says they are in ``units`` already.  ``properties`` are column names, optionally
    ``"col:type[:label,...]"``, or dicts of :class:`PropertySpec` fields.  ``relationships`` are
    columns of segment ids (one or a list per row).  ``sharded=None`` shards above
    ``UNSHARDED_MAX`` annotations.  ``compression`` is ``"auto"``, ``"gzip"`` or ``"raw"``.
    ``progress=None`` shows a bar on a terminal only.  Raises :class:`AnnotationInputError` on bad
    input, leaving nothing behind.  A ``stats`` dict, when given, receives the number of
    ``annotations`` and of spatial index ``levels`` written.
    """
    output = Path(output)
    if compression not in ("auto", "gzip", "raw"):
        raise AnnotationInputError(f"compression must be auto, gzip or raw, not {compression!r}")
    if not (isinstance(limit, int) and limit > 0):
        raise AnnotationInputError(f"limit must be a positive integer, not {limit!r}")
    if output.exists() and not overwrite:
        raise AnnotationInputError(f"{output} exists; pass overwrite=True to replace it")
    data = load_annotations(
        table,
        type=type,
        columns=columns,
        dimensions=dimensions,
        scale=scale,
        units=units,
        physical=physical,
        id_column=id_column,
        properties=properties,
        relationships=relationships,
    )
    n = len(data.ids)
    if sharded is None:
        sharded = n > UNSHARDED_MAX
    lo, hi = data.shapes.extent()
    lower = np.floor(lo)
    upper = np.floor(hi) + 1  # exclusive, and at least one voxel wide
    scales = np.array([s for s, _ in data.dimensions.values()], dtype=np.float64)

    rng = np.random.default_rng(seed)
    with tqdm(total=n, unit=" annotations", desc="spatial index", leave=False, disable=_bar_off(progress)) as bar:
        levels = build_levels(data.shapes, lower, upper, scales, limit, rng, bar.update)
    records = encode_records(data.shapes, data.properties)

    with building(output) as staging:
        info = _write_indices(staging, data, records, levels, limit, sharded, compression, progress, lower, upper)
        (staging / "info").write_text(json.dumps(info, indent=1))
        if output.exists() and not overwrite:
            raise AnnotationInputError(f"{output} appeared while writing; pass overwrite=True to replace it")
    if stats is not None:
        stats.update(annotations=n, levels=len(info["spatial"]))
    return output


def _bar_off(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm show the bar only when stderr is a terminal."""
    return None if progress is None else not progress


def _data_encoding(compression: str, n_values: int, total_words: int) -> str:
    if compression == "auto":
        return "gzip" if n_values and 4 * total_words / n_values >= GZIP_MIN_MEAN_BYTES else "raw"
    return compression


def _write_indices(staging, data: AnnotationTable, records: Records, levels, limit, sharded, compression, show, lower, upper) -> dict:
    """Write every index under ``staging``; return the info JSON.

    Each index's grouping and encoder are built just before it is written and dropped after, so
    only one index's working arrays are in memory at a time.
    """
    minishard_encoding = "raw" if compression == "raw" else "gzip"

    def write(key: str, keys_of, encode: Encoder, words: np.ndarray, hash: str, data_encoding: str, key_bits=64, names=None):
        # The index writers report how many values (cells, segments, annotations) each batch wrote.
        with tqdm(total=len(words), unit=" values", desc=f"writing {key}", leave=False, disable=_bar_off(show)) as bar:
            if not sharded:
                write_unsharded(staging / key, names(), encode, words, bar.update)
                return None
            spec = choose_sharding(len(words), 4 * int(words.sum()), hash=hash, key_bits=key_bits,
                                   minishard_index_encoding=minishard_encoding, data_encoding=data_encoding)
            write_sharded(staging / key, keys_of(), encode, spec, words, bar.update)
            return spec.to_json()

    def with_sharding(entry: dict, sharding: dict | None) -> dict:
        return {**entry, "sharding": sharding} if sharding else entry

    spatial_info = []
    for i, level in enumerate(levels):
        encode, words = multiple_annotation_encoder(records, data.ids, level.members, level.member_offsets)
        sharding = write(
            f"spatial{i}", lambda: level.morton_codes, encode, words, "identity",
            _data_encoding(compression, len(words), int(words.sum())), key_bits=level.key_bits,
            names=lambda: ["_".join(map(str, c)) for c in level.cell_positions.tolist()],
        )
        entry = {"key": f"spatial{i}", "grid_shape": list(level.grid_shape),
                 "chunk_size": [float(c) for c in level.chunk_size], "limit": limit}
        spatial_info.append(with_sharding(entry, sharding))
    levels.clear()  # the spatial lists are written; free them before the id indices

    relationship_info = []
    keys_taken: set[str] = set()
    for rel in data.relationships:
        segments, members, offsets = group_by_segment(rel.values, rel.offsets)
        encode, words = multiple_annotation_encoder(records, data.ids, members, offsets)
        key = "rel_" + property_id(rel.name)
        while key in keys_taken:
            key += "_"
        keys_taken.add(key)
        sharding = write(key, lambda: segments, encode, words, "murmurhash3_x86_128",
                         _data_encoding(compression, len(words), int(words.sum())),
                         names=lambda: [str(k) for k in segments.tolist()])
        relationship_info.append(with_sharding({"id": rel.name, "key": key}, sharding))
        del segments, members, offsets, encode, words

    encode, words = by_id_encoder(records, [(r.values, r.offsets) for r in data.relationships])
    # Single records are tiny: a gzip header and a call each would cost more than they save.
    by_id_encoding = "raw" if compression == "auto" else compression
    sharding = write("by_id", lambda: data.ids, encode, words, "murmurhash3_x86_128", by_id_encoding,
                     names=lambda: [str(k) for k in data.ids.tolist()])

    return {
        "@type": "neuroglancer_annotations_v1",
        "dimensions": data.dimensions,
        "lower_bound": [float(v) for v in lower],
        "upper_bound": [float(v) for v in upper],
        "annotation_type": data.shapes.type,
        "properties": [p.to_json() for p in data.properties],
        "relationships": relationship_info,
        "by_id": with_sharding({"key": "by_id"}, sharding),
        "spatial": spatial_info,
    }
