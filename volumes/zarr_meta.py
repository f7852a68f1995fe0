"""Zarr v2/v3 array metadata and plain (non-OME) zarr arrays as Neuroglancer sees them."""

from __future__ import annotations

import numpy as np

from .location import Location, SourceError
from .model import Axis, Dataset, Level
from .units import parse_dimension_unit


def array_level(loc: Location, path: str, version: int) -> tuple[Level, dict, dict]:
    """The :class:`Level` of the zarr array at ``path`` (factors all 1), its user attributes and raw metadata."""
    if version == 3:
        meta = loc.read_json(f"{path}/zarr.json" if path else "zarr.json")
        if meta is None or meta.get("node_type") != "array":
            raise SourceError(f"no zarr v3 array at {loc.url_of(path)}")
        attrs = meta.get("attributes") or {}
        chunks = meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape", [])
        dtype = str(meta.get("data_type"))
        codecs = [c.get("name") for c in meta.get("codecs", []) if isinstance(c, dict)]
        encoding = "+".join(codecs) or None
        driver = "zarr3"
    else:
        meta = loc.read_json(f"{path}/.zarray" if path else ".zarray")
        if meta is None:
            raise SourceError(f"no zarr v2 array at {loc.url_of(path)}")
        attrs = loc.read_json(f"{path}/.zattrs" if path else ".zattrs") or {}
        chunks = meta.get("chunks", [])
        dtype = _v2_dtype_name(meta.get("dtype"))
        comp = meta.get("compressor")
        encoding = comp.get("id") if isinstance(comp, dict) else None
        driver = "zarr"
    shape = [int(s) for s in meta.get("shape", [])]
    level = Level(
        path=path,
        shape=shape,
        chunks=[int(c) for c in chunks],
        dtype=dtype,
        factors=[1.0] * len(shape),
        encoding=encoding,
        spec={"driver": driver, "kvstore": loc.kvstore(path)},
    )
    return level, attrs, meta


def _v2_dtype_name(raw) -> str:
    """numpy's name for a zarr v2 ``dtype`` (``<u2`` -> ``uint16``), as zarr v3 names them.

    numpy knows bfloat16 and float8 only once ml_dtypes is imported, and a broken name not
    at all: then the name as written, and tensorstore says what it makes of it on reading.
    """
    if isinstance(raw, list):
        return "structured"
    try:
        return np.dtype(raw).name
    except TypeError:
        return str(raw)


def default_names(names: list[str | None], version: int) -> list[str]:
    """Neuroglancer's names for zarr dimensions: given names, else ``d0``.. (v2) / ``dim_0``.. (v3)."""
    prefix = "d" if version == 2 else "dim_"
    seen: set[str] = set()
    out = []
    for i, name in enumerate(names):
        if name is None:
            j = i
            while f"{prefix}{j}" in seen:
                j += 1
            name = f"{prefix}{j}"
        elif name in seen:
            j = 1
            while f"{name}{j}" in seen:
                j += 1
            name = f"{name}{j}"
        seen.add(name)
        out.append(name)
    return out


def read_plain_array(loc: Location, version: int) -> Dataset:
    """A zarr array without OME metadata: named and scaled exactly as Neuroglancer does."""
    level, attrs, meta = array_level(loc, "", version)
    rank = len(level.shape)
    if version == 3:
        names = list(meta.get("dimension_names") or [None] * rank)
        units = attrs.get("dimension_units") or [None] * rank
    else:
        names = list(attrs.get("_ARRAY_DIMENSIONS") or [None] * rank)
        units = attrs.get("dimension_units") or [None] * rank
    names = default_names(names, version)
    native = []
    for name, unit_text in zip(names, units):
        unit, scale = parse_dimension_unit(unit_text)
        native.append(Axis(name, unit, scale, "space" if unit == "m" else "other"))
    # A dimension the data calls a channel becomes a layer-local channel axis.
    axes = [
        Axis(a.name + "'", "", 1.0, "channel") if a.name in ("c", "channel") else Axis(a.name, a.unit, a.scale, a.type)
        for a in native
    ]
    fmt = "zarr3" if version == 3 else "zarr2"
    return Dataset(
        location=loc,
        format=fmt,
        scheme=fmt,
        axes=axes,
        offset=[0.0] * rank,
        levels=[level],
        native_axes=native,
        native_offset=[0.0] * rank,
        version=str(version),
    )
