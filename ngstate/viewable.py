"""What the bundled Neuroglancer client (the ``neuroglancer`` wheel's, 2.41) cannot show.

``link``, ``inspect`` and ``/-/open`` all ask :func:`viewer_problem`, so this is the one
switch to change once such datasets are served through views the client can read.
"""

from __future__ import annotations

from volumes import Dataset, SourceError

# src/util/data_type.ts: every format's reader maps its type onto these, or refuses it.
CLIENT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")
# src/datasource/zarr/ome.ts SUPPORTED_OME_MULTISCALE_VERSIONS; 0.5 only in zarr v3.
OME_VERSIONS = {"0.4": ("zarr2", "zarr3"), "0.5-dev": ("zarr2", "zarr3"), "0.5": ("zarr3",)}


def viewer_problem(ds: Dataset) -> str | None:
    """Why the bundled client cannot show ``ds``, as a phrase; None when it can."""
    if not ds.native:
        title = ds.extras.get("title") or f"a {ds.format} file"
        return (f"{title}, which Neuroglancer cannot read directly; serve it with ngserve and open it via "
                "/-/open/<its path> (shown through ngserve's translated view)")
    dtype = ds.dtype
    if dtype is not None and dtype not in CLIENT_DTYPES:
        return f"{dtype} data, which the bundled Neuroglancer cannot show (it reads {', '.join(CLIENT_DTYPES)})"
    if ds.scheme == "zarr2" and dtype == "uint64" and any(lv.fill_value is None for lv in ds.levels):
        # src/datasource/zarr/metadata/parse.ts turns a null fill_value into the number 0, which
        # then meets BigInt chunk data: "Cannot mix BigInt and other types", and the view goes black.
        return ("a uint64 zarr v2 array with fill_value null, which the bundled Neuroglancer cannot show "
                "(set fill_value to 0 in its .zarray)")
    if ds.format == "ome-zarr":
        schemes = OME_VERSIONS.get(ds.version or "")
        if schemes is None:
            return (f"OME-Zarr version {ds.version or '(none)'}, which the bundled Neuroglancer cannot show "
                    f"(it reads {', '.join(OME_VERSIONS)})")
        if ds.scheme not in schemes:
            return f"OME-Zarr {ds.version} in zarr v2, which the bundled Neuroglancer cannot show (0.5 needs zarr v3)"
    return None


def require_viewable(ds: Dataset) -> None:
    """Raise :class:`SourceError`, one line naming the source, when the bundled client cannot show ``ds``."""
    problem = viewer_problem(ds)
    if problem:
        raise SourceError(f"{ds.location}: {problem}")
