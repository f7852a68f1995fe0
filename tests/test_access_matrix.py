"""Every route that names data × every path-encoding trick × every protected access mode.

A route authorizes exactly the segments it serves (server/routing.py).  Each row
below is one way to spell a path to a protected dataset; each column one route
that reads data.  Without credentials no combination may answer with data, a
redirect, or a status that says what exists: only 401 (for the honest spelling)
or 404.  A new route or a new trick is one more entry in ROUTES or TRICKS.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from server import MountConfig, ServerConfig, create_app
from server.config import AuthConfig, UserConfig
from server.passwords import hash_password
from server.paths import VIEWS
from server.tokens import mint

SECRET = b"matrix-secret-0123456789abcdef"
DATASET = ["run1", "img.zarr"]  # inside each protected mount
ARRAY = np.arange(6 * 7 * 8, dtype=np.uint16).reshape(6, 7, 8)


def _write_zarr(path: Path) -> None:
    ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)},
             "metadata": {"shape": list(ARRAY.shape), "chunks": [4, 4, 4], "dtype": "<u2"}},
            create=True).result().write(ARRAY).result()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    top = tmp_path_factory.mktemp("matrix")
    for mount in ("pub", "tok", "usr"):
        _write_zarr(top / mount / "run1" / "img.zarr")
        (top / mount / "run2").mkdir()
    return top


@pytest.fixture(scope="module")
def alice_hash() -> str:
    return hash_password("alice-pw-123")


@pytest.fixture
async def client(aiohttp_client, tree, alice_hash):
    mounts = [
        MountConfig("", str(tree / "pub")),
        MountConfig("tok", str(tree / "tok"), access="token"),
        MountConfig("usr", str(tree / "usr"), access="users", users=["alice"]),
    ]
    config = ServerConfig(mounts=mounts, data_dir=tree / "state", auth=AuthConfig(secret=SECRET),
                          users=[UserConfig("alice", alice_hash)])
    config.validate()
    return await aiohttp_client(create_app(config))


async def raw_get(client, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """GET exactly this request target (HTTP clients normalise ``..`` and re-encode)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    lines = [f"GET {path} HTTP/1.1", f"Host: {client.server.host}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    return int(status_line.split()[1]), parsed, body


OTHER_SCOPE = {m: mint(SECRET, m, "run2", 3600) for m in ("tok", "usr")}  # a real token, for another folder


def _spell(mount: str, dataset: list[str]) -> dict[str, str]:
    """Spellings of /<mount>/<dataset>: the honest one first, then the tricks."""
    rest = "/".join(dataset)
    enc_first = "".join(f"%{ord(c):02X}" for c in mount[:1]) + mount[1:]
    return {
        "plain": f"/{mount}/{rest}",
        "encoded mount": f"/{enc_first}/{rest}",
        "encoded slash": f"/{mount}/{'%2F'.join(dataset)}",
        "encoded slash in mount": f"/{mount}%2F{dataset[0]}/{'/'.join(dataset[1:])}",
        "double-encoded mount": f"/%25{ord(mount[0]):02X}{mount[1:]}/{rest}",
        "dot-dot": f"/x/../{mount}/{rest}",
        "encoded dot-dot": f"/x/%2E%2E/{mount}/{rest}",
        "backslash": f"/x%5C..%5C{mount}/{rest}",
        "double slashes": f"//{mount}//{rest}",
        "NUL": f"/{mount}%00/{rest}",
        "overlong UTF-8": f"/%C0%AF{mount}/{rest}",
    }


# Each route: how it spells a request for the data path p (raw, starting with /).
ROUTES = {
    "data": lambda p, m: p + "/.zarray",
    "listing": lambda p, m: p + "/",
    "open": lambda p, m: "/-/open" + p,
    "share (other scope)": lambda p, m: f"/-/t/{OTHER_SCOPE[m]}" + p + "/.zarray",
    "open, encoded dash": lambda p, m: "/%2D/open" + p,
    "open, encoded letter": lambda p, m: "/-/%6Fpen" + p,
    "open, upper case": lambda p, m: "/-/OPEN" + p,
    "share, encoded dash": lambda p, m: f"/%2D/t/{OTHER_SCOPE[m]}" + p + "/.zarray",
    "share, encoded t": lambda p, m: f"/-/%74/{OTHER_SCOPE[m]}" + p + "/.zarray",
    "health, encoded dash": lambda p, m: "/%2D/health" + p,
    **{f"{v} view": (lambda v: lambda p, m: f"/-/{v}" + p + "/info")(v) for v in VIEWS},
    **{f"{v} view, share (other scope)": (lambda v: lambda p, m: f"/-/t/{OTHER_SCOPE[m]}/-/{v}" + p + "/info")(v)
       for v in VIEWS},
    "view, encoded dash": lambda p, m: "/%2D/precomputed" + p + "/info",
    "view, encoded letter": lambda p, m: "/-/%7Aarr" + p + "/.zattrs",
}


@pytest.mark.parametrize("mount", ["tok", "usr"])
@pytest.mark.parametrize("route", list(ROUTES))
async def test_no_spelling_reaches_protected_data(client, mount, route):
    leaks = []
    for trick, path in _spell(mount, DATASET).items():
        url = ROUTES[route](path, mount)
        status, _, body = await raw_get(client, url)
        # The honest spelling is refused for want of credentials (401; 403 with a token of
        # another scope); every trick is either that same refusal or a 404 that says nothing.
        if status not in (401, 403, 404) or b"zarr_format" in body or b"dimensions" in body:
            leaks.append(f"{trick}: GET {url} -> {status} {body[:80]!r}")
    assert not leaks, "\n".join(leaks)


async def test_honest_spellings_with_credentials_work(client):
    """The matrix above must be able to fail: the same routes answer with the right credentials."""
    good = {"tok": {"Authorization": "Bearer " + mint(SECRET, "tok", "run1", 3600)},
            "usr": {"Authorization": "Basic " + base64.b64encode(b"alice:alice-pw-123").decode()}}
    for mount, headers in good.items():
        plain = _spell(mount, DATASET)["plain"]
        resp = await client.get(plain + "/.zarray", headers=headers)
        assert resp.status == 200 and b"zarr_format" in await resp.read(), mount
        resp = await client.get(plain + "/", headers=headers)
        assert resp.status == 200, mount
        # Spelled with an encoded letter, the same path is the same path, and still needs the credentials.
        status, _, body = await raw_get(client, _spell(mount, DATASET)["encoded mount"] + "/.zarray", headers)
        assert status == 200 and b"zarr_format" in body, mount
        resp = await client.get("/-/open" + plain, headers=headers, allow_redirects=False)
        assert resp.status == 302 and "dimensions" in resp.headers["Location"], mount
        resp = await client.get("/-/mesh" + plain + "/info", headers=headers)  # integers: meshable
        assert resp.status == 200 and b"neuroglancer_multilod_draco" in await resp.read(), mount
    token = mint(SECRET, "tok", "run1", 3600)
    resp = await client.get(f"/-/t/{token}/tok/run1/img.zarr/.zarray")
    assert resp.status == 200 and b"zarr_format" in await resp.read()


async def test_honest_spelling_without_credentials_is_401(client):
    for mount in ("tok", "usr"):
        for route in ("data", "listing", "open"):
            status, _, _ = await raw_get(client, ROUTES[route](_spell(mount, DATASET)["plain"], mount))
            assert status == 401, (mount, route)


async def test_public_root_still_serves_and_reserved_spellings_stay_404(client):
    assert (await client.get("/run1/img.zarr/.zarray")).status == 200
    for url in ("/%2D/health", "/%2d/viewer/", "/-/%76iewer/v/x/../../../tok/run1/img.zarr/.zarray"):
        assert (await raw_get(client, url))[0] == 404, url
