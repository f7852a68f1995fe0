"""Find out what is at a path or URL by reading a handful of small metadata files."""

from __future__ import annotations

import os

from .location import Location, SourceError
from .model import Dataset
from .n5 import read_n5
from .ome import is_ome, read_ome
from .precomputed import read_precomputed
from .zarr_meta import read_plain_array


def open_dataset(source: str | os.PathLike | Location) -> Dataset:
    """Read the metadata of the dataset at ``source`` (a local path or an http(s) URL).

    Raises :class:`SourceError` with one line naming what was found when the
    source is unreadable or holds no format we know.
    """
    loc = source if isinstance(source, Location) else Location(source)
    if not loc.exists():
        raise SourceError(f"{loc}: no such file or folder")
    z3 = loc.read_json("zarr.json")
    if z3 is not None:
        if z3.get("node_type") == "array":
            return read_plain_array(loc, 3)
        attrs = z3.get("attributes") or {}
        if is_ome(attrs):
            return read_ome(loc, attrs, 3)
        raise SourceError(f"{loc}: a zarr v3 group without OME multiscales ({_group_summary(attrs)})")
    zarray = loc.read_json(".zarray")
    if zarray is not None:
        return read_plain_array(loc, 2)
    zattrs = loc.read_json(".zattrs")
    if zattrs is not None and is_ome(zattrs):
        return read_ome(loc, zattrs, 2)
    if zattrs is not None or loc.read_json(".zgroup") is not None:
        raise SourceError(f"{loc}: a zarr v2 group without OME multiscales ({_group_summary(zattrs or {})})")
    n5 = loc.read_json("attributes.json")
    if n5 is not None:
        return read_n5(loc, n5)
    info = loc.read_json("info")
    if info is not None:
        return read_precomputed(loc, info)
    names = loc.local_names()
    found = f"found only {', '.join(names)}" if names else "found none of them"
    raise SourceError(
        f"{loc}: no dataset here: looked for zarr.json, .zarray, .zattrs, .zgroup, attributes.json and info, {found}"
    )


def _group_summary(attrs: dict) -> str:
    labels = (attrs.get("ome") or attrs).get("labels")
    if isinstance(labels, list):
        return f"a labels group listing {', '.join(map(str, labels))}; open one of them"
    return "attributes: " + (", ".join(sorted(attrs)) or "none")
