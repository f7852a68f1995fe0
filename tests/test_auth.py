"""Access control per mount, against a real WebDAV upstream: the auth matrix.

Mounts: ``team`` (users; only alice), ``shared`` (tokens only), ``open``
(public), all on one wsgidav server that needs basic auth.
"""

from __future__ import annotations

import base64
import asyncio
import http.client
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

from server.passwords import hash_password, verify_password
from server.tokens import mint, mint_session

SECRET = b"test-secret-0123456789abcdef-0123456789"
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("davroot")
    (root / "run1").mkdir()
    (root / "run2").mkdir()
    data = np.arange(24 * 20 * 16, dtype=np.uint16).reshape(24, 20, 16)
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(root / "run1" / "img.zarr")},
             "metadata": {"shape": list(data.shape), "chunks": [8, 8, 8], "dtype": "<u2"}},
            create=True).result().write(data).result()
    (root / "run1" / "a.bin").write_bytes(b"run1 bytes")
    (root / "run2" / "b.bin").write_bytes(b"run2 bytes")
    dav = WebDAVServer(root)
    conf = tmp_path_factory.mktemp("conf")
    users = "".join(f'[[users]]\nname = "{n}"\npassword_hash = "{hash_password(p)}"\n\n' for n, p in PASSWORDS.items())
    upstream = f'[mounts.upstream]\nusername = "{dav.user}"\npassword_env = "DAV_PW"\n'
    write_config(conf, SECRET + b"\n", f"""
[[mounts]]
name = "team"
source = "webdav+{dav.url}/"
access = "users"
users = ["alice"]
{upstream}
[[mounts]]
name = "shared"
source = "webdav+{dav.url}/"
access = "token"
{upstream}
[[mounts]]
name = "open"
source = "webdav+{dav.url}/run2/"
{upstream}
{users}""", auth='trusted_proxies = ["127.0.0.2"]')
    srv = ServerProcess(["serve", "--config", str(conf / "ngserve.toml")], env=dict(os.environ, DAV_PW=dav.password))
    yield srv, data, conf
    srv.stop()
    dav.kill()


def get(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, data=data)
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_no_credentials_401(site):
    srv, *_ = site
    for path in ["/team/run1/a.bin", "/shared/run1/a.bin", "/team/", "/-/open/team/run1/img.zarr"]:
        status, headers, body = get(srv.url + path)
        assert status == 401, path
        assert "Bearer" in headers["WWW-Authenticate"]
    assert get(srv.url + "/open/b.bin")[0] == 200


def test_wrong_password_401(site):
    srv, *_ = site
    status, _, body = get(srv.url + "/team/run1/a.bin", basic("alice", "wrong-password"))
    assert status == 401 and b"wrong user name or password" in body
    assert get(srv.url + "/team/run1/a.bin", basic("mallory", "whatever1"))[0] == 401


def test_user_basic_auth_and_user_scope(site):
    srv, *_ = site
    status, _, body = get(srv.url + "/team/run1/a.bin", basic("alice", PASSWORDS["alice"]))
    assert status == 200 and body == b"run1 bytes"
    status, _, _ = get(srv.url + "/team/run1/a.bin", basic("bob", PASSWORDS["bob"]))
    assert status == 403  # bob is a user, but not on team's list
    assert get(srv.url + "/shared/run1/a.bin", basic("alice", PASSWORDS["alice"]))[0] == 403  # token-only mount
    srv.settle()
    assert any('"GET /team/run1/a.bin' in line and "user:alice" in line for line in srv.log)


def test_token_in_query_header_and_cookie(site):
    srv, *_ = site
    token = mint(SECRET, "shared", "run1", 3600)
    url = srv.url + "/shared/run1/a.bin"
    assert get(f"{url}?token={token}")[:3:2] == (200, b"run1 bytes")
    assert get(url, {"Authorization": f"Bearer {token}"})[:3:2] == (200, b"run1 bytes")
    assert get(url, {"Cookie": f"ngserve_token={token}"})[:3:2] == (200, b"run1 bytes")
    # The same token also opens a users mount, for collaborators without an account.
    assert get(srv.url + f"/team/run1/a.bin?token={mint(SECRET, 'team', '', 60)}")[0] == 200
    srv.settle()
    assert any("token=REDACTED" in line and "token:shared/run1" in line for line in srv.log)
    assert not any(token in line for line in srv.log)  # the access log redacts it


def test_token_under_an_encoded_parameter_name_is_redacted_too(site):
    srv, *_ = site
    token = mint(SECRET, "shared", "run1", 3600)
    # ?tok%65n= decodes to ?token=, so the server accepts it; the log must hide it all the same.
    assert get(srv.url + f"/shared/run1/a.bin?tok%65n={token}&%74oken={token}")[:3:2] == (200, b"run1 bytes")
    srv.settle()
    lines = srv.requested(r"/shared/run1/a\.bin\?tok%65n=")
    assert lines and "tok%65n=REDACTED&%74oken=REDACTED" in lines[0]
    assert not any(token in line for line in srv.log)


def test_short_links_need_a_user_or_token_when_mounts_are_protected(site):
    srv, *_ = site
    state = json.dumps({"layers": [{"type": "image", "source": "zarr://http://h/a.zarr", "name": "a"}]}).encode()
    json_type = {"Content-Type": "application/json"}
    status, _, body = get(srv.url + "/-/api/states", json_type, data=state)
    assert status == 401 and b"sign in" in body
    assert get(srv.url + "/-/api/states", {**json_type, **basic("alice", "wrong-password")}, data=state)[0] == 401
    status, _, body = get(srv.url + "/-/api/states", {**json_type, **basic("bob", PASSWORDS["bob"])}, data=state)
    assert status == 201
    token = mint(SECRET, "shared", "run1", 600)
    assert get(srv.url + "/-/api/states", {**json_type, "Authorization": f"Bearer {token}"}, data=state)[0] == 201
    status, headers, _ = get(json.loads(body)["state_url"])
    assert status == 200 and headers["Cache-Control"].startswith("private,")


def test_token_outside_its_scope_403(site):
    srv, *_ = site
    token = mint(SECRET, "shared", "run1", 3600)
    assert get(srv.url + f"/shared/run2/b.bin?token={token}")[0] == 403  # other path
    assert get(srv.url + f"/shared/run1x/a.bin?token={token}")[0] == 403  # a prefix is a folder, not a string
    other = mint(SECRET, "open", "", 3600)
    assert get(srv.url + f"/shared/run1/a.bin?token={other}")[0] == 403  # token for another mount


def test_expired_and_forged_tokens_401(site):
    srv, *_ = site
    expired = mint(SECRET, "shared", "", 60, now=time.time() - 3600)
    status, _, body = get(srv.url + f"/shared/run1/a.bin?token={expired}")
    assert status == 401 and b"expired" in body and b"run1 bytes" not in body
    forged = mint(b"another-secret-entirely-0123456", "shared", "", 3600)
    status, _, body = get(srv.url + f"/shared/run1/a.bin?token={forged}")
    assert status == 401 and b"signature" in body


@pytest.mark.parametrize("payload", ['{"k":"share","e":-100000000000000000000}', '{"k":"share","e":1e999}',
                                     '{"k":"share","e":1.5}', "[" * 100000 + "]" * 100000],
                         ids=["before-year-1", "infinite", "not-whole-seconds", "deeply-nested"])
def test_a_signed_token_with_odd_claims_is_malformed_not_an_exception(payload):
    """Only our own secret signs a token, but verify must not crash on what it did not mint (found by Hypothesis)."""
    from server import tokens

    body = tokens._b64(payload.encode())
    with pytest.raises(tokens.TokenError, match="malformed token"):
        tokens.verify(SECRET, f"{tokens.PREFIX}.{body}.{tokens._sign(SECRET, body)}")


def test_login_form_sets_session_cookie(site):
    srv, *_ = site
    form = urllib.parse.urlencode({"user": "alice", "password": PASSWORDS["alice"], "next": "/team/run1/"}).encode()
    status, headers, _ = get(srv.url + "/-/login", data=form)
    assert status == 303 and headers["Location"] == "/team/run1/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    session = cookie.split(";", 1)[0]
    status, _, body = get(srv.url + "/team/run1/a.bin", {"Cookie": session})
    assert status == 200 and body == b"run1 bytes"
    bad = urllib.parse.urlencode({"user": "alice", "password": "nope-nope"}).encode()
    status, headers, body = get(srv.url + "/-/login", data=bad)
    assert status == 401 and "Set-Cookie" not in headers and b"Wrong user name or password" in body
    status, headers, _ = get(srv.url + "/-/login", data=urllib.parse.urlencode(
        {"user": "alice", "password": PASSWORDS["alice"], "next": "//evil.example/"}).encode())
    assert headers["Location"] == "/"  # no open redirect
    assert get(srv.url + "/-/login")[0] == 200


def test_session_cookie_is_secure_by_default(tmp_path):
    from aiohttp import web

    from server.auth import Authority
    from server.config import AuthConfig, ServerConfig

    resp = web.Response()
    Authority(ServerConfig(auth=AuthConfig(secret=SECRET))).session_cookie(resp, "alice")
    morsel = resp.cookies["ngserve_session"]
    assert morsel["secure"] and morsel["httponly"] and morsel["samesite"] == "Lax"


def test_session_counts_only_for_configured_users(site):
    srv, *_ = site  # trusted_proxies is set here, which once let a session name anyone
    for ghost in ("mallory", "carol-was-removed"):
        cookie = {"Cookie": f"ngserve_session={mint_session(SECRET, ghost, 3600)}"}
        assert get(srv.url + "/team/run1/a.bin", cookie)[0] == 401
        assert _get_from("127.0.0.2", srv.url + "/team/run1/a.bin", cookie)[0] == 401
    alice = {"Cookie": f"ngserve_session={mint_session(SECRET, 'alice', 3600)}"}
    assert get(srv.url + "/team/run1/a.bin", alice)[:3:2] == (200, b"run1 bytes")


def test_unknown_user_costs_a_password_check_on_the_password_pool(monkeypatch):
    from server import auth
    from server.config import AuthConfig, ServerConfig, UserConfig

    threads = []

    def counting(password, stored):
        threads.append(threading.current_thread().name)
        return verify_password(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)
    authority = auth.Authority(ServerConfig(auth=AuthConfig(secret=SECRET),
                                            users=[UserConfig("alice", hash_password(PASSWORDS["alice"]))]))

    async def attempts():
        return [await authority.check_password(u, p) for u, p in
                [("mallory", "guess-1"), ("alice", "guess-2"), ("alice", PASSWORDS["alice"])]]

    try:
        assert asyncio.run(attempts()) == [False, False, True]
    finally:
        authority.password_pool.shutdown()
    assert len(threads) == 3 and all(t.startswith("ngserve-password") for t in threads)


@pytest.mark.parametrize("public_url, host, secure, warned", [
    ("http://data.example.org", "127.0.0.1", True, True),
    (None, "0.0.0.0", True, True),
    ("https://data.example.org", "0.0.0.0", True, False),
    (None, "127.0.0.1", True, False),
    (None, "localhost", True, False),
    ("http://data.example.org", "127.0.0.1", False, False),
])
def test_insecure_cookie_warning(public_url, host, secure, warned):
    from server.auth import insecure_cookie_warning
    from server.config import AuthConfig, ServerConfig, UserConfig

    config = ServerConfig(host=host, public_url=public_url, auth=AuthConfig(secret=SECRET, cookie_secure=secure),
                          users=[UserConfig("alice", "unused")])
    assert (insecure_cookie_warning(config) is not None) == warned


def test_start_up_warns_when_login_cookies_cannot_work(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "c.toml").write_text(f"""[server]\nport = 0\npublic_url = "http://data.example.org"
[auth]\nsecret_file = "secret"
[[mounts]]\nname = "d"\nsource = "data"\naccess = "users"
[[users]]\nname = "alice"\npassword_hash = "{hash_password(PASSWORDS['alice'])}"
""")
    # The banner names the public URL, which does not resolve here: wait for it, then stop.
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--config", str(tmp_path / "c.toml")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving on http://data.example.org/" in proc.stdout.readline()
    finally:
        proc.terminate()
    err = proc.communicate(timeout=30)[1]
    assert "browsers drop the Secure session cookie" in err and "cookie_secure = false" in err


def test_listings_hide_what_you_cannot_read(site):
    srv, *_ = site
    _, _, body = get(srv.url + "/-/health")
    assert b'"mounts": ["open"]' in body
    _, _, body = get(srv.url + "/-/health", basic("alice", PASSWORDS["alice"]))
    assert b'"open"' in body and b'"team"' in body and b'"shared"' not in body
    token = mint(SECRET, "shared", "run1", 600)
    status, _, body = get(srv.url + f"/shared/?token={token}")
    assert status == 403  # the token reaches run1 only, not the mount's top listing
    status, _, body = get(srv.url + f"/shared/run1/?token={token}")
    assert status == 200 and b"a.bin" in body


def _get_from(source: str, url: str, headers: dict) -> tuple[int, bytes]:
    """GET with the connection's source address bound to ``source`` (a loopback alias)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", parts.path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_trusted_header_only_from_configured_proxy(site):
    srv, *_ = site
    url = srv.url + "/team/run1/a.bin"
    # From 127.0.0.1, which is not in trusted_proxies (127.0.0.2), the header counts for nothing.
    assert _get_from("127.0.0.1", url, {"X-Forwarded-User": "alice"})[0] == 401
    assert _get_from("127.0.0.2", url, {"X-Forwarded-User": "alice"}) == (200, b"run1 bytes")
    assert _get_from("127.0.0.2", url, {"X-Forwarded-Email": "bob@example.org"})[0] == 403
    srv.settle()
    assert any("user:alice" in line and "/team/run1/a.bin" in line and line.split()[3] == "127.0.0.2"
               for line in srv.log)


def test_tensorstore_reads_protected_mount_with_bearer_token(site):
    srv, data, _ = site
    token = mint(SECRET, "shared", "run1/img.zarr", 600)
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "http", "base_url": f"{srv.url}/shared/run1/img.zarr/",
                                                   "headers": [f"Authorization: Bearer {token}"]}}, read=True).result()
    np.testing.assert_array_equal(store.read().result(), data)


def test_token_cli_mints_what_the_server_accepts(site):
    srv, _, conf = site
    out = subprocess.run([sys.executable, "-m", "server", "token", "create", "--mount", "shared", "--path", "run1",
                          "--ttl", "1h", "--config", str(conf / "ngserve.toml")],
                         capture_output=True, text=True, env=dict(os.environ, DAV_PW="x"), check=True)
    token = out.stdout.strip()
    assert get(srv.url + f"/shared/run1/a.bin?token={token}")[0] == 200
    bad = subprocess.run([sys.executable, "-m", "server", "token", "create", "--mount", "nope",
                          "--config", str(conf / "ngserve.toml")], capture_output=True, text=True,
                         env=dict(os.environ, DAV_PW="x"))
    assert bad.returncode == 2 and "no such mount" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_token_cli_needs_no_upstream_secret(site):
    """An admin signs tokens with [auth] and the mount names: the upstream password ($DAV_PW,
    which only the server needs) may be unset where the command runs."""
    srv, _, conf = site
    env = {k: v for k, v in os.environ.items() if k != "DAV_PW"}
    out = subprocess.run([sys.executable, "-m", "server", "token", "create", "--mount", "shared", "--path", "run1",
                          "--config", str(conf / "ngserve.toml")], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert get(srv.url + f"/shared/run1/a.bin?token={out.stdout.strip()}")[0] == 200
    link = subprocess.run([sys.executable, "-m", "server", "link", "--config", str(conf / "ngserve.toml"),
                           "--token-ttl", "1h", srv.url + "/shared/run1/img.zarr"], capture_output=True, text=True, env=env)
    assert link.returncode == 0, link.stderr
    assert "/-/t/" in link.stdout


def test_encoded_token_path_never_reaches_the_log(site):
    srv, *_ = site
    token = mint(SECRET, "shared", "run1", 3600)
    # The router decodes %2D to '-', so this reaches the /-/t/ handler by a path the raw-path checks do not expect.
    status = get(srv.url + f"/%2D/t/{token}/shared/run1/a.bin")[0]
    srv.settle()
    assert srv.requested(rf'"GET /%2D/t/REDACTED/shared/run1/a\.bin HTTP/1\.1" {status} ')
    assert not any(token in line for line in srv.log)
