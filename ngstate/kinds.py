"""Which layer type a dataset should open as."""

from __future__ import annotations

import re

from volumes import Dataset

KINDS = ("image", "segmentation", "annotation")
_LABEL_NAME = re.compile(r"^(labels?|seg|segmentation|.+_seg|.+_labels?)$", re.IGNORECASE)


def infer_kind(ds: Dataset) -> tuple[str, str]:
    """(kind, reason).  Metadata first, then uint64, then a label-like name on integer data."""
    if ds.kind_hint in ("segmentation", "annotation"):
        return ds.kind_hint, ds.kind_reason or "metadata"
    dtype = ds.dtype or ""
    if dtype in ("uint64", "int64"):
        return "segmentation", f"{dtype} data"
    if ds.kind_hint == "image":
        return "image", ds.kind_reason or "metadata"
    integer = dtype.startswith(("uint", "int"))
    if integer and _LABEL_NAME.match(ds.name):
        return "segmentation", f"integer data named {ds.name!r}"
    return "image", "default"
