"""Upstream faults: a killed, slow, failing or truncating WebDAV server gives clean 502/504, then recovery."""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ServerProcess
from webdav_server import WebDAVServer

READ_TIMEOUT = 1.5
METADATA_MAX = 64 << 10


def _trickle_headers(listener: socket.socket) -> None:
    """An upstream that sends its status line, then one header byte every READ_TIMEOUT / 3 seconds."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(100):
                    time.sleep(READ_TIMEOUT / 3)
                    conn.sendall(b"z")
            except OSError:
                pass  # the proxy gave up and hung up: what we want


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    root = tmp_path_factory.mktemp("davroot")
    (root / "chunk.bin").write_bytes(bytes(range(256)) * 64)
    (root / "big.bin").write_bytes(os.urandom(4 << 20))
    # A metadata file that takes several read timeouts to trickle in, but is under the cap.
    (root / "slow.zarr").mkdir()
    (root / "slow.zarr" / ".zarray").write_bytes(b"{" + b" " * (24 << 10) + b"}")
    # A group whose metadata is a few MiB over the cap.
    (root / "huge.zarr").mkdir()
    (root / "huge.zarr" / ".zattrs").write_bytes(b"{" + b" " * (METADATA_MAX + (3 << 20)) + b"}")
    dav = WebDAVServer(root)
    slow = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_trickle_headers, args=(slow,), daemon=True).start()
    conf = tmp_path_factory.mktemp("conf") / "ngserve.toml"
    timeouts = f"connect_timeout = 1\nread_timeout = {READ_TIMEOUT}\n"
    conf.write_text(f"""
[server]
port = 0
[[mounts]]
name = "d"
source = "webdav+{dav.url}/"
[mounts.upstream]
username = "{dav.user}"
password_env = "DAV_PW"
retries = 2
metadata_max_bytes = "{METADATA_MAX // 1024}KiB"
{timeouts}
[[mounts]]
name = "slow"
source = "http://127.0.0.1:{slow.getsockname()[1]}/"
[mounts.upstream]
{timeouts}
""")
    srv = ServerProcess(["serve", "--config", str(conf)], env=dict(os.environ, DAV_PW=dav.password))
    yield srv, dav, root
    srv.stop()
    dav.kill()
    slow.close()


@pytest.fixture(autouse=True)
def healthy_upstream(proxied):
    """Each test starts from a running, fault-free upstream, even after a test that failed midway."""
    _, dav, _ = proxied
    yield
    if dav.proc.poll() is not None:
        dav.start()
    dav.fault("ok")


def get(url: str) -> tuple[int, bytes, float]:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), time.monotonic() - start
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.monotonic() - start


def assert_recovers(srv, root) -> None:
    status, body, _ = get(srv.url + "/d/chunk.bin")
    assert status == 200 and body == (root / "chunk.bin").read_bytes()


def test_upstream_500_is_502_without_retry_then_recovers(proxied):
    srv, dav, root = proxied
    dav.fault("status", code=500)
    dav.reset_stats()
    status, body, _ = get(srv.url + "/d/chunk.bin")
    assert status == 502 and body == b"502 upstream answered 500\n"
    assert dav.stats()["counts"]["GET"] == 1
    dav.fault("status", code=400)
    dav.reset_stats()
    assert get(srv.url + "/d/chunk.bin")[0] == 502
    assert dav.stats()["counts"]["GET"] == 1  # a 4xx is never retried
    dav.fault("ok")
    assert_recovers(srv, root)


def test_upstream_503_is_retried_with_backoff(proxied):
    srv, dav, root = proxied
    dav.fault("status", code=503)
    dav.reset_stats()
    status, body, took = get(srv.url + "/d/chunk.bin")
    assert status == 502 and b"503" in body
    assert dav.stats()["counts"]["GET"] == 3  # one try and two retries
    assert took >= 0.2 + 0.4 - 0.05  # backoff doubled between them
    dav.fault("ok")
    assert_recovers(srv, root)


def test_upstream_slower_than_timeout_is_504_in_time(proxied):
    srv, dav, root = proxied
    delay = READ_TIMEOUT + 3
    dav.fault("delay", seconds=delay)
    status, body, took = get(srv.url + "/d/chunk.bin")
    assert status == 504 and body == b"504 upstream timed out\n"
    assert took < delay  # answered without waiting for the upstream
    dav.fault("ok")
    assert_recovers(srv, root)


def test_upstream_stalling_mid_body_is_504(proxied):
    srv, dav, root = proxied
    # The first 4 KiB, then a pause twice the read timeout before the next.
    dav.fault("trickle", pause=READ_TIMEOUT * 2)
    status, body, _ = get(srv.url + "/d/chunk.bin")
    assert status == 504 and body == b"504 upstream timed out\n"
    dav.fault("ok")
    assert_recovers(srv, root)


def test_metadata_on_a_slow_but_steady_link_is_served(proxied):
    """read_timeout bounds each gap between pieces, not the whole body: 4 KiB per READ_TIMEOUT / 3
    seconds takes about twice the read timeout for this file, and that is no fault."""
    srv, dav, root = proxied
    dav.fault("trickle", pause=READ_TIMEOUT / 3)
    status, body, _ = get(srv.url + "/d/slow.zarr/.zarray")
    assert status == 200 and body == (root / "slow.zarr" / ".zarray").read_bytes()
    dav.fault("ok")


def test_metadata_over_the_cap_is_502_and_detection_goes_on(proxied):
    srv, dav, root = proxied
    dav.reset_stats()
    for _ in range(2):
        status, body, _ = get(srv.url + "/d/huge.zarr/.zattrs")
        assert status == 502 and body == b"502 upstream metadata file is larger than metadata_max_bytes\n"
    assert dav.stats()["counts"]["GET /huge.zarr/.zattrs"] == 1  # the refusal is remembered like a file
    # Dataset detection reads the same file: it takes the group for a plain folder, the listing stands.
    status, body, _ = get(srv.url + "/d/")
    assert status == 200 and b'href="huge.zarr/"' in body
    status, _, _ = get(srv.url + "/d/huge.zarr/")
    assert status == 200


def test_upstream_trickling_its_headers_is_504(proxied):
    srv, _, root = proxied
    status, body, _ = get(srv.url + "/slow/chunk.bin")
    assert status == 504 and body == b"504 upstream timed out\n"
    assert_recovers(srv, root)


def test_upstream_killed_is_502_then_recovers_when_back(proxied):
    srv, dav, root = proxied
    assert_recovers(srv, root)  # a pooled connection exists now
    dav.kill()
    status, body, took = get(srv.url + "/d/chunk.bin")
    assert status == 502 and body == b"502 upstream unreachable\n"
    assert get(srv.url + "/-/health")[0] == 200  # the server itself stays up
    dav.start()
    assert_recovers(srv, root)


def test_truncated_upstream_body_is_502(proxied):
    srv, dav, root = proxied
    dav.fault("truncate")
    status, body, _ = get(srv.url + "/d/chunk.bin")
    assert status == 502 and b"truncated" in body
    dav.fault("ok")
    assert_recovers(srv, root)


def test_client_disconnect_closes_upstream_request(proxied):
    srv, dav, root = proxied
    dav.fault("trickle", pause=0.02)
    dav.reset_stats()
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET /d/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
    # The proxy's next write fails, it closes its upstream response, and the upstream sees the cut.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and dav.stats()["aborted"] == 0:
        time.sleep(0.1)
    assert dav.stats()["aborted"] >= 1
    dav.fault("ok")
    assert_recovers(srv, root)
