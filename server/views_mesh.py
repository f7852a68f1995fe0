"""``/-/mesh/<path>/``: segment meshes of the label volume at ``<path>``, made the first time they are asked for.

A ``neuroglancer_multilod_draco`` mesh source, unsharded: ``info``, ``<id>.index``
(the manifest) and ``<id>`` (the fragments, read with Range).  The volume is opened
as the ``/-/precomputed/`` view opens it (same loopback reads, same authorization of
the whole dataset, same 422 line when it cannot be presented); a segment is meshed by
:func:`meshes.mesh_segment` on a bounded pool of its own, then cached like translated
chunks (:mod:`server.chunk_cache`): the key holds the validators of the source files
under the segment's box, so an edited file gives a new mesh and never a stale one.
The first computation learns which files those are (from the box it found); their
validators are taken after that first read, before every later one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .access_log import redact
from .app import CONFIG, resolve
from .builds import BuildPool
from .chunk_cache import ChunkCache, DiskCache
from .lru import ByteBudgetLRU
from .paths import Target
from .responses import FileMeta, file_response, json_response
from .routing import TARGET, serves
from .views_precomputed import DATASET_TTL, open_view

log = logging.getLogger("ngserve")

PRESENTER_VERSION = "mesh-1"  # bump when meshes/ makes other bytes of the same labels
MEMORY_BYTES = 128 << 20  # meshes kept in memory per process
THREADS, QUEUE, TIMEOUT = 2, 64, 120.0  # meshing is CPU work: few at once
KNOWN = 1 << 14  # segments whose source files are remembered
# A volume's small levels, read by the first search for a segment, are kept this long for the
# next searches (across reopenings): a segment new in the data may answer 404 for this long.
SCANS, SCAN_TTL = 4, 60.0
MAX_FILES = 1 << 16  # a mesh over more source files than this is keyed by the dataset's opening instead
_NAME = re.compile(r"^(\d{1,20})(\.index)?$")


@dataclass
class _Known:
    """What the first meshing of a segment learnt: its source files, or that it is absent (until ``expires``)."""

    files: list[str] | None  # below the mount; None: not nameable (keyed by the dataset's opening)
    absent: bool = False
    expires: float = 0.0


class MeshViews:
    def __init__(self, cache_dir: Path | None, cache_bytes: int) -> None:
        self.pool = BuildPool(THREADS, QUEUE, TIMEOUT, name="ngserve-mesh", busy="meshes are being made",
                              slow="making the mesh")
        disk = DiskCache(Path(cache_dir) / "meshes", cache_bytes // 4) if cache_dir and cache_bytes else None
        self.cache = ChunkCache(MEMORY_BYTES, disk, name="meshes")
        self.known: ByteBudgetLRU[_Known] = ByteBudgetLRU(KNOWN, lambda _: 1)
        self.first = ChunkCache(0)  # single flight for a segment's first meshing
        self.fresh: dict[str, bytes] = {}  # a first meshing's bytes, until its key is known
        self.scans: ByteBudgetLRU[tuple[float, dict]] = ByteBudgetLRU(SCANS, lambda _: 1)  # see SCAN_TTL
        self.computed = 0  # meshes computed (tests count these)


MESHES = web.AppKey("mesh_views", MeshViews)


def add_routes(app: web.Application) -> None:
    """Register before the generic data routes, which would otherwise match these paths."""
    config = app[CONFIG]
    app[MESHES] = MeshViews(config.cache_dir, config.cache_bytes)
    app.router.add_get("/-/{view:mesh}/{path:.*}", handle_mesh)
    app.router.add_get("/-/t/{token}/-/{view:mesh}/{path:.*}", handle_mesh)
    app.on_cleanup.append(_shutdown)


async def _shutdown(app: web.Application) -> None:
    app[MESHES].pool.shutdown()


@serves("view")
async def handle_mesh(request: web.Request) -> web.StreamResponse:
    target: Target = request[TARGET]
    segments = target.segments
    if target.view != "mesh" or len(segments) < 2 or target.raw.endswith("/"):
        raise web.HTTPNotFound(text="404 not found: a mesh view has info, <segment id>.index and <segment id> "
                                    "files, e.g. /-/mesh/data/labels.zarr/info\n")
    name, dataset = segments[-1], segments[:-1]
    match = _NAME.match(name)
    if name != "info" and (match is None or int(match.group(1)) >= 2**64):
        raise web.HTTPNotFound(text=f"404 not found: {name!r} is neither info nor a segment id (<id>.index, <id>)\n")
    opened = await open_view(request, dataset)
    where = "/" + "/".join(dataset)
    pyramid, layout = _pyramid(request.app[MESHES], opened, where)
    if name == "info":
        from meshes import info_json

        etag = '"' + hashlib.sha256(f"{PRESENTER_VERSION}\0{opened.signature}".encode()).hexdigest()[:40] + '"'
        return await json_response(request, "info", info_json(layout), etag)
    segment = int(match.group(1))
    blob, mtime, key = await _mesh(request, opened, pyramid, layout, dataset, segment)
    (size,) = struct.unpack_from("<Q", blob)
    manifest = match.group(2) is not None
    body = blob[8 : 8 + size] if manifest else blob[8 + size :]
    etag = f'"{key[:39]}{"i" if manifest else "d"}"'
    return await file_response(request, FileMeta(name, len(body), mtime, etag), data=body)


def _pyramid(views: MeshViews, opened, where: str):
    """The opened volume as meshing reads it (kept with the opening); 422 in one line for other data."""
    from meshes import LabelPyramid, MeshError, layout_for

    found = opened.meshing
    if found is None:
        key = f"{opened.signature}\0{where}"
        kept = views.scans.get(key)
        if kept is None or kept[0] < time.monotonic():
            kept = (time.monotonic() + SCAN_TTL, {})
            views.scans.put(key, kept)
        try:
            pyramid = LabelPyramid.from_presentation(opened.presentation, kept[1])
        except MeshError as exc:
            reason = str(exc).split(": ", 1)[-1]
            raise web.HTTPUnprocessableEntity(text=f"422 cannot mesh {where}: {reason}\n") from None
        found = opened.meshing = (pyramid, layout_for(pyramid))
    return found


async def _mesh(request: web.Request, opened, pyramid, layout, dataset: list[str], segment: int):
    """The segment's manifest and data as one blob, when it was made, and its cache key."""
    views = request.app[MESHES]
    where = "/" + "/".join(dataset)
    storage, inner = resolve(request, dataset)
    prefix = "/".join(inner)
    base = hashlib.sha256(f"{PRESENTER_VERSION}\0{opened.signature}\0{prefix}\0{segment}".encode()).hexdigest()
    known = views.known.get(base)
    if known is None or (known.absent and known.expires < time.monotonic()):

        async def learn() -> bytes:
            mesh = await _compute(views, pyramid, layout, segment, where, opened.loopback)
            if mesh is None:
                views.known.put(base, _Known(None, True, time.monotonic() + DATASET_TTL))
            else:
                files = _source_files(opened.presentation, pyramid, layout, mesh, prefix)
                views.fresh[base] = _blob(mesh)
                views.known.put(base, _Known(files))
            return b""

        await views.first.get(base, learn)
        known = views.known.get(base) or _Known(None)  # evicted at once by a flood: key by the opening
    if known.absent:
        raise web.HTTPNotFound(text=f"404 segment {segment} is not in {where}\n")
    parts = ["opened", str(opened.opened)]
    if known.files is not None:
        validators = await storage.validators(known.files)
        if None not in validators:
            parts = validators
    key = hashlib.sha256("\0".join([base, *parts]).encode()).hexdigest()

    async def make() -> bytes:
        fresh = views.fresh.pop(base, None)
        if fresh is not None:
            return fresh
        mesh = await _compute(views, pyramid, layout, segment, where, opened.loopback)
        if mesh is None:  # gone since it was found: the next request finds that out again
            views.known.put(base, _Known(None, True, time.monotonic() + DATASET_TTL))
            raise web.HTTPNotFound(text=f"404 segment {segment} is not in {where}\n")
        return _blob(mesh)

    blob, mtime = await views.cache.get(key, make)
    return blob, mtime, key


async def _compute(views: MeshViews, pyramid, layout, segment: int, where: str, loopback: str):
    from meshes import mesh_segment
    from volumes import first_line

    views.computed += 1
    try:
        return await views.pool.run(mesh_segment, pyramid, segment, layout)
    except web.HTTPException:
        raise  # 503 (pool full) and 504 (deadline) already say why
    except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line, never a traceback
        reason = redact(first_line(exc).replace(loopback, ""))
        log.warning("mesh view: cannot mesh segment %s of %s: %s", segment, redact(where), reason)
        raise web.HTTPBadGateway(text=f"502 cannot mesh segment {segment} of {where}: {reason}\n") from None


def _blob(mesh) -> bytes:
    return struct.pack("<Q", len(mesh.manifest)) + mesh.manifest + mesh.data


def _source_files(presentation, pyramid, layout, mesh, prefix: str) -> list[str] | None:
    """The source files (below the mount) under the mesh's box, at every real level its LODs read; None when unknown."""
    from volumes.present_precomputed import chunk_name

    n = struct.unpack_from("<I", mesh.manifest, 24)[0]
    reals = sorted({presentation.scales[lv].level for lv in layout.lod_levels[:n]})
    files: set[str] = set()
    for real in reals:
        scale = presentation.scales[real]
        lo, hi = pyramid.to_level(real, *mesh.bounds)
        ranges = [(max(a, o), min(b, o + s)) for a, b, o, s in zip(lo, hi, scale.voxel_offset, scale.size)]
        if any(b <= a for a, b in ranges):
            continue
        for box in scale.covering(ranges):
            found = presentation.source_files(scale.key, chunk_name(box))
            if found is None:
                return None
            files.update("/".join(filter(None, (prefix, f))) for f in found)
            if len(files) > MAX_FILES:
                return None
    return sorted(files)
