"""Read the named columns of a table file: CSV, TSV, Parquet, JSON or NDJSON (optionally .gz).

Id columns (``exact``) never pass through float64 or int64, which would garble ids above 2**53
or 2**63: CSV/TSV hands them over as Arrow text, JSON as Python ints; ``uint64.to_uint64`` then
converts them exactly.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Collection, Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv

from .errors import AnnotationInputError

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


def _kind(path: Path) -> tuple[str, bool]:
    """(format, gzip-compressed) of a table file that exists; one line naming the fix otherwise."""
    compressed = path.suffix.lower() == ".gz"
    kind = TABLE_FORMATS.get((path.suffixes[-2] if compressed and len(path.suffixes) > 1 else path.suffix).lower())
    if kind is None:
        raise AnnotationInputError(f"{path}: unknown table format; use one of {', '.join(sorted(TABLE_FORMATS))}")
    if not path.is_file():
        raise AnnotationInputError(f"{path}: no such file")
    return kind, compressed


def columns_of(source: str | Path) -> list[str]:
    """The column names of a table file, in order (a JSON table's: every key of any row)."""
    path = Path(source)
    kind, compressed = _kind(path)
    try:
        if kind in ("csv", "tsv"):
            return [str(c) for c in pd.read_csv(path, sep="," if kind == "csv" else "\t", nrows=0).columns]
        if kind == "parquet":
            import pyarrow.parquet as pq

            return [n for n in pq.read_schema(path).names if not n.startswith("__index_level_")]
        with (gzip.open if compressed else open)(path, "rt", encoding="utf-8") as f:
            records = _json_records(f, kind == "ndjson")
        return list(dict.fromkeys(k for r in records if isinstance(r, dict) for k in r))
    except (ValueError, OSError, UnicodeDecodeError, pa.ArrowException) as exc:
        raise AnnotationInputError(f"{path}: cannot read it as {kind}: {str(exc).splitlines()[0]}") from None


def read_table(source: str | Path, columns: list[str], exact: Collection[str] = ()) -> pd.DataFrame:
    """The named ``columns`` of a table file; the ``exact`` ones are left as text or Python ints."""
    path = Path(source)
    kind, compressed = _kind(path)
    try:
        if kind in ("csv", "tsv"):
            return _read_csv(path, "," if kind == "csv" else "\t", columns, exact)
        if kind == "parquet":
            import pyarrow.parquet as pq

            require(columns, pq.read_schema(path).names, path)
            return pd.read_parquet(path, columns=columns)
        with (gzip.open if compressed else open)(path, "rt", encoding="utf-8") as f:
            return _json_frame(_json_records(f, kind == "ndjson"), columns, exact, path)
    except AnnotationInputError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pa.ArrowException) as exc:
        raise AnnotationInputError(f"{path}: cannot read it as {kind}: {str(exc).splitlines()[0]}") from None


def require(columns: list[str], present: Iterable, where) -> None:
    present = set(map(str, present))
    missing = [c for c in columns if c not in present]
    if missing:
        raise AnnotationInputError(
            f"{where}: no column {missing[0]!r}; it has {', '.join(sorted(present)) or 'no columns'}"
        )


def _read_csv(path: Path, sep: str, columns: list[str], exact: Collection[str]) -> pd.DataFrame:
    # pyarrow.csv parses in C++, a thread per block, straight into the arrays pandas wraps.
    require(columns, pd.read_csv(path, sep=sep, nrows=0).columns, path)

    def read(names: list[str], as_text: Collection[str]) -> pa.Table:
        return csv.read_csv(
            path,
            parse_options=csv.ParseOptions(delimiter=sep),
            convert_options=csv.ConvertOptions(
                include_columns=names, column_types={c: pa.string() for c in as_text}, strings_can_be_null=True
            ),
            memory_pool=_memory_pool(),
        )

    table = read(columns, exact)  # ids stay text, for to_uint64
    frame = {name: table[name] for name in table.column_names}
    # Arrow infers integers past 2**63 as float64, which loses their last digits: read any
    # column that may hold such integers again as text, and type it without a float.
    suspect = [n for n, c in frame.items() if n not in exact and pa.types.is_floating(c.type) and _beyond_int64(c)]
    if suspect:
        frame.update({n: _typed(c) for n, c in zip(suspect, read(suspect, suspect).columns)})
    return pd.DataFrame(
        {n: pd.Series(pd.arrays.ArrowExtensionArray(c)) if n in exact else c.to_pandas() for n, c in frame.items()},
        copy=False,  # no consolidation into one 2-D block: that would copy every column
    )


def _memory_pool() -> pa.MemoryPool:
    # jemalloc hands the CSV's memory back once the table is converted: at 10M rows the peak RSS
    # was 2.2 GB against 3.5 GB with malloc, and in a fresh process it starts ~0.3 s faster than
    # mimalloc (Arrow's default).  Not every pyarrow build has it.
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool()


def _beyond_int64(column: pa.ChunkedArray) -> bool:
    return bool(pc.any(pc.greater_equal(pc.abs(column), 2.0**63)).as_py())


def _typed(text: pa.ChunkedArray) -> pa.ChunkedArray:
    """Text as the narrowest of int64, uint64 and float64 that holds it all, else as text."""
    for type_ in (pa.int64(), pa.uint64(), pa.float64()):
        try:
            return pc.cast(text, type_)
        except pa.ArrowInvalid:
            continue
    return text


def _json_records(f, lines: bool) -> list:
    """Rows of a JSON array of objects, a JSON object of columns, or one object per line."""
    if lines:
        rows = f.read().splitlines()
        try:  # one parse of all lines is ~3x faster than a call per line
            records = json.loads("[" + ",".join(rows) + "]")
            if len(records) == len(rows):
                return records
        except json.JSONDecodeError:
            pass
        records = []  # blank lines, or a line to name in an error: one line at a time
        for number, line in enumerate(rows, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {number}: {exc}") from None
        return records
    data = json.load(f)
    if isinstance(data, dict):  # columns: {"x": [..]} or pandas' {"x": {"0": ..}}
        cells = {k: list(v.values()) if isinstance(v, dict) else v for k, v in data.items()}
        if not all(isinstance(v, list) for v in cells.values()) or len({len(v) for v in cells.values()}) > 1:
            raise ValueError("a JSON object must map each column to a list of equal length")
        return [dict(zip(cells, row)) for row in zip(*cells.values())]
    if not isinstance(data, list):
        raise ValueError("expected a list of row objects")
    return data


def _json_frame(records: list, columns: list[str], exact: Collection[str], path: Path) -> pd.DataFrame:
    # Python's json keeps every integer exact; pandas' reader turns ids above 2**63 mixed with a
    # null or a negative into floats, and refuses 2**64 with no row to name.
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise AnnotationInputError(f"{path}: row {bad + 1} is not an object of column values")
    if any(not any(c in r for r in records) for c in columns if not records or c not in records[0]):
        require(columns, set().union(*records), path)  # some column is in no record: say which
    return pd.DataFrame(
        {c: pd.Series([r.get(c) for r in records], dtype=object if c in exact else None) for c in columns},
        copy=False,
    )
