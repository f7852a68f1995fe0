"""Which view of a dataset the bundled Neuroglancer client (the ``neuroglancer`` wheel's, 2.41)
shows right: :func:`choose_view` is the one place that decides.

``link``, ``inspect``, ``/-/open`` and the state builder all ask it.  A source served by
ngserve is shown through the view it names (``/-/zarr/``, ``/-/n5/``, ``/-/precomputed/``);
a source elsewhere can be shown only natively.
"""

from __future__ import annotations

from volumes import Dataset, SourceError

# src/util/data_type.ts: every format's reader maps its type onto these, or refuses it.
CLIENT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "float32")
# src/datasource/zarr/ome.ts SUPPORTED_OME_MULTISCALE_VERSIONS; 0.5 only in zarr v3.
OME_VERSIONS = {"0.4": ("zarr2", "zarr3"), "0.5-dev": ("zarr2", "zarr3"), "0.5": ("zarr3",)}


def _native_problem(ds: Dataset) -> tuple[str | None, str | None]:
    """(why the client cannot show ``ds`` as it is stored, the repaired view that fixes it or None)."""
    if not ds.native:
        title = ds.extras.get("title") or f"a {ds.format} file"
        return f"{title}, which Neuroglancer cannot read directly", None
    dtype = ds.dtype
    zarr = ds.scheme in ("zarr2", "zarr3")
    if dtype is not None and dtype not in CLIENT_DTYPES:
        why = f"{dtype} data, which the bundled Neuroglancer cannot show (it reads {', '.join(CLIENT_DTYPES)})"
        # bool is one byte 0/1, so the zarr view describes it as uint8 and passes the chunks through.
        return why, "zarr" if dtype == "bool" and zarr and _repairable_ome(ds) else None
    if ds.scheme == "zarr2" and dtype == "uint64" and any(lv.fill_value is None for lv in ds.levels):
        # src/datasource/zarr/metadata/parse.ts turns a null fill_value into the number 0, which
        # then meets BigInt chunk data: "Cannot mix BigInt and other types", and the view goes black.
        return "a uint64 zarr v2 array with fill_value null, which the bundled Neuroglancer cannot show", "zarr"
    if ds.format == "ome-zarr":
        schemes = OME_VERSIONS.get(ds.version or "")
        if schemes is None:
            why = (f"OME-Zarr version {ds.version or '(none)'}, which the bundled Neuroglancer cannot show "
                   f"(it reads {', '.join(OME_VERSIONS)})")
            return why, "zarr" if _repairable_ome(ds) else None
        if ds.scheme not in schemes:
            why = f"OME-Zarr {ds.version} in zarr v2, which the bundled Neuroglancer cannot show (0.5 needs zarr v3)"
            return why, None
    if ds.format == "n5" and ds.ng_path:
        why = f"an N5 multiscale group the bundled Neuroglancer opens at {ds.ng_path} only"
        return why, "n5"  # the n5 view adds the downsampling factors (and resolution, units) it reads
    return None, None


def _repairable_ome(ds: Dataset) -> bool:
    """Whether the zarr view serves ``ds`` in an OME version the client reads (0.1–0.3 and 0.6 it repairs)."""
    if ds.format != "ome-zarr":
        return True
    v = ds.version or ""
    return v in ("", "0.1", "0.2", "0.3") or v.startswith("0.6") or ds.scheme in OME_VERSIONS.get(v, ())


def choose_view(ds: Dataset) -> tuple[str | None, str]:
    """(view, reason): how ngserve shows ``ds`` in the bundled client.

    ``"native"``: the source's own URL; else the repaired view (``"zarr"``, ``"n5"``: metadata
    the client reads, chunks unchanged) when it suffices; else ``"precomputed"`` (translated
    chunks); None when no view can show it, the reason saying why.
    """
    problem, repaired = _native_problem(ds)
    if problem is None:
        return "native", "the bundled Neuroglancer reads it as stored"
    if repaired is not None:
        return repaired, f"{problem}; ngserve's /-/{repaired}/ view repairs its metadata"
    from volumes.present_precomputed import present  # pure: no array is read

    try:
        present(ds)
    except SourceError as exc:
        return None, f"{problem}, and no ngserve view can show it either ({str(exc).split(': ', 1)[-1]})"
    return "precomputed", f"{problem}; ngserve's /-/precomputed/ view translates it"


def viewer_problem(ds: Dataset) -> str | None:
    """Why the bundled client cannot show ``ds`` as it is stored, as a phrase; None when it can."""
    return _native_problem(ds)[0]


def refusal(ds: Dataset) -> str | None:
    """The one line refusing ``ds`` where it is not served by ngserve; None when its own URL shows it."""
    view, reason = choose_view(ds)
    if view in ("native", "n5"):  # an N5 group still opens natively at its finest level (its notes say so)
        return None
    if view is None:
        return f"{ds.location}: {reason}"
    return (f"{ds.location}: {viewer_problem(ds)}; serve it with ngserve (`ngserve serve`) and link or "
            f"/-/open it there, to show it through the /-/{view}/ view")


def require_viewable(ds: Dataset) -> None:
    """Raise :class:`SourceError`, one line naming the source, when the client cannot show ``ds`` as stored."""
    line = refusal(ds)
    if line:
        raise SourceError(line)
