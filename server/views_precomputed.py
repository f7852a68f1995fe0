"""``/-/precomputed/<path>/``: the dataset at ``<path>`` as a Neuroglancer precomputed volume.

Thin handlers around :mod:`volumes.present_precomputed`.  The dataset is read
through this very server over loopback (as ``/-/open`` reads it), so protected
and remote mounts work with the same symlink and dotfile rules as any client.
Chunks are computed on a bounded pool of their own and cached by keys that
include the validators of the source files they were read from.  A virtual
(coarser) scale's chunk is built from the next finer scale's chunks, fetched
through the same cache, and keyed by their keys, so it changes with any source
file below it, and a zoomed-out view reads each source chunk at most once.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from aiohttp import web

from . import auth
from .access_log import redact
from .app import CONFIG, MOUNTS, locate_dataset, loopback_base, resolve
from .builds import BuildPool
from .chunk_cache import ChunkCache, DiskCache
from .listing import render_listing
from .lru import ByteBudgetLRU
from .paths import Target
from .responses import FileMeta, accepts_gzip, file_response
from .routing import TARGET, serves
from .storage import Entry, Storage

log = logging.getLogger("ngserve")

# An opened dataset is trusted this long, then its metadata is read again (a new shape or
# type shows within this time; edited chunks show at once, see _chunk).  Well within the
# loopback token's lifetime, which its stores carry in their URLs.
DATASET_TTL = 10.0
DATASETS = 256  # opened datasets kept per process
MEMORY_BYTES = 256 << 20  # translated chunks kept in memory per process
THREADS, QUEUE, TIMEOUT = 4, 512, 60.0  # the chunk pool: mostly waiting on loopback reads
LISTED_CHUNKS = 4096  # a scale's listing names its chunks only up to this many
# A virtual chunk with more chunks than this below it is not cached (its key would need a
# validator for every source file below it on each request); its inputs are.
MAX_TRACKED_CHUNKS = 1 << 16
# Finer chunks a virtual chunk waits for at once: few, so that its inputs arrive together
# (depth first) and a pyramid under construction holds little memory; the pool stays busy
# because each waits in turn on its own finer chunks.
FAN_OUT = 2
PLANNED = 1 << 17  # chunks named in the build plans kept per process (a plan is the same until a reopen)
# A chunk standing on more source files than this (a coarse chunk of a virtual scale) rechecks
# their validators at most every RECHECK_SECONDS: a zoomed-out view answered from the cache is
# then not a storm of thousands of stats (or upstream HEADs) per request.  Edits below it show
# within that time; a chunk over fewer files is rechecked on every request.
RECHECK_FILES, RECHECK_SECONDS = 64, 2.0
FEED = THREADS * 4  # pool jobs queued at once for finer chunks (the rest wait their turn, not a 503)
GZIP_LEVEL = 6  # zlib's default level
# <dataset>/-jpeg/: its jpeg form (uint8 images), asked for by URL (not "@jpeg": the bundled
# client never fetched a source URL ending in /@jpeg).
JPEG = "-jpeg"
_CHUNK_NAME = re.compile(r"^-?\d+--?\d+_-?\d+--?\d+_-?\d+--?\d+$")


@dataclass
class _Opened:
    expires: float
    presentation: object | None  # volumes.present_precomputed.Presentation
    error: str | None  # why it cannot be presented (one line, for the 422)
    loopback: str  # the loopback prefix its stores read through (dropped from messages)
    where: list[str]  # the path of its file or folder (an HDF5 file's, without the path inside it)
    signature: str = ""  # what every chunk of it depends on besides its source files
    info: bytes = b""
    opened: float = 0.0
    # A single-file source (TIFF, MRC, HDF5, NIfTI): the file's validator when it was opened.
    # Its reader keeps the file's structure and blocks in memory, so a rewritten file means reopening.
    file_validator: str | None = None
    meshing: object | None = None  # /-/mesh/: its label pyramid and mesh layout, made on first use
    jpeg_info: bytes = b""  # the info of its jpeg form, made on first request


class PrecomputedViews:
    """Per-app state: opened datasets, the chunk pool and cache, and a count of computed chunks."""

    def __init__(self, cache_dir: Path | None, cache_bytes: int) -> None:
        self.pool = BuildPool(THREADS, QUEUE, TIMEOUT, name="ngserve-precomputed",
                              busy="chunks are being translated", slow="translating the chunk")
        disk = DiskCache(cache_dir, cache_bytes) if cache_dir and cache_bytes else None
        self.chunks = ChunkCache(MEMORY_BYTES, disk, name="view_chunks")
        self.datasets: ByteBudgetLRU[_Opened] = ByteBudgetLRU(DATASETS, lambda _: 1)
        self.opening = ChunkCache(0)  # single flight for opening (its memory holds nothing)
        self.computed = 0  # chunks computed rather than answered from a cache (tests count these)
        self.feed = asyncio.Semaphore(FEED)
        self.plans: ByteBudgetLRU[_Plan] = ByteBudgetLRU(PLANNED, lambda plan: 1 + len(plan.order or ()))
        # plan key -> (recheck after, the keys of its chunks), for plans over many files
        self.checked: ByteBudgetLRU[tuple[float, dict]] = ByteBudgetLRU(PLANNED, lambda found: 1 + len(found[1]))


VIEWS = web.AppKey("precomputed_views", PrecomputedViews)


def add_routes(app: web.Application) -> None:
    config = app[CONFIG]
    app[VIEWS] = PrecomputedViews(config.cache_dir, config.cache_bytes)
    app.router.add_get("/-/{view:precomputed}/{path:.*}", handle_precomputed)
    app.router.add_get("/-/t/{token}/-/{view:precomputed}/{path:.*}", handle_precomputed)
    app.on_cleanup.append(_shutdown)


async def _shutdown(app: web.Application) -> None:
    app[VIEWS].pool.shutdown()


@serves("view")
async def handle_precomputed(request: web.Request) -> web.StreamResponse:
    target: Target = request[TARGET]
    if target.view != "precomputed":
        raise web.HTTPNotFound()
    segments = target.segments
    if target.raw.endswith("/"):
        return await _listing(request, segments)
    if segments and segments[-1] == "info":
        dataset, jpeg = _variant(segments[:-1])
        opened = await _open(request, dataset)
        info = _jpeg_info(opened, dataset) if jpeg else opened.info
        meta = FileMeta("info", len(info), opened.opened, _etag(info))
        return await file_response(request, meta, data=info)
    if len(segments) >= 3 and _CHUNK_NAME.match(segments[-1]):
        dataset, jpeg = _variant(segments[:-2])
        return await _chunk(request, dataset, segments[-2], segments[-1], jpeg)
    storage, inner = resolve(request, segments)
    entry = await storage.stat("/".join(inner))
    if entry is not None and entry.is_dir:  # a dataset (or scale) folder: its listing
        raise web.HTTPMovedPermanently(target.prefix + target.raw + "/")
    raise web.HTTPNotFound(text="404 not found: a precomputed view has info and <scale>/<chunk> files\n")


def _variant(segments: list[str]) -> tuple[list[str], bool]:
    """The dataset's segments, and whether its jpeg form is asked for (``<dataset>/-jpeg/...``)."""
    if segments and segments[-1] == JPEG:
        return segments[:-1], True
    return segments, False


def _jpeg_info(opened: _Opened, segments: list[str]) -> bytes:
    """The jpeg form's info; 422 with the reason when the volume has none."""
    problem = opened.presentation.jpeg_problem()
    if problem is not None:
        raise web.HTTPUnprocessableEntity(
            text=f"no jpeg form of /{'/'.join(segments)}: {problem} (its raw form: drop {JPEG}/)\n")
    if not opened.jpeg_info:
        opened.jpeg_info = json.dumps(opened.presentation.jpeg_info(), separators=(",", ":")).encode()
    return opened.jpeg_info


async def _open(request: web.Request, segments: list[str]) -> _Opened:
    """The dataset at ``segments`` as presented (cached, reopened after DATASET_TTL); 404/422 otherwise."""
    if not segments:
        raise web.HTTPNotFound(text="give a dataset path, e.g. /-/precomputed/data/image.zarr/info\n")
    named = segments
    segments, h5_path = await locate_dataset(request, segments)
    storage, inner = resolve(request, segments)
    rel = "/".join(inner)
    mount = auth.mount_of(request.app[MOUNTS], segments)[0]
    # The request was authorized for a key below the dataset; the view reads the whole
    # dataset (every level, for virtual scales), so the dataset itself must be readable.
    await request.app[auth.AUTHORITY].require(request, mount, rel)
    views = request.app[VIEWS]
    key = f"{mount}\0{rel}\0{h5_path}"
    opened = views.datasets.get(key)
    if opened is not None and opened.file_validator is not None:
        if (await storage.validators([rel]))[0] != opened.file_validator:
            opened = None
    if opened is None or opened.expires < time.monotonic():
        if await storage.stat(rel) is None:
            raise web.HTTPNotFound(text=f"404 no dataset at /{'/'.join(named)}\n")

        async def open_it() -> bytes:
            result = await _read_dataset(request, views, segments, rel, h5_path)
            views.datasets.put(key, result)
            return b""

        await views.opening.get(key, open_it)
        opened = views.datasets.get(key)
        if opened is None:  # evicted at once by a flood of others: open it for this request alone
            opened = await _read_dataset(request, views, segments, rel, h5_path)
    if opened.error is not None:
        raise web.HTTPUnprocessableEntity(text=f"cannot present /{'/'.join(named)} as precomputed: {opened.error}\n")
    return opened


async def _read_dataset(request: web.Request, views: PrecomputedViews, segments: list[str], rel: str,
                        h5_path: str = "") -> _Opened:
    from volumes import SourceError, first_line

    loopback = loopback_base(request, segments, rel)
    storage = resolve(request, segments)[0]
    source = storage.dataset_source(rel) or (
        loopback + "/" + quote("/".join(segments)) + (":" + quote(h5_path) if h5_path else ""))
    before = (await storage.validators([rel]))[0]  # taken before reading: a later rewrite reopens
    try:
        presentation = await views.pool.run(_present, source)
    except (SourceError, ValueError) as exc:
        line = redact(first_line(exc).replace(loopback, ""))
        return _Opened(time.monotonic() + DATASET_TTL, None, line, loopback, segments)
    # The URL path of the volume: an HDF5 file's dataset is named by the path inside it too.
    url_segments = [*segments, *(p for p in h5_path.split("/") if p)]
    info = json.dumps(_info(presentation, url_segments), separators=(",", ":")).encode()
    levels = [(lv.path, lv.dtype, lv.shape) for lv in presentation.dataset.levels]
    signature = hashlib.sha256(info + json.dumps([rel, h5_path, levels]).encode()).hexdigest()
    return _Opened(time.monotonic() + DATASET_TTL, presentation, None, loopback, segments, signature, info,
                   time.time(), before if presentation.single_file else None)


def _info(presentation, segments: list[str]) -> dict:
    """The volume's ``info``; a label volume's names its meshes, which ``/-/mesh/`` computes on demand.

    The client resolves ``mesh`` against the volume's path (``..`` included), so the
    relative path climbs out of ``/-/precomputed/<path>`` (and any ``/-/t/<token>``
    before it, which it keeps) to ``/-/mesh/<path>``.
    """
    info = presentation.info()
    if info["type"] == "segmentation":
        from meshes import LabelPyramid, MeshError

        try:
            LabelPyramid.from_presentation(presentation)
        except MeshError:
            return info
        info["mesh"] = "../" * (len(segments) + 1) + "mesh/" + "/".join(segments)
    return info


async def open_view(request: web.Request, segments: list[str]) -> _Opened:
    """The dataset at ``segments`` as presented, for other views built on it (``/-/mesh/``)."""
    return await _open(request, segments)


def _present(source: str):
    """Blocking: read the dataset's metadata and open its levels (all over loopback)."""
    from volumes import open_dataset
    from volumes.present_precomputed import present

    presentation = present(open_dataset(source))
    presentation.open_sources()
    return presentation


async def _chunk(request: web.Request, segments: list[str], scale: str, name: str, jpeg: bool) -> web.StreamResponse:
    from volumes.present_precomputed import ChunkNameError

    opened = await _open(request, segments)
    if jpeg:
        _jpeg_info(opened, segments)  # 422 when there is no jpeg form
    try:
        opened.presentation.parse_chunk(scale, name)
    except ChunkNameError as exc:
        cls = web.HTTPBadRequest if exc.malformed else web.HTTPNotFound
        raise cls(text=f"{cls.status_code} {exc}\n") from None
    storage, inner = resolve(request, opened.where)  # an HDF5 dataset's chunks read its file
    chunks = _Chunks(request.app[VIEWS], opened, storage, "/".join(inner), "/" + "/".join(segments))
    if jpeg:
        data, mtime, etag = await chunks.jpeg(scale, name)
        return await file_response(request, FileMeta(name, len(data), mtime, etag), data=data)
    # gzip when the client takes it (browsers, tensorstore and cloud-volume inflate it themselves).
    # A Range request gets the chunk's own bytes: ranges then always count the precomputed
    # format's bytes, whatever the client's Accept-Encoding (nginx's gzip filter likewise never
    # makes a 206 of a compressed answer).
    if "Range" not in request.headers and accepts_gzip(request):
        packed, mtime, etag = await chunks.gzipped(scale, name)
        if packed:
            return await file_response(request, FileMeta(name, len(packed), mtime, etag, "gzip"), data=packed)
    data, mtime, etag = await chunks.get(scale, name)
    answer = await file_response(request, FileMeta(name, len(data), mtime, etag), data=data)
    answer.headers["Vary"] = "Accept-Encoding"  # others get the gzip: caches must keep both
    return answer


@dataclass
class _Plan:
    """How a chunk is built: the chunks below it, finest first (None: too many to track),
    each virtual one's inputs, each real one's source files, and all those files."""

    order: list[tuple[str, str]] | None
    inputs: dict[tuple[str, str], list[tuple[str, str]]]
    files: dict[tuple[str, str], list[str] | None]
    paths: list[str]


class _Chunks:
    """One request's chunks of one dataset: their cache keys, then their bytes.

    The cache key of a real scale's chunk holds the validators of every source file
    it is read from (ETag-like: mtime, size and inode locally; the upstream's ETag
    remotely), taken before the read: an edited file changes the key, so a stale chunk
    is never found.  A file rewritten during the read can only put newer bytes under
    the older key, which no later request asks for.  A virtual chunk's key holds the
    keys of the finer chunks it is built from.  Chunks whose files cannot be named
    (and virtual chunks above them), and virtual chunks with too many chunks below
    them, have no key: they are built on every request (from cached inputs where
    those have keys).
    """

    def __init__(self, views: PrecomputedViews, opened: _Opened, storage: Storage, prefix: str, label: str) -> None:
        self.views, self.opened, self.storage, self.prefix, self.label = views, opened, storage, prefix, label
        self.presentation = opened.presentation
        self.keys: dict[tuple[str, str], str | None] = {}

    async def resolve_keys(self, scale: str, name: str) -> None:
        """Key ``scale/name`` and every chunk it is built from, with one batch of validators."""
        plan_key = "\0".join([self.opened.signature, self.prefix, scale, name])
        plan = self.views.plans.get(plan_key)
        if plan is None:  # the walk is CPU work (a coarse chunk of a large volume has thousands below it)
            plan = await asyncio.get_running_loop().run_in_executor(None, self._plan, scale, name)
            self.views.plans.put(plan_key, plan)
        if plan.order is None:  # too many below it: its inputs are keyed when they are fetched
            self.keys[(scale, name)] = None
            return
        many = len(plan.paths) > RECHECK_FILES
        if many:
            found = self.views.checked.get(plan_key)
            if found is not None and found[0] > time.monotonic():
                self.keys.update(found[1])
                return
        known = dict(zip(plan.paths, await self.storage.validators(plan.paths)))
        signature = self.opened.signature
        for node in plan.order:
            if node in plan.files:
                fs = plan.files[node]
                parts = None if fs is None else [known[f] for f in fs]
            else:
                parts = [self.keys[child] for child in plan.inputs[node]]
            if parts is None or None in parts:
                self.keys[node] = None
            else:
                self.keys[node] = hashlib.sha256("\0".join([signature, *node, *parts]).encode()).hexdigest()
        if many:
            self.views.checked.put(plan_key, (time.monotonic() + RECHECK_SECONDS, {n: self.keys[n] for n in plan.order}))

    def _plan(self, scale: str, name: str) -> _Plan:
        """Blocking: the chunks ``scale/name`` is built from, down to the real scales, and their files."""
        pending, order, real = [(scale, name)], [], []
        inputs: dict[tuple[str, str], list[tuple[str, str]]] = {}
        seen = {(scale, name)}
        while pending:
            node = pending.pop()
            order.append(node)
            found = self.presentation.inputs(*node)
            if found is None:
                real.append(node)
                continue
            inputs[node] = [(found[0], n) for n in found[1]]
            for child in inputs[node]:
                if child not in seen:
                    seen.add(child)
                    pending.append(child)
            if len(seen) > MAX_TRACKED_CHUNKS:
                return _Plan(None, {}, {}, [])
        files: dict[tuple[str, str], list[str] | None] = {}
        for node in real:
            found = self.presentation.source_files(*node)
            files[node] = None if found is None else ["/".join(filter(None, (self.prefix, f))) for f in found]
        paths = sorted({f for fs in files.values() if fs for f in fs})
        rank = {sc.key: i for i, sc in enumerate(self.presentation.scales)}
        order.sort(key=lambda n: rank[n[0]])  # finest first: inputs are keyed before what they build
        return _Plan(order, inputs, files, paths)

    async def get(self, scale: str, name: str, fed: bool = False, low: bool = False) -> tuple[bytes, float, str]:
        """The chunk's bytes, when they were computed, and its ETag; ``fed``: an input of a coarser
        chunk; ``low``: keep it with low priority (its gzip is what clients are sent)."""
        node = (scale, name)
        if node not in self.keys:  # below a chunk too large to key: key this part on its own
            await self.resolve_keys(scale, name)
        key = self.keys[node]
        if key is None:
            data = await self._compute(scale, name, fed)
            return data, time.time(), _etag(data)
        # A real scale's chunk fetched only to build a coarser one goes in with low priority: a cold
        # zoomed-out view streams the whole source through here, and it must not push out the coarse
        # chunks the view shows.  Fed virtual chunks (at most 1/7 of the source together) are kept
        # normally: they are what the next zoom-in step shows.
        low = low or (fed and not self.presentation.scale(scale).virtual)
        if fed and self.views.chunks.memory.get(key, touch=False) is None:
            # Sent to clients gzipped, and its plain copy aged out: inflate it for this one use
            # (caching it again would take the room of what clients ask for).
            inflated = await self._inflated(key)
            if inflated is not None:
                return inflated[0], inflated[1], f'"{key[:40]}"'
        data, mtime = await self.views.chunks.get(key, lambda: self._inflate_or_compute(key, scale, name, fed), low=low)
        return data, mtime, f'"{key[:40]}"'

    async def gzipped(self, scale: str, name: str) -> tuple[bytes, float, str]:
        """The chunk gzipped and its ETag: compressed once, off the loop, and cached in place of the
        plain bytes (kept only with low priority); b"" when gzip would not make it smaller."""

        async def pack(data: bytes, key: str | None) -> bytes:
            packed = await asyncio.get_running_loop().run_in_executor(None, gzip.compress, data, GZIP_LEVEL)
            if len(packed) < len(data):
                return packed
            if key is not None:
                self.views.chunks.memory.get(key)  # the plain bytes are what is sent: keep them normally
            return b""

        return await self._derived(scale, name, "gz", pack)

    async def jpeg(self, scale: str, name: str) -> tuple[bytes, float, str]:
        """The chunk as jpeg (the ``-jpeg`` form), made once on the pool from its raw bytes and cached."""

        async def make(data: bytes, key: str | None) -> bytes:
            return await self._run(False, scale, name, self.presentation.jpeg, scale, name, data)

        return await self._derived(scale, name, "jpeg", make)

    async def _derived(self, scale: str, name: str, kind: str, make) -> tuple[bytes, float, str]:
        """Another form of the chunk (``make(plain bytes, key)``), cached beside it under ``key.kind``
        with an ETag of its own; its plain bytes are kept with low priority (the form is what is sent)."""
        if (scale, name) not in self.keys:
            await self.resolve_keys(scale, name)
        key = self.keys[(scale, name)]

        async def build() -> bytes:
            data, _, _ = await self.get(scale, name, low=True)
            return await make(data, key)

        if key is None:  # not cached: neither is this form
            out = await build()
            return out, time.time(), _etag(out)[:-1] + f'-{kind}"'
        out, mtime = await self.views.chunks.get(f"{key}.{kind}", build)
        return out, mtime, f'"{key[:40]}-{kind}"'

    async def _inflated(self, key: str) -> tuple[bytes, float] | None:
        """The plain bytes of the chunk under ``key`` and when they were made, from its cached gzip
        (clients were sent that, and its plain copy aged out first); None when none is cached."""
        packed = self.views.chunks.memory.get(key + ".gz", touch=False)
        if packed is None or not packed[0]:
            return None
        return await asyncio.get_running_loop().run_in_executor(None, gzip.decompress, packed[0]), packed[1]

    async def _inflate_or_compute(self, key: str, scale: str, name: str, fed: bool) -> bytes:
        """The plain bytes of a chunk: from its cached gzip when there is one, else computed."""
        inflated = await self._inflated(key)
        return inflated[0] if inflated is not None else await self._compute(scale, name, fed)

    async def _compute(self, scale: str, name: str, fed: bool) -> bytes:
        inputs = self.presentation.inputs(scale, name)
        if inputs is None:
            return await self._run(fed, scale, name, self.presentation.chunk, scale, name)
        finer, names = inputs
        parts: list[bytes] = [b""] * len(names)
        queue = iter(enumerate(names))

        async def fetch() -> None:  # on the event loop: a pool thread waiting here could wedge the pool
            for i, n in queue:
                parts[i] = (await self.get(finer, n, True))[0]

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels its siblings
                for _ in range(min(FAN_OUT, len(names))):
                    group.create_task(fetch())
        except ExceptionGroup as failed:  # the first reason (a 502 naming the finer chunk, a 504)
            raise failed.exceptions[0] from None
        return await self._run(fed, scale, name, self.presentation.combine, scale, name, parts)

    async def _run(self, fed: bool, scale: str, name: str, fn: Callable[..., bytes], *args) -> bytes:
        """``fn`` on the pool, counted; ``fed``: a finer chunk for a coarser one, queued in turn."""
        self.views.computed += 1
        try:
            if not fed:
                return await self.views.pool.run(fn, *args)
            async with self.views.feed:
                return await self.views.pool.run(fn, *args)
        except web.HTTPException:
            raise  # 503 (pool full) and 504 (deadline) already say why
        except Exception as exc:  # noqa: BLE001 - any reader failure becomes one line, never a traceback
            from volumes import first_line

            label = f"{self.label}/{scale}/{name}"
            reason = redact(first_line(exc).replace(self.opened.loopback, ""))
            log.warning("precomputed view: cannot compute %s: %s", redact(label), reason)
            raise web.HTTPBadGateway(text=f"502 cannot compute chunk {label}: {reason}\n") from None


async def _listing(request: web.Request, segments: list[str]) -> web.Response:
    """``dataset/``: info and one folder per scale; ``dataset/<scale>/``: its chunks (when few)."""
    target: Target = request[TARGET]
    url_path = target.prefix + "/" + "/".join(segments) + "/"
    try:
        opened = await _open(request, segments)
        entries = [Entry("info", False, len(opened.info))] + [Entry(s.key, True) for s in opened.presentation.scales]
    except web.HTTPException:
        if len(segments) < 2:
            raise
        opened = await _open(request, segments[:-1])
        scale = next((s for s in opened.presentation.scales if s.key == segments[-1]), None)
        if scale is None:
            raise web.HTTPNotFound() from None
        entries = [Entry(n, False) for n in _chunk_names(scale)]
    return web.Response(text=render_listing(url_path, entries, {}, None), content_type="text/html",
                        headers={"Cache-Control": "no-cache"})


def _chunk_names(scale) -> list[str]:
    counts = [-(-n // c) for n, c in zip(scale.size, scale.chunk)]
    if counts[0] * counts[1] * counts[2] > LISTED_CHUNKS:
        return []
    from volumes.present_precomputed import chunk_name

    return [chunk_name(scale.box((i, j, k))) for k in range(counts[2]) for j in range(counts[1])
            for i in range(counts[0])]


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:40] + '"'
