"""Which format a folder holds, judged from the names of its files and at most one small file.

This is the cheap test the server's listing runs on every child folder; the
full metadata reader looks inside the files.  It stays free of numpy and
tensorstore, which the server does not load until it builds a state.
"""

from __future__ import annotations

import json
from typing import Iterable

# Marker file -> format, in the order a folder is judged (first match wins).
MARKERS: tuple[tuple[str, str], ...] = (
    ("zarr.json", "zarr3"),
    (".zarray", "zarr2"),
    (".zgroup", "zarr2"),
    ("attributes.json", "n5"),
    ("info", "precomputed"),
)


def format_from_names(names: Iterable[str]) -> str | None:
    """``"zarr3"``, ``"zarr2"``, ``"n5"``, ``"precomputed"``, ``"tiff stack"`` (a folder of TIFF
    slices and nothing else we read: at least two, as :func:`volumes.detect.open_dataset` stacks
    them) or None."""
    present = set(names)
    for marker, fmt in MARKERS:
        if marker in present or marker + ".gz" in present:
            return fmt
    if sum(volume_file_kind(n) == "tiff" for n in present) >= 2:
        return "tiff stack"
    return None


# File name endings of the single-file volumes ngserve reads itself -> format (``.ome.tif`` ends in ``.tif``).
VOLUME_FILE_SUFFIXES: dict[str, str] = {
    ".tif": "tiff", ".tiff": "tiff",
    ".mrc": "mrc", ".map": "mrc", ".rec": "mrc",
    ".h5": "hdf5", ".hdf5": "hdf5",
    ".nii": "nifti", ".nii.gz": "nifti",
}


def volume_file_kind(name: str) -> str | None:
    """``"tiff"``, ``"mrc"``, ``"hdf5"`` or ``"nifti"`` when a file of this name is a volume ngserve
    can show (by its name alone, as a listing judges it), else None."""
    lower = name.lower()
    for suffix, fmt in VOLUME_FILE_SUFFIXES.items():
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return fmt
    return None


def ome_attrs(attrs: dict) -> tuple[dict, str | None]:
    """The OME block of group attributes (0.5 nests it under ``ome``) and its version."""
    ome = attrs.get("ome")
    if isinstance(ome, dict):
        return ome, ome.get("version")
    ms = attrs.get("multiscales")
    version = ms[0].get("version") if isinstance(ms, list) and ms and isinstance(ms[0], dict) else None
    return attrs, version


def is_ome(attrs: dict) -> bool:
    """Whether group attributes describe an OME multiscale image."""
    ome, _ = ome_attrs(attrs)
    return isinstance(ome.get("multiscales"), list) and bool(ome["multiscales"])


def ome_labels(attrs: dict) -> list[str]:
    """The label images an OME ``labels/`` group's attributes list; empty for any other group."""
    names = ome_attrs(attrs)[0].get("labels")
    return [str(n) for n in names] if isinstance(names, list) else []


def group_metadata_file(names: Iterable[str]) -> str | None:
    """For a zarr folder, the one file that tells whether it can be viewed: ``zarr.json`` (a v3
    array or group), a v2 array's ``.zarray`` (its dtype) or a v2 group's ``.zattrs``.  None when
    the names alone decide."""
    present = set(names)
    fmt = format_from_names(present)
    if fmt == "zarr3":
        return "zarr.json"
    if fmt == "zarr2":
        return ".zarray" if {".zarray", ".zarray.gz"} & present else ".zattrs"
    return None


# numpy dtype codes of zarr v2 (kind and size, byte order dropped) -> the type names of v3 and of ``Level.dtype``
_V2_DTYPES = {"b1": "bool", "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64", "i1": "int8",
              "i2": "int16", "i4": "int32", "i8": "int64", "f2": "float16", "f4": "float32", "f8": "float64"}


def shown_dtype(name: str | None) -> bool:
    """Whether a view ngserve serves can show data of this type (every type precomputed presents)."""
    from .present_precomputed import DATA_TYPES  # pure, no numpy: the one list of what can be shown

    return name in DATA_TYPES


def is_viewable_zarr(metadata: bytes | None, name: str = "") -> bool:
    """Whether the file :func:`group_metadata_file` named shows a zarr array of a type some view
    shows (not strings or structures), an OME multiscale image or an OME ``labels/`` group.  Any
    other zarr group is a folder, not a dataset."""
    try:
        meta = json.loads(metadata) if metadata is not None else None
    except (ValueError, RecursionError):  # RecursionError: nested past json's limit, no metadata is
        return False
    if not isinstance(meta, dict):
        return False
    # An array's type: a string names it; a list (v2) or object (v3) is a structure.  Without one
    # the array's own reader will say what is wrong, so it keeps its link.
    if meta.get("node_type") == "array":
        dtype = meta.get("data_type", "uint8")
        return isinstance(dtype, str) and shown_dtype(dtype)
    if name == ".zarray":
        dtype = meta.get("dtype", "|u1")
        return isinstance(dtype, str) and shown_dtype(_V2_DTYPES.get(dtype.lstrip("<>|=")))
    attrs = meta.get("attributes") if "node_type" in meta else meta  # a v3 group, or v2 .zattrs
    return isinstance(attrs, dict) and (is_ome(attrs) or bool(ome_labels(attrs)))
