"""``ngserve nginx-config``: a real nginx, configured by the command, sends local files itself and
asks ngserve's ``/-/authz`` who may read them, caching allows per folder."""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import ServerProcess
from deploy import Nginx, free_port
from server.passwords import hash_password
from server.tokens import mint, mint_session
from test_replicas import request

SECRET = "verdict-test-secret-0123456789abcdef"
TTL = 2
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()}


def write_config(root: Path, users: list[str], port: int) -> Path:
    entries = "".join(f'[[users]]\nname = "{u}"\npassword_hash = "{hash_password(PASSWORDS[u], n=2**4)}"\n'
                      for u in users)
    cfg = root / f"ngserve-{'-'.join(users)}.toml"
    cfg.write_text(f"""
[server]
port = {port}
verdict_ttl = {TTL}
data_dir = "state"

[auth]
secret_file = "secret"
trusted_proxies = ["127.0.0.1"]

[[mounts]]
name = "data"
source = "data"
access = "users"

[[mounts]]
name = "team"
source = "team"
access = "token"

[[mounts]]
name = "pub"
source = "pub"
cache_control = "public, max-age=60"

[[mounts]]
name = ""
source = "top"

{entries}""")
    return cfg


def make_tree(root: Path) -> None:
    data, arr, team, pub = root / "data", root / "data" / "arr", root / "team", root / "pub"
    for d in (data, arr, team / "a", team / "b", pub, root / "top" / "sub"):
        d.mkdir(parents=True)
    (root / "top" / "sub" / "t.bin").write_bytes(b"top bytes")
    (root / "top" / ".hidden").write_text("hidden")
    (arr / "0.0").write_bytes(b"chunk 0.0")
    (arr / "0.1").write_bytes(b"chunk 0.1")
    (arr / ".zarray").write_text('{"zarr_format": 2}')
    (arr / ".secret").write_text("hidden")
    (arr / "info.gz").write_bytes(gzip.compress(b'{"type": "image"}'))  # a gzip_static sibling only
    (data / "big.bin").write_bytes(os.urandom(1 << 20))
    (root / "outside.bin").write_text("outside the root")
    (data / "out.bin").symlink_to(root / "outside.bin")
    (data / "in.bin").symlink_to(arr / "0.0")
    (team / "a" / "x.bin").write_bytes(b"x bytes")
    (team / "a" / "y.bin").write_bytes(b"y bytes")
    (team / "z.bin").write_bytes(b"z bytes")
    (pub / "p.bin").write_bytes(b"public bytes")
    (root / "secret").write_text(SECRET)


def nginx_config(cfg: Path, port: int, cache_dir: Path) -> str:
    """The command's own output, as an operator would run it."""
    return subprocess.run(
        [sys.executable, "-m", "server", "nginx-config", "--config", str(cfg), "--upstream", f"127.0.0.1:{port}",
         "--listen", "127.0.0.1:0", "--cache-dir", str(cache_dir)],
        check=True, capture_output=True, text=True, env=ENV).stdout


def start(root: Path, users: list[str]):
    port = free_port()
    cfg = write_config(root, users, port)
    server = ServerProcess(["serve", "--config", str(cfg)], env=ENV)
    text = nginx_config(cfg, port, root / "verdict-cache")
    try:
        proxy = Nginx([], http=lambda listen: text.replace("listen 127.0.0.1:0;", f"listen 127.0.0.1:{listen};"))
    except Exception:
        server.stop()
        raise
    return server, proxy, cfg, port


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdicts")
    make_tree(root)
    server, proxy, _, _ = start(root, ["alice", "bob"])
    try:
        yield server, proxy, root
    finally:
        proxy.close()
        server.stop()


def verdicts(server) -> int:
    return len(server.requested(r"GET /-/authz "))


def reached(server, path: str) -> bool:
    """Whether ngserve itself answered a request for ``path`` (not only a verdict on it)."""
    return bool(server.requested(rf"\"(GET|HEAD) {path}[ ?]"))


def test_nginx_serves_allowed_chunks_with_one_verdict_per_folder(site):
    server, proxy, _ = site
    before = verdicts(server)
    status, headers, body = request(proxy.url, "/data/arr/0.0", headers=basic("alice"))
    assert (status, body) == (200, b"chunk 0.0")
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["X-Content-Type-Options"] == "nosniff"
    assert "X-Request-ID" in headers and "ETag" in headers["Access-Control-Expose-Headers"]
    status, headers, body = request(proxy.url, "/data/arr/0.1", headers=basic("alice"))
    assert (status, body) == (200, b"chunk 0.1")
    status, headers, body = request(proxy.url, "/data/arr/.zarray", headers=basic("alice"))
    assert (status, body, headers["Content-Type"]) == (200, b'{"zarr_format": 2}', "application/json")
    assert not reached(server, "/data/arr/0.0") and not reached(server, "/data/arr/0.1")  # nginx sent them
    assert verdicts(server) - before == 1  # one verdict for the folder, reused for the other files
    # Other credentials are another cache entry: bob is asked about, and allowed, on his own.
    assert request(proxy.url, "/data/arr/0.0", headers=basic("bob"))[0] == 200
    assert verdicts(server) - before == 2


def test_without_credentials_the_client_gets_ngserves_401(site):
    server, proxy, _ = site
    status, headers, body = request(proxy.url, "/data/arr/0.0")
    assert status == 401 and body.startswith(b"401 sign in") and "WWW-Authenticate" in headers
    assert reached(server, "/data/arr/0.0")  # ngserve's own answer, with its hints
    status, _, body = request(proxy.url, "/data/arr/0.0", headers={"Authorization": "Basic " + base64.b64encode(
        b"alice:wrong").decode()})
    assert status == 401 and b"wrong user name or password" in body
    assert request(proxy.url, "/data/arr/0.0", headers=basic("alice"))[0] == 200  # denials were not cached


def test_a_token_for_one_file_reads_it_but_not_its_sibling(site):
    server, proxy, _ = site
    token = mint(SECRET.encode(), "team", "a/x.bin")
    for _ in range(2):
        status, _, body = request(proxy.url, f"/-/t/{token}/team/a/x.bin")
        assert (status, body) == (200, b"x bytes")
    status, _, body = request(proxy.url, f"/-/t/{token}/team/a/y.bin")
    assert status == 403 and body.startswith(b"403") and reached(server, "/-/t/REDACTED/team/a/y.bin")
    assert not reached(server, "/-/t/REDACTED/team/a/x.bin")
    assert request(proxy.url, f"/team/a/y.bin?token={token}")[0] == 403
    assert request(proxy.url, f"/team/a/x.bin?token={token}")[:3:2] == (200, b"x bytes")
    # A token for the folder: both files, with one verdict.
    folder = mint(SECRET.encode(), "team", "a")
    before = verdicts(server)
    for name in ("x", "y"):
        assert request(proxy.url, f"/-/t/{folder}/team/a/{name}.bin")[:3:2] == (200, name.encode() + b" bytes")
    assert verdicts(server) - before == 1
    # A cached allow for team/a/ does not stretch to a path that leaves it (nginx decodes %2F).
    assert request(proxy.url, f"/-/t/{folder}/team/a/..%2Fz.bin")[0] in (400, 403, 404)
    assert request(proxy.url, f"/-/t/{folder}/team/z.bin")[0] == 403
    assert request(proxy.url, "/team/a/x.bin", headers={"Cookie": f"ngserve_token={folder}"})[0] == 200


def test_dotfiles_and_symlinks_keep_ngserves_rules(site):
    server, proxy, _ = site
    auth = basic("alice")
    assert request(proxy.url, "/data/arr/.secret", headers=auth)[0] == 404
    assert request(proxy.url, "/data/out.bin", headers=auth)[0] == 404  # a symlink out of the root
    status, _, body = request(proxy.url, "/data/in.bin", headers=auth)  # a symlink inside it: ngserve follows
    assert (status, body) == (200, b"chunk 0.0") and reached(server, "/data/in.bin")
    assert request(proxy.url, "/data/arr/%2esecret", headers=auth)[0] == 404
    status, headers, body = request(proxy.url, "/data/arr/info", headers={**auth, "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(body) == b'{"type": "image"}'
    assert request(proxy.url, "/data/missing.bin", headers=auth)[0] == 404


def test_range_head_and_validators(site):
    server, proxy, root = site
    big = (root / "data" / "big.bin").read_bytes()
    auth = basic("alice")
    status, headers, body = request(proxy.url, "/data/big.bin", headers={**auth, "Range": "bytes=100-199"})
    assert status == 206 and body == big[100:200] and headers["Content-Range"] == f"bytes 100-199/{len(big)}"
    etag = headers["ETag"]
    status, headers, body = request(proxy.url, "/data/big.bin", method="HEAD", headers=auth)
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(big))
    assert request(proxy.url, "/data/big.bin", headers={**auth, "If-None-Match": etag})[0] == 304
    assert request(proxy.url, "/data/big.bin", headers={**auth, "If-Match": '"other"'})[0] == 412
    status, _, body = request(proxy.url, "/data/big.bin", headers={**auth, "Range": "bytes=0-1,5-9"})
    assert status == 200 and body == big
    assert not reached(server, "/data/big.bin")
    status, headers, body = request(proxy.url, "/pub/p.bin")  # a public mount: no verdict at all
    assert (status, body, headers["Cache-Control"]) == (200, b"public bytes", "public, max-age=60")
    assert not reached(server, "/pub/p.bin")


def test_the_root_mount_leaves_named_mounts_and_server_pages_alone(site):
    server, proxy, _ = site
    assert request(proxy.url, "/sub/t.bin")[:3:2] == (200, b"top bytes") and not reached(server, "/sub/t.bin")
    assert request(proxy.url, "/.hidden")[0] == 404
    assert request(proxy.url, "/data/arr/0.1")[0] == 401  # the mount "data", not a folder of the root
    assert request(proxy.url, "/-/health")[0] == 200


def test_listings_and_server_pages_come_from_ngserve(site):
    server, proxy, _ = site
    auth = basic("alice")
    status, headers, body = request(proxy.url, "/data/arr/", headers=auth)
    assert status == 200 and b"0.0" in body and headers["Content-Type"].startswith("text/html")
    assert reached(server, "/data/arr/")
    status, headers, _ = request(proxy.url, "/data/arr?x=1", headers=auth)
    assert status == 301 and headers["Location"] == "/data/arr/?x=1"  # ngserve's redirect, query kept
    status, _, body = request(proxy.url, "/-/health")
    assert status == 200 and b'"status": "ok"' in body and reached(server, "/-/health")
    assert request(proxy.url, "/data/arr/0.0", method="OPTIONS")[0] == 204  # ngserve's preflight
    request(proxy.url, "/-/zarr/data/arr/.zarray", headers=auth)  # a view: ngserve's, whatever it answers
    assert reached(server, "/-/zarr/data/arr/.zarray")
    token = mint(SECRET.encode(), "team", "a")
    request(proxy.url, f"/-/t/{token}/-/zarr/team/a/x.bin")
    assert reached(server, "/-/t/REDACTED/-/zarr/team/a/x.bin")
    status, _, _ = request(proxy.url, "/-/authz", headers={"X-Original-URI": "/data/arr/0.0", **auth})
    assert status == 200  # reachable, but it tells the asker only about themselves


def test_a_removed_user_stops_reading_within_the_ttl(tmp_path):
    make_tree(tmp_path)
    server, proxy, _, port = start(tmp_path, ["alice", "bob"])
    try:
        assert request(proxy.url, "/data/arr/0.0", headers=basic("bob"))[0] == 200
        server.stop()
        cfg = write_config(tmp_path, ["alice"], port)  # bob removed, same port: nginx's upstream
        server = ServerProcess(["serve", "--config", str(cfg)], env=ENV)
        deadline = time.monotonic() + TTL + 10
        while request(proxy.url, "/data/arr/0.1", headers=basic("bob"))[0] == 200:
            assert time.monotonic() < deadline, "bob still reads long after verdict_ttl"
            time.sleep(0.2)
        assert request(proxy.url, "/data/arr/0.1", headers=basic("bob"))[0] == 401
        assert request(proxy.url, "/data/arr/0.1", headers=basic("alice"))[0] == 200
    finally:
        proxy.close()
        server.stop()


def nginx_config_cli(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", "nginx-config", "--config", str(cfg)],
                          capture_output=True, text=True, env=ENV)


def test_nginx_config_needs_no_secret_and_says_what_is_wrong(tmp_path):
    (tmp_path / "d").mkdir()
    cfg = tmp_path / "c.toml"
    # Run where nginx runs: ngserve's secret file need not be there.
    cfg.write_text('[auth]\nsecret_file = "absent"\n[[mounts]]\nname = "d"\nsource = "d"\naccess = "token"\n')
    done = nginx_config_cli(cfg)
    assert done.returncode == 0 and "auth_request /_ngserve_verdict;" in done.stdout
    assert "upstream ngserve {\n    server 127.0.0.1:9000 " in done.stdout
    cfg.write_text('[server]\nverdict_ttl = "1.5s"\n[[mounts]]\nname = "d"\nsource = "d"\n')
    done = nginx_config_cli(cfg)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "server.verdict_ttl" in done.stderr
    cfg.write_text('[[mounts]]\nname = "d"\nsource = "webdav+https://dav.example.org/x/"\n')
    done = nginx_config_cli(cfg)  # a remote mount: ngserve serves it, no file location
    assert done.returncode == 0 and "location ~" not in done.stdout and "proxy_pass http://ngserve;" in done.stdout


def test_the_verdict_says_how_long_nginx_may_keep_it(site):
    server, _, _ = site

    def ask(uri: str, headers: dict | None = None, arg_token: str = "") -> tuple[int, str | None, bytes]:
        """Ask as nginx does: with its cache key (the URI's folder, then the credentials)."""
        headers = headers or {}
        path = uri.partition("?")[0]
        key = "|".join([urllib.parse.unquote(path.rsplit("/", 1)[0] + "/"), headers.get("Authorization", ""), "", "",
                        arg_token])
        status, h, body = request(server.url, "/-/authz", headers={"X-Original-URI": uri, "X-Verdict-Key": key,
                                                                     **headers})
        return status, h.get("X-Accel-Expires"), body

    assert ask("/data/arr/0.0", basic("alice")) == (200, str(TTL), b"")
    assert ask("/data/arr/0.0") == (401, "0", b"")  # denials are never cached
    assert ask("/data/arr/0.0", basic("bob") | {"Authorization": "Bearer nonsense"})[0] == 401
    one_file = mint(SECRET.encode(), "team", "a/x.bin")
    assert ask(f"/-/t/{one_file}/team/a/x.bin") == (200, "0", b"")  # holds for this file only
    assert ask(f"/team/a/y.bin?token={one_file}", arg_token=one_file) == (403, "0", b"")
    deeper = mint(SECRET.encode(), "team", "a")
    assert ask(f"/team/a/x.bin?token={deeper}", arg_token=deeper) == (200, str(TTL), b"")
    assert ask(f"/team/a/x.bin?token={deeper}") == (200, "0", b"")  # a credential the key lacks: not kept
    assert ask(f"/-/t/{deeper}/team/a/x.bin") == (200, str(TTL), b"")
    # Kept no longer than the credential lives: a token or session about to expire is asked about again.
    ending = mint(SECRET.encode(), "team", "a", ttl=TTL - 1)
    assert ask(f"/-/t/{ending}/team/a/x.bin")[:2] in ((200, str(TTL - 1)), (200, str(TTL - 2)))
    session = mint_session(SECRET.encode(), "alice", ttl=TTL - 1)
    status, h, _ = request(server.url, "/-/authz", headers={
        "X-Original-URI": "/data/arr/0.0", "Cookie": f"ngserve_session={session}",
        "X-Verdict-Key": f"/data/arr/||{session}||"})
    assert (status, h["X-Accel-Expires"]) in ((200, str(TTL - 1)), (200, str(TTL - 2)))
    status, h, _ = request(server.url, "/-/authz", headers={"X-Original-URI": "/data/arr/0.0", **basic("alice")})
    assert (status, h["X-Accel-Expires"]) == (200, "0")  # no key from nginx: nothing to keep
    assert ask(f"/team/z.bin?token={deeper}")[0] == 403
    assert ask("/pub/p.bin") == (200, str(TTL), b"")
    # Anything that is not a file nginx may send is ngserve's to answer.
    for uri in ("/data/arr/", "/data", "/-/zarr/data/arr/.zarray", "/data/arr/..%2F0.0", "/data/.x", "nonsense", ""):
        assert ask(uri, basic("alice"))[:2] == (403, "0"), uri


def test_a_credential_nginx_does_not_key_on_is_never_cached(site):
    """aiohttp reads ``?%74oken=`` as ``token``; nginx's ``$arg_token`` does not. Had the allow it won
    been cached, it would have been filed under "no credentials" for everyone."""
    server, proxy, _ = site
    folder = mint(SECRET.encode(), "team", "b")
    (site[2] / "team" / "b" / "1.bin").write_bytes(b"one")
    (site[2] / "team" / "b" / "2.bin").write_bytes(b"two")
    assert request(proxy.url, f"/team/b/1.bin?%74oken={folder}")[:3:2] == (200, b"one")
    assert request(proxy.url, "/team/b/2.bin")[0] == 401
    request(proxy.url, "/team/b/2.bin", headers={"Cookie": f"ngserve_token ={folder}"})  # odd cookie syntax
    assert request(proxy.url, "/team/b/1.bin")[0] == 401


def test_folder_names_with_spaces_and_percent_signs_share_one_verdict(site):
    server, proxy, root = site
    folder = root / "team" / "50% done x"
    folder.mkdir()
    (folder / "1.bin").write_bytes(b"one")
    (folder / "2.bin").write_bytes(b"two")
    token = mint(SECRET.encode(), "team", "50% done x")
    before = verdicts(server)
    for name, body in (("1", b"one"), ("2", b"two")):
        assert request(proxy.url, f"/-/t/{token}/team/50%25%20done%20x/{name}.bin")[:3:2] == (200, body)
    assert verdicts(server) - before == 1 and not reached(server, "/-/t/REDACTED/team/50%25%20done%20x/[12].bin")
    other = mint(SECRET.encode(), "team", "50")  # a folder whose name the first one's starts with
    assert request(proxy.url, f"/-/t/{other}/team/50%25%20done%20x/1.bin")[0] == 403


def test_a_wrong_password_through_nginx_is_one_failed_attempt(site):
    """nginx asks for a verdict, then hands the 401 to ngserve: the same guess twice at once
    counts once, so a user backs off after USER_FAILURES guesses, not half as many."""
    from server import auth
    _, proxy, _ = site
    for i in range(auth.USER_FAILURES - 1):
        wrong = {"Authorization": "Basic " + base64.b64encode(f"bob:typo-{i}".encode()).decode()}
        assert request(proxy.url, "/data/arr/0.0", headers=wrong)[0] == 401
    assert request(proxy.url, "/data/arr/0.0", headers=basic("bob"))[0] == 200
