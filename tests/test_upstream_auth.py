"""Upstream authentication and the chunk cache, end to end against real servers on loopback.

The WebDAV tests cover basic auth; this file covers the rest of what a remote
mount can be told in ``[mounts.upstream]``:

- a bearer token (``bearer_file`` / ``bearer_env``), checked by a small aiohttp
  static-file upstream that honours Range;
- an X.509 client certificate (``client_cert`` / ``client_key`` / ``ca_file``)
  against an HTTPS upstream with ``ssl.CERT_REQUIRED``, using a throwaway CA
  made here with ``cryptography``, and an X.509 door that redirects reads to a
  pool (``redirect_hosts``): the certificate goes to a listed pool only;
- the chunk cache (``chunk_cache_bytes``), by counting the upstream's requests.

tensorstore reads through ``ngserve serve --config`` and must see arrays equal
to the source.
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import os
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
from aiohttp import web

from conftest import ServerProcess
from threaded_app import ThreadedApp
from http_get import get

TOKEN = "macaroon-MDAxY2xvY2F0aW9uIG5nc2VydmUK-right"
WRONG_TOKEN = "macaroon-MDAxY2xvY2F0aW9uIG5nc2VydmUK-wrong"


# -- the upstream -----------------------------------------------------------------------
class Upstream:
    """A static-file aiohttp server on 127.0.0.1, in a thread with its own event loop.

    With ``token`` it answers 401 unless ``Authorization: Bearer <token>``; with
    ``ssl_context`` it speaks HTTPS; with ``redirect_to`` (an origin) it answers
    every GET/HEAD with a 302 to the same path there, as a dCache door sends
    reads to a pool.  aiohttp's FileResponse gives Range, ETag and the
    conditional headers.  ``requests`` records (method, path, Range, status,
    client certificate CN) for every request that got past TLS.
    """

    def __init__(self, root: Path, token: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 redirect_to: str | None = None) -> None:
        self.root, self.token, self.redirect_to = root.resolve(), token, redirect_to
        self.requests: list[tuple[str, str, str | None, int, str | None]] = []
        self.lock = threading.Lock()
        app = web.Application()
        app.on_response_prepare.append(self._record)
        app.router.add_route("*", "/{path:.*}", self._file)
        self.server = ThreadedApp(app, ssl_context)
        self.url = self.server.url

    async def _record(self, request: web.Request, response: web.StreamResponse) -> None:
        # on_response_prepare, not a middleware: FileResponse settles 200 vs 206 only as it is prepared.
        cert = request.transport.get_extra_info("peercert") if request.transport else None
        cn = None
        if cert:
            cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), None)
        with self.lock:
            self.requests.append((request.method, request.path, request.headers.get("Range"), response.status, cn))

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if self.token is not None:
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {self.token}".encode()):
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="upstream"'})
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        if self.redirect_to is not None:
            raise web.HTTPFound(self.redirect_to + request.path)
        path = (self.root / request.match_info["path"]).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    def gets(self, prefix: str, method: str | None = "GET") -> list[tuple]:
        """Recorded requests (GETs unless told; None: any method) whose path starts with ``prefix``."""
        with self.lock:
            return [r for r in self.requests if method in (None, r[0]) and r[1].startswith(prefix)]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def stop(self) -> None:
        self.server.stop()


# -- data -------------------------------------------------------------------------------
def _blobs(shape, dtype, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    image = np.exp(-sum((g - rng.uniform(-0.5, 0.5)) ** 2 for g in grids) * 4) + rng.normal(0, 0.05, shape)
    scale = min(np.iinfo(dtype).max, 60000) if np.issubdtype(dtype, np.integer) else 1.0
    return np.clip(image * scale, 0, scale).astype(dtype)


def make_datasets(root: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Zarr v2 (chunked, blosc), sharded zarr3 and sharded precomputed; name -> (driver, data)."""
    zarr2 = _blobs((37, 70, 91), np.uint16, 1)  # odd shape: edge chunks are partial
    zarr3 = (_blobs((40, 64, 50), np.uint32, 2) // 1000).astype(np.uint64)
    pre = (_blobs((64, 64, 40, 1), np.uint16, 5) // 5000).astype(np.uint32)
    specs = {
        "img.zarr": ("zarr", zarr2, {"metadata": {
            "shape": list(zarr2.shape), "dtype": "<u2", "chunks": [16, 32, 32], "dimension_separator": "/",
            "compressor": {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2}}}),
        "seg.zarr3": ("zarr3", zarr3, {"metadata": {
            "shape": list(zarr3.shape), "data_type": "uint64",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [32, 32, 32]}},
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [16, 16, 16],
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                           {"name": "gzip", "configuration": {"level": 3}}]}}]}}),
        "pre_sharded": ("neuroglancer_precomputed", pre, {
            "multiscale_metadata": {"type": "segmentation", "data_type": "uint32", "num_channels": 1},
            "scale_metadata": {"resolution": [8, 8, 8], "encoding": "raw", "chunk_size": [16, 16, 16],
                               "size": list(pre.shape[:3]),
                               "sharding": {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0,
                                            "hash": "identity", "minishard_bits": 2, "shard_bits": 1,
                                            "minishard_index_encoding": "gzip", "data_encoding": "gzip"}}}),
    }
    out = {}
    for name, (driver, data, extra) in specs.items():
        spec = {"driver": driver, "kvstore": {"driver": "file", "path": f"{root / name}/"}, **extra}
        ts.open(spec, create=True, delete_existing=True).result().write(data).result()
        out[name] = (driver, data)
    return out


def read_through(url: str, driver: str) -> np.ndarray:
    return ts.open({"driver": driver, "kvstore": url}, read=True).result().read().result()




def assert_short_reason(body: bytes, *words: str) -> None:
    """A one-line plain reason naming the problem: no traceback, no HTML page."""
    text = body.decode()
    assert text.count("\n") <= 1 and len(text) < 120, text
    assert "Traceback" not in text and "<" not in text, text
    for word in words:
        assert word in text, text


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    return root, make_datasets(root)


# -- 1. bearer token --------------------------------------------------------------------
@pytest.fixture(scope="module")
def bearer(data_root, tmp_path_factory):
    root, datasets = data_root
    upstream = Upstream(root, token=TOKEN)
    conf = tmp_path_factory.mktemp("bearer-conf")
    (conf / "macaroon").write_text(TOKEN + "\n")  # the trailing newline of `echo ... > file` is not part of it
    (conf / "ngserve.toml").write_text(f"""
[[mounts]]
name = "byfile"
source = "{upstream.url}/"
[mounts.upstream]
bearer_file = "macaroon"

[[mounts]]
name = "byenv"
source = "{upstream.url}/"
[mounts.upstream]
bearer_env = "TEST_UPSTREAM_TOKEN"

[[mounts]]
name = "wrong"
source = "{upstream.url}/"
[mounts.upstream]
bearer_env = "TEST_WRONG_TOKEN"
retries = 0
""")
    env = dict(os.environ, TEST_UPSTREAM_TOKEN=TOKEN, TEST_WRONG_TOKEN=WRONG_TOKEN)
    srv = None
    try:
        srv = ServerProcess(["serve", "--config", str(conf / "ngserve.toml"), "--port", "0"], env=env)
        yield srv, upstream, datasets
    finally:
        if srv is not None:
            srv.stop()
        upstream.stop()


@pytest.mark.parametrize("mount", ["byfile", "byenv"])
@pytest.mark.parametrize("name", ["img.zarr", "seg.zarr3", "pre_sharded"])
def test_bearer_mount_reads_equal_source(bearer, mount, name):
    srv, upstream, datasets = bearer
    driver, data = datasets[name]
    upstream.clear()
    got = read_through(f"{srv.url}/{mount}/{name}/", driver)
    assert got.dtype == data.dtype and got.shape == data.shape
    np.testing.assert_array_equal(got, data)
    seen = upstream.gets(f"/{name}/")
    # Every upstream read carried the token (none was refused) and got data back.
    assert seen and all(status in (200, 206, 304) for _, _, _, status, _ in seen), [r for r in seen if r[3] not in (200, 206, 304)]
    if name != "img.zarr":
        # Sharded data is read by byte ranges of the shard files, forwarded upstream.
        assert any(rng and status == 206 for _, _, rng, status, _ in seen), seen


def test_bearer_range_and_head_pass_through(bearer, data_root):
    srv, _, _ = bearer
    root, _ = data_root
    shard = next(p for p in (root / "seg.zarr3" / "c").rglob("*") if p.is_file())
    whole = shard.read_bytes()
    rel = shard.relative_to(root).as_posix()
    status, headers, body = get(f"{srv.url}/byfile/{rel}", {"Range": "bytes=5-104"})
    assert status == 206 and body == whole[5:105]
    assert headers["Content-Range"] == f"bytes 5-104/{len(whole)}"
    status, headers, body = get(f"{srv.url}/byfile/{rel}", {"Range": "bytes=-16"})  # tensorstore's shard index read
    assert status == 206 and body == whole[-16:]
    status, headers, body = get(f"{srv.url}/byfile/{rel}", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(whole) and body == b""


def test_wrong_bearer_token_is_502_and_no_token_leaks(bearer):
    srv, upstream, _ = bearer
    upstream.clear()
    answers = []
    for path in ["/wrong/img.zarr/.zarray", "/wrong/img.zarr/0/0/0", "/wrong/seg.zarr3/c/0/0/0"]:
        status, headers, body = get(srv.url + path)
        assert status == 502, (path, status, body)
        assert_short_reason(body, "credentials")
        answers.append((headers, body))
    # The upstream really was asked, with the wrong token, and said 401.
    assert upstream.gets("/") and all(r[3] == 401 for r in upstream.gets("/"))
    for path in ["/byfile/img.zarr/.zarray", "/byenv/img.zarr/0/0/0", "/byfile/nope", "/-/health", "/byfile/"]:
        answers.append(get(srv.url + path)[1:])
    srv.settle()
    assert srv.requested(r'"GET /wrong/img\.zarr/0/0/0 .* 502 ')  # the lines checked below are there
    assert srv.requested(r'"GET /byenv/img\.zarr/0/0/0 .* 200 ')
    for secret in (TOKEN, WRONG_TOKEN, "MDAxY2xvY2F0aW9uIG5nc2VydmUK"):
        for headers, body in answers:
            assert secret.encode() not in body and secret not in str(headers)
        assert not any(secret in line for line in srv.log + srv.stdout)


# -- 2. X.509 client certificate ---------------------------------------------------------
def make_pki(folder: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject, key, issuer, issuer_key, ca: bool, extensions=()):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                              content_commitment=False, key_encipherment=False,
                                              data_encipherment=False, key_agreement=False,
                                              encipher_only=False, decipher_only=False), critical=True)
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                critical=False)
        for ext in extensions:
            b = b.add_extension(ext, critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(path: Path, *items, passphrase: bytes | None = None) -> Path:
        encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                      else serialization.NoEncryption())
        parts = []
        for item in items:
            if isinstance(item, x509.Certificate):
                parts.append(item.public_bytes(serialization.Encoding.PEM))
            else:
                parts.append(item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                encryption))
        path.write_bytes(b"".join(parts))
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert(name("ngserve test CA"), ca_key, name("ngserve test CA"), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = cert(name("localhost"), server_key, ca.subject, ca_key, ca=False, extensions=[
        x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = cert(name("ngserve-door-client"), client_key, ca.subject, ca_key, ca=False,
                  extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])
    # A second CA that signs an otherwise valid client certificate the upstream must not accept.
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_ca = cert(name("rogue CA"), rogue_key, name("rogue CA"), rogue_key, ca=True)
    rogue_client_key = ec.generate_private_key(ec.SECP256R1())
    rogue = cert(name("ngserve-door-client"), rogue_client_key, rogue_ca.subject, rogue_key, ca=False,
                 extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])])
    return {
        "ca": write(folder / "ca.pem", ca),
        "server_cert": write(folder / "server.pem", server),
        "server_key": write(folder / "server.key", server_key),
        "client_cert": write(folder / "client.pem", client),
        "client_key": write(folder / "client.key", client_key),
        "rogue_cert": write(folder / "rogue.pem", rogue),
        "rogue_key": write(folder / "rogue.key", rogue_client_key),
        "combined": write(folder / "combined.pem", client, client_key),  # one file, no client_key
        "encrypted_key": write(folder / "encrypted.key", client_key, passphrase=b"pass phrase"),
    }


def requiring_client_certificates(pki: dict[str, Path]) -> ssl.SSLContext:
    """An upstream's TLS: our test CA's server certificate, and a client certificate from that CA required."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"]))
    ctx.load_cert_chain(pki["server_cert"], pki["server_key"])
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@pytest.fixture(scope="module")
def x509_deployment(data_root, tmp_path_factory):
    root, datasets = data_root
    conf = tmp_path_factory.mktemp("x509-conf")
    pki = make_pki(conf)
    upstream = Upstream(root, ssl_context=requiring_client_certificates(pki))
    (conf / "ngserve.toml").write_text(f"""
[[mounts]]
name = "door"
source = "{upstream.url}/"
[mounts.upstream]
client_cert = "client.pem"
client_key = "client.key"
ca_file = "ca.pem"

[[mounts]]
name = "combined"
source = "{upstream.url}/"
[mounts.upstream]
client_cert = "combined.pem"
ca_file = "ca.pem"

[[mounts]]
name = "nocert"
source = "{upstream.url}/"
[mounts.upstream]
ca_file = "ca.pem"

[[mounts]]
name = "rogue"
source = "{upstream.url}/"
[mounts.upstream]
client_cert = "rogue.pem"
client_key = "rogue.key"
ca_file = "ca.pem"

[[mounts]]
name = "untrusted"
source = "{upstream.url}/"
[mounts.upstream]
client_cert = "client.pem"
client_key = "client.key"
""")
    srv = None
    try:
        srv = ServerProcess(["serve", "--config", str(conf / "ngserve.toml"), "--port", "0"])
        yield srv, upstream, datasets, pki
    finally:
        if srv is not None:
            srv.stop()
        upstream.stop()


@pytest.mark.parametrize("mount", ["door", "combined"])
@pytest.mark.parametrize("name", ["img.zarr", "seg.zarr3", "pre_sharded"])
def test_client_certificate_mount_reads_equal_source(x509_deployment, mount, name):
    srv, upstream, datasets, _ = x509_deployment
    driver, data = datasets[name]
    upstream.clear()
    got = read_through(f"{srv.url}/{mount}/{name}/", driver)
    assert got.dtype == data.dtype and got.shape == data.shape
    np.testing.assert_array_equal(got, data)
    seen = upstream.gets(f"/{name}/")
    # Every request reached the upstream over TLS with our client certificate.
    assert seen and all(cn == "ngserve-door-client" for *_, cn in seen), seen
    if name != "img.zarr":
        assert any(rng and status == 206 for _, _, rng, status, _ in seen), seen


def test_upstream_really_requires_the_client_certificate(x509_deployment):
    """The upstream itself refuses a TLS client without a certificate (so the next test means something)."""
    _, upstream, _, pki = x509_deployment
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        with urllib.request.urlopen(f"{upstream.url}/img.zarr/.zarray", context=ctx, timeout=10) as r:
            r.read()
    ctx.load_cert_chain(pki["client_cert"], pki["client_key"])
    with urllib.request.urlopen(f"{upstream.url}/img.zarr/.zarray", context=ctx, timeout=10) as r:
        assert r.status == 200


@pytest.mark.parametrize("mount, words, hint", [
    ("nocert", ["TLS", "client certificate"], "client_cert"),  # no client certificate: the upstream hangs up
    ("rogue", ["TLS", "client certificate"], "client_cert"),  # a certificate from a CA the upstream distrusts
    ("untrusted", ["TLS certificate not trusted"], "ca_file"),  # we cannot verify the upstream (no ca_file)
])
def test_tls_refusals_are_502_with_a_short_reason(x509_deployment, mount, words, hint):
    srv, upstream, _, _ = x509_deployment
    upstream.clear()
    seen = len(srv.log)
    for path in [f"/{mount}/img.zarr/.zarray", f"/{mount}/img.zarr/0/0/0"]:
        status, _, body = get(srv.url + path)
        assert status == 502, (path, status, body)
        assert_short_reason(body, *words)
    assert upstream.gets("/", method=None) == []  # nothing got past the handshake
    srv.settle()
    assert any(f"mount '{mount}'" in line and hint in line for line in srv.log[seen:]), srv.log[seen:]
    # The mount with the right certificate is unaffected.
    assert get(f"{srv.url}/door/img.zarr/.zarray")[0] == 200


@pytest.fixture(scope="module")
def x509_door_and_pool(data_root, tmp_path_factory):
    """An X.509 door that redirects every read to a pool on another port, both requiring our certificate."""
    root, datasets = data_root
    conf = tmp_path_factory.mktemp("x509-pool-conf")
    pki = make_pki(conf)
    pool = Upstream(root, ssl_context=requiring_client_certificates(pki))
    door = Upstream(root, ssl_context=requiring_client_certificates(pki), redirect_to=pool.url)
    mount = ('[[mounts]]\nname = "{}"\nsource = "' + door.url + '/"\n[mounts.upstream]\n'
             'client_cert = "client.pem"\nclient_key = "client.key"\nca_file = "ca.pem"\n')
    (conf / "ngserve.toml").write_text(mount.format("listed") + 'redirect_hosts = ["127.0.0.1"]\n\n'
                                       + mount.format("unlisted"))
    srv = None
    try:
        srv = ServerProcess(["serve", "--config", str(conf / "ngserve.toml"), "--port", "0"])
        yield srv, door, pool, datasets
    finally:
        if srv is not None:
            srv.stop()
        door.stop()
        pool.stop()


def test_redirect_to_a_listed_pool_reads_with_the_client_certificate(x509_door_and_pool):
    srv, door, pool, datasets = x509_door_and_pool
    door.clear()
    pool.clear()
    driver, data = datasets["seg.zarr3"]
    np.testing.assert_array_equal(read_through(f"{srv.url}/listed/seg.zarr3/", driver), data)
    sent, served = door.gets("/seg.zarr3/"), pool.gets("/seg.zarr3/")
    assert sent and all(status == 302 for _, _, _, status, _ in sent), sent
    assert len(served) == len(sent) and all(cn == "ngserve-door-client" for *_, cn in served), served
    assert any(rng and status == 206 for _, _, rng, status, _ in served), served  # shard reads by Range


def test_redirect_to_an_unlisted_pool_never_reaches_it(x509_door_and_pool):
    srv, door, pool, _ = x509_door_and_pool
    pool.clear()
    status, _, body = get(f"{srv.url}/unlisted/seg.zarr3/zarr.json")
    assert status == 502 and body == b"502 upstream redirected to a host not in redirect_hosts\n"
    assert door.gets("/seg.zarr3/zarr.json")  # the door was asked and redirected
    assert pool.gets("/", method=None) == []  # we never talked to the pool: no certificate went there


@pytest.mark.parametrize("setting, key, words", [
    ('client_cert = "client.pem"\nclient_key = "encrypted.key"', "client_key", ["encrypted", "decrypt"]),
    ('client_cert = "client.pem"\nclient_key = "rogue.key"', "client_key", ["cannot load", "matching"]),
    ('client_cert = "client.key"', "client_cert", ["cannot load", "PEM"]),
    ('ca_file = "notes.txt"', "ca_file", ["cannot load", "PEM"]),
])
def test_unloadable_tls_files_stop_start_up(tmp_path, setting, key, words):
    """A bad certificate, key or CA bundle is a config error at start-up, not a 500 on every request.

    An encrypted key must be refused, never prompted for: the server is detached
    from any terminal here, so a prompt would fail rather than hang the test.
    """
    import subprocess
    import sys

    make_pki(tmp_path)
    (tmp_path / "notes.txt").write_text("not a certificate\n")
    conf = tmp_path / "ngserve.toml"
    conf.write_text(f'[[mounts]]\nname = "door"\nsource = "https://127.0.0.1:9/"\n[mounts.upstream]\n{setting}\n')
    done = subprocess.run([sys.executable, "-m", "server", "serve", "--config", str(conf), "--port", "0"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          start_new_session=True)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"mounts[0].upstream.{key}:" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]


# -- 3. the chunk cache -----------------------------------------------------------------
@pytest.fixture(scope="module")
def cache_deployment(data_root, tmp_path_factory):
    root, datasets = data_root
    files = root / "files"
    files.mkdir()
    rng = np.random.default_rng(11)
    sizes = {"a.bin": 3000, "b.bin": 5000}
    for name, size in sizes.items():
        (files / name).write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    upstream = Upstream(root, token=TOKEN)
    conf = tmp_path_factory.mktemp("cache-conf")
    (conf / "macaroon").write_text(TOKEN)
    chunk_files = [p for p in (root / "img.zarr").rglob("*") if p.is_file() and not p.name.startswith(".")]
    total = sum(p.stat().st_size for p in chunk_files)
    mounts = {
        "roomy": total + 4096,  # every chunk of img.zarr fits
        "tiny": max(p.stat().st_size for p in chunk_files),  # the largest chunk, no more
        "fits2": sizes["a.bin"] + sizes["b.bin"],  # a.bin and b.bin together, exactly
        "fits1": sizes["a.bin"] + sizes["b.bin"] - 1,  # one byte short of both
        "nocache": 0,
    }
    text = ""
    for name, budget in mounts.items():
        text += (f'[[mounts]]\nname = "{name}"\nsource = "{upstream.url}/"\n[mounts.upstream]\n'
                 f'bearer_file = "macaroon"\nmetadata_ttl = "1h"\nchunk_cache_bytes = {budget}\n\n')
    (conf / "ngserve.toml").write_text(text)
    srv = None
    try:
        srv = ServerProcess(["serve", "--config", str(conf / "ngserve.toml"), "--port", "0"])
        yield srv, upstream, datasets, root, chunk_files, mounts
    finally:
        if srv is not None:
            srv.stop()
        upstream.stop()


def _chunk_gets(upstream: Upstream) -> list[str]:
    return [path for _, path, _, _, _ in upstream.gets("/img.zarr/") if not path.rsplit("/", 1)[-1].startswith(".")]


def test_repeated_chunk_reads_reach_upstream_once(cache_deployment):
    srv, upstream, datasets, _, chunk_files, _ = cache_deployment
    driver, data = datasets["img.zarr"]
    upstream.clear()
    np.testing.assert_array_equal(read_through(f"{srv.url}/roomy/img.zarr/", driver), data)
    first = _chunk_gets(upstream)
    assert sorted(first) == sorted(set(first)) and len(first) == len(chunk_files), first
    for _ in range(2):
        np.testing.assert_array_equal(read_through(f"{srv.url}/roomy/img.zarr/", driver), data)
    assert _chunk_gets(upstream) == first  # the second and third reads were served from the cache
    # Without a cache every read goes upstream again (so the counts above mean something).
    upstream.clear()
    for _ in range(2):
        np.testing.assert_array_equal(read_through(f"{srv.url}/nocache/img.zarr/", driver), data)
    assert len(_chunk_gets(upstream)) == 2 * len(chunk_files)


def test_a_tiny_budget_evicts(cache_deployment):
    srv, upstream, datasets, _, chunk_files, mounts = cache_deployment
    driver, data = datasets["img.zarr"]
    upstream.clear()
    np.testing.assert_array_equal(read_through(f"{srv.url}/tiny/img.zarr/", driver), data)
    assert len(_chunk_gets(upstream)) == len(chunk_files)
    np.testing.assert_array_equal(read_through(f"{srv.url}/tiny/img.zarr/", driver), data)
    # The budget holds at most this many chunks, so every other chunk must have been asked for again.
    smallest = min(p.stat().st_size for p in chunk_files)
    room = mounts["tiny"] // smallest
    again = len(_chunk_gets(upstream)) - len(chunk_files)
    assert len(chunk_files) - room <= again <= len(chunk_files), (again, room)
    # Still a cache, not none: one chunk read twice in a row goes upstream at most once.
    chunk = f"{srv.url}/tiny/{chunk_files[0].relative_to(chunk_files[0].parents[3]).as_posix()}"
    assert get(chunk)[0] == 200
    upstream.clear()
    assert get(chunk)[2] == chunk_files[0].read_bytes()
    assert _chunk_gets(upstream) == []


@pytest.mark.parametrize("mount, expected", [("fits2", 2), ("fits1", 4), ("nocache", 4)])
def test_budget_is_counted_in_bytes(cache_deployment, mount, expected):
    """a, b, a, b: with room for both exactly, two upstream reads; one byte less, every read misses."""
    srv, upstream, _, root, _, _ = cache_deployment
    upstream.clear()
    for name in ["a.bin", "b.bin", "a.bin", "b.bin"]:
        status, _, body = get(f"{srv.url}/{mount}/files/{name}")
        assert status == 200 and body == (root / "files" / name).read_bytes()
    assert len(upstream.gets("/files/")) == expected, upstream.gets("/files/")


def test_range_reads_through_the_cache(cache_deployment):
    srv, upstream, _, root, _, _ = cache_deployment
    whole = (root / "files" / "a.bin").read_bytes()
    url = f"{srv.url}/fits2/files/a.bin"
    status, headers, body = get(url)  # whole file: now cached
    assert status == 200 and body == whole
    etag = headers["ETag"]
    upstream.clear()
    status, headers, body = get(url, {"Range": "bytes=100-1099"})
    assert status == 206 and body == whole[100:1100]
    assert headers["Content-Range"] == f"bytes 100-1099/{len(whole)}" and int(headers["Content-Length"]) == 1000
    status, headers, body = get(url, {"Range": "bytes=-16"})
    assert status == 206 and body == whole[-16:] and headers["Content-Range"] == f"bytes {len(whole) - 16}-{len(whole) - 1}/{len(whole)}"
    status, headers, body = get(url, {"Range": f"bytes={len(whole)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(whole)}"
    status, _, body = get(url, {"Range": "bytes=0-9", "If-Match": etag})
    assert status == 206 and body == whole[:10]
    assert get(url, {"Range": "bytes=0-9", "If-Match": '"another"'})[0] == 412
    assert get(url, {"If-None-Match": etag})[0] == 304
    status, headers, body = get(url, method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(whole) and body == b""
    assert upstream.gets("/files/", method=None) == []  # all of it, HEAD included, answered from the cache
    # A Range read of a file not yet cached goes upstream as a Range and comes back 206.
    shard = next(p for p in (root / "seg.zarr3" / "c").rglob("*") if p.is_file())
    rel = shard.relative_to(root).as_posix()
    status, headers, body = get(f"{srv.url}/fits2/{rel}", {"Range": "bytes=3-12"})
    assert status == 206 and body == shard.read_bytes()[3:13]
    assert [(r[2], r[3]) for r in upstream.gets(f"/{rel}")] == [("bytes=3-12", 206)]
