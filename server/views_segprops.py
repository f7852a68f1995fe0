"""``/-/segment_properties/<path>/info``: the segment names, tags and numbers of the OME label
image at ``<path>``, as a precomputed ``neuroglancer_segment_properties`` source.

Neuroglancer ignores OME ``image-label`` ``properties``; a segmentation layer shows them when
this URL is one of its sources (ngstate attaches it).  The label image's ``.zattrs`` (zarr v2)
or ``zarr.json`` (v3) is read through the mount's storage, only if this request may read it,
and presented by :mod:`volumes.segment_properties`; 404 when it has no properties.
"""

from __future__ import annotations

from aiohttp import web

from volumes import SourceError, first_line
from volumes.segment_properties import from_image_label, image_label_of

from .app import resolve
from .responses import json_response
from .routing import TARGET, serves
from .views_repair import MetadataInputs  # the same metadata reads and ETag as the repaired views

PRESENTER_VERSION = b"segprops-1"  # bump when the presenter makes something else of the same files


async def _image_label(inputs: MetadataInputs, folder: list[str]) -> dict | None:
    attrs = await inputs.json(folder, ".zattrs")
    if attrs is None:
        meta = await inputs.json(folder, "zarr.json")
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return image_label_of(attrs) if isinstance(attrs, dict) else None


@serves("view")
async def handle_segment_properties(request: web.Request) -> web.StreamResponse:
    target = request[TARGET]
    segments = target.segments
    if len(segments) < 2 or segments[-1] != "info" or target.raw.endswith("/"):
        raise web.HTTPNotFound(text="404 not found: give a label image's path, e.g. /-/segment_properties/image.zarr/labels/cells/info\n")
    storage, inner = resolve(request, segments[:-1])
    inputs = MetadataInputs(request, storage)
    inputs.digest.update(PRESENTER_VERSION)
    where = "/" + "/".join(segments[:-1])
    try:
        label = await _image_label(inputs, inner)
        info = from_image_label(label, where) if label is not None else None
    except SourceError as exc:
        raise web.HTTPUnprocessableEntity(text=f"cannot present {where} as segment properties: {first_line(exc)}\n") from None
    if info is None:
        raise web.HTTPNotFound(text=f"404 not found: {where} is not an OME label image with properties\n")
    return await json_response(request, "info", info, inputs.etag())


def add_routes(app: web.Application) -> None:
    """Register before the generic data routes, which would otherwise match these paths."""
    app.router.add_get("/-/segment_properties/{path:.*}", handle_segment_properties)
    app.router.add_get("/-/t/{token}/-/segment_properties/{path:.*}", handle_segment_properties)
