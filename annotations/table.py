"""Input: read a table (file, DataFrame, arrays) and map its columns onto annotations.

Everything here is columnar: pandas/pyarrow parse, numpy checks, and only the columns the
mapping names are read.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import AnnotationInputError, plain, row_of
from .files import read_table, require
from .geometry import ANNOTATION_TYPES, TWO_VECTOR_TYPES, Shapes
from .properties import PropertySpec, as_property_spec, layout_order, resolve_property
from .ragged import run_offsets
from .uint64 import to_uint64, uint64_lists

DEFAULT_COLUMNS = {
    "point": ["x", "y", "z"],
    "polyline": ["x", "y", "z"],
    "line": ["x1", "y1", "z1", "x2", "y2", "z2"],
    "axis_aligned_bounding_box": ["x1", "y1", "z1", "x2", "y2", "z2"],
    "ellipsoid": ["x", "y", "z", "rx", "ry", "rz"],
}
_UNIT = re.compile(r"^((Y|Z|E|P|T|G|M|k|h|da|d|c|m|u|µ|n|p|f|a|z|y)?(m|s|Hz|rad/s))?$")
_DIMENSION_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


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


def as_frame(table, columns: list[str], exact: Collection[str] = ()) -> pd.DataFrame:
    """A DataFrame with the named columns, from a path, DataFrame, mapping of arrays or 2-D array.

    A file's ``exact`` (id) columns are read without passing through float64 or int64."""
    if isinstance(table, (str, Path)):
        return read_table(table, columns, exact)
    if isinstance(table, np.ndarray):
        if table.ndim != 2:
            raise AnnotationInputError(f"a numpy table must be 2-D (rows × columns), not {table.ndim}-D")
        if table.shape[1] != len(columns):
            raise AnnotationInputError(f"the array has {table.shape[1]} columns but {len(columns)} are named")
        return pd.DataFrame(table, columns=columns)
    if isinstance(table, Mapping):
        require(columns, table.keys(), "the table")
        return pd.DataFrame({c: np.asarray(table[c]) if not isinstance(table[c], pd.Series) else table[c] for c in columns})
    if isinstance(table, pd.DataFrame):
        require(columns, table.columns, "the table")
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
                f"column {column!r}, row {row}: coordinate {plain(raw.iloc[row - 1])!r} is not a finite number"
            )
        out[:, j] = values / divisors[j] if divisors is not None else values
    return out


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
    frame = as_frame(table, needed, exact=[*([id_column] if id_column else []), *relationships])
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
        raw_ids = to_uint64(frame[id_column], f"id column {id_column!r}")
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
        ids = to_uint64(frame[id_column], f"id column {id_column!r}")
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
    related = [Relationship(name, *uint64_lists(subset[name].reset_index(drop=True), f"relationship {name!r}")) for name in relationships]
    shapes = Shapes(type, rank, coords, vertex_offsets)
    return AnnotationTable(shapes, ids, layout_order(resolved), related, dims)
