"""``/-/open`` against a real server: it reads a mount as the data server serves it, and its errors
name URL paths only."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import numpy as np
import pytest

import ngstate
from volumes.write import write_ome_zarr


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url: str) -> tuple[int, dict, str]:
    try:
        with urllib.request.build_opener(_NoRedirect).open(url, timeout=60) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_open_does_not_follow_a_symlink_out_of_the_mount(tmp_path, start_server):
    """The data server answers 404 for a symlink leaving the root; /-/open must not read through it either."""
    pub, secret = tmp_path / "pub", tmp_path / "secret"
    write_ome_zarr(pub / "img.ome.zarr", np.full((8, 8, 8), 100, np.uint16), levels=1)
    write_ome_zarr(secret / "big.ome.zarr", np.full((9, 10, 11), 4321, np.uint16), levels=1)
    os.rename(pub / "img.ome.zarr" / "0", tmp_path / "inside-level")
    os.symlink(secret / "big.ome.zarr" / "0", pub / "img.ome.zarr" / "0")
    srv = start_server("serve", "--mount", f"pub={pub}")
    assert get(f"{srv.url}/pub/img.ome.zarr/0/.zarray")[0] == 404

    status, _, body = get(f"{srv.url}/-/open/pub/img.ome.zarr")
    assert status == 422, body
    assert body == "cannot show /pub/img.ome.zarr: no zarr v2 array at /pub/img.ome.zarr/0\n"

    # The same dataset with its level inside the mount opens.
    os.unlink(pub / "img.ome.zarr" / "0")
    os.rename(tmp_path / "inside-level", pub / "img.ome.zarr" / "0")
    status, headers, body = get(f"{srv.url}/-/open/pub/img.ome.zarr")
    assert status == 302, body
    state = ngstate.parse_url(headers["Location"])
    assert state["layers"][0]["source"] == f"zarr2://{srv.url}/pub/img.ome.zarr/"


def test_open_errors_name_url_paths_not_disk_paths(tmp_path, start_server):
    pub = tmp_path / "pub"
    (pub / "bad.zarr").mkdir(parents=True)
    (pub / "bad.zarr" / ".zarray").write_text("{not json")
    write_ome_zarr(pub / "broken.ome.zarr", np.ones((8, 8, 8), np.uint16), levels=1)
    for chunk in (pub / "broken.ome.zarr" / "0").rglob("[0-9]*"):
        if chunk.is_file():  # metadata fine, data unreadable: tensorstore's message names the URL
            chunk.write_bytes(b"not a blosc chunk")
    srv = start_server("serve", "--mount", f"pub={pub}")

    status, _, body = get(f"{srv.url}/-/open/pub/bad.zarr")
    assert (status, body) == (422, "cannot show /pub/bad.zarr: /pub/bad.zarr/.zarray is not valid JSON\n")
    status, _, body = get(f"{srv.url}/-/open/pub/broken.ome.zarr")
    assert status == 422 and body.startswith("cannot show /pub/broken.ome.zarr: "), body
    print(body)
    assert "/pub/broken.ome.zarr/0/" in body, body
    assert str(tmp_path) not in body and "127.0.0.1" not in body, body
