"""Format knowledge shared by the server, ngstate and the annotation writer."""

from __future__ import annotations

import importlib
import os
from typing import Any

from .atomic import building
from .errors import detail, first_line, naming
from .formats import (
    MARKERS, VOLUME_FILE_SUFFIXES, format_from_names, group_metadata_file, is_viewable_zarr, volume_file_kind,
)
from .location import Location, SourceError, strip_scheme
from .model import Axis, Dataset, Level

# Public names whose modules import numpy/tensorstore: loaded on first use (PEP 562), so that
# importing volumes keeps the server's start-up light.
_LAZY = {
    "contrast_range": "stats",
    "convert": "conversion",
    "blobs": "synthetic",
    "add_labels_group": "write",
    "write_ome_zarr": "write",
    "hdf5_datasets": "hdf5",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def open_dataset(source) -> Dataset:
    """Read the metadata of the dataset at a local path or http(s) URL (see :mod:`volumes.detect`)."""
    from .detect import open_dataset as _open  # keeps numpy out of the server's import path

    return _open(source)


def open_datasets(source: str | os.PathLike | Location) -> dict[str, Dataset]:
    """``{"": dataset}``, or each label image of an OME ``labels/`` group by name (see :mod:`volumes.detect`)."""
    from .detect import open_datasets as _open  # keeps numpy out of the server's import path

    return _open(source)


__all__ = [
    "Axis", "Dataset", "Level", "Location", "MARKERS", "SourceError", "building", "detail", "first_line",
    "format_from_names", "group_metadata_file", "is_viewable_zarr", "naming", "open_dataset", "open_datasets",
    "strip_scheme", "VOLUME_FILE_SUFFIXES", "volume_file_kind", *_LAZY,
]
