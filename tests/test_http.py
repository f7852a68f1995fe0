"""Every HTTP rule of the data server, against the app in-process.

Paths that HTTP client libraries would normalise (``..``, ``%2e``) go over a
raw socket, byte for byte as an attacker would send them.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.resources
import json
import os
from pathlib import Path

import aiohttp
import pytest

from server import MountConfig, ServerConfig, create_app

BIG = 3 << 20  # past LocalStorage.SMALL_FILE, so it is streamed from disk


@pytest.fixture
def root(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "img.zarr" / "0").mkdir(parents=True)
    (data / "img.zarr" / ".zarray").write_text('{"zarr_format": 2}')
    (data / "img.zarr" / ".zattrs").write_text("{}")
    (data / "img.zarr" / "0" / "0").write_bytes(bytes(range(256)) * 4)
    (data / "vol" / "s0").mkdir(parents=True)
    (data / "vol" / "info").write_text('{"@type": "neuroglancer_multiscale_volume"}')
    (data / "n5" ).mkdir()
    (data / "n5" / "attributes.json").write_text('{"n5": "2.0.0"}')
    (data / "big.bin").write_bytes(os.urandom(BIG))
    (data / "page.html").write_text("<script>alert(1)</script>")
    (data / "packed").write_bytes(b"")  # placeholder removed below
    (data / "packed").unlink()
    (data / "packed.gz").write_bytes(gzip.compress(b'{"packed": true}'))
    (data / ".secret").write_text("token")
    (data / ".git").mkdir()
    (data / ".git" / "config").write_text("x")
    (data / "-").mkdir()
    (data / "-" / "health").write_text("not the server's")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(tmp_path / "outside.txt", data / "escape.txt")
    os.symlink(tmp_path, data / "escape_dir")
    os.symlink(data / "img.zarr", data / "alias.zarr")
    other = tmp_path / "other"
    other.mkdir()
    (other / "hello.txt").write_text("hello")
    return data


def make_app(root: Path, **kwargs):
    mounts = [MountConfig("", str(root)), MountConfig("other", str(root.parent / "other"))]
    return create_app(ServerConfig(mounts=mounts, data_dir=root.parent / "state", **kwargs))


@pytest.fixture
async def client(aiohttp_client, root):
    return await aiohttp_client(make_app(root))


async def raw_get(host: str, port: int, path: str) -> tuple[int, str]:
    """Send ``GET path`` exactly as given and return (status, whole answer)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
    await writer.drain()
    answer = (await reader.read()).decode("latin-1")
    writer.close()
    return int(answer.split(" ", 2)[1]), answer


# -- methods and CORS ----------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "PROPFIND"])
async def test_other_methods_answer_405_with_cors(client, method):
    r = await client.request(method, "/img.zarr/.zarray")
    assert r.status == 405
    assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_cors_on_success_and_errors(client):
    for path, status in [("/img.zarr/.zarray", 200), ("/missing", 404), ("/escape.txt", 404)]:
        r = await client.get(path, headers={"Origin": "https://neuroglancer-demo.appspot.com"})
        assert r.status == status
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        exposed = {h.strip() for h in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Content-Range", "Content-Length", "Content-Encoding", "ETag"} <= exposed
    r = await client.get("/big.bin", headers={"Range": f"bytes={BIG}-"})
    assert r.status == 416 and r.headers["Access-Control-Allow-Origin"] == "*"


async def test_preflight(client):
    r = await client.options(
        "/img.zarr/0/0",
        headers={
            "Origin": "http://elsewhere",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range, authorization",
        },
    )
    assert r.status == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert {"GET", "HEAD"} <= {m.strip() for m in r.headers["Access-Control-Allow-Methods"].split(",")}
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"range", "authorization", "if-match", "if-unmodified-since"} <= allowed


async def test_configured_origins(aiohttp_client, root):
    client = await aiohttp_client(make_app(root, cors_origins=["https://ok.example"]))
    r = await client.get("/img.zarr/.zarray", headers={"Origin": "https://ok.example"})
    assert r.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "Origin" in r.headers.getall("Vary")
    r = await client.get("/img.zarr/.zarray", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


# -- ranges --------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/img.zarr/0/0", "/big.bin"])
async def test_ranges(client, root, path):
    data = (root / path.lstrip("/")).read_bytes()
    size = len(data)
    cases = {"bytes=0-9": (0, 9), "bytes=100-": (100, size - 1), "bytes=-16": (size - 16, size - 1),
             f"bytes=5-{size + 50}": (5, size - 1)}
    for header, (first, last) in cases.items():
        r = await client.get(path, headers={"Range": header})
        assert r.status == 206, header
        assert r.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert r.headers["Accept-Ranges"] == "bytes"
        body = await r.read()
        assert body == data[first : last + 1]
        assert int(r.headers["Content-Length"]) == len(body)
    for header in [f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"]:
        r = await client.get(path, headers={"Range": header})
        assert r.status == 416, header
        assert r.headers["Content-Range"] == f"bytes */{size}"
    r = await client.get(path, headers={"Range": "bytes=abc"})  # malformed: ignored
    assert r.status == 200 and await r.read() == data
    r = await client.get(path)
    assert r.status == 200 and r.headers["Accept-Ranges"] == "bytes"
    assert await r.read() == data


@pytest.mark.parametrize("path", ["/img.zarr/0/0", "/big.bin"])
async def test_ranges_with_huge_numbers(client, root, path):
    """RFC 9110 puts no bound on a range's digits; past Python's int() limit they once gave 500."""
    data = (root / path.lstrip("/")).read_bytes()
    size, huge = len(data), "9" * 5000
    cases = {
        f"bytes={huge}-": (416, None),  # starts past the end
        f"bytes=3-{huge}": (206, (3, size - 1)),  # a last-pos past the end means "to the end"
        f"bytes=-{huge}": (206, (0, size - 1)),  # a suffix longer than the file is all of it
        f"bytes={'0' * 5000}2-5": (206, (2, 5)),  # leading zeros do not count
        f"bytes={huge[:3000]}-{huge[:2999]}": (200, None),  # last < first: invalid, so ignored
        "bytes=\u0663-\u0665": (200, None),  # only ASCII digits are digits (these are Arabic-Indic)
    }
    for header, (status, span) in cases.items():
        r = await client.get(path, headers={"Range": header})
        assert r.status == status, header[:40]
        body = await r.read()
        if span:
            first, last = span
            assert r.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
            assert body == data[first : last + 1]
        elif status == 200:
            assert body == data


async def test_head(client, root):
    for path in ["/img.zarr/0/0", "/big.bin"]:
        size = (root / path.lstrip("/")).stat().st_size
        r = await client.head(path)
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == size
        assert await r.read() == b""
        r = await client.head(path, headers={"Range": "bytes=0-0"})
        assert r.status == 206 and r.headers["Content-Range"] == f"bytes 0-0/{size}"


# -- validators -------------------------------------------------------------------------
async def test_etag_and_last_modified(client, root):
    r = await client.get("/img.zarr/0/0")
    etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
    assert (await client.get("/img.zarr/0/0", headers={"If-None-Match": etag})).status == 304
    assert (await client.get("/img.zarr/0/0", headers={"If-None-Match": f'"x", {etag}'})).status == 304
    assert (await client.get("/img.zarr/0/0", headers={"If-Modified-Since": modified})).status == 304
    assert (await client.get("/img.zarr/0/0", headers={"If-None-Match": '"other"'})).status == 200
    # A change on disk is seen at once: new validator, new bytes (the memory cache revalidates).
    path = root / "img.zarr" / "0" / "0"
    path.write_bytes(b"changed!")
    os.utime(path, ns=(0, 10**18))
    r = await client.get("/img.zarr/0/0", headers={"If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag and await r.read() == b"changed!"


async def test_unparseable_dates_are_ignored(client):
    """A date header that does not parse, or names no representable time, counts as absent (RFC 9110 13.1)."""
    for value in ["Mon, 01 Jan 99999999999 00:00:00 GMT", "Mon, 01 Jan 2020 00:00:99999999999999999 GMT",
                  "Mon, 32 Jan 2020 00:00:00 GMT", "Mon, 01 Jan 2020 00:00:00 +9999", "1 Jan " + "9" * 5000]:
        for name in ["If-Modified-Since", "If-Unmodified-Since"]:
            r = await client.get("/img.zarr/0/0", headers={name: value})
            assert r.status == 200, (name, value[:40])
            assert len(await r.read()) == 1024


async def test_if_range_mismatch_sends_whole_file(client, root):
    r = await client.get("/big.bin", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status == 200 and len(await r.read()) == BIG


# -- content types and precompressed files ---------------------------------------------
async def test_content_types(client):
    for path in ["/img.zarr/.zarray", "/img.zarr/.zattrs", "/vol/info", "/n5/attributes.json"]:
        r = await client.get(path)
        assert r.headers["Content-Type"] == "application/json", path
    for path in ["/img.zarr/0/0", "/page.html"]:  # data never goes out as HTML
        r = await client.get(path)
        assert r.headers["Content-Type"] == "application/octet-stream", path
        assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_gzip_sibling(client):
    r = await client.get("/packed", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert r.status == 200
    assert r.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await r.read()) == b'{"packed": true}'
    r = await client.get("/packed")
    assert json.loads(await r.read()) == {"packed": True}
    # A client that cannot inflate gets the plain bytes.
    r = await client.get("/packed", skip_auto_headers=["Accept-Encoding"], auto_decompress=False)
    assert "Content-Encoding" not in r.headers
    assert await r.read() == b'{"packed": true}'


async def test_zmetadata_is_served(client, root):
    (root / "img.zarr" / ".zmetadata").write_text('{"metadata": {}}')
    r = await client.get("/img.zarr/.zmetadata")
    assert r.status == 200 and r.headers["Content-Type"] == "application/json"


async def test_dataset_detection_follows_changes(client, root):
    """The listing's format cache is keyed on the folder's mtime: a new marker shows at once."""
    (root / "later").mkdir()
    assert 'href="/-/open/later"' not in await (await client.get("/")).text()
    (root / "later" / "attributes.json").write_text('{"n5": "2.0.0"}')
    assert 'href="/-/open/later"' in await (await client.get("/")).text()
    (root / "later" / "attributes.json").unlink()
    assert 'href="/-/open/later"' not in await (await client.get("/")).text()


@pytest.mark.parametrize("method, path, kind", [
    ("GET", "/", "html"),                         # a listing
    ("GET", "/img.zarr/", "html"),
    ("GET", "/-/login", "html"),
    ("GET", "/-/viewer/v/ngserve/", "html"),      # the viewer's index.html
    ("GET", "/-/viewer/v/ngserve/" + next(
        f.name for f in importlib.resources.files("neuroglancer.static").joinpath("client").iterdir()
        if f.name.endswith(".css")), "other"),
    ("GET", "/-/health", "other"),
    ("GET", "/img.zarr/.zarray", "other"),        # data
    ("GET", "/big.bin", "other"),                 # streamed data
    ("GET", "/nothing-here", "other"),            # an error
    ("GET", "/img.zarr", "other"),                # a redirect
    ("POST", "/-/api/states", "other"),           # state JSON
    ("GET", "/-/api/states/nosuchid", "other"),
])
async def test_nosniff_everywhere_and_frame_rules_on_html(client, method, path, kind):
    body = json.dumps({"layers": []}).encode() if method == "POST" else None
    r = await client.request(method, path, data=body, allow_redirects=False)
    assert r.status < 500
    assert r.headers["X-Content-Type-Options"] == "nosniff", path
    if kind == "html":
        assert r.headers["Content-Type"].startswith("text/html")
        assert r.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
        assert r.headers["X-Frame-Options"] == "SAMEORIGIN"
    else:
        assert "X-Frame-Options" not in r.headers and "Content-Security-Policy" not in r.headers
    if method == "POST":
        r = await client.get(f"/-/api/states/{(await r.json())['id']}")
        assert r.status == 200 and r.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("ancestors, csp, xfo", [
    (["*"], "frame-ancestors *", None),
    (["'self'", "https://jupyter.example.org"], "frame-ancestors 'self' https://jupyter.example.org", None),
    (["'none'"], "frame-ancestors 'none'", "DENY"),
])
async def test_frame_ancestors_are_configurable(aiohttp_client, root, ancestors, csp, xfo):
    client = await aiohttp_client(make_app(root, frame_ancestors=ancestors))
    for path in ["/", "/-/viewer/v/ngserve/"]:
        r = await client.get(path)
        assert r.headers["Content-Security-Policy"] == csp
        assert r.headers.get("X-Frame-Options") == xfo


# -- listings ------------------------------------------------------------------------------
async def test_listing(client):
    r = await client.get("/", headers={"Accept": "text/html"})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    page = await r.text()
    for href in ['href="img.zarr/"', 'href="vol/"', 'href="n5/"', 'href="big.bin"', 'href="other/"']:
        assert href in page, href
    for hidden in [".secret", ".git", "escape.txt", "escape_dir"]:
        assert hidden not in page, hidden
    for target in ["/-/open/img.zarr", "/-/open/vol", "/-/open/n5"]:
        assert f'href="{target}"' in page
    page = await (await client.get("/img.zarr/")).text()
    assert 'href=".zarray"' in page and 'href=".zattrs"' in page and 'href="0/"' in page


async def test_folder_without_slash_redirects(client):
    r = await client.get("/img.zarr", allow_redirects=False)
    assert r.status == 301 and r.headers["Location"] == "/img.zarr/"


async def test_mount(client):
    r = await client.get("/other/hello.txt")
    assert r.status == 200 and await r.read() == b"hello"
    assert 'href="hello.txt"' in await (await client.get("/other/")).text()


# -- safety ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/../outside.txt",
        "/img.zarr/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E%2Foutside.txt",
        "/img.zarr/..%2f..%2foutside.txt",
        "/..%5coutside.txt",
        "/img.zarr\\..\\..\\outside.txt",
        "/img.zarr/.zarray%00",
        "/escape.txt",
        "/escape_dir/outside.txt",
        "/escape_dir/",
        "/.secret",
        "/.git/config",
        "/%2esecret",
        "/-/health/../../outside.txt",
        "/%ff%fe",
    ],
)
async def test_traversal_and_hidden_answer_404(aiohttp_server, root, path):
    server = await aiohttp_server(make_app(root))
    status, answer = await raw_get(server.host, server.port, path)
    assert status == 404, answer
    assert "outside" not in answer.split("\r\n\r\n", 1)[1]
    assert "Traceback" not in answer


async def test_symlink_inside_root_is_served(client):
    r = await client.get("/alias.zarr/.zarray")
    assert r.status == 200


async def test_symlink_to_a_dotfile_is_neither_served_nor_listed(client, root):
    """The dotfile rule judges where a link leads, not only its own name."""
    os.symlink(root / ".secret", root / "peek.txt")
    os.symlink(root / ".git", root / "gitdir")
    os.symlink(".git/config", root / "relative.txt")
    os.symlink(root / "img.zarr" / ".zarray", root / "meta.json")  # an allowed dotfile stays allowed
    for path in ["/peek.txt", "/gitdir/config", "/gitdir/", "/relative.txt"]:
        r = await client.get(path)
        assert r.status == 404, path
        assert "token" not in await r.text()
    page = await (await client.get("/")).text()
    for name in ["peek.txt", "gitdir", "relative.txt"]:
        assert name not in page, name
    assert 'href="meta.json"' in page
    r = await client.get("/meta.json")
    assert r.status == 200 and await r.text() == '{"zarr_format": 2}'


async def test_reserved_space(client):
    assert (await client.get("/-/nothing-here")).status == 404
    r = await client.get("/-/health")
    assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_server_survives_bad_requests(aiohttp_server, root):
    server = await aiohttp_server(make_app(root))
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"\x00\x01garbage\r\n\r\n")
    await writer.drain()
    await reader.read()
    writer.close()
    status, _ = await raw_get(server.host, server.port, "/img.zarr/.zarray")
    assert status == 200


async def test_root_of_named_mounts_lists_them(aiohttp_client, root):
    mounts = [MountConfig("em", str(root)), MountConfig("lm", str(root.parent / "other"))]
    app = create_app(ServerConfig(mounts=mounts, data_dir=root.parent / "state"))
    client = await aiohttp_client(app)
    r = await client.get("/")
    assert r.status == 200
    page = await r.text()
    assert 'href="em/"' in page and 'href="lm/"' in page
    assert (await client.get("/em/img.zarr/.zarray")).status == 200
    assert (await client.get("/nothing")).status == 404


async def test_file_shrinking_mid_stream_ends_the_connection(client, root):
    """Content-Length promised more than the file now has: the client must see a
    truncated answer, not wait forever on a connection that stays open."""
    path = root / "growing.bin"
    with open(path, "wb") as f:
        f.truncate(64 << 20)  # sparse: instant, and far more than socket buffers hold
    r = await client.get("/growing.bin")
    assert r.status == 200 and int(r.headers["Content-Length"]) == 64 << 20
    await r.content.readexactly(1 << 20)
    with open(path, "r+b") as f:
        f.truncate(2 << 20)
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(r.read(), timeout=30)


async def test_encoded_share_prefix_is_not_found(aiohttp_server, root):
    server = await aiohttp_server(make_app(root))
    status, answer = await raw_get(server.host, server.port, "/%2D/t/sometoken/img.zarr/.zarray")
    assert status == 404, answer


async def test_gzip_refused_with_q0_gets_plain_bytes(client):
    r = await client.get("/packed", headers={"Accept-Encoding": "gzip;q=0, identity"}, auto_decompress=False)
    assert "Content-Encoding" not in r.headers
    assert await r.read() == b'{"packed": true}'


async def test_same_size_rewrite_in_one_mtime_tick_changes_the_etag(client, root):
    path = root / "img.zarr" / "0" / "0"
    st = path.stat()
    etag = (await client.get("/img.zarr/0/0")).headers["ETag"]
    replacement = path.with_name("0.tmp")
    replacement.write_bytes(bytes(reversed(path.read_bytes())))
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, path)  # an atomic writer: same size, same mtime, new inode
    r = await client.get("/img.zarr/0/0", headers={"If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag


async def test_listing_of_a_chunk_folder_lists_all_and_detects_nothing(client, root):
    from server.app import MAX_DETECTED_FOLDERS

    level = root / "many"
    for i in range(MAX_DETECTED_FOLDERS + 1):
        (level / str(i)).mkdir(parents=True)
    (level / "0" / ".zarray").write_text('{"zarr_format": 2}')  # would be a dataset
    page = await (await client.get("/many/")).text()
    assert page.count('<tr><td><a href="') == MAX_DETECTED_FOLDERS + 2  # every folder, and ../
    assert "/-/open/" not in page
    del_one = level / str(MAX_DETECTED_FOLDERS)
    del_one.rmdir()
    assert 'href="/-/open/many/0"' in await (await client.get("/many/")).text()


async def test_a_big_listing_is_rendered_off_the_event_loop(client, root, monkeypatch):
    """A chunk folder of many thousand files takes ~1.5 us an entry to render: not on the loop."""
    import threading

    import server.app
    from server.app import BIG_LISTING

    level = root / "chunks"
    level.mkdir()
    for i in range(BIG_LISTING + 1):
        (level / f"0.0.{i}").touch()
    threads = []
    real = server.app.render_listing

    def recording(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(server.app, "render_listing", recording)
    page = await (await client.get("/chunks/")).text()
    assert page.count('<tr><td><a href="') == BIG_LISTING + 2
    assert threads and threads[0] is not threading.main_thread()
    await client.get("/")  # a small one stays on the loop, where it is cheaper than a thread hop
    assert threads[1] is threading.main_thread()


async def test_viewer_state_post_with_deep_json_is_400(client):
    """The bundled client POSTs its state here; a hostile body nested past json's limit once gave 500."""
    r = await client.post("/-/viewer/state/ngserve", data=b"[" * 100000 + b"]" * 100000)
    assert r.status == 400 and (await r.text()).count("\n") == 1
    r = await client.post("/-/viewer/state/ngserve", data=b'{"g": 3, "s": {}}')
    assert r.status == 200 and isinstance((await r.json())["g"], str)  # the generation the server keeps it as


# -- hostile requests ---------------------------------------------------------------------
HOSTILE_PATHS = [
    "/", "/img.zarr/0/0", "/big.bin", "/img.zarr/", "/%ff%fe", "/%c3%28/x", "/img.zarr/%00", "/img.zarr%2f0%2f0",
    "/%2e%2e/%2e%2e/etc/passwd", "/..%5c..%5cwin.ini", "/" + "a" * 4000, "/" + "a/" * 1500, "/%" + "%25" * 1000,
    "/-/t/%ff/img.zarr/.zarray", "/-/t/" + "x" * 3000 + "/img.zarr/.zarray", "/-/t/ngs1.e30.x/sec/a.bin",
    "/-/t//img.zarr", "/-/open/%ff", "/-/open/" + "a/" * 500, "/-/open/sec/..", "/-/api/states/%ff",
    "/-/api/states/" + "A" * 5000, "/-/viewer/v/%ff/x", "/-/viewer/v/x/%2e%2e%2fapp.py", "/-/health?%ff=%fe",
    "/img.zarr/.zarray?token=%ff", "/sec/a.bin?token=" + "a" * 3000, "/sec/%ff", "/-/login?next=%ff",
    "/-/%2D/open/img.zarr", "/%2D/health",
]
HOSTILE_HEADERS = [
    {"Range": "bytes=" + "9" * 4000 + "-"}, {"Range": "bytes=-" + "9" * 4000}, {"Range": "bytes=0-" + "9" * 4000},
    {"Range": "bytes=5-1"}, {"Range": "bytes=0-0,1-1,2-2"}, {"Range": "bytes=-0"}, {"Range": "items=0-1"},
    {"Range": "bytes=\u0663-\u0665"}, {"If-Modified-Since": "Mon, 01 Jan 99999999999 00:00:00 GMT"},
    {"If-Unmodified-Since": "Mon, 32 Jan 2020 25:61:61 +9999"}, {"If-Modified-Since": "garbage;; \u00ff"},
    {"If-None-Match": "," * 1000}, {"If-Match": 'W/"x", *, "'}, {"If-Range": "Mon, 01 Jan 2020 00:00:00 GMT",
                                                                   "Range": "bytes=0-1"},
    {"Accept-Encoding": "gzip;q=1e99999, gzip;q=nan, *;q="}, {"Authorization": "Basic !!!not-base64"},
    {"Authorization": "Basic " + "QTpC" * 500}, {"Authorization": "Bearer ngs1.\u00ff.\u00ff"},
    {"Authorization": "Bearer " + "x" * 4000}, {"Cookie": "ngserve_session=%ff; ngserve_token=ngs1..; x"},
    {"X-Forwarded-User": "\u00ff" * 100}, {"Origin": "null"}, {"Content-Type": "application/json; charset=%ff"},
]
HOSTILE_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "PROPFIND", "OPTIONS", "TRACE", "FOO", "M-SEARCH"]


@pytest.fixture
async def hostile_client(aiohttp_client, root, tmp_path):
    """The data app with a token-only mount too, so the auth and token paths are on the way."""
    from server.config import AuthConfig

    (tmp_path / "sec").mkdir()
    (tmp_path / "sec" / "a.bin").write_bytes(b"secret bytes")
    mounts = [MountConfig("", str(root)), MountConfig("sec", str(tmp_path / "sec"), access="token")]
    config = ServerConfig(mounts=mounts, data_dir=tmp_path / "state", auth=AuthConfig(secret=b"k" * 32))
    return await aiohttp_client(create_app(config))


def _assert_no_errors(caplog) -> None:
    """No handler raised.  aiohttp's parser logs a request it refuses (a 400 it answers itself) at
    ERROR too; that is a malformed request, not an exception of ours."""
    from aiohttp.http_exceptions import HttpProcessingError

    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")
              and not (r.exc_info and isinstance(r.exc_info[1], HttpProcessingError))]
    assert not errors, errors[:3]


async def test_hostile_requests_never_get_a_500(hostile_client, caplog):
    """A batch of requests an attacker or a broken client sends: each gets a clean 2xx-4xx (501 at most)."""
    seen = {}
    for path in HOSTILE_PATHS:
        for method in HOSTILE_METHODS:
            r = await hostile_client.request(method, path, data=b"[" * 3000 if method == "POST" else None)
            await r.read()
            seen[(method, path[:40])] = r.status
        for headers in HOSTILE_HEADERS:
            r = await hostile_client.get(path, headers=headers)
            await r.read()
            seen[("GET", path[:40], str(headers)[:40])] = r.status
    for body in [b"[" * 100000, b"\xff\xfe", b'{"layers": [NaN]}', b"{" * 10 + b"}" * 10, b'{"g": ' * 2000]:
        for path in ["/-/api/states", "/-/viewer/state/x", "/-/login", "/-/viewer/action/x"]:
            r = await hostile_client.post(path, data=body, headers={"Content-Type": "application/json"})
            await r.read()
            seen[("POST", path, body[:10])] = r.status
    bad = {k: v for k, v in seen.items() if v >= 500 and v != 501}
    assert not bad, bad
    _assert_no_errors(caplog)


@pytest.mark.parametrize("request_line", [
    b"GET /\xff\xfe/x HTTP/1.1", b"GET /img.zarr/\x00 HTTP/1.1", b"GET /" + b"a" * 7000 + b" HTTP/1.1",
    b"GET /img.zarr/0/0 HTTP/1.1\r\nRange: bytes=\xff-\xfe", b"GET /img.zarr/0/0 HTTP/1.1\r\nIf-None-Match: \xff\"",
    b"GET /-/t/\xff\xff/img.zarr/.zarray HTTP/1.1", b"\xff\xfe / HTTP/1.1", b"GET http://evil/../ HTTP/1.1",
    b"GET /img.zarr/0/0 HTTP/1.1\r\nCookie: ngserve_session=\xff\xfe",
])
async def test_hostile_bytes_never_get_a_500(hostile_client, caplog, request_line):
    """Bytes no HTTP client library would send, written to the socket as they are."""
    reader, writer = await asyncio.open_connection(hostile_client.host, hostile_client.port)
    writer.write(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    assert status < 500, answer[:200]
    _assert_no_errors(caplog)
