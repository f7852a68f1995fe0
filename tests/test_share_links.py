"""Links to protected mounts: ``ngserve link --token-ttl`` and ``/-/open`` on protected mounts.

One server with protected mounts over a real WebDAV upstream (``lab``: tokens
only; ``team``: users) and over local folders (``vault``: tokens only;
``desk``: users).  Every check reads data with tensorstore through the very
URL the viewer would get.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorstore as ts

from conftest import ServerProcess, write_config
from webdav_server import WebDAVServer

import ngstate
from server.passwords import hash_password
from server.tokens import SHARE, verify
from volumes.location import strip_scheme
from volumes.samples import write_samples

SECRET = b"share-link-secret-0123456789abcdef-0123"
ALICE = ("alice", "alice-share-pw-1")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    dav_root = tmp_path_factory.mktemp("dav")
    remote = write_samples(dav_root / "s")
    local_root = tmp_path_factory.mktemp("local")
    local = write_samples(local_root)
    # A zarr whose metadata is fine and whose only chunk is garbage: reading it fails in tensorstore.
    broken = dav_root / "s" / "broken.zarr"
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(broken) + "/"},
             "metadata": {"shape": [8, 8, 8], "chunks": [8, 8, 8], "dtype": "<u2"}},
            create=True).result().write(np.ones((8, 8, 8), np.uint16)).result()
    (broken / "0.0.0").write_bytes(b"not a blosc chunk")
    dav = WebDAVServer(dav_root)
    conf = tmp_path_factory.mktemp("conf")
    upstream = f'[mounts.upstream]\nusername = "{dav.user}"\npassword_env = "DAV_PW"\n'
    write_config(conf, SECRET, f"""
[[mounts]]
name = "lab"
source = "webdav+{dav.url}/"
access = "token"
{upstream}
[[mounts]]
name = "team"
source = "webdav+{dav.url}/"
access = "users"
{upstream}
[[mounts]]
name = "vault"
source = "{local_root}"
access = "token"

[[mounts]]
name = "desk"
source = "{local_root}"
access = "users"

[[users]]
name = "{ALICE[0]}"
password_hash = "{hash_password(ALICE[1])}"
""")
    srv = ServerProcess(["serve", "--config", str(conf / "ngserve.toml")], env=dict(os.environ, DAV_PW=dav.password))
    os.environ["DAV_PW"] = dav.password  # loading the config (for its secret) resolves every secret in it
    yield srv, conf / "ngserve.toml", remote, local
    del os.environ["DAV_PW"]
    srv.stop()
    dav.kill()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, dict, bytes]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}, data=data), timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def link(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", "link", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=180)


def source_url(layer: dict) -> str:
    src = layer["source"]
    src = src[0] if isinstance(src, list) else src  # the data; the others are meshes, properties
    return src["url"] if isinstance(src, dict) else src


def read_zarr_level(ng_url: str, level: str, driver: str = "zarr") -> np.ndarray:
    """Level ``level`` of the OME-Zarr at a layer's source URL, read by tensorstore over HTTP as given."""
    base = strip_scheme(ng_url)
    return ts.open({"driver": driver, "kvstore": {"driver": "http", "base_url": base, "path": level + "/"}},
                   read=True).result().read().result()


def read_local_level(path, level: str, driver: str = "zarr") -> np.ndarray:
    return ts.open({"driver": driver, "kvstore": {"driver": "file", "path": f"{path}/{level}/"}},
                   read=True).result().read().result()


def token_of(url: str) -> str:
    """The token of a share URL ``…/-/t/<token>/<path>``."""
    path = urllib.parse.urlsplit(strip_scheme(url)).path
    assert path.startswith("/-/t/"), url
    return path.split("/")[3]


def without_token(url: str) -> str:
    """The plain data URL under a share URL."""
    return strip_scheme(url).replace(f"/-/t/{token_of(url)}", "", 1).split("?", 1)[0]


def test_link_with_token_ttl_puts_a_scoped_token_in_every_source(site):
    srv, config, remote, local = site
    sources = [
        f"{srv.url}/lab/s/cells.ome.zarr",  # WebDAV, token-only
        f"{srv.url}/team/s/cells.ome.zarr/labels/nuclei",  # WebDAV, users
        f"{srv.url}/vault/twochannel.ome.zarr",  # local, zarr v3, token-only
        f"{srv.url}/desk/pc_seg",  # local, sharded precomputed, users
    ]
    r = link("--token-ttl", "1h", "--config", str(config), "--json", "--no-labels", *sources)
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    urls = [source_url(layer) for layer in state["layers"]]
    assert len(urls) == 4
    expected_scopes = [("lab", "s/cells.ome.zarr"), ("team", "s/cells.ome.zarr/labels/nuclei"),
                       ("vault", "twochannel.ome.zarr"), ("desk", "pc_seg")]
    for url, (mount, path) in zip(urls, expected_scopes):
        claims = verify(SECRET, token_of(url))
        assert (claims.kind, claims.mount, claims.path) == (SHARE, mount, path), url
        assert 3500 < claims.expires - time.time() <= 3600
    # The token is a path prefix, which every client keeps for every file below the source.
    assert urls[0] == f"zarr2://{srv.url}/-/t/{token_of(urls[0])}/lab/s/cells.ome.zarr/"
    assert urls[3] == f"precomputed://{srv.url}/-/t/{token_of(urls[3])}/desk/pc_seg"
    # Meshes made on demand, behind the same token.
    nuclei = urls[1]
    assert state["layers"][1]["source"][1] == (
        f"precomputed://{srv.url}/-/t/{token_of(nuclei)}/-/mesh/team/s/cells.ome.zarr/labels/nuclei")
    status, _, body = get(strip_scheme(state["layers"][1]["source"][1]) + "/info")
    assert status == 200 and json.loads(body)["@type"] == "neuroglancer_multilod_draco"
    # The same state as without tokens, apart from the source URLs: the builder read everything.
    assert state["layers"][0]["shaderControls"]["normalized"]["range"][0] >= 1000
    assert state["layers"][1]["type"] == "segmentation"
    assert neuroglancer_round_trip(state)

    # tensorstore reads the data through exactly these URLs ...
    assert np.array_equal(read_zarr_level(urls[0], "0"), read_local_level(remote["ome04"], "0"))
    assert np.array_equal(read_zarr_level(urls[1], "1"), read_local_level(remote["ome04_labels"], "1"))
    assert np.array_equal(read_zarr_level(urls[2], "0", "zarr3"), read_local_level(local["ome05"], "0", "zarr3"))
    seg = ts.open({"driver": "neuroglancer_precomputed",
                   "kvstore": {"driver": "http", "base_url": strip_scheme(urls[3])}}, read=True).result()
    want = ts.open({"driver": "neuroglancer_precomputed",
                    "kvstore": {"driver": "file", "path": str(local["pc_seg"]) + "/"}}, read=True).result()
    assert np.array_equal(seg.read().result(), want.read().result())
    # ... and not without the token, nor with a token for another mount or path.
    for url in urls:
        assert get(without_token(url) + "/zarr.json")[0] == 401
    lab_token = token_of(urls[0])
    assert get(f"{srv.url}/-/t/{lab_token}/vault/cells.ome.zarr/.zattrs")[0] == 403  # mount B
    assert get(f"{srv.url}/-/t/{lab_token}/lab/s/raw.zarr/.zarray")[0] == 403  # another dataset of mount A
    assert get(f"{srv.url}/-/t/{lab_token}/lab/s/cells.ome.zarr/.zattrs")[0] == 200
    # The same token works as ?token= too (tensorstore, curl), and a folder redirect keeps the prefix.
    assert get(f"{srv.url}/lab/s/cells.ome.zarr/.zattrs?token={lab_token}")[0] == 200
    status, headers, _ = get(f"{srv.url}/-/t/{lab_token}/lab/s/cells.ome.zarr")
    assert status == 301 and headers["Location"] == f"/-/t/{lab_token}/lab/s/cells.ome.zarr/"
    status, _, body = get(f"{srv.url}/-/t/{lab_token}/lab/s/cells.ome.zarr/")
    assert status == 200 and b'href="0/"' in body
    # The tokens never reach the access log.
    srv.settle()
    assert srv.requested(r'"GET /-/t/REDACTED/lab/s/cells\.ome\.zarr/ ')
    assert lab_token not in "".join(srv.log)


def neuroglancer_round_trip(state: dict) -> bool:
    import neuroglancer

    return neuroglancer.parse_url(neuroglancer.to_url(neuroglancer.ViewerState(state))).to_json() == \
        neuroglancer.ViewerState(state).to_json()


def test_link_without_token_cannot_read_and_secret_from_environment(site):
    srv, _, remote, _ = site
    url = f"{srv.url}/lab/s/raw.zarr"
    r = link("--json", url)
    assert r.returncode == 2 and "access denied (HTTP 401)" in r.stderr, r.stderr
    r = link("--token-ttl", "10m", "--json", url, env=dict(os.environ, NGSERVE_SECRET=SECRET.decode()))
    assert r.returncode == 0, r.stderr
    got = source_url(json.loads(r.stdout)["layers"][0])
    data = ts.open({"driver": "zarr", "kvstore": {"driver": "http", "base_url": strip_scheme(got)}},
                   read=True).result().read().result()
    want = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(remote["zarr2"]) + "/"}},
                   read=True).result().read().result()
    assert np.array_equal(data, want)
    # A wrong secret mints tokens the server refuses: a clear line, and no token in it.
    r = link("--token-ttl", "10m", url, env=dict(os.environ, NGSERVE_SECRET="not-the-server-secret-000000"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "ngs1." not in r.stderr, r.stderr
    r = link("--token-ttl", "soon", url, env=dict(os.environ, NGSERVE_SECRET=SECRET.decode()))
    assert r.returncode == 2 and "--token-ttl" in r.stderr


def test_link_gives_no_token_to_another_host(site, tmp_path):
    """A token for our server must never travel to a host that is not ours."""
    srv, config, _, local = site
    handler = functools.partial(_QuietHandler, directory=str(local["zarr2"].parent))
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    try:
        other = f"http://127.0.0.1:{plain.server_address[1]}/raw.zarr"
        r = link("--token-ttl", "1h", "--config", str(config), "--json", other, f"{srv.url}/vault/raw.zarr")
    finally:
        plain.shutdown()
    assert r.returncode == 0, r.stderr
    first, second = (source_url(layer) for layer in json.loads(r.stdout)["layers"])
    assert "/-/t/" not in first and f"{other} is not on the server" in r.stderr
    assert verify(SECRET, token_of(second)).mount == "vault"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# -- /-/open on protected mounts ---------------------------------------------------------
def login(srv) -> str:
    body = urllib.parse.urlencode({"user": ALICE[0], "password": ALICE[1], "next": "/"}).encode()
    status, headers, _ = get(srv.url + "/-/login", data=body)
    assert status == 303
    return headers["Set-Cookie"].split(";", 1)[0]


def open_state(srv, path: str, headers: dict | None = None) -> dict:
    status, h, body = get(f"{srv.url}/-/open/{path}", headers)
    assert status == 302, (status, body)
    return ngstate.parse_url(h["Location"])


@pytest.mark.parametrize("mount", ["lab", "vault"])  # WebDAV and local
def test_open_with_token_keeps_it_on_the_source(site, mount):
    srv, _, remote, local = site
    prefix = "s/" if mount == "lab" else ""
    data_path = remote["ome04"] if mount == "lab" else local["ome04"]
    from server.tokens import mint

    token = mint(SECRET, mount, prefix + "cells.ome.zarr", 600)
    assert get(f"{srv.url}/-/open/{mount}/{prefix}cells.ome.zarr")[0] == 401
    state = open_state(srv, f"{mount}/{prefix}cells.ome.zarr?token={token}")
    url = source_url(state["layers"][0])
    assert url == f"zarr2://{srv.url}/-/t/{token}/{mount}/{prefix}cells.ome.zarr/"
    assert state["layers"][0]["shaderControls"]["normalized"]["range"][0] >= 1000  # contrast was read
    assert np.array_equal(read_zarr_level(url, "2"), read_local_level(data_path, "2"))
    if mount == "lab":
        # The state was built through the server itself, with a token of its own for the dataset only.
        internal = srv.requested(rf'"GET /-/t/REDACTED/lab/s/cells\.ome\.zarr/\.zattrs HTTP.*" 200 .*'
                                 rf"token:lab/s/cells\.ome\.zarr")
        assert internal, "".join(srv.log[-20:])


@pytest.mark.parametrize("mount", ["team", "desk"])  # WebDAV and local
def test_open_with_session_cookie_needs_no_token(site, mount):
    srv, _, remote, local = site
    prefix = "s/" if mount == "team" else ""
    data_path = remote["ome04_labels"] if mount == "team" else local["ome04_labels"]
    path = f"{mount}/{prefix}cells.ome.zarr/labels/nuclei"
    cookie = login(srv)
    state = open_state(srv, path, {"Cookie": cookie})
    url = source_url(state["layers"][0])
    assert url == f"zarr2://{srv.url}/{path}/"  # same origin: the cookie goes along, no token needed
    assert state["layers"][0]["type"] == "segmentation"
    status, _, body = get(strip_scheme(url) + "0/.zarray", {"Cookie": cookie})
    assert status == 200 and json.loads(body)["dtype"]
    assert get(strip_scheme(url) + "0/.zarray")[0] == 401
    raw = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": f"{data_path}/0/"}},
                  read=True).result().read().result()
    assert raw.max() > 0
    basic = {"Authorization": "Basic " + base64.b64encode(":".join(ALICE).encode()).decode()}
    assert open_state(srv, path, basic) == state


def test_open_error_hides_tokens(site):
    """tensorstore names the URL it failed on: the message shows its path, with neither the caller's nor the
    internal token."""
    srv, *_ = site
    from server.tokens import mint

    token = mint(SECRET, "lab", "s", 600)
    status, _, body = get(f"{srv.url}/-/open/lab/s/broken.zarr?token={token}")
    assert status == 422 and b"cannot show /lab/s/broken.zarr" in body, body
    assert b"Error reading /lab/s/broken.zarr/0.0.0" in body and b"ngs1." not in body, body


def test_a_query_token_on_a_source_url_is_used_for_every_read(site):
    """volumes reads a protected http source given with ?token=: metadata, and arrays through tensorstore."""
    srv, _, remote, _ = site
    from server.tokens import mint

    token = mint(SECRET, "lab", "s/raw.zarr", 600)
    ds = ngstate.build_state([f"{srv.url}/lab/s/raw.zarr?token={token}"]).plans[0].dataset
    want = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(remote["zarr2"]) + "/"}},
                   read=True).result().read().result()
    assert np.array_equal(ds.open_level(0).read().result(), want)
    assert token not in str(ds.location) and token not in json.dumps(ds.to_json())  # kept out of messages
    with pytest.raises(ValueError, match="access denied"):
        ngstate.build_state([f"{srv.url}/lab/s/raw.zarr"])


def test_listing_under_a_share_link_opens_with_the_token(site):
    srv, _, _, _ = site
    from server.tokens import mint

    token = mint(SECRET, "vault", "", 600)
    status, _, body = get(f"{srv.url}/-/t/{token}/vault/")
    assert status == 200
    page = body.decode()
    assert f'href="/-/open/vault/cells.ome.zarr?token={token}"' in page
    assert get(f"{srv.url}/-/open/vault/cells.ome.zarr?token={token}")[0] == 302
    # Browsing without the token shows nothing of the mount.
    assert get(f"{srv.url}/vault/")[0] == 401
