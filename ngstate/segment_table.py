"""A table of segment names and properties as a precomputed ``segment_properties`` folder.

Neuroglancer reads segment properties only from a URL, so a table given at link time is
written as ``<table>.segment_properties/info`` beside the table: the ngserve that serves the
table's folder serves it too, with no state on the server.  The folder is rebuilt on each
link (atomically), so it follows the table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from volumes import SourceError, building

SUFFIX = ".segment_properties"


def write_segment_properties(table: str | os.PathLike, id_column: str = "id", label: str | None = None) -> Path:
    """Write the properties of ``table`` (CSV, TSV, Parquet, JSON; ids in ``id_column``, names in
    ``label`` or ``name``/``label``) beside it; return the folder."""
    from annotations.files import columns_of, read_table  # lazily: pandas and pyarrow
    from volumes.segment_properties import from_frame

    path = Path(table).expanduser().resolve()
    try:
        frame = read_table(path, columns_of(path), exact=[id_column])
    except ValueError as exc:  # the reader's one line, naming the file and the fix
        raise SourceError(str(exc)) from None
    info = from_frame(frame, id_column, label, where=str(path))
    out = path.with_name(path.name + SUFFIX)
    with building(out) as staging:
        (staging / "info").write_text(json.dumps(info, separators=(",", ":")))
    return out
