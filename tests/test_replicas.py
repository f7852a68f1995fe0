"""Two ``ngserve serve`` replicas on one PostgreSQL behind a real nginx: short links, share
tokens and login sessions work through either, and killing one costs no GET."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from conftest import ServerProcess
from deploy import Nginx, Postgres, free_port
from server.passwords import hash_password
from server.tokens import mint

SECRET = "replica-test-secret-0123456789abcdef"
ALICE = "alice-password-1"


def request(base: str, path: str, *, method: str = "GET", headers: dict | None = None,
            body: bytes | None = None) -> tuple[int, dict, bytes]:
    """One request, no redirect followed (the login's 303 is the answer)."""
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres()
    yield pg
    pg.close()


def write_config(folder: Path, pg: Postgres) -> Path:
    (folder / "data").mkdir()
    for i in range(20):
        (folder / "data" / f"c{i}.bin").write_bytes(bytes([i]) * 1000)
    (folder / "team").mkdir()
    (folder / "team" / "t.bin").write_bytes(b"team bytes")
    (folder / "secret").write_text(SECRET)
    (folder / "pgpw").write_text(pg.password + "\n")
    cfg = folder / "ngserve.toml"
    cfg.write_text(f"""
[server]
states_url = "{pg.url}"
states_password_file = "pgpw"
data_dir = "state"

[auth]
secret_file = "secret"
cookie_secure = false

[[mounts]]
name = "data"
source = "data"

[[mounts]]
name = "team"
source = "team"
access = "users"

[[users]]
name = "alice"
password_hash = "{hash_password(ALICE)}"
""")
    return cfg


@pytest.fixture
def cluster(tmp_path, postgres):
    cfg = write_config(tmp_path, postgres)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    replicas: list[ServerProcess] = []
    proxy = None
    try:
        for _ in range(2):
            replicas.append(ServerProcess(["serve", "--config", str(cfg), "--port", "0"], env=env))
        proxy = Nginx([r.url.removeprefix("http://") for r in replicas])
        yield replicas, proxy
    finally:
        if proxy:
            proxy.close()
        for r in replicas:
            r.stop()


def login(base: str) -> str:
    form = urllib.parse.urlencode({"user": "alice", "password": ALICE, "next": "/team/"}).encode()
    status, headers, _ = request(base, "/-/login", method="POST", body=form,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303, status
    return headers["Set-Cookie"].split(";", 1)[0]


def store_link(base: str, cookie: str, state: dict) -> str:
    status, _, body = request(base, "/-/api/states", method="POST", body=json.dumps(state).encode(),
                              headers={"Content-Type": "application/json", "Cookie": cookie})
    assert status == 201, body
    return json.loads(body)["id"]


def test_replicas_share_links_tokens_and_sessions(cluster, postgres, tmp_path):
    (a, b), proxy = cluster
    cookie = login(a.url)  # a session made by one replica...
    status, _, body = request(b.url, "/team/t.bin", headers={"Cookie": cookie})
    assert (status, body) == (200, b"team bytes")  # ...is good on the other
    assert request(b.url, "/team/t.bin")[0] == 401

    token = mint(SECRET.encode(), "team")  # a share token, as `ngserve token create` signs it
    for replica in (a, b):
        assert request(replica.url, f"/-/t/{token}/team/t.bin")[:3:2] == (200, b"team bytes")

    state = {"layers": [{"type": "image", "source": "zarr://x", "name": "via a"}]}
    sid = store_link(a.url, cookie, state)
    for base in (b.url, proxy.url, a.url):  # stored through one replica, read through the other
        status, _, body = request(base, f"/-/api/states/{sid}")
        assert status == 200 and json.loads(body) == state
    sid_b = store_link(b.url, cookie, {"layers": [], "title": "via b"})
    assert json.loads(request(a.url, f"/-/api/states/{sid_b}")[2])["title"] == "via b"
    for replica in (a, b):
        status, _, body = request(replica.url, "/-/ready")
        assert status == 200, body
    # They are in PostgreSQL, not in a SQLite file the two replicas happen to share here.
    assert not (tmp_path / "state" / "states.sqlite3").exists()
    with psycopg.connect(postgres.url, password=postgres.password) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM ngserve_states")}
    assert {sid, sid_b} <= stored


def test_killing_a_replica_mid_load_fails_no_get(cluster):
    (a, b), proxy = cluster
    cookie = login(proxy.url)
    sid = store_link(proxy.url, cookie, {"layers": [], "title": "survives"})
    token = mint(SECRET.encode(), "team")
    paths = [f"/data/c{i % 20}.bin" for i in range(200)]
    paths[1::4] = [f"/-/api/states/{sid}"] * len(paths[1::4])
    paths[2::4] = [f"/-/t/{token}/team/t.bin"] * len(paths[2::4])

    def fetch(i: int) -> tuple[int, bytes]:
        if i == 60:
            os.kill(b.proc.pid, signal.SIGKILL)  # mid-load, with requests in flight on both
        status, _, body = request(proxy.url, paths[i])
        return status, body

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(fetch, range(len(paths))))
    assert b.proc.wait(10) == -signal.SIGKILL
    failed = [(paths[i], s) for i, (s, _) in enumerate(answers) if s != 200]
    assert failed == []
    assert b.requested(r"GET /data/"), "nginx never sent the killed replica a request"
    for i, (_, body) in enumerate(answers):
        if paths[i].startswith("/data/"):
            n = int(paths[i][len("/data/c"):-len(".bin")])
            assert body == bytes([n]) * 1000
    # The survivor keeps serving, writes included.
    sid2 = store_link(proxy.url, cookie, {"layers": [], "title": "after"})
    assert request(a.url, f"/-/api/states/{sid2}")[0] == 200


@pytest.mark.parametrize("server_table, message", [
    ('states_url = "postgresql://u:pw@127.0.0.1:5432/db"',
     "server.states_url: secrets are not written in the config file: drop the password from the URL"),
    ('states_url = "mysql://u@127.0.0.1/db"', "server.states_url: 'mysql://u@127.0.0.1/db' is not a PostgreSQL URL"),
    ('states_url = "{url}"\nstates_password_env = "NGSERVE_TEST_UNSET_PW"',
     "server.states_password_env: environment variable NGSERVE_TEST_UNSET_PW is not set"),
    ('states_url = "{url}"\nstates_password_file = "wrong"',
     'server.states_url: cannot connect to PostgreSQL at 127.0.0.1:{port}/postgres: '
     'password authentication failed for user "ngserve"'),
    ('states_url = "postgresql://ngserve@127.0.0.1:{closed}/postgres"',
     "server.states_url: cannot connect to PostgreSQL at 127.0.0.1:{closed}/postgres: Connection refused"),
])
def test_state_store_config_errors_are_one_line(tmp_path, postgres, server_table, message):
    fill = {"url": postgres.url, "port": postgres.port, "closed": free_port()}
    (tmp_path / "d").mkdir()
    (tmp_path / "wrong").write_text("not-the-password")
    (tmp_path / "c.toml").write_text(f'[server]\n{server_table.format(**fill)}\n[[mounts]]\nname = "d"\nsource = "d"\n')
    done = subprocess.run([sys.executable, "-m", "server", "serve", "--config", str(tmp_path / "c.toml"), "--port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"ngserve serve: error: {message.format(**fill)}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def one_replica(tmp_path: Path, url: str, password: str, extra: str = "") -> ServerProcess:
    (tmp_path / "d").mkdir()
    (tmp_path / "pgpw").write_text(password)
    (tmp_path / "c.toml").write_text(
        f'[server]\nstates_url = "{url}"\nstates_password_file = "pgpw"\n{extra}\n[[mounts]]\nname = "d"\nsource = "d"\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return ServerProcess(["serve", "--config", str(tmp_path / "c.toml"), "--port", "0", "--quiet"], env=env)


def test_a_database_outage_answers_503_and_recovery_needs_no_restart(tmp_path):
    pg = Postgres()  # its own: this test stops it
    server = None
    try:
        server = one_replica(tmp_path, pg.url, pg.password)
        status, _, body = request(server.url, "/-/api/states", method="POST", body=b'{"layers": []}',
                                  headers={"Content-Type": "application/json"})
        assert status == 201
        sid = json.loads(body)["id"]
        assert request(server.url, f"/-/api/states/{sid}")[0] == 200  # pools a connection

        pg.stop()
        status, _, body = request(server.url, f"/-/api/states/{sid}")
        assert (status, body) == (503, b"503 the short-link store does not answer; try again shortly\n")
        status, _, body = request(server.url, "/-/ready")
        assert status == 503 and json.loads(body)["problems"] == {"states": "the short-link store does not answer"}
        assert request(server.url, "/d/")[0] == 200  # the data is served all along

        pg.start()
        assert request(server.url, f"/-/api/states/{sid}")[0] == 200
        pg.stop()  # a restart between two requests: the pooled connection is dead, and no read may fail for it
        pg.start()
        assert request(server.url, f"/-/api/states/{sid}")[0] == 200
    finally:
        if server:
            server.stop()
        pg.close()


def test_the_budget_holds_on_postgres(tmp_path, postgres):
    url = postgres.create_database("budget")
    server = one_replica(tmp_path, url, postgres.password, 'states_max_bytes = "200KiB"')
    try:
        codes, first = [], None
        for i in range(30):  # random text: TOAST cannot compress it away
            state = {"layers": [], "pad": os.urandom(12000).hex(), "i": i}
            status, _, body = request(server.url, "/-/api/states", method="POST", body=json.dumps(state).encode(),
                                      headers={"Content-Type": "application/json"})
            codes.append(status)
            first = first or state
            if status == 507:
                assert b"server.states_max_bytes" in body
                break
        assert codes[0] == 201 and codes[-1] == 507
        status, _, _ = request(server.url, "/-/api/states", method="POST", body=json.dumps(first).encode(),
                               headers={"Content-Type": "application/json"})
        assert status == 201  # a state already stored always has room
    finally:
        server.stop()
