"""Bounded upstreams: size caps on metadata and listings, listings parsed off the loop, and redirects.

Two real aiohttp servers on 127.0.0.1 stand in for a dCache deployment: the
*door* the mounts point at, and a *pool* on another port (another origin) that
the door redirects some reads to.  Both refuse a request without the bearer
token, so a read that works proves the token went along.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
import urllib.request

import pytest
from aiohttp import web

from conftest import ServerProcess
from threaded_app import ThreadedApp
from http_get import get

TOKEN = "bounds-macaroon-MDAxY2xvY2F0aW9u"
CAP = 1 << 20  # metadata_max_bytes and listing_max_bytes of the "door" mount
OVER = CAP + (3 << 20)
ENTRIES = 400_000
CHUNK = os.urandom(50_000)
DAV = 'xmlns:D="DAV:"'


def multistatus(folder: str, names: list[str], sizes: int = 1234) -> bytes:
    """A Depth: 1 PROPFIND answer for ``folder`` (``/x/``): the folder, then one file per name."""
    head = (f'<?xml version="1.0" encoding="utf-8"?><D:multistatus {DAV}><D:response><D:href>{folder}</D:href>'
            "<D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype></D:prop></D:propstat>"
            "</D:response>").encode()
    row = (f"<D:response><D:href>{folder}%s</D:href><D:propstat><D:prop>"
           f"<D:getcontentlength>{sizes}</D:getcontentlength></D:prop></D:propstat></D:response>").encode()
    return head + b"".join(row % n.encode() for n in names) + b"</D:multistatus>"


def file_names(count: int) -> list[str]:
    return [f"f{i:07d}.bin" for i in range(count)]


class Recorder:
    """An upstream's requests as (method, path, Authorization); every one without the token gets 401."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str | None]] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        sent = request.headers.get("Authorization")
        with self.lock:
            self.requests.append((request.method, request.path, sent))
        if not hmac.compare_digest((sent or "").encode(), f"Bearer {TOKEN}".encode()):
            raise web.HTTPUnauthorized()
        return await handler(request)

    def seen(self, path: str) -> list[tuple[str, str, str | None]]:
        with self.lock:
            return [r for r in self.requests if r[1] == path]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


def make_pool(folder) -> tuple[ThreadedApp, Recorder]:
    (folder / "chunk.bin").write_bytes(CHUNK)
    rec = Recorder()
    app = web.Application(middlewares=[rec.middleware])

    async def chunk(_: web.Request) -> web.FileResponse:
        return web.FileResponse(folder / "chunk.bin")  # Range and HEAD as a real server does

    app.router.add_get("/chunk.bin", chunk)
    return ThreadedApp(app), rec


class ManyListing:
    """The 400k-entry listing: when the door was asked for it, and an event set once it is sent."""

    def __init__(self) -> None:
        self.body = multistatus("/many/", file_names(ENTRIES))
        self.asked: list[float] = []  # time.monotonic() of each PROPFIND
        self.sent = threading.Event()

    async def answer(self, request: web.Request) -> web.StreamResponse:
        self.asked.append(time.monotonic())
        resp = web.StreamResponse(status=207, headers={"Content-Type": "application/xml"})
        resp.content_length = len(self.body)
        await resp.prepare(request)
        await resp.write(self.body)
        await resp.write_eof()
        self.sent.set()
        return resp


def make_door(pool_url: str) -> tuple[ThreadedApp, Recorder, ManyListing]:
    rec = Recorder()
    many = ManyListing()
    huge = multistatus("/huge/", file_names(OVER // 100))
    assert len(huge) > OVER

    async def chunked_metadata(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: chunked, so only counting can find the size
        await resp.prepare(request)
        for _ in range(OVER // (64 << 10)):
            await resp.write(b" " * (64 << 10))
        await resp.write_eof()
        return resp

    def redirect(location: str, status: int = 302):
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=status, headers={"Location": location})
        return handler

    def fixed(body: bytes, status: int = 200):
        async def handler(_: web.Request) -> web.Response:
            return web.Response(status=status, body=body)
        return handler

    app = web.Application(middlewares=[rec.middleware])
    r = app.router
    r.add_get("/meta/ok.zarr/.zarray", fixed(b"{" + b" " * (CAP - 2) + b"}"))
    r.add_get("/meta/big.zarr/.zarray", fixed(b" " * OVER))
    r.add_get("/meta/chunked.zarr/.zarray", chunked_metadata)
    r.add_route("PROPFIND", "/huge/", fixed(huge, 207))
    r.add_route("PROPFIND", "/many/", many.answer)
    r.add_get("/same/chunk.bin", redirect("/data/chunk.bin"))  # relative: the same origin
    r.add_get("/data/chunk.bin", fixed(CHUNK))
    r.add_route("PROPFIND", "/old/", redirect("/new/", 301))
    r.add_route("PROPFIND", "/new/", fixed(multistatus("/new/", ["a.bin", "b.bin"]), 207))
    r.add_get("/pool/chunk.bin", redirect(f"{pool_url}/chunk.bin"))
    r.add_get("/userinfo/chunk.bin", redirect(f"http://someone:pw@{pool_url[len('http://'):]}/chunk.bin"))
    r.add_get("/loop/chunk.bin", redirect("/loop/chunk.bin", 307))
    # Sizes of 5000 digits (over Python's int() limit) and a superscript two (a digit to str.isdigit).
    odd = multistatus("/odd/", ["a.bin", "b.bin"]).replace(b"1234", b"9" * 5000, 1).replace(b"1234", "²".encode(), 1)
    r.add_route("PROPFIND", "/odd/", fixed(odd, 207))
    return ThreadedApp(app), rec, many


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bounds")
    pool, pool_rec = make_pool(folder)
    door, door_rec, many = make_door(pool.url)
    mount = '[[mounts]]\nname = "{}"\nsource = "webdav+' + door.url + '/"\n[mounts.upstream]\nbearer_env = "BOUNDS_TOKEN"\n'
    (folder / "ngserve.toml").write_text(
        mount.format("door") + f'metadata_max_bytes = "{CAP >> 20}MiB"\nlisting_max_bytes = {CAP}\n\n'
        + mount.format("pooled") + 'redirect_hosts = ["127.0.0.1"]\n\n'  # any port of that host
        + mount.format("doorport") + f'redirect_hosts = ["127.0.0.1:{door.port}"]\n\n'  # not the pool's port
        + mount.format("many") + 'listing_max_bytes = "256MiB"\n'
    )
    srv = None
    try:
        srv = ServerProcess(["serve", "--config", str(folder / "ngserve.toml"), "--port", "0"],
                            env=dict(os.environ, BOUNDS_TOKEN=TOKEN))
        yield srv, door_rec, pool_rec, many
    finally:
        if srv is not None:
            srv.stop()
        door.stop()
        pool.stop()




# -- size caps ----------------------------------------------------------------------------
def test_metadata_up_to_the_cap_is_served(deployment):
    srv, *_ = deployment
    status, _, body = get(srv.url + "/door/meta/ok.zarr/.zarray")
    assert status == 200 and len(body) == CAP


@pytest.mark.parametrize("name", ["big.zarr", "chunked.zarr"])  # with and without Content-Length
def test_metadata_over_the_cap_is_502(deployment, name):
    srv, *_ = deployment
    status, _, body = get(f"{srv.url}/door/meta/{name}/.zarray")
    assert status == 502 and body == b"502 upstream metadata file is larger than metadata_max_bytes\n"


def test_listing_over_the_cap_is_502(deployment):
    srv, *_ = deployment
    status, _, body = get(srv.url + "/door/huge/")
    assert status == 502 and body == b"502 upstream listing is larger than listing_max_bytes\n"
    assert get(srv.url + "/-/health")[0] == 200


def test_huge_listing_is_parsed_off_the_event_loop(deployment):
    """Requests sent once the door has sent a 400k-entry listing are answered while ngserve parses it.

    That is, before ngserve moves on: before it answers, or asks the door again
    (the app's dataset detection lists the folder a second time).  The ten
    health checks go one after another, so on a loop busy parsing, at most the
    first could be answered before ngserve moves on.
    """
    srv, _, _, many = deployment
    many.sent.clear()
    many.asked.clear()
    listing: dict = {}

    def read_listing() -> None:
        with urllib.request.urlopen(srv.url + "/many/many/", timeout=600) as r:
            listing["answered"] = time.monotonic()
            listing["status"], listing["body"] = r.status, r.read()

    reader = threading.Thread(target=read_listing)
    reader.start()
    assert many.sent.wait(300)
    answered = []
    for _ in range(10):
        assert get(srv.url + "/-/health")[0] == 200
        answered.append(time.monotonic())
    reader.join(600)
    assert listing["status"] == 200
    assert listing["body"].count(b'<a href="f') == ENTRIES and b'href="f0399999.bin"' in listing["body"]
    assert answered[-1] < min(listing["answered"], *many.asked[1:])


def test_odd_sizes_in_a_listing_are_read_as_zero(deployment):
    srv, *_ = deployment
    status, _, body = get(srv.url + "/door/odd/")
    assert status == 200 and b'href="a.bin"' in body and b'href="b.bin"' in body


# -- redirects ------------------------------------------------------------------------------
def test_redirects_within_the_origin_are_followed(deployment):
    srv, door, _, _ = deployment
    door.clear()
    status, _, body = get(srv.url + "/door/same/chunk.bin")
    assert status == 200 and body == CHUNK
    assert [auth for *_, auth in door.seen("/data/chunk.bin")] == [f"Bearer {TOKEN}"]
    # A collection that moved: its listing comes from where it moved to, with hrefs named from there.
    status, _, body = get(srv.url + "/door/old/")
    assert status == 200 and b'href="a.bin"' in body and b'href="b.bin"' in body


@pytest.mark.parametrize("mount, path", [
    ("door", "pool"),  # nothing listed
    ("doorport", "pool"),  # the door's port listed, not the pool's
    ("pooled", "userinfo"),  # the pool's host is listed, but the URL carries other credentials
])
def test_redirect_to_an_unlisted_origin_is_502_and_never_followed(deployment, mount, path):
    srv, _, pool, _ = deployment
    pool.clear()
    status, _, body = get(f"{srv.url}/{mount}/{path}/chunk.bin")
    assert status == 502 and body == b"502 upstream redirected to a host not in redirect_hosts\n"
    assert pool.requests == []  # not even a connection: no token, no client certificate


def test_redirect_to_a_listed_host_carries_the_credentials(deployment):
    srv, _, pool, _ = deployment
    pool.clear()
    status, _, body = get(srv.url + "/pooled/pool/chunk.bin")
    assert status == 200 and body == CHUNK
    status, headers, body = get(srv.url + "/pooled/pool/chunk.bin", {"Range": "bytes=100-199"})
    assert status == 206 and body == CHUNK[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(CHUNK)}"
    status, headers, _ = get(srv.url + "/pooled/pool/chunk.bin", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(CHUNK)
    seen = pool.seen("/chunk.bin")
    assert len(seen) == 3 and all(auth == f"Bearer {TOKEN}" for *_, auth in seen), seen


def test_redirect_loop_is_502_after_five_hops(deployment):
    srv, door, _, _ = deployment
    door.clear()
    status, _, body = get(srv.url + "/door/loop/chunk.bin")
    assert status == 502 and body == b"502 upstream redirected too many times\n"
    assert len(door.seen("/loop/chunk.bin")) == 6  # the request and five hops, never retried
