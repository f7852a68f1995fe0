"""Operations, end to end against real servers on loopback: metrics, JSON logs with request ids,
readiness, rotating bearer files, SIGTERM draining, Cache-Control/ETag/Vary.

The upstream is a small aiohttp app in a thread (:class:`Upstream`) that checks a
bearer token, records the headers it was sent, serves files with aiohttp's own
ETag and Range handling, can redirect every read to a second such server (a
dCache door and its pool) and streams a slow large file for the drain test.
"""

from __future__ import annotations

import gzip
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from conftest import ServerProcess
from threaded_app import ThreadedApp

TOKEN_A = "macaroon-first-MDAxY2xvY2F0aW9u"
TOKEN_B = "macaroon-second-MDAyY2xvY2F0aW9u"
SLOW_SIZE = 4 << 20  # over remote.WHOLE_BODY, so ngserve streams it piece by piece
SLOW_PIECE = 256 << 10


class Upstream:
    """Files under ``root``; 401 without ``Bearer <token>`` (when ``token`` is set); every GET/HEAD
    redirected to ``redirect_to`` when set; ``/slow.bin`` trickles SLOW_SIZE bytes; ``/broken`` is 500."""

    def __init__(self, root: Path, token: str | None = None, redirect_to: str | None = None) -> None:
        self.root, self.token, self.redirect_to = root, token, redirect_to
        self.seen: list[dict] = []  # headers of every request
        self.slow_delay = 0.2
        self.root_delay = 0.0  # seconds "/" (the readiness probe's request) takes
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._answer)
        self.server = ThreadedApp(app)
        self.url = self.server.url

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"path": request.path, **request.headers})
        if self.token is not None:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
                raise web.HTTPUnauthorized()
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to + request.path)
        if request.method == "PROPFIND":
            raise web.HTTPMethodNotAllowed("PROPFIND", ["GET", "HEAD"])
        name = request.match_info["path"]
        if not name and self.root_delay:
            await asyncio_sleep(self.root_delay)
        if name == "broken":
            raise web.HTTPInternalServerError()
        if name == "slow.bin":
            answer = web.StreamResponse(headers={"ETag": '"slow"'})
            answer.content_length = SLOW_SIZE
            await answer.prepare(request)
            for _ in range(SLOW_SIZE // SLOW_PIECE):
                await answer.write(b"s" * SLOW_PIECE)
                await asyncio_sleep(self.slow_delay)
            return answer
        path = self.root / name
        if not name or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    def stop(self) -> None:
        self.server.stop()


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def scrape(srv: ServerProcess, headers: dict | None = None) -> dict[tuple, float]:
    """``{(sample name, sorted labels): value}`` from /-/metrics, parsed by prometheus_client."""
    status, hdrs, body = get(srv.url + "/-/metrics", headers)
    assert status == 200, body
    assert hdrs["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("files")
    (root / "a.bin").write_bytes(b"a" * 1000)
    (root / "info").write_text('{"@type": "neuroglancer_multiscale_volume"}')
    (root / "sub").mkdir()
    (root / "plain.json.gz").write_bytes(gzip.compress(b'{"x": 1}'))
    return root


def deployment(tmp: Path, files: Path, upstream_url: str, server: str = "", extra: str = "", upstream: str = "") -> Path:
    """A config with a public local mount ``loc`` of ``files`` and a remote mount ``up`` reading ``upstream_url``."""
    (tmp / "secret").write_text("s" * 40)
    (tmp / "macaroon").write_text(TOKEN_A + "\n")
    path = tmp / "ngserve.toml"
    path.write_text(f"""
[server]
data_dir = "state"
{server}

[auth]
secret_file = "secret"

[[mounts]]
name = "loc"
source = "{files}"

[[mounts]]
name = "up"
source = "{upstream_url}/"
[mounts.upstream]
bearer_file = "macaroon"
retries = 0
{upstream}
{extra}
""")
    return path


@pytest.fixture
def upstream(files):
    up = Upstream(files, token=TOKEN_A)
    yield up
    up.stop()


@pytest.fixture
def start(tmp_path):
    started = []

    def run(config: Path, *args: str, env: dict | None = None) -> ServerProcess:
        srv = ServerProcess(["serve", "--config", str(config), "--port", "0", *args], env=env)
        started.append(srv)
        return srv

    yield run
    for srv in started:
        srv.stop()


# -- /-/metrics --------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_count_requests_upstreams_caches_and_refusals(tmp_path, upstream, start, workers):
    config = deployment(tmp_path, upstream.root, upstream.url, server='metrics = "public"', extra="""
[[mounts]]
name = "priv"
source = "."
access = "token"
""")
    run_tmp = tmp_path / "run"
    run_tmp.mkdir()
    srv = start(config, "--workers", str(workers), env=dict(os.environ, TMPDIR=str(run_tmp)))
    before = scrape(srv)
    for _ in range(3):
        assert get(srv.url + "/loc/a.bin")[0] == 200
    assert get(srv.url + "/up/a.bin")[0] == 200  # proxied
    assert get(srv.url + "/up/info")[0] == 200  # metadata: a miss, then hits
    assert get(srv.url + "/up/info")[0] == 200
    assert get(srv.url + "/priv/x")[0] == 401
    assert get(srv.url + "/loc/missing")[0] == 404

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # A request is counted once its answer is out, and other workers hand over their counts
    # once a second: scrape until the last one shows.
    deadline = time.monotonic() + 30
    while True:
        after = scrape(srv)
        if moved("ngserve_request_duration_seconds_count", kind="data") >= 8:
            break
        assert time.monotonic() < deadline, "the requests never showed in the metrics"
        time.sleep(0.2)
    # Summed over every worker: with several, each connection may land on any of them.
    assert moved("ngserve_requests_total", kind="data", status="200") == 6
    assert moved("ngserve_requests_total", kind="data", status="401") == 1
    assert moved("ngserve_requests_total", kind="data", status="404") == 1
    assert moved("ngserve_auth_failures_total", status="401") == 1
    assert moved("ngserve_request_duration_seconds_count", kind="data") == 8
    assert moved("ngserve_request_duration_seconds_bucket", kind="data", le="+Inf") == 8
    assert moved("ngserve_response_bytes_total", kind="data") > 3 * 1000
    assert value(after, "ngserve_requests_total", kind="server", status="200") >= 1  # the first scrape
    assert moved("ngserve_upstream_requests_total", mount="up") >= 2
    assert moved("ngserve_upstream_duration_seconds_count", mount="up") >= 2
    assert moved("ngserve_upstream_errors_total", mount="up") == 0
    hits = moved("ngserve_cache_hits_total", cache="upstream_metadata")
    misses = moved("ngserve_cache_misses_total", cache="upstream_metadata")
    assert hits + misses == 2 and misses >= 1
    if workers == 1:
        assert hits == 1  # the second read of info came from memory
    assert value(after, "ngserve_cache_bytes", cache="upstream_metadata") > 0
    assert value(after, "ngserve_open_connections") >= 1  # the scrape's own
    if workers > 1:
        assert [p.name for p in run_tmp.iterdir()][0].startswith("ngserve-metrics-")
    srv.stop()
    assert list(run_tmp.iterdir()) == []  # the runner removed its metrics folder


def test_large_local_files_go_out_whole_and_counted(tmp_path, upstream, start):
    """Files above the in-memory size are sent by the kernel (sendfile): every byte right, whole
    and ranged, and counted in the metrics although they never pass through aiohttp's writer."""
    big = os.urandom((5 << 20) + 123)
    (upstream.root / "big.bin").write_bytes(big)
    try:
        srv = start(deployment(tmp_path, upstream.root, upstream.url, server='metrics = "public"'))
        srv.settle()
        before = scrape(srv)
        status, headers, body = get(srv.url + "/loc/big.bin")
        assert status == 200 and body == big and headers["Content-Length"] == str(len(big))
        status, headers, body = get(srv.url + "/loc/big.bin", {"Range": "bytes=1000000-4999999"})
        assert status == 206 and body == big[1000000:5000000]
        assert headers["Content-Range"] == f"bytes 1000000-4999999/{len(big)}"
        srv.settle()
        sent = value(scrape(srv), "ngserve_response_bytes_total", kind="data") - \
            value(before, "ngserve_response_bytes_total", kind="data")
        assert len(big) + 4_000_000 <= sent < len(big) + 4_000_000 + 4096  # bodies, plus headers
    finally:
        (upstream.root / "big.bin").unlink()


def test_upstream_errors_are_counted_per_mount(tmp_path, upstream, start):
    srv = start(deployment(tmp_path, upstream.root, upstream.url))
    assert get(srv.url + "/up/broken")[0] == 502
    srv.settle()
    assert value(scrape(srv), "ngserve_upstream_errors_total", mount="up") == 1


def test_metrics_access_follows_the_setting(tmp_path, upstream, start):
    protected = """
[[mounts]]
name = "priv"
source = "."
access = "users"
"""
    proxies = '[auth]\ntrusted_proxies = ["127.0.0.1"]\n'
    # Default on a deployment with a protected mount: users only.
    conf = deployment(tmp_path, upstream.root, upstream.url, extra=protected)
    conf.write_text(conf.read_text().replace("[auth]\n", proxies))
    srv = start(conf)
    assert get(srv.url + "/-/metrics")[0] == 401
    assert get(srv.url + "/-/metrics", {"X-Forwarded-User": "alice"})[0] == 200
    srv.stop()
    # Everything public: everyone may read them; "off" hides the page.
    off = tmp_path / "off"
    off.mkdir()
    srv = start(deployment(off, upstream.root, upstream.url, server='metrics = "off"'))
    assert get(srv.url + "/-/metrics")[0] == 404
    pub = tmp_path / "pub"
    pub.mkdir()
    srv = start(deployment(pub, upstream.root, upstream.url))
    assert get(srv.url + "/-/metrics")[0] == 200


# -- JSON logs and request ids -------------------------------------------------------------
def _json_lines(srv: ServerProcess) -> list[dict]:
    srv.settle()
    records = []
    for line in srv.log:
        records.append(json.loads(line))  # every line, access or error, is one JSON object
    return records


def test_json_log_with_request_ids_sent_upstream_and_returned(tmp_path, upstream, start):
    srv = start(deployment(tmp_path, upstream.root, upstream.url), "--log-format", "json")
    status, headers, _ = get(srv.url + "/up/a.bin?token=SECRET-SHARE-TOKEN", {"X-Request-ID": "forged-id"})
    assert status == 200
    rid = headers["X-Request-ID"]
    assert rid and rid != "forged-id"  # not from a trusted proxy: ours, not the client's
    assert upstream.seen[-1]["X-Request-ID"] == rid
    status, headers, _ = get(srv.url + "/up/broken")
    assert status == 502
    broken = headers["X-Request-ID"]
    records = _json_lines(srv)
    access = [r for r in records if r.get("type") == "access" and r["request_id"] == rid]
    assert len(access) == 1
    assert access[0]["status"] == 200 and access[0]["path"] == "/up/a.bin?token=REDACTED"
    assert access[0]["method"] == "GET" and access[0]["bytes"] > 1000
    errors = [r for r in records if r.get("type") != "access" and "answered 500" in r["message"]]
    assert errors and errors[0]["request_id"] == broken and errors[0]["level"] == "WARNING"
    text = "".join(srv.log)
    assert "SECRET-SHARE-TOKEN" not in text and TOKEN_A not in text


def test_request_id_from_a_trusted_proxy_is_kept(tmp_path, upstream, start):
    conf = deployment(tmp_path, upstream.root, upstream.url)
    conf.write_text(conf.read_text().replace("[auth]\n", '[auth]\ntrusted_proxies = ["127.0.0.1"]\n'))
    srv = start(conf)
    status, headers, _ = get(srv.url + "/up/a.bin", {"X-Request-ID": "lb-7f3a9c"})
    assert status == 200 and headers["X-Request-ID"] == "lb-7f3a9c"
    assert upstream.seen[-1]["X-Request-ID"] == "lb-7f3a9c"
    # One that could forge a log line is replaced even from the proxy.
    status, headers, _ = get(srv.url + "/loc/a.bin", {"X-Request-ID": 'x" "evil'})
    assert headers["X-Request-ID"] != 'x" "evil'


# -- /-/ready ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ready_checks_the_state_store_and_each_upstream(tmp_path, upstream, start):
    srv = start(deployment(tmp_path, upstream.root, upstream.url))
    status, _, body = get(srv.url + "/-/ready")
    assert status == 200 and json.loads(body) == {"status": "ready"}
    assert any(h.get("path") == "/" and "X-Request-ID" in h for h in upstream.seen)  # it asked the upstream

    dead = tmp_path / "dead"
    dead.mkdir()
    srv = start(deployment(dead, upstream.root, f"http://127.0.0.1:{_free_port()}"))
    db = dead / "state" / "states.sqlite3"
    for p in dead.glob("state/states.sqlite3*"):
        p.unlink()
    db.mkdir()  # the store cannot open its database any more
    status, headers, body = get(srv.url + "/-/ready")
    assert status == 503 and headers["Cache-Control"] == "no-store"
    problems = json.loads(body)["problems"]
    assert set(problems) == {"states", "mount 'up'"}
    assert "unreachable" in problems["mount 'up'"]
    assert get(srv.url + "/-/health")[0] == 200  # the process is up all the same


def test_concurrent_ready_probes_share_one_check(tmp_path, upstream, start):
    from concurrent.futures import ThreadPoolExecutor

    srv = start(deployment(tmp_path, upstream.root, upstream.url))
    upstream.root_delay = 1.0  # every probe arrives while the first check waits on the upstream
    before = sum(h["path"] == "/" for h in upstream.seen)
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: get(srv.url + "/-/ready")[0], range(12)))
    assert answers == [200] * 12
    assert sum(h["path"] == "/" for h in upstream.seen) - before == 1


# -- bearer files rotate -------------------------------------------------------------------
def test_rotated_bearer_file_is_used_without_restart(tmp_path, files, start):
    pool = Upstream(files, token=TOKEN_A)  # checks the token
    door = Upstream(files, redirect_to=pool.url)  # sends every read to the pool, as a dCache door
    try:
        srv = start(deployment(tmp_path, files, door.url, upstream=f'redirect_hosts = ["127.0.0.1:{pool.server.port}"]'))
        assert get(srv.url + "/up/a.bin")[0] == 200
        pool.token = TOKEN_B  # the macaroon was rotated at the pool ...
        assert get(srv.url + "/up/a.bin")[0] == 502  # ... and the old one no longer reads
        (tmp_path / "macaroon.new").write_text(TOKEN_B + "\n")
        os.replace(tmp_path / "macaroon.new", tmp_path / "macaroon")  # ... and in the file
        deadline = time.monotonic() + 30
        while get(srv.url + "/up/a.bin")[0] != 200:  # re-read within a few seconds
            assert time.monotonic() < deadline, "the rotated bearer file was never re-read"
            time.sleep(0.2)
        assert pool.seen[-1]["Authorization"] == f"Bearer {TOKEN_B}"
        assert srv.proc.poll() is None  # no restart
        srv.settle()
        assert TOKEN_B not in "".join(srv.log)
    finally:
        pool.stop()
        door.stop()


# -- SIGTERM drains --------------------------------------------------------------------------
def _slow_read(url: str, into: dict, started: threading.Event) -> None:
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.request("GET", "/up/slow.bin")
    resp = conn.getresponse()
    into["status"] = resp.status
    got = resp.read(SLOW_PIECE // 4)
    started.set()
    while True:
        piece = resp.read(65536)
        if not piece:
            break
        got += piece
    into["body"] = got


def _refused(url: str) -> bool:
    host, port = url.split("//")[1].split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_lets_requests_in_flight_finish(tmp_path, upstream, start, workers):
    srv = start(deployment(tmp_path, upstream.root, upstream.url, server="drain_seconds = 30"), "--workers", str(workers))
    result: dict = {}
    started = threading.Event()
    reader = threading.Thread(target=_slow_read, args=(srv.url, result, started))
    reader.start()
    assert started.wait(30)
    srv.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    while not _refused(srv.url):  # the listening socket goes first
        assert time.monotonic() < deadline, "new connections were still accepted"
        time.sleep(0.05)
    reader.join(60)
    assert result["status"] == 200 and len(result["body"]) == SLOW_SIZE  # the slow read completed
    srv.proc.wait(30)  # and then the process ended


def test_sigterm_drain_is_bounded(tmp_path, upstream, start):
    upstream.slow_delay = 5.0  # the read would take a minute
    srv = start(deployment(tmp_path, upstream.root, upstream.url, server="drain_seconds = 1"))
    result: dict = {}
    started = threading.Event()
    reader = threading.Thread(target=_slow_read, args=(srv.url, result, started), daemon=True)
    reader.start()
    assert started.wait(30)
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(15)  # raises if the drain outlived its bound by far
    reader.join(30)
    assert len(result.get("body", b"")) < SLOW_SIZE  # cut off, not completed


# -- Cache-Control, ETag, Vary -------------------------------------------------------------------
def test_cache_control_per_mount_on_file_answers_only(tmp_path, upstream, start):
    extra_loc = 'cache_control = "public, max-age=3600"\n'
    conf = deployment(tmp_path, upstream.root, upstream.url)
    text = conf.read_text().replace(f'source = "{upstream.root}"\n', f'source = "{upstream.root}"\n{extra_loc}', 1)
    conf.write_text(text)
    srv = start(conf)
    status, headers, _ = get(srv.url + "/loc/a.bin")
    assert status == 200 and headers["Cache-Control"] == "public, max-age=3600"
    status, headers, _ = get(srv.url + "/loc/a.bin", {"If-None-Match": headers["ETag"]})
    assert status == 304 and headers["Cache-Control"] == "public, max-age=3600"
    assert get(srv.url + "/loc/a.bin", {"Range": "bytes=0-9"})[1]["Cache-Control"] == "public, max-age=3600"
    assert get(srv.url + "/loc/sub/")[1]["Cache-Control"] == "no-cache"  # a listing is not data
    assert "Cache-Control" not in get(srv.url + "/loc/missing")[1]  # nor is an error
    assert get(srv.url + "/-/health")[1]["Cache-Control"] == "no-store"
    assert "Cache-Control" not in get(srv.url + "/up/a.bin")[1]  # another mount: none set


def test_cache_control_must_be_one_header_line(tmp_path, upstream):
    from server.config import ConfigError
    from server.config_file import load_config

    conf = deployment(tmp_path, upstream.root, upstream.url)
    conf.write_text(conf.read_text().replace('name = "loc"\n', 'name = "loc"\ncache_control = "a\\nb"\n'))
    with pytest.raises(ConfigError, match="cache_control .* is not a header value"):
        load_config(conf).validate()


@pytest.mark.parametrize("server, mount, words", [
    ('log_format = "xml"', "", "log format 'xml' is not one of text, json"),
    ('metrics = "everyone"', "", "metrics 'everyone' is not one of public, users, off"),
    ("drain_seconds = -1", "", "drain_seconds must be between 0 and 3600"),
    ('metrics = "users"', "", "metrics = 'users' but there are no [[users]]"),
    ("", 'access = "token"\ncache_control = "max-age=60, Public"', "cache_control says public"),
])
def test_operations_settings_are_checked(tmp_path, upstream, server, mount, words):
    from server.config import ConfigError
    from server.config_file import load_config

    conf = deployment(tmp_path, upstream.root, upstream.url, server=server)
    conf.write_text(conf.read_text().replace('name = "loc"\n', f'name = "loc"\n{mount}\n'))
    with pytest.raises(ConfigError) as err:
        load_config(conf).validate()
    assert words in str(err.value)


def test_upstream_etags_pass_through(tmp_path, upstream, start):
    srv = start(deployment(tmp_path, upstream.root, upstream.url))
    for name in ("a.bin", "info"):  # proxied, and cached metadata
        _, up_headers, _ = get(upstream.url + "/" + name, {"Authorization": f"Bearer {TOKEN_A}"})
        status, headers, _ = get(srv.url + "/up/" + name)
        assert status == 200 and headers["ETag"] == up_headers["ETag"], name
        assert get(srv.url + "/up/" + name, {"If-None-Match": up_headers["ETag"]})[0] == 304


def test_vary_accept_encoding_where_gzip_static_varies(tmp_path, upstream, start):
    srv = start(deployment(tmp_path, upstream.root, upstream.url), "--cors-origin", "https://app.example.org")
    status, headers, body = get(srv.url + "/loc/plain.json", {"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in headers.get_all("Vary")
    status, headers, body = get(srv.url + "/loc/plain.json", {"Accept-Encoding": "identity"})
    assert body == b'{"x": 1}' and "Content-Encoding" not in headers
    assert "Accept-Encoding" in headers.get_all("Vary")  # a shared cache must not hand this to gzip clients
    assert "Origin" in headers.get_all("Vary")  # origins restricted: the CORS answer varies too
    assert "Accept-Encoding" not in get(srv.url + "/loc/a.bin")[1].get_all("Vary")  # no .gz: nothing varies


def test_view_chunk_cache_and_view_requests_are_counted(tmp_path, upstream, start):
    import numpy as np
    import tensorstore as ts

    data = tmp_path / "vol"
    data.mkdir()
    ts.open({"driver": "zarr", "kvstore": f"file://{data}/img.zarr", "metadata": {"shape": [8, 8, 8],
             "chunks": [8, 8, 8], "dtype": "|u1"}}, create=True).result().write(
        np.arange(512, dtype=np.uint8).reshape(8, 8, 8)).result()
    conf = deployment(tmp_path, data, upstream.url)
    srv = start(conf)
    status, _, body = get(srv.url + "/-/precomputed/loc/img.zarr/info")
    assert status == 200
    scale = json.loads(body)["scales"][0]
    size = scale["size"]
    chunk = f"{srv.url}/-/precomputed/loc/img.zarr/{scale['key']}/0-{size[0]}_0-{size[1]}_0-{size[2]}"
    assert get(chunk)[0] == 200
    assert get(chunk)[0] == 200
    srv.settle()  # requests are counted as they are logged, once their answer is out
    samples = scrape(srv)
    assert value(samples, "ngserve_cache_misses_total", cache="view_chunks") == 1
    assert value(samples, "ngserve_cache_hits_total", cache="view_chunks") == 1
    assert value(samples, "ngserve_cache_bytes", cache="view_chunks") >= 512
    assert value(samples, "ngserve_requests_total", kind="view", status="200") == 3
