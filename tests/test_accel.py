"""``[server] accel_redirect``: ngserve checks, a real nginx sends the file (X-Accel-Redirect)."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import pytest

from conftest import ServerProcess
from deploy import Nginx, nginx_accel_locations
from server.tokens import mint
from test_replicas import request

SECRET = "accel-test-secret-0123456789abcdef"
PREFIX = "/_ngserve_files/"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("accel")
    data, team = root / "data", root / "team"
    data.mkdir()
    team.mkdir()
    big = os.urandom(3 << 20)  # above the in-memory size: ngserve would stream it
    (data / "big.bin").write_bytes(big)
    (data / "with space #1.json").write_text('{"a": 1}')
    (data / "info.gz").write_bytes(gzip.compress(b'{"type": "image"}'))  # a gzip_static sibling only
    (team / "t.bin").write_bytes(b"team bytes")
    (root / "secret").write_text(SECRET)
    cfg = root / "ngserve.toml"
    cfg.write_text(f"""
[server]
accel_redirect = "{PREFIX}"
metrics = "public"
data_dir = "state"

[auth]
secret_file = "secret"
trusted_proxies = ["127.0.0.1"]  # nginx: its X-Request-ID is kept

[[mounts]]
name = "data"
source = "data"

[[mounts]]
name = "team"
source = "team"
access = "token"
""")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    server = ServerProcess(["serve", "--config", str(cfg), "--port", "0"], env=env)
    proxy = None
    try:
        proxy = Nginx([server.url.removeprefix("http://")], nginx_accel_locations(PREFIX, {"data": data, "team": team}))
        yield server, proxy, big
    finally:
        if proxy:
            proxy.close()
        server.stop()


def test_ngserve_answers_with_x_accel_redirect_and_no_body(site):
    server, _, _ = site
    status, headers, body = request(server.url, "/data/big.bin")
    assert status == 200 and headers["X-Accel-Redirect"] == f"{PREFIX}data/big.bin" and body == b""
    assert request(server.url, "/data/with%20space%20%231.json")[1]["X-Accel-Redirect"] == (
        f"{PREFIX}data/with%20space%20%231.json")
    status, headers, body = request(server.url, "/data/")  # listings are ngserve's own, as before
    assert status == 200 and "X-Accel-Redirect" not in headers and b"big.bin" in body
    status, headers, body = request(server.url, "/data/big.bin", method="HEAD")  # HEAD: ngserve answers
    assert status == 200 and "X-Accel-Redirect" not in headers and headers["Content-Length"] == str(3 << 20)


def test_one_request_id_from_nginx_to_the_client(site):
    """nginx's own id ($request_id: 32 hex digits, where ngserve's are 18) reaches ngserve, which keeps
    it from a trusted proxy, and comes back on answers nginx sends itself (accel) as on proxied ones."""
    import re

    _, proxy, _ = site
    for path in ("/data/big.bin", "/data/", "/data/absent.bin"):
        status, headers, _ = request(proxy.url, path)
        assert re.fullmatch(r"[0-9a-f]{32}", headers.get("X-Request-ID", "")), (path, status, dict(headers))
    # Browsers may read it (a page can report which request failed).
    assert "X-Request-ID" in request(proxy.url, "/data/big.bin")[1]["Access-Control-Expose-Headers"]


def test_bytes_nginx_sends_are_counted(site):
    from test_operations import scrape, value

    server, proxy, big = site
    before = value(scrape(server), "ngserve_accel_bytes_total")
    assert request(proxy.url, "/data/big.bin")[0] == 200
    assert request(proxy.url, "/data/big.bin", headers={"Range": "bytes=10-19"})[0] == 206
    server.settle()
    deadline = time.monotonic() + 10  # counts reach prometheus_client once a second
    while value(scrape(server), "ngserve_accel_bytes_total") - before < len(big) + 10:
        assert time.monotonic() < deadline, "nginx's bytes never showed in the metrics"
        time.sleep(0.2)
    assert value(scrape(server), "ngserve_accel_bytes_total") - before == len(big) + 10


def test_nginx_sends_the_file_with_ranges_and_validators(site):
    _, proxy, big = site
    status, headers, body = request(proxy.url, "/data/big.bin")
    assert status == 200 and body == big and "X-Accel-Redirect" not in headers
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["X-Content-Type-Options"] == "nosniff"
    etag = headers["ETag"]

    status, headers, body = request(proxy.url, "/data/big.bin", headers={"Range": "bytes=1000-1999"})
    assert status == 206 and body == big[1000:2000] and headers["Content-Range"] == f"bytes 1000-1999/{len(big)}"
    # tensorstore reads a shard's chunks with If-Match: nginx must agree with ngserve's ETag.
    status, _, body = request(proxy.url, "/data/big.bin", headers={"Range": "bytes=-10", "If-Match": etag})
    assert status == 206 and body == big[-10:]
    assert request(proxy.url, "/data/big.bin", headers={"If-Match": '"other"'})[0] == 412
    assert request(proxy.url, "/data/big.bin", headers={"If-None-Match": etag})[0] == 304
    status, _, body = request(proxy.url, "/data/big.bin", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert status == 206 and body == big[:10]
    status, _, body = request(proxy.url, "/data/big.bin", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert status == 200 and body == big
    assert request(proxy.url, "/data/big.bin", headers={"Range": f"bytes={len(big)}-"})[0] == 416
    status, _, body = request(proxy.url, "/data/big.bin", headers={"Range": "bytes=0-1,5-9"})
    assert status == 200 and body == big  # several ranges: the whole file, as ngserve sends it

    status, headers, body = request(proxy.url, "/data/with%20space%20%231.json")
    assert (status, body, headers["Content-Type"]) == (200, b'{"a": 1}', "application/json")


def test_nginx_accel_keeps_gzip_siblings_404_and_protection(site):
    _, proxy, _ = site
    status, headers, body = request(proxy.url, "/data/info", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and gzip.decompress(body) == b'{"type": "image"}'
    assert headers["Vary"] == "Accept-Encoding" and headers["Content-Type"] == "application/json"
    status, headers, body = request(proxy.url, "/data/info")  # a client that cannot inflate: ngserve does
    assert status == 200 and "Content-Encoding" not in headers and body == b'{"type": "image"}'

    assert request(proxy.url, "/data/missing.bin")[0] == 404
    assert request(proxy.url, "/team/t.bin")[0] == 401
    token = mint(SECRET.encode(), "team")
    assert request(proxy.url, f"/-/t/{token}/team/t.bin")[:3:2] == (200, b"team bytes")
    # The internal location is not reachable from outside: nginx answers 404 for it.
    assert request(proxy.url, f"{PREFIX}team/t.bin")[0] == 404
