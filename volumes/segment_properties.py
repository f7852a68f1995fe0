"""Present per-segment names, tags, numbers and colors as Neuroglancer reads them.

The output is a precomputed ``neuroglancer_segment_properties`` ``info`` (spec:
``src/datasource/precomputed/segment_properties.md`` in google/neuroglancer), made from
OME-Zarr ``image-label`` metadata (``properties``, ``colors``) or from a table's columns.
Pure functions: no I/O, so the server, the CLI and ngstate share them.

How a column becomes a property (one rule for OME keys and table columns):
- the name column (``name``, else ``label``, else the one given) becomes the ``label``;
- ``description`` becomes the ``description``;
- numbers become ``number`` properties (int32 when every value is an integer in range, else float32);
- other text, lists of text and booleans become ``tags`` (``key`` for a true boolean, the text
  itself otherwise, spaces as ``_``): the segment list filters by ``#tag``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .location import SourceError

LABEL_KEYS = ("name", "label")
_MAX_ID = 2**64 - 1
_FLOAT32_MAX = 3.4028234663852886e38
_INT32 = (-(2**31), 2**31 - 1)


def _segment_id(value: Any, where: str, what: str = "label-value") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_ID:
        raise SourceError(f"{where}: {what} {value!r} is not a segment id (an integer 0 to 2**64-1)")
    return value


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fits_float32(v: int | float) -> bool:
    return abs(v) <= _FLOAT32_MAX if not isinstance(v, float) or math.isfinite(v) else False


def _tag(text: str) -> str:
    """Text as a tag: no spaces, no leading ``#`` (the client adds it), empty when nothing is left."""
    return "_".join(str(text).split()).lstrip("#")


def build_info(ids: Sequence[int], columns: Mapping[str, Sequence[Any]], label: str | None = None, where: str = "properties") -> dict:
    """The ``info`` for segments ``ids`` with per-segment ``columns`` (None or NaN: no value).

    ``label`` names the column shown next to each id; by default ``name`` or ``label``.
    """
    seen: set[int] = set()
    for i in ids:
        if i in seen:
            raise SourceError(f"{where}: segment {i} is listed twice")
        seen.add(i)
    label = label or next((k for k in LABEL_KEYS if k in columns), None)
    if label is not None and label not in columns:
        raise SourceError(f"{where}: no column {label!r}; it has {', '.join(map(str, columns)) or 'no columns'}")
    properties: list[dict] = []
    tag_sets: list[set[str]] = [set() for _ in ids]
    for key, values in columns.items():
        key = str(key)
        present = [v for v in values if not _missing(v)]
        if key in (label, "description"):
            if any(not isinstance(v, str) for v in present):
                raise SourceError(f"{where}: {key!r} must be text for every segment")
            kind = "label" if key == label else "description"
            properties.append({"id": kind, "type": kind, "values": ["" if _missing(v) else v for v in values]})
        elif present and all(_is_number(v) for v in present):
            bad = next((v for v in present if not _fits_float32(v)), None)
            if bad is not None:
                raise SourceError(f"{where}: {key!r} has {bad}, which a float32 property cannot hold")
            whole = len(present) == len(values) and all(float(v).is_integer() and _INT32[0] <= v <= _INT32[1] for v in present)
            properties.append({
                "id": key, "type": "number", "data_type": "int32" if whole else "float32",
                # JSON has no NaN: a segment without a value says 0.
                "values": [int(v) for v in values] if whole else [0 if _missing(v) else float(v) for v in values],
            })
        elif all(isinstance(v, (str, bool)) or _is_list_of_text(v) for v in present):
            for tags, v in zip(tag_sets, values):
                texts = [key] if v is True else [v] if isinstance(v, str) else v if isinstance(v, (list, tuple)) else []
                tags.update(t for t in map(_tag, texts) if t)
        else:
            raise SourceError(f"{where}: {key!r} mixes numbers and text; give it one kind of value")
    # The client matches tags case-insensitively: "Round" and "round" are one tag, spelled as the
    # first segment that has it spells it.
    spelling: dict[str, str] = {}
    for tags in tag_sets:
        for t in sorted(tags):
            spelling.setdefault(t.lower(), t)
    if spelling:
        index = {low: i for i, low in enumerate(sorted(spelling))}
        properties.append({"id": "tags", "type": "tags", "tags": [spelling[low] for low in sorted(spelling)],
                           "values": [sorted({index[t.lower()] for t in tags}) for tags in tag_sets]})
    return {"@type": "neuroglancer_segment_properties",
            "inline": {"ids": [str(i) for i in ids], "properties": properties}}


def _is_list_of_text(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(t, str) for t in v)


def image_label_of(attrs: Mapping) -> dict | None:
    """The ``image-label`` object of an OME group's attributes (0.4: top level; 0.5: under ``ome``)."""
    ome = attrs.get("ome")
    found = (ome.get("image-label") if isinstance(ome, Mapping) else None) or attrs.get("image-label")
    return found if isinstance(found, dict) else None


def from_image_label(image_label: Mapping, where: str = "image-label") -> dict | None:
    """The ``info`` for OME ``image-label`` ``properties``; None when it has none."""
    props = image_label.get("properties")
    if props is None:
        return None
    if not isinstance(props, list) or not all(isinstance(p, Mapping) for p in props):
        raise SourceError(f"{where}: properties must be a list of objects")
    if not props:
        return None
    ids = [_segment_id(p.get("label-value"), f"{where} properties") for p in props]
    keys: list[str] = []
    for p in props:
        keys += [k for k in p if k != "label-value" and k not in keys]
    columns = {k: [p.get(k) for p in props] for k in keys}
    return build_info(ids, columns, where=f"{where} properties")


def colors_of(image_label: Mapping, where: str = "image-label") -> dict[str, str]:
    """OME ``colors`` as Neuroglancer's ``segmentColors``: segment id (text) -> ``#rrggbb``."""
    colors = image_label.get("colors")
    if colors is None:
        return {}
    if not isinstance(colors, list) or not all(isinstance(c, Mapping) for c in colors):
        raise SourceError(f"{where}: colors must be a list of objects")
    out = {}
    for c in colors:
        seg = _segment_id(c.get("label-value"), f"{where} colors")
        rgba = c.get("rgba")
        if not (isinstance(rgba, list) and len(rgba) in (3, 4) and all(_is_number(v) and 0 <= v <= 255 for v in rgba)):
            raise SourceError(f"{where} colors: rgba of segment {seg} must be 3 or 4 numbers from 0 to 255")
        out[str(seg)] = "#" + "".join(f"{int(round(v)):02x}" for v in rgba[:3])
    return out


def from_frame(frame, id_column: str = "id", label: str | None = None, where: str = "table") -> dict:
    """The ``info`` for a table (pandas DataFrame): ``id_column`` holds the segment ids
    (exact uint64 values, e.g. from ``annotations``' table reader), every other column a property."""
    if id_column not in frame.columns:
        raise SourceError(f"{where}: no column {id_column!r}; it has {', '.join(map(str, frame.columns))}")
    ids = [_segment_id(_as_int(v), where, id_column) for v in frame[id_column].tolist()]
    columns = {str(c): [_plain(v) for v in frame[c].tolist()] for c in frame.columns if c != id_column}
    return build_info(ids, columns, label, where)


def _as_int(v: Any) -> Any:
    """An id as read from a table (exact text, a Python int, a whole float) as an int, else as it is."""
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _plain(v: Any) -> Any:
    """numpy scalars as Python values (pandas' tolist() gives them for some dtypes)."""
    return v.item() if hasattr(v, "item") and not isinstance(v, (list, tuple, str)) else v
