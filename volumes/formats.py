"""Which format a folder holds, judged from the names of its files alone.

This is the cheap test the server's listing runs on every child folder; the
full metadata reader looks inside the files.
"""

from __future__ import annotations

from typing import Iterable

# Marker file -> format, in the order a folder is judged (first match wins).
MARKERS: tuple[tuple[str, str], ...] = (
    ("zarr.json", "zarr3"),
    (".zarray", "zarr2"),
    (".zgroup", "zarr2"),
    ("attributes.json", "n5"),
    ("info", "precomputed"),
)

# Neuroglancer's data-source scheme for each format.
NG_SCHEME = {"zarr3": "zarr3", "zarr2": "zarr2", "n5": "n5", "precomputed": "precomputed"}


def format_from_names(names: Iterable[str]) -> str | None:
    """``"zarr3"``, ``"zarr2"``, ``"n5"``, ``"precomputed"`` or None."""
    present = set(names)
    for marker, fmt in MARKERS:
        if marker in present or marker + ".gz" in present:
            return fmt
    return None
