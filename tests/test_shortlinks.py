"""Short links: POST/GET /-/api/states, limits, CORS, and survival across restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

import ngstate

STATE = {"dimensions": {"x": [1e-9, "m"]}, "layers": [{"type": "image", "source": "zarr://http://h/a.zarr", "name": "a"}]}


def post(url: str, body: bytes, content_type: str = "application/json"):
    req = urllib.request.Request(url + "/-/api/states", data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(url: str, headers: dict | None = None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
        return r.status, r.headers, r.read()


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    return d


def serve(start_server, tmp_path, data_dir):
    (tmp_path / "root").mkdir(exist_ok=True)
    return start_server("serve", str(tmp_path / "root"), "--data-dir", str(data_dir))


def test_post_then_get_with_cors(start_server, tmp_path, data_dir):
    srv = serve(start_server, tmp_path, data_dir)
    status, answer = post(srv.url, json.dumps(STATE).encode())
    assert status == 201
    assert answer["url"] == f"{srv.url}/-/viewer/v/ngserve/#!{srv.url}/-/api/states/{answer['id']}"
    status, headers, body = get(f"{srv.url}/-/api/states/{answer['id']}", {"Origin": "https://elsewhere.example"})
    assert status == 200 and json.loads(body) == STATE
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"].startswith("private,")  # a state can hold share tokens: no shared caches
    # the same state gets the same id
    assert post(srv.url, json.dumps(STATE).encode())[1]["id"] == answer["id"]
    assert (data_dir / "states.sqlite3").is_file()


def test_preflight_allows_post(start_server, tmp_path, data_dir):
    srv = serve(start_server, tmp_path, data_dir)
    req = urllib.request.Request(srv.url + "/-/api/states", method="OPTIONS", headers={
        "Origin": "https://x.example", "Access-Control-Request-Method": "POST"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 204 and "POST" in r.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize("body,fragment", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "with \"layers\""),
    (b'{"dimensions": {}}', "with \"layers\""),
    (b'{"layers": 3}', "with \"layers\""),
    (b'{"layers": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested too deeply"),  # once a RecursionError: 500
    (b'{"layers": [], "position": [NaN, 1]}', "NaN or Infinity"),  # Python reads it; the viewer's JSON.parse would not
    (b'{"layers": [], "position": [1e999, 1]}', "NaN or Infinity"),  # read as inf, written back as Infinity
], ids=["not-json", "a-list", "no-layers", "layers-not-a-list", "deeply-nested", "nan", "overflow"])
def test_rejects_what_is_not_a_state(start_server, tmp_path, data_dir, body, fragment):
    srv = serve(start_server, tmp_path, data_dir)
    status, text = post(srv.url, body)
    assert status == 400 and fragment in text
    assert text.count("\n") == 1 and len(text) < 200  # one line, no traceback


def test_rejects_states_over_5_mb(start_server, tmp_path, data_dir):
    srv = serve(start_server, tmp_path, data_dir)
    big = json.dumps({**STATE, "padding": "x" * (5 * 1024 * 1024)}).encode()
    status, text = post(srv.url, big)
    assert status == 413 and "at most" in text
    # just under the limit is fine, though above aiohttp's default 1 MB body limit
    ok = json.dumps({**STATE, "padding": "x" * (4 * 1024 * 1024)}).encode()
    assert post(srv.url, ok)[0] == 201


def test_unknown_id_is_404(start_server, tmp_path, data_dir):
    srv = serve(start_server, tmp_path, data_dir)
    for sid in ("AAAAAAAAAAAAAAAA", "..%2f..%2fetc"):
        with pytest.raises(urllib.error.HTTPError) as err:
            get(f"{srv.url}/-/api/states/{sid}")
        assert err.value.code == 404


def test_short_links_survive_a_restart(start_server, tmp_path, data_dir):
    srv = serve(start_server, tmp_path, data_dir)
    short = ngstate.shorten(STATE, srv.url)
    sid = short.rsplit("/", 1)[1]
    srv.stop()
    again = serve(start_server, tmp_path, data_dir)
    status, _, body = get(f"{again.url}/-/api/states/{sid}")
    assert json.loads(body) == STATE
    assert ngstate.parse_url(short.replace(srv.url, again.url)) == STATE


def test_cli_link_short(start_server, tmp_path, data_dir):
    from volumes.samples import narrow_uint16
    from volumes.synthetic import blobs
    from volumes.write import write_ome_zarr

    root = tmp_path / "root"
    root.mkdir()
    image, _ = blobs((16, 24, 24), n_blobs=4)
    write_ome_zarr(root / "img.ome.zarr", narrow_uint16(image), levels=2)
    srv = start_server("serve", str(root), "--data-dir", str(data_dir))
    r = subprocess.run([sys.executable, "-m", "server", "link", f"{srv.url}/img.ome.zarr", "--short", srv.url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    short = r.stdout.strip()
    assert short.startswith(f"{srv.url}/-/viewer/v/ngserve/#!{srv.url}/-/api/states/")
    state = ngstate.parse_url(short)
    assert state["layers"][0]["source"] == f"zarr2://{srv.url}/img.ome.zarr/"


def serve_with(start_server, tmp_path, data_dir, server_keys: str):
    """A server whose config file sets ``server_keys`` in [server]."""
    (tmp_path / "root").mkdir(exist_ok=True)
    conf = tmp_path / "ngserve.toml"
    conf.write_text(f'[server]\n{server_keys}\n[[mounts]]\nname = ""\nsource = "root"\n')
    return start_server("serve", "--config", str(conf), "--data-dir", str(data_dir))


def numbered(i: int, padding: int = 0) -> bytes:
    return json.dumps({**STATE, "n": i, "padding": "x" * padding}).encode()


def post_with_headers(url: str, body: bytes):
    req = urllib.request.Request(url + "/-/api/states", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_a_burst_over_the_rate_gets_429_with_retry_after_and_reads_stay_open(start_server, tmp_path, data_dir):
    srv = serve_with(start_server, tmp_path, data_dir, "states_per_minute = 1\nstates_burst = 3")
    ids = [post(srv.url, numbered(i))[1]["id"] for i in range(3)]
    status, headers, text = post_with_headers(srv.url, numbered(3))
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
    assert text.count("\n") == 1 and "too many short links" in text
    for _ in range(10):  # reading is not limited
        for sid in ids:
            assert get(f"{srv.url}/-/api/states/{sid}")[0] == 200


def test_the_store_refuses_new_states_once_its_budget_is_spent(start_server, tmp_path, data_dir):
    srv = serve_with(start_server, tmp_path, data_dir,
                     'states_max_bytes = "64KiB"\nstates_per_minute = 6000\nstates_burst = 100')
    stored = []
    for i in range(20):
        status, headers, text = post_with_headers(srv.url, numbered(i, padding=10_000))
        if status != 201:
            break
        stored.append(json.loads(text)["id"])
    assert 2 <= len(stored) < 20
    assert status == 507 and text.count("\n") == 1 and "states_max_bytes" in text
    status, answer = post(srv.url, numbered(0, padding=10_000))  # a state already stored takes no room
    assert status == 201 and answer["id"] == stored[0]
    assert all(get(f"{srv.url}/-/api/states/{sid}")[0] == 200 for sid in stored)
    assert (data_dir / "states.sqlite3").stat().st_size < 256 << 10


def test_shorten_waits_out_a_429(start_server, tmp_path, data_dir):
    srv = serve_with(start_server, tmp_path, data_dir, "states_per_minute = 60\nstates_burst = 1")
    first = ngstate.shorten(json.loads(numbered(1)), srv.url)
    second = ngstate.shorten(json.loads(numbered(2)), srv.url)  # over the burst: answered 429, then retried
    assert first != second
    srv.settle()
    assert srv.requested(r'"POST /-/api/states HTTP[^"]*" 429')
    assert ngstate.parse_url(second)["n"] == 2
