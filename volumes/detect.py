"""Find out what is at a path or URL by reading a handful of small metadata files."""

from __future__ import annotations

import os

from .files import open_file_dataset, open_slice_folder
from .formats import is_ome, ome_labels
from .location import Location, SourceError
from .model import Dataset
from .n5 import read_n5
from .ome import read_ome
from .precomputed import read_precomputed
from .zarr_meta import read_plain_array


def open_dataset(source: str | os.PathLike | Location) -> Dataset:
    """Read the metadata of the dataset at ``source`` (a local path or an http(s) URL).

    Raises :class:`SourceError` with one line naming what was found when the
    source is unreadable or holds no format we know.
    """
    if isinstance(source, str) and source.startswith("memory://"):
        from .memory import open_memory

        return open_memory(source)
    loc = source if isinstance(source, Location) else Location(source)
    # An explicit precomputed:// says the format: a view of a file is not that file (x.tif/info).
    explicit = isinstance(source, str) and source.startswith("precomputed://")
    try:
        return _read_precomputed(loc) if explicit else _read(loc)
    except (TypeError, KeyError, AttributeError, IndexError) as exc:
        # Metadata is JSON of any shape, and the readers take its fields as the format
        # specifies: a number where a list belongs, or a missing key, ends up here.
        detail = f"no {exc.args[0]!r} key" if isinstance(exc, KeyError) else str(exc)
        raise SourceError(f"{loc}: metadata that does not fit its format ({detail})") from None


def _read_precomputed(loc: Location) -> Dataset:
    info = loc.read_json("info")
    if info is None:
        raise SourceError(f"{loc}: no precomputed info file")
    return read_precomputed(loc, info)


def _read(loc: Location) -> Dataset:
    single = open_file_dataset(loc)  # TIFF, MRC, HDF5, NIfTI: judged by name
    if single is not None:
        return single
    if not loc.exists():
        raise SourceError(f"{loc}: no such file or folder")
    z3 = loc.read_json("zarr.json")
    if z3 is not None:
        if z3.get("node_type") == "array":
            return read_plain_array(loc, 3)
        attrs = z3.get("attributes") or {}
        if is_ome(attrs):
            return read_ome(loc, attrs, 3)
        raise _group_error(loc, attrs, 3)
    zarray = loc.read_json(".zarray")
    if zarray is not None:
        return read_plain_array(loc, 2)
    zattrs = loc.read_json(".zattrs")
    if zattrs is not None and is_ome(zattrs):
        return read_ome(loc, zattrs, 2)
    if zattrs is not None or loc.read_json(".zgroup") is not None:
        raise _group_error(loc, zattrs or {}, 2)
    n5 = loc.read_json("attributes.json")
    if n5 is not None:
        return read_n5(loc, n5)
    info = loc.read_json("info")
    if info is not None:
        return read_precomputed(loc, info)
    stack = open_slice_folder(loc)
    if stack is not None:
        return stack
    names = loc.local_names()
    found = f"found only {', '.join(names)}" if names else "found none of them"
    raise SourceError(
        f"{loc}: no dataset here: looked for zarr.json, .zarray, .zattrs, .zgroup, attributes.json, info and TIFF slices, "
        f"{found}"
    )


def open_datasets(source: str | os.PathLike | Location) -> dict[str, Dataset]:
    """The datasets at ``source`` by their path below it: ``{"": dataset}``, or for an OME-Zarr
    ``labels/`` group, each label image it lists (placed by its own metadata, so aligned like
    the image).  Errors as :func:`open_dataset`."""
    loc = source if isinstance(source, Location) else Location(source)
    try:
        return {"": open_dataset(loc)}
    except _LabelsGroup as group:
        return {name: open_dataset(loc.child(name)) for name in group.labels}


class _LabelsGroup(SourceError):
    """An OME ``labels/`` group: no array itself, the names of label images."""

    def __init__(self, loc: Location, labels: list[str]) -> None:
        super().__init__(f"{loc}: an OME labels group listing {', '.join(labels)}; open one of them")
        self.labels = labels


def _group_error(loc: Location, attrs: dict, version: int) -> SourceError:
    """What a zarr group without OME multiscales is, as the error :func:`open_dataset` raises."""
    labels = ome_labels(attrs)
    if labels:
        return _LabelsGroup(loc, labels)
    found = ", ".join(sorted(attrs)) or "none"
    return SourceError(
        f"{loc}: a zarr v{version} group that is neither an OME multiscale image nor a labels group "
        f"(attributes: {found})"
    )
