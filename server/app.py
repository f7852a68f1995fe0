"""The aiohttp application: routing, CORS, errors, and the data handler."""

from __future__ import annotations

import asyncio
import logging
import os
from urllib.parse import quote

from aiohttp import web

from volumes import volume_file_kind

from . import auth, authz, metrics, readiness, request_id, states, viewer
from .access_log import redact
from .builds import BuildPool
from .config import MountConfig, ServerConfig, is_remote
from .dataset_search import MAX_DEPTH, first_dataset, is_n5_container
from .listing import render_listing
from .paths import Target, token_path
from .routing import TARGET, decode, serves
from .storage import MEMORY_SOURCE, Entry, LocalStorage, MemoryStorage, Storage
from .tokens import mint

log = logging.getLogger("ngserve")

BIG_LISTING = 2000  # listings with more entries are rendered off the event loop
MAX_DETECTED_FOLDERS = 256  # listings detect datasets among at most this many child folders
CONFIG = web.AppKey("config", ServerConfig)
MOUNTS = web.AppKey("mounts", dict)  # name -> Storage; "" is the root
BUILDS = web.AppKey("builds", BuildPool)  # /-/open state builds
CACHE_CONTROL = "ngserve.cache_control"  # request key: the mount's Cache-Control for this file answer
HTML_HEADERS = web.AppKey("html_headers", dict)  # what every HTML page carries: who may frame it

EXPOSE_HEADERS = "Content-Range, Content-Length, Content-Encoding, ETag, Accept-Ranges, Last-Modified, X-Request-ID"
LOOPBACK_TOKEN_TTL = 300.0  # seconds; /-/open reads metadata and a small level, views reopen datasets far sooner
ALLOW_HEADERS = (
    "Range, Authorization, If-None-Match, If-Modified-Since, If-Match, If-Unmodified-Since, If-Range, "
    "Content-Type, Cache-Control"
)


def make_storage(mount: MountConfig, accel_redirect: str | None = None) -> Storage:
    """The backend for a mount's source: a local folder, or a WebDAV/HTTP(S) URL.

    ``accel_redirect`` (``[server] accel_redirect``): local files are sent by nginx from
    ``<prefix><mount>/<path>`` after ngserve's checks."""
    if mount.source == MEMORY_SOURCE:
        storage: Storage = MemoryStorage()
    elif is_remote(mount.source):
        from .remote import RemoteStorage

        label = f"mount {mount.name!r}"
        storage = RemoteStorage(mount.source, mount.upstream, label=label, mount=mount.name)
    else:
        accel = accel_redirect + (quote(mount.name) + "/" if mount.name else "") if accel_redirect else None
        storage = LocalStorage(mount.source, accel=accel)
    storage.cache_control = mount.cache_control
    return storage


# -- cross-cutting behaviour ---------------------------------------------------------
async def _add_cors(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Runs on every answer, errors and streams included, just before headers go out."""
    origins = request.app[CONFIG].cors_origins
    if "*" in origins:
        response.headers["Access-Control-Allow-Origin"] = "*"
    else:
        origin = request.headers.get("Origin")
        if origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    # Every answer, so no browser ever sniffs data or an error into a script or a page.
    response.headers["X-Content-Type-Options"] = "nosniff"
    rid = request_id.current_request_id()  # a context variable: cheaper than the request's dict
    if rid:
        response.headers[request_id.HEADER] = rid
    if response.headers.get("Content-Type", "").startswith("text/html"):
        response.headers.update(request.app[HTML_HEADERS])


async def _add_cache_control(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """The mount's Cache-Control on its file answers (handle_data marks them); installed only when
    some mount has one."""
    cache_control = request.get(CACHE_CONTROL)
    if cache_control and response.status in (200, 206, 304):
        response.headers["Cache-Control"] = cache_control


def frame_headers(ancestors: list[str]) -> dict[str, str]:
    """CSP ``frame-ancestors`` for the configured sources, and X-Frame-Options where it can say the same.

    X-Frame-Options knows only SAMEORIGIN and DENY; for any other list browsers go by
    the CSP alone (which overrides X-Frame-Options wherever both are understood).
    """
    headers = {"Content-Security-Policy": "frame-ancestors " + (" ".join(ancestors) or "'none'")}
    if ancestors == ["'self'"]:
        headers["X-Frame-Options"] = "SAMEORIGIN"
    elif ancestors in ([], ["'none'"]):
        headers["X-Frame-Options"] = "DENY"
    return headers


@web.middleware
async def _preflight_and_errors(request: web.Request, handler) -> web.StreamResponse:
    request_id.assign(request, request.app[auth.AUTHORITY].from_trusted_proxy)
    if request.method == "OPTIONS":
        return web.Response(
            status=204,
            headers={
                "Allow": "GET, HEAD, OPTIONS",
                "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS, POST",
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": "86400",
            },
        )
    try:
        decode(request)  # the one decoding of the path, before any check or handler sees it
        return await handler(request)
    except web.HTTPException as exc:
        if exc.text is None or exc.text == f"{exc.status}: {exc.reason}":
            exc.text = f"{exc.status} {exc.reason}\n"
        raise
    except ConnectionResetError:
        raise  # the client went away mid-answer; there is no one to tell
    except Exception:
        # Never let a traceback reach the client; the log has it.
        log.exception("error answering %s", redact(request.rel_url.raw_path))  # a path can hold a share token
        return web.Response(status=500, text="500 internal server error\n")


# -- data ------------------------------------------------------------------------------
def resolve(request: web.Request, segments: list[str]) -> tuple[Storage, list[str]]:
    """The storage that owns ``segments`` and the path inside it (404 if none)."""
    mounts: dict[str, Storage] = request.app[MOUNTS]
    found = auth.mount_of(mounts, segments)
    if found is None:
        raise web.HTTPNotFound()
    return mounts[found[0]], found[1]


async def _listing(request: web.Request, storage: Storage | None, rel: str, url_path: str) -> web.Response:
    """The listing page; ``storage`` is None for a root made only of named mounts."""
    segments = request[TARGET].segments
    at_top = not segments
    entries = await storage.list_dir(rel) if storage is not None else []
    if entries is None:
        raise web.HTTPNotFound()
    if at_top:  # named mounts appear as folders of the root
        names = {e.name for e in entries}
        authority = request.app[auth.AUTHORITY]
        readable = [n for n in request.app[MOUNTS] if n and n not in names and await authority.may_read(request, n)]
        entries = sorted(entries + [Entry(n, True) for n in readable], key=lambda e: e.name)
    formats = {}
    # Datasets sit among a few folders; a folder of thousands of subfolders is chunk
    # data, where detecting each would cost a scan apiece for no link.
    folders = [e for e in entries if e.is_dir]
    for e in folders if len(folders) <= MAX_DETECTED_FOLDERS else []:
        owner, inner = resolve(request, [*segments, e.name])
        formats[e.name] = await owner.dataset_format("/".join(inner))
    self_format = await storage.dataset_format(rel) if rel and storage is not None else None
    # Browsing by share link (/-/t/<token>/...): the viewer links must carry the token too.
    token = request[TARGET].token
    open_query = "?token=" + token if token else ""
    args = (url_path, entries, formats, self_format, open_query)
    if len(entries) > BIG_LISTING:  # ~1.5 us an entry: a chunk folder's page would stall every client
        text = await asyncio.get_running_loop().run_in_executor(None, render_listing, *args)
    else:
        text = render_listing(*args)
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-cache"})


@serves("data", "share")
async def handle_data(request: web.Request) -> web.StreamResponse:
    """``/<path>``, and ``/-/t/<token>/<path>``: the data at ``<path>`` (the auth middleware has judged it)."""
    target: Target = request[TARGET]
    segments = target.segments
    if not segments and "" not in request.app[MOUNTS]:
        return await _listing(request, None, "", "/")
    storage, inner = resolve(request, segments)
    rel = "/".join(inner)
    url_path = "/" + "/".join(segments) + ("/" if segments else "")

    def to_folder() -> str:  # keeps a /-/t/<token> prefix
        # Built only when redirecting: quote() on every chunk request cost ~2 us of ~80.
        return target.prefix + quote(url_path) + _query(request)

    if target.raw.endswith("/") or not inner:
        if not target.raw.endswith("/"):
            raise web.HTTPMovedPermanently(to_folder())
        return await _listing(request, storage, rel, url_path)
    if storage.cache_control:
        request[CACHE_CONTROL] = storage.cache_control
    try:
        return await storage.serve_file(request, rel)
    except web.HTTPNotFound:
        entry = await storage.stat(rel)
        if entry is not None and entry.is_dir:
            raise web.HTTPMovedPermanently(to_folder()) from None
        raise


def _query(request: web.Request) -> str:
    qs = request.rel_url.raw_query_string
    return "?" + qs if qs else ""


def public_base(request: web.Request) -> str:
    """How clients reach this server: the configured public URL, else the request's own."""
    configured = request.app[CONFIG].public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


async def locate_dataset(request: web.Request, segments: list[str]) -> tuple[list[str], str]:
    """The segments of a dataset's own file or folder, and the path inside an HDF5 file that the
    segments after it name (``f.h5/g/d`` is ``f.h5:/g/d``; "" when there is none)."""
    for i, name in enumerate(segments[:-1]):
        if volume_file_kind(name) == "hdf5":
            storage, inner = resolve(request, segments[: i + 1])
            entry = await storage.stat("/".join(inner))
            if entry is not None and not entry.is_dir:
                return segments[: i + 1], "/" + "/".join(segments[i + 1:])
    return segments, ""


@serves("open")
async def handle_open(request: web.Request) -> web.Response:
    """Redirect to the built-in viewer showing the dataset at the given path, as ngstate builds it."""
    named = request[TARGET].segments
    if not named:
        raise web.HTTPNotFound(text="give a dataset path, e.g. /-/open/data/image.ome.zarr\n")
    segments, h5_path = await locate_dataset(request, named)
    storage, inner = resolve(request, segments)
    rel = "/".join(inner)
    fmt = await storage.dataset_format(rel)
    if fmt == "n5" and await is_n5_container(storage, rel):
        found = await first_dataset(storage, rel)
        if found is None:
            raise web.HTTPUnprocessableEntity(
                text=f"cannot show /{'/'.join(segments)}: an N5 group with no array or multiscale group "
                     f"inside (looked {MAX_DEPTH} levels down)\n")
        token = request.query.get("token")
        raise web.HTTPFound(public_base(request) + "/-/open/" + quote("/".join(segments) + "/" + found)
                            + ("?token=" + quote(token) if token else ""))
    if fmt is None:
        entry = await storage.stat(rel)
        # A file volumes reads (TIFF, MRC, HDF5, NIfTI), judged by name as the listing does; a
        # folder the listing offers no link for (TIFF slices, or the builder's error says what it holds).
        if entry is None or not (entry.is_dir or volume_file_kind(segments[-1])):
            raise web.HTTPNotFound(text=f"no dataset found at /{'/'.join(segments)}\n")
    path = quote("/".join(segments)) + (":" + quote(h5_path) if h5_path else "")
    # The viewer must read the data as this user does.  A session or token cookie
    # goes along by itself (same origin); a token that came in the query must stay
    # in the source URL, as the /-/t/<token>/ prefix every file below it keeps.
    token = request.query.get("token")
    url = public_base(request) + (token_path(token, path) if token else "/" + path)
    loopback = loopback_base(request, segments, rel)
    source = loopback + "/" + path
    from volumes import SourceError, first_line

    if not h5_path and volume_file_kind(segments[-1]) == "hdf5":
        page = await _hdf5_choice(request, segments, source, token)
        if page is not None:
            return page
    try:
        # The builder blocks, and its reads come back to this loop: its own bounded pool.
        state = await request.app[BUILDS].run(_open_state, source, url, public_base(request))
    except (SourceError, ValueError) as exc:
        # Messages name the URLs read: say /NAME/... as the caller does, not our loopback address
        # and token; redact() still hides any token the message quotes in another form.
        line = redact(first_line(exc).replace(loopback, ""))
        shown = "/" + "/".join(named)
        line = line[len(shown) + 2 :] if line.startswith(shown + ": ") else line  # named once, not twice
        raise web.HTTPUnprocessableEntity(text=f"cannot show {shown}: {line}\n") from None
    raise web.HTTPFound(viewer.viewer_url(state))


async def _hdf5_choice(request: web.Request, segments: list[str], source: str, token: str | None) -> web.Response | None:
    """For an HDF5 file with several datasets, a page with an "open in viewer" link for each
    (``/-/open/<file>/<path inside>``); None when it holds one (or cannot be read: the build says why)."""
    import html

    from volumes import SourceError, hdf5_datasets

    try:
        names = await request.app[BUILDS].run(hdf5_datasets, source)
    except SourceError:
        return None
    if len(names) < 2:
        return None
    query = "?token=" + quote(token, safe="") if token else ""
    title = html.escape("/" + "/".join(segments))
    rows = "".join(
        f'<li><a class="open" href="/-/open{quote("/" + "/".join(segments) + name)}{html.escape(query)}">'
        f"{html.escape(name)}</a></li>" for name in names)
    return web.Response(text=f'<!doctype html><html><head><meta charset="utf-8"><title>ngserve {title}</title></head>'
                             f"<body><h1>{title}</h1><p>This HDF5 file holds {len(names)} datasets; open one in the "
                             f"viewer:</p><ul>{rows}</ul></body></html>", content_type="text/html")


def loopback_base(request: web.Request, segments: list[str], rel: str) -> str:
    """``http://host:port`` of this very server (with a ``/-/t/<token>`` when the mount needs one).

    Builders and views read datasets through it, local mounts included, so they
    see exactly what a client may read (no symlink out of the root, no hidden
    file) and remote mounts with their upstream credentials.  Messages quoting
    URLs should drop this prefix: it holds the loopback token.
    """
    host, port = request.transport.get_extra_info("sockname")[:2]
    host = f"[{host}]" if ":" in host else host
    internal = _loopback_token(request, segments, rel)
    return f"http://{host}:{port}" + (token_path(internal, "").rstrip("/") if internal else "")


def _loopback_token(request: web.Request, segments: list[str], rel: str) -> str | None:
    """A short-lived token for reading a protected mount through ourselves.

    The auth middleware has already let this request read the path, so a token
    scoped to exactly that path grants nothing new; it stands in for the caller's
    credentials, which the loopback reads do not carry.
    """
    authority = request.app[auth.AUTHORITY]
    mount = auth.mount_of(request.app[MOUNTS], segments)[0]
    if authority.secret is None or authority.mounts[mount].access == "public":
        return None
    return mint(authority.secret, mount, rel, LOOPBACK_TOKEN_TTL)


def _open_state(source: str, url: str, base: str) -> dict:
    from ngstate import build_state

    # An OME labels/ group: a layer per label image.  ``base``: views are URLs of this server.
    return build_state([source], urls=[url], ngserve=base).to_json()


async def handle_health(request: web.Request) -> web.Response:
    authority = request.app[auth.AUTHORITY]  # protected mounts stay unnamed to those who cannot read them
    return web.json_response(
        {"status": "ok", "pid": os.getpid(), "mounts": [n for n in sorted(request.app[MOUNTS]) if await authority.may_read(request, n)]},
        headers={"Cache-Control": "no-store"},
    )


async def _close_storages(app: web.Application) -> None:
    app[BUILDS].shutdown()
    for storage in app[MOUNTS].values():
        await storage.close()


def create_app(config: ServerConfig) -> web.Application:
    """Build the application for ``config`` (already validated)."""
    app = web.Application(middlewares=[_preflight_and_errors])
    app[CONFIG] = config
    app[HTML_HEADERS] = frame_headers(config.frame_ancestors)
    app[MOUNTS] = {m.name: make_storage(m, config.accel_redirect) for m in config.mounts}
    app[BUILDS] = BuildPool()
    from . import views_precomputed  # imports this module: loaded once it is complete

    auth.setup(app, config)
    app.on_response_prepare.append(_add_cors)
    if any(m.cache_control for m in config.mounts):
        app.on_response_prepare.append(_add_cache_control)
    app.on_cleanup.append(_close_storages)
    app.router.add_get("/-/health", handle_health)
    readiness.add_routes(app)
    authz.add_routes(app, config.verdict_ttl)  # nginx's auth_request (ngserve nginx-config)
    metrics.setup(app, config.metrics_access())
    viewer.add_routes(app)
    states.add_routes(app)
    app.router.add_get("/-/open/{path:.*}", handle_open)
    views_precomputed.add_routes(app)  # before the catch-all data routes below
    from . import views_repair  # imports this module: loaded once it is complete

    views_repair.add_routes(app)
    from . import views_segprops

    views_segprops.add_routes(app)
    from . import views_mesh

    views_mesh.add_routes(app)
    app.router.add_get("/-/t/{token}/{path:.*}", handle_data)
    app.router.add_get("/{tail:.*}", handle_data)
    return app
