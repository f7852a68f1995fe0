"""Input: read a table (file, DataFrame, arrays) and map its columns onto annotations.

Everything here is columnar: pandas/pyarrow parse, numpy checks, and only the columns the
mapping names are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AnnotationInputError, plain, row_of
from .geometry import ANNOTATION_TYPES, TWO_VECTOR_TYPES, Shapes
from .properties import PropertySpec, as_property_spec, layout_order, resolve_property
from .ragged import offsets_from_lengths, run_offsets

TABLE_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
DEFAULT_COLUMNS = {
    "point": ["x", "y", "z"],
    "polyline": ["x", "y", "z"],
    "line": ["x1", "y1", "z1", "x2", "y2", "z2"],
    "axis_aligned_bounding_box": ["x1", "y1", "z1", "x2", "y2", "z2"],
    "ellipsoid": ["x", "y", "z", "rx", "ry", "rz"],
}
_UNIT = re.compile(r"^((Y|Z|E|P|T|G|M|k|h|da|d|c|m|u|µ|n|p|f|a|z|y)?(m|s|Hz|rad/s))?$")
_DIMENSION_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
UINT64_LIMIT = 2.0**64


@dataclass
class Relationship:
    name: str
    values: np.ndarray  # uint64 segment ids of all annotations, concatenated
    offsets: np.ndarray  # annotation i relates to values[offsets[i] : offsets[i + 1]]


@dataclass
class AnnotationTable:
    """Everything the writer needs, as columns."""

    shapes: Shapes
    ids: np.ndarray
    properties: list[PropertySpec]  # in record layout order
    relationships: list[Relationship]
    dimensions: dict[str, list]


def read_table(source: str | Path, columns: list[str]) -> pd.DataFrame:
    """The named columns of a CSV, TSV, Parquet, JSON or NDJSON file."""
    path = Path(source)
    kind = TABLE_FORMATS.get("".join(path.suffixes[-2:-1]) if path.suffix == ".gz" else path.suffix.lower())
    if kind is None:
        raise AnnotationInputError(f"{path}: unknown table format; use one of {', '.join(sorted(TABLE_FORMATS))}")
    if not path.is_file():
        raise AnnotationInputError(f"{path}: no such file")
    try:
        if kind in ("csv", "tsv"):
            sep = "," if kind == "csv" else "\t"
            header = pd.read_csv(path, sep=sep, nrows=0).columns
            _require(columns, header, path)
            return pd.read_csv(path, sep=sep, usecols=columns, engine="pyarrow" if path.suffix != ".gz" else "c")
        if kind == "parquet":
            import pyarrow.parquet as pq

            _require(columns, pq.read_schema(path).names, path)
            return pd.read_parquet(path, columns=columns)
        frame = pd.read_json(path, lines=kind == "ndjson", dtype=False)
    except AnnotationInputError:
        raise
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise AnnotationInputError(f"{path}: cannot read it as {kind}: {str(exc).splitlines()[0]}") from None
    _require(columns, frame.columns, path)
    return frame[columns]


def _require(columns: list[str], present, where) -> None:
    present = set(map(str, present))
    missing = [c for c in columns if c not in present]
    if missing:
        raise AnnotationInputError(
            f"{where}: no column {missing[0]!r}; it has {', '.join(sorted(present)) or 'no columns'}"
        )


def as_frame(table, columns: list[str]) -> pd.DataFrame:
    """A DataFrame with the named columns, from a path, DataFrame, mapping of arrays or 2-D array."""
    if isinstance(table, (str, Path)):
        return read_table(table, columns)
    if isinstance(table, np.ndarray):
        if table.ndim != 2:
            raise AnnotationInputError(f"a numpy table must be 2-D (rows × columns), not {table.ndim}-D")
        if table.shape[1] != len(columns):
            raise AnnotationInputError(f"the array has {table.shape[1]} columns but {len(columns)} are named")
        return pd.DataFrame(table, columns=columns)
    if isinstance(table, Mapping):
        _require(columns, table.keys(), "the table")
        return pd.DataFrame({c: np.asarray(table[c]) if not isinstance(table[c], pd.Series) else table[c] for c in columns})
    if isinstance(table, pd.DataFrame):
        _require(columns, table.columns, "the table")
        return table[columns]
    raise AnnotationInputError(f"cannot read a table from {type(table).__name__}; give a path, DataFrame or arrays")


def coordinates(frame: pd.DataFrame, columns: list[str], divisors: Sequence[float] | None = None) -> np.ndarray:
    """Coordinate columns as float32 ``(N, k)``, each divided by its divisor (physical → voxels).

    A non-number or NaN is an error naming its row.  Columns are converted one at a time, so only
    one float64 column exists at once.
    """
    out = np.empty((len(frame), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        raw = frame[column]
        numbers = pd.to_numeric(raw, errors="coerce") if not pd.api.types.is_numeric_dtype(raw) else raw
        values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            row = row_of(bad)
            raise AnnotationInputError(
                f"column {column!r}, row {row}: coordinate {raw.iloc[row - 1]!r} is not a finite number"
            )
        out[:, j] = values / divisors[j] if divisors is not None else values
    return out


def to_uint64(values: np.ndarray, what: str, rows: np.ndarray | None = None) -> np.ndarray:
    """Values as uint64, refusing negatives, fractions, NaN and anything ≥ 2**64.

    ``rows`` maps each value to its 0-based table row, for messages (default: its position).
    """

    def row(mask: np.ndarray) -> int:
        return row_of(mask) if rows is None else int(rows[mask.argmax()]) + 1

    if values.dtype == object or values.dtype.kind in "USO" or isinstance(values.dtype, pd.StringDtype):
        series = pd.Series(values)
        numbers = pd.to_numeric(series, errors="coerce")
        bad = numbers.isna().to_numpy()
        if bad.any():
            raise AnnotationInputError(f"{what}, row {row(bad)}: {series.iloc[int(bad.argmax())]!r} is not a uint64 integer")
        values = numbers.to_numpy()
    if values.dtype.kind in "ub":
        return values.astype(np.uint64)
    if values.dtype.kind == "i":
        bad = values < 0
    else:
        bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < 0) | (values >= UINT64_LIMIT)
    if bad.any():
        raise AnnotationInputError(f"{what}, row {row(bad)}: {plain(values[bad][0])!r} does not fit uint64")
    if values.dtype.kind == "f" and (values > 2.0**53).any():
        raise AnnotationInputError(
            f"{what}, row {row(values > 2.0**53)}: ids above 2**53 were read as floating point and lost "
            "digits; store them as integers (e.g. Parquet uint64)"
        )
    return values.astype(np.uint64)


def relationship_lists(series: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A relationship column as ragged uint64: one id per row, a list per row (Parquet, JSON), or
    text such as ``"1;2"``, ``"1 2"`` or ``"[1, 2]"`` per row (CSV).  Empty cells relate to nothing."""
    series = series.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(series):
        present = series.notna().to_numpy()
        values = to_uint64(series.to_numpy()[present], f"relationship {name!r}", np.flatnonzero(present))
        counts = present.astype(np.int64)
    else:
        lists = series
        if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
            lists = series.str.replace(r"[\[\]]", " ", regex=True).str.strip().str.split(r"[,;\s]+", regex=True)
        exploded = lists.explode()
        present = (exploded.notna() & (exploded.astype("string") != "")).to_numpy()
        rows = exploded.index.to_numpy()[present]
        counts = np.bincount(rows, minlength=len(series)).astype(np.int64)
        values = to_uint64(exploded.to_numpy()[present], f"relationship {name!r}", rows)
    return values, offsets_from_lengths(counts)


def dimensions_json(names: list[str], scale: Sequence[float] | None, units: str | Sequence[str]) -> dict[str, list]:
    rank = len(names)
    scale = [1.0] * rank if scale is None else [float(s) for s in scale]
    units = [units] * rank if isinstance(units, str) else list(units)
    if len(scale) != rank or len(units) != rank:
        raise AnnotationInputError(f"give {rank} scales and units, one per dimension ({', '.join(names)})")
    for u in units:
        if not _UNIT.match(u):
            raise AnnotationInputError(f"unit {u!r} is not one Neuroglancer knows; use e.g. nm, um, m or s")
    if any(not s > 0 for s in scale):
        raise AnnotationInputError("scales must be positive numbers")
    for n in names:
        if not _DIMENSION_NAME.match(n):
            raise AnnotationInputError(f"dimension name {n!r} must be a letter then letters, digits or _")
    return {n: [s, u] for n, s, u in zip(names, scale, units)}


def load_annotations(
    table,
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
) -> AnnotationTable:
    """Map a table onto annotations, checking every column."""
    if type not in ANNOTATION_TYPES:
        raise AnnotationInputError(f"unknown annotation type {type!r}; use one of {', '.join(ANNOTATION_TYPES)}")
    geometry_columns = list(columns) if columns else list(DEFAULT_COLUMNS[type])
    vectors = 2 if type in TWO_VECTOR_TYPES else 1
    if len(geometry_columns) % vectors:
        raise AnnotationInputError(f"{type} needs two columns per dimension (first point, then second); got {len(geometry_columns)}")
    rank = len(geometry_columns) // vectors
    if type == "polyline" and id_column is None:
        raise AnnotationInputError("polylines need an id column: rows sharing an id are one polyline's vertices, in order")
    specs = [as_property_spec(p) for p in properties]
    needed = list(dict.fromkeys([*geometry_columns, *([id_column] if id_column else []), *[s.column for s in specs], *relationships]))
    frame = as_frame(table, needed)
    if len(frame) == 0:
        raise AnnotationInputError("the table has no rows")

    if dimensions is None:
        dimensions = (
            geometry_columns[:rank]
            if vectors == 1 and all(_DIMENSION_NAME.match(c) for c in geometry_columns)
            else (["x", "y", "z"][:rank] if rank <= 3 else [f"d{i}" for i in range(rank)])
        )
    dims = dimensions_json(list(dimensions), scale, units)
    divisors = list(np.tile([s for s, _ in dims.values()], vectors)) if physical else None
    coords = coordinates(frame, geometry_columns, divisors)

    rows = np.arange(len(frame))
    vertex_offsets = None
    if type == "polyline":
        raw_ids = to_uint64(frame[id_column].to_numpy(), f"id column {id_column!r}")
        order = np.argsort(raw_ids, kind="stable")  # stable: vertices keep their row order
        vertex_offsets = run_offsets(raw_ids[order])
        starts, counts = vertex_offsets[:-1], np.diff(vertex_offsets)
        if (counts < 2).any():
            raise AnnotationInputError(
                f"polyline id {raw_ids[order][starts[counts < 2][0]]} has one vertex; a polyline needs at least two"
            )
        coords = coords[order]
        rows = order[starts]  # properties and relationships come from each polyline's first row
        ids = raw_ids[rows]
    elif id_column is not None:
        ids = to_uint64(frame[id_column].to_numpy(), f"id column {id_column!r}")
        sorted_ids = np.sort(ids)
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if len(dup):
            which = np.flatnonzero(ids == sorted_ids[dup[0]])[:2] + 1
            raise AnnotationInputError(
                f"id column {id_column!r}: id {sorted_ids[dup[0]]} appears twice (rows {which[0]} and {which[1]}); ids must be unique"
            )
    else:
        ids = np.arange(len(frame), dtype=np.uint64)

    subset = frame.iloc[rows] if type == "polyline" else frame
    resolved = [resolve_property(spec, subset[spec.column].reset_index(drop=True)) for spec in specs]
    seen: dict[str, str] = {}
    for spec in resolved:
        if spec.id in seen:
            raise AnnotationInputError(f"properties {seen[spec.id]!r} and {spec.column!r} both get id {spec.id!r}; rename one")
        seen[spec.id] = spec.column
    related = [Relationship(name, *relationship_lists(subset[name].reset_index(drop=True), name)) for name in relationships]
    shapes = Shapes(type, rank, coords, vertex_offsets)
    return AnnotationTable(shapes, ids, layout_order(resolved), related, dims)
